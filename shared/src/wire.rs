//! Versioned wire messages between agent and console.
//!
//! Enrollment is one HTTPS request (`POST /agent/v1/enroll`). After that the agent
//! holds one long-lived WebSocket (`GET /agent/v1/stream`, `Authorization: Bearer
//! <device credential>`) carrying JSON text frames: [`ServerMsg`] down, [`ClientMsg`]
//! up. Every message is an internally tagged enum (`{"type": "...", ...}`), so a
//! newer peer's unknown message type is a parse error the receiver can log and skip
//! rather than a silent misread.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use crate::ids::DeviceState;
use crate::ids::{DeviceId, NetworkId};
use crate::keys::{CertFingerprint, SigningPublicKey, WgPublicKey};
use crate::peermap::{SignedDelta, SignedPeerMap};
use crate::relay::RelayToken;
use crate::secret::Secret;
use crate::time::UnixMillis;

/// HTTP path of the enrollment endpoint.
pub const ENROLL_PATH: &str = "/agent/v1/enroll";
/// HTTP path where an agent without an enrollment key starts a login.
pub const LOGIN_PATH: &str = "/agent/v1/login";
/// HTTP path where it waits for its user to confirm (long poll).
pub const LOGIN_WAIT_PATH: &str = "/agent/v1/login/wait";
/// HTTP path of the control stream (WebSocket upgrade).
pub const STREAM_PATH: &str = "/agent/v1/stream";
/// HTTP path of the console's built-in relay: `GET` with `Connection: Upgrade` and
/// `Upgrade: zmesh-relay`, after which the relay protocol (`crate::relay`) runs on the
/// same TLS connection.
pub const RELAY_PATH: &str = "/agent/v1/relay";
/// The `Upgrade` token of [`RELAY_PATH`].
pub const RELAY_UPGRADE: &str = "zmesh-relay";

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub protocol: u16,
    /// The secret part of the enrollment key (`zmek1.<secret>.…`).
    pub enroll_key: Secret,
    /// The device's WireGuard public key. The private key stays on the device.
    pub public_key: WgPublicKey,
    /// Requested device name; the console derives one from `hostname` when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
}

/// Starts an enrollment by login (no enrollment key): the user confirms in a browser.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginStart {
    pub protocol: u16,
    /// The device's WireGuard public key. The private key stays on the device.
    pub public_key: WgPublicKey,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    /// Set by an enrolled device signing in again (`zmesh up --reauth`): the user must be
    /// the device's owner, and on success the device keeps its id, name and addresses
    /// and takes `public_key` as its new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reauth: Option<ReauthProof>,
    /// The network to join, by name (`zmesh up --network NAME`); none: the console's
    /// first network, or the network of the account that confirms, if it is scoped to
    /// one. Ignored for a re-authentication (the device stays in its network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Which enrolled device signs in again, and its proof: its current stream credential.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReauthProof {
    pub device_id: DeviceId,
    pub credential: Secret,
}

/// Where the user confirms, and the agent's secret for waiting.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginStarted {
    /// Open in any browser: `To sign in, visit: URL`.
    pub login_url: String,
    /// Sent to the wait endpoint; shown once, stored hashed.
    pub poll_secret: Secret,
    pub expires_at_ms: i64,
}

/// Waits for the user to confirm (up to about 25 s per call).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginWait {
    pub poll_secret: Secret,
}

/// The user has not confirmed yet: wait again.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginPending {
    /// Always `pending`.
    pub status: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub protocol: u16,
    pub device_id: DeviceId,
    pub network_id: NetworkId,
    pub name: String,
    pub state: DeviceState,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Ipv4))]
    pub overlay_v4: Ipv4Addr,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Ipv6))]
    pub overlay_v6: Ipv6Addr,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "100.64.0.0/10"))]
    pub network_v4: Ipv4Net,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "fd7a:115c:a1e0::/48"))]
    pub network_v6: Ipv6Net,
    /// Bearer credential for the control stream; the console keeps only its hash.
    pub credential: Secret,
    /// Key that signs every peer map; the agent pins it and checks cached maps with it.
    pub signing_key: SigningPublicKey,
}

/// Console -> agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Hello {
        protocol: u16,
        device_id: DeviceId,
        server_time_ms: UnixMillis,
        /// When the device's key expires (its user then signs in again: `zmesh up
        /// --reauth`); absent: never.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_expires_at_ms: Option<i64>,
    },
    /// The whole map; sent on connect and on resync.
    PeerMap {
        map: SignedPeerMap,
    },
    /// What changed since the map (or delta) with `base_version`.
    PeerDelta {
        delta: SignedDelta,
    },
    /// The device was revoked or deleted; the console closes the stream after this.
    Revoked {
        reason: String,
    },
    Pong {
        nonce: u64,
    },
    /// Where to learn our public addresses and which relays to use. Sent to active
    /// devices after the map, and again with a fresh relay token before the last expires.
    NatConfig {
        /// STUN servers; an unspecified IP (0.0.0.0 / ::) means the console's own host.
        stun: Vec<SocketAddr>,
        relays: Vec<RelayInfo>,
        /// Proof for the relays that this device may use them; short-lived.
        #[serde(default)]
        relay_token: Option<RelayToken>,
    },
}

/// One relay an agent may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// Shown by `zmesh status` as `relay NAME`.
    pub name: String,
    /// TLS/TCP address; an unspecified IP means the console's own host.
    pub addr: SocketAddr,
    /// SHA-256 of the relay's TLS certificate; `None`: trust it like the console.
    #[serde(default)]
    pub cert_sha256: Option<CertFingerprint>,
    /// Reached by an HTTP upgrade (`Upgrade: zmesh-relay`) at this path on the console's
    /// own HTTPS address, the URL the agent enrolled with, instead of at `addr`; `addr`
    /// is then `0.0.0.0:0`, which agents that predate this field find unreachable
    /// rather than speak the relay protocol to the HTTPS port. `None` (older consoles,
    /// standalone relays): plain TLS/TCP to `addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_upgrade: Option<String>,
}

impl RelayInfo {
    /// Whether `path` may go into a request line: absolute, short, visible ASCII only
    /// (no CR/LF, no spaces), so a console's message cannot inject header lines.
    pub fn valid_upgrade_path(path: &str) -> bool {
        path.starts_with('/') && path.len() <= 128 && path.bytes().all(|b| b.is_ascii_graphic())
    }
}

/// Agent -> console.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    Hello {
        protocol: u16,
        agent_version: String,
        /// Version of the map the agent already has (from its cache), if any.
        #[serde(default)]
        have_version: Option<u64>,
    },
    /// The UDP endpoints the agent can be reached at: interface addresses first, then
    /// the server-reflexive (STUN-mapped) ones.
    Endpoints {
        endpoints: Vec<SocketAddr>,
    },
    Health {
        peers: Vec<PeerHealth>,
    },
    /// The agent could not apply a delta (version gap); send the whole map.
    Resync,
    /// The agent's data plane now enforces the map at `version` (its filter and peer
    /// set are in force): sent after every map or delta it applied. The console times each change from
    /// commit to this acknowledgement (`applied by N of M connected peers`).
    Applied {
        version: u64,
    },
    Ping {
        nonce: u64,
    },
    /// Batched summaries of connections the agent's filter accepted or denied since the
    /// last batch. Both ends of a flow report it, so the console can flag a flow that
    /// only one side reported.
    Flows {
        flows: Vec<FlowRecord>,
    },
    /// The device's public report key (Ed25519, made on the device), sent first on
    /// every stream; the console registers it once and refuses a different one.
    ReportKey {
        key: SigningPublicKey,
    },
    /// Flow summaries, each signed with the device's report key (see
    /// [`crate::flowlog`]). Unsigned `Flows` are refused.
    SignedFlows {
        flows: Vec<crate::flowlog::SignedFlow>,
    },
    /// The routes the device offers to carry (`zmesh up --advertise-routes`), and
    /// whether it offers to be an exit node (`--advertise-exit-node`). Sent after every
    /// Hello and whenever they change; each needs an admin's (or the policy's
    /// `auto_approvers`) approval before it carries anything.
    Routes {
        advertise: Vec<ipnet::IpNet>,
        #[serde(default)]
        exit_node: bool,
    },
}

/// Most flow records one `ClientMsg::Flows` may carry; the console drops the excess.
pub const MAX_FLOWS_PER_BATCH: usize = 1000;

pub use crate::flowlog::{FlowRecord, FlowVerdict};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealth {
    pub device_id: DeviceId,
    /// "direct", "relay" or "unknown" (no confirmed path yet).
    pub path: String,
    pub last_handshake_ms: Option<UnixMillis>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// JSON body of every error the console's HTTP API returns.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `enroll_key_expired`, `name_taken`.
    pub code: String,
    pub message: String,
    /// The request field at fault, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged() {
        let m = ClientMsg::Ping { nonce: 7 };
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, r#"{"type":"ping","nonce":7}"#);
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn nat_config_round_trip() {
        let m = ServerMsg::NatConfig {
            stun: vec!["0.0.0.0:3478".parse().unwrap()],
            relays: vec![RelayInfo {
                name: "eu".into(),
                addr: "192.0.2.1:8445".parse().unwrap(),
                cert_sha256: None,
                https_upgrade: None,
            }],
            relay_token: None,
        };
        let j = serde_json::to_string(&m).unwrap();
        assert!(j.starts_with(r#"{"type":"nat_config","#), "{j}");
        match serde_json::from_str::<ServerMsg>(&j).unwrap() {
            ServerMsg::NatConfig { stun, relays, .. } => {
                assert_eq!(stun.len(), 1);
                assert_eq!(relays[0].name, "eu");
            }
            other => panic!("{other:?}"),
        }
        // what a console from before `https_upgrade` sends still parses, and the field
        // is left out when unset so such agents see the same message as before
        assert!(!j.contains("https_upgrade"), "{j}");
        let old = r#"{"type":"nat_config","stun":[],"relays":[{"name":"c","addr":"0.0.0.0:8445","cert_sha256":null}]}"#;
        match serde_json::from_str::<ServerMsg>(old).unwrap() {
            ServerMsg::NatConfig { relays, .. } => assert_eq!(relays[0].https_upgrade, None),
            other => panic!("{other:?}"),
        }
        assert!(RelayInfo::valid_upgrade_path(RELAY_PATH));
        for bad in ["relay", "/a b", "/a\r\nX-Evil: 1", ""] {
            assert!(!RelayInfo::valid_upgrade_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn flows_round_trip() {
        let f = FlowRecord {
            src_device: DeviceId::new(),
            dst_device: DeviceId::new(),
            proto: 6,
            src_port: 40000,
            dst_port: 443,
            bytes: 1234,
            packets: 5,
            bytes_back: 0,
            packets_back: 0,
            first_seen_ms: 1,
            last_seen_ms: 2,
            rule: Some("web".into()),
            policy_version: Some(4),
            verdict: FlowVerdict::Denied,
        };
        let m = ClientMsg::Flows {
            flows: vec![f.clone()],
        };
        let j = serde_json::to_string(&m).unwrap();
        assert!(j.starts_with(r#"{"type":"flows","#), "{j}");
        assert!(j.contains(r#""verdict":"denied""#));
        match serde_json::from_str::<ClientMsg>(&j).unwrap() {
            ClientMsg::Flows { flows } => assert_eq!(flows, vec![f]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn enroll_request_rejects_unknown_fields_and_redacts() {
        let key = crate::keys::WgPrivateKey::generate().public_key();
        let r = EnrollRequest {
            protocol: 1,
            enroll_key: Secret::from_string("s3cr3t-value".into()),
            public_key: key,
            name: None,
            hostname: Some("h".into()),
            os: None,
        };
        assert!(!format!("{r:?}").contains("s3cr3t"));
        let mut v = serde_json::to_value(&r).unwrap();
        v["extra"] = 1.into();
        assert!(serde_json::from_value::<EnrollRequest>(v).is_err());
    }
}
