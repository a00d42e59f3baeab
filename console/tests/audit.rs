//! The audit log on real databases: tamper detection on SQLite and PostgreSQL (edit,
//! delete, swap, insert, truncate, rewrite), exports verified offline, events for every
//! admin mutation (through the API), the auditor role, signed access records and retention.
//! Exports against Python's parsers and syslog forwarding are in `audit_io.rs`.
//! PostgreSQL runs are skipped with a notice when no server can be had, unless `CI` is
//! set (then they fail).
mod support {
    pub mod audit_fixture;
    pub mod pg;
}

use support::audit_fixture::{export_to_vec, populate, sqlite};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::Row;
use tower::ServiceExt;
use zmesh_console::bus::Bus;
use zmesh_console::service::access;
use zmesh_console::service::audit::{export, retention, verify};
use zmesh_console::store::{AuditCtx, EventFilter, KeyRegistration, Role, Store};
use zmesh_console::{app, AppState};
use zmesh_shared::audit::{EventBody, GENESIS_HASH};
use zmesh_shared::flowlog::sign_flow;
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{FlowRecord, FlowVerdict};
use zmesh_shared::{DeviceId, Secret, SigningKey, WgPrivateKey};

async fn exec(s: &Store, sql: &str) {
    sqlx::query(sql).execute(s.pool()).await.unwrap();
}

/// Rewrites the stored events from `from` on with recomputed hashes (a thorough
/// attacker with database access but not the signing key), fixing up the head too.
async fn rehash_from(s: &Store, from: u64) {
    let all = s
        .audit_events_page(0, u64::MAX >> 1, &EventFilter::default(), 100_000)
        .await
        .unwrap();
    let mut prev = if from == 1 {
        GENESIS_HASH.to_string()
    } else {
        all.iter().find(|e| e.seq == from - 1).unwrap().hash.clone()
    };
    for e in all.iter().filter(|e| e.seq >= from) {
        let n = EventBody {
            time_ms: e.time_ms,
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            source_addr: e.source_addr.clone(),
            before: e.before.clone(),
            after: e.after.clone(),
            network: e.network.clone(),
        }
        .seal(e.seq, &prev);
        sqlx::query("UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3")
            .bind(&n.prev_hash)
            .bind(&n.hash)
            .bind(e.seq as i64)
            .execute(s.pool())
            .await
            .unwrap();
        prev = n.hash;
    }
    sqlx::query("UPDATE audit_head SET hash = $1")
        .bind(&prev)
        .execute(s.pool())
        .await
        .unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Tamper {
    None,
    Edit,
    Delete,
    Swap,
    Insert,
    Truncate,
    Rewrite,
}

/// Applies one kind of tampering; returns the first bad seq the verifier must name.
async fn tamper(s: &Store, t: Tamper, n: u64) -> Option<u64> {
    match t {
        Tamper::None => None,
        Tamper::Edit => {
            exec(
                s,
                "UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 5",
            )
            .await;
            Some(5)
        }
        Tamper::Delete => {
            exec(s, "DELETE FROM audit_events WHERE seq = 6").await;
            Some(6)
        }
        Tamper::Swap => {
            // swap the contents of events 3 and 4, keeping their numbers
            exec(s, "UPDATE audit_events SET seq = -3 WHERE seq = 3").await;
            exec(s, "UPDATE audit_events SET seq = 3 WHERE seq = 4").await;
            exec(s, "UPDATE audit_events SET seq = 4 WHERE seq = -3").await;
            Some(3)
        }
        Tamper::Insert => {
            // make room at 7 (two steps: unique checks are per row) and forge an event
            // that links correctly to event 6
            exec(s, "UPDATE audit_events SET seq = -(seq + 1) WHERE seq >= 7").await;
            exec(s, "UPDATE audit_events SET seq = -seq WHERE seq < 0").await;
            let six = s
                .audit_events_page(5, 6, &EventFilter::default(), 1)
                .await
                .unwrap()
                .remove(0);
            let forged = EventBody {
                time_ms: six.time_ms,
                actor: "admin:ops".into(),
                action: "device.approve".into(),
                target: Some("device:dev_forged".into()),
                ..Default::default()
            }
            .seal(7, &six.hash);
            sqlx::query(
                "INSERT INTO audit_events (seq, time_ms, actor, action, target, source_addr, \
                 before_json, after_json, prev_hash, hash) VALUES (7, $1, $2, $3, $4, NULL, NULL, NULL, $5, $6)",
            )
            .bind(forged.time_ms)
            .bind(&forged.actor)
            .bind(&forged.action)
            .bind(forged.target.clone())
            .bind(&forged.prev_hash)
            .bind(&forged.hash)
            .execute(s.pool())
            .await
            .unwrap();
            exec(s, "UPDATE audit_head SET seq = seq + 1").await;
            Some(7)
        }
        Tamper::Truncate => {
            let keep = n - 3;
            let last = s
                .audit_events_page(keep - 1, keep, &EventFilter::default(), 1)
                .await
                .unwrap()
                .remove(0);
            sqlx::query("DELETE FROM audit_events WHERE seq > $1")
                .bind(keep as i64)
                .execute(s.pool())
                .await
                .unwrap();
            // the attacker also rewinds the head
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2")
                .bind(keep as i64)
                .bind(&last.hash)
                .execute(s.pool())
                .await
                .unwrap();
            Some(keep + 1)
        }
        Tamper::Rewrite => {
            exec(
                s,
                "UPDATE audit_events SET actor = 'admin:mallory' WHERE seq = 2",
            )
            .await;
            rehash_from(s, 2).await;
            // caught at the first signed checkpoint the rewrite reaches
            Some(s.list_checkpoints().await.unwrap()[0].seq)
        }
    }
}

const CASES: [Tamper; 7] = [
    Tamper::None,
    Tamper::Edit,
    Tamper::Delete,
    Tamper::Swap,
    Tamper::Insert,
    Tamper::Truncate,
    Tamper::Rewrite,
];

async fn check_tamper(s: &Store, t: Tamper, backend: &str) {
    let key = SigningKey::generate();
    let pk = key.public_key();
    let n = populate(s, &key).await;
    assert!(n >= 14, "populate made {n} events");
    // an export taken before the tampering verifies offline
    if matches!(t, Tamper::None) {
        let file = export_to_vec(s, export::Format::Jsonl, &key, &EventFilter::default()).await;
        let r = verify::verify_export(&file[..], &pk).unwrap();
        assert!(r.ok && r.mode == "full" && r.verified == n, "{r:?}");
        let csv = export_to_vec(s, export::Format::Csv, &key, &EventFilter::default()).await;
        let r = verify::verify_export(&csv[..], &pk).unwrap();
        assert!(r.ok && r.verified == n, "{r:?}");
        // a CSV export from before several networks (13 columns, no `network`) still
        // verifies: made from a log of console-wide events (none has a network, as
        // none had then), with the column cut off
        let (_d, old_store) = sqlite().await;
        for u in ["ada", "bo", "cy"] {
            old_store
                .create_user(u, Role::Admin, "$argon2id$v=19$x", now_ms())
                .await
                .unwrap();
        }
        let csv = export_to_vec(
            &old_store,
            export::Format::Csv,
            &key,
            &EventFilter::default(),
        )
        .await;
        let old = String::from_utf8(csv)
            .unwrap()
            .replacen(",network\r\n", "\r\n", 1)
            .replace(",\r\n", "\r\n");
        assert!(!old.lines().next().unwrap().contains("network"));
        let r = verify::verify_export(old.as_bytes(), &pk).unwrap();
        assert!(r.ok && r.verified == 3, "old CSV: {r:?}");
    }
    let want = tamper(s, t, n).await;
    let r = verify::verify_store(s, &pk).await.unwrap();
    match want {
        None => assert!(r.ok, "{backend}: untouched log must verify: {r:?}"),
        Some(seq) => {
            assert!(!r.ok, "{backend} {t:?}: not caught: {r:?}");
            assert_eq!(r.first_bad_seq, Some(seq), "{backend} {t:?}: {r:?}");
            // the same tampering is caught in an export of the tampered log
            let file = export_to_vec(s, export::Format::Jsonl, &key, &EventFilter::default()).await;
            let e = verify::verify_export(&file[..], &pk).unwrap();
            assert!(!e.ok, "{backend} {t:?}: export not caught: {e:?}");
            if !matches!(t, Tamper::Truncate) {
                assert_eq!(e.first_bad_seq, Some(seq), "{backend} {t:?} export: {e:?}");
            }
        }
    }
    if matches!(t, Tamper::Rewrite) {
        assert!(r.error.unwrap().contains("rewritten"));
    }
}

#[tokio::test]
async fn tamper_detection_sqlite() {
    for t in CASES {
        let (_d, s) = sqlite().await;
        check_tamper(&s, t, "sqlite").await;
    }
}

#[tokio::test]
async fn tamper_detection_postgres() {
    for t in CASES {
        let Some(db) = support::pg::fresh_db("tamper_detection_postgres").await else {
            return;
        };
        let s = Store::connect(&db.url).await.unwrap();
        check_tamper(&s, t, "postgres").await;
    }
}

struct Api {
    _dir: tempfile::TempDir,
    state: AppState,
    admin: String,
    auditor: String,
}

async fn api() -> Api {
    let (dir, store) = sqlite().await;
    let admin = Secret::generate("zmt_");
    store
        .create_admin_token("root", Role::Admin, &admin.hash(), None, now_ms())
        .await
        .unwrap();
    let auditor = Secret::generate("zmt_");
    store
        .create_admin_token("aud", Role::Auditor, &auditor.hash(), None, now_ms())
        .await
        .unwrap();
    let state = AppState::new(store, SigningKey::generate(), None, Bus::new())
        .await
        .unwrap();
    Api {
        _dir: dir,
        state,
        admin: admin.expose().into(),
        auditor: auditor.expose().into(),
    }
}

impl Api {
    async fn call(
        &self,
        m: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, String) {
        let mut b = Request::builder()
            .method(m)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        let req = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                b.body(Body::from(v.to_string())).unwrap()
            }
            None => b.body(Body::empty()).unwrap(),
        };
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let st = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        (st, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }
    async fn events(&self) -> Vec<zmesh_shared::audit::AuditEvent> {
        self.state
            .store
            .audit_events_page(0, 1 << 40, &EventFilter::default(), 10_000)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn every_api_mutation_writes_exactly_one_event() {
    let a = api().await;
    // Tags must be declared in the access policy before they are handed out.
    let policy = r#"{"version": 1, "tag_owners": {"tag:db": []}, "rules": [{"src": ["*"], "dst": ["*:*"]}]}"#;
    let (st, v, _) = a
        .call(
            Method::PUT,
            "/api/v1/policy",
            &a.admin,
            Some(json!({ "policy": policy })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(a.events().await.last().unwrap().action, "policy.set");
    let base = a.events().await.len();
    let ad = &a.admin;
    let (st, k, _) = a
        .call(
            Method::POST,
            "/api/v1/enroll-keys",
            ad,
            Some(json!({"reusable": true, "description": "fleet"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let kid = k["id"].as_str().unwrap().to_string();
    let pk = WgPrivateKey::generate().public_key().to_string();
    let (st, d, _) = a
        .call(
            Method::POST,
            "/api/v1/devices",
            ad,
            Some(json!({"name": "nas", "public_key": pk})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{d}");
    let did = d["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/devices/{did}");
    a.call(Method::PATCH, &path, ad, Some(json!({"name": "nas2"})))
        .await;
    a.call(Method::PATCH, &path, ad, Some(json!({"tags": ["db"]})))
        .await;
    a.call(
        Method::PATCH,
        &path,
        ad,
        Some(json!({"key_expires_at_ms": 4102444800000i64})),
    )
    .await;
    // a no-op changes nothing and records nothing
    a.call(Method::PATCH, &path, ad, Some(json!({"tags": ["db"]})))
        .await;
    a.call(Method::POST, &format!("{path}/revoke"), ad, None)
        .await;
    a.call(Method::DELETE, &path, ad, None).await;
    // enrollment through the agent API
    let text = k["key"].as_str().unwrap();
    let key: zmesh_shared::enroll_key::EnrollKey = text.parse().unwrap();
    let req = Request::builder()
        .method(Method::POST)
        .uri(zmesh_shared::wire::ENROLL_PATH)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"protocol": zmesh_shared::PROTOCOL_VERSION, "enroll_key": key.secret.expose(),
                   "public_key": WgPrivateKey::generate().public_key().to_string(), "hostname": "laptop"})
            .to_string(),
        ))
        .unwrap();
    assert_eq!(
        app(a.state.clone()).oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    a.call(
        Method::POST,
        &format!("/api/v1/enroll-keys/{kid}/revoke"),
        ad,
        None,
    )
    .await;
    let (st, t, _) = a
        .call(
            Method::POST,
            "/api/v1/tokens",
            ad,
            Some(json!({"name": "ci", "role": "auditor"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let tid = t["id"].as_str().unwrap().to_string();
    a.call(
        Method::POST,
        &format!("/api/v1/tokens/{tid}/revoke"),
        ad,
        None,
    )
    .await;
    let (st, _, _) = a
        .call(Method::GET, "/api/v1/devices", "zmt_wrong", None)
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    let ev = a.events().await;
    let actions: Vec<&str> = ev[base..].iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "enroll_key.create",
            "device.add_agentless",
            "device.rename",
            "device.retag",
            "device.key_expiry",
            "device.revoke",
            "device.delete",
            "enroll_key.use",
            "device.enroll",
            "enroll_key.revoke",
            "token.create",
            "token.revoke",
            "auth.failed",
        ]
    );
    let rename = &ev[base + 2];
    assert_eq!(rename.actor, "admin:root");
    assert_eq!(
        rename.target.as_deref(),
        Some(format!("device:{did}").as_str())
    );
    assert_eq!(rename.before.as_ref().unwrap()["name"], "nas");
    assert_eq!(rename.after.as_ref().unwrap()["name"], "nas2");
    assert!(ev[base + 7].actor.starts_with("enroll_key:ek_"));
    assert_eq!(ev.last().unwrap().actor, "anonymous");
    assert!(
        !serde_json::to_string(&ev).unwrap().contains("zmt_wrong"),
        "a token must never be logged"
    );
    assert!(!serde_json::to_string(&ev)
        .unwrap()
        .contains(t["token"].as_str().unwrap()));
    let r = verify::verify_store(&a.state.store, &a.state.signing_key.public_key())
        .await
        .unwrap();
    assert!(r.ok, "{r:?}");
}

#[tokio::test]
async fn auditor_reads_and_exports_but_changes_nothing() {
    let a = api().await;
    let au = &a.auditor;
    for p in [
        "/api/v1/devices",
        "/api/v1/enroll-keys",
        "/api/v1/tokens",
        "/api/v1/audit/checkpoints",
        "/api/v1/audit/verify",
        "/api/v1/flows",
    ] {
        let (st, v, _) = a.call(Method::GET, p, au, None).await;
        assert_eq!(st, StatusCode::OK, "{p}: {v}");
    }
    let (st, _, text) = a
        .call(
            Method::GET,
            "/api/v1/audit/events?format=csv&action=token.",
            au,
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert!(text.starts_with("record,seq,"), "{text}");
    assert!(text.contains("\"token.create\""));
    let before = a.state.store.list_admin_tokens().await.unwrap();
    let n_keys = a
        .state
        .store
        .list_enroll_keys(a.state.network_id)
        .await
        .unwrap()
        .len();
    for (m, p, b) in [
        (
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "admin"})),
        ),
        (Method::POST, "/api/v1/enroll-keys", Some(json!({}))),
        (Method::POST, "/api/v1/audit/checkpoints", None),
        (
            Method::POST,
            "/api/v1/devices",
            Some(
                json!({"name": "x", "public_key": WgPrivateKey::generate().public_key().to_string()}),
            ),
        ),
    ] {
        let (st, v, _) = a.call(m, p, au, b).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{p}: {v}");
    }
    assert_eq!(a.state.store.list_admin_tokens().await.unwrap(), before);
    assert_eq!(
        a.state
            .store
            .list_enroll_keys(a.state.network_id)
            .await
            .unwrap()
            .len(),
        n_keys
    );
    assert!(a.state.store.list_checkpoints().await.unwrap().is_empty());
    let ev = a.events().await;
    assert_eq!(
        ev.iter()
            .filter(|e| e.action == "auth.forbidden" && e.actor == "auditor:aud")
            .count(),
        4
    );
    assert_eq!(ev.iter().filter(|e| e.action == "audit.export").count(), 1);
    // bad filters are 422 naming the field
    let (st, v, _) = a
        .call(
            Method::GET,
            "/api/v1/audit/events?since=yesterday",
            au,
            None,
        )
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("since"))
    );
    let (st, v, _) = a
        .call(Method::GET, "/api/v1/audit/events?format=xml", au, None)
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("format"))
    );
}

fn flow(src: DeviceId, dst: DeviceId, dport: u16, t: i64, v: FlowVerdict) -> FlowRecord {
    FlowRecord {
        src_device: src,
        dst_device: dst,
        proto: 6,
        src_port: 40000,
        dst_port: dport,
        bytes: 1000,
        packets: 10,
        bytes_back: 4000,
        packets_back: 8,
        first_seen_ms: t,
        last_seen_ms: t + 5000,
        rule: Some("rules[0]".into()),
        policy_version: Some(1),
        verdict: v,
    }
}

/// A device row (agentless, through the API) and its report key, registered.
async fn reporting_device(a: &Api, name: &str) -> (DeviceId, SigningKey) {
    let pk = WgPrivateKey::generate().public_key().to_string();
    let (st, d, _) = a
        .call(
            Method::POST,
            "/api/v1/devices",
            &a.admin,
            Some(json!({"name": name, "public_key": pk})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{d}");
    let id: DeviceId = d["id"].as_str().unwrap().parse().unwrap();
    let key = SigningKey::generate();
    let ctx = AuditCtx::new(format!("device:{id}"), None);
    let r = access::register_key(&a.state, &ctx, id, &key.public_key())
        .await
        .unwrap();
    assert_eq!(r, KeyRegistration::Registered);
    (id, key)
}

/// Signed records are chained and listed with the one-sided flag; a record signed by
/// another device's key, a replayed report number and a flow between two other devices
/// are not kept; a second, different report key is refused and audited; and the
/// database check verifies every signature and the anchors.
#[tokio::test]
async fn access_records_are_signed_chained_and_one_sided_ones_flagged() {
    let a = api().await;
    let (x, kx) = reporting_device(&a, "x").await;
    let (y, ky) = reporting_device(&a, "y").await;
    let (z, kz) = reporting_device(&a, "z").await;
    let t = now_ms();
    let both = flow(x, y, 443, t, FlowVerdict::Accepted);
    let only_x = flow(x, y, 22, t, FlowVerdict::Denied);
    let batch = vec![
        sign_flow(&kx, x, 1, both.clone()),
        sign_flow(&kx, x, 2, only_x),
    ];
    let i = access::ingest(&a.state, x, &batch).await.unwrap();
    assert_eq!((i.kept, i.refused), (2, 0));
    let mut from_y = both.clone();
    from_y.first_seen_ms += 1000;
    let i = access::ingest(&a.state, y, &[sign_flow(&ky, y, 1, from_y)])
        .await
        .unwrap();
    assert_eq!((i.kept, i.refused), (1, 0));
    // replayed report number: dropped
    let i = access::ingest(&a.state, x, &batch[..1]).await.unwrap();
    assert_eq!((i.kept, i.dropped), (0, 1));
    // signed with z's key but claimed by x: refused
    let forged = sign_flow(&kz, x, 9, flow(x, y, 80, t, FlowVerdict::Accepted));
    let i = access::ingest(&a.state, x, &[forged]).await.unwrap();
    assert_eq!((i.kept, i.refused, i.reason), (0, 1, Some("bad signature")));
    // z reporting a flow it is not an end of: dropped
    let i = access::ingest(&a.state, z, &[sign_flow(&kz, z, 1, both.clone())])
        .await
        .unwrap();
    assert_eq!((i.kept, i.dropped), (0, 1));
    // a device keeps its report key
    let ctx = AuditCtx::new(format!("device:{x}"), None);
    let r = access::register_key(&a.state, &ctx, x, &SigningKey::generate().public_key())
        .await
        .unwrap();
    assert_eq!(r, KeyRegistration::Conflict);
    assert!(a
        .events()
        .await
        .iter()
        .any(|e| e.action == "access.report_key_refused"));

    let (st, v, _) = a.call(Method::GET, "/api/v1/flows", &a.auditor, None).await;
    assert_eq!(st, StatusCode::OK);
    let flows = v["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 3);
    assert_eq!(
        flows
            .iter()
            .map(|f| f["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let one: Vec<_> = flows.iter().filter(|f| f["one_sided"] == true).collect();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["dst_port"], 22);
    assert_eq!(one[0]["verdict"], "denied");
    assert_eq!(one[0]["bytes_back"], 4000);
    assert!(one[0]["sig"].as_str().is_some_and(|s| s.len() > 80));
    let (_, v, _) = a
        .call(
            Method::GET,
            &format!("/api/v1/flows?one_sided=true&device={x}&verdict=denied"),
            &a.admin,
            None,
        )
        .await;
    assert_eq!(v["flows"].as_array().unwrap().len(), 1);
    let (st, v, _) = a
        .call(Method::GET, "/api/v1/flows?verdict=maybe", &a.admin, None)
        .await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("verdict"))
    );

    // Anchored in the audit log, everything verifies; then an edit is caught.
    let s = &a.state.store;
    assert_eq!(s.anchor_access_head().await.unwrap(), Some(3));
    let pk = a.state.signing_key.public_key();
    let r = verify::verify_store(s, &pk).await.unwrap();
    let acc = r.access.clone().unwrap();
    assert!(r.ok && acc.ok && acc.verified == 3, "{r:?}");
    exec(s, "UPDATE access_records SET bytes = 1 WHERE seq = 2").await;
    let r = verify::verify_store(s, &pk).await.unwrap();
    let acc = r.access.unwrap();
    assert!(!r.ok && acc.first_bad_seq == Some(2), "{acc:?}");
}

#[tokio::test]
async fn retention_leaves_a_signed_anchor_and_the_rest_verifies() {
    let (_d, s) = sqlite().await;
    let key = SigningKey::generate();
    let pk = key.public_key();
    let n = populate(&s, &key).await;
    let t = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let p = retention::prune(&s, &key, std::time::Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.through_seq, n);
    assert_eq!(p.events, n);
    let left = s
        .audit_events_page(0, 1 << 40, &EventFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "only the prune event is left");
    assert_eq!(left[0].action, "audit.prune");
    assert_eq!(left[0].seq, n + 1);
    let r = verify::verify_store(&s, &pk).await.unwrap();
    assert!(r.ok, "{r:?}");
    // an export verifies offline from the anchor
    let file = export_to_vec(&s, export::Format::Jsonl, &key, &EventFilter::default()).await;
    assert!(verify::verify_export(&file[..], &pk).unwrap().ok);
    // a forged anchor (wrong key) is refused
    let row = sqlx::query("SELECT signature FROM audit_checkpoints WHERE kind = 'anchor'")
        .fetch_one(s.pool())
        .await
        .unwrap();
    let _: String = row.get("signature");
    let other = SigningKey::generate();
    let forged = zmesh_shared::audit::Checkpoint::sign(n, &left[0].prev_hash, t, &other);
    sqlx::query("UPDATE audit_checkpoints SET signature = $1 WHERE kind = 'anchor'")
        .bind(&forged.signature)
        .execute(s.pool())
        .await
        .unwrap();
    let r = verify::verify_store(&s, &pk).await.unwrap();
    assert!(!r.ok && r.first_bad_seq == Some(n), "{r:?}");
}
