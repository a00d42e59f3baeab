//! Fuzz target: JSON decoding of the versioned wire messages (`zmesh_shared::wire`) and
//! the agent's handling of signed peer maps and deltas (`zmesh_agent::control::map`).
//!
//! Input: one mode byte, then JSON documents separated by NUL bytes (never valid inside
//! JSON text). Mode 0: console -> agent messages, fed to the agent's map state in order.
//! Mode 1: agent -> console messages and the enrollment request/response bodies.
//! Mode 2: the first document is a peer map, the rest are deltas; they are signed with
//! the pinned console key here (the fuzzer cannot sign), so the map logic behind the
//! signature check is reached. Mode 3: a cached map as the agent stores it on disk.
//! Mode 4: the documents are text: enrollment keys, public keys, fingerprints, ids.
//! Whatever parses must serialize and parse back to the same JSON; the agent's map
//! cache must always replay to the map it holds.

#![no_main]

use std::str::FromStr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zmesh_agent::control::map::{peer_configs, MapState};
use zmesh_agent::control::nat;
use zmesh_shared::enroll_key::EnrollKey;
use zmesh_shared::peermap::{CachedMap, PeerDelta, PeerMap, Signed};
use zmesh_shared::wire::{
    ClientMsg, EnrollRequest, EnrollResponse, ErrorBody, RelayInfo, ServerMsg,
};
use zmesh_shared::{
    CertFingerprint, DeviceId, NetworkId, SigningKey, SigningPublicKey, WgPublicKey,
};

/// The device under test; seed maps are addressed to it.
const DEVICE: &str = "dev_00000000000000000000000000000001";
/// At most this many documents per input (bounds the work per run).
const MAX_DOCS: usize = 16;

fn console_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    // 32 fixed bytes (1..=32), base64; the seed corpus is signed with it.
    KEY.get_or_init(|| {
        SigningKey::from_base64("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let docs = rest.split(|b| *b == 0).take(MAX_DOCS);
    let device: DeviceId = DEVICE.parse().unwrap();
    let mut st = MapState::new(console_key().public_key(), device);
    match mode % 5 {
        0 => {
            for d in docs {
                if let Some(m) = round_trip::<ServerMsg>(d) {
                    server_msg(&mut st, m);
                }
            }
        }
        1 => {
            for d in docs {
                round_trip::<ClientMsg>(d);
                round_trip::<EnrollRequest>(d);
                round_trip::<EnrollResponse>(d);
                round_trip::<ErrorBody>(d);
            }
        }
        2 => {
            for (i, d) in docs.enumerate() {
                let msg = if i == 0 {
                    let Some(map) = round_trip::<PeerMap>(d) else {
                        return;
                    };
                    ServerMsg::PeerMap {
                        map: Signed::sign(&map, console_key()),
                    }
                } else {
                    let Some(delta) = round_trip::<PeerDelta>(d) else {
                        continue;
                    };
                    ServerMsg::PeerDelta {
                        delta: Signed::sign(&delta, console_key()),
                    }
                };
                server_msg(&mut st, msg);
            }
        }
        3 => {
            for d in docs {
                if let Some(c) = round_trip::<CachedMap>(d) {
                    if let Ok(map) = c.restore(&console_key().public_key()) {
                        let _ = peer_configs(&map);
                    }
                }
            }
        }
        _ => {
            for d in docs {
                text(&String::from_utf8_lossy(d));
            }
        }
    }
});

/// What a user pastes or an API path carries: what parses prints as text that parses
/// to the same value.
fn text(t: &str) {
    if let Ok(k) = t.parse::<EnrollKey>() {
        let again: EnrollKey = k.to_text().parse().expect("own enrollment key text");
        assert!(again.secret == k.secret && again.pin == k.pin);
    }
    fn same<T: FromStr + ToString + PartialEq + std::fmt::Debug>(t: &str) {
        if let Ok(v) = t.parse::<T>() {
            let again = v.to_string().parse::<T>().ok();
            assert_eq!(again.as_ref(), Some(&v), "{t:?} does not round trip");
        }
    }
    same::<WgPublicKey>(t);
    same::<SigningPublicKey>(t);
    same::<CertFingerprint>(t);
    same::<DeviceId>(t);
    same::<NetworkId>(t);
}

/// Parses `doc`; what parses must serialize, parse again and serialize the same.
fn round_trip<T: Serialize + DeserializeOwned>(doc: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(doc).ok()?;
    let text = serde_json::to_string(&v).expect("a parsed message does not serialize");
    let again: T = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("own output does not parse: {e}: {text}"));
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        text,
        "round trip changed"
    );
    Some(v)
}

/// What the agent's control loop does with a console message (minus the I/O).
fn server_msg(st: &mut MapState, m: ServerMsg) {
    match m {
        ServerMsg::PeerMap { map } => {
            let _ = st.on_full(map);
        }
        ServerMsg::PeerDelta { delta } => {
            let _ = st.on_delta(delta);
        }
        ServerMsg::NatConfig {
            stun,
            relays,
            relay_token,
        } => {
            let console = std::net::SocketAddr::from(([192, 0, 2, 1], 8443));
            let s = nat::settings(&stun, &relays, relay_token, Some(console));
            assert!(s.stun.iter().all(|a| !a.ip().is_unspecified()));
            // a relay kept from the console's message is either at the console's HTTPS
            // address with a path safe for a request line, or at a usable address
            assert!(s.relays.iter().all(|r| match &r.https_upgrade {
                Some(p) => r.addr == console && RelayInfo::valid_upgrade_path(p),
                None => !r.addr.ip().is_unspecified(),
            }));
            let _ = nat::settings(&stun, &relays, None, None);
        }
        ServerMsg::Hello { .. } | ServerMsg::Revoked { .. } | ServerMsg::Pong { .. } => {}
    }
    // What the agent persists must restore to what it holds.
    if let (Some(map), Some(cache)) = (st.map(), st.cache()) {
        let restored = cache
            .restore(&console_key().public_key())
            .expect("the agent's own cache does not restore");
        assert_eq!(&restored, map, "cache replays to a different map");
        assert!(peer_configs(map)
            .iter()
            .all(|p| p.device_id != map.device_id));
    }
}
