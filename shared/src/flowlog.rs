//! The access log's evidence, shared by the agent (which signs), the console (which
//! checks, chains and stores) and the offline verifier (`audit verify --file`).
//!
//! Every flow record an agent reports is signed with the device's own Ed25519 report
//! key (made on the device, its private half never leaves it) over a canonical byte
//! encoding of the record, the reporting device and a per-device report sequence
//! number; so an auditor holding only the device's public key can check that the
//! console neither invented nor changed a record. The console keeps the signature and
//! links the records into their own hash chain ([`access_hash`]), whose head it
//! anchors in the audit event chain at intervals (`access.checkpoint` events, covered
//! by the signed audit checkpoints): a record deleted, edited or inserted afterwards
//! breaks the chain at its sequence number.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::GENESIS_HASH;
use crate::ids::DeviceId;
use crate::keys::{SigningKey, SigningPublicKey};
use crate::time::UnixMillis;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowVerdict {
    Accepted,
    Denied,
}

impl FlowVerdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            FlowVerdict::Accepted => "accepted",
            FlowVerdict::Denied => "denied",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(FlowVerdict::Accepted),
            "denied" => Some(FlowVerdict::Denied),
            _ => None,
        }
    }
}

/// One connection summary as an agent saw it (counters from the reporter's side).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// The device that opened the connection.
    pub src_device: DeviceId,
    pub dst_device: DeviceId,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub proto: u8,
    #[serde(default)]
    pub src_port: u16,
    #[serde(default)]
    pub dst_port: u16,
    /// From source to destination (IP packet lengths).
    pub bytes: u64,
    pub packets: u64,
    /// From destination back to source.
    #[serde(default)]
    pub bytes_back: u64,
    #[serde(default)]
    pub packets_back: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub first_seen_ms: UnixMillis,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub last_seen_ms: UnixMillis,
    /// The policy rule that decided, if a rule did (else the default verdict applied).
    #[serde(default)]
    pub rule: Option<String>,
    /// The version of the access policy whose rule decided (the one in the device's
    /// peer map at the time).
    #[serde(default)]
    pub policy_version: Option<u64>,
    pub verdict: FlowVerdict,
}

/// A flow record as the device signed it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedFlow {
    /// The device's report counter: strictly increasing per device (a replayed record
    /// repeats a number and is refused).
    pub report_seq: u64,
    #[serde(flatten)]
    pub record: FlowRecord,
    /// Base64 Ed25519 signature over [`flow_message`].
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowSigError {
    #[error("the signature is not base64 of 64 bytes")]
    Malformed,
    #[error("the signature does not verify with the device's report key")]
    Invalid,
}

fn put(h: &mut Vec<u8>, b: &[u8]) {
    h.extend_from_slice(&(b.len() as u64).to_be_bytes());
    h.extend_from_slice(b);
}

fn put_opt(h: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            h.push(1);
            put(h, b);
        }
        None => h.push(0),
    }
}

/// The bytes a device signs: a domain tag, the reporter, the report number and every
/// field of the record, each length-prefixed so no two records encode alike.
pub fn flow_message(reporter: DeviceId, report_seq: u64, r: &FlowRecord) -> Vec<u8> {
    let mut m = Vec::with_capacity(192);
    put(&mut m, b"zmesh-flow-v1");
    put(&mut m, reporter.to_string().as_bytes());
    put(&mut m, &report_seq.to_be_bytes());
    put(&mut m, r.src_device.to_string().as_bytes());
    put(&mut m, r.dst_device.to_string().as_bytes());
    put(&mut m, &[r.proto]);
    put(&mut m, &r.src_port.to_be_bytes());
    put(&mut m, &r.dst_port.to_be_bytes());
    for n in [r.bytes, r.packets, r.bytes_back, r.packets_back] {
        put(&mut m, &n.to_be_bytes());
    }
    put(&mut m, &r.first_seen_ms.to_be_bytes());
    put(&mut m, &r.last_seen_ms.to_be_bytes());
    put_opt(&mut m, r.rule.as_deref().map(str::as_bytes));
    put_opt(
        &mut m,
        r.policy_version
            .map(u64::to_be_bytes)
            .as_ref()
            .map(|b| &b[..]),
    );
    put(&mut m, r.verdict.as_str().as_bytes());
    m
}

/// Signs `record` as report number `report_seq` of `reporter`.
pub fn sign_flow(
    key: &SigningKey,
    reporter: DeviceId,
    report_seq: u64,
    record: FlowRecord,
) -> SignedFlow {
    let sig = key.sign(&flow_message(reporter, report_seq, &record));
    SignedFlow {
        report_seq,
        record,
        sig: base64::engine::general_purpose::STANDARD.encode(sig),
    }
}

/// Checks that `reporter`'s report key signed `f`.
pub fn verify_flow(
    key: &SigningPublicKey,
    reporter: DeviceId,
    f: &SignedFlow,
) -> Result<(), FlowSigError> {
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&f.sig)
        .map_err(|_| FlowSigError::Malformed)?;
    if sig.len() != 64 {
        return Err(FlowSigError::Malformed);
    }
    key.verify(&flow_message(reporter, f.report_seq, &f.record), &sig)
        .map_err(|_| FlowSigError::Invalid)
}

/// One record of the access log as stored and exported: the signed report, who sent
/// it, when the console received it, and its place in the access chain.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// Position in the access chain, from 1, gapless.
    pub seq: u64,
    /// The device that reported (and signed) it: the source or the destination.
    pub reporter: DeviceId,
    #[serde(flatten)]
    pub signed: SignedFlow,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub received_at_ms: UnixMillis,
    pub prev_hash: String,
    pub hash: String,
}

/// SHA-256 over the previous hash, the sequence number, the reporter, the reception
/// time, the signed message and the signature.
pub fn access_hash(e: &AccessEntry) -> String {
    let mut m = Vec::with_capacity(320);
    put(&mut m, b"zmesh-access-v1");
    put(&mut m, e.prev_hash.as_bytes());
    put(&mut m, &e.seq.to_be_bytes());
    put(&mut m, e.reporter.to_string().as_bytes());
    put(&mut m, &e.received_at_ms.to_be_bytes());
    put(
        &mut m,
        &flow_message(e.reporter, e.signed.report_seq, &e.signed.record),
    );
    put(&mut m, e.signed.sig.as_bytes());
    hex::encode(Sha256::digest(&m))
}

impl AccessEntry {
    /// Links a received record after `prev_hash` as number `seq`.
    pub fn seal(
        seq: u64,
        prev_hash: &str,
        reporter: DeviceId,
        signed: SignedFlow,
        received_at_ms: UnixMillis,
    ) -> Self {
        let mut e = AccessEntry {
            seq,
            reporter,
            signed,
            received_at_ms,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        e.hash = access_hash(&e);
        e
    }
}

/// What is wrong with the access chain, at the first bad sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessChainError {
    #[error("access record {seq}: expected sequence number {expected} (a record is missing, inserted or out of order)")]
    Sequence { seq: u64, expected: u64 },
    #[error("access record {seq}: prev_hash does not match the previous record's hash")]
    Link { seq: u64 },
    #[error("access record {seq}: contents do not match its hash (edited)")]
    Hash { seq: u64 },
    #[error(
        "access record {seq}: does not match the access checkpoint in the audit log (rewritten)"
    )]
    Anchor { seq: u64 },
    #[error("access record {seq}: no report key known for device {reporter}")]
    UnknownReporter { seq: u64, reporter: DeviceId },
    #[error("access record {seq}: device signature: {why}")]
    Signature { seq: u64, why: FlowSigError },
    #[error("access log ends at {last} but an access checkpoint covers {checkpoint} (truncated)")]
    Truncated { last: u64, checkpoint: u64 },
}

impl AccessChainError {
    pub fn seq(&self) -> u64 {
        match self {
            AccessChainError::Sequence { seq, .. }
            | AccessChainError::Link { seq }
            | AccessChainError::Hash { seq }
            | AccessChainError::Anchor { seq }
            | AccessChainError::UnknownReporter { seq, .. }
            | AccessChainError::Signature { seq, .. } => *seq,
            AccessChainError::Truncated { last, .. } => last + 1,
        }
    }
}

/// Streaming verifier of the access chain: feed records in order, then `finish`.
/// `checkpoints` are (seq, hash) pairs from `access.checkpoint` audit events (which
/// the audit chain and its signed checkpoints vouch for); `keys` gives each device's
/// report key. Memory is bounded by checkpoints and devices, not records.
pub struct AccessVerifier<F> {
    keys: F,
    checkpoints: std::collections::BTreeMap<u64, String>,
    next_seq: u64,
    prev_hash: String,
    pub verified: u64,
}

impl<F: FnMut(DeviceId) -> Option<SigningPublicKey>> AccessVerifier<F> {
    /// `start`: where the chain begins, `(0, GENESIS_HASH)` unless retention cut it
    /// (then the seq and hash of the last pruned record).
    pub fn new(
        start: Option<(u64, String)>,
        checkpoints: impl IntoIterator<Item = (u64, String)>,
        keys: F,
    ) -> Self {
        let (seq, hash) = start.unwrap_or((0, GENESIS_HASH.to_string()));
        AccessVerifier {
            keys,
            checkpoints: checkpoints.into_iter().collect(),
            next_seq: seq + 1,
            prev_hash: hash,
            verified: 0,
        }
    }

    pub fn push(&mut self, e: &AccessEntry) -> Result<(), AccessChainError> {
        if e.seq != self.next_seq {
            return Err(AccessChainError::Sequence {
                seq: e.seq.min(self.next_seq),
                expected: self.next_seq,
            });
        }
        if e.prev_hash != self.prev_hash {
            return Err(AccessChainError::Link { seq: e.seq });
        }
        if access_hash(e) != e.hash {
            return Err(AccessChainError::Hash { seq: e.seq });
        }
        if self.checkpoints.get(&e.seq).is_some_and(|h| *h != e.hash) {
            return Err(AccessChainError::Anchor { seq: e.seq });
        }
        let key = (self.keys)(e.reporter).ok_or(AccessChainError::UnknownReporter {
            seq: e.seq,
            reporter: e.reporter,
        })?;
        verify_flow(&key, e.reporter, &e.signed)
            .map_err(|why| AccessChainError::Signature { seq: e.seq, why })?;
        self.prev_hash = e.hash.clone();
        self.next_seq += 1;
        self.verified += 1;
        Ok(())
    }

    /// Catches truncation: no access checkpoint may lie beyond the last record.
    pub fn finish(self) -> Result<u64, AccessChainError> {
        let last = self.next_seq - 1;
        if let Some((&cp, _)) = self.checkpoints.range(last + 1..).next() {
            return Err(AccessChainError::Truncated {
                last,
                checkpoint: cp,
            });
        }
        Ok(self.verified)
    }
}

/// Whether the record is a denial (for filters and exports).
pub fn is_denied(r: &FlowRecord) -> bool {
    r.verdict == FlowVerdict::Denied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> FlowRecord {
        FlowRecord {
            src_device: DeviceId::from_uuid(uuid::Uuid::from_u128(1)),
            dst_device: DeviceId::from_uuid(uuid::Uuid::from_u128(2)),
            proto: 6,
            src_port: 40000,
            dst_port: 22,
            bytes: 1000 + n,
            packets: 10,
            bytes_back: 5000,
            packets_back: 8,
            first_seen_ms: 1_000,
            last_seen_ms: 2_000,
            rule: Some("rules[0]".into()),
            policy_version: Some(3),
            verdict: FlowVerdict::Accepted,
        }
    }

    #[test]
    fn signatures_bind_every_field_and_the_reporter() {
        let key = SigningKey::generate();
        let me = DeviceId::from_uuid(uuid::Uuid::from_u128(1));
        let f = sign_flow(&key, me, 7, record(0));
        verify_flow(&key.public_key(), me, &f).unwrap();
        // another device's key, another reporter, another number, any changed field
        let other = SigningKey::generate();
        assert_eq!(
            verify_flow(&other.public_key(), me, &f),
            Err(FlowSigError::Invalid)
        );
        let them = DeviceId::from_uuid(uuid::Uuid::from_u128(2));
        assert!(verify_flow(&key.public_key(), them, &f).is_err());
        let mut g = f.clone();
        g.report_seq = 8;
        assert!(verify_flow(&key.public_key(), me, &g).is_err());
        for edit in [
            &|r: &mut FlowRecord| r.bytes += 1,
            &|r: &mut FlowRecord| r.bytes_back = 0,
            &|r: &mut FlowRecord| r.rule = None,
            &|r: &mut FlowRecord| r.policy_version = None,
            &|r: &mut FlowRecord| r.verdict = FlowVerdict::Denied,
            &|r: &mut FlowRecord| r.dst_port = 23,
        ] as [&dyn Fn(&mut FlowRecord); 6]
        {
            let mut g = f.clone();
            edit(&mut g.record);
            assert_eq!(
                verify_flow(&key.public_key(), me, &g),
                Err(FlowSigError::Invalid)
            );
        }
        let mut g = f;
        g.sig = "AAAA".into();
        assert_eq!(
            verify_flow(&key.public_key(), me, &g),
            Err(FlowSigError::Malformed)
        );
    }

    fn chain(key: &SigningKey, n: u64) -> Vec<AccessEntry> {
        let me = DeviceId::from_uuid(uuid::Uuid::from_u128(1));
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let e = AccessEntry::seal(
                    seq,
                    &prev,
                    me,
                    sign_flow(key, me, seq, record(seq)),
                    5_000 + seq as i64,
                );
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn verify(
        key: &SigningKey,
        entries: &[AccessEntry],
        cps: Vec<(u64, String)>,
    ) -> Result<u64, AccessChainError> {
        let pk = key.public_key();
        let mut v = AccessVerifier::new(None, cps, |_| Some(pk));
        for e in entries {
            v.push(e)?;
        }
        v.finish()
    }

    #[test]
    fn the_chain_catches_deletion_insertion_editing_and_truncation() {
        let key = SigningKey::generate();
        let c = chain(&key, 10);
        let cps = vec![(5, c[4].hash.clone()), (10, c[9].hash.clone())];
        assert_eq!(verify(&key, &c, cps.clone()), Ok(10));
        // deleted record 4
        let mut d = c.clone();
        d.remove(3);
        assert_eq!(verify(&key, &d, cps.clone()).unwrap_err().seq(), 4);
        // edited record 6 (hash recomputed by the forger: the link to 7 breaks)
        let mut d = c.clone();
        d[5].signed.record.bytes = 1;
        assert_eq!(verify(&key, &d, cps.clone()).unwrap_err().seq(), 6);
        d[5].hash = access_hash(&d[5]);
        assert!(matches!(
            verify(&key, &d, cps.clone()),
            Err(AccessChainError::Signature { seq: 6, .. })
        ));
        // the tail after the last checkpoint cut off
        assert!(matches!(
            verify(&key, &c[..8], cps.clone()),
            Err(AccessChainError::Truncated {
                last: 8,
                checkpoint: 10
            })
        ));
        // the whole chain rebuilt by a forger with a device key it stole: the anchors
        // in the audit log still catch it
        let mut forged = c.clone();
        forged[2].signed = sign_flow(&key, forged[2].reporter, 3, record(99));
        for i in 2..forged.len() {
            let prev = if i == 0 {
                GENESIS_HASH.to_string()
            } else {
                forged[i - 1].hash.clone()
            };
            let e = &forged[i];
            forged[i] =
                AccessEntry::seal(e.seq, &prev, e.reporter, e.signed.clone(), e.received_at_ms);
        }
        assert!(matches!(
            verify(&key, &forged, cps),
            Err(AccessChainError::Anchor { seq: 5 })
        ));
        // unknown device
        let mut v = AccessVerifier::new(None, vec![], |_| None);
        assert!(matches!(
            v.push(&c[0]),
            Err(AccessChainError::UnknownReporter { seq: 1, .. })
        ));
    }
}
