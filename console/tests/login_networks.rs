//! Enrollment by login into a chosen network, through the services on real SQLite: a
//! login that names a network (`zmesh up --network lab`) lands there with its range; a
//! login that names none joins the first network, unless the account that confirms is
//! scoped to one, which then gets the device; an account scoped to `lab` cannot confirm a
//! login that asked for another network (refused and audited); an unknown network is a
//! 422-class error naming the field.

use zmesh_console::bus::Bus;
use zmesh_console::service::login::{self, LoginRequest};
use zmesh_console::service::networks::{self, CreateNetwork};
use zmesh_console::service::{AuditCtx, Core, ServiceError};
use zmesh_console::store::{EventFilter, Role, Store};
use zmesh_shared::time::now_ms;
use zmesh_shared::{NetworkId, SigningKey, WgPrivateKey};

const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

async fn start(core: &Core, network: Option<&str>) -> Result<String, ServiceError> {
    let (l, _poll) = login::start(
        core,
        AuditCtx::new("anonymous", None),
        LoginRequest {
            public_key: WgPrivateKey::generate().public_key(),
            name: None,
            hostname: Some("laptop".into()),
            os: Some("linux".into()),
            reauth: None,
            network: network.map(str::to_string),
        },
    )
    .await?;
    Ok(l.code)
}

async fn create(core: &Core, name: &str, v4: &str) -> NetworkId {
    let n = networks::create(
        core,
        AuditCtx::new("admin:root", None),
        CreateNetwork {
            name: name.into(),
            v4: Some(v4.into()),
            v6: None,
            dns_suffix: None,
            exclusive: false,
        },
    )
    .await
    .unwrap();
    n.id.parse().unwrap()
}

#[tokio::test]
async fn logins_land_in_the_right_network() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let core = Core::new(store.clone(), SigningKey::generate(), Bus::new())
        .await
        .unwrap();
    let lab = create(&core, "lab", "10.88.0.0/16").await;
    let ops = create(&core, "ops", "10.99.0.0/16").await;
    let now = now_ms();
    let member = store
        .create_user("bob@example.com", Role::Member, PHC, now)
        .await
        .unwrap();
    let lena = store
        .create_user_in("lena", Role::Admin, PHC, now, Some(lab))
        .await
        .unwrap();
    let ctx = |who: &str| AuditCtx::new(who.to_string(), None);

    // named: lands in lab, with lab's addresses
    let code = start(&core, Some("lab")).await.unwrap();
    let d = login::confirm(&core, ctx("user:bob"), &member, &code, None)
        .await
        .unwrap()
        .device;
    assert_eq!(d.network_id, lab);
    let range: ipnet::Ipv4Net = "10.88.0.0/16".parse().unwrap();
    assert!(range.contains(&d.overlay_v4), "{}", d.overlay_v4);

    // unnamed: the first network for an unscoped account ...
    let code = start(&core, None).await.unwrap();
    let d = login::confirm(&core, ctx("user:bob"), &member, &code, None)
        .await
        .unwrap()
        .device;
    assert_eq!(d.network_id, core.network_id);
    // ... and the account's own network for a scoped one
    let code = start(&core, None).await.unwrap();
    let d = login::confirm(&core, ctx("user:lena"), &lena, &code, None)
        .await
        .unwrap()
        .device;
    assert_eq!(d.network_id, lab);

    // a lab admin cannot put a device into ops
    let code = start(&core, Some("ops")).await.unwrap();
    let e = login::confirm(&core, ctx("user:lena"), &lena, &code, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ServiceError::Forbidden {
                code: "other_network",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(store.list_devices(ops).await.unwrap().is_empty());
    let refused = store
        .audit_events_page(
            0,
            u64::MAX / 2,
            &EventFilter {
                action: Some("auth.forbidden".into()),
                ..Default::default()
            },
            100,
        )
        .await
        .unwrap();
    assert!(
        refused.iter().any(|e| e.actor == "user:lena"),
        "{refused:?}"
    );

    // an unknown network: refused before anything is stored, naming the field
    let e = start(&core, Some("nope")).await.unwrap_err();
    match e {
        ServiceError::Invalid { field, message, .. } => {
            assert_eq!(field.as_deref(), Some("network"));
            assert!(message.contains("nope"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
