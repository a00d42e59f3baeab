//! Web sign-in with a local account: password check with rate limiting (failures are
//! recorded and audited), sessions (a fresh random id per sign-in, stored hashed),
//! sign-out, and the one-time setup link that creates the first admin.

use zmesh_shared::secret::hash_secret;
use zmesh_shared::time::now_ms;
use zmesh_shared::Secret;

use super::{AuditCtx, ServiceError};
use crate::domain::password::{check_password_rules, hash_password, verify_password};
use crate::store::{validate_username, Store, StoreError, UserRow};

/// A session lasts at most this long...
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// ...and ends after this long without use.
pub const SESSION_IDLE_MS: i64 = 2 * 3600 * 1000;
pub const SESSION_PREFIX: &str = "zms_";
/// Failed sign-ins are counted over this window...
pub const FAILURE_WINDOW_MS: i64 = 15 * 60 * 1000;
/// Failed sign-ins allowed per account in the window.
pub const MAX_FAILURES_PER_ACCOUNT: i64 = 5;
/// Failed sign-ins allowed per client address in the window.
pub const MAX_FAILURES_PER_ADDR: i64 = 20;
/// How long a setup link works.
pub const SETUP_TTL_MS: i64 = 24 * 3600 * 1000;

/// How a sign-in attempt ended.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in: the new session's id, for the cookie only.
    Ok { user: Box<UserRow>, session: Secret },
    /// Too many recent failures from this address or for this account.
    RateLimited,
    /// Unknown user, disabled user or wrong password (recorded; not told apart to
    /// the client).
    Refused { reason: &'static str },
}

/// Checks a username and password. `source` is the client address.
pub async fn sign_in(
    store: &Store,
    username: &str,
    password: String,
    source: Option<String>,
) -> Result<SignIn, ServiceError> {
    let addr = source.clone().unwrap_or_else(|| "unknown".into());
    let now = now_ms();
    let username = username.trim().to_string();
    let (by_addr, by_user) = store
        .sign_in_failures(&addr, &username, now - FAILURE_WINDOW_MS)
        .await?;
    if by_addr >= MAX_FAILURES_PER_ADDR || by_user >= MAX_FAILURES_PER_ACCOUNT {
        tracing::warn!(%addr, "sign-in rate limited");
        return Ok(SignIn::RateLimited);
    }
    let creds = if username.is_empty() {
        None
    } else {
        store.user_credentials(&username).await?
    };
    let ok = verify_password(password, creds.as_ref().map(|c| c.password_hash.clone())).await;
    let user = match creds {
        Some(c) if ok && c.user.disabled_at_ms.is_none() => c.user,
        other => {
            let reason = match other {
                None => "unknown user",
                Some(c) if c.user.disabled_at_ms.is_some() => "user disabled",
                Some(_) => "wrong password",
            };
            store
                .acting(AuditCtx::new("anonymous", source))
                .record_sign_in_failure(&addr, &username, reason, now, now - FAILURE_WINDOW_MS)
                .await?;
            return Ok(SignIn::Refused { reason });
        }
    };
    // A fresh id at every sign-in: a session id planted before sign-in is never used.
    let session = start(store, &user, source, "password").await?;
    tracing::info!(user = %user.username, "signed in");
    Ok(SignIn::Ok {
        user: Box::new(user),
        session,
    })
}

/// Starts a session for `user`: a fresh random id (never one the browser sent), stored
/// hashed, with the sign-in recorded in the audit log.
pub async fn start(
    store: &Store,
    user: &UserRow,
    source: Option<String>,
    method: &'static str,
) -> Result<Secret, ServiceError> {
    let sid = Secret::generate(SESSION_PREFIX);
    let now = now_ms();
    store
        .acting(AuditCtx::new(format!("user:{}", user.username), source))
        .create_session_via(&user.id, &sid.hash(), now, now + SESSION_TTL_MS, method)
        .await?;
    Ok(sid)
}

/// Ends a session in the database (not just in the browser).
pub async fn sign_out(store: &Store, ctx: AuditCtx, session_id: &str) -> Result<(), ServiceError> {
    store
        .acting(ctx)
        .delete_session(&hash_secret(session_id))
        .await?;
    Ok(())
}

/// Makes a new one-time setup link token (older ones stop working). Returns the
/// token, to be shown once as `https://HOST/ui/setup/<token>`.
pub async fn issue_setup_link(store: &Store) -> Result<String, StoreError> {
    let t = Secret::generate("zsu_");
    let now = now_ms();
    store
        .acting(AuditCtx::system())
        .create_setup_token(&t.hash(), now, now + SETUP_TTL_MS)
        .await?;
    Ok(t.expose().to_string())
}

/// How redeeming a setup link ended.
#[derive(Debug)]
pub enum Setup {
    /// The first admin exists and is signed in.
    Done { user: Box<UserRow>, session: Secret },
    /// The link is unknown, used or expired.
    Gone,
    /// The form's input is not acceptable; the message says why.
    Invalid(String),
}

/// Creates the first admin through a setup link.
pub async fn redeem_setup(
    store: &Store,
    token: &str,
    username: &str,
    password: String,
    password_again: &str,
    source: Option<String>,
) -> Result<Setup, ServiceError> {
    let hash = hash_secret(token);
    if !store.setup_token_valid(&hash, now_ms()).await? {
        return Ok(Setup::Gone);
    }
    let username = username.trim().to_string();
    if let Err(e) = validate_username(&username) {
        return Ok(Setup::Invalid(e.to_string()));
    }
    if let Err(e) = check_password_rules("password", &password) {
        return Ok(Setup::Invalid(e.to_string()));
    }
    if password != password_again {
        return Ok(Setup::Invalid("The two passwords differ.".into()));
    }
    let phc = hash_password(password).await?;
    let ctx = AuditCtx::new(format!("setup:{username}"), source.clone());
    let Some(user) = store
        .acting(ctx)
        .redeem_setup_token(&hash, &username, &phc, now_ms())
        .await?
    else {
        return Ok(Setup::Gone);
    };
    tracing::info!(user = %user.username, "first admin created through the setup link");
    let session = start(store, &user, source, "password").await?;
    Ok(Setup::Done {
        user: Box::new(user),
        session,
    })
}
