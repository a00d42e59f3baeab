//! Networks in the store, on SQLite and on PostgreSQL (support/pg.rs): the first
//! network with the ranges `serve --overlay-v4/-v6` gives (kept once it exists);
//! creating (names unique, `check` sees every network), listing with device counts,
//! making exclusive (revision bump, one `network.update` event carrying the network),
//! deleting (never the first; with devices only when forced, which deletes them);
//! accounts and tokens scoped to a network keep it.

mod support {
    pub mod pg;
}

use zmesh_console::store::{
    AuditCtx, EventFilter, NewAgentlessDevice, NewNetwork, Role, Store, StoreError,
};
use zmesh_shared::WgPrivateKey;

const NOW: i64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn networks_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("console.db").display());
    networks(&Store::connect(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn networks_postgres() {
    let Some(db) = support::pg::fresh_db("store_networks::postgres").await else {
        return;
    };
    networks(&Store::connect(&db.url).await.unwrap()).await;
}

fn lab(name: &str, v4: &str) -> NewNetwork {
    NewNetwork {
        name: name.into(),
        v4: v4.parse().unwrap(),
        v6: "fd88::/48".parse().unwrap(),
        dns_suffix: None,
        exclusive: false,
    }
}

async fn networks(s: &Store) {
    let first = s
        .first_network(Some("10.77.0.0/16".parse().unwrap()), None)
        .await
        .unwrap();
    assert_eq!(
        (first.name.as_str(), first.prefix_v4.to_string().as_str()),
        ("default", "10.77.0.0/16")
    );
    assert!(!first.exclusive);
    // an existing first network keeps its range
    let again = s
        .first_network(Some("10.99.0.0/16".parse().unwrap()), None)
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.prefix_v4, first.prefix_v4);

    let admin = s.acting(AuditCtx::new("admin:root", None));
    let net = admin
        .create_network(|all| {
            assert_eq!(all.len(), 1);
            Ok::<_, ()>(lab("lab", "10.88.0.0/16"))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(net.prefix_v4.to_string(), "10.88.0.0/16");
    // refused by the check: nothing written
    assert_eq!(
        admin.create_network(|_| Err("no")).await.unwrap(),
        Err("no")
    );
    // a taken name
    let e = admin
        .create_network(|_| Ok::<_, ()>(lab("lab", "10.89.0.0/16")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict { field: "name", .. }),
        "{e}"
    );
    assert_eq!(s.network_by_name("lab").await.unwrap().unwrap().id, net.id);
    assert!(s.network_by_name("nope").await.unwrap().is_none());

    let d = admin
        .add_agentless_device(NewAgentlessDevice {
            network_id: net.id,
            name: "l1".into(),
            public_key: WgPrivateKey::generate().public_key(),
            tags: vec![],
            owner: "admin:root".into(),
            now_ms: NOW,
        })
        .await
        .unwrap();
    assert!(net.prefix_v4.contains(&d.overlay_v4));
    let list = s.list_networks().await.unwrap();
    let names: Vec<(&str, u64)> = list
        .iter()
        .map(|c| (c.network.name.as_str(), c.devices))
        .collect();
    assert_eq!(names, [("default", 0), ("lab", 1)]);

    // exclusive: a revision bump and one event inside the network
    let rev = s.get_network(net.id).await.unwrap().revision;
    let after = admin.set_network_exclusive(net.id, true).await.unwrap();
    assert!(after.exclusive);
    assert_eq!(after.revision, rev + 1);
    let same = admin.set_network_exclusive(net.id, true).await.unwrap();
    assert_eq!(same.revision, rev + 1, "unchanged: nothing written");
    let head = s.audit_head().await.unwrap();
    let f = EventFilter {
        network: Some(net.id.to_string()),
        ..Default::default()
    };
    let evs = s.audit_events_page(0, head.seq, &f, 100).await.unwrap();
    let actions: Vec<&str> = evs.iter().map(|e| e.action.as_str()).collect();
    // (the device added in it too: events about a device name its network)
    assert_eq!(
        actions,
        ["network.create", "device.add_agentless", "network.update"]
    );
    assert!(evs
        .iter()
        .all(|e| e.network.as_deref() == Some(net.id.to_string().as_str())));

    // scoped accounts and tokens keep their network
    let phc = zmesh_console::domain::password::hash_password("correct horse battery".into())
        .await
        .unwrap();
    let u = admin
        .create_user_in("lab-admin", Role::Admin, &phc, NOW, Some(net.id))
        .await
        .unwrap();
    assert_eq!(u.network_id, Some(net.id));
    assert_eq!(s.get_user(&u.id).await.unwrap().network_id, Some(net.id));
    let t = admin
        .create_admin_token_in(
            "lab",
            Role::Auditor,
            &"ab".repeat(32),
            None,
            NOW,
            Some(net.id),
        )
        .await
        .unwrap();
    assert_eq!(t.network_id, Some(net.id));
    let found = s
        .admin_token_by_hash(&"ab".repeat(32), NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.network_id, Some(net.id));

    // deleting
    let e = admin.delete_network(first.id, true).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    let e = admin.delete_network(net.id, false).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict { field: "force", .. }),
        "{e}"
    );
    assert_eq!(admin.delete_network(net.id, true).await.unwrap(), 1);
    assert!(s.network_by_name("lab").await.unwrap().is_none());
    assert!(s.get_device(d.id).await.is_err());
    let head = s.audit_head().await.unwrap();
    let evs = s.audit_events_page(0, head.seq, &f, 100).await.unwrap();
    assert_eq!(evs.last().unwrap().action, "network.delete");
    let v = zmesh_console::service::audit::verify::verify_store(
        s,
        &zmesh_shared::SigningKey::generate().public_key(),
    )
    .await
    .unwrap();
    assert!(v.ok, "{v:?}");
}
