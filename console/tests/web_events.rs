//! `/ui/events`, the live pages' server-sent events, through the real router on SQLite:
//! a device falling silent is pushed to open pages as a `change` when its silence
//! outlasts three pings (no bus event exists for that), and a device heard from in time
//! sends nothing. The ping interval is shortened to 150 ms so this takes about a second.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use zmesh_console::bus::Bus;
use zmesh_console::domain::password::hash_password;
use zmesh_console::service::{devices, sessions};
use zmesh_console::store::{AuditCtx, Role, Store};
use zmesh_console::{app, AppState};
use zmesh_shared::time::now_ms;
use zmesh_shared::{SigningKey, WgPrivateKey};

const PING: Duration = Duration::from_millis(150);

/// The next `change` event's data within `d`, skipping keep-alive comments.
async fn next_change(body: &mut Body, d: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + d;
    let mut buf = String::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .ok()??;
        if let Ok(data) = frame.unwrap().into_data() {
            buf.push_str(&String::from_utf8_lossy(&data));
        }
        if let Some(i) = buf.find("event: change\ndata: ") {
            let rest = &buf[i + 20..];
            if let Some(end) = rest.find('\n') {
                return Some(rest[..end].to_string());
            }
        }
    }
}

#[tokio::test]
async fn a_device_going_offline_is_pushed_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let state = AppState::new(store, SigningKey::generate(), None, Bus::new())
        .await
        .unwrap()
        .with_ping_interval(PING);
    let admin = state
        .store
        .create_user(
            "alice",
            Role::Admin,
            &hash_password("a long enough password".into())
                .await
                .unwrap(),
            now_ms(),
        )
        .await
        .unwrap();
    let sid = sessions::start(&state.store, &admin, None, "password")
        .await
        .unwrap();
    let mk = |name: &str| {
        let state = state.clone();
        let name = name.to_string();
        async move {
            devices::add_agentless(
                &state,
                AuditCtx::new("admin:root", None),
                "admin:root".into(),
                name,
                WgPrivateKey::generate().public_key(),
                vec![],
            )
            .await
            .unwrap()
            .id
        }
    };
    let (quiet, chatty) = (mk("quiet").await, mk("chatty").await);
    state.store.touch_device(quiet, now_ms()).await.unwrap();
    state.store.touch_device(chatty, now_ms()).await.unwrap();

    let resp = app(state.clone())
        .oneshot(
            Request::get("/ui/events")
                .header(
                    "cookie",
                    format!(
                        "{}={}",
                        zmesh_console::http::session::SESSION_COOKIE,
                        sid.expose()
                    ),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let t0 = Instant::now();

    // chatty keeps talking, quiet does not: one change, when quiet's window ends
    let keep = {
        let state = state.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                state.store.touch_device(chatty, now_ms()).await.unwrap();
                tokio::time::sleep(PING / 2).await;
            }
        })
    };
    let n = next_change(&mut body, Duration::from_secs(3))
        .await
        .expect("quiet going offline is pushed");
    let after = t0.elapsed();
    assert_eq!(n, "1", "one device went offline");
    assert!(
        after >= PING * 2,
        "not before the silence outlasts three pings: {after:?}"
    );
    println!(
        "offline pushed {} ms after the stream opened",
        after.as_millis()
    );
    // while chatty keeps talking, nothing more is sent
    assert!(
        next_change(&mut body, PING * 6).await.is_none(),
        "a device heard from in time is no change"
    );
    keep.await.unwrap();
    // and when chatty falls silent too, that is pushed
    let n = next_change(&mut body, Duration::from_secs(3)).await;
    assert_eq!(n.as_deref(), Some("1"));
}
