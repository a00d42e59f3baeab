//! The routes page through the real router on SQLite: advertised routes with their
//! kind and approval, Approve / Unapprove buttons (calling the REST API) for admins
//! only, a navigation link; a refused advertisement leaves no row.

mod support {
    pub mod web_router;
}

use axum::http::StatusCode;
use zmesh_console::bus::Bus;
use zmesh_console::service::routes::{advertise, set_approval, AdvertiseOutcome};
use zmesh_console::service::{devices, AuditCtx};
use zmesh_console::store::{Role, Store};
use zmesh_console::{app, AppState};

use support::web_router::{get, session};
use zmesh_shared::{SigningKey, WgPrivateKey};

#[tokio::test]
async fn routes_page_lists_and_offers_approval_to_admins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let admin_sid = session(&store, "ada", Role::Admin).await;
    let auditor_sid = session(&store, "audrey", Role::Auditor).await;
    let state = AppState::new(store, SigningKey::generate(), None, Bus::new())
        .await
        .unwrap();
    let admin = AuditCtx::new("admin:ada", None);
    let gw = devices::add_agentless(
        &state,
        admin.clone(),
        "admin:ada".into(),
        "gw".into(),
        WgPrivateKey::generate().public_key(),
        vec![],
    )
    .await
    .unwrap();
    let ctx = AuditCtx::new(format!("device:{}", gw.id), None);
    let net = state.network_id;
    let out = advertise(
        &state,
        &ctx,
        gw.id,
        net,
        &["10.1.0.0/24".parse().unwrap()],
        true,
    )
    .await
    .unwrap();
    assert!(matches!(out, AdvertiseOutcome::Stored(_)), "{out:?}");
    // refused: the earlier set stays as it was
    let out = advertise(
        &state,
        &ctx,
        gw.id,
        net,
        &["100.64.0.0/24".parse().unwrap()],
        false,
    )
    .await
    .unwrap();
    assert!(
        matches!(out, AdvertiseOutcome::Refused(ref r) if r.contains("overlay")),
        "{out:?}"
    );
    let app = app(state.clone());

    let (st, html) = get(&app, &admin_sid, "/ui/routes").await;
    assert_eq!(st, StatusCode::OK, "{html}");
    assert!(html.contains("id=\"nav-routes\""));
    assert_eq!(html.matches("<tr data-route=").count(), 3, "{html}");
    assert!(
        !html.contains("100.64.0.0/24"),
        "refused prefixes are not stored"
    );
    assert!(html.contains("10.1.0.0/24") && html.contains("exit node"));
    assert!(html.contains("awaiting approval"));
    let approve = format!(
        "data-api=\"/api/v1/routes/approve\" data-method=\"POST\" data-body='{{\"device\": \"{}\", \"prefix\": \"10.1.0.0/24\"}}'",
        gw.id
    );
    assert!(html.contains(&approve), "{html}");

    // auditors read, without buttons
    let (st, html) = get(&app, &auditor_sid, "/ui/routes").await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("10.1.0.0/24"));
    assert!(!html.contains("data-api=\"/api/v1/routes/"), "{html}");

    // approved: shown with who approved it, and the button turns into Unapprove
    set_approval(&state, admin, "gw", "10.1.0.0/24", true)
        .await
        .unwrap();
    let (_, html) = get(&app, &admin_sid, "/ui/routes").await;
    assert!(html.contains("approved</span> by admin:ada"), "{html}");
    assert!(html.contains("data-api=\"/api/v1/routes/unapprove\""));
}
