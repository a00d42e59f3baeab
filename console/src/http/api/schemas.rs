//! Documentation-only schemas of the REST API: the policy routes' bodies (JSON or text,
//! and their two kinds of 422) and the query parameters of the audit and flow routes.

use serde::Serialize;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use zmesh_shared::wire::ErrorBody;

use super::policy::PolicyRejected;
use crate::http::routes::{component, Content, Schemas};

/// 422 of the policy routes: a refused policy (every reason with its line and
/// column) or, for input that is not a policy at all, a plain `ErrorBody`.
pub struct PolicyUnprocessable;

impl PartialSchema for PolicyUnprocessable {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(PolicyRejected::name()))
            .item(Ref::from_schema_name(ErrorBody::name()))
            .into()
    }
}

impl ToSchema for PolicyUnprocessable {
    fn schemas(s: &mut Schemas) {
        component::<PolicyRejected>(s);
        component::<ErrorBody>(s);
    }
}

/// `application/json` or `text/plain` policy text (`PUT /policy`, `POST /policy/diff`).
pub const POLICY_TEXT: Content = Content::JsonOrText(component::<PolicyText>);

/// A policy sent as JSON: the policy document itself, or `{"policy": "<text>"}`.
#[derive(Serialize, ToSchema)]
pub struct PolicyWrapper {
    /// The policy text (docs/policy.md).
    pub policy: String,
}

pub struct PolicyText;

impl PartialSchema for PolicyText {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(PolicyWrapper::name()))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some("the policy document itself (docs/policy.md)")),
            )
            .into()
    }
}

impl ToSchema for PolicyText {
    fn schemas(s: &mut Schemas) {
        component::<PolicyWrapper>(s);
    }
}

/// Query of `GET /api/v1/audit/events` (any other parameter is refused with 422).
#[derive(IntoParams)]
#[allow(dead_code)] // documentation only: the handler reads a map and checks the names
pub struct AuditEventsQuery {
    /// `jsonl` (default), `csv` or `cef`.
    format: Option<String>,
    /// Unix milliseconds or RFC 3339; events at or after.
    since: Option<String>,
    /// Unix milliseconds or RFC 3339; events before.
    until: Option<String>,
    /// Exact actor, e.g. `admin:ops`.
    actor: Option<String>,
    /// Device id or name: events by or about it.
    device: Option<String>,
    /// Exact action (`device.revoke`) or a prefix ending in '.' (`device.`).
    action: Option<String>,
    /// Only events recorded inside this network (by name); a caller scoped to a
    /// network always gets its own network's events only.
    network: Option<String>,
}

/// Query of `GET /api/v1/flows` (any other parameter is refused with 422).
#[derive(IntoParams)]
#[allow(dead_code)] // documentation only: the handler reads a map and checks the names
pub struct FlowsQuery {
    /// Unix milliseconds or RFC 3339.
    since: Option<String>,
    /// Unix milliseconds or RFC 3339.
    until: Option<String>,
    /// Device id or name: flows from or to it.
    device: Option<String>,
    /// A user's email or username: flows from or to that user's devices.
    user: Option<String>,
    /// `accepted` or `denied`.
    verdict: Option<String>,
    /// `true`: only flows the other end did not report.
    one_sided: Option<bool>,
    /// Access record sequence number to continue after (`next_after` of the previous page).
    after: Option<u64>,
    /// 1 to 10000, default 1000.
    limit: Option<u32>,
}

/// Query of `GET /api/v1/audit/access` (any other parameter is refused with 422).
#[derive(IntoParams)]
#[allow(dead_code)] // documentation only: the handler reads a map and checks the names
pub struct AuditAccessQuery {
    /// `jsonl` (default), `csv` or `cef`.
    format: Option<String>,
    /// Unix milliseconds or RFC 3339; flows seen at or after.
    since: Option<String>,
    /// Unix milliseconds or RFC 3339; flows that began before.
    until: Option<String>,
    /// Device id or name: flows from or to it.
    device: Option<String>,
    /// A user's email or username: flows from or to that user's devices.
    user: Option<String>,
    /// `accepted` or `denied`.
    verdict: Option<String>,
    /// `true`: only flows the other end did not report.
    one_sided: Option<bool>,
}

/// Query of `GET /api/v1/audit/evidence` (any other parameter is refused with 422).
#[derive(IntoParams)]
#[allow(dead_code)] // documentation only: the handler reads a map and checks the names
pub struct EvidenceQuery {
    /// Unix milliseconds or RFC 3339: the window's start (required).
    since: String,
    /// Unix milliseconds or RFC 3339: the window's end, exclusive (required).
    until: String,
}
