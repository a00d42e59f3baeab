//! Relay client: a TLS/TCP connection to a zmesh relay that carries WireGuard datagrams
//! to and from peers that have no direct path. The datagrams are already encrypted by
//! WireGuard; the relay only sees which device sends to which.
//!
//! The console's built-in relay is reached on its HTTPS port: the same TLS connection
//! first carries an HTTP/1.1 upgrade (`GET /agent/v1/relay`, `Upgrade: zmesh-relay`),
//! then the relay protocol (see [`Upgrade`]).
//!
//! Also picks the nearest relay by TCP connect time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use zmesh_shared::relay::{auth_proof, Frame, RelayToken};
use zmesh_shared::WgPrivateKey;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest HTTP response head read before the relay protocol starts.
const MAX_RESPONSE_HEAD: usize = 8192;

/// Ask for the relay by an HTTP upgrade on the TLS connection first: the console's
/// built-in relay on its HTTPS port.
#[derive(Debug, Clone, Copy)]
pub struct Upgrade<'a> {
    /// `Host` header: the console URL's host and port.
    pub host: &'a str,
    /// Request path, e.g. `/agent/v1/relay` (checked by
    /// `RelayInfo::valid_upgrade_path` before it gets here).
    pub path: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayClientError {
    #[error("cannot reach relay {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("relay {0} did not answer in time")]
    Timeout(SocketAddr),
    #[error("relay connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("relay refused us: {0}")]
    Refused(String),
    #[error("relay protocol error: {0}")]
    Protocol(String),
}

pub struct RelaySender {
    w: WriteHalf<TlsStream<TcpStream>>,
    buf: Vec<u8>,
    /// The TCP connection's local address (gone from the host: the connection is too).
    local: Option<SocketAddr>,
}

pub struct RelayReceiver {
    r: ReadHalf<TlsStream<TcpStream>>,
    buf: Vec<u8>,
}

impl RelaySender {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// Queues one datagram for device `dst` (its WireGuard public key).
    pub async fn send(&mut self, dst: [u8; 32], data: &[u8]) -> std::io::Result<()> {
        self.buf.clear();
        Frame::Send {
            dst,
            data: data.to_vec(),
        }
        .encode(&mut self.buf);
        self.w.write_all(&self.buf).await?;
        self.w.flush().await
    }

    pub async fn ping(&mut self, nonce: u64) -> std::io::Result<()> {
        self.buf.clear();
        Frame::Ping { nonce }.encode(&mut self.buf);
        self.w.write_all(&self.buf).await?;
        self.w.flush().await
    }
}

/// What the relay delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    Datagram {
        src: [u8; 32],
        data: Vec<u8>,
    },
    Pong {
        nonce: u64,
    },
    /// The relay ends the connection (e.g. token expired).
    Closing(String),
}

impl RelayReceiver {
    /// The next event; `Ok(None)` when the relay closed the connection. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<RelayEvent>, RelayClientError> {
        match next_frame(&mut self.r, &mut self.buf).await? {
            None => Ok(None),
            Some(Frame::Recv { src, data }) => Ok(Some(RelayEvent::Datagram { src, data })),
            Some(Frame::Pong { nonce }) => Ok(Some(RelayEvent::Pong { nonce })),
            Some(Frame::Error { message }) => Ok(Some(RelayEvent::Closing(message))),
            Some(f) => Err(RelayClientError::Protocol(format!(
                "unexpected frame {f:?}"
            ))),
        }
    }
}

async fn next_frame(
    r: &mut ReadHalf<TlsStream<TcpStream>>,
    buf: &mut Vec<u8>,
) -> Result<Option<Frame>, RelayClientError> {
    loop {
        match Frame::decode(buf) {
            Ok(Some((f, used))) => {
                buf.drain(..used);
                return Ok(Some(f));
            }
            Ok(None) => {}
            Err(e) => return Err(RelayClientError::Protocol(e.to_string())),
        }
        // Read into a local buffer so a cancelled read (a timeout around `recv`) leaves
        // `buf` intact: this function is cancel-safe.
        let mut tmp = [0u8; 16384];
        let n = r.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Sends the upgrade request and reads the response head; what follows it stays in
/// `buf` for the relay protocol.
async fn http_upgrade(
    r: &mut ReadHalf<TlsStream<TcpStream>>,
    w: &mut WriteHalf<TlsStream<TcpStream>>,
    up: Upgrade<'_>,
    buf: &mut Vec<u8>,
) -> Result<(), RelayClientError> {
    if !zmesh_shared::wire::RelayInfo::valid_upgrade_path(up.path)
        || !up.host.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(RelayClientError::Protocol(
            "bad upgrade path or host".into(),
        ));
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: {}\r\n\
         User-Agent: zmesh/{}\r\n\r\n",
        up.path,
        up.host,
        zmesh_shared::wire::RELAY_UPGRADE,
        env!("CARGO_PKG_VERSION")
    );
    w.write_all(req.as_bytes()).await?;
    w.flush().await?;
    loop {
        if let Some(end) = buf.windows(4).position(|x| x == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let status = head.lines().next().unwrap_or("").trim().to_string();
            let code = status.split_whitespace().nth(1).unwrap_or("");
            return if code == "101" {
                Ok(())
            } else {
                Err(RelayClientError::Refused(format!(
                    "upgrade answered {:.80}",
                    status
                )))
            };
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(RelayClientError::Protocol(
                "upgrade response head too long".into(),
            ));
        }
        let mut tmp = [0u8; 4096];
        let n = r.read(&mut tmp).await?;
        if n == 0 {
            return Err(RelayClientError::Protocol(
                "connection closed during the upgrade".into(),
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Connects, authenticates with `token` and proof of `key`, and splits the connection.
pub async fn connect(
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    token: &RelayToken,
    key: &WgPrivateKey,
) -> Result<(RelaySender, RelayReceiver), RelayClientError> {
    connect_via(addr, server_name, tls, None, token, key).await
}

/// [`connect`], through an HTTP upgrade first when `upgrade` is given.
pub async fn connect_via(
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    upgrade: Option<Upgrade<'_>>,
    token: &RelayToken,
    key: &WgPrivateKey,
) -> Result<(RelaySender, RelayReceiver), RelayClientError> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| RelayClientError::Connect(addr, e))?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok();
        let stream = TlsConnector::from(tls).connect(server_name, tcp).await?;
        let (mut r, mut w) = tokio::io::split(stream);
        let mut buf = vec![];
        let mut out = vec![];
        if let Some(up) = upgrade {
            http_upgrade(&mut r, &mut w, up, &mut buf).await?;
        }
        Frame::Hello {
            token: serde_json::to_vec(token)
                .map_err(|e| RelayClientError::Protocol(e.to_string()))?,
        }
        .encode(&mut out);
        w.write_all(&out).await?;
        w.flush().await?;
        let (rkey, nonce) = match next_frame(&mut r, &mut buf).await? {
            Some(Frame::Challenge { key, nonce }) => (key, nonce),
            Some(Frame::Error { message }) => return Err(RelayClientError::Refused(message)),
            other => {
                return Err(RelayClientError::Protocol(format!(
                    "expected challenge, got {other:?}"
                )))
            }
        };
        let secret = key.to_x25519();
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(rkey));
        let proof = auth_proof(
            shared.as_bytes(),
            &nonce,
            &rkey,
            key.public_key().as_bytes(),
        );
        out.clear();
        Frame::Auth { proof }.encode(&mut out);
        w.write_all(&out).await?;
        w.flush().await?;
        match next_frame(&mut r, &mut buf).await? {
            Some(Frame::Ready) => {}
            Some(Frame::Error { message }) => return Err(RelayClientError::Refused(message)),
            other => {
                return Err(RelayClientError::Protocol(format!(
                    "expected ready, got {other:?}"
                )))
            }
        }
        Ok((RelaySender { w, buf: out, local }, RelayReceiver { r, buf }))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| RelayClientError::Timeout(addr))?
}

/// TCP connect time to each relay (`None`: unreachable), in the order given.
pub async fn relay_latencies(relays: &[SocketAddr], timeout: Duration) -> Vec<Option<Duration>> {
    let mut v = vec![];
    for a in relays {
        let t0 = Instant::now();
        let r = tokio::time::timeout(timeout, TcpStream::connect(a)).await;
        v.push(matches!(r, Ok(Ok(_))).then(|| t0.elapsed()));
    }
    v
}

/// Index of the relay with the lowest latency.
pub fn nearest(latencies: &[Option<Duration>]) -> Option<usize> {
    latencies
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.map(|l| (i, l)))
        .min_by_key(|(_, l)| *l)
        .map(|(i, _)| i)
}
