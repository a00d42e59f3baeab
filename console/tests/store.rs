//! The store test suite, run twice: on SQLite (a temp file) and on PostgreSQL (the
//! harness in support/pg.rs). Each case is an `async fn(&Ctx)`; `both!` makes the pair.

mod support {
    pub mod pg;
    pub mod store_misc;
}

use support::store_misc::*;

use std::collections::HashSet;
use std::net::SocketAddr;

use zmesh_console::domain::peermap::build_peer_map;
use zmesh_console::store::{
    Backend, EnrollDevice, EnrollKeyRejection, EnrollKeyRow, Network, NewAgentlessDevice,
    NewEnrollKey, Store, StoreError,
};
use zmesh_shared::wire::DeviceState;
use zmesh_shared::{DeviceId, Secret, WgPrivateKey, WgPublicKey};

const NOW: i64 = 1_700_000_000_000;

struct Ctx {
    store: Store,
    url: String,
    _tmp: Option<tempfile::TempDir>,
    _db: Option<support::pg::TestDb>,
}

async fn sqlite_ctx() -> Ctx {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("console.db").display());
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    Ctx {
        store,
        url,
        _tmp: Some(tmp),
        _db: None,
    }
}

async fn pg_ctx(test: &str) -> Option<Ctx> {
    let db = support::pg::fresh_db(test).await?;
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    Some(Ctx {
        store,
        url: db.url.clone(),
        _tmp: None,
        _db: Some(db),
    })
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let c = super::sqlite_ctx().await;
                super::$name(&c).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(c) = super::pg_ctx(concat!(stringify!($name), "::postgres")).await else { return };
                super::$name(&c).await;
            }
        }
    )*};
}

both!(
    enroll_happy_path,
    pending_device_needs_approval,
    one_off_key_used_twice,
    expired_key,
    revoked_key,
    unknown_key,
    duplicate_name_writes_nothing,
    derived_names_get_suffixes,
    duplicate_public_key,
    concurrent_enrollments_get_unique_addresses,
    revoke_kills_credential_at_once,
    revision_increases_on_every_change,
    endpoints_bump_revision_only_when_changed,
    admin_tokens,
    network_snapshot_contents,
    no_secret_in_plain_text,
    lookups_errors_and_reconnect,
    key_expiry_is_noted_once,
    idp_checks_claimed_once,
);

// ---- helpers ----

fn pk() -> WgPublicKey {
    WgPrivateKey::generate().public_key()
}

struct Key {
    secret: Secret,
    row: EnrollKeyRow,
}

async fn make_key(
    s: &Store,
    net: &Network,
    reusable: bool,
    preapproved: bool,
    expires: Option<i64>,
) -> Key {
    let secret = Secret::generate("");
    let row = s
        .create_enroll_key(
            NewEnrollKey {
                network_id: net.id,
                secret_hash: secret.hash(),
                description: Some("test key".into()),
                reusable,
                preapproved,
                tags: vec!["tag:web".into(), "db".into()],
                expires_at_ms: expires,
                created_by: "alice".into(),
            },
            NOW,
        )
        .await
        .unwrap();
    Key { secret, row }
}

fn req(key: &Key, name: Option<&str>, hostname: Option<&str>) -> (EnrollDevice, Secret) {
    let cred = Secret::generate("zmd_");
    let e = EnrollDevice {
        secret_hash: key.secret.hash(),
        public_key: pk(),
        name: name.map(str::to_string),
        hostname: hostname.map(str::to_string),
        os: Some("linux".into()),
        credential_hash: cred.hash(),
        now_ms: NOW,
    };
    (e, cred)
}

async fn revision(s: &Store, net: &Network) -> u64 {
    s.get_network(net.id).await.unwrap().revision
}

fn rejection(r: Result<impl std::fmt::Debug, StoreError>) -> EnrollKeyRejection {
    match r {
        Err(StoreError::EnrollKey(why)) => why,
        other => panic!("expected an enrollment key rejection, got {other:?}"),
    }
}

// ---- cases ----

async fn enroll_happy_path(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    assert_eq!(net.prefix_v4.to_string(), "100.64.0.0/10");
    assert_eq!(net.prefix_v6.prefix_len(), 48);
    assert_eq!(net.prefix_v6.network().octets()[0], 0xfd);
    let key = make_key(s, &net, false, true, Some(NOW + 60_000)).await;
    assert_eq!(key.row.tags, vec!["db".to_string(), "web".to_string()]);
    assert_eq!(key.row.used_count, 0);
    let rev0 = revision(s, &net).await;

    let (e, cred) = req(&key, Some("laptop"), Some("ignored-host"));
    let d = s.enroll_device(e.clone()).await.unwrap();
    assert_eq!(d.name, "laptop");
    assert_eq!(d.state, DeviceState::Active);
    assert_eq!(d.network_id, net.id);
    assert_eq!(d.public_key, e.public_key);
    assert_eq!(d.tags, key.row.tags);
    assert_eq!(d.owner, "alice");
    assert_eq!(d.enroll_key_id, Some(key.row.id));
    assert_eq!(d.hostname.as_deref(), Some("ignored-host"));
    assert_eq!(d.os.as_deref(), Some("linux"));
    assert!(!d.agentless);
    assert!(d.endpoints.is_empty());
    assert_eq!(d.created_at_ms, NOW);
    assert!(net.prefix_v4.contains(&d.overlay_v4) && d.overlay_v4 != net.prefix_v4.network());
    assert!(net.prefix_v6.contains(&d.overlay_v6));
    // same host number in both families
    let host4 = u32::from(d.overlay_v4) - u32::from(net.prefix_v4.network());
    let host6 = u128::from(d.overlay_v6) - u128::from(net.prefix_v6.network());
    assert_eq!(host4 as u128, host6);
    assert!(revision(s, &net).await > rev0);

    let k = s.get_enroll_key(key.row.id).await.unwrap();
    assert_eq!(k.used_count, 1);
    assert_eq!(k.last_used_at_ms, Some(NOW));
    assert_eq!(
        s.device_by_credential(&cred.hash()).await.unwrap().unwrap(),
        d
    );
    assert_eq!(s.get_device(d.id).await.unwrap(), d);
    assert_eq!(s.device_by_name(net.id, "LAPTOP").await.unwrap(), d);
    assert_eq!(s.list_devices(net.id).await.unwrap(), vec![d.clone()]);
    assert_eq!(s.list_enroll_keys(net.id).await.unwrap(), vec![k]);
    // a second device from another key gets another address
    let key2 = make_key(s, &net, true, true, None).await;
    let d2 = s
        .enroll_device(req(&key2, None, Some("desk")).0)
        .await
        .unwrap();
    assert_ne!(d2.overlay_v4, d.overlay_v4);
    assert_ne!(d2.overlay_v6, d.overlay_v6);
}

async fn pending_device_needs_approval(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, false, None).await;
    let d = s
        .enroll_device(req(&key, Some("p1"), None).0)
        .await
        .unwrap();
    assert_eq!(d.state, DeviceState::Pending);
    let r0 = revision(s, &net).await;
    let a = s.approve_device(d.id).await.unwrap();
    assert_eq!(a.state, DeviceState::Active);
    let r1 = revision(s, &net).await;
    assert!(r1 > r0);
    // approving again is a no-op
    assert_eq!(
        s.approve_device(d.id).await.unwrap().state,
        DeviceState::Active
    );
    assert_eq!(revision(s, &net).await, r1);
    s.revoke_device(d.id, NOW).await.unwrap();
    assert!(matches!(
        s.approve_device(d.id).await,
        Err(StoreError::Invalid { field: "state", .. })
    ));
}

async fn one_off_key_used_twice(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, false, true, None).await;
    s.enroll_device(req(&key, Some("first"), None).0)
        .await
        .unwrap();
    let rev = revision(s, &net).await;
    assert_eq!(
        rejection(s.enroll_device(req(&key, Some("second"), None).0).await),
        EnrollKeyRejection::Used
    );
    assert_eq!(s.list_devices(net.id).await.unwrap().len(), 1);
    assert_eq!(s.get_enroll_key(key.row.id).await.unwrap().used_count, 1);
    assert_eq!(revision(s, &net).await, rev);
}

async fn expired_key(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let past = make_key(s, &net, true, true, Some(NOW - 1)).await;
    assert_eq!(
        rejection(s.enroll_device(req(&past, None, None).0).await),
        EnrollKeyRejection::Expired
    );
    let at_now = make_key(s, &net, true, true, Some(NOW)).await;
    assert_eq!(
        rejection(s.enroll_device(req(&at_now, None, None).0).await),
        EnrollKeyRejection::Expired
    );
    let future = make_key(s, &net, true, true, Some(NOW + 1)).await;
    s.enroll_device(req(&future, None, None).0).await.unwrap();
    assert_eq!(s.get_enroll_key(past.row.id).await.unwrap().used_count, 0);
    assert_eq!(s.list_devices(net.id).await.unwrap().len(), 1);
}

async fn revoked_key(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, true, None).await;
    let d = s
        .enroll_device(req(&key, Some("before"), None).0)
        .await
        .unwrap();
    let k = s.revoke_enroll_key(key.row.id, NOW + 5).await.unwrap();
    assert_eq!(k.revoked_at_ms, Some(NOW + 5));
    // idempotent: keeps the first time
    assert_eq!(
        s.revoke_enroll_key(key.row.id, NOW + 9)
            .await
            .unwrap()
            .revoked_at_ms,
        Some(NOW + 5)
    );
    assert_eq!(
        rejection(s.enroll_device(req(&key, Some("after"), None).0).await),
        EnrollKeyRejection::Revoked
    );
    // devices it enrolled stay
    assert_eq!(s.get_device(d.id).await.unwrap().state, DeviceState::Active);
    assert!(matches!(
        s.revoke_enroll_key(zmesh_shared::EnrollKeyId::new(), NOW)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn unknown_key(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let real = make_key(s, &net, true, true, None).await;
    let fake = Key {
        secret: Secret::generate(""),
        row: real.row.clone(),
    };
    assert_eq!(
        rejection(s.enroll_device(req(&fake, None, None).0).await),
        EnrollKeyRejection::Unknown
    );
    // a caller that passes the secret instead of its hash finds nothing either
    let mut e = req(&real, None, None).0;
    e.secret_hash = real.secret.expose().to_string();
    assert_eq!(
        rejection(s.enroll_device(e).await),
        EnrollKeyRejection::Unknown
    );
    assert!(s.list_devices(net.id).await.unwrap().is_empty());
}

async fn duplicate_name_writes_nothing(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, true, None).await;
    s.enroll_device(req(&key, Some("pc"), None).0)
        .await
        .unwrap();
    let rev = revision(s, &net).await;
    let used = s.get_enroll_key(key.row.id).await.unwrap().used_count;
    let (e, cred) = req(&key, Some("PC"), None);
    match s.enroll_device(e).await {
        Err(StoreError::NameTaken { name }) => assert_eq!(name, "PC"),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    assert_eq!(s.list_devices(net.id).await.unwrap().len(), 1);
    assert_eq!(revision(s, &net).await, rev);
    assert_eq!(s.get_enroll_key(key.row.id).await.unwrap().used_count, used);
    assert!(s
        .device_by_credential(&cred.hash())
        .await
        .unwrap()
        .is_none());
    // invalid requested names are refused before anything happens
    let (mut bad, _) = req(&key, Some("no spaces"), None);
    assert!(matches!(
        s.enroll_device(bad.clone()).await,
        Err(StoreError::Invalid { field: "name", .. })
    ));
    bad.name = Some("-x".into());
    assert!(matches!(
        s.enroll_device(bad).await,
        Err(StoreError::Invalid { field: "name", .. })
    ));
}

async fn derived_names_get_suffixes(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, true, None).await;
    let mut names = vec![];
    for _ in 0..3 {
        names.push(
            s.enroll_device(req(&key, None, Some("My_Laptop.local")).0)
                .await
                .unwrap()
                .name,
        );
    }
    assert_eq!(names, ["my-laptop", "my-laptop-2", "my-laptop-3"]);
    s.enroll_device(req(&key, Some("Server"), None).0)
        .await
        .unwrap();
    assert_eq!(
        s.enroll_device(req(&key, None, Some("server")).0)
            .await
            .unwrap()
            .name,
        "server-2"
    );
    assert_eq!(
        s.enroll_device(req(&key, None, None).0).await.unwrap().name,
        "device"
    );
    assert_eq!(
        s.enroll_device(req(&key, None, Some("???")).0)
            .await
            .unwrap()
            .name,
        "device-2"
    );
}

async fn duplicate_public_key(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, true, None).await;
    let (e, _) = req(&key, Some("one"), None);
    let d = s.enroll_device(e.clone()).await.unwrap();
    let rev = revision(s, &net).await;
    let (mut e2, _) = req(&key, Some("two"), None);
    e2.public_key = e.public_key;
    assert!(matches!(
        s.enroll_device(e2.clone()).await,
        Err(StoreError::PublicKeyTaken)
    ));
    let ag = NewAgentlessDevice {
        network_id: net.id,
        name: "router".into(),
        public_key: e.public_key,
        tags: vec![],
        owner: "alice".into(),
        now_ms: NOW,
    };
    assert!(matches!(
        s.add_agentless_device(ag).await,
        Err(StoreError::PublicKeyTaken)
    ));
    assert_eq!(revision(s, &net).await, rev);
    assert_eq!(s.list_devices(net.id).await.unwrap().len(), 1);
    // once the device is deleted, its key may enroll again
    s.delete_device(d.id).await.unwrap();
    s.enroll_device(e2).await.unwrap();
}

async fn concurrent_enrollments_get_unique_addresses(c: &Ctx) {
    const N: usize = 50;
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, true, None).await;
    let rev0 = revision(s, &net).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let s = s.clone();
        let e = req(&key, None, Some("node")).0;
        let net_id = net.id;
        tasks.spawn(async move {
            if i % 10 == 0 {
                let ag = NewAgentlessDevice {
                    network_id: net_id,
                    name: format!("wg-{i}"),
                    public_key: e.public_key,
                    tags: vec!["tag:edge".into()],
                    owner: "alice".into(),
                    now_ms: NOW,
                };
                s.add_agentless_device(ag).await
            } else {
                s.enroll_device(e).await
            }
        });
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut devices = vec![];
    while let Some(r) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .expect("enrollments hung")
    {
        devices.push(r.unwrap().unwrap());
    }
    assert_eq!(devices.len(), N);
    let v4: HashSet<_> = devices.iter().map(|d| d.overlay_v4).collect();
    let v6: HashSet<_> = devices.iter().map(|d| d.overlay_v6).collect();
    let names: HashSet<_> = devices.iter().map(|d| d.name.clone()).collect();
    assert_eq!((v4.len(), v6.len(), names.len()), (N, N, N));
    assert!(names.contains("node") && names.contains(&format!("node-{}", N - N / 10)));
    assert_eq!(revision(s, &net).await, rev0 + N as u64);
    assert_eq!(
        s.get_enroll_key(key.row.id).await.unwrap().used_count,
        (N - N / 10) as i64
    );
    assert_eq!(s.list_devices(net.id).await.unwrap().len(), N);
}

async fn revoke_kills_credential_at_once(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, true, None).await;
    let (e, cred) = req(&key, Some("victim"), None);
    let d = s.enroll_device(e).await.unwrap();
    let other = s
        .enroll_device(req(&key, Some("other"), None).0)
        .await
        .unwrap();
    assert!(s
        .device_by_credential(&cred.hash())
        .await
        .unwrap()
        .is_some());
    let rev = revision(s, &net).await;
    let r = s.revoke_device(d.id, NOW + 1).await.unwrap();
    assert_eq!(r.state, DeviceState::Revoked);
    assert!(s
        .device_by_credential(&cred.hash())
        .await
        .unwrap()
        .is_none());
    assert!(revision(s, &net).await > rev);
    let snap = s.network_snapshot(net.id).await.unwrap();
    assert!(build_peer_map(&snap, d.id, NOW).is_none());
    assert!(build_peer_map(&snap, other.id, NOW)
        .unwrap()
        .peer(&d.id)
        .is_none());
    // revoking again changes nothing
    let rev2 = revision(s, &net).await;
    s.revoke_device(d.id, NOW + 2).await.unwrap();
    assert_eq!(revision(s, &net).await, rev2);
}

async fn revision_increases_on_every_change(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let mut last = revision(s, &net).await;
    macro_rules! bumped {
        ($what:expr) => {{
            let r = revision(s, &net).await;
            assert!(
                r > last,
                "{} did not bump the revision ({} -> {})",
                $what,
                last,
                r
            );
            last = r;
        }};
    }
    macro_rules! same {
        ($what:expr) => {{
            let r = revision(s, &net).await;
            assert_eq!(r, last, "{} bumped the revision", $what);
        }};
    }
    let key = make_key(s, &net, true, false, None).await;
    same!("creating a key");
    let d = s.enroll_device(req(&key, Some("a"), None).0).await.unwrap();
    bumped!("enroll");
    let ag = s
        .add_agentless_device(NewAgentlessDevice {
            network_id: net.id,
            name: "wg".into(),
            public_key: pk(),
            tags: vec![],
            owner: "alice".into(),
            now_ms: NOW,
        })
        .await
        .unwrap();
    assert_eq!(ag.state, DeviceState::Active);
    assert!(ag.agentless);
    bumped!("add agentless");
    assert_eq!(s.rename_device(d.id, "b").await.unwrap().name, "b");
    bumped!("rename");
    s.rename_device(d.id, "b").await.unwrap();
    same!("rename to the same name");
    assert!(matches!(
        s.rename_device(d.id, "WG").await,
        Err(StoreError::NameTaken { .. })
    ));
    assert!(matches!(
        s.rename_device(d.id, "a.b").await,
        Err(StoreError::Invalid { field: "name", .. })
    ));
    same!("refused renames");
    assert_eq!(
        s.set_device_tags(d.id, &["tag:x".into()])
            .await
            .unwrap()
            .tags,
        vec!["x".to_string()]
    );
    bumped!("set tags");
    s.set_device_tags(d.id, &["x".into()]).await.unwrap();
    same!("same tags");
    assert!(matches!(
        s.set_device_tags(d.id, &["Bad Tag".into()]).await,
        Err(StoreError::Invalid { field: "tags", .. })
    ));
    s.approve_device(d.id).await.unwrap();
    bumped!("approve");
    assert_eq!(
        s.set_device_key_expiry(d.id, Some(NOW + 10))
            .await
            .unwrap()
            .key_expires_at_ms,
        Some(NOW + 10)
    );
    bumped!("key expiry");
    s.set_device_key_expiry(d.id, Some(NOW + 10)).await.unwrap();
    same!("same key expiry");
    assert!(s
        .set_device_endpoints(d.id, &["192.0.2.1:51820".parse().unwrap()], NOW)
        .await
        .unwrap());
    bumped!("endpoints");
    s.touch_device(d.id, NOW + 1).await.unwrap();
    same!("touch");
    assert_eq!(
        s.get_device(d.id).await.unwrap().last_seen_ms,
        Some(NOW + 1)
    );
    s.revoke_device(d.id, NOW).await.unwrap();
    bumped!("revoke");
    s.delete_device(ag.id).await.unwrap();
    bumped!("delete");
    let _ = last;
}

async fn endpoints_bump_revision_only_when_changed(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, true, None).await;
    let d = s.enroll_device(req(&key, Some("e"), None).0).await.unwrap();
    let a: SocketAddr = "192.0.2.7:41641".parse().unwrap();
    let b: SocketAddr = "[2001:db8::7]:41641".parse().unwrap();
    let r0 = revision(s, &net).await;
    assert!(s.set_device_endpoints(d.id, &[a, b, a], NOW).await.unwrap());
    let r1 = revision(s, &net).await;
    assert_eq!(r1, r0 + 1);
    assert_eq!(s.get_device(d.id).await.unwrap().endpoints, vec![a, b]);
    assert!(!s
        .set_device_endpoints(d.id, &[a, b], NOW + 5)
        .await
        .unwrap());
    assert_eq!(revision(s, &net).await, r1);
    assert_eq!(
        s.get_device(d.id).await.unwrap().last_seen_ms,
        Some(NOW + 5)
    );
    assert!(
        s.set_device_endpoints(d.id, &[b, a], NOW + 6)
            .await
            .unwrap(),
        "order matters (best first)"
    );
    assert_eq!(revision(s, &net).await, r1 + 1);
    let many: Vec<SocketAddr> = (1..=40)
        .map(|p| SocketAddr::from(([192, 0, 2, 1], p)))
        .collect();
    assert!(matches!(
        s.set_device_endpoints(d.id, &many, NOW).await,
        Err(StoreError::Invalid {
            field: "endpoints",
            ..
        })
    ));
    assert!(matches!(
        s.set_device_endpoints(DeviceId::new(), &[a], NOW).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(revision(s, &net).await, r1 + 1);
}

/// Expired keys are claimed once (also by two "replicas" sweeping at the same time: two
/// pools on one database), each with one `device.expired` event and a revision bump; a
/// new expiry can be noted again.
async fn key_expiry_is_noted_once(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, true, None).await;
    let mut ids = vec![];
    for i in 0..6 {
        let d = s
            .enroll_device(req(&key, Some(&format!("exp{i}")), None).0)
            .await
            .unwrap();
        ids.push(d.id);
    }
    // four expire at NOW + 10, one later, one never
    for id in &ids[..4] {
        s.set_device_key_expiry(*id, Some(NOW + 10)).await.unwrap();
    }
    s.set_device_key_expiry(ids[4], Some(NOW + 1000))
        .await
        .unwrap();
    assert!(s
        .note_expired_devices(NOW + 9, 100)
        .await
        .unwrap()
        .is_empty());
    let rev = revision(s, &net).await;

    let other = Store::connect(&c.url).await.unwrap();
    let (a, b) = tokio::join!(
        s.note_expired_devices(NOW + 10, 3),
        other.note_expired_devices(NOW + 10, 3)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // between them both batches of 3 cover the four devices exactly once
    let rest = s.note_expired_devices(NOW + 10, 100).await.unwrap();
    assert!(s
        .note_expired_devices(NOW + 10, 100)
        .await
        .unwrap()
        .is_empty());
    let rounds = [&a, &b, &rest].iter().filter(|r| !r.is_empty()).count();
    assert!(rounds >= 1 && a.iter().chain(&b).chain(&rest).all(|n| *n == net.id));
    assert_eq!(revision(s, &net).await, rev + rounds as u64);
    let count = |action: &'static str| async move {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = $1")
            .bind(action)
            .fetch_one(s.pool())
            .await
            .unwrap();
        n
    };
    assert_eq!(count("device.expired").await, 4);
    let snap = s.network_snapshot(net.id).await.unwrap();
    let live = build_peer_map(&snap, ids[5], NOW + 10).unwrap();
    assert_eq!(
        live.peers.len(),
        1,
        "only the one whose key expires later is left"
    );

    // later expiry, then a new expiry for one of the expired devices
    assert_eq!(
        s.note_expired_devices(NOW + 1000, 100).await.unwrap(),
        vec![net.id]
    );
    s.set_device_key_expiry(ids[0], Some(NOW + 5000))
        .await
        .unwrap();
    assert!(s
        .note_expired_devices(NOW + 4999, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.note_expired_devices(NOW + 5000, 100).await.unwrap(),
        vec![net.id]
    );
    assert_eq!(count("device.expired").await, 6);
}
