//! Which network a request acts in, resolved once per request.
//!
//! Network-scoped routes ([`network_scoped`]: devices, enrollment keys, policy, DNS,
//! routes, changes) take `?network=NAME`; without it, the caller's own network if its
//! account or token is scoped to one, else the first network ("default"). The
//! [`Scoped`] extractor resolves it into an [`AppState`] whose core acts in that
//! network (`state.network_id`), and marks the request's [`AuditCtx`] with it, so every
//! event the handler records names the network.
//!
//! A principal scoped to one network that names another gets the same 404 as for a
//! network that does not exist (it cannot learn names), and an `auth.forbidden` event.
//! Console-wide routes ([`console_wide`]) refuse scoped principals with 403.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{Method, Uri};
use zmesh_shared::NetworkId;

use super::error::ApiError;
use super::principal::Principal;
use super::state::AppState;
use crate::service::audit::record_refusal;
use crate::store::{AuditCtx, Network};

/// The query parameter naming the network.
pub const PARAM: &str = "network";

/// Whether a route (its template or a concrete path) acts inside one network.
pub fn network_scoped(path: &str) -> bool {
    const SCOPED: [&str; 6] = [
        "/api/v1/devices",
        "/api/v1/enroll-keys",
        "/api/v1/policy",
        "/api/v1/dns",
        "/api/v1/routes",
        "/api/v1/changes",
    ];
    SCOPED
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// Whether a call concerns the whole console (accounts, tokens, the whole audit chain,
/// the access log, creating or changing networks): refused to scoped principals.
pub fn console_wide(method: &Method, path: &str) -> bool {
    let under = |p: &str| path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'));
    under("/api/v1/users")
        || under("/api/v1/tokens")
        || under("/api/v1/flows")
        || under("/api/v1/audit/access")
        || under("/api/v1/audit/evidence")
        || under("/api/v1/audit/checkpoints")
        || under("/api/v1/audit/verify")
        || (under("/api/v1/networks") && *method != Method::GET)
}

/// The value of `network` in a request's query string, percent-decoded.
pub fn asked(uri: &Uri) -> Option<String> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .ok()?
        .0
        .remove(PARAM)
}

/// 404 naming the network, the same whether it does not exist or is not the caller's.
fn no_network(name: &str) -> ApiError {
    ApiError::NoNetwork(name.chars().take(63).collect())
}

/// The network a request acts in: `asked` by name, else the principal's own, else the
/// first. A scoped principal asking for another network is refused as if it did not
/// exist (and the refusal is audited).
pub async fn resolve(
    state: &AppState,
    principal: Option<&Principal>,
    ctx: Option<&AuditCtx>,
    asked: Option<&str>,
) -> Result<Network, ApiError> {
    let own = principal.and_then(Principal::network);
    let Some(name) = asked else {
        let id = own.unwrap_or(state.default_network_id);
        return Ok(state.store.get_network(id).await?);
    };
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ApiError::invalid(
            PARAM,
            "a network name (a lower-case DNS label)",
        ));
    }
    let net = state.store.network_by_name(name).await?;
    match (net, own) {
        (Some(n), Some(o)) if n.id != o => {
            refuse(state, principal, ctx, name).await;
            Err(no_network(name))
        }
        (Some(n), _) => Ok(n),
        (None, _) => Err(no_network(name)),
    }
}

async fn refuse(state: &AppState, p: Option<&Principal>, ctx: Option<&AuditCtx>, name: &str) {
    let ctx = ctx
        .cloned()
        .unwrap_or_else(|| AuditCtx::new(p.map_or("anonymous".into(), Principal::actor), None));
    let d = serde_json::json!({
        "network": name,
        "reason": "the account is scoped to another network",
    });
    record_refusal(&state.store, ctx, "auth.forbidden", d).await;
}

/// The network a request was resolved into (kept in the request's extensions).
#[derive(Debug, Clone, Copy)]
pub struct InNetwork(pub NetworkId);

/// Extractor: the state acting in the request's network (see the module docs). Put it
/// before `Extension<AuditCtx>` in a handler's arguments, so the context it marks is
/// the one the handler gets.
pub struct Scoped(pub AppState);

impl FromRequestParts<AppState> for Scoped {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(InNetwork(id)) = parts.extensions.get::<InNetwork>() {
            return Ok(Scoped(state.in_network(*id)));
        }
        let name = asked(&parts.uri);
        let net = resolve(
            state,
            parts.extensions.get::<Principal>(),
            parts.extensions.get::<AuditCtx>(),
            name.as_deref(),
        )
        .await?;
        if let Some(ctx) = parts.extensions.get_mut::<AuditCtx>() {
            ctx.network = Some(net.id);
        }
        parts.extensions.insert(InNetwork(net.id));
        Ok(Scoped(state.in_network(net.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_and_console_wide_paths() {
        assert!(network_scoped("/api/v1/devices"));
        assert!(network_scoped("/api/v1/devices/{id}/approve"));
        assert!(network_scoped("/api/v1/policy/check"));
        assert!(!network_scoped("/api/v1/devicesx"));
        assert!(!network_scoped("/api/v1/audit/events"));
        assert!(console_wide(&Method::GET, "/api/v1/users"));
        assert!(console_wide(&Method::POST, "/api/v1/tokens/x/revoke"));
        assert!(console_wide(&Method::POST, "/api/v1/networks"));
        assert!(console_wide(&Method::PATCH, "/api/v1/networks/lab"));
        assert!(!console_wide(&Method::GET, "/api/v1/networks"));
        assert!(!console_wide(&Method::GET, "/api/v1/audit/events"));
        assert!(!console_wide(&Method::GET, "/api/v1/whoami"));
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(asked(&uri("/x?a=1&network=lab")).as_deref(), Some("lab"));
        assert_eq!(asked(&uri("/x?a=1")), None);
        assert_eq!(asked(&uri("/x")), None);
    }
}
