//! Fuzz target: the agent's authenticated path probes (`zmesh_agent::core::probe`),
//! with fixed keys for two devices A and B and a third device C.
//!
//! Input: one mode byte, then the bytes. Even mode: the bytes are a datagram B receives
//! (only what A sealed opens; what opens must read the same when sealed again).
//! Odd mode: the bytes are the header and the body of a probe, which A seals as they
//! are (so `open`'s body parsing sees every body, not only those `seal` writes); B must
//! open it exactly when the header is valid, read what the body says, and C must not.

#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use zmesh_agent::core::probe::{self, Kind, ProbeError, ProbeKey, BODY_LEN, HEADER_LEN};
use zmesh_shared::WgPrivateKey;

struct Keys {
    a_pub: [u8; 32],
    /// A's key for probes with B, and B's for probes with A (the same key).
    ab: ProbeKey,
    ba: ProbeKey,
    /// C's key for probes with B.
    cb: ProbeKey,
}

/// Derived once: key agreement per input would dominate the run time.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(make_keys)
}

fn make_keys() -> Keys {
    let (a, b, c) = (
        WgPrivateKey::from_bytes([0xA1; 32]),
        WgPrivateKey::from_bytes([0xB2; 32]),
        WgPrivateKey::from_bytes([0xC3; 32]),
    );
    let derive = |ours: &WgPrivateKey, theirs: &WgPrivateKey| {
        ProbeKey::derive(&ours.to_x25519(), &theirs.public_key().to_x25519()).unwrap()
    };
    Keys {
        a_pub: a.public_key().0,
        ab: derive(&a, &b),
        ba: derive(&b, &a),
        cb: derive(&c, &b),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let k = keys();
    if mode & 1 == 0 {
        assert_eq!(probe::sender(rest).is_ok(), probe::is_probe(rest));
        // Only what A sealed opens (the seeds are such probes): sealed again, it reads
        // the same, and C cannot read it.
        if let Ok(p) = probe::open(&k.ba, rest) {
            assert_eq!(probe::sender(rest), Ok(k.a_pub));
            assert!(probe::open(&k.cb, rest).is_err());
            let nonce: [u8; 12] = rest[36..48].try_into().unwrap();
            let again = probe::seal(&k.ab, &k.a_pub, &p, nonce);
            assert_eq!(probe::open(&k.ba, &again), Ok(p));
        }
        return;
    }
    if rest.len() < HEADER_LEN + BODY_LEN {
        return;
    }
    let header: [u8; HEADER_LEN] = rest[..HEADER_LEN].try_into().unwrap();
    let body: [u8; BODY_LEN] = rest[HEADER_LEN..HEADER_LEN + BODY_LEN].try_into().unwrap();
    let sealed = probe::seal_raw(&k.ab, &header, body);
    assert_eq!(sealed.len(), probe::PROBE_LEN);
    let valid_header = header[0] == probe::MAGIC && header[1] == probe::VERSION && header[3] == 0;
    let opened = probe::open(&k.ba, &sealed);
    // A third device shares no key with A: never authentic, whatever else is wrong.
    assert!(probe::open(&k.cb, &sealed).is_err());
    if !valid_header {
        assert_eq!(opened, Err(ProbeError::NotProbe));
        return;
    }
    let want_kind = match header[2] {
        1 => Kind::Ping,
        2 => Kind::Pong,
        k => {
            assert_eq!(opened, Err(ProbeError::Kind(k)));
            return;
        }
    };
    let p = opened.expect("an authentic probe did not open");
    assert_eq!(p.kind, want_kind);
    assert_eq!(p.tx, u64::from_be_bytes(body[..8].try_into().unwrap()));
    match p.observed {
        None => assert!(body[8] != 6, "family 6 without an address"),
        Some(SocketAddr::V4(_)) => assert_eq!(body[8], 4),
        Some(SocketAddr::V6(_)) => assert_eq!(body[8], 6),
    }
    if let Some(a) = p.observed {
        assert_eq!(a.port(), u16::from_be_bytes([body[25], body[26]]));
        if let IpAddr::V4(v4) = a.ip() {
            assert_eq!(body[9..25], v4.to_ipv6_mapped().octets());
        }
    }
    // What was read, sealed again the normal way, reads the same.
    let nonce: [u8; 12] = header[36..].try_into().unwrap();
    let again = probe::seal(&k.ab, &k.a_pub, &p, nonce);
    assert_eq!(probe::open(&k.ba, &again), Ok(p));
    assert_eq!(probe::sender(&again), Ok(k.a_pub));
    // Any single flipped bit, chosen by the input, breaks authentication.
    if let Some(&at) = rest.get(HEADER_LEN + BODY_LEN) {
        let mut t = sealed.clone();
        let i = at as usize % t.len();
        t[i] ^= 1 << (at % 8);
        assert!(
            probe::open(&k.ba, &t).is_err(),
            "flipped byte {i} still opens"
        );
    }
});
