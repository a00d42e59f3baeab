//! The access log in the database: devices' report keys, signed flow records appended
//! to their own hash chain, the chain's anchors in the audit log, listing with the
//! "one-sided" flag, and pruning behind a recorded cut.
//!
//! Ordering: appends lock the single-row `access_head` (`UPDATE … RETURNING`) first and,
//! when they also write an audit event (anchoring, pruning), take the audit head last,
//! like every other writer; so the two heads are always locked in the same order.
//! Signatures are checked by the service before records get here: the store chains
//! what it is given and refuses only repeats of a device's report number.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use zmesh_shared::flowlog::{AccessEntry, SignedFlow};
use zmesh_shared::wire::{FlowRecord, FlowVerdict, MAX_FLOWS_PER_BATCH};
use zmesh_shared::{DeviceId, SigningPublicKey};

use super::audit::{append, Change};
use super::{parse_col, Store, StoreError};

/// How far apart the two ends' time windows may be and still count as one flow
/// (clock skew between devices, batching delay).
pub const FLOW_MATCH_SLACK_MS: i64 = 120_000;

/// A stored access record and whether the other end reported the same flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRow {
    pub entry: AccessEntry,
    /// No record of the same flow from the other end: one side is lying, broken, not
    /// reporting, or has not reported yet.
    pub one_sided: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AccessFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Records from or to these devices (e.g. one device, or a user's devices).
    pub devices: Option<Vec<DeviceId>>,
    pub verdict: Option<FlowVerdict>,
    pub one_sided_only: bool,
}

/// The access chain's head and what of it is anchored in the audit log or pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessHead {
    pub seq: u64,
    pub hash: String,
    pub anchored_seq: u64,
    /// Records up to here were pruned; the chain continues from `pruned_hash`.
    pub pruned_seq: u64,
    pub pruned_hash: String,
}

/// What registering a device's report key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRegistration {
    Registered,
    AlreadyKnown,
    /// The device has another key: refused (a device keeps its report key).
    Conflict,
}

/// Why a record of a batch was not kept.
fn check(reporter: DeviceId, f: &FlowRecord) -> Result<(), &'static str> {
    if f.src_device != reporter && f.dst_device != reporter {
        return Err("reporter is neither end of the flow");
    }
    if f.last_seen_ms < f.first_seen_ms || f.first_seen_ms < 0 {
        return Err("bad time window");
    }
    if f.rule
        .as_ref()
        .is_some_and(|r| r.len() > 128 || r.chars().any(char::is_control))
    {
        return Err("bad rule name");
    }
    Ok(())
}

const COLS: &str = "seq, reporter, report_seq, src_device, dst_device, proto, src_port, dst_port, \
     bytes, packets, bytes_back, packets_back, first_seen_ms, last_seen_ms, rule, policy_version, \
     verdict, sig, received_at_ms, prev_hash, hash";

fn clamp(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

async fn lock_head(tx: &mut Transaction<'static, Any>) -> Result<AccessHead, StoreError> {
    // A no-op update takes the row lock on PostgreSQL (SQLite writers are serialised).
    let r = sqlx::query(
        "UPDATE access_head SET seq = seq WHERE id = 1 \
         RETURNING seq, hash, anchored_seq, pruned_seq, pruned_hash",
    )
    .fetch_one(&mut **tx)
    .await?;
    head_from_row(&r)
}

fn head_from_row(r: &AnyRow) -> Result<AccessHead, StoreError> {
    Ok(AccessHead {
        seq: r.try_get::<i64, _>("seq")? as u64,
        hash: r.try_get("hash")?,
        anchored_seq: r.try_get::<i64, _>("anchored_seq")? as u64,
        pruned_seq: r.try_get::<i64, _>("pruned_seq")? as u64,
        pruned_hash: r.try_get("pruned_hash")?,
    })
}

impl Store {
    /// The device's registered report key, if any (also for a deleted device).
    pub async fn device_report_key(
        &self,
        id: DeviceId,
    ) -> Result<Option<SigningPublicKey>, StoreError> {
        let r = sqlx::query("SELECT report_key FROM device_report_keys WHERE device_id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = r else { return Ok(None) };
        let k: String = r.try_get("report_key")?;
        k.parse()
            .map(Some)
            .map_err(|e| StoreError::corrupt("report_key", e))
    }

    /// Every device's report key, deleted devices included (for verification; devices
    /// are few next to records).
    pub async fn report_keys(&self) -> Result<Vec<(DeviceId, SigningPublicKey)>, StoreError> {
        let rows = sqlx::query("SELECT device_id, report_key FROM device_report_keys")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let k: String = r.try_get("report_key")?;
                Ok((
                    parse_col(r, "device_id")?,
                    k.parse()
                        .map_err(|e| StoreError::corrupt("report_key", e))?,
                ))
            })
            .collect()
    }

    /// Registers the device's report key the first time; the change is audited
    /// (`device.report_key`). A different key later is a conflict, nothing changes.
    pub async fn register_report_key(
        &self,
        id: DeviceId,
        key: &SigningPublicKey,
        now_ms: i64,
    ) -> Result<KeyRegistration, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM devices WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound { what: "device" });
        }
        let have: Option<String> =
            sqlx::query("SELECT report_key FROM device_report_keys WHERE device_id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("report_key"))
                .transpose()?;
        let want = key.to_string();
        match have {
            Some(h) if h == want => return Ok(KeyRegistration::AlreadyKnown),
            Some(_) => return Ok(KeyRegistration::Conflict),
            None => {}
        }
        sqlx::query(
            "INSERT INTO device_report_keys (device_id, report_key, registered_at_ms) \
             VALUES ($1, $2, $3)",
        )
        .bind(id.to_string())
        .bind(&want)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let c = Change::new("device.report_key", format!("device:{id}"))
            .after(&serde_json::json!({ "report_key": want }));
        append(&mut tx, &self.audit, c).await?;
        tx.commit().await?;
        Ok(KeyRegistration::Registered)
    }

    /// Chains the records of one batch (signatures already checked) in one transaction.
    /// Returns (kept, dropped): a record whose report number the device used before
    /// (a replay) or that is malformed is dropped.
    pub async fn append_access(
        &self,
        reporter: DeviceId,
        flows: &[SignedFlow],
        now_ms: i64,
    ) -> Result<(usize, usize), StoreError> {
        let flows = &flows[..flows.len().min(MAX_FLOWS_PER_BATCH)];
        if flows.is_empty() {
            return Ok((0, 0));
        }
        let mut tx = self.begin_write().await?;
        let head = lock_head(&mut tx).await?;
        let (lo, hi) = flows.iter().fold((u64::MAX, 0), |(lo, hi), f| {
            (lo.min(f.report_seq), hi.max(f.report_seq))
        });
        let seen: std::collections::HashSet<i64> = sqlx::query(
            "SELECT report_seq FROM access_records WHERE reporter = $1 \
             AND report_seq >= $2 AND report_seq <= $3",
        )
        .bind(reporter.to_string())
        .bind(clamp(lo))
        .bind(clamp(hi))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>("report_seq"))
        .collect::<Result<_, _>>()?;
        let mut used = seen;
        let (mut seq, mut prev) = (head.seq, head.hash);
        let mut kept = 0;
        let mut sealed = Vec::with_capacity(flows.len());
        for f in flows {
            if f.report_seq > i64::MAX as u64 || !used.insert(f.report_seq as i64) {
                tracing::debug!(device = %reporter, report_seq = f.report_seq, "repeated report number");
                continue;
            }
            if let Err(why) = check(reporter, &f.record) {
                tracing::debug!(device = %reporter, why, "access record dropped");
                continue;
            }
            seq += 1;
            let e = AccessEntry::seal(seq, &prev, reporter, f.clone(), now_ms);
            prev = e.hash.clone();
            sealed.push(e);
            kept += 1;
        }
        // PostgreSQL: many rows per statement, as a round trip per record caps the intake
        // (~10k records/s, against ~65k). SQLite is in-process, and its driver binds
        // many parameters slowly: one row per statement is fastest there (~33k/s).
        let rows = match self.backend() {
            super::Backend::Postgres => INSERT_ROWS,
            super::Backend::Sqlite => 1,
        };
        for chunk in sealed.chunks(rows) {
            insert(&mut tx, chunk).await?;
        }
        if kept > 0 {
            sqlx::query("UPDATE access_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq as i64)
                .bind(&prev)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((kept, flows.len() - kept))
    }

    pub async fn access_head(&self) -> Result<AccessHead, StoreError> {
        let r = sqlx::query(
            "SELECT seq, hash, anchored_seq, pruned_seq, pruned_hash FROM access_head WHERE id = 1",
        )
        .fetch_one(&self.pool)
        .await?;
        head_from_row(&r)
    }

    /// Anchors the access chain's head in the audit log (an `access.checkpoint` event
    /// with its sequence number and hash) when it moved since the last anchor. The audit
    /// chain's signed checkpoints then cover the access log too. Returns the anchored
    /// sequence number, if an anchor was written.
    pub async fn anchor_access_head(&self) -> Result<Option<u64>, StoreError> {
        let mut tx = self.begin_write().await?;
        let head = lock_head(&mut tx).await?;
        if head.seq <= head.anchored_seq {
            return Ok(None);
        }
        sqlx::query("UPDATE access_head SET anchored_seq = seq WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let mut c = Change::new("access.checkpoint", format!("access:{}", head.seq));
        c.after = Some(serde_json::json!({ "seq": head.seq, "hash": head.hash }));
        append(&mut tx, &self.audit, c).await?;
        tx.commit().await?;
        Ok(Some(head.seq))
    }

    /// Access records with `seq > after` passing `f`, oldest first, at most `limit`.
    pub async fn list_access(
        &self,
        f: &AccessFilter,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AccessRow>, StoreError> {
        self.query_access(f, after, None, false, limit).await
    }

    /// Access records passing `f`, newest first: those with `seq < before` (all when
    /// `None`), at most `limit`. The web console's page, paged backwards by `seq`.
    pub async fn list_access_newest(
        &self,
        f: &AccessFilter,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AccessRow>, StoreError> {
        self.query_access(f, 0, before, true, limit).await
    }

    async fn query_access(
        &self,
        f: &AccessFilter,
        after: u64,
        before: Option<u64>,
        newest_first: bool,
        limit: u32,
    ) -> Result<Vec<AccessRow>, StoreError> {
        let mut sql = format!(
            "SELECT {cols}, \
             CASE WHEN EXISTS (SELECT 1 FROM access_records o WHERE o.src_device = f.src_device \
               AND o.dst_device = f.dst_device AND o.proto = f.proto AND o.src_port = f.src_port \
               AND o.dst_port = f.dst_port AND o.reporter <> f.reporter \
               AND o.first_seen_ms <= f.last_seen_ms + {FLOW_MATCH_SLACK_MS} \
               AND o.last_seen_ms + {FLOW_MATCH_SLACK_MS} >= f.first_seen_ms) THEN 0 ELSE 1 END AS one_sided \
             FROM access_records f WHERE f.seq > $1 AND f.seq < $2",
            cols = COLS
                .split(", ")
                .map(|c| format!("f.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut ints: Vec<i64> = vec![];
        let mut strs: Vec<String> = vec![];
        if let Some(t) = f.since_ms {
            ints.push(t);
            sql.push_str(&format!(" AND f.last_seen_ms >= ${}", 2 + ints.len()));
        }
        if let Some(t) = f.until_ms {
            ints.push(t);
            sql.push_str(&format!(" AND f.first_seen_ms < ${}", 2 + ints.len()));
        }
        let base = 2 + ints.len();
        if let Some(v) = f.verdict {
            strs.push(v.as_str().to_string());
            sql.push_str(&format!(" AND f.verdict = ${}", base + strs.len()));
        }
        if let Some(devs) = &f.devices {
            if devs.is_empty() {
                return Ok(vec![]);
            }
            let mut ph = vec![];
            for d in devs.iter().take(1000) {
                strs.push(d.to_string());
                ph.push(format!("${}", base + strs.len()));
            }
            let set = ph.join(", ");
            sql.push_str(&format!(
                " AND (f.src_device IN ({set}) OR f.dst_device IN ({set}))"
            ));
        }
        let order = if newest_first { "DESC" } else { "ASC" };
        let sql = if f.one_sided_only {
            format!(
                "SELECT * FROM ({sql}) AS x WHERE x.one_sided = 1 ORDER BY x.seq {order} LIMIT {limit}"
            )
        } else {
            format!("{sql} ORDER BY f.seq {order} LIMIT {limit}")
        };
        let mut q = sqlx::query(&sql)
            .bind(clamp(after))
            .bind(before.map_or(i64::MAX, clamp));
        for i in ints {
            q = q.bind(i);
        }
        for s in strs {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let one_sided: i64 = r.try_get("one_sided")?;
                Ok(AccessRow {
                    entry: entry_from_row(r)?,
                    one_sided: one_sided != 0,
                })
            })
            .collect()
    }

    /// The whole chain in order from `after`, a page at a time (verification).
    pub async fn access_page(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AccessEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM access_records WHERE seq > $1 ORDER BY seq LIMIT {limit}"
        ))
        .bind(clamp(after))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// (seq, hash) of every `access.checkpoint` event still in the audit log.
    pub async fn access_anchors(&self) -> Result<Vec<(u64, String)>, StoreError> {
        self.chain_points("access.checkpoint", "seq").await
    }

    /// (through_seq, hash) of every `access.prune` event still in the audit log.
    pub async fn access_prunes(&self) -> Result<Vec<(u64, String)>, StoreError> {
        self.chain_points("access.prune", "through_seq").await
    }

    /// (`seq_field`, `hash`) from the `after` of every audit event `action`, in order.
    async fn chain_points(
        &self,
        action: &'static str,
        seq_field: &str,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT after_json FROM audit_events WHERE action = $1 ORDER BY seq")
                .bind(action)
                .fetch_all(&self.pool)
                .await?;
        let mut out = vec![];
        for r in rows {
            let j: Option<String> = r.try_get("after_json")?;
            let v: serde_json::Value = serde_json::from_str(j.as_deref().unwrap_or("null"))
                .map_err(|e| StoreError::corrupt("after_json", e))?;
            match (v[seq_field].as_u64(), v["hash"].as_str()) {
                (Some(s), Some(h)) => out.push((s, h.to_string())),
                _ => return Err(StoreError::corrupt(action, v)),
            }
        }
        Ok(out)
    }

    /// Deletes the records up to the last one seen before `before_ms` (a prefix of the
    /// chain, so it stays verifiable from the cut) and records the cut in the head and
    /// in an `access.prune` audit event. Returns how many were deleted.
    pub async fn prune_access(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let head = lock_head(&mut tx).await?;
        // The cut: the longest prefix of the chain whose records all ended before the
        // limit, and that is anchored in the audit log already.
        let r = sqlx::query(
            "SELECT MIN(seq) AS first_young FROM access_records WHERE last_seen_ms >= $1",
        )
        .bind(before_ms)
        .fetch_one(&mut *tx)
        .await?;
        let young: Option<i64> = r.try_get("first_young")?;
        let cut = young
            .map_or(head.seq, |s| (s as u64).saturating_sub(1))
            .min(head.anchored_seq);
        if cut <= head.pruned_seq {
            return Ok(0);
        }
        let hash: String = sqlx::query("SELECT hash FROM access_records WHERE seq = $1")
            .bind(cut as i64)
            .fetch_one(&mut *tx)
            .await?
            .try_get("hash")?;
        let n = sqlx::query("DELETE FROM access_records WHERE seq <= $1")
            .bind(cut as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE access_head SET pruned_seq = $1, pruned_hash = $2 WHERE id = 1")
            .bind(cut as i64)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        let mut c = Change::new("access.prune", format!("access:{cut}"));
        c.after = Some(serde_json::json!({ "through_seq": cut, "hash": hash, "deleted": n }));
        append(&mut tx, &self.audit, c).await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// Rows per INSERT on PostgreSQL: 21 parameters each stays far below its 65,535.
const INSERT_ROWS: usize = 250;

async fn insert(
    tx: &mut Transaction<'static, Any>,
    rows: &[AccessEntry],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let per = COLS.split(", ").count();
    let values: Vec<String> = (0..rows.len())
        .map(|i| {
            let ps: Vec<String> = (1..=per).map(|j| format!("${}", i * per + j)).collect();
            format!("({})", ps.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO access_records ({COLS}) VALUES {}",
        values.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for e in rows {
        let f = &e.signed.record;
        q = q
            .bind(e.seq as i64)
            .bind(e.reporter.to_string())
            .bind(e.signed.report_seq as i64)
            .bind(f.src_device.to_string())
            .bind(f.dst_device.to_string())
            .bind(i64::from(f.proto))
            .bind(i64::from(f.src_port))
            .bind(i64::from(f.dst_port))
            .bind(clamp(f.bytes))
            .bind(clamp(f.packets))
            .bind(clamp(f.bytes_back))
            .bind(clamp(f.packets_back))
            .bind(f.first_seen_ms)
            .bind(f.last_seen_ms)
            .bind(f.rule.clone())
            .bind(f.policy_version.map(clamp))
            .bind(f.verdict.as_str())
            .bind(e.signed.sig.clone())
            .bind(e.received_at_ms)
            .bind(e.prev_hash.clone())
            .bind(e.hash.clone());
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

fn entry_from_row(r: &AnyRow) -> Result<AccessEntry, StoreError> {
    let verdict: String = r.try_get("verdict")?;
    let int = |col: &str| -> Result<i64, StoreError> { Ok(r.try_get::<i64, _>(col)?) };
    let small = |col: &'static str| -> Result<i64, StoreError> { int(col) };
    Ok(AccessEntry {
        seq: int("seq")? as u64,
        reporter: parse_col(r, "reporter")?,
        signed: SignedFlow {
            report_seq: int("report_seq")? as u64,
            record: FlowRecord {
                src_device: parse_col(r, "src_device")?,
                dst_device: parse_col(r, "dst_device")?,
                proto: u8::try_from(small("proto")?)
                    .map_err(|e| StoreError::corrupt("proto", e))?,
                src_port: u16::try_from(small("src_port")?)
                    .map_err(|e| StoreError::corrupt("src_port", e))?,
                dst_port: u16::try_from(small("dst_port")?)
                    .map_err(|e| StoreError::corrupt("dst_port", e))?,
                bytes: int("bytes")?.max(0) as u64,
                packets: int("packets")?.max(0) as u64,
                bytes_back: int("bytes_back")?.max(0) as u64,
                packets_back: int("packets_back")?.max(0) as u64,
                first_seen_ms: int("first_seen_ms")?,
                last_seen_ms: int("last_seen_ms")?,
                rule: r.try_get("rule")?,
                policy_version: r
                    .try_get::<Option<i64>, _>("policy_version")?
                    .map(|v| v.max(0) as u64),
                verdict: FlowVerdict::parse(&verdict)
                    .ok_or_else(|| StoreError::corrupt("verdict", &verdict))?,
            },
            sig: r.try_get("sig")?,
        },
        received_at_ms: int("received_at_ms")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// An `access.checkpoint` event: where in the audit chain an access anchor lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorEvent {
    /// The audit event's sequence number (its signed checkpoints cover it).
    pub event_seq: u64,
    pub seq: u64,
    pub hash: String,
}

impl Store {
    /// Every access anchor with the audit event that carries it, oldest first.
    pub async fn access_anchor_events(&self) -> Result<Vec<AnchorEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, after_json FROM audit_events WHERE action = 'access.checkpoint' ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = vec![];
        for r in rows {
            let j: Option<String> = r.try_get("after_json")?;
            let v: serde_json::Value = serde_json::from_str(j.as_deref().unwrap_or("null"))
                .map_err(|e| StoreError::corrupt("after_json", e))?;
            match (v["seq"].as_u64(), v["hash"].as_str()) {
                (Some(s), Some(h)) => out.push(AnchorEvent {
                    event_seq: r.try_get::<i64, _>("seq")? as u64,
                    seq: s,
                    hash: h.to_string(),
                }),
                _ => return Err(StoreError::corrupt("access.checkpoint", v)),
            }
        }
        Ok(out)
    }

    /// The devices that reported records `after < seq <= upto` (few: one per device).
    pub async fn access_reporters(
        &self,
        after: u64,
        upto: u64,
    ) -> Result<Vec<DeviceId>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT reporter FROM access_records WHERE seq > $1 AND seq <= $2",
        )
        .bind(clamp(after))
        .bind(clamp(upto))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| parse_col(r, "reporter")).collect()
    }

    /// The report keys the audit log recorded (`device.report_key` events), oldest
    /// first: they outlive the devices' rows.
    pub async fn report_key_events(&self) -> Result<Vec<(DeviceId, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT target, after_json FROM audit_events WHERE action = 'device.report_key' ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = vec![];
        for r in rows {
            let t: Option<String> = r.try_get("target")?;
            let j: Option<String> = r.try_get("after_json")?;
            let v: serde_json::Value = serde_json::from_str(j.as_deref().unwrap_or("null"))
                .map_err(|e| StoreError::corrupt("after_json", e))?;
            let dev = t
                .as_deref()
                .and_then(|t| t.strip_prefix("device:"))
                .and_then(|d| d.parse().ok());
            if let (Some(d), Some(k)) = (dev, v["report_key"].as_str()) {
                out.push((d, k.to_string()));
            }
        }
        Ok(out)
    }

    /// The lowest and highest sequence numbers of the records whose flows overlap
    /// `[since_ms, until_ms)`, if any.
    pub async fn access_window_seqs(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let r = sqlx::query(
            "SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM access_records \
             WHERE last_seen_ms >= $1 AND first_seen_ms < $2",
        )
        .bind(since_ms)
        .bind(until_ms)
        .fetch_one(&self.pool)
        .await?;
        let lo: Option<i64> = r.try_get("lo")?;
        let hi: Option<i64> = r.try_get("hi")?;
        Ok(lo.zip(hi).map(|(l, h)| (l as u64, h as u64)))
    }

    /// The devices of the user with this email or username (devices are owned by
    /// `user:USERNAME`); `None` when there is no such user.
    pub async fn user_device_ids(&self, who: &str) -> Result<Option<Vec<DeviceId>>, StoreError> {
        let u = sqlx::query(
            "SELECT username FROM users WHERE lower(email) = lower($1) OR lower(username) = lower($1) \
             ORDER BY CASE WHEN lower(email) = lower($1) THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(who)
        .fetch_optional(&self.pool)
        .await?;
        let Some(u) = u else { return Ok(None) };
        let name: String = u.try_get("username")?;
        let rows = sqlx::query("SELECT id FROM devices WHERE owner = $1 ORDER BY id")
            .bind(format!("user:{name}"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| parse_col(r, "id"))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}
