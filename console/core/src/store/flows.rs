//! Flow records reported by agents: batched connection summaries, stored as received,
//! read back with a flag telling whether the other end of the flow reported it too.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use zmesh_shared::wire::{FlowRecord, FlowVerdict, MAX_FLOWS_PER_BATCH};
use zmesh_shared::DeviceId;

use super::{parse_col, Store, StoreError};

/// How far apart the two ends' time windows may be and still count as one flow
/// (clock skew between devices, batching delay).
pub const FLOW_MATCH_SLACK_MS: i64 = 120_000;

/// A stored flow record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Flow)]
pub struct FlowRow {
    pub id: i64,
    /// The device that reported it (the source or the destination).
    pub reporter: DeviceId,
    #[serde(flatten)]
    pub flow: FlowRecord,
    pub received_at_ms: i64,
    /// No record of the same flow from the other end: one side is lying, broken or
    /// has not reported yet.
    pub one_sided: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Flows from or to this device.
    pub device: Option<DeviceId>,
    pub verdict: Option<FlowVerdict>,
    pub one_sided_only: bool,
}

/// Why a reported record was dropped.
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

impl Store {
    /// Stores the valid records of one batch (at most [`MAX_FLOWS_PER_BATCH`]) in one
    /// transaction; returns how many were kept. Invalid ones are dropped, not fatal.
    pub async fn insert_flows(
        &self,
        reporter: DeviceId,
        flows: &[FlowRecord],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut kept = 0;
        for f in flows.iter().take(MAX_FLOWS_PER_BATCH) {
            if let Err(why) = check(reporter, f) {
                tracing::debug!(device = %reporter, why, "flow record dropped");
                continue;
            }
            sqlx::query(
                "INSERT INTO flow_records (reporter, src_device, dst_device, proto, src_port, dst_port, \
                 bytes, packets, first_seen_ms, last_seen_ms, rule, verdict, received_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(reporter.to_string())
            .bind(f.src_device.to_string())
            .bind(f.dst_device.to_string())
            .bind(i64::from(f.proto))
            .bind(i64::from(f.src_port))
            .bind(i64::from(f.dst_port))
            .bind(f.bytes.min(i64::MAX as u64) as i64)
            .bind(f.packets.min(i64::MAX as u64) as i64)
            .bind(f.first_seen_ms)
            .bind(f.last_seen_ms)
            .bind(f.rule.clone())
            .bind(f.verdict.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            kept += 1;
        }
        tx.commit().await?;
        Ok(kept)
    }

    /// Flow records with `id > after_id` passing `f`, oldest first, at most `limit`.
    pub async fn list_flows(
        &self,
        f: &FlowFilter,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<FlowRow>, StoreError> {
        let mut sql = format!(
            "SELECT f.id, f.reporter, f.src_device, f.dst_device, f.proto, f.src_port, f.dst_port, \
             f.bytes, f.packets, f.first_seen_ms, f.last_seen_ms, f.rule, f.verdict, f.received_at_ms, \
             CASE WHEN EXISTS (SELECT 1 FROM flow_records o WHERE o.src_device = f.src_device \
               AND o.dst_device = f.dst_device AND o.proto = f.proto AND o.src_port = f.src_port \
               AND o.dst_port = f.dst_port AND o.reporter <> f.reporter \
               AND o.first_seen_ms <= f.last_seen_ms + {FLOW_MATCH_SLACK_MS} \
               AND o.last_seen_ms + {FLOW_MATCH_SLACK_MS} >= f.first_seen_ms) THEN 0 ELSE 1 END AS one_sided \
             FROM flow_records f WHERE f.id > $1"
        );
        let mut strs: Vec<String> = vec![];
        let mut ints: Vec<i64> = vec![];
        // ints are bound first ($2..), then strings
        if let Some(t) = f.since_ms {
            ints.push(t);
            sql.push_str(&format!(" AND f.last_seen_ms >= ${}", 1 + ints.len()));
        }
        if let Some(t) = f.until_ms {
            ints.push(t);
            sql.push_str(&format!(" AND f.first_seen_ms < ${}", 1 + ints.len()));
        }
        let base = 1 + ints.len();
        if let Some(d) = f.device {
            strs.push(d.to_string());
            let n = base + strs.len();
            sql.push_str(&format!(
                " AND (f.src_device = ${n} OR f.dst_device = ${n})"
            ));
        }
        if let Some(v) = f.verdict {
            strs.push(v.as_str().to_string());
            sql.push_str(&format!(" AND f.verdict = ${}", base + strs.len()));
        }
        let sql = if f.one_sided_only {
            format!("SELECT * FROM ({sql}) AS x WHERE x.one_sided = 1 ORDER BY x.id LIMIT {limit}")
        } else {
            format!("{sql} ORDER BY f.id LIMIT {limit}")
        };
        let mut q = sqlx::query(&sql).bind(after_id);
        for i in ints {
            q = q.bind(i);
        }
        for s in strs {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(flow_from_row).collect()
    }
}

fn flow_from_row(r: &AnyRow) -> Result<FlowRow, StoreError> {
    let verdict: String = r.try_get("verdict")?;
    let small = |col: &str| -> Result<i64, StoreError> { Ok(r.try_get::<i64, _>(col)?) };
    let one_sided: i64 = r.try_get("one_sided")?;
    Ok(FlowRow {
        id: r.try_get("id")?,
        reporter: parse_col(r, "reporter")?,
        flow: FlowRecord {
            src_device: parse_col(r, "src_device")?,
            dst_device: parse_col(r, "dst_device")?,
            proto: u8::try_from(small("proto")?).map_err(|e| StoreError::corrupt("proto", e))?,
            src_port: u16::try_from(small("src_port")?)
                .map_err(|e| StoreError::corrupt("src_port", e))?,
            dst_port: u16::try_from(small("dst_port")?)
                .map_err(|e| StoreError::corrupt("dst_port", e))?,
            bytes: small("bytes")?.max(0) as u64,
            packets: small("packets")?.max(0) as u64,
            first_seen_ms: r.try_get("first_seen_ms")?,
            last_seen_ms: r.try_get("last_seen_ms")?,
            rule: r.try_get("rule")?,
            verdict: FlowVerdict::parse(&verdict)
                .ok_or_else(|| StoreError::corrupt("verdict", &verdict))?,
        },
        received_at_ms: r.try_get("received_at_ms")?,
        one_sided: one_sided != 0,
    })
}
