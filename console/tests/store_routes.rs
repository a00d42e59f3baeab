//! Advertised routes in the store, on SQLite and on PostgreSQL (support/pg.rs): an
//! advertisement is stored without moving the revision until something is approved;
//! auto-approvals are recorded with actor `policy` and bump it; a new advertisement
//! keeps the approval of prefixes still offered and drops the rest; admins approve and
//! withdraw one prefix (refused for a prefix not advertised); the snapshot carries the
//! approved routes per device; deleting the device deletes its routes.

mod support {
    pub mod pg;
}

use ipnet::IpNet;
use zmesh_console::store::{
    AuditCtx, EventFilter, NewAgentlessDevice, Store, StoreError, POLICY_ACTOR,
};
use zmesh_shared::{DeviceId, WgPrivateKey};

const NOW: i64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("console.db").display());
    routes(&Store::connect(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_postgres() {
    let Some(db) = support::pg::fresh_db("store_routes::postgres").await else {
        return;
    };
    routes(&Store::connect(&db.url).await.unwrap()).await;
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

async fn device(s: &Store, name: &str) -> DeviceId {
    let net = s.default_network().await.unwrap();
    s.add_agentless_device(NewAgentlessDevice {
        network_id: net.id,
        name: name.into(),
        public_key: WgPrivateKey::generate().public_key(),
        tags: vec![],
        owner: "admin:root".into(),
        now_ms: NOW,
    })
    .await
    .unwrap()
    .id
}

async fn revision(s: &Store) -> u64 {
    s.default_network().await.unwrap().revision
}

async fn approved(s: &Store, d: DeviceId) -> Vec<IpNet> {
    let net = s.default_network().await.unwrap();
    let snap = s.network_snapshot(net.id).await.unwrap();
    snap.routes.get(&d).cloned().unwrap_or_default()
}

async fn events(s: &Store, action: &str) -> Vec<zmesh_shared::audit::AuditEvent> {
    let head = s.audit_head().await.unwrap();
    let f = EventFilter {
        action: Some(action.into()),
        ..Default::default()
    };
    s.audit_events_page(0, head.seq, &f, 1000).await.unwrap()
}

async fn routes(s: &Store) {
    let r = device(s, "router").await;
    let other = device(s, "other").await;
    let dev = s.acting(AuditCtx::new(format!("device:{r}"), None));
    let admin = s.acting(AuditCtx::new("admin:root", None));

    // advertised only: stored, audited, invisible to peers (no revision move)
    let rev0 = revision(s).await;
    let out = dev
        .set_advertised_routes(r, &nets(&["10.1.0.0/24", "10.2.0.0/24"]), &[], NOW)
        .await
        .unwrap();
    assert!(out.changed && !out.approved_changed());
    assert_eq!(revision(s).await, rev0);
    assert!(approved(s, r).await.is_empty());
    assert_eq!(events(s, "route.advertise").await.len(), 1);
    // the same set again: nothing at all
    let out = dev
        .set_advertised_routes(r, &nets(&["10.2.0.0/24", "10.1.0.0/24"]), &[], NOW)
        .await
        .unwrap();
    assert!(!out.changed);
    assert_eq!(events(s, "route.advertise").await.len(), 1);

    // auto-approval: actor policy, revision bump
    let out = dev
        .set_advertised_routes(
            r,
            &nets(&["10.1.0.0/24", "10.2.0.0/24"]),
            &nets(&["10.1.0.0/24"]),
            NOW + 1,
        )
        .await
        .unwrap();
    assert_eq!(out.auto_approved, nets(&["10.1.0.0/24"]));
    assert_eq!(revision(s).await, rev0 + 1);
    assert_eq!(approved(s, r).await, nets(&["10.1.0.0/24"]));
    let ev = events(s, "route.approve").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].actor, POLICY_ACTOR);

    // admin approval of the other prefix; twice is once
    let row = admin
        .set_route_approval(r, "10.2.0.0/24".parse().unwrap(), true, NOW + 2)
        .await
        .unwrap();
    assert_eq!(row.approved_by.as_deref(), Some("admin:root"));
    assert_eq!(row.approved_at_ms, Some(NOW + 2));
    assert_eq!(row.device_name, "router");
    admin
        .set_route_approval(r, "10.2.0.0/24".parse().unwrap(), true, NOW + 3)
        .await
        .unwrap();
    assert_eq!(revision(s).await, rev0 + 2);
    assert_eq!(events(s, "route.approve").await.len(), 2);
    assert_eq!(approved(s, r).await, nets(&["10.1.0.0/24", "10.2.0.0/24"]));

    // a prefix not advertised, on a device that advertises nothing, an unknown device
    for (d, p) in [(r, "10.3.0.0/24"), (other, "10.1.0.0/24")] {
        match admin
            .set_route_approval(d, p.parse().unwrap(), true, NOW)
            .await
        {
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "prefix"),
            x => panic!("{x:?}"),
        }
    }
    assert!(matches!(
        admin
            .set_route_approval(DeviceId::new(), "10.1.0.0/24".parse().unwrap(), true, NOW)
            .await,
        Err(StoreError::NotFound { .. })
    ));

    // a new set keeps the approval of what is still offered, drops the rest
    let out = dev
        .set_advertised_routes(
            r,
            &nets(&["10.2.0.0/24", "0.0.0.0/0", "::/0"]),
            &[],
            NOW + 4,
        )
        .await
        .unwrap();
    assert_eq!(out.withdrawn, nets(&["10.1.0.0/24"]));
    assert_eq!(revision(s).await, rev0 + 3);
    assert_eq!(approved(s, r).await, nets(&["10.2.0.0/24"]));
    let net = s.default_network().await.unwrap();
    let listed: Vec<(String, bool)> = s
        .list_routes(net.id)
        .await
        .unwrap()
        .iter()
        .map(|x| (x.prefix.to_string(), x.approved_at_ms.is_some()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("0.0.0.0/0".into(), false),
            ("10.2.0.0/24".into(), true),
            ("::/0".into(), false)
        ]
    );

    // withdrawal by an admin
    admin
        .set_route_approval(r, "10.2.0.0/24".parse().unwrap(), false, NOW + 5)
        .await
        .unwrap();
    assert!(approved(s, r).await.is_empty());
    assert_eq!(events(s, "route.unapprove").await.len(), 1);
    assert_eq!(revision(s).await, rev0 + 4);

    // approvals by the policy after the fact: only what still waits
    let done = s
        .approve_routes_by_policy(
            net.id,
            &[
                (r, "10.2.0.0/24".parse().unwrap()),
                (r, "10.9.0.0/24".parse().unwrap()),
            ],
            NOW + 6,
        )
        .await
        .unwrap();
    assert_eq!(done, vec![(r, "10.2.0.0/24".parse().unwrap())]);
    assert_eq!(revision(s).await, rev0 + 5);
    assert_eq!(approved(s, r).await, nets(&["10.2.0.0/24"]));
    let again = s
        .approve_routes_by_policy(net.id, &[(r, "10.2.0.0/24".parse().unwrap())], NOW + 7)
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(revision(s).await, rev0 + 5);
    let ev = events(s, "route.approve").await;
    assert_eq!(ev.last().unwrap().actor, POLICY_ACTOR);

    // a revoked device's routes are not listed
    s.acting(AuditCtx::new(format!("device:{other}"), None))
        .set_advertised_routes(other, &nets(&["172.16.0.0/24"]), &[], NOW)
        .await
        .unwrap();
    assert_eq!(s.list_routes(net.id).await.unwrap().len(), 4);
    admin.revoke_device(other, NOW + 7).await.unwrap();
    assert_eq!(s.list_routes(net.id).await.unwrap().len(), 3);

    // the device goes, its routes with it
    admin
        .set_route_approval(r, "0.0.0.0/0".parse().unwrap(), true, NOW + 6)
        .await
        .unwrap();
    admin.delete_device(r).await.unwrap();
    assert!(s.list_routes(net.id).await.unwrap().is_empty());
    assert!(approved(s, r).await.is_empty());
}
