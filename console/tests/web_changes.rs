//! The changes page through the real router on SQLite: each change with `applied / connected`,
//! its latencies, its state, and the devices pending (silent connected ones and offline
//! ones, linked); a navigation entry; readable by auditors.

mod support {
    pub mod web_router;
}

use axum::http::StatusCode;
use zmesh_console::bus::Bus;
use zmesh_console::service::{devices, AuditCtx};
use zmesh_console::store::{Ack, NewTarget, Role, Store};
use zmesh_console::{app, AppState};
use zmesh_shared::time::now_ms;

use support::web_router::{get, session};
use zmesh_shared::{SigningKey, WgPrivateKey};

#[tokio::test]
async fn changes_page_shows_figures_and_pending_devices() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let admin_sid = session(&store, "ada", Role::Admin).await;
    let auditor_sid = session(&store, "audrey", Role::Auditor).await;
    let state = AppState::new(store.clone(), SigningKey::generate(), None, Bus::new())
        .await
        .unwrap();
    let admin = AuditCtx::new("admin:ada", None);
    let mut ids = vec![];
    for name in ["fast", "slow", "silent", "away"] {
        let d = devices::add_agentless(
            &state,
            admin.clone(),
            "admin:ada".into(),
            name.to_string(),
            WgPrivateKey::generate().public_key(),
            vec![],
        )
        .await
        .unwrap();
        ids.push(d.id);
    }
    let net = state.network_id;
    let t0 = now_ms();
    let targets: Vec<NewTarget> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| NewTarget {
            device_id: *id,
            connected: i < 3,
        })
        .collect();
    assert!(store
        .create_rollout(net, 41, t0, true, &targets)
        .await
        .unwrap());
    // the same revision again (another replica) is not a second rollout
    assert!(!store
        .create_rollout(net, 41, t0, true, &targets)
        .await
        .unwrap());
    let acks = [
        Ack {
            device_id: ids[0],
            version: 41,
            at_ms: t0 + 12,
        },
        Ack {
            device_id: ids[1],
            version: 45,
            at_ms: t0 + 340,
        },
    ];
    store.record_acks(net, &acks).await.unwrap();

    let app = app(state.clone());
    let (st, html) = get(&app, &admin_sid, "/ui/changes").await;
    assert_eq!(st, StatusCode::OK, "{html}");
    assert!(html.contains("id=\"nav-changes\""), "{html}");
    let row = html
        .split("<tr data-revision=\"41\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for revision 41: {html}"));
    assert!(row.contains(">2 / 3<"), "{row}");
    assert!(row.contains("12 ms") && row.contains("340 ms"), "{row}");
    assert!(row.contains("in progress"), "{row}");
    assert!(
        row.contains(&format!(
            "not applied: <a href=\"/ui/devices/{}\">silent</a>",
            ids[2]
        )),
        "{row}"
    );
    assert!(
        row.contains(&format!(
            "offline: <a href=\"/ui/devices/{}\">away</a>",
            ids[3]
        )),
        "{row}"
    );
    assert!(!row.contains(">fast<") && !row.contains(">slow<"), "{row}");

    // finished: the state says the connected ones did not all apply it
    store.finish_rollout(net, 41, t0 + 60_000).await.unwrap();
    let (st, html) = get(&app, &auditor_sid, "/ui/changes").await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("incomplete"), "{html}");
    // the offline device comes back and acknowledges a later map
    store
        .record_acks(
            net,
            &[Ack {
                device_id: ids[3],
                version: 50,
                at_ms: t0 + 90_000,
            }],
        )
        .await
        .unwrap();
    let (_, html) = get(&app, &admin_sid, "/ui/changes").await;
    let row = html.split("<tr data-revision=\"41\">").nth(1).unwrap();
    assert!(row.contains(">1 of 1<") && !row.contains(">away<"), "{row}");
}
