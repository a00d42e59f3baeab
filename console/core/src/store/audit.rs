//! The audit log in the database: appending chained events inside the caller's
//! transaction, reading them back in pages (for exports and verification), checkpoints,
//! pruning behind a signed anchor and the SIEM forwarding cursor.
//!
//! Ordering: `append` bumps the single-row `audit_head` with `UPDATE … RETURNING`, so on
//! PostgreSQL the row stays locked until the writer commits or rolls back and every
//! other writer (of any replica) waits; on SQLite writers are serialised by
//! `BEGIN IMMEDIATE`. Either way the sequence is gapless and has no fork, and an event
//! exists exactly when the change it records was committed. Callers append as the LAST
//! statement before commit, so the head lock is always taken after any other row lock
//! and two writers cannot deadlock on it.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use zmesh_shared::audit::{AuditEvent, Checkpoint, EventBody};
use zmesh_shared::time::now_ms;

use super::{Store, StoreError};

/// Who is acting, as recorded in every event a [`Store`] handle writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCtx {
    /// `admin:<token name>`, `auditor:<token name>`, `device:<id>`, `anonymous`, `system`.
    pub actor: String,
    /// The client's IP address, when the change came over the network.
    pub source_addr: Option<String>,
    /// The network the actor acts inside (a network-scoped route, a scoped account);
    /// recorded with every event. `None`: console-wide.
    pub network: Option<zmesh_shared::NetworkId>,
}

impl AuditCtx {
    pub fn system() -> Self {
        AuditCtx {
            actor: "system".into(),
            source_addr: None,
            network: None,
        }
    }
    pub fn new(actor: impl Into<String>, source_addr: Option<String>) -> Self {
        AuditCtx {
            actor: actor.into(),
            source_addr,
            network: None,
        }
    }
    /// The same actor acting inside `network`.
    pub fn in_network(mut self, network: zmesh_shared::NetworkId) -> Self {
        self.network = Some(network);
        self
    }
}

/// What a mutation records; the store adds actor, source, time and the chain fields.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub action: &'static str,
    pub target: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Change {
    pub fn new(action: &'static str, target: impl Into<String>) -> Self {
        Change {
            action,
            target: Some(target.into()),
            ..Default::default()
        }
    }
    pub fn before<T: serde::Serialize>(mut self, v: &T) -> Self {
        self.before = serde_json::to_value(v).ok();
        self
    }
    pub fn after<T: serde::Serialize>(mut self, v: &T) -> Self {
        self.after = serde_json::to_value(v).ok();
        self
    }
}

const EVENT_COLS: &str =
    "seq, time_ms, actor, action, target, source_addr, before_json, after_json, prev_hash, hash, network_id";

fn event_from_row(r: &AnyRow) -> Result<AuditEvent, StoreError> {
    let seq: i64 = r.try_get("seq")?;
    let json = |col: &str| -> Result<Option<Value>, StoreError> {
        let s: Option<String> = r.try_get(col)?;
        s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::corrupt(col, e)))
            .transpose()
    };
    Ok(AuditEvent {
        seq: u64::try_from(seq).map_err(|e| StoreError::corrupt("seq", e))?,
        time_ms: r.try_get("time_ms")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        source_addr: r.try_get("source_addr")?,
        before: json("before_json")?,
        after: json("after_json")?,
        network: r.try_get("network_id")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

fn checkpoint_from_row(r: &AnyRow) -> Result<Checkpoint, StoreError> {
    let seq: i64 = r.try_get("seq")?;
    Ok(Checkpoint {
        seq: u64::try_from(seq).map_err(|e| StoreError::corrupt("seq", e))?,
        hash: r.try_get("hash")?,
        time_ms: r.try_get("time_ms")?,
        signature: r.try_get("signature")?,
    })
}

/// Appends one event in `tx`; must be the last write before `commit`.
pub(crate) async fn append(
    tx: &mut Transaction<'static, Any>,
    ctx: &AuditCtx,
    c: Change,
) -> Result<AuditEvent, StoreError> {
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq: i64 = head.try_get("seq")?;
    let prev: String = head.try_get("hash")?;
    let e = EventBody {
        time_ms: now_ms(),
        actor: ctx.actor.clone(),
        action: c.action.to_string(),
        target: c.target,
        source_addr: ctx.source_addr.clone(),
        before: c.before,
        after: c.after,
        network: ctx.network.map(|n| n.to_string()),
    }
    .seal(seq as u64, &prev);
    sqlx::query(&format!(
        "INSERT INTO audit_events ({EVENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(seq)
    .bind(e.time_ms)
    .bind(&e.actor)
    .bind(&e.action)
    .bind(e.target.clone())
    .bind(e.source_addr.clone())
    .bind(e.before.as_ref().map(Value::to_string))
    .bind(e.after.as_ref().map(Value::to_string))
    .bind(&e.prev_hash)
    .bind(&e.hash)
    .bind(e.network.clone())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(&e.hash)
        .execute(&mut **tx)
        .await?;
    Ok(e)
}

/// Filters of an export or listing. Times are Unix milliseconds, `until` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Exact actor (`admin:ops`).
    pub actor: Option<String>,
    /// Events whose actor or target is this device (`dev_…`).
    pub device: Option<String>,
    /// Exact action (`device.revoke`) or a prefix ending in `.` (`device.`).
    pub action: Option<String>,
    /// Events recorded inside this network (its id).
    pub network: Option<String>,
}

impl EventFilter {
    /// Whether every event passes (an export of the whole chain).
    pub fn is_empty(&self) -> bool {
        *self == EventFilter::default()
    }
}

/// The chain's current end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Store {
    /// A handle that records `ctx` as the actor of every change it makes.
    pub fn acting(&self, ctx: AuditCtx) -> Store {
        Store {
            pool: self.pool.clone(),
            backend: self.backend,
            audit: std::sync::Arc::new(ctx),
        }
    }

    pub fn audit_ctx(&self) -> &AuditCtx {
        &self.audit
    }

    /// Records an event that goes with no other change (failed sign-in, export, …)
    /// in a transaction of its own.
    pub async fn record_event(&self, c: Change) -> Result<AuditEvent, StoreError> {
        let mut tx = self.begin_write().await?;
        let e = append(&mut tx, &self.audit, c).await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn audit_head(&self) -> Result<Head, StoreError> {
        let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let seq: i64 = r.try_get("seq")?;
        Ok(Head {
            seq: seq as u64,
            hash: r.try_get("hash")?,
        })
    }

    /// Up to `limit` events with `after < seq <= upto` that pass `f`, in sequence order.
    pub async fn audit_events_page(
        &self,
        after: u64,
        upto: u64,
        f: &EventFilter,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = format!("SELECT {EVENT_COLS} FROM audit_events WHERE seq > $1 AND seq <= $2");
        let mut n = 2;
        let mut binds: Vec<BindVal> = vec![];
        let mut cond = |sql: &mut String, clause: &str, vals: Vec<BindVal>| {
            let mut c = clause.to_string();
            for v in vals {
                n += 1;
                c = c.replacen('?', &format!("${n}"), 1);
                binds.push(v);
            }
            sql.push_str(" AND ");
            sql.push_str(&c);
        };
        if let Some(t) = f.since_ms {
            cond(&mut sql, "time_ms >= ?", vec![BindVal::I(t)]);
        }
        if let Some(t) = f.until_ms {
            cond(&mut sql, "time_ms < ?", vec![BindVal::I(t)]);
        }
        if let Some(a) = &f.actor {
            cond(&mut sql, "actor = ?", vec![BindVal::S(a.clone())]);
        }
        if let Some(d) = &f.device {
            cond(
                &mut sql,
                "(target = ? OR actor = ?)",
                vec![
                    BindVal::S(format!("device:{d}")),
                    BindVal::S(format!("device:{d}")),
                ],
            );
        }
        if let Some(a) = &f.action {
            if a.ends_with('.') {
                // compare the prefix with substr: LIKE would treat `_` as a wildcard
                cond(
                    &mut sql,
                    "substr(action, 1, ?) = ?",
                    vec![BindVal::I(a.len() as i64), BindVal::S(a.clone())],
                );
            } else {
                cond(&mut sql, "action = ?", vec![BindVal::S(a.clone())]);
            }
        }
        if let Some(n) = &f.network {
            cond(&mut sql, "network_id = ?", vec![BindVal::S(n.clone())]);
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT {limit}"));
        let mut q = sqlx::query(&sql).bind(after as i64).bind(upto as i64);
        for b in binds {
            q = match b {
                BindVal::I(i) => q.bind(i),
                BindVal::S(s) => q.bind(s),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Stores a signed checkpoint; a second one for the same seq (another replica) is ignored.
    pub async fn insert_checkpoint(&self, c: &Checkpoint, kind: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO audit_checkpoints (seq, hash, time_ms, signature, kind) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
        )
        .bind(c.seq as i64)
        .bind(&c.hash)
        .bind(c.time_ms)
        .bind(&c.signature)
        .bind(kind)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every checkpoint except anchors, by seq.
    pub async fn list_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, hash, time_ms, signature FROM audit_checkpoints WHERE kind <> 'anchor' ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// When the newest checkpoint (not an anchor) was signed; `None` before the first.
    pub async fn last_checkpoint_ms(&self) -> Result<Option<i64>, StoreError> {
        let r =
            sqlx::query("SELECT MAX(time_ms) AS t FROM audit_checkpoints WHERE kind <> 'anchor'")
                .fetch_one(&self.pool)
                .await?;
        Ok(r.try_get::<Option<i64>, _>("t")?)
    }

    /// The anchor the remaining chain starts from, if it was ever pruned.
    pub async fn audit_anchor(&self) -> Result<Option<Checkpoint>, StoreError> {
        let r = sqlx::query(
            "SELECT seq, hash, time_ms, signature FROM audit_checkpoints WHERE kind = 'anchor' \
             ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(checkpoint_from_row).transpose()
    }

    /// The newest event with `time_ms < cutoff_ms` (the candidate cut for pruning).
    pub async fn audit_cut_before(&self, cutoff_ms: i64) -> Result<Option<AuditEvent>, StoreError> {
        let r = sqlx::query(&format!(
            "SELECT {EVENT_COLS} FROM audit_events WHERE seq = \
             (SELECT MAX(seq) FROM audit_events WHERE time_ms < $1)"
        ))
        .bind(cutoff_ms)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(event_from_row).transpose()
    }

    /// Deletes events up to and including `anchor.seq` (which must be signed over that
    /// event's hash), stores the anchor, drops older checkpoints and flow records older
    /// than `flows_before_ms`, and records the pruning as an event, all in one transaction.
    pub async fn prune_audit(
        &self,
        anchor: &Checkpoint,
        flows_before_ms: i64,
    ) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("SELECT hash FROM audit_events WHERE seq = $1")
            .bind(anchor.seq as i64)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound {
                what: "audit event at the cut",
            })?;
        let hash: String = r.try_get("hash")?;
        if hash != anchor.hash {
            return Err(StoreError::invalid(
                "anchor",
                "does not match the event at the cut",
            ));
        }
        let events = sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
            .bind(anchor.seq as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM audit_checkpoints WHERE seq <= $1")
            .bind(anchor.seq as i64)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, hash, time_ms, signature, kind) \
             VALUES ($1, $2, $3, $4, 'anchor')",
        )
        .bind(anchor.seq as i64)
        .bind(&anchor.hash)
        .bind(anchor.time_ms)
        .bind(&anchor.signature)
        .execute(&mut *tx)
        .await?;
        let flows = sqlx::query("DELETE FROM flow_records WHERE last_seen_ms < $1")
            .bind(flows_before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let mut c = Change::new("audit.prune", format!("audit:{}", anchor.seq));
        c.after = Some(serde_json::json!({
            "through_seq": anchor.seq, "events_deleted": events, "flows_deleted": flows}));
        append(&mut tx, &self.audit, c).await?;
        tx.commit().await?;
        Ok((events, flows))
    }

    /// How far the forwarder `name` got (0 if never run).
    pub async fn forward_cursor(&self, name: &str) -> Result<u64, StoreError> {
        let r = sqlx::query("SELECT seq FROM audit_forward WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => r.try_get::<i64, _>("seq")? as u64,
            None => 0,
        })
    }

    pub async fn set_forward_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_forward (name, seq) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
        )
        .bind(name)
        .bind(seq as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

enum BindVal {
    I(i64),
    S(String),
}
