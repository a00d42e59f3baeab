//! The web console with two networks, through the real router on SQLite: a console-wide
//! admin's pages show the first network unless `?network=` names another, and carry the
//! network picker; an admin scoped to `lab` sees lab's devices only, gets 404 for
//! `default` (with nothing of it in the body), no picker, and 403 on console-wide pages.

mod support {
    pub mod web_router;
}

use axum::http::StatusCode;
use zmesh_console::bus::Bus;
use zmesh_console::service::{devices, networks, AuditCtx};
use zmesh_console::store::{Role, Store};
use zmesh_console::{app, AppState};
use zmesh_shared::{SigningKey, WgPrivateKey};

use support::web_router::{get, session, session_in};

#[tokio::test]
async fn pages_follow_the_network_and_the_account_scope() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let admin_sid = session(&store, "ada", Role::Admin).await;
    let state = AppState::new(store.clone(), SigningKey::generate(), None, Bus::new())
        .await
        .unwrap();
    let ctx = AuditCtx::new("admin:ada", None);
    let lab = networks::create(
        &state,
        ctx.clone(),
        networks::CreateNetwork {
            name: "lab".into(),
            v4: Some("10.88.0.0/16".into()),
            v6: None,
            dns_suffix: None,
            exclusive: false,
        },
    )
    .await
    .unwrap();
    let lab_id = lab.id.parse().unwrap();
    for (core, name) in [
        (state.clone(), "mainframe"),
        (state.in_network(lab_id), "labrat"),
    ] {
        devices::add_agentless(
            &core,
            ctx.clone(),
            "admin:ada".into(),
            name.to_string(),
            WgPrivateKey::generate().public_key(),
            vec![],
        )
        .await
        .unwrap();
    }
    // an admin of lab only, signed in
    let lab_sid = session_in(&store, "lena", Role::Admin, Some(lab_id)).await;
    let app = app(state);

    // console-wide admin: the first network by default, another by ?network=, a picker
    let (st, html) = get(&app, &admin_sid, "/ui/devices").await;
    assert_eq!(st, StatusCode::OK, "{html}");
    assert!(html.contains("mainframe") && !html.contains("labrat"));
    assert!(html.contains("id=\"network-picker\""));
    let (st, html) = get(&app, &admin_sid, "/ui/devices?network=lab").await;
    assert_eq!(st, StatusCode::OK, "{html}");
    assert!(html.contains("labrat") && !html.contains("mainframe"));
    let (st, _) = get(&app, &admin_sid, "/ui/devices?network=nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // lab's admin: lab only, whatever it asks for
    let (st, html) = get(&app, &lab_sid, "/ui/devices").await;
    assert_eq!(st, StatusCode::OK, "{html}");
    assert!(html.contains("labrat") && !html.contains("mainframe"));
    assert!(
        !html.contains("network-picker"),
        "a scoped account has one network"
    );
    for page in ["/ui/devices", "/ui/", "/ui/keys", "/ui/policy", "/ui/dns"] {
        let (st, html) = get(&app, &lab_sid, &format!("{page}?network=default")).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{page}: {html}");
        assert!(!html.contains("mainframe"), "{page} leaked: {html}");
    }
    for page in ["/ui/users", "/ui/access"] {
        let (st, _) = get(&app, &lab_sid, page).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{page}");
    }
    // and its audit page lists lab's events only (the device added in default is absent)
    let (st, html) = get(&app, &lab_sid, "/ui/audit").await;
    assert_eq!(st, StatusCode::OK, "{html}");
    assert!(
        html.contains("labrat") || html.contains("device.add_agentless"),
        "{html}"
    );
    assert!(!html.contains("mainframe"), "{html}");
}
