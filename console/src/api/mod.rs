//! The console's HTTP surface: ONE route table ([`routes`]) that both registers every
//! handler in [`app`] and generates the OpenAPI document (`api/openapi.rs`), so the
//! two cannot drift apart.

pub mod audit;
pub mod auth;
pub mod devices;
pub mod enroll_keys;
pub mod json;
pub mod openapi;
pub mod path;
pub mod policy;
pub mod tokens;
pub mod types;
pub mod users;

use std::collections::BTreeMap;

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::Router;

use zmesh_shared::audit::Checkpoint;
use zmesh_shared::wire::{EnrollRequest, EnrollResponse};

use crate::agent_api;
use crate::audit::verify::VerifyReport;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{AdminTokenRow, DeviceRow, EnrollKeyRow, PolicyVersion, UserRow};
use openapi::{body, Content, PolicyUnprocessable, Resp, ERR, POLICY_TEXT};

pub use json::ApiJson;

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
    /// The request body, if any, documented from its Rust type.
    pub request: Option<Content>,
    /// Query parameters, documented from a type deriving `utoipa::IntoParams`.
    pub query: Option<openapi::ParamsFn>,
    /// Every response the route can give: (status, body, description).
    pub responses: Vec<Resp>,
    pub handler: fn() -> MethodRouter<AppState>,
}

const E401: Resp = (401, ERR, "missing or unknown bearer token");
const E403: Resp = (403, ERR, "auditor token used for a write");
const E404: Resp = (404, ERR, "no such object");
const E422: Resp = (422, ERR, "invalid field; `field` names it");
const E400: Resp = (
    400,
    ERR,
    "malformed JSON, missing body or body over the size limit",
);
const E409: Resp = (
    409,
    ERR,
    "conflicts with existing state (name or key taken)",
);
const E415: Resp = (415, ERR, "the body is not of a documented media type");
/// The policy routes refuse a policy with every reason, each with its line and column.
const E422_POLICY: (u16, Content) = (422, body::<PolicyUnprocessable>());
/// The media types of the audit export.
const EXPORT: Content = Content::Text(&[
    ("application/x-ndjson", "header line, event lines, end line"),
    (
        "text/csv",
        "RFC 4180; cells starting with = + - @ ' TAB CR carry one extra leading '",
    ),
    ("text/plain", "CEF, one line per checkpoint and event"),
]);
const WG_QUICK: Content = Content::Text(&[("text/plain", "wg-quick configuration")]);

/// Every route the console serves.
pub fn routes() -> Vec<RouteDef> {
    use Access::*;
    vec![
        RouteDef {
            method: Method::GET,
            path: "/api/v1/openapi.json",
            operation_id: "getOpenApi",
            summary: "This OpenAPI 3.1 document",
            tag: "meta",
            access: Public,
            request: None,
            query: None,
            responses: vec![(200, body::<openapi::OpenApiDocument>(), "OpenAPI document")],
            handler: || get(openapi::get_document),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/enroll-keys",
            operation_id: "createEnrollKey",
            summary: "Create an enrollment key; the key text is returned only here",
            tag: "enroll-keys",
            access: Admin,
            request: Some(body::<types::CreateEnrollKey>()),
            query: None,
            responses: vec![(201, body::<types::EnrollKeyCreated>(), "created"), E400,
                E415, E401, E403, E422],
            handler: || post(enroll_keys::create),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/enroll-keys",
            operation_id: "listEnrollKeys",
            summary: "List enrollment keys (never their secrets)",
            tag: "enroll-keys",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<types::EnrollKeyList>(), "the keys"), E401],
            handler: || get(enroll_keys::list),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/enroll-keys/{id}",
            operation_id: "getEnrollKey",
            summary: "One enrollment key",
            tag: "enroll-keys",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<EnrollKeyRow>(), "the key"), E401, E404, E422],
            handler: || get(enroll_keys::get_one),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/enroll-keys/{id}/revoke",
            operation_id: "revokeEnrollKey",
            summary: "Revoke an enrollment key; devices enrolled with it stay",
            tag: "enroll-keys",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<EnrollKeyRow>(), "revoked"), E401, E403, E404, E422],
            handler: || post(enroll_keys::revoke),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/devices",
            operation_id: "listDevices",
            summary: "List devices",
            tag: "devices",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<types::DeviceList>(), "the devices"), E401],
            handler: || get(devices::list),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/devices",
            operation_id: "addAgentlessDevice",
            summary: "Register an agentless (stock WireGuard) device by its public key",
            tag: "devices",
            access: Admin,
            request: Some(body::<types::AddDevice>()),
            query: None,
            responses: vec![(201, body::<DeviceRow>(), "created"), E400,
                E415, E401, E403, E409, E422],
            handler: || post(devices::add),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/devices/{id}",
            operation_id: "getDevice",
            summary: "One device, by id or name",
            tag: "devices",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<DeviceRow>(), "the device"), E401, E404, E422],
            handler: || get(devices::get_one),
        },
        RouteDef {
            method: Method::PATCH,
            path: "/api/v1/devices/{id}",
            operation_id: "updateDevice",
            summary: "Rename a device, set its tags or key expiry",
            tag: "devices",
            access: Admin,
            request: Some(body::<types::PatchDevice>()),
            query: None,
            responses: vec![
                (200, body::<DeviceRow>(), "updated"),
                E400,
                E415,
                E401,
                E403,
                E404,
                E409,
                E422,
            ],
            handler: || patch(devices::update),
        },
        RouteDef {
            method: Method::DELETE,
            path: "/api/v1/devices/{id}",
            operation_id: "deleteDevice",
            summary: "Delete a device; its stream is closed and peers drop it",
            tag: "devices",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(204, Content::Empty, "deleted"), E401, E403, E404, E422],
            handler: || delete(devices::remove),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/devices/{id}/approve",
            operation_id: "approveDevice",
            summary: "Approve a pending device",
            tag: "devices",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<DeviceRow>(), "approved"), E401, E403, E404, E422],
            handler: || post(devices::approve),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/devices/{id}/revoke",
            operation_id: "revokeDevice",
            summary: "Revoke a device: its credential dies at once and peers drop it",
            tag: "devices",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<DeviceRow>(), "revoked"), E401, E403, E404, E422],
            handler: || post(devices::revoke),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/devices/{id}/wireguard-config",
            operation_id: "exportWireguardConfig",
            summary: "wg-quick configuration for an agentless device (text/plain)",
            tag: "devices",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, WG_QUICK, "wg-quick config"), E401, E404, E409, E422],
            handler: || get(devices::wireguard_config),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/policy",
            operation_id: "getPolicy",
            summary: "The access policy in force (version 0 is the built-in allow-all default)",
            tag: "policy",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<PolicyVersion>(), "the policy in force"), E401],
            handler: || get(policy::get_current),
        },
        RouteDef {
            method: Method::PUT,
            path: "/api/v1/policy",
            operation_id: "putPolicy",
            summary: "Save a new policy; validated against the live inventory, all or nothing",
            tag: "policy",
            access: Admin,
            request: Some(POLICY_TEXT),
            query: None,
            responses: vec![
                (200, body::<policy::Saved>(), "saved; the network revision was bumped"),
                E400,
                E415,
                E401,
                E403,
                (
                    E422_POLICY.0,
                    E422_POLICY.1,
                    "rejected with every reason; nothing changed",
                ),
            ],
            handler: || put(policy::put).layer(DefaultBodyLimit::max(policy::MAX_POLICY_BYTES)),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/policy/check",
            operation_id: "checkPolicy",
            summary: "May SRC reach DST on PROTO/PORT under the policy in force, and by which rule",
            tag: "policy",
            access: Reader,
            request: Some(body::<policy::CheckRequest>()),
            query: None,
            responses: vec![(200, body::<policy::CheckResult>(), "the answer"), E400,
                E415, E401, E422],
            handler: || post(policy::check),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/policy/diff",
            operation_id: "diffPolicy",
            summary: "Every (src, dst, proto, ports) edge a proposed policy adds or removes",
            tag: "policy",
            access: Reader,
            request: Some(POLICY_TEXT),
            query: None,
            responses: vec![
                (200, body::<policy::DiffResult>(), "the edge changes"),
                E400,
                E415,
                E401,
                (422, body::<PolicyUnprocessable>(), "the proposal is invalid"),
            ],
            handler: || post(policy::diff).layer(DefaultBodyLimit::max(policy::MAX_POLICY_BYTES)),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/policy/history",
            operation_id: "policyHistory",
            summary: "Every policy version, newest first (without texts)",
            tag: "policy",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<policy::History>(), "the versions"), E401],
            handler: || get(policy::history),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/policy/versions/{version}",
            operation_id: "getPolicyVersion",
            summary: "One policy version with its text",
            tag: "policy",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<PolicyVersion>(), "the version"), E401, E404, E422],
            handler: || get(policy::get_version),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/policy/rollback",
            operation_id: "rollbackPolicy",
            summary: "Save a copy of an old version as the new current version",
            tag: "policy",
            access: Admin,
            request: Some(body::<policy::RollbackRequest>()),
            query: None,
            responses: vec![
                (200, body::<policy::Saved>(), "saved; the network revision was bumped"),
                E400,
                E415,
                E401,
                E403,
                (
                    E422_POLICY.0,
                    E422_POLICY.1,
                    "unknown version, or the old policy no longer validates",
                ),
            ],
            handler: || post(policy::rollback),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/audit/events",
            operation_id: "exportAuditEvents",
            summary: "Stream the audit log (format=jsonl|csv|cef; since, until, actor, device, action) with chain fields and checkpoints",
            tag: "audit",
            access: Admin,
            request: None,
            query: Some(openapi::query::<openapi::AuditEventsQuery>),
            responses: vec![(200, EXPORT, "the export, streamed"), E401, E404, E422],
            handler: || get(audit::events),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/audit/checkpoints",
            operation_id: "listAuditCheckpoints",
            summary: "The chain head, the pruning anchor and every signed checkpoint",
            tag: "audit",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<types::AuditCheckpoints>(), "head, anchor and checkpoints"), E401],
            handler: || get(audit::checkpoints),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/audit/checkpoints",
            operation_id: "signAuditCheckpoint",
            summary: "Sign a checkpoint of the current chain head now",
            tag: "audit",
            access: Admin,
            request: None,
            query: None,
            responses: vec![
                (201, body::<Checkpoint>(), "signed"),
                (204, Content::Empty, "nothing new to sign"),
                E401,
                E403,
            ],
            handler: || post(audit::sign_checkpoint),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/audit/verify",
            operation_id: "verifyAuditChain",
            summary: "Verify the whole chain against its signed checkpoints; names the first bad sequence number",
            tag: "audit",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<VerifyReport>(), "the verdict (ok false names first_bad_seq)"), E401],
            handler: || get(audit::verify_chain),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/flows",
            operation_id: "listFlows",
            summary: "Flow records reported by agents (since, until, device, verdict, one_sided, after, limit)",
            tag: "audit",
            access: Admin,
            request: None,
            query: Some(openapi::query::<openapi::FlowsQuery>),
            responses: vec![(200, body::<types::FlowList>(), "one page of flow records"), E401, E404, E422],
            handler: || get(audit::flows),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/tokens",
            operation_id: "createToken",
            summary: "Create an admin or auditor API token; the token text is returned only here",
            tag: "tokens",
            access: Admin,
            request: Some(body::<tokens::CreateToken>()),
            query: None,
            responses: vec![(201, body::<tokens::TokenCreated>(), "created"), E400,
                E415, E401, E403, E422],
            handler: || post(tokens::create),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/tokens",
            operation_id: "listTokens",
            summary: "List API tokens (never their secrets)",
            tag: "tokens",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<types::TokenList>(), "the tokens"), E401],
            handler: || get(tokens::list),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/tokens/{id}/revoke",
            operation_id: "revokeToken",
            summary: "Revoke an API token",
            tag: "tokens",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<AdminTokenRow>(), "revoked"), E401, E403, E404, E422],
            handler: || post(tokens::revoke),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/whoami",
            operation_id: "whoami",
            summary: "Who the caller is: token or signed-in user, name and role",
            tag: "users",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<types::WhoAmI>(), "the caller"), E401],
            handler: || get(users::whoami),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/users",
            operation_id: "listUsers",
            summary: "List console users (never their password hashes)",
            tag: "users",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<types::UserList>(), "the users"), E401],
            handler: || get(users::list),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/users",
            operation_id: "createUser",
            summary: "Create an admin or auditor user with a password (hashed with Argon2id)",
            tag: "users",
            access: Admin,
            request: Some(body::<users::CreateUser>()),
            query: None,
            responses: vec![(201, body::<UserRow>(), "created"), E400,
                E415, E401, E403, E409, E422],
            handler: || post(users::create),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/users/{id}",
            operation_id: "getUser",
            summary: "One user",
            tag: "users",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<UserRow>(), "the user"), E401, E404, E422],
            handler: || get(users::get_one),
        },
        RouteDef {
            method: Method::PATCH,
            path: "/api/v1/users/{id}",
            operation_id: "updateUser",
            summary: "Change a user's role, password (ends their sessions) or disabled state (also revokes their tokens)",
            tag: "users",
            access: Admin,
            request: Some(body::<users::PatchUser>()),
            query: None,
            responses: vec![(200, body::<UserRow>(), "updated"), E400,
                E415, E401, E403, E404, E422],
            handler: || patch(users::update),
        },
        RouteDef {
            method: Method::DELETE,
            path: "/api/v1/users/{id}",
            operation_id: "deleteUser",
            summary: "Delete a user: sessions end, personal tokens are revoked (not the last admin)",
            tag: "users",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(204, Content::Empty, "deleted"), E401, E403, E404, E422],
            handler: || delete(users::remove),
        },
        RouteDef {
            method: Method::GET,
            path: "/api/v1/users/{id}/tokens",
            operation_id: "listUserTokens",
            summary: "A user's personal API tokens",
            tag: "users",
            access: Admin,
            request: None,
            query: None,
            responses: vec![(200, body::<types::UserTokenList>(), "the tokens"), E401, E404, E422],
            handler: || get(users::list_tokens),
        },
        RouteDef {
            method: Method::POST,
            path: "/api/v1/users/{id}/tokens",
            operation_id: "createUserToken",
            summary: "Create a personal API token (zmp_…) carrying the user's role; the text is returned only here",
            tag: "users",
            access: Admin,
            request: Some(body::<users::CreatePersonalToken>()),
            query: None,
            responses: vec![(201, body::<users::PersonalTokenCreated>(), "created"), E400,
                E415, E401, E403, E404, E422],
            handler: || post(users::create_token),
        },
        RouteDef {
            method: Method::POST,
            path: zmesh_shared::wire::ENROLL_PATH,
            operation_id: "enrollDevice",
            summary: "Agent enrollment with an enrollment key",
            tag: "agent",
            access: EnrollKey,
            request: Some(body::<EnrollRequest>()),
            query: None,
            responses: vec![
                (
                    200,
                    body::<EnrollResponse>(),
                    "enrolled; the credential is returned only here",
                ),
                E400,
                E415,
                (401, ERR, "unknown enrollment key"),
                (
                    403,
                    ERR,
                    "key expired, used or revoked (`code` says which)",
                ),
                E409,
                E422,
            ],
            handler: || post(agent_api::enroll::enroll),
        },
        RouteDef {
            method: Method::GET,
            path: zmesh_shared::wire::STREAM_PATH,
            operation_id: "agentStream",
            summary: "Agent control stream (WebSocket upgrade; JSON ServerMsg/ClientMsg frames)",
            tag: "agent",
            access: Device,
            request: None,
            query: None,
            responses: vec![
                (101, Content::Empty, "switching to WebSocket"),
                (400, ERR, "not a WebSocket upgrade"),
                E401,
            ],
            handler: || get(agent_api::stream::stream),
        },
    ]
}

/// The whole application, every route from [`routes`].
pub fn app(state: AppState) -> Router {
    let mut by_path: BTreeMap<&'static str, (Access, MethodRouter<AppState>)> = BTreeMap::new();
    for r in routes() {
        let mr = (r.handler)();
        match by_path.remove(r.path) {
            Some((access, prev)) => {
                assert_eq!(
                    access, r.access,
                    "one path must have one access kind: {}",
                    r.path
                );
                by_path.insert(r.path, (access, prev.merge(mr)));
            }
            None => {
                by_path.insert(r.path, (r.access, mr));
            }
        }
    }
    let mut admin = Router::new();
    let mut reader = Router::new();
    let mut other = Router::new();
    for (path, (access, mr)) in by_path {
        let mr = mr.fallback(|| async { ApiError::MethodNotAllowed });
        match access {
            Access::Admin => admin = admin.route(path, mr),
            Access::Reader => reader = reader.route(path, mr),
            _ => other = other.route(path, mr),
        }
    }
    let admin = admin.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_admin,
    ));
    let reader = reader.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_reader,
    ));
    other
        .merge(admin)
        .merge(reader)
        .merge(crate::web::router(state.clone()))
        .fallback(|| async { ApiError::NotFound { what: "route" } })
        .layer(DefaultBodyLimit::max(json::MAX_BODY))
        .with_state(state)
}
