//! Access records for the web tests, made through the real service path: devices
//! added as an admin would, each with a registered report key, and flow records signed
//! with those keys and ingested by `service::access::ingest`.
//!
//! laptop (owned by carol@example.com) → db tcp/5432 accepted, reported by both ends;
//! laptop → db tcp/22 denied, by laptop only; evil (a name with markup, written into
//! the database as an older console might have) → db udp/53 denied with a rule name
//! with markup; old → db icmp accepted, then `old` is deleted. Five records, two denied,
//! three one-sided.

#![allow(dead_code)] // each test binary uses a different part

use zmesh_console::service::access;
use zmesh_console::service::devices;
use zmesh_console::store::{AuditCtx, KeyRegistration, Role, SsoIdentity, SsoOutcome};
use zmesh_console::AppState;
use zmesh_shared::flowlog::sign_flow;
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{FlowRecord, FlowVerdict};
use zmesh_shared::{DeviceId, SigningKey, WgPrivateKey};

pub const EVIL_NAME: &str = "<script>alert('dev')</script>";
pub const EVIL_RULE: &str = "<script>alert('rule')</script>";
pub const CAROL: &str = "carol@example.com";

pub struct Seeded {
    pub laptop: DeviceId,
    pub db: DeviceId,
    pub evil: DeviceId,
    /// Deleted after reporting.
    pub old: DeviceId,
}

async fn device(state: &AppState, name: &str, owner: &str) -> (DeviceId, SigningKey) {
    let admin = AuditCtx::new("admin:root", None);
    let row = devices::add_agentless(
        state,
        admin,
        owner.to_string(),
        name.to_string(),
        WgPrivateKey::generate().public_key(),
        vec![],
    )
    .await
    .unwrap();
    let key = SigningKey::generate();
    let ctx = AuditCtx::new(format!("device:{}", row.id), None);
    let r = access::register_key(state, &ctx, row.id, &key.public_key())
        .await
        .unwrap();
    assert_eq!(r, KeyRegistration::Registered);
    (row.id, key)
}

#[allow(clippy::too_many_arguments)]
fn flow(
    src: DeviceId,
    dst: DeviceId,
    proto: u8,
    dport: u16,
    t: i64,
    verdict: FlowVerdict,
    rule: Option<&str>,
) -> FlowRecord {
    FlowRecord {
        src_device: src,
        dst_device: dst,
        proto,
        src_port: if proto == 1 { 0 } else { 40000 },
        dst_port: dport,
        bytes: 1536,
        packets: 12,
        bytes_back: 3 * 1024 * 1024,
        packets_back: 2100,
        first_seen_ms: t,
        last_seen_ms: t + 5000,
        rule: rule.map(str::to_string),
        policy_version: Some(3),
        verdict,
    }
}

pub async fn seed(state: &AppState) -> Seeded {
    // carol: an SSO member (owns devices, no console access), known by her email
    let carol = state
        .store
        .sso_sign_in_user(
            &SsoIdentity {
                issuer: "https://idp.example.com".into(),
                subject: "carol-1".into(),
                email: Some(CAROL.into()),
                display_name: Some("Carol".into()),
                groups: vec![],
                role: Role::Member,
            },
            now_ms(),
        )
        .await
        .unwrap();
    let SsoOutcome::Ready(carol, _) = carol else {
        panic!("carol not created: {carol:?}")
    };
    let carol_owner = format!("user:{}", carol.username);
    let (laptop, kl) = device(state, "laptop", &carol_owner).await;
    let (db, kd) = device(state, "db", "admin:root").await;
    let (evil, ke) = device(state, "evil", &carol_owner).await;
    let (old, ko) = device(state, "old", "admin:root").await;
    let t = now_ms() - 60_000;
    let both = flow(
        laptop,
        db,
        6,
        5432,
        t,
        FlowVerdict::Accepted,
        Some("db-access"),
    );
    let ssh = flow(laptop, db, 6, 22, t, FlowVerdict::Denied, None);
    let i = access::ingest(
        state,
        laptop,
        &[
            sign_flow(&kl, laptop, 1, both.clone()),
            sign_flow(&kl, laptop, 2, ssh),
        ],
    )
    .await
    .unwrap();
    assert_eq!((i.kept, i.refused), (2, 0));
    let i = access::ingest(state, db, &[sign_flow(&kd, db, 1, both)])
        .await
        .unwrap();
    assert_eq!(i.kept, 1);
    let dns = flow(
        evil,
        db,
        17,
        53,
        t + 1000,
        FlowVerdict::Denied,
        Some(EVIL_RULE),
    );
    let i = access::ingest(state, evil, &[sign_flow(&ke, evil, 1, dns)])
        .await
        .unwrap();
    assert_eq!(i.kept, 1);
    let ping = flow(old, db, 1, 0, t + 2000, FlowVerdict::Accepted, Some("ping"));
    let i = access::ingest(state, old, &[sign_flow(&ko, old, 1, ping)])
        .await
        .unwrap();
    assert_eq!(i.kept, 1);
    devices::delete(state, AuditCtx::new("admin:root", None), "old")
        .await
        .unwrap();
    // Names are DNS labels today; a row from elsewhere (an older console, a restore)
    // may hold anything, and the pages must still escape it.
    sqlx::query("UPDATE devices SET name = $1 WHERE id = $2")
        .bind(EVIL_NAME)
        .bind(evil.to_string())
        .execute(state.store.pool())
        .await
        .unwrap();
    Seeded {
        laptop,
        db,
        evil,
        old,
    }
}
