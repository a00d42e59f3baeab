//! Two console replicas on one PostgreSQL database: a change made through one reaches
//! agents connected to the other through NOTIFY/LISTEN on `zmesh_changes`.
//! Without PostgreSQL this prints a notice and returns, unless `CI` is set (then it fails).

mod support {
    pub mod pg;
}

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use zmesh_console::bus::Bus;
use zmesh_console::cli::ApiClient;
use zmesh_console::infra::config::TlsSource;
use zmesh_console::store::{Role, Store};
use zmesh_console::AppState;
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{ClientMsg, EnrollResponse, ServerMsg};
use zmesh_shared::{CertFingerprint, Secret, SigningKey, WgPrivateKey};

type Ws = WebSocketStream<TlsStream<TcpStream>>;

struct Replica {
    addr: std::net::SocketAddr,
    admin: ApiClient,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn replica(
    url: &str,
    dir: &std::path::Path,
    token: &str,
    signing: &str,
    pin: CertFingerprint,
) -> Replica {
    let store = Store::connect(url).await.unwrap();
    let id = zmesh_console::infra::tls::load_or_create(
        dir,
        &TlsSource::SelfSigned { extra_sans: vec![] },
    )
    .unwrap();
    assert_eq!(id.fingerprint, pin);
    let tls = zmesh_console::infra::tls::server_config(&id).unwrap();
    let bus = zmesh_console::bus::pg::attach(Bus::new(), url)
        .await
        .unwrap();
    let key = SigningKey::from_base64(signing).unwrap();
    let state = AppState::new(store, key, Some(pin), bus).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(zmesh_console::serve(listener, tls, state, async move {
        let _ = stopped.await;
    }));
    let client_tls = zmesh_console::infra::tls_client::pinned_client_config(pin).unwrap();
    let admin = ApiClient::new(format!("https://{addr}"), token.to_string(), client_tls).unwrap();
    Replica {
        addr,
        admin,
        _stop: stop,
    }
}

async fn connect(r: &Replica, pin: CertFingerprint, credential: &str) -> Ws {
    let cfg = zmesh_console::infra::tls_client::pinned_client_config(pin).unwrap();
    let tcp = TcpStream::connect(r.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut req = format!("wss://localhost:{}/agent/v1/stream", r.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().unwrap(),
    );
    tokio_tungstenite::client_async(req, tls).await.unwrap().0
}

async fn next(ws: &mut Ws) -> Option<ServerMsg> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no message within 5 s")
        {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Skips Hello and the first map.
async fn start(ws: &mut Ws) {
    assert!(matches!(next(ws).await, Some(ServerMsg::Hello { .. })));
    assert!(matches!(next(ws).await, Some(ServerMsg::PeerMap { .. })));
}

#[tokio::test]
async fn changes_fan_out_across_replicas_via_notify() {
    let Some(db) = support::pg::fresh_db("changes_fan_out_across_replicas_via_notify").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = Secret::generate("zmt_");
    {
        let s = Store::connect(&db.url).await.unwrap();
        s.create_admin_token("root", Role::Admin, &token.hash(), None, now_ms())
            .await
            .unwrap();
    }
    let id = zmesh_console::infra::tls::load_or_create(
        dir.path(),
        &TlsSource::SelfSigned { extra_sans: vec![] },
    )
    .unwrap();
    let signing = SigningKey::generate().to_base64();
    let r1 = replica(
        &db.url,
        dir.path(),
        token.expose(),
        &signing,
        id.fingerprint,
    )
    .await;
    let r2 = replica(
        &db.url,
        dir.path(),
        token.expose(),
        &signing,
        id.fingerprint,
    )
    .await;

    let v: Value = r1
        .admin
        .post("/api/v1/enroll-keys", Some(&json!({"reusable": true})))
        .await
        .unwrap();
    let key = v["key"].as_str().unwrap().to_string();
    let mut devs: Vec<EnrollResponse> = vec![];
    for n in ["ra", "rb", "rc"] {
        let body = json!({"protocol": 1, "enroll_key": key, "name": n,
            "public_key": WgPrivateKey::generate().public_key().to_string()});
        let v: Value = r1
            .admin
            .post("/agent/v1/enroll", Some(&body))
            .await
            .unwrap();
        devs.push(serde_json::from_value(v).unwrap());
    }
    let mut a = connect(&r1, id.fingerprint, devs[0].credential.expose()).await;
    let mut b = connect(&r2, id.fingerprint, devs[1].credential.expose()).await;
    let mut c = connect(&r2, id.fingerprint, devs[2].credential.expose()).await;
    for ws in [&mut a, &mut b, &mut c] {
        start(ws).await;
    }

    // B reports endpoints to replica 2; A, on replica 1, gets the upsert.
    let eps = vec!["192.0.2.44:51820".parse().unwrap()];
    b.send(Message::Text(
        serde_json::to_string(&ClientMsg::Endpoints {
            endpoints: eps.clone(),
        })
        .unwrap()
        .into(),
    ))
    .await
    .unwrap();
    match next(&mut a).await {
        Some(ServerMsg::PeerDelta { delta }) => {
            let d = delta.verify(&devs[0].signing_key).unwrap();
            assert_eq!(d.upsert.len(), 1);
            assert_eq!(d.upsert[0].device_id, devs[1].device_id);
            assert_eq!(d.upsert[0].endpoints, eps);
        }
        other => panic!("expected PeerDelta on replica 1, got {other:?}"),
    }
    // C (on replica 2) gets the same upsert locally.
    assert!(matches!(
        next(&mut c).await,
        Some(ServerMsg::PeerDelta { .. })
    ));

    // Revoke C through replica 1: C, connected to replica 2, is told and closed;
    // B (replica 2) and A (replica 1) drop it.
    let _: Value = r1
        .admin
        .post(
            &format!("/api/v1/devices/{}/revoke", devs[2].device_id),
            None::<&()>,
        )
        .await
        .unwrap();
    assert!(matches!(
        next(&mut c).await,
        Some(ServerMsg::Revoked { .. })
    ));
    assert!(next(&mut c).await.is_none());
    for ws in [&mut a, &mut b] {
        match next(ws).await {
            Some(ServerMsg::PeerDelta { delta }) => {
                assert_eq!(
                    delta.verify(&devs[0].signing_key).unwrap().remove,
                    vec![devs[2].device_id]
                );
            }
            other => panic!("expected PeerDelta, got {other:?}"),
        }
    }
}
