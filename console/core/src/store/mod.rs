//! The console's persistent store: networks, enrollment keys, devices, advertised
//! routes, admin tokens and access-policy versions,
//! on SQLite or PostgreSQL through one sqlx `AnyPool` and one set of SQL text.
//!
//! Every mutation runs in one transaction, and a change that peers can see bumps the
//! network's `revision` in that same transaction, so a reader that sees revision N sees
//! every change up to N. Secrets (enrollment keys, device credentials, admin tokens) are
//! only ever stored as hashes; the row structs returned here carry no secret or hash.

mod access;
mod accounts;
mod audit;
mod devices;
mod enroll_keys;
mod error;
mod idp;
mod logins;
mod networks;
mod policies;
mod reauth;
mod rollouts;
mod routes;
mod sso;
mod tokens;
mod validate;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use zmesh_shared::peermap::{DnsRecord, SplitDns};
use zmesh_shared::wire::DeviceState;
use zmesh_shared::{DeviceId, EnrollKeyId, NetworkId, TokenId, WgPublicKey};

pub use access::{
    AccessFilter, AccessHead, AccessRow, AnchorEvent, KeyRegistration, FLOW_MATCH_SLACK_MS,
};
pub use accounts::{
    validate_username, OwnedToken, SessionRow, UserCredentials, UserRow, UserUpdate,
};
pub use audit::{AuditCtx, Change as AuditChange, EventFilter, Head};
pub use error::{EnrollKeyRejection, StoreError};
pub use idp::{DueUser, IdpRefreshed, SealedToken, TokenUpdate};
pub use logins::{DeviceLogin, LoginPoll, NewDeviceLogin};
pub use networks::{NetworkCount, NewNetwork, FIRST_NETWORK, FIRST_V4};
pub use policies::{PolicyVersion, SavedPolicy, DEFAULT_POLICY};
pub use reauth::user_owner;
pub use rollouts::{Ack, NewTarget, RolloutRow, TargetRow};
pub use routes::{Advertised, ApprovedRoutes, RouteRow, POLICY_ACTOR};
pub use sso::{sso_username, SsoIdentity, SsoOutcome};
pub use validate::{derive_name_base, normalize_tags, validate_name};

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub id: NetworkId,
    pub name: String,
    pub prefix_v4: Ipv4Net,
    pub prefix_v6: Ipv6Net,
    pub revision: u64,
    pub created_at_ms: i64,
    /// Set by an admin; `None`: the default (see `domain::dns::suffix`).
    pub dns_suffix: Option<String>,
    /// Admins' extra names under the suffix.
    pub dns_records: Vec<DnsRecord>,
    /// Split-DNS entries.
    pub dns_split: Vec<SplitDns>,
    /// A device in this network must not be in any other network at the same time
    /// (sent to agents in their maps; their agents enforce it).
    pub exclusive: bool,
}

/// The names part of a network, as admins change it (and as its audit events show it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkDns {
    pub suffix: Option<String>,
    pub records: Vec<DnsRecord>,
    pub split: Vec<SplitDns>,
}

impl NetworkDns {
    pub fn of(n: &Network) -> NetworkDns {
        NetworkDns {
            suffix: n.dns_suffix.clone(),
            records: n.dns_records.clone(),
            split: n.dns_split.clone(),
        }
    }
}

/// An enrollment key as stored: never the secret, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = EnrollKey)]
pub struct EnrollKeyRow {
    pub id: EnrollKeyId,
    pub network_id: NetworkId,
    pub description: Option<String>,
    pub reusable: bool,
    pub preapproved: bool,
    pub tags: Vec<String>,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub created_by: String,
    pub revoked_at_ms: Option<i64>,
    pub used_count: i64,
    pub last_used_at_ms: Option<i64>,
}

/// A device as stored, without its credential hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Device)]
pub struct DeviceRow {
    pub id: DeviceId,
    pub network_id: NetworkId,
    pub name: String,
    pub owner: String,
    pub tags: Vec<String>,
    pub public_key: WgPublicKey,
    #[schema(value_type = String, format = Ipv4)]
    pub overlay_v4: Ipv4Addr,
    #[schema(value_type = String, format = Ipv6)]
    pub overlay_v6: Ipv6Addr,
    pub state: DeviceState,
    pub agentless: bool,
    pub hostname: Option<String>,
    pub os: Option<String>,
    /// `ip:port` endpoints the device reported.
    #[schema(value_type = Vec<String>)]
    pub endpoints: Vec<SocketAddr>,
    pub key_expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub last_seen_ms: Option<i64>,
    pub enroll_key_id: Option<EnrollKeyId>,
    /// The version the device's agent reported when its stream last said Hello.
    pub agent_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Auditor,
    /// Signed in through SSO, in no admin or auditor group: owns devices, may not use
    /// the admin console or API.
    Member,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Member => "member",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// An admin API token as stored, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = Token)]
pub struct AdminTokenRow {
    pub id: TokenId,
    pub name: String,
    pub role: Role,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// The one network this token may see and change; `None`: console-wide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_id: Option<NetworkId>,
}

/// A network, all its devices and its policy in force, read in one transaction
/// (consistent with `revision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkSnapshot {
    pub network: Network,
    pub devices: Vec<DeviceRow>,
    pub policy: PolicyVersion,
    /// IdP groups of the enabled users, by the owner label their devices carry
    /// (`user:NAME`).
    pub owner_groups: OwnerGroups,
    /// Approved routes (subnets, exit-node defaults) by device.
    pub routes: ApprovedRoutes,
}

/// IdP groups by device-owner label (`user:NAME`), for the policy's `group:` selectors.
pub type OwnerGroups = std::collections::BTreeMap<String, Vec<String>>;

/// Input of [`Store::create_enroll_key`]. The caller generates the secret and passes its hash.
#[derive(Debug, Clone)]
pub struct NewEnrollKey {
    pub network_id: NetworkId,
    pub secret_hash: String,
    pub description: Option<String>,
    pub reusable: bool,
    pub preapproved: bool,
    pub tags: Vec<String>,
    pub expires_at_ms: Option<i64>,
    pub created_by: String,
}

/// Input of [`Store::enroll_device`].
#[derive(Debug, Clone)]
pub struct EnrollDevice {
    /// Hash of the enrollment key's secret.
    pub secret_hash: String,
    pub public_key: WgPublicKey,
    /// Requested name; derived from `hostname` when absent.
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    /// Hash of the device credential the console hands back to the agent.
    pub credential_hash: String,
    pub now_ms: i64,
}

/// Input of [`Store::add_agentless_device`] (a stock WireGuard peer added by an admin).
#[derive(Debug, Clone)]
pub struct NewAgentlessDevice {
    pub network_id: NetworkId,
    pub name: String,
    pub public_key: WgPublicKey,
    pub tags: Vec<String>,
    pub owner: String,
    pub now_ms: i64,
}

/// Handle to the database. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Recorded as actor and source of every audit event this handle writes.
    audit: std::sync::Arc<AuditCtx>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // the URL may hold a password: never print it
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("actor", &self.audit.actor)
            .finish_non_exhaustive()
    }
}

/// How long a SQLite writer waits for the lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;

impl Store {
    /// Connects and runs the migrations of the backend. URLs: `sqlite:///abs/path.db` or
    /// `sqlite://rel.db` (file created if missing), `postgres://…` / `postgresql://…`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::invalid(
                "database_url",
                "expected a sqlite:// or postgres:// URL",
            ));
        };
        let pool = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') || url.contains(":memory:") {
                    url.to_string()
                } else {
                    format!("{url}?mode=rwc")
                };
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(60))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute(
                                format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str(),
                            )
                            .await?;
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(60))
                    .connect(url)
                    .await?
            }
        };
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            audit: std::sync::Arc::new(AuditCtx::system()),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and then writes can
    /// fail at once with SQLITE_BUSY when another writer committed in between, whereas
    /// an immediate one just waits for the lock (busy timeout).
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A read-only transaction whose statements all see one snapshot. SQLite (WAL) gives
    /// that to any transaction; PostgreSQL needs REPEATABLE READ for it.
    pub(crate) async fn begin_snapshot(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }
}

// ---- row decoding shared by the submodules ----

pub(crate) fn parse_col<T>(row: &AnyRow, col: &str) -> Result<T, StoreError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    let s: String = row.try_get(col)?;
    s.parse().map_err(|e| StoreError::corrupt(col, e))
}

pub(crate) fn opt_parse_col<T>(row: &AnyRow, col: &str) -> Result<Option<T>, StoreError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| s.parse().map_err(|e| StoreError::corrupt(col, e)))
        .transpose()
}

pub(crate) fn json_col<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    col: &str,
) -> Result<T, StoreError> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::corrupt(col, e))
}

pub(crate) fn bool_col(row: &AnyRow, col: &str) -> Result<bool, StoreError> {
    let v: i64 = row.try_get(col)?;
    Ok(v != 0)
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("lists of strings and addresses always serialize")
}
