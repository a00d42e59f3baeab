//! Re-authentication in the store, on SQLite and on PostgreSQL (support/pg.rs): a login
//! naming an enrolled device, confirmed by someone else, changes nothing; confirmed by
//! its owner, it keeps the device's id, name and addresses, installs the new key and
//! expiry, re-arms the expiry sweeper and bumps the revision; collecting swaps the
//! credential; a newer attempt supersedes an older unconfirmed one; a revoked device's
//! credential is no proof.

mod support {
    pub mod pg;
}

use zmesh_console::store::{NewDeviceLogin, Role, Store, StoreError, UserRow};
use zmesh_shared::{DeviceId, Secret, WgPrivateKey, WgPublicKey};

const NOW: i64 = 1_700_000_000_000;
const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

async fn sqlite() -> (Store, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("console.db").display());
    (Store::connect(&url).await.unwrap(), tmp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reauth_sqlite() {
    let (s, _tmp) = sqlite().await;
    reauth(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reauth_postgres() {
    let Some(db) = support::pg::fresh_db("store_reauth::postgres").await else {
        return;
    };
    let s = Store::connect(&db.url).await.unwrap();
    reauth(&s).await;
}

fn pk() -> WgPublicKey {
    WgPrivateKey::generate().public_key()
}

/// A login request; returns its poll secret.
async fn login(s: &Store, code: &str, key: WgPublicKey, reauth: Option<DeviceId>) -> Secret {
    let net = s.default_network().await.unwrap();
    let poll = Secret::generate("zmw_");
    let l = s
        .create_device_login(NewDeviceLogin {
            code: code.into(),
            poll_hash: poll.hash(),
            network_id: net.id,
            public_key: key,
            name: Some("laptop".into()),
            hostname: None,
            os: None,
            now_ms: NOW,
            expires_at_ms: NOW + 600_000,
            reauth_device_id: reauth,
        })
        .await
        .unwrap();
    assert_eq!(l.reauth_device_id, reauth);
    poll
}

async fn user(s: &Store, name: &str) -> UserRow {
    s.create_user(name, Role::Member, PHC, NOW).await.unwrap()
}

async fn reauth(s: &Store) {
    let (alice, bob) = (
        user(s, "alice@example.com").await,
        user(s, "bob@example.com").await,
    );
    let net = s.default_network().await.unwrap();
    let k1 = pk();
    let p1 = login(s, "c1", k1, None).await;
    let d = s
        .confirm_device_login("c1", net.id, &alice, None, NOW, Some(NOW + 1000))
        .await
        .unwrap();
    assert_eq!(d.key_expires_at_ms, Some(NOW + 1000));
    assert_eq!(d.owner, "user:alice@example.com");
    let cred1 = Secret::generate("zmd_");
    s.collect_device_login(&p1.hash(), &cred1.hash(), NOW)
        .await
        .unwrap();
    assert!(s
        .device_for_reauth(d.id, &cred1.hash())
        .await
        .unwrap()
        .is_some());
    let wrong = Secret::generate("zmd_");
    assert!(s
        .device_for_reauth(d.id, &wrong.hash())
        .await
        .unwrap()
        .is_none());
    // the key expires and the sweeper notes it
    assert_eq!(
        s.note_expired_devices(NOW + 2000, 10).await.unwrap().len(),
        1
    );
    assert!(s
        .device_for_reauth(d.id, &cred1.hash())
        .await
        .unwrap()
        .is_some());

    // an older attempt is superseded by a newer one
    login(s, "c0", pk(), Some(d.id)).await;
    let k2 = pk();
    let p2 = login(s, "c2", k2, Some(d.id)).await;
    assert!(matches!(
        s.device_login("c0", NOW).await,
        Err(StoreError::NotFound { .. })
    ));
    let net = s.default_network().await.unwrap();
    // bob is not the owner: nothing changes
    assert!(matches!(
        s.confirm_device_login("c2", net.id, &bob, None, NOW, Some(NOW + 5000))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.get_device(d.id).await.unwrap(), d);
    assert_eq!(s.default_network().await.unwrap().revision, net.revision);

    // alice is: same device, new key and expiry, a new revision
    let r = s
        .confirm_device_login("c2", net.id, &alice, Some("renamed"), NOW, Some(NOW + 5000))
        .await
        .unwrap();
    assert_eq!(r.public_key, k2);
    assert_eq!(r.key_expires_at_ms, Some(NOW + 5000));
    for (a, b) in [(&r.name, &d.name), (&r.owner, &d.owner)] {
        assert_eq!(a, b);
    }
    assert_eq!(
        (r.id, r.overlay_v4, r.overlay_v6),
        (d.id, d.overlay_v4, d.overlay_v6)
    );
    assert!(s.default_network().await.unwrap().revision > net.revision);
    assert_eq!(s.list_devices(net.id).await.unwrap().len(), 1);
    // used once
    assert!(s
        .confirm_device_login("c2", net.id, &alice, None, NOW, None)
        .await
        .is_err());

    // collecting swaps the credential
    let cred2 = Secret::generate("zmd_");
    s.collect_device_login(&p2.hash(), &cred2.hash(), NOW)
        .await
        .unwrap();
    assert!(s
        .device_by_credential(&cred1.hash())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.device_by_credential(&cred2.hash())
            .await
            .unwrap()
            .map(|d| d.id),
        Some(d.id)
    );
    // the renewed expiry is noted in its turn
    assert_eq!(
        s.note_expired_devices(NOW + 6000, 10).await.unwrap().len(),
        1
    );

    // a revoked device has no proof
    s.revoke_device(d.id, NOW).await.unwrap();
    assert!(s
        .device_for_reauth(d.id, &cred2.hash())
        .await
        .unwrap()
        .is_none());
}
