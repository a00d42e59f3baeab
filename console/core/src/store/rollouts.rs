//! Change acknowledgements in the database: each device's newest applied map version,
//! the rollouts (one per published revision, with the devices whose map it changed) and
//! when each target applied it. Written in batches by [`crate::service::rollouts`]; read
//! by the API, the CLI and the web console for `applied by N of M connected peers`.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;
use zmesh_shared::{DeviceId, NetworkId};

use super::{parse_col, Backend, Store, StoreError};

/// One acknowledgement: the device's data plane enforces `version` since `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub device_id: DeviceId,
    pub version: u64,
    pub at_ms: i64,
}

/// A device whose map a rollout changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewTarget {
    pub device_id: DeviceId,
    /// Online (its stream heard from recently) when the change was published.
    pub connected: bool,
}

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutRow {
    pub network_id: NetworkId,
    pub revision: u64,
    pub made_at_ms: i64,
    /// Admin changes get a `change.applied` audit event with the final figures; a
    /// device's own endpoint changes (roaming) do not.
    pub audited: bool,
    pub finished_at_ms: Option<i64>,
}

/// One target with its device's name (empty when the device is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetRow {
    pub device_id: DeviceId,
    pub name: String,
    pub connected: bool,
    pub applied_at_ms: Option<i64>,
}

fn rollout_from_row(r: &AnyRow) -> Result<RolloutRow, StoreError> {
    Ok(RolloutRow {
        network_id: parse_col(r, "network_id")?,
        revision: r.try_get::<i64, _>("revision")? as u64,
        made_at_ms: r.try_get("made_at_ms")?,
        audited: r.try_get::<i64, _>("audited")? != 0,
        finished_at_ms: r.try_get("finished_at_ms")?,
    })
}

/// Rows per multi-row INSERT (PostgreSQL; SQLite binds many parameters slowly, so one
/// row per statement there, see docs/performance.md).
const INSERT_CHUNK: usize = 500;

impl Store {
    /// Records acknowledgements (in arrival order) in one transaction: each device's
    /// newest applied version, and the applied time of its targets up to that version.
    pub async fn record_acks(&self, net: NetworkId, acks: &[Ack]) -> Result<(), StoreError> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        match self.backend() {
            // One round trip per chunk: thousands of agents acknowledge one change
            // within milliseconds. Per device only its newest acknowledgement of the
            // batch is kept (the batch spans ~100 ms, so an earlier version's time is
            // at most that much late).
            Backend::Postgres => {
                let mut newest: Vec<Ack> = Vec::with_capacity(acks.len());
                let mut at: std::collections::HashMap<DeviceId, usize> = Default::default();
                for a in acks {
                    match at.get(&a.device_id) {
                        Some(&i) if newest[i].version >= a.version => {}
                        Some(&i) => newest[i] = *a,
                        None => {
                            at.insert(a.device_id, newest.len());
                            newest.push(*a);
                        }
                    }
                }
                for part in newest.chunks(INSERT_CHUNK) {
                    let mut values = String::new();
                    for i in 0..part.len() {
                        if i > 0 {
                            values.push(',');
                        }
                        let b = i * 3 + 2;
                        values.push_str(&format!(
                            "(CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                            b,
                            b + 1,
                            b + 2
                        ));
                    }
                    for sql in [
                        format!(
                            "UPDATE devices SET applied_version = x.v, applied_at_ms = x.t \
                             FROM (VALUES {values}) AS x(id, v, t) WHERE devices.id = x.id \
                             AND devices.network_id = $1 \
                             AND (devices.applied_version IS NULL OR devices.applied_version < x.v)"
                        ),
                        format!(
                            "UPDATE rollout_targets SET applied_at_ms = x.t \
                             FROM (VALUES {values}) AS x(id, v, t) \
                             WHERE rollout_targets.device_id = x.id \
                             AND rollout_targets.network_id = $1 \
                             AND rollout_targets.revision <= x.v \
                             AND rollout_targets.applied_at_ms IS NULL"
                        ),
                    ] {
                        let mut q = sqlx::query(&sql).bind(net.to_string());
                        for a in part {
                            q = q
                                .bind(a.device_id.to_string())
                                .bind(a.version as i64)
                                .bind(a.at_ms);
                        }
                        q.execute(&mut *tx).await?;
                    }
                }
            }
            // SQLite binds many parameters slowly; one statement per row is fastest there.
            Backend::Sqlite => {
                for a in acks {
                    let v = a.version as i64;
                    sqlx::query(
                        "UPDATE devices SET applied_version = $2, applied_at_ms = $3 \
                         WHERE id = $1 AND (applied_version IS NULL OR applied_version < $2)",
                    )
                    .bind(a.device_id.to_string())
                    .bind(v)
                    .bind(a.at_ms)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE rollout_targets SET applied_at_ms = $4 WHERE device_id = $1 \
                         AND network_id = $2 AND revision <= $3 AND applied_at_ms IS NULL",
                    )
                    .bind(a.device_id.to_string())
                    .bind(net.to_string())
                    .bind(v)
                    .bind(a.at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates a rollout and its targets (nothing when that revision already has one:
    /// a change noted twice, or by two replicas). Returns whether it was created.
    pub async fn create_rollout(
        &self,
        net: NetworkId,
        revision: u64,
        made_at_ms: i64,
        audited: bool,
        targets: &[NewTarget],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO rollouts (network_id, revision, made_at_ms, audited) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(net.to_string())
        .bind(revision as i64)
        .bind(made_at_ms)
        .bind(audited as i64)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        let chunk = match self.backend() {
            Backend::Postgres => INSERT_CHUNK,
            Backend::Sqlite => 1,
        };
        for part in targets.chunks(chunk) {
            let mut sql = String::from(
                "INSERT INTO rollout_targets (network_id, revision, device_id, connected) VALUES ",
            );
            for i in 0..part.len() {
                if i > 0 {
                    sql.push(',');
                }
                let b = i * 2;
                sql.push_str(&format!("($1, $2, ${}, ${})", b + 3, b + 4));
            }
            let mut q = sqlx::query(&sql)
                .bind(net.to_string())
                .bind(revision as i64);
            for t in part {
                q = q.bind(t.device_id.to_string()).bind(t.connected as i64);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Marks the rollout's targets applied whose device already acknowledged a version
    /// at or past it (an acknowledgement can be committed before the targets are), at
    /// the time of that acknowledgement.
    pub async fn reconcile_rollout(&self, net: NetworkId, revision: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE rollout_targets SET applied_at_ms = \
               (SELECT d.applied_at_ms FROM devices d WHERE d.id = rollout_targets.device_id) \
             WHERE network_id = $1 AND revision = $2 AND applied_at_ms IS NULL \
               AND $2 <= (SELECT d.applied_version FROM devices d \
                          WHERE d.id = rollout_targets.device_id)",
        )
        .bind(net.to_string())
        .bind(revision as i64)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn finish_rollout(
        &self,
        net: NetworkId,
        revision: u64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE rollouts SET finished_at_ms = $3 WHERE network_id = $1 AND revision = $2",
        )
        .bind(net.to_string())
        .bind(revision as i64)
        .bind(at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The first rollout at `revision` or later (the change made at `revision` may have
    /// been published together with later ones, as one rollout).
    pub async fn rollout_at_or_after(
        &self,
        net: NetworkId,
        revision: u64,
    ) -> Result<Option<RolloutRow>, StoreError> {
        let r = sqlx::query(
            "SELECT network_id, revision, made_at_ms, audited, finished_at_ms FROM rollouts \
             WHERE network_id = $1 AND revision >= $2 ORDER BY revision LIMIT 1",
        )
        .bind(net.to_string())
        .bind(revision as i64)
        .fetch_optional(self.pool())
        .await?;
        r.as_ref().map(rollout_from_row).transpose()
    }

    /// The newest rollouts, newest first.
    pub async fn recent_rollouts(
        &self,
        net: NetworkId,
        limit: u32,
    ) -> Result<Vec<RolloutRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT network_id, revision, made_at_ms, audited, finished_at_ms FROM rollouts \
             WHERE network_id = $1 ORDER BY revision DESC LIMIT $2",
        )
        .bind(net.to_string())
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(rollout_from_row).collect()
    }

    /// The rollout's targets, by device name.
    pub async fn rollout_targets(
        &self,
        net: NetworkId,
        revision: u64,
    ) -> Result<Vec<TargetRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.device_id, COALESCE(d.name, '') AS name, t.connected, t.applied_at_ms \
             FROM rollout_targets t LEFT JOIN devices d ON d.id = t.device_id \
             WHERE t.network_id = $1 AND t.revision = $2 ORDER BY name, t.device_id",
        )
        .bind(net.to_string())
        .bind(revision as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TargetRow {
                    device_id: parse_col(r, "device_id")?,
                    name: r.try_get("name")?,
                    connected: r.try_get::<i64, _>("connected")? != 0,
                    applied_at_ms: r.try_get("applied_at_ms")?,
                })
            })
            .collect()
    }

    /// Forgets finished rollouts: a device's own (roaming) ones made before
    /// `roams_before_ms`, admin ones made before `audited_before_ms`.
    pub async fn prune_rollouts(
        &self,
        net: NetworkId,
        roams_before_ms: i64,
        audited_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM rollouts WHERE network_id = $1 AND finished_at_ms IS NOT NULL \
             AND ((audited = 0 AND made_at_ms < $2) OR made_at_ms < $3)",
        )
        .bind(net.to_string())
        .bind(roams_before_ms)
        .bind(audited_before_ms)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    /// (connected targets, connected targets that applied the change).
    pub async fn rollout_progress(
        &self,
        net: NetworkId,
        revision: u64,
    ) -> Result<(u64, u64), StoreError> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS connected, COUNT(applied_at_ms) AS applied \
             FROM rollout_targets WHERE network_id = $1 AND revision = $2 AND connected = 1",
        )
        .bind(net.to_string())
        .bind(revision as i64)
        .fetch_one(self.pool())
        .await?;
        Ok((
            r.try_get::<i64, _>("connected")? as u64,
            r.try_get::<i64, _>("applied")? as u64,
        ))
    }

    /// Each device's newest applied map version (devices that never acknowledged one are
    /// absent).
    pub async fn applied_versions(
        &self,
        net: NetworkId,
    ) -> Result<Vec<(DeviceId, u64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, applied_version, applied_at_ms FROM devices \
             WHERE network_id = $1 AND applied_version IS NOT NULL",
        )
        .bind(net.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse_col(r, "id")?,
                    r.try_get::<i64, _>("applied_version")? as u64,
                    r.try_get("applied_at_ms")?,
                ))
            })
            .collect()
    }
}
