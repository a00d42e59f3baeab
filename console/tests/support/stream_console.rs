//! A real HTTPS console for stream tests: SQLite in a temp dir, served on 127.0.0.1:0
//! with a self-signed certificate, an admin and an auditor API client, and agents that
//! enroll over the agent API and hold real WebSocket streams over pinned TLS.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use zmesh_console::bus::Bus;
use zmesh_console::cli::ApiClient;
use zmesh_console::infra::config::TlsSource;
use zmesh_console::store::{Role, Store};
use zmesh_console::AppState;
use zmesh_shared::peermap::PeerMap;
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{EnrollResponse, ServerMsg};
use zmesh_shared::{CertFingerprint, DeviceId, Secret, SigningKey, SigningPublicKey, WgPrivateKey};

pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

pub struct Console {
    pub _dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    pub pin: CertFingerprint,
    pub admin: ApiClient,
    /// The admin token's text (for the CLI binary: `ZMESH_TOKEN`).
    pub admin_token: String,
    pub auditor: ApiClient,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn console() -> Console {
    console_with(None).await
}

pub async fn console_with(nat: Option<zmesh_console::domain::nat::NatAdvert>) -> Console {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/t.db", dir.path().display()))
        .await
        .unwrap();
    let token = Secret::generate("zmt_");
    store
        .create_admin_token("root", Role::Admin, &token.hash(), None, now_ms())
        .await
        .unwrap();
    let audit_token = Secret::generate("zmt_");
    store
        .create_admin_token("audit", Role::Auditor, &audit_token.hash(), None, now_ms())
        .await
        .unwrap();
    let id = zmesh_console::infra::tls::load_or_create(
        dir.path(),
        &TlsSource::SelfSigned { extra_sans: vec![] },
    )
    .unwrap();
    let tls = zmesh_console::infra::tls::server_config(&id).unwrap();
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
    let client_tls =
        zmesh_console::infra::tls_client::pinned_client_config(id.fingerprint).unwrap();
    let admin = ApiClient::new(
        format!("https://{addr}"),
        token.expose().to_string(),
        client_tls.clone(),
    )
    .unwrap();
    let auditor = ApiClient::new(
        format!("https://{addr}"),
        audit_token.expose().to_string(),
        client_tls,
    )
    .unwrap();
    Console {
        _dir: dir,
        addr,
        pin: id.fingerprint,
        admin,
        admin_token: token.expose().to_string(),
        auditor,
        stop: Some(stop),
    }
}

impl Console {
    pub async fn enroll(&self, key: &str, name: &str) -> EnrollResponse {
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

    pub async fn connect(&self, credential: &str) -> Result<Ws, tungstenite::Error> {
        let cfg = zmesh_console::infra::tls_client::pinned_client_config(self.pin).unwrap();
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
pub async fn next(ws: &mut Ws) -> Option<ServerMsg> {
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
pub async fn hello_and_map(ws: &mut Ws, me: DeviceId, key: &SigningPublicKey) -> PeerMap {
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

pub async fn new_key(c: &Console) -> String {
    let v: Value = c
        .admin
        .post("/api/v1/enroll-keys", Some(&json!({"reusable": true})))
        .await
        .unwrap();
    v["key"].as_str().unwrap().to_string()
}
