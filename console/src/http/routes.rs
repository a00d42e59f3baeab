//! The route table's vocabulary: who may call a route ([`Access`]), one documented,
//! registered route ([`RouteDef`]) and how its bodies are documented ([`Content`], from
//! the Rust types' `utoipa::ToSchema`). Each surface (`api`, `agent_api`) lists its
//! routes; [`crate::http::routes`] puts them together, and both the router and the
//! OpenAPI document (`http/openapi.rs`) are built from that one list.

use axum::http::Method;
use axum::routing::MethodRouter;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, ToSchema};
use zmesh_shared::wire::ErrorBody;

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
    /// The request body, if any, documented from its Rust type.
    pub request: Option<Content>,
    /// Query parameters, documented from a type deriving `utoipa::IntoParams`.
    pub query: Option<ParamsFn>,
    /// Every response the route can give: (status, body, description).
    pub responses: Vec<Resp>,
    pub handler: fn() -> MethodRouter<AppState>,
}

/// Named schemas collected while the document is built.
pub type Schemas = Vec<(String, RefOr<Schema>)>;
/// Registers a type's schema (and those it refers to); returns a reference to it.
pub type SchemaFn = fn(&mut Schemas) -> RefOr<Schema>;
/// Query parameters of an operation, from a type deriving `IntoParams`.
pub type ParamsFn = fn() -> Vec<utoipa::openapi::path::Parameter>;

/// A request or response body as documented.
#[derive(Clone, Copy)]
pub enum Content {
    /// No body.
    Empty,
    /// `application/json` of this type.
    Json(SchemaFn),
    /// `application/json` of this type, or the same text as `text/plain`.
    JsonOrText(SchemaFn),
    /// Text in one of these media types: (media type, description).
    Text(&'static [(&'static str, &'static str)]),
}

/// One documented response: status, body, description.
pub type Resp = (u16, Content, &'static str);

pub fn component<T: ToSchema>(s: &mut Schemas) -> RefOr<Schema> {
    T::schemas(s);
    s.push((T::name().into_owned(), T::schema()));
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// A JSON body of type `T`.
pub const fn body<T: ToSchema>() -> Content {
    Content::Json(component::<T>)
}

/// Query parameters described by `T`.
pub fn query<T: IntoParams>() -> Vec<utoipa::openapi::path::Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

/// `ErrorBody`, the body of every error.
pub const ERR: Content = body::<ErrorBody>();

pub const E401: Resp = (401, ERR, "missing or unknown bearer token");
pub const E403: Resp = (403, ERR, "auditor token used for a write");
pub const E404: Resp = (404, ERR, "no such object");
pub const E422: Resp = (422, ERR, "invalid field; `field` names it");
pub const E400: Resp = (
    400,
    ERR,
    "malformed JSON, missing body or body over the size limit",
);
pub const E409: Resp = (
    409,
    ERR,
    "conflicts with existing state (name or key taken)",
);
pub const E415: Resp = (415, ERR, "the body is not of a documented media type");
