//! Local control protocol between the `zmesh` CLI and the daemon: one JSON request per
//! line on the Unix socket `<state dir>/zmesh.sock` (mode 0600), one JSON response per
//! line back. The socket's file mode is the access check: only root (the daemon's
//! owner) may drive the agent.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use zmesh_shared::{CertFingerprint, Secret};

/// Longest request line accepted; an `up` request with a CA bundle fits easily.
pub const MAX_LINE: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Enroll (first time) and/or bring tunnels up. With `enroll_key` the enrollment is
    /// done when this answers; without one (and not enrolled yet) the daemon starts an
    /// enrollment by login and answers [`Reply::Login`]: the CLI shows the link and sends
    /// [`Request::LoginWait`].
    Up {
        #[serde(default)]
        console: Option<String>,
        #[serde(default)]
        enroll_key: Option<Secret>,
        #[serde(default)]
        name: Option<String>,
        /// PEM text of CA roots to verify the console by.
        #[serde(default)]
        ca_pem: Option<String>,
        /// SHA-256 of the console's certificate (what a login trusts it by, when there is
        /// no enrollment key to carry the pin).
        #[serde(default)]
        fingerprint: Option<CertFingerprint>,
        /// Sign in again (the device is enrolled; its key may have expired): answers
        /// [`Reply::Login`]; after [`Request::LoginWait`] the device keeps its id, name
        /// and addresses and uses a new key pair.
        #[serde(default)]
        reauth: bool,
        /// Route and exit-node flags; unset ones keep the device's preferences.
        #[serde(default)]
        routes: crate::prefs::RouteFlags,
        /// The profile (enrollment) to enroll or bring up; none: `default`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
        /// Enrollment by login: the console's network to join, by name; none: the
        /// console's first network (or the confirming account's own network).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
    },
    /// Waits for the user to sign in to the login the last `up` started, then
    /// finishes like an `up` with a key (the answer is [`Reply::Done`]).
    LoginWait,
    Down {
        /// none: `default`
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    Logout {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// One profile's status, or (none) the default profile's with every profile's in
    /// [`Status::profiles`].
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// The STUN servers and relays in use (what `zmesh netcheck` checks by default).
    Nat,
    /// The Prometheus metrics text (what `daemon --metrics-listen` serves).
    Metrics {
        /// OpenMetrics text instead of the Prometheus text format 0.0.4.
        #[serde(default)]
        openmetrics: bool,
    },
    /// One echo request over the overlay; the CLI repeats it for `--count`.
    Ping {
        peer: String,
        timeout_ms: u64,
        /// none: the running profile whose map has the peer (error if several do)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// Test hook (`zmesh debug wake`): the data plane behaves as after a wake from
    /// sleep, so tests need not suspend the machine.
    DebugWake,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    Ok { result: Reply },
    Error { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Done {
        message: String,
    },
    /// An enrollment by login has started: the user opens `login_url`; the daemon gives
    /// up after `wait_ms` (the login's expiry, at most ten minutes).
    Login {
        login_url: String,
        expires_at_ms: i64,
        wait_ms: u64,
    },
    Status(Box<Status>),
    Pong(PingResult),
    Nat(NatInfo),
    Metrics {
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NatInfo {
    pub stun: Vec<SocketAddr>,
    pub relays: Vec<NamedRelay>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedRelay {
    pub name: String,
    pub addr: SocketAddr,
}

/// `zmesh status --json` prints exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The profile (enrollment) this is about.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Its network, as its map names it (null before a map, or from an older console).
    #[serde(default)]
    pub network: Option<NetworkStatus>,
    /// Why the profile is down although it was not taken down: refused (overlapping
    /// ranges, an exclusive network; down until `zmesh up --profile NAME`) or held
    /// (another profile's network is exclusive; back by itself once it ends).
    #[serde(default)]
    pub blocked: Option<BlockedStatus>,
    /// Packets its data plane dropped because they would have crossed into another
    /// profile's network.
    #[serde(default)]
    pub dropped_cross_network: u64,
    /// Without `--profile`, when other profiles are enrolled: every profile's status
    /// (this one first), each like this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<Status>,
    #[serde(rename = "self")]
    pub me: Option<SelfStatus>,
    pub peers: Vec<PeerStatus>,
    /// Routes this device offers and the exit node it uses.
    #[serde(default)]
    pub routes: RouteStatus,
    /// The resolver and the suffix its names live under; null before a map with names.
    #[serde(default)]
    pub dns: Option<Box<DnsStatus>>,
}

fn default_profile() -> String {
    "default".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub name: String,
    pub exclusive: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockedStatus {
    pub held: bool,
    pub reason: String,
}

/// `zmesh status`'s view of routes: what this device advertises (approval is the
/// console's: `zmesh-console routes list`) and the exit node in use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub advertised: Vec<ipnet::IpNet>,
    /// Of those, the ones the console approved (as its last map said).
    #[serde(default)]
    pub approved: Vec<ipnet::IpNet>,
    pub exit_node_offered: bool,
    /// The exit node chosen with `--exit-node`.
    pub exit_node: Option<String>,
    /// Whether traffic goes through it now (it is offered to this device).
    pub exit_node_active: bool,
    pub exit_node_allow_lan: bool,
    pub snat: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsStatus {
    /// Address of this device's resolver (the overlay range's first address).
    pub resolver: IpAddr,
    pub suffix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfStatus {
    pub name: String,
    pub overlay_ips: Vec<IpAddr>,
    pub public_key: String,
    pub device_id: String,
    pub console: String,
    pub connected: bool,
    /// "up", "down", "expired" (sign in again: `zmesh up --reauth`) or "revoked".
    pub state: String,
    pub listen_port: Option<u16>,
    /// When the device's key expires (RFC 3339), as the console said; null: never, or
    /// not told yet.
    #[serde(default)]
    pub key_expires_at: Option<String>,
    /// This device's name under the network's DNS suffix.
    #[serde(default)]
    pub dns_name: Option<String>,
}

/// The kind of path to a peer as status output names it: "direct", "relay", or
/// "unknown" while no path is confirmed (also what an unrecognised name reads as).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerPath {
    Direct,
    Relay,
    #[serde(other)]
    Unknown,
}

impl PeerPath {
    pub fn as_str(&self) -> &'static str {
        match self {
            PeerPath::Direct => "direct",
            PeerPath::Relay => "relay",
            PeerPath::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for PeerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<crate::core::PathKind> for PeerPath {
    fn from(k: crate::core::PathKind) -> Self {
        match k {
            crate::core::PathKind::Direct(_) => PeerPath::Direct,
            crate::core::PathKind::Relay => PeerPath::Relay,
            crate::core::PathKind::Unknown => PeerPath::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub overlay_ips: Vec<IpAddr>,
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    pub path: PeerPath,
    /// Where the path goes: the peer's address for "direct", the relay's name for "relay".
    #[serde(default)]
    pub via: Option<String>,
    /// Smoothed probe round-trip time of the direct path, in milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// When the path last changed (another direct address, to or from the relay):
    /// RFC 3339 with milliseconds, or null while none was chosen.
    #[serde(default)]
    pub path_since: Option<String>,
    /// RFC 3339, or null before the first handshake.
    pub last_handshake: Option<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Subnets this device may reach through the peer (an approved router).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<ipnet::IpNet>,
    /// Of those, the ones this device sends through it now (one router per prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_routes: Vec<ipnet::IpNet>,
    /// The peer is an exit node this device may use.
    #[serde(default)]
    pub exit_node: bool,
    /// `NAME.SUFFIX`, answered by the resolver.
    #[serde(default)]
    pub dns_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingResult {
    pub peer: String,
    pub ip: IpAddr,
    pub rtt_us: u64,
    pub path: PeerPath,
    pub endpoint: Option<SocketAddr>,
    /// The relay's name for "relay", the peer's address for "direct".
    #[serde(default)]
    pub via: Option<String>,
    /// Smoothed probe RTT of the direct path, in milliseconds.
    #[serde(default)]
    pub path_rtt_ms: Option<f64>,
    /// When the path last changed (RFC 3339 with milliseconds).
    #[serde(default)]
    pub path_since: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("cannot reach the zmesh daemon at {path}: {source} (is `zmesh daemon` running?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message on the control socket: {0}")]
    Json(#[from] serde_json::Error),
    #[error("message longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("daemon closed the connection without answering")]
    Closed,
    #[error("daemon did not answer within {0:?}")]
    Timeout(Duration),
}

/// Reads one newline-terminated line of at most [`MAX_LINE`] bytes; `None` at EOF.
pub async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<String>, IpcError> {
    let mut buf = Vec::new();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(IpcError::Closed)
            };
        }
        if let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&chunk[..pos]);
            r.consume(pos + 1);
            break;
        }
        let n = chunk.len();
        buf.extend_from_slice(chunk);
        r.consume(n);
        if buf.len() > MAX_LINE {
            return Err(IpcError::TooLong);
        }
    }
    if buf.len() > MAX_LINE {
        return Err(IpcError::TooLong);
    }
    String::from_utf8(buf).map(Some).map_err(|_| {
        IpcError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8",
        ))
    })
}

pub async fn write_json<W: tokio::io::AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    v: &T,
) -> Result<(), IpcError> {
    let mut line = serde_json::to_vec(v)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await?;
    Ok(())
}

/// Sends one request and waits (bounded) for its response.
pub async fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, IpcError> {
    let fut = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| IpcError::Connect {
                path: socket.display().to_string(),
                source,
            })?;
        let (r, mut w) = stream.into_split();
        write_json(&mut w, req).await?;
        let mut r = BufReader::new(r);
        let line = read_line(&mut r).await?.ok_or(IpcError::Closed)?;
        Ok(serde_json::from_str(&line)?)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| IpcError::Timeout(timeout))?
}

/// Binds the control socket, replacing a stale one, and restricts it to the owner.
pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    if socket.exists() {
        // A live daemon answers; only a dead one's socket may be removed.
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another zmesh daemon is already serving {}",
                    socket.display()
                ),
            ));
        }
        std::fs::remove_file(socket)?;
    }
    let l = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves one client connection: requests are answered in order until EOF.
pub async fn serve_conn<F, Fut>(stream: UnixStream, handler: F) -> Result<(), IpcError>
where
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    while let Some(line) = read_line(&mut r).await? {
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => handler(req).await,
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
        };
        write_json(&mut w, &resp).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"ping","peer":"b","timeout_ms":1000}"#).unwrap();
        assert!(
            matches!(r, Request::Ping { ref peer, timeout_ms: 1000, profile: None } if peer == "b")
        );
        // an older CLI's requests (no profile) read as the default profile; a newer
        // one's name it, and leave it out when it is the default
        for (line, want) in [
            (r#"{"cmd":"down"}"#, None),
            (r#"{"cmd":"down","profile":"lab"}"#, Some("lab")),
            (r#"{"cmd":"status"}"#, None),
            (r#"{"cmd":"logout","profile":"lab"}"#, Some("lab")),
            (r#"{"cmd":"up","profile":"lab"}"#, Some("lab")),
        ] {
            let r: Request = serde_json::from_str(line).unwrap();
            let got = match &r {
                Request::Down { profile }
                | Request::Status { profile }
                | Request::Logout { profile }
                | Request::Up { profile, .. } => profile.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(got.as_deref(), want, "{line}");
        }
        assert_eq!(
            serde_json::to_string(&Request::Down { profile: None }).unwrap(),
            r#"{"cmd":"down"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"down","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(
            r#"{"cmd":"ping","peer":"b","timeout_ms":1,"x":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        // an older CLI's `up` (no fingerprint) still reads; the login wait has no fields
        let fp = "ab".repeat(32);
        let r: Request = serde_json::from_str(&format!(
            r#"{{"cmd":"up","console":"https://x","fingerprint":"{fp}"}}"#
        ))
        .unwrap();
        assert!(
            matches!(r, Request::Up { fingerprint: Some(f), enroll_key: None, .. } if f.to_string() == fp)
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"up"}"#).is_ok());
        assert!(matches!(
            serde_json::from_str::<Request>(r#"{"cmd":"login_wait"}"#).unwrap(),
            Request::LoginWait
        ));
        let reply = Reply::Login {
            login_url: "https://c/ui/login/X".into(),
            expires_at_ms: 5,
            wait_ms: 600_000,
        };
        let v = serde_json::to_value(&reply).unwrap();
        assert_eq!(v["kind"], "login");
        assert_eq!(v["login_url"], "https://c/ui/login/X");
        let up = Request::Up {
            routes: Default::default(),
            console: Some("https://x".into()),
            enroll_key: Some(Secret::from_string("zmek1.topsecretvalue1234".into())),
            name: None,
            ca_pem: None,
            fingerprint: None,
            reauth: false,
            profile: None,
            network: None,
        };
        assert!(!format!("{up:?}").contains("topsecret"));
        let back: Request = serde_json::from_str(&serde_json::to_string(&up).unwrap()).unwrap();
        assert!(
            matches!(back, Request::Up { enroll_key: Some(k), .. } if k.expose() == "zmek1.topsecretvalue1234")
        );
    }

    #[test]
    fn status_json_shape() {
        let s = Status {
            profile: "default".into(),
            network: None,
            blocked: None,
            dropped_cross_network: 0,
            profiles: vec![],
            routes: Default::default(),
            me: Some(SelfStatus {
                name: "a".into(),
                overlay_ips: vec!["100.64.0.1".parse().unwrap()],
                public_key: "k".into(),
                device_id: "dev_x".into(),
                console: "https://c".into(),
                connected: true,
                state: "up".into(),
                listen_port: Some(51820),
                key_expires_at: None,
                dns_name: Some("a.default.zmesh.internal".into()),
            }),
            peers: vec![],
            dns: Some(Box::new(DnsStatus {
                resolver: "100.64.0.0".parse().unwrap(),
                suffix: "default.zmesh.internal".into(),
            })),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["self"]["connected"], true);
        assert_eq!(v["self"]["dns_name"], "a.default.zmesh.internal");
        assert_eq!(v["dns"]["resolver"], "100.64.0.0");
        assert_eq!(v["dns"]["suffix"], "default.zmesh.internal");
        assert_eq!(v["self"]["overlay_ips"][0], "100.64.0.1");
        assert!(v["peers"].as_array().unwrap().is_empty());
        assert!(v["self"]["key_expires_at"].is_null());
        // an older daemon's answer, without the field, still reads
        let mut old = v.clone();
        old["self"]
            .as_object_mut()
            .unwrap()
            .remove("key_expires_at");
        assert_eq!(serde_json::from_value::<Status>(old).unwrap(), s);
    }

    #[test]
    fn peer_path_keeps_its_json_strings() {
        use crate::core::PathKind;
        let direct = PathKind::Direct("192.0.2.1:51820".parse().unwrap());
        for (k, s) in [
            (direct, "direct"),
            (PathKind::Relay, "relay"),
            (PathKind::Unknown, "unknown"),
        ] {
            let p = PeerPath::from(k);
            assert_eq!(serde_json::to_value(p).unwrap(), s);
            assert_eq!(serde_json::from_value::<PeerPath>(s.into()).unwrap(), p);
            assert_eq!(p.to_string(), s);
        }
        // a name this version does not know (a newer daemon) reads as unknown
        let p: PeerPath = serde_json::from_str(r#""satellite""#).unwrap();
        assert_eq!(p, PeerPath::Unknown);
    }

    #[tokio::test]
    async fn round_trip_over_a_real_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("zmesh.sock");
        let l = bind(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // a second daemon must not steal a live socket
        assert!(bind(&sock).is_err());
        let server = tokio::spawn(async move {
            // the liveness probe of the second bind() is one of these connections
            loop {
                let (s, _) = l.accept().await.unwrap();
                serve_conn(s, |req| async move {
                    match req {
                        Request::Down { .. } => Response::Ok {
                            result: Reply::Done {
                                message: "down".into(),
                            },
                        },
                        other => Response::Error {
                            message: format!("unexpected {other:?}"),
                        },
                    }
                })
                .await
                .unwrap();
            }
        });
        let r = call(
            &sock,
            &Request::Down { profile: None },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(
            matches!(r, Response::Ok { result: Reply::Done { ref message } } if message == "down")
        );
        let r = call(
            &sock,
            &Request::Status { profile: None },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(matches!(r, Response::Error { .. }));
        server.abort();
        // garbage and over-long lines get an error or are cut off, never a panic
        let mut input: &[u8] = b"{not json}\n";
        let mut br = BufReader::new(&mut input);
        assert_eq!(read_line(&mut br).await.unwrap().unwrap(), "{not json}");
        let long = vec![b'x'; MAX_LINE + 10];
        let mut br = BufReader::new(&long[..]);
        assert!(matches!(read_line(&mut br).await, Err(IpcError::TooLong)));
    }

    #[tokio::test]
    async fn missing_daemon_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = call(
            &tmp.path().join("nope.sock"),
            &Request::Status { profile: None },
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("zmesh daemon"), "{e}");
    }
}
