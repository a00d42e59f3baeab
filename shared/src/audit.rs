//! The tamper-evident audit chain: canonical encoding, hashing, signed checkpoints and a
//! streaming verifier.
//!
//! Pure code, shared so that an auditor can verify an export offline with nothing but the
//! console's public key. Each event's hash covers the previous event's hash and a
//! canonical, length-prefixed encoding of its own fields, so editing, deleting, swapping
//! or inserting an event breaks the chain at a sequence number the verifier names.
//! Truncating the tail or rewriting the whole chain with fresh hashes is caught against
//! checkpoints (sequence, hash, time) signed with the console's signing key.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::keys::{SigningKey, SigningPublicKey};
use crate::time::UnixMillis;

/// `prev_hash` of the very first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    pub time_ms: UnixMillis,
    /// Who: `admin:<token name>`, `user:<email>`, `device:<id>`, `system`.
    pub actor: String,
    /// What, as `resource.verb`: `device.revoke`, `enroll_key.create`, `auth.signin_failed`.
    pub action: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub source_addr: Option<String>,
    #[serde(default)]
    pub before: Option<Value>,
    #[serde(default)]
    pub after: Option<Value>,
    /// The network the action was inside (its name); absent for console-wide actions
    /// and for every event from before several networks. Hashed only when present, so
    /// older chains verify unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields of an event before it is chained.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventBody {
    pub time_ms: UnixMillis,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source_addr: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// The network the action was inside (see [`AuditEvent::network`]).
    pub network: Option<String>,
}

impl EventBody {
    /// Chains this body after `prev_hash` as event number `seq`.
    pub fn seal(self, seq: u64, prev_hash: &str) -> AuditEvent {
        let mut e = AuditEvent {
            seq,
            time_ms: self.time_ms,
            actor: self.actor,
            action: self.action,
            target: self.target,
            source_addr: self.source_addr,
            before: self.before,
            after: self.after,
            network: self.network,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        e.hash = event_hash(&e);
        e
    }
}

/// SHA-256 over a domain tag, the previous hash and every field, each length-prefixed so
/// no two different events encode alike. JSON values are encoded with sorted keys.
pub fn event_hash(e: &AuditEvent) -> String {
    let mut h = Sha256::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    put(b"zmesh-audit-v1");
    put(e.prev_hash.as_bytes());
    put(&e.seq.to_be_bytes());
    put(&e.time_ms.to_be_bytes());
    put(e.actor.as_bytes());
    put(e.action.as_bytes());
    for opt in [&e.target, &e.source_addr] {
        match opt {
            Some(s) => put(format!("1{s}").as_bytes()),
            None => put(b"0"),
        }
    }
    for v in [&e.before, &e.after] {
        match v {
            Some(v) => put(format!("1{}", canonical_json(v)).as_bytes()),
            None => put(b"0"),
        }
    }
    // Added with several networks: only when present, so every older event (and every
    // console-wide one) keeps its hash.
    if let Some(n) = &e.network {
        put(format!("1{n}").as_bytes());
    }
    hex::encode(h.finalize())
}

/// JSON text with object keys sorted at every level, independent of how the `Value` map
/// type orders keys in this build.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// A signed statement "the chain had this hash at this sequence number at this time".
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub time_ms: UnixMillis,
    /// Base64 Ed25519 signature over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

impl Checkpoint {
    fn signed_bytes(seq: u64, hash: &str, time_ms: UnixMillis) -> Vec<u8> {
        format!("zmesh-checkpoint-v1|{seq}|{hash}|{time_ms}").into_bytes()
    }
    pub fn sign(seq: u64, hash: &str, time_ms: UnixMillis, key: &SigningKey) -> Self {
        use base64::Engine;
        let sig = key.sign(&Self::signed_bytes(seq, hash, time_ms));
        Checkpoint {
            seq,
            hash: hash.to_string(),
            time_ms,
            signature: base64::engine::general_purpose::STANDARD.encode(sig),
        }
    }
    pub fn verify(&self, key: &SigningPublicKey) -> bool {
        use base64::Engine;
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(&self.signature) else {
            return false;
        };
        key.verify(
            &Self::signed_bytes(self.seq, &self.hash, self.time_ms),
            &sig,
        )
        .is_ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event {seq}: expected sequence number {expected} (an event is missing, inserted or out of order)")]
    Sequence { seq: u64, expected: u64 },
    #[error("event {seq}: prev_hash does not match the previous event's hash")]
    Link { seq: u64 },
    #[error("event {seq}: contents do not match its hash (edited)")]
    Hash { seq: u64 },
    #[error("checkpoint at {seq} has a bad signature")]
    CheckpointSignature { seq: u64 },
    #[error("checkpoint at {seq} does not match the chain (rewritten)")]
    CheckpointMismatch { seq: u64 },
    #[error("chain ends at {last} but a signed checkpoint covers {checkpoint} (truncated)")]
    Truncated { last: u64, checkpoint: u64 },
    #[error("chain does not start from its anchor (first event {seq})")]
    Anchor { seq: u64 },
}

impl ChainError {
    /// The first bad sequence number, where there is one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ChainError::Sequence { seq, .. }
            | ChainError::Link { seq }
            | ChainError::Hash { seq }
            | ChainError::CheckpointMismatch { seq }
            | ChainError::Anchor { seq } => Some(*seq),
            ChainError::CheckpointSignature { seq } => Some(*seq),
            ChainError::Truncated { last, .. } => Some(last + 1),
        }
    }
}

/// Streaming verifier: feed events in sequence order, then `finish`. Memory is bounded
/// by the number of checkpoints, not events.
pub struct Verifier<'a> {
    key: &'a SigningPublicKey,
    /// Checkpoints by sequence number, all signature-checked up front.
    checkpoints: std::collections::BTreeMap<u64, Checkpoint>,
    next_seq: u64,
    prev_hash: String,
    pub verified: u64,
}

impl<'a> Verifier<'a> {
    /// `anchor` is where the chain starts: `(0, GENESIS_HASH)` for a full log, or the
    /// signed checkpoint left at the cut by retention pruning.
    pub fn new(
        key: &'a SigningPublicKey,
        anchor: Option<&Checkpoint>,
        checkpoints: impl IntoIterator<Item = Checkpoint>,
    ) -> Result<Self, ChainError> {
        let mut map = std::collections::BTreeMap::new();
        for c in checkpoints {
            if !c.verify(key) {
                return Err(ChainError::CheckpointSignature { seq: c.seq });
            }
            map.insert(c.seq, c);
        }
        let (next_seq, prev_hash) = match anchor {
            Some(a) => {
                if !a.verify(key) {
                    return Err(ChainError::CheckpointSignature { seq: a.seq });
                }
                (a.seq + 1, a.hash.clone())
            }
            None => (1, GENESIS_HASH.to_string()),
        };
        Ok(Verifier {
            key,
            checkpoints: map,
            next_seq,
            prev_hash,
            verified: 0,
        })
    }

    pub fn push(&mut self, e: &AuditEvent) -> Result<(), ChainError> {
        if e.seq != self.next_seq {
            return Err(ChainError::Sequence {
                seq: e.seq.min(self.next_seq),
                expected: self.next_seq,
            });
        }
        if e.prev_hash != self.prev_hash {
            return Err(ChainError::Link { seq: e.seq });
        }
        if event_hash(e) != e.hash {
            return Err(ChainError::Hash { seq: e.seq });
        }
        if let Some(c) = self.checkpoints.get(&e.seq) {
            if c.hash != e.hash {
                return Err(ChainError::CheckpointMismatch { seq: e.seq });
            }
        }
        self.prev_hash = e.hash.clone();
        self.next_seq += 1;
        self.verified += 1;
        Ok(())
    }

    /// Catches truncation: no signed checkpoint may lie beyond the last event.
    pub fn finish(self) -> Result<u64, ChainError> {
        let _ = self.key;
        let last = self.next_seq - 1;
        if let Some((&cp, _)) = self.checkpoints.range(last + 1..).next() {
            return Err(ChainError::Truncated {
                last,
                checkpoint: cp,
            });
        }
        Ok(self.verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let e = EventBody {
                    time_ms: 1000 + seq as i64,
                    actor: "admin:ops".into(),
                    action: "device.rename".into(),
                    target: Some(format!("dev{seq}")),
                    source_addr: Some("127.0.0.1".into()),
                    before: Some(json!({"name": "a", "tags": ["x"]})),
                    after: Some(json!({"tags": ["x"], "name": format!("b{seq}")})),
                    network: None,
                }
                .seal(seq, &prev);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn verify(
        events: &[AuditEvent],
        cps: &[Checkpoint],
        pk: &SigningPublicKey,
    ) -> Result<u64, ChainError> {
        let mut v = Verifier::new(pk, None, cps.to_vec())?;
        for e in events {
            v.push(e)?;
        }
        v.finish()
    }

    #[test]
    fn tampering_is_caught_at_the_right_seq() {
        let sk = SigningKey::generate();
        let pk = sk.public_key();
        let ev = chain(10);
        let cps = vec![
            Checkpoint::sign(5, &ev[4].hash, 1, &sk),
            Checkpoint::sign(10, &ev[9].hash, 2, &sk),
        ];
        assert_eq!(verify(&ev, &cps, &pk), Ok(10));

        let mut edited = ev.clone();
        edited[3].actor = "admin:evil".into();
        assert_eq!(verify(&edited, &cps, &pk).unwrap_err().seq(), Some(4));

        let mut deleted = ev.clone();
        deleted.remove(6);
        assert_eq!(verify(&deleted, &cps, &pk).unwrap_err().seq(), Some(7));

        let mut swapped = ev.clone();
        swapped.swap(2, 3);
        assert_eq!(verify(&swapped, &cps, &pk).unwrap_err().seq(), Some(3));

        let mut inserted = ev.clone();
        let forged = EventBody {
            actor: "x".into(),
            action: "y".into(),
            ..Default::default()
        }
        .seal(4, &ev[2].hash);
        inserted.insert(3, forged);
        assert_eq!(verify(&inserted, &cps, &pk).unwrap_err().seq(), Some(4));

        let truncated = &ev[..8];
        assert_eq!(
            verify(truncated, &cps, &pk),
            Err(ChainError::Truncated {
                last: 8,
                checkpoint: 10
            })
        );

        // a wholesale rewrite with recomputed hashes still disagrees with the signed checkpoints
        let mut prev = GENESIS_HASH.to_string();
        let rewritten: Vec<_> = ev
            .iter()
            .map(|e| {
                let body = EventBody {
                    actor: "admin:evil".into(),
                    ..body_of(e)
                };
                let n = body.seal(e.seq, &prev);
                prev = n.hash.clone();
                n
            })
            .collect();
        assert_eq!(
            verify(&rewritten, &cps, &pk).unwrap_err(),
            ChainError::CheckpointMismatch { seq: 5 }
        );

        // a forged checkpoint (other key) is refused
        let other = SigningKey::generate();
        let bad = vec![Checkpoint::sign(10, &rewritten[9].hash, 3, &other)];
        assert!(matches!(
            verify(&rewritten, &bad, &pk),
            Err(ChainError::CheckpointSignature { .. })
        ));
    }

    fn body_of(e: &AuditEvent) -> EventBody {
        EventBody {
            time_ms: e.time_ms,
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            source_addr: e.source_addr.clone(),
            before: e.before.clone(),
            after: e.after.clone(),
            network: e.network.clone(),
        }
    }

    #[test]
    fn network_is_hashed_only_when_present() {
        // An event as consoles before several networks wrote it: its hash (computed
        // with the encoding of that time) must not change.
        let old = EventBody {
            time_ms: 1_700_000_000_000,
            actor: "admin:ops".into(),
            action: "device.rename".into(),
            target: Some("dev1".into()),
            before: Some(json!({"name": "a"})),
            ..Default::default()
        }
        .seal(1, GENESIS_HASH);
        assert_eq!(
            old.hash,
            "e3a7198209e9819c0297a117d76c77bbad5d9eceb35e4a071258bb787c4c14c7"
        );
        // and its JSON has no `network` key, as before
        assert!(!serde_json::to_string(&old).unwrap().contains("network"));
        let back: AuditEvent = serde_json::from_str(&serde_json::to_string(&old).unwrap()).unwrap();
        assert_eq!(event_hash(&back), old.hash);

        // with a network, the network is covered: editing or dropping it is caught
        let sk = SigningKey::generate();
        let pk = sk.public_key();
        let e = EventBody {
            network: Some("lab".into()),
            ..body_of(&old)
        }
        .seal(1, GENESIS_HASH);
        assert_ne!(e.hash, old.hash);
        assert_eq!(verify(std::slice::from_ref(&e), &[], &pk), Ok(1));
        let mut edited = e.clone();
        edited.network = Some("default".into());
        assert_eq!(
            verify(&[edited], &[], &pk),
            Err(ChainError::Hash { seq: 1 })
        );
        let mut dropped = e.clone();
        dropped.network = None;
        assert_eq!(
            verify(&[dropped], &[], &pk),
            Err(ChainError::Hash { seq: 1 })
        );
    }

    #[test]
    fn pruned_chain_verifies_from_its_anchor() {
        let sk = SigningKey::generate();
        let ev = chain(6);
        let anchor = Checkpoint::sign(3, &ev[2].hash, 1, &sk);
        let pk = sk.public_key();
        let mut v = Verifier::new(&pk, Some(&anchor), vec![]).unwrap();
        for e in &ev[3..] {
            v.push(e).unwrap();
        }
        assert_eq!(v.finish(), Ok(3));
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": "x"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"x","d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }
}
