//! The periodic re-check of SSO users at their OpenID Provider (`serve
//! --oidc-refresh-interval`): every user who signed in through the provider is asked
//! about again once an interval, with the refresh token of their last sign-in. What the
//! provider says is applied the way the rest of the console would:
//!
//! - the provider refuses the token (user disabled or removed there): the user is
//!   disabled exactly as an admin disables them ([`super::users::update`]: devices and
//!   tokens revoked in one transaction, each audited, every peer told), actor
//!   `system:idp-refresh`, the reason in the `user.update` event;
//! - the email or groups now fall outside the allowed domains or groups: the same;
//! - the groups or the role changed: the user is brought up to date as at a sign-in
//!   (`user.groups_changed`, `user.role_changed`, the revision bumped and published);
//! - the provider cannot be reached or answers with another error: nothing changes
//!   (never disabled for that), the result says `unreachable: …` or `error: …`.
//!
//! Each user's last check and its result are kept (`idp_checked_at_ms`, `idp_check`)
//! for `users list` and `/api/v1/users`. The HTTP part (token endpoint, ID token
//! validation, the token's encryption) is the caller's [`IdpChecker`]: this layer never
//! sees a token in clear.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zmesh_shared::time::now_ms;

use super::sso::VerifiedLogin;
use super::users::{update, UserChange};
use super::{AuditCtx, Core, ServiceError};
use crate::domain::sso::SsoRules;
use crate::store::{DueUser, IdpRefreshed, SsoIdentity, TokenUpdate};

/// The actor of the changes a re-check makes, in the audit log.
pub const ACTOR: &str = "system:idp-refresh";
/// Users claimed per batch.
const BATCH: i64 = 20;
/// Batches per tick at most; the rest waits for the next tick.
const MAX_BATCHES: usize = 10;
/// A tick stops starting batches after this long.
const TICK_BUDGET: Duration = Duration::from_secs(300);
/// Longest one user's check may take (discovery, token request, keys).
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between two looks for due users.
const MAX_TICK: Duration = Duration::from_secs(60);

/// What the provider said about one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdpAnswer {
    /// The refresh worked: the user is still active there. `login` is what the new,
    /// verified ID token says (`None`: the provider sent none).
    Active {
        login: Option<VerifiedLogin>,
        token: TokenUpdate,
    },
    /// The provider refused the refresh token (`invalid_grant`): the user is disabled
    /// or gone there, or the grant was revoked.
    Refused { reason: String },
    /// No answer to act on (`unreachable: …`, `error: …`); never disables.
    Failed { result: String, token: TokenUpdate },
    /// No refresh token to use (none kept, or it no longer opens: `Clear`).
    NoToken { token: TokenUpdate },
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Asks the provider about a user with their (sealed) refresh token.
pub trait IdpChecker: Send + Sync {
    fn check<'a>(&'a self, due: &'a DueUser) -> BoxFuture<'a, IdpAnswer>;
}

/// What the re-check needs besides the checker.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// Only users of this provider are checked.
    pub issuer: String,
    /// How long after a check (or sign-in) a user is checked again.
    pub interval: Duration,
    pub rules: SsoRules,
}

fn ctx() -> AuditCtx {
    AuditCtx::new(ACTOR, None)
}

/// Disables `due` as an admin would, with `reason` in the audit event; answers the
/// recorded result. `token` is kept if the disable is refused (the last active admin).
async fn disable(
    core: &Core,
    due: &DueUser,
    reason: &str,
    token: TokenUpdate,
) -> Result<String, ServiceError> {
    let change = UserChange {
        disabled: Some(true),
        reason: Some(format!("identity provider re-check: {reason}")),
        ..Default::default()
    };
    let (result, token) = match update(core, ctx(), &due.user.id, change).await {
        Ok(_) => {
            tracing::warn!(user = %due.user.username, %reason, "disabled after the identity provider re-check; devices revoked, peers told");
            // the token of a disabled user is of no further use
            (format!("disabled: {reason}"), TokenUpdate::Clear)
        }
        Err(e) => {
            tracing::warn!(user = %due.user.username, %reason, error = %e, "the identity provider re-check would disable this user, but it was refused");
            (format!("not disabled ({e}): {reason}"), token)
        }
    };
    core.store
        .record_idp_check(&due.user.id, now_ms(), &result, token)
        .await?;
    Ok(result)
}

/// Applies what the provider said about `due`; answers the recorded result.
pub async fn apply(
    core: &Core,
    s: &RefreshSettings,
    due: &DueUser,
    answer: IdpAnswer,
) -> Result<String, ServiceError> {
    let u = &due.user;
    let store = &core.store;
    let (login, token) = match answer {
        IdpAnswer::Refused { reason } => {
            return disable(core, due, &reason, TokenUpdate::Clear).await
        }
        IdpAnswer::Failed { result, token } => {
            tracing::warn!(user = %u.username, %result, "identity provider re-check failed; user left as is");
            store
                .record_idp_check(&u.id, now_ms(), &result, token)
                .await?;
            return Ok(result);
        }
        IdpAnswer::NoToken { token } => {
            let result = "no refresh token".to_string();
            tracing::debug!(user = %u.username, "no refresh token to re-check with; the user must sign in again");
            store
                .record_idp_check(&u.id, now_ms(), &result, token)
                .await?;
            return Ok(result);
        }
        IdpAnswer::Active { login: None, token } => {
            let result = "ok (no ID token: groups not re-read)".to_string();
            store
                .record_idp_check(&u.id, now_ms(), &result, token)
                .await?;
            return Ok(result);
        }
        IdpAnswer::Active {
            login: Some(l),
            token,
        } => (l, token),
    };
    let role = match s.rules.role_for(login.email.as_deref(), &login.groups) {
        Ok(r) => r,
        Err(why) => return disable(core, due, why.as_str(), token).await,
    };
    let identity = SsoIdentity {
        issuer: login.issuer,
        subject: login.subject,
        email: login.email,
        display_name: login.display_name,
        groups: login.groups,
        role,
    };
    match store
        .acting(ctx())
        .idp_refresh_user(&u.id, &identity, token, now_ms())
        .await?
    {
        IdpRefreshed::Updated {
            user,
            result,
            bumped,
        } => {
            if result != "ok" {
                tracing::info!(user = %user.username, %result, groups = ?user.groups, role = user.role.as_str(), "identity provider re-check: user brought up to date");
            }
            for net in bumped {
                tracing::info!(user = %user.username, network = %net, "groups changed; peers told");
                core.publish_network(net).await;
            }
            Ok(result)
        }
        IdpRefreshed::Gone => Ok("gone".into()),
    }
}

/// One batch: claims the users due and checks each. Answers how many were claimed.
pub async fn check_due(
    core: &Core,
    s: &RefreshSettings,
    checker: &dyn IdpChecker,
) -> Result<usize, ServiceError> {
    let now = now_ms();
    let due_before = now.saturating_sub(i64::try_from(s.interval.as_millis()).unwrap_or(i64::MAX));
    let claimed = core
        .store
        .claim_idp_checks(&s.issuer, due_before, now, BATCH)
        .await?;
    for due in &claimed {
        let answer = match tokio::time::timeout(CHECK_TIMEOUT, checker.check(due)).await {
            Ok(a) => a,
            Err(_) => IdpAnswer::Failed {
                result: "unreachable: timed out".into(),
                token: TokenUpdate::Keep,
            },
        };
        if let Err(e) = apply(core, s, due, answer).await {
            tracing::warn!(user = %due.user.username, error = %e, "recording the identity provider re-check failed");
        }
    }
    Ok(claimed.len())
}

/// Runs until the task is dropped or aborted: looks for due users every
/// min(interval, 60 s), a bounded number of batches at a time.
pub async fn run(core: Core, s: RefreshSettings, checker: Arc<dyn IdpChecker>) {
    let mut tick = tokio::time::interval(s.interval.clamp(Duration::from_secs(1), MAX_TICK));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        for _ in 0..MAX_BATCHES {
            match check_due(&core, &s, &*checker).await {
                Ok(n) if n < BATCH as usize => break,
                Ok(_) if started.elapsed() > TICK_BUDGET => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "identity provider re-check failed; retrying");
                    break;
                }
            }
        }
    }
}
