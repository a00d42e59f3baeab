//! Fuzz target: the relay protocol (`zmesh_shared::relay`): frames decoded from one
//! buffer and from the same bytes arriving in pieces, and relay tokens parsed and
//! verified with a fixed console key.
//!
//! Input: one mode byte, then the bytes. Even mode: a TCP stream of frames, read in
//! chunks whose size comes from the mode byte. Odd mode: JSON, tried as a token
//! (verified with the key) and as claims, which are then signed with the fixed key,
//! carried in a Hello frame and verified like the relay does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zmesh_shared::relay::{self, Frame, RelayClaims, RelayError, RelayToken};
use zmesh_shared::SigningKey;

/// Fixed "now" for token expiry checks.
const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        frames(rest, 1 + (mode as usize >> 1));
    } else {
        tokens(rest);
    }
});

/// Decodes frames from the front of `buf` until it needs more bytes or fails, checking
/// each frame re-encodes to the bytes it came from.
fn decode_all(buf: &[u8]) -> (Vec<Frame>, Result<usize, RelayError>) {
    let mut frames = vec![];
    let mut off = 0;
    // Every frame takes at least its 5-byte header, so this ends.
    loop {
        match Frame::decode(&buf[off..]) {
            Ok(Some((f, used))) => {
                assert!(used >= 5 && used <= buf.len() - off, "bad length {used}");
                check_reencode(&f, &buf[off..off + used]);
                frames.push(f);
                off += used;
            }
            Ok(None) => return (frames, Ok(off)),
            Err(e) => return (frames, Err(e)),
        }
    }
}

fn check_reencode(f: &Frame, wire: &[u8]) {
    let mut out = vec![];
    f.encode(&mut out);
    match f {
        // Invalid UTF-8 is replaced and long messages are cut when encoding, so only
        // the decoded text must survive, and only when it fits.
        Frame::Error { message } => {
            let (g, used) = Frame::decode(&out).unwrap().unwrap();
            assert_eq!(used, out.len());
            if message.len() <= 512 {
                assert_eq!(&g, f);
            }
        }
        _ => assert_eq!(out, wire, "{f:?} re-encodes differently"),
    }
}

fn frames(stream: &[u8], chunk: usize) {
    let (whole, whole_end) = decode_all(stream);
    // The same bytes in pieces, as a TCP reader sees them.
    let mut pending: Vec<u8> = vec![];
    let mut got = vec![];
    let mut err = None;
    'outer: for piece in stream.chunks(chunk) {
        pending.extend_from_slice(piece);
        loop {
            match Frame::decode(&pending) {
                Ok(Some((f, used))) => {
                    got.push(f);
                    pending.drain(..used);
                }
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break 'outer;
                }
            }
        }
    }
    assert_eq!(got, whole, "streamed frames differ from one-buffer frames");
    match (err, whole_end) {
        (None, Ok(end)) => assert_eq!(pending.len(), stream.len() - end),
        (Some(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("streaming ended with {a:?}, one buffer with {b:?}"),
    }
}

fn console_key() -> SigningKey {
    // 32 fixed bytes, base64: a key only this target uses.
    SigningKey::from_base64("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").unwrap()
}

fn tokens(json: &[u8]) {
    let key = console_key();
    let public = key.public_key();
    if let Ok(t) = serde_json::from_slice::<RelayToken>(json) {
        // Only tokens signed with the key verify (the seeds have some): then they are
        // current relay tokens.
        if let Ok(c) = relay::verify_token(&t, &public, NOW_MS) {
            assert!(c.purpose == relay::TOKEN_PURPOSE && NOW_MS < c.expires_at_ms);
        }
    }
    let Ok(claims) = serde_json::from_slice::<RelayClaims>(json) else {
        return;
    };
    let token = RelayToken::sign(&claims, &key);
    // Through a Hello frame and back, as agent and relay exchange it.
    let mut wire = vec![];
    Frame::Hello {
        token: serde_json::to_vec(&token).unwrap(),
    }
    .encode(&mut wire);
    let Ok(Some((Frame::Hello { token: body }, used))) = Frame::decode(&wire) else {
        panic!("a Hello frame with a token did not decode");
    };
    assert_eq!(used, wire.len());
    let parsed: RelayToken = serde_json::from_slice(&body).unwrap();
    let want = if claims.purpose != relay::TOKEN_PURPOSE {
        Err(RelayError::BadToken)
    } else if NOW_MS >= claims.expires_at_ms {
        Err(RelayError::Expired)
    } else {
        Ok(claims.clone())
    };
    assert_eq!(relay::verify_token(&parsed, &public, NOW_MS), want);
    let other = SigningKey::from_base64("ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=").unwrap();
    assert_eq!(
        relay::verify_token(&parsed, &other.public_key(), NOW_MS),
        Err(RelayError::BadToken)
    );
}
