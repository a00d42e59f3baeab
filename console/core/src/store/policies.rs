//! Access-policy versions: every accepted policy is kept with its author, time and a
//! summary of the edges it changed; the current one is the highest version. A network
//! with no stored version runs the built-in default (version 0, see
//! [`DEFAULT_POLICY`]).
//!
//! Saving is one write transaction that first bumps the network revision (which, on
//! PostgreSQL, locks the network row and so serialises against enrollments and device
//! edits), then reads the inventory and the current policy, lets the caller validate
//! against exactly that state, inserts, and appends the audit event (`policy.set` or
//! `policy.rollback`). A rejected policy rolls the whole transaction back: no version,
//! no revision bump.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use zmesh_shared::NetworkId;

use super::audit::{append, Change};
use super::devices::{device_from_row, DEVICE_COLS};
use super::networks::bump_revision;
use super::{DeviceRow, Store, StoreError};

/// What a fresh network runs (version 0): every device may reach every other device on
/// every protocol. It is an ordinary policy, shown by `policy get` and replaced by
/// `policy set`; the engine stays default deny (what no rule accepts is dropped).
pub const DEFAULT_POLICY: &str = r#"{
  "version": 1,
  // Built-in default: every device may reach every other device, any protocol.
  // Replace the rule below to restrict access; whatever no rule accepts is denied.
  "tag_owners": {},
  "rules": [
    { "src": ["*"], "dst": ["*:*"], "proto": "any" },
  ],
}
"#;

/// One stored (or the built-in default) policy version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PolicyVersion {
    pub version: u64,
    pub text: String,
    pub author: String,
    pub created_at_ms: i64,
    /// What the version changed, e.g. "3 edges added, 1 removed".
    pub summary: String,
    /// The version this one restored, when it was made by a rollback.
    pub rollback_of: Option<u64>,
}

impl PolicyVersion {
    /// Version 0: what a network runs before any policy is saved.
    pub fn builtin_default(created_at_ms: i64) -> Self {
        PolicyVersion {
            version: 0,
            text: DEFAULT_POLICY.to_string(),
            author: "zmesh (built-in default)".into(),
            created_at_ms,
            summary: "built-in default: every device may reach every other device".into(),
            rollback_of: None,
        }
    }
}

/// A policy that passed the caller's check inside [`Store::save_policy`].
#[derive(Debug, Clone)]
pub struct SavedPolicy {
    pub version: PolicyVersion,
    /// Network revision after the change.
    pub revision: u64,
}

const POLICY_COLS: &str = "version, text, author, created_at_ms, summary, rollback_of";

fn u64_col(r: &AnyRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = r.try_get(col)?;
    u64::try_from(v).map_err(|e| StoreError::corrupt(col, e))
}

fn policy_from_row(r: &AnyRow) -> Result<PolicyVersion, StoreError> {
    let rb: Option<i64> = r.try_get("rollback_of")?;
    Ok(PolicyVersion {
        version: u64_col(r, "version")?,
        text: r.try_get("text")?,
        author: r.try_get("author")?,
        created_at_ms: r.try_get("created_at_ms")?,
        summary: r.try_get("summary")?,
        rollback_of: rb
            .map(|v| u64::try_from(v).map_err(|e| StoreError::corrupt("rollback_of", e)))
            .transpose()?,
    })
}

async fn network_created_at(
    tx: &mut Transaction<'static, Any>,
    net: NetworkId,
) -> Result<i64, StoreError> {
    let r = sqlx::query("SELECT created_at_ms FROM networks WHERE id = $1")
        .bind(net.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound { what: "network" })?;
    Ok(r.try_get("created_at_ms")?)
}

/// The current policy of `net`, read inside `tx` (the default when none is stored).
pub(crate) async fn current_in(
    tx: &mut Transaction<'static, Any>,
    net: NetworkId,
) -> Result<PolicyVersion, StoreError> {
    let r = sqlx::query(&format!(
        "SELECT {POLICY_COLS} FROM policy_versions WHERE network_id = $1 \
         ORDER BY version DESC LIMIT 1"
    ))
    .bind(net.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    match r {
        Some(r) => policy_from_row(&r),
        None => Ok(PolicyVersion::builtin_default(
            network_created_at(tx, net).await?,
        )),
    }
}

impl Store {
    /// The policy in force.
    pub async fn current_policy(&self, net: NetworkId) -> Result<PolicyVersion, StoreError> {
        let mut tx = self.begin_snapshot().await?;
        let p = current_in(&mut tx, net).await?;
        tx.commit().await?;
        Ok(p)
    }

    /// Every version, newest first, ending with the built-in default (version 0).
    pub async fn policy_history(&self, net: NetworkId) -> Result<Vec<PolicyVersion>, StoreError> {
        let mut tx = self.begin_snapshot().await?;
        let rows = sqlx::query(&format!(
            "SELECT {POLICY_COLS} FROM policy_versions WHERE network_id = $1 ORDER BY version DESC"
        ))
        .bind(net.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let created = network_created_at(&mut tx, net).await?;
        tx.commit().await?;
        let mut out = rows
            .iter()
            .map(policy_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        out.push(PolicyVersion::builtin_default(created));
        Ok(out)
    }

    /// One version; 0 is the built-in default.
    pub async fn policy_version(
        &self,
        net: NetworkId,
        version: u64,
    ) -> Result<PolicyVersion, StoreError> {
        let not_found = StoreError::NotFound {
            what: "policy version",
        };
        if version == 0 {
            let mut tx = self.begin_snapshot().await?;
            let created = network_created_at(&mut tx, net).await?;
            tx.commit().await?;
            return Ok(PolicyVersion::builtin_default(created));
        }
        let v = i64::try_from(version).map_err(|_| not_found)?;
        let r = sqlx::query(&format!(
            "SELECT {POLICY_COLS} FROM policy_versions WHERE network_id = $1 AND version = $2"
        ))
        .bind(net.to_string())
        .bind(v)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound {
            what: "policy version",
        })?;
        policy_from_row(&r)
    }

    /// Saves `text` as the next version if `check` accepts it. `check` sees the
    /// network's devices (every state) and the current policy, both as of this
    /// transaction, and returns the summary to store with the rules added and removed
    /// (recorded in the audit event as `rules`), or its own rejection, which is
    /// passed back as `Ok(Err(_))` after the transaction was rolled back.
    pub async fn save_policy<E>(
        &self,
        net: NetworkId,
        text: &str,
        author: &str,
        rollback_of: Option<u64>,
        now_ms: i64,
        check: impl FnOnce(
            &[DeviceRow],
            &super::OwnerGroups,
            &PolicyVersion,
        ) -> Result<(String, serde_json::Value), E>,
    ) -> Result<Result<SavedPolicy, E>, StoreError> {
        let mut tx = self.begin_write().await?;
        // First: locks the network row on PostgreSQL until commit.
        let revision = bump_revision(&mut tx, net).await?;
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE network_id = $1 ORDER BY id"
        ))
        .bind(net.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let devices = rows
            .iter()
            .map(device_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let current = current_in(&mut tx, net).await?;
        let owners = super::sso::owner_groups_in(&mut tx).await?;
        let (summary, rules) = match check(&devices, &owners, &current) {
            Ok(s) => s,
            Err(e) => {
                tx.rollback().await?;
                return Ok(Err(e));
            }
        };
        let version = current.version + 1;
        sqlx::query(
            "INSERT INTO policy_versions \
             (network_id, version, text, author, created_at_ms, summary, rollback_of) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(net.to_string())
        .bind(version as i64)
        .bind(text)
        .bind(author)
        .bind(now_ms)
        .bind(&summary)
        .bind(rollback_of.map(|v| v as i64))
        .execute(&mut *tx)
        .await?;
        let text_sha256 = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        };
        append(
            &mut tx,
            &self.audit,
            Change::new(
                if rollback_of.is_some() {
                    "policy.rollback"
                } else {
                    "policy.set"
                },
                format!("policy:{version}"),
            )
            .in_network(net)
            .before(&serde_json::json!({ "version": current.version }))
            .after(&serde_json::json!({
                "version": version,
                "rollback_of": rollback_of,
                "summary": summary,
                "rules": rules,
                "text_sha256": text_sha256,
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(SavedPolicy {
            version: PolicyVersion {
                version,
                text: text.to_string(),
                author: author.to_string(),
                created_at_ms: now_ms,
                summary,
                rollback_of,
            },
            revision: u64::try_from(revision).map_err(|e| StoreError::corrupt("revision", e))?,
        }))
    }
}
