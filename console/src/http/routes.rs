//! The route table's vocabulary: who may call a route ([`Access`]) and one documented,
//! registered route ([`RouteDef`]). Each surface (`api`, `agent_api`) lists its routes;
//! [`crate::http::routes`] puts them together, and both the router and the OpenAPI
//! document are built from that one list, so they cannot drift apart.

use axum::http::Method;
use axum::routing::MethodRouter;

use super::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// `Authorization: Bearer <admin token>`; auditors may only read.
    Admin,
    /// An admin or auditor token, whatever the method: the call changes nothing.
    Reader,
    /// `Authorization: Bearer <device credential>` (checked by the handler).
    Device,
    /// An enrollment key in the body.
    EnrollKey,
}

/// One documented, registered route.
pub struct RouteDef {
    pub method: Method,
    /// axum 0.8 path syntax, which is also OpenAPI's (`/devices/{id}`).
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub access: Access,
    /// Schema name in `components.schemas` of the JSON request body, if any.
    pub request: Option<&'static str>,
    /// (status, schema name or "" for none/non-JSON, description)
    pub responses: &'static [(u16, &'static str, &'static str)],
    pub handler: fn() -> MethodRouter<AppState>,
}

pub const E401: (u16, &str, &str) = (401, "ErrorBody", "missing or unknown bearer token");
pub const E403: (u16, &str, &str) = (403, "ErrorBody", "auditor token used for a write");
pub const E404: (u16, &str, &str) = (404, "ErrorBody", "no such object");
pub const E422: (u16, &str, &str) = (422, "ErrorBody", "invalid field; `field` names it");
pub const E400: (u16, &str, &str) = (400, "ErrorBody", "malformed JSON or missing body");
pub const E409: (u16, &str, &str) = (
    409,
    "ErrorBody",
    "conflicts with existing state (name or key taken)",
);
