//! Store cases on tokens, snapshots, stored secrets and errors (split from store.rs to
//! keep files short; run by the `both!` pairs declared there).

use std::collections::HashSet;
use std::net::SocketAddr;

use sqlx::{Column, Row};
use zmesh_console::domain::peermap::build_peer_map;
use zmesh_console::store::{NewEnrollKey, Role, Store, StoreError};
use zmesh_shared::{DeviceId, Secret, TokenId};

use crate::{make_key, req, Ctx, NOW};

pub async fn admin_tokens(c: &Ctx) {
    let s = &c.store;
    let (t1, t2, t3, t4) = (
        Secret::generate("zmt_"),
        Secret::generate("zmt_"),
        Secret::generate("zmt_"),
        Secret::generate("zmt_"),
    );
    let admin = s
        .create_admin_token("ops", Role::Admin, &t1.hash(), None, NOW)
        .await
        .unwrap();
    assert_eq!(
        (admin.name.as_str(), admin.role, admin.created_at_ms),
        ("ops", Role::Admin, NOW)
    );
    let aud = s
        .create_admin_token("audit", Role::Auditor, &t2.hash(), Some(NOW + 100), NOW)
        .await
        .unwrap();
    let expired = s
        .create_admin_token("old", Role::Admin, &t3.hash(), Some(NOW), NOW - 10)
        .await
        .unwrap();
    let revoked = s
        .create_admin_token("gone", Role::Admin, &t4.hash(), None, NOW)
        .await
        .unwrap();
    s.revoke_admin_token(revoked.id, NOW + 1).await.unwrap();

    assert_eq!(
        s.admin_token_by_hash(&t1.hash(), NOW).await.unwrap(),
        Some(admin.clone())
    );
    assert_eq!(
        s.admin_token_by_hash(&t2.hash(), NOW + 99)
            .await
            .unwrap()
            .map(|t| t.role),
        Some(Role::Auditor)
    );
    assert_eq!(
        s.admin_token_by_hash(&t2.hash(), NOW + 100).await.unwrap(),
        None,
        "expired at its expiry"
    );
    assert_eq!(s.admin_token_by_hash(&t3.hash(), NOW).await.unwrap(), None);
    assert_eq!(s.admin_token_by_hash(&t4.hash(), NOW).await.unwrap(), None);
    assert_eq!(
        s.admin_token_by_hash(&Secret::generate("zmt_").hash(), NOW)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.admin_token_by_hash(t1.expose(), NOW).await.unwrap(),
        None,
        "lookup is by hash only"
    );

    let list = s.list_admin_tokens().await.unwrap();
    let ids: HashSet<TokenId> = list.iter().map(|t| t.id).collect();
    assert_eq!(
        ids,
        [admin.id, aud.id, expired.id, revoked.id]
            .into_iter()
            .collect()
    );
    assert_eq!(
        list.iter()
            .find(|t| t.id == revoked.id)
            .unwrap()
            .revoked_at_ms,
        Some(NOW + 1)
    );
    assert!(matches!(
        s.revoke_admin_token(TokenId::new(), NOW).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.create_admin_token("x", Role::Admin, t1.expose(), None, NOW)
            .await,
        Err(StoreError::Invalid {
            field: "token_hash",
            ..
        })
    ));
    assert!(matches!(
        s.create_admin_token("", Role::Admin, &Secret::generate("zmt_").hash(), None, NOW)
            .await,
        Err(StoreError::Invalid { field: "name", .. })
    ));
    let json = serde_json::to_string(&list).unwrap();
    assert!(!json.contains(&t1.hash()) && !json.contains(t1.expose()));
}

pub async fn network_snapshot_contents(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let open = make_key(s, &net, true, true, None).await;
    let gated = make_key(s, &net, true, false, None).await;
    let a = s
        .enroll_device(req(&open, Some("a"), None).0)
        .await
        .unwrap();
    let b = s
        .enroll_device(req(&open, Some("b"), None).0)
        .await
        .unwrap();
    let p = s
        .enroll_device(req(&gated, Some("p"), None).0)
        .await
        .unwrap();
    let r = s
        .enroll_device(req(&open, Some("r"), None).0)
        .await
        .unwrap();
    s.revoke_device(r.id, NOW).await.unwrap();
    s.set_device_endpoints(b.id, &["192.0.2.2:1".parse().unwrap()], NOW)
        .await
        .unwrap();

    let snap = s.network_snapshot(net.id).await.unwrap();
    assert_eq!(snap.network, s.get_network(net.id).await.unwrap());
    assert_eq!(snap.devices.len(), 4, "every state is in the snapshot");
    for d in &snap.devices {
        assert_eq!(d, &s.get_device(d.id).await.unwrap());
    }
    let m = build_peer_map(&snap, a.id, NOW).unwrap();
    assert_eq!(m.version, snap.network.revision);
    assert_eq!(
        m.peers.iter().map(|p| p.device_id).collect::<Vec<_>>(),
        vec![b.id]
    );
    assert_eq!(
        m.peers[0].endpoints,
        vec!["192.0.2.2:1".parse::<SocketAddr>().unwrap()]
    );
    assert!(build_peer_map(&snap, p.id, NOW).is_none());
    assert!(matches!(
        s.network_snapshot(zmesh_shared::NetworkId::new()).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// Every value of every table, as text.
async fn dump_all(s: &Store) -> Vec<String> {
    let mut out = vec![];
    for table in ["networks", "enroll_keys", "devices", "admin_tokens"] {
        let rows = sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(s.pool())
            .await
            .unwrap();
        for row in rows {
            for col in row.columns() {
                let i = col.ordinal();
                if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                    out.extend(v);
                } else if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                    out.extend(v.map(|v| v.to_string()));
                } else {
                    panic!(
                        "column {table}.{} has a type the store should not use",
                        col.name()
                    );
                }
            }
        }
    }
    out
}

pub async fn no_secret_in_plain_text(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    let key = make_key(s, &net, true, true, None).await;
    let (e, cred) = req(&key, Some("s"), None);
    let d = s.enroll_device(e).await.unwrap();
    let tok = Secret::generate("zmt_");
    s.create_admin_token("ops", Role::Admin, &tok.hash(), None, NOW)
        .await
        .unwrap();

    let values = dump_all(s).await;
    for secret in [key.secret.expose(), cred.expose(), tok.expose()] {
        assert!(
            !values.iter().any(|v| v.contains(secret)),
            "a secret is stored in plain text"
        );
    }
    // the dump does see the tables: the hashes are there
    for h in [key.secret.hash(), cred.hash(), tok.hash()] {
        assert!(values.contains(&h), "hash missing from the dump");
    }
    // and the rows the API returns carry neither secrets nor hashes
    let json = serde_json::to_string(&(
        s.get_device(d.id).await.unwrap(),
        s.list_enroll_keys(net.id).await.unwrap(),
    ))
    .unwrap();
    for h in [key.secret.hash(), cred.hash()] {
        assert!(!json.contains(&h));
    }
}

pub async fn lookups_errors_and_reconnect(c: &Ctx) {
    let s = &c.store;
    let net = s.default_network().await.unwrap();
    // concurrent first calls agree on one network
    let (x, y) = tokio::join!(s.default_network(), s.default_network());
    assert_eq!(x.unwrap().id, net.id);
    assert_eq!(y.unwrap().id, net.id);
    let unknown = DeviceId::new();
    assert!(matches!(
        s.get_device(unknown).await,
        Err(StoreError::NotFound { what: "device" })
    ));
    assert!(matches!(
        s.rename_device(unknown, "n").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_device(unknown).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.touch_device(unknown, NOW).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.revoke_device(unknown, NOW).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.device_by_name(net.id, "nobody").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.get_network(zmesh_shared::NetworkId::new()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(s
        .device_by_credential("not-a-hash")
        .await
        .unwrap()
        .is_none());
    let bad_key = NewEnrollKey {
        network_id: zmesh_shared::NetworkId::new(),
        secret_hash: Secret::generate("").hash(),
        description: None,
        reusable: true,
        preapproved: true,
        tags: vec![],
        expires_at_ms: None,
        created_by: "alice".into(),
    };
    assert!(matches!(
        s.create_enroll_key(bad_key.clone(), NOW).await,
        Err(StoreError::NotFound { .. })
    ));
    let plain = NewEnrollKey {
        network_id: net.id,
        secret_hash: "plain secret".into(),
        ..bad_key.clone()
    };
    assert!(matches!(
        s.create_enroll_key(plain, NOW).await,
        Err(StoreError::Invalid {
            field: "secret_hash",
            ..
        })
    ));
    let badtag = NewEnrollKey {
        network_id: net.id,
        tags: vec!["UP".into()],
        ..bad_key.clone()
    };
    assert!(matches!(
        s.create_enroll_key(badtag, NOW).await,
        Err(StoreError::Invalid { field: "tags", .. })
    ));
    let key = make_key(s, &net, true, true, None).await;
    let d = s
        .enroll_device(req(&key, Some("keep"), None).0)
        .await
        .unwrap();
    // a second handle (another replica) on the same database: migrations are idempotent
    let again = Store::connect(&c.url).await.unwrap();
    assert_eq!(again.default_network().await.unwrap().id, net.id);
    assert_eq!(again.get_device(d.id).await.unwrap(), d);
    s.delete_device(d.id).await.unwrap();
    assert!(matches!(
        again.get_device(d.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        Store::connect("mysql://x").await,
        Err(StoreError::Invalid {
            field: "database_url",
            ..
        })
    ));
}

/// The IdP re-check's claims: only active users of the issuer whose last check is older
/// than the cut-off, each claimed once even by two claimers at the same time; results and
/// sealed tokens recorded; a re-check's group change applied like a sign-in.
pub async fn idp_checks_claimed_once(c: &Ctx) {
    use zmesh_console::store::{IdpRefreshed, SealedToken, SsoIdentity, SsoOutcome, TokenUpdate};
    let s = &c.store;
    let iss = "https://idp.example.com";
    let id = |issuer: &str, sub: &str, groups: &[&str]| SsoIdentity {
        issuer: issuer.into(),
        subject: sub.into(),
        email: Some(format!("{sub}@example.com")),
        display_name: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        role: Role::Member,
    };
    let mut ids = Vec::new();
    for (issuer, sub) in [(iss, "u1"), (iss, "u2"), ("https://other.example", "u3")] {
        match s
            .sso_sign_in_user(&id(issuer, sub, &["eng"]), NOW)
            .await
            .unwrap()
        {
            SsoOutcome::Ready(u, _) => ids.push(u.id),
            o => panic!("{o:?}"),
        }
    }
    s.set_refresh_token(&ids[0], &SealedToken::new("v1:sealed-u1".into()), NOW)
        .await
        .unwrap();
    // u1 was just checked (its sign-in); u2 never; u3 is another provider's
    let due = s
        .claim_idp_checks(iss, NOW - 1000, NOW + 10, 10)
        .await
        .unwrap();
    let names: Vec<&str> = due.iter().map(|d| d.user.username.as_str()).collect();
    assert_eq!(names, ["u2@example.com"]);
    assert!(due[0].token.is_none());
    assert!(!format!("{due:?}").contains("sealed-u1"));
    assert!(s
        .claim_idp_checks(iss, NOW - 1000, NOW + 10, 10)
        .await
        .unwrap()
        .is_empty());
    // Later, both are due; two claimers at once get each user once.
    let (a, b) = tokio::join!(
        s.claim_idp_checks(iss, NOW + 5000, NOW + 6000, 10),
        s.claim_idp_checks(iss, NOW + 5000, NOW + 6000, 10)
    );
    let mut all: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    all.sort_by(|x, y| x.user.username.cmp(&y.user.username));
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].token.as_ref().unwrap().as_str(), "v1:sealed-u1");
    assert_eq!(all[0].user.idp_check.as_deref(), Some("ok"));
    // Results and the token are recorded; Clear drops the token.
    s.record_idp_check(&ids[0], NOW + 7000, "unreachable: x", TokenUpdate::Clear)
        .await
        .unwrap();
    let u1 = s.get_user(&ids[0]).await.unwrap();
    assert_eq!(
        (u1.idp_checked_at_ms, u1.idp_check.as_deref()),
        (Some(NOW + 7000), Some("unreachable: x"))
    );
    let due = s
        .claim_idp_checks(iss, NOW + 9000, NOW + 9000, 10)
        .await
        .unwrap();
    assert!(due.iter().all(|d| d.token.is_none()), "{due:?}");
    // A re-check with new groups: applied and audited as at a sign-in.
    let new = id(iss, "u2", &["ops", "eng"]);
    let r = s
        .idp_refresh_user(
            &ids[1],
            &new,
            TokenUpdate::Replace(SealedToken::new("v1:n".into())),
            NOW + 9500,
        )
        .await
        .unwrap();
    let IdpRefreshed::Updated { user, result, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (result.as_str(), user.groups.clone()),
        ("groups changed", vec!["eng".to_string(), "ops".to_string()])
    );
    assert_eq!(user.idp_check.as_deref(), Some("groups changed"));
    let r = s
        .idp_refresh_user(&ids[1], &new, TokenUpdate::Keep, NOW + 9600)
        .await
        .unwrap();
    assert!(
        matches!(r, IdpRefreshed::Updated { ref result, .. } if result == "ok"),
        "{r:?}"
    );
    // another subject, or the other provider: not this user
    let r = s
        .idp_refresh_user(&ids[1], &id(iss, "u1", &[]), TokenUpdate::Keep, NOW)
        .await
        .unwrap();
    assert_eq!(r, IdpRefreshed::Gone);
    let events = s
        .audit_events_page(0, u64::MAX >> 1, &Default::default(), 1000)
        .await
        .unwrap();
    assert!(events
        .iter()
        .any(|e| e.action == "user.groups_changed"
            && e.target.as_deref() == Some("user:u2@example.com")));
}
