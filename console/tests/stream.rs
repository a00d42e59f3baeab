//! The control stream end to end: a real HTTPS console on 127.0.0.1:0 (self-signed
//! certificate, SQLite in a temp dir), agents that enroll over HTTPS and connect real
//! WebSocket clients over TLS with the certificate pinned. Checks signed maps,
//! revocation fan-out within one second, and endpoint updates reaching peers.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use zmesh_console::bus::Bus;
use zmesh_console::cli::ApiClient;
use zmesh_console::config::TlsSource;
use zmesh_console::store::{Role, Store};
use zmesh_console::AppState;
use zmesh_shared::peermap::PeerMap;
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{ClientMsg, EnrollResponse, ServerMsg};
use zmesh_shared::{CertFingerprint, DeviceId, Secret, SigningKey, SigningPublicKey, WgPrivateKey};

type Ws = WebSocketStream<TlsStream<TcpStream>>;

struct Console {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    pin: CertFingerprint,
    admin: ApiClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn console() -> Console {
    console_with(None).await
}

async fn console_with(nat: Option<zmesh_console::nat::NatAdvert>) -> Console {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let token = Secret::generate("zmt_");
    store
        .create_admin_token("root", Role::Admin, &token.hash(), None, now_ms())
        .await
        .unwrap();
    let id = zmesh_console::tls::load_or_create(
        dir.path(),
        &TlsSource::SelfSigned { extra_sans: vec![] },
    )
    .unwrap();
    let tls = zmesh_console::tls::server_config(&id).unwrap();
    let state = AppState::new(
        store,
        SigningKey::generate(),
        Some(id.fingerprint),
        Bus::new(),
    )
    .await
    .unwrap();
    let state = match nat {
        Some(n) => state.with_nat(n),
        None => state,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(zmesh_console::serve(listener, tls, state, async move {
        let _ = stopped.await;
    }));
    let client_tls = zmesh_console::tls_pin::pinned_client_config(id.fingerprint).unwrap();
    let admin = ApiClient::new(
        format!("https://{addr}"),
        token.expose().to_string(),
        client_tls,
    )
    .unwrap();
    Console {
        _dir: dir,
        addr,
        pin: id.fingerprint,
        admin,
        stop: Some(stop),
    }
}

impl Console {
    async fn enroll(&self, key: &str, name: &str) -> EnrollResponse {
        let body = json!({
            "protocol": zmesh_shared::PROTOCOL_VERSION,
            "enroll_key": key,
            "public_key": WgPrivateKey::generate().public_key().to_string(),
            "name": name,
        });
        let v: Value = self
            .admin
            .post("/agent/v1/enroll", Some(&body))
            .await
            .unwrap();
        serde_json::from_value(v).unwrap()
    }

    async fn connect(&self, credential: &str) -> Result<Ws, tungstenite::Error> {
        let cfg = zmesh_console::tls_pin::pinned_client_config(self.pin).unwrap();
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let mut req = format!("wss://localhost:{}/agent/v1/stream", self.addr.port())
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {credential}").parse().unwrap(),
        );
        tokio_tungstenite::client_async(req, tls)
            .await
            .map(|(ws, _)| ws)
    }
}

/// Next console message, skipping control frames; `None` when the stream ended.
async fn next(ws: &mut Ws) -> Option<ServerMsg> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no message within 5 s");
        match m {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads Hello and the full map, verifying the map's signature.
async fn hello_and_map(ws: &mut Ws, me: DeviceId, key: &SigningPublicKey) -> PeerMap {
    match next(ws).await {
        Some(ServerMsg::Hello {
            device_id,
            protocol,
            ..
        }) => {
            assert_eq!(device_id, me);
            assert_eq!(protocol, zmesh_shared::PROTOCOL_VERSION);
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    match next(ws).await {
        Some(ServerMsg::PeerMap { map }) => {
            let m = map.verify(key).expect("map signed by the console key");
            assert!(map.verify(&SigningKey::generate().public_key()).is_err());
            assert_eq!(m.device_id, me);
            m
        }
        other => panic!("expected PeerMap, got {other:?}"),
    }
}

async fn new_key(c: &Console) -> String {
    let v: Value = c
        .admin
        .post("/api/v1/enroll-keys", Some(&json!({"reusable": true})))
        .await
        .unwrap();
    v["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn three_agents_get_signed_maps_and_revocation_fans_out() {
    let c = console().await;
    let key = new_key(&c).await;
    let mut enrolled = vec![];
    for n in ["a1", "a2", "a3"] {
        enrolled.push(c.enroll(&key, n).await);
    }
    let signing = enrolled[0].signing_key;
    let mut socks = vec![];
    let mut maps = vec![];
    for e in &enrolled {
        let mut ws = c.connect(e.credential.expose()).await.unwrap();
        maps.push(hello_and_map(&mut ws, e.device_id, &signing).await);
        socks.push(ws);
    }
    for (i, m) in maps.iter().enumerate() {
        let mut want: Vec<DeviceId> = enrolled
            .iter()
            .filter(|e| e.device_id != enrolled[i].device_id)
            .map(|e| e.device_id)
            .collect();
        want.sort();
        let got: Vec<DeviceId> = m.peers.iter().map(|p| p.device_id).collect();
        assert_eq!(got, want, "map of {} lists the others", enrolled[i].name);
    }

    let victim = enrolled[2].device_id;
    let started = std::time::Instant::now();
    let _: Value = c
        .admin
        .post(&format!("/api/v1/devices/{victim}/revoke"), None::<&()>)
        .await
        .unwrap();
    for (i, ws) in socks.iter_mut().take(2).enumerate() {
        match next(ws).await {
            Some(ServerMsg::PeerDelta { delta }) => {
                let d = delta.verify(&signing).expect("delta signed");
                assert_eq!(d.remove, vec![victim]);
                assert_eq!(d.base_version, maps[i].version);
                maps[i].apply(&d).unwrap();
                assert!(maps[i].peer(&victim).is_none());
            }
            other => panic!("expected PeerDelta, got {other:?}"),
        }
    }
    match next(&mut socks[2]).await {
        Some(ServerMsg::Revoked { reason }) => assert_eq!(reason, "revoked"),
        other => panic!("expected Revoked, got {other:?}"),
    }
    assert!(
        next(&mut socks[2]).await.is_none(),
        "revoked device is disconnected"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fan-out took {:?}",
        started.elapsed()
    );

    match c.connect(enrolled[2].credential.expose()).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!(
            "revoked credential must get 401, got {:?}",
            other.map(|_| ())
        ),
    }
    // The others stay connected and are answered.
    socks[0]
        .send(Message::Text(
            serde_json::to_string(&ClientMsg::Ping { nonce: 9 })
                .unwrap()
                .into(),
        ))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut socks[0]).await,
        Some(ServerMsg::Pong { nonce: 9 })
    ));
}

#[tokio::test]
async fn reported_endpoints_reach_peers_as_upsert() {
    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "ep-a").await;
    let b = c.enroll(&key, "ep-b").await;
    let mut wa = c.connect(a.credential.expose()).await.unwrap();
    let mut wb = c.connect(b.credential.expose()).await.unwrap();
    hello_and_map(&mut wa, a.device_id, &a.signing_key).await;
    let mut mb = hello_and_map(&mut wb, b.device_id, &b.signing_key).await;
    assert!(mb.peer(&a.device_id).unwrap().endpoints.is_empty());

    let eps: Vec<std::net::SocketAddr> = vec![
        "192.0.2.10:51820".parse().unwrap(),
        "[2001:db8::1]:51820".parse().unwrap(),
    ];
    let msg = ClientMsg::Endpoints {
        endpoints: eps.clone(),
    };
    wa.send(Message::Text(serde_json::to_string(&msg).unwrap().into()))
        .await
        .unwrap();
    match next(&mut wb).await {
        Some(ServerMsg::PeerDelta { delta }) => {
            let d = delta.verify(&b.signing_key).unwrap();
            assert!(d.remove.is_empty());
            assert_eq!(d.upsert.len(), 1);
            assert_eq!(d.upsert[0].device_id, a.device_id);
            assert_eq!(d.upsert[0].endpoints, eps);
            mb.apply(&d).unwrap();
        }
        other => panic!("expected PeerDelta, got {other:?}"),
    }
    // Resync returns the full map, equal to the one built from deltas.
    wb.send(Message::Text(
        serde_json::to_string(&ClientMsg::Resync).unwrap().into(),
    ))
    .await
    .unwrap();
    match next(&mut wb).await {
        Some(ServerMsg::PeerMap { map }) => {
            let full = map.verify(&b.signing_key).unwrap();
            assert_eq!(full.peers, mb.peers);
            assert_eq!(full.version, mb.version);
        }
        other => panic!("expected PeerMap, got {other:?}"),
    }
}

/// Active devices get the STUN servers, the relays and a relay token naming them right
/// after their map; pending ones get nothing until approved.
#[tokio::test]
async fn active_devices_get_nat_config_with_a_relay_token() {
    let c = console_with(Some(zmesh_console::nat::NatAdvert {
        stun: vec!["0.0.0.0:3478".parse().unwrap()],
        relays: vec![zmesh_shared::wire::RelayInfo {
            name: "console".into(),
            addr: "0.0.0.0:8445".parse().unwrap(),
            cert_sha256: None,
        }],
        token_ttl: Duration::from_secs(60),
    }))
    .await;
    let key = new_key(&c).await;
    let e = c.enroll(&key, "n1").await;
    let mut ws = c.connect(e.credential.expose()).await.unwrap();
    hello_and_map(&mut ws, e.device_id, &e.signing_key).await;
    match next(&mut ws).await {
        Some(ServerMsg::NatConfig {
            stun,
            relays,
            relay_token: Some(t),
        }) => {
            assert_eq!(stun, vec!["0.0.0.0:3478".parse().unwrap()]);
            assert_eq!(relays[0].name, "console");
            let claims =
                zmesh_shared::relay::verify_token(&t, &e.signing_key, now_ms() as u64).unwrap();
            assert_eq!(claims.device_id, e.device_id);
            assert!(claims.expires_at_ms <= now_ms() as u64 + 60_000);
        }
        other => panic!("expected NatConfig with a token, got {other:?}"),
    }

    // pending: no token until an admin approves the device
    let v: Value = c
        .admin
        .post("/api/v1/enroll-keys", Some(&json!({"preapproved": false})))
        .await
        .unwrap();
    let p = c.enroll(v["key"].as_str().unwrap(), "p1").await;
    let mut pws = c.connect(p.credential.expose()).await.unwrap();
    hello_and_map(&mut pws, p.device_id, &p.signing_key).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), pws.next())
            .await
            .is_err(),
        "a pending device got a message after its map"
    );
    let _: Value = c
        .admin
        .post(
            &format!("/api/v1/devices/{}/approve", p.device_id),
            None::<&()>,
        )
        .await
        .unwrap();
    loop {
        match next(&mut pws).await {
            Some(ServerMsg::PeerMap { .. } | ServerMsg::PeerDelta { .. }) => continue,
            Some(ServerMsg::NatConfig { relay_token, .. }) => {
                assert!(relay_token.is_some());
                break;
            }
            other => panic!("expected NatConfig after approval, got {other:?}"),
        }
    }
}
