//! Sign-in through an OpenID Provider, once the HTTP layer verified the ID token: the
//! console's rules decide the role (or refuse), the user is created or brought up to
//! date, and a session starts. Every outcome is audited: `auth.signin` (method `sso`)
//! or `auth.sso_refused` with the reason, whether the token was bad, the user outside
//! the allowed domains or groups, disabled, or without console access.

use zmesh_shared::time::now_ms;
use zmesh_shared::Secret;

use super::audit::record_refusal;
use super::sessions::start;
use super::{AuditCtx, Core, ServiceError};
use crate::domain::sso::SsoRules;
use crate::store::{Role, SealedToken, SsoIdentity, SsoOutcome, Store, UserRow};

/// What the verified ID token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogin {
    pub issuer: String,
    pub subject: String,
    /// Only a verified email (or one the IdP does not mark unverified).
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
}

/// How an SSO sign-in ended.
#[derive(Debug)]
pub enum SsoSignIn {
    /// Signed in to the console: the new session's id, for the cookie only.
    Ok { user: Box<UserRow>, session: Secret },
    /// Refused; `reason` is recorded and may be shown.
    Refused { reason: String },
}

/// Records a sign-in that failed before an identity was known (bad state, token
/// rejected, provider unreachable): `auth.sso_refused` with the reason.
pub async fn record_failure(store: &Store, source: Option<String>, reason: &str) {
    let ctx = AuditCtx::new("anonymous", source);
    record_refusal(
        store,
        ctx,
        "auth.sso_refused",
        serde_json::json!({ "reason": reason }),
    )
    .await;
}

/// Completes a sign-in whose ID token was verified. Members get a session only with
/// `allow_member` (to add a device of theirs); the console and API still refuse them.
pub async fn sign_in(
    core: &Core,
    rules: &SsoRules,
    login: VerifiedLogin,
    source: Option<String>,
    allow_member: bool,
) -> Result<SsoSignIn, ServiceError> {
    let store = &core.store;
    let who = login
        .email
        .clone()
        .unwrap_or_else(|| format!("{}#{}", login.issuer, login.subject));
    let refuse = |reason: String| {
        let ctx = AuditCtx::new(format!("sso:{who}"), source.clone());
        let detail = serde_json::json!({
            "reason": reason, "issuer": login.issuer, "subject": login.subject,
            "email": login.email, "groups": login.groups,
        });
        async move {
            record_refusal(store, ctx, "auth.sso_refused", detail).await;
            tracing::info!(%reason, "SSO sign-in refused");
            Ok(SsoSignIn::Refused { reason })
        }
    };
    let role = match rules.role_for(login.email.as_deref(), &login.groups) {
        Ok(r) => r,
        Err(why) => return refuse(why.as_str().to_string()).await,
    };
    let identity = SsoIdentity {
        issuer: login.issuer.clone(),
        subject: login.subject.clone(),
        email: login.email.clone(),
        display_name: login.display_name.clone(),
        groups: login.groups.clone(),
        role,
    };
    let ctx = AuditCtx::new(format!("sso:{who}"), source.clone());
    let user = match store
        .acting(ctx)
        .sso_sign_in_user(&identity, now_ms())
        .await?
    {
        SsoOutcome::Ready(u, bumped) => {
            for net in bumped {
                tracing::info!(user = %u.username, network = %net, "groups changed; peers told");
                core.publish_network(net).await;
            }
            u
        }
        SsoOutcome::Disabled(_) => return refuse("user disabled".into()).await,
        SsoOutcome::NameTaken(name) => {
            return refuse(format!("the username {name} belongs to another account")).await
        }
    };
    if user.role == Role::Member && !allow_member {
        // Recorded as a user (devices will be theirs), but the console is for admins
        // and auditors.
        return refuse("no console access (member)".into()).await;
    }
    let session = start(store, &user, source, "sso").await?;
    tracing::info!(user = %user.username, role = user.role.as_str(), "signed in through SSO");
    Ok(SsoSignIn::Ok {
        user: Box::new(user),
        session,
    })
}

/// Keeps the (sealed) refresh token of a sign-in for the IdP re-check
/// ([`super::idp_refresh`]); the sign-in counts as a check. A failure is logged, not
/// fatal: the user is then re-checked with their previous token, or not at all.
pub async fn keep_refresh_token(store: &Store, user: &UserRow, token: &SealedToken) {
    if let Err(e) = store.set_refresh_token(&user.id, token, now_ms()).await {
        tracing::warn!(user = %user.username, error = %e, "could not keep the refresh token");
    }
}
