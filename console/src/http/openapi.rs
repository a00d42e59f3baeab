//! The OpenAPI 3.1 document, built from the route table ([`crate::http::routes`]) and
//! the Rust types of the bodies (their `utoipa::ToSchema` derives): nothing here names a
//! field. Serves it at `GET /api/v1/openapi.json` (its own route, listed here).

use axum::http::Method;
use axum::routing::get;
use axum::Json;
use serde_json::Value;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, HttpMethod, InfoBuilder, OpenApiBuilder, Paths, RefOr, Required,
    ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use super::routes::{body, Access, Content, RouteDef, Schemas};

/// The document's own route.
pub fn routes() -> Vec<RouteDef> {
    vec![RouteDef {
        method: Method::GET,
        path: "/api/v1/openapi.json",
        operation_id: "getOpenApi",
        summary: "This OpenAPI 3.1 document",
        tag: "meta",
        access: Access::Public,
        request: None,
        query: None,
        responses: vec![(200, body::<OpenApiDocument>(), "OpenAPI document")],
        handler: || get(get_document),
    }]
}

/// This document: an OpenAPI 3.1 object.
pub struct OpenApiDocument;

impl PartialSchema for OpenApiDocument {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .required("openapi")
            .required("paths")
            .description(Some("OpenAPI 3.1 document"))
            .into()
    }
}

impl ToSchema for OpenApiDocument {}

pub async fn get_document() -> Json<Value> {
    Json(document())
}

fn http_method(m: &Method) -> HttpMethod {
    match *m {
        Method::GET => HttpMethod::Get,
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        Method::HEAD => HttpMethod::Head,
        Method::OPTIONS => HttpMethod::Options,
        _ => HttpMethod::Trace,
    }
}

fn content(c: Content, s: &mut Schemas) -> Vec<(&'static str, utoipa::openapi::Content)> {
    let schema = |r: RefOr<Schema>| ContentBuilder::new().schema(Some(r)).build();
    let text = || ObjectBuilder::new().schema_type(Type::String);
    match c {
        Content::Empty => vec![],
        Content::Json(f) => vec![("application/json", schema(f(s)))],
        Content::JsonOrText(f) => vec![
            ("application/json", schema(f(s))),
            ("text/plain", schema(text().into())),
        ],
        Content::Text(types) => types
            .iter()
            .map(|(media, desc)| (*media, schema(text().description(Some(*desc)).into())))
            .collect(),
    }
}

pub fn document() -> Value {
    let mut schemas = Schemas::new();
    let mut paths = Paths::new();
    for r in super::routes() {
        let mut op = OperationBuilder::new()
            .operation_id(Some(r.operation_id))
            .summary(Some(r.summary))
            .tag(r.tag);
        op = match r.access {
            Access::Admin | Access::Reader => {
                op.security(SecurityRequirement::new("adminToken", Vec::<String>::new()))
            }
            Access::Device => op.security(SecurityRequirement::new(
                "deviceCredential",
                Vec::<String>::new(),
            )),
            Access::Public | Access::EnrollKey => op.securities(Some(vec![])),
        };
        for p in path_params(r.path) {
            let desc = if r.path.starts_with("/api/v1/devices") {
                "device id (dev_…) or name"
            } else if p == "version" {
                "policy version number"
            } else {
                "id"
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(p)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(desc))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if let Some(q) = r.query {
            op = op.parameters(Some(q()));
        }
        let scoped = super::scope::network_scoped(r.path);
        if scoped {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(super::scope::PARAM)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .description(Some(
                        "the network to act in, by name (default: the caller's own network \
                         if its account or token is scoped to one, else the first network, \
                         \"default\")",
                    ))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if let Some(req) = r.request {
            let mut b = RequestBodyBuilder::new().required(Some(Required::True));
            for (media, c) in content(req, &mut schemas) {
                b = b.content(media, c);
            }
            op = op.request_body(Some(b.build()));
        }
        let mut responses = r.responses.clone();
        if super::scope::console_wide(&r.method, r.path)
            && !responses.iter().any(|(s, ..)| *s == 403)
        {
            responses.push((
                403,
                super::routes::ERR,
                "the caller's account or token is scoped to one network",
            ));
        }
        if scoped {
            // every scoped route may answer these about `network`
            for (status, desc) in [
                (
                    404,
                    "no such object, or no network of that name (for a caller scoped to a network: none but its own)",
                ),
                (422, "invalid field; `field` names it (`network`: not a network name)"),
            ] {
                if !responses.iter().any(|(s, ..)| *s == status) {
                    responses.push((status, super::routes::ERR, desc));
                }
            }
        }
        for (status, body, desc) in &responses {
            let mut b = ResponseBuilder::new().description(*desc);
            for (media, c) in content(*body, &mut schemas) {
                b = b.content(media, c);
            }
            op = op.response(status.to_string(), b.build());
        }
        paths.add_path_operation(r.path, vec![http_method(&r.method)], op.build());
    }
    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    schemas.dedup_by(|a, b| a.0 == b.0);
    let bearer = |desc: &str| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(desc))
                .build(),
        )
    };
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas)
        .security_scheme("adminToken", bearer("admin or auditor API token (DATA_DIR/admin.token), or a personal token (zmp_…). A browser signed in to the web console may use its session cookie instead, with an X-CSRF-Token header on writes."))
        .security_scheme("deviceCredential", bearer("device credential from enrollment"))
        .build();
    let info = InfoBuilder::new()
        .title("zmesh console API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Admin API (/api/v1) and agent API (/agent/v1) of the zmesh console. Errors are \
             always ErrorBody (the policy routes' 422 may add every reason with its line and \
             column); another method on a documented path answers 405, an unknown path 404, \
             both with an ErrorBody.",
        ))
        .build();
    let doc = OpenApiBuilder::new()
        .info(info)
        .paths(paths)
        .components(Some(components))
        .build();
    serde_json::to_value(&doc).expect("the OpenAPI document serializes")
}

/// `{id}` style parameters of a path.
pub fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referenced_schema_exists() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(schemas.contains_key(&name), "missing schema {name}");
        }
        assert_eq!(path_params("/a/{id}/b"), vec!["id".to_string()]);
    }

    /// The limits written as literals in `#[schema(...)]` attributes are the ones the
    /// handlers enforce.
    #[test]
    fn documented_limits_are_the_enforced_ones() {
        use crate::domain::password::{MAX_PASSWORD, MIN_PASSWORD};
        let doc = document();
        let s = &doc["components"]["schemas"];
        let at = |schema: &str, field: &str, key: &str| {
            s[schema]["properties"][field][key]
                .as_u64()
                .unwrap_or_else(|| panic!("{schema}.{field} has no {key}"))
        };
        let max_ttl = crate::http::api::types::MAX_TTL_SECONDS;
        assert_eq!(at("CreateEnrollKey", "ttl_seconds", "maximum"), max_ttl);
        let max_desc = crate::http::api::types::MAX_DESCRIPTION as u64;
        assert_eq!(at("CreateEnrollKey", "description", "maxLength"), max_desc);
        let max_tags = crate::http::api::types::MAX_TAGS as u64;
        assert_eq!(at("CreateEnrollKey", "tags", "maxItems"), max_tags);
        let max_token = crate::http::api::tokens::MAX_TOKEN_TTL_SECONDS;
        assert_eq!(at("CreateToken", "ttl_seconds", "maximum"), max_token);
        assert_eq!(
            at("CreatePersonalToken", "ttl_seconds", "maximum"),
            max_token
        );
        for schema in ["CreateUser", "PatchUser"] {
            assert_eq!(at(schema, "password", "minLength"), MIN_PASSWORD as u64);
            assert_eq!(at(schema, "password", "maxLength"), MAX_PASSWORD as u64);
        }
    }
}
