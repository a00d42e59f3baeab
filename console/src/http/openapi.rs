//! The OpenAPI 3.1 document, generated from the same route table that registers the
//! handlers (`api::routes`), plus hand-written schemas for the bodies.

use axum::Json;
use serde_json::{json, Map, Value};

use super::{routes, Access};

pub async fn get_document() -> Json<Value> {
    Json(document())
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for r in routes() {
        let mut op = Map::new();
        op.insert("operationId".into(), json!(r.operation_id));
        op.insert("summary".into(), json!(r.summary));
        op.insert("tags".into(), json!([r.tag]));
        match r.access {
            Access::Admin | Access::Reader => {
                op.insert("security".into(), json!([{"adminToken": []}]));
            }
            Access::Device => {
                op.insert("security".into(), json!([{"deviceCredential": []}]));
            }
            Access::Public | Access::EnrollKey => {
                op.insert("security".into(), json!([]));
            }
        }
        let params: Vec<Value> = path_params(r.path)
            .into_iter()
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"},
                "description": if r.path.starts_with("/api/v1/devices") { "device id (dev_…) or name" } else if p == "version" { "policy version number" } else { "id" }}))
            .collect();
        let mut params = params;
        params.extend(super::audit_openapi::query_params(r.operation_id));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(schema) = r.request {
            let mut content = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
            if schema == "PolicyText" {
                content["text/plain"] = json!({"schema": {"type": "string", "description": "the policy document (docs/policy.md)"}});
            }
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": content}),
            );
        }
        let mut responses = Map::new();
        for (status, schema, desc) in r.responses {
            let mut resp = Map::new();
            resp.insert("description".into(), json!(desc));
            if !schema.is_empty() {
                resp.insert(
                    "content".into(),
                    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}),
                );
            } else if r.operation_id == "exportAuditEvents" && *status == 200 {
                resp.insert("content".into(), super::audit_openapi::export_content());
            } else if r.operation_id == "exportWireguardConfig" && *status == 200 {
                resp.insert(
                    "content".into(),
                    json!({"text/plain": {"schema": {"type": "string"}}}),
                );
            }
            responses.insert(status.to_string(), Value::Object(resp));
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry
            .as_object_mut()
            .expect("path item is an object")
            .insert(r.method.as_str().to_ascii_lowercase(), Value::Object(op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "zmesh console API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Admin API (/api/v1) and agent API (/agent/v1) of the zmesh console. Errors are always ErrorBody."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "admin or auditor API token (DATA_DIR/admin.token), or a personal token (zmp_…). A browser signed in to the web console may use its session cookie instead, with an X-CSRF-Token header on writes."},
                "deviceCredential": {"type": "http", "scheme": "bearer", "description": "device credential from enrollment"}
            },
            "schemas": schemas()
        }
    })
}

/// `{id}` style parameters of a path.
pub fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

fn schemas() -> Value {
    let tags = json!({"type": "array", "items": {"type": "string", "pattern": "^(tag:)?[a-z0-9-]{1,63}$"}, "maxItems": 32});
    let ms = json!({"type": ["integer", "null"], "description": "Unix milliseconds"});
    let enroll_key_props = json!({
        "id": {"type": "string", "pattern": "^ek_[0-9a-f]{32}$"},
        "network_id": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "reusable": {"type": "boolean"},
        "preapproved": {"type": "boolean"},
        "tags": tags,
        "expires_at_ms": ms,
        "created_at_ms": {"type": "integer"},
        "created_by": {"type": "string"},
        "revoked_at_ms": ms,
        "used_count": {"type": "integer"},
        "last_used_at_ms": ms
    });
    let mut created_props = enroll_key_props.as_object().cloned().unwrap_or_default();
    created_props.insert(
        "key".into(),
        json!({"type": "string", "description": "zmek1.<secret>.<cert sha256>; shown only once"}),
    );
    let mut out = json!({
        "ErrorBody": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "examples": ["enroll_key_expired", "name_taken", "invalid"]},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the request field at fault"}}}}},
        "CreateEnrollKey": {"type": "object", "additionalProperties": false, "properties": {
            "reusable": {"type": "boolean", "default": false},
            "preapproved": {"type": "boolean", "default": true},
            "tags": tags,
            "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": crate::domain::names::MAX_TTL_SECONDS, "description": "default 86400"},
            "expires_at_ms": {"type": "integer", "description": "instead of ttl_seconds"},
            "description": {"type": "string", "maxLength": crate::domain::names::MAX_DESCRIPTION}}},
        "EnrollKey": {"type": "object", "properties": enroll_key_props},
        "EnrollKeyCreated": {"type": "object", "required": ["key", "id"], "properties": created_props},
        "EnrollKeyList": {"type": "object", "properties": {"enroll_keys": {"type": "array", "items": {"$ref": "#/components/schemas/EnrollKey"}}}},
        "Device": {"type": "object", "properties": {
            "id": {"type": "string", "pattern": "^dev_[0-9a-f]{32}$"},
            "network_id": {"type": "string"},
            "name": {"type": "string"},
            "owner": {"type": "string"},
            "tags": tags,
            "public_key": {"type": "string", "description": "WireGuard public key, base64"},
            "overlay_v4": {"type": "string", "format": "ipv4"},
            "overlay_v6": {"type": "string", "format": "ipv6"},
            "state": {"enum": ["pending", "active", "revoked"]},
            "agentless": {"type": "boolean"},
            "hostname": {"type": ["string", "null"]},
            "os": {"type": ["string", "null"]},
            "endpoints": {"type": "array", "items": {"type": "string"}},
            "key_expires_at_ms": ms,
            "created_at_ms": {"type": "integer"},
            "last_seen_ms": ms,
            "enroll_key_id": {"type": ["string", "null"]}}},
        "DeviceList": {"type": "object", "properties": {"devices": {"type": "array", "items": {"$ref": "#/components/schemas/Device"}}}},
        "PatchDevice": {"type": "object", "additionalProperties": false, "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"},
            "tags": tags,
            "key_expires_at_ms": {"type": ["integer", "null"], "description": "null: never expires"}}},
        "AddDevice": {"type": "object", "additionalProperties": false, "required": ["name", "public_key"], "properties": {
            "name": {"type": "string"},
            "public_key": {"type": "string", "description": "WireGuard public key, base64"},
            "tags": tags}},
        "PolicyText": {"description": "the policy document itself (JSON with comments), or this wrapper", "type": "object", "additionalProperties": false, "required": ["policy"], "properties": {
            "policy": {"type": "string"}}},
        "PolicyVersion": {"type": "object", "properties": {
            "version": {"type": "integer", "description": "0 is the built-in default"},
            "text": {"type": "string"},
            "author": {"type": "string"},
            "created_at_ms": {"type": "integer"},
            "summary": {"type": "string"},
            "rollback_of": {"type": ["integer", "null"]}}},
        "PolicySaved": {"type": "object", "properties": {
            "version": {"type": "integer"},
            "text": {"type": "string"},
            "author": {"type": "string"},
            "created_at_ms": {"type": "integer"},
            "summary": {"type": "string"},
            "rollback_of": {"type": ["integer", "null"]},
            "revision": {"type": "integer", "description": "network revision after the change"}}},
        "PolicyRejected": {"type": "object", "required": ["error", "errors"], "properties": {
            "error": {"$ref": "#/components/schemas/ErrorBody/properties/error"},
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "line": {"type": "integer", "description": "1-based; 0 when the problem has no place in the text"},
                "column": {"type": "integer"},
                "message": {"type": "string"}}}}}},
        "PolicyHistory": {"type": "object", "properties": {"versions": {"type": "array", "items": {"type": "object", "properties": {
            "version": {"type": "integer"},
            "author": {"type": "string"},
            "created_at_ms": {"type": "integer"},
            "summary": {"type": "string"},
            "rollback_of": {"type": ["integer", "null"]}}}}}},
        "PolicyCheck": {"type": "object", "additionalProperties": false, "required": ["src", "dst", "proto"], "properties": {
            "src": {"type": "string", "description": "device name or id"},
            "dst": {"type": "string", "description": "device name or id"},
            "proto": {"enum": ["tcp", "udp", "icmp", "any"]},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "required for tcp and udp"}}},
        "PolicyCheckResult": {"type": "object", "properties": {
            "allowed": {"type": "boolean"},
            "rule": {"type": ["object", "null"], "properties": {"index": {"type": "integer"}, "line": {"type": "integer"}, "column": {"type": "integer"}}},
            "policy_version": {"type": "integer"}}},
        "PolicyDiff": {"type": "object", "properties": {
            "summary": {"type": "string"},
            "base_version": {"type": "integer"},
            "changes": {"type": "array", "items": {"type": "object", "properties": {
                "src": {"type": "string"}, "src_name": {"type": "string"},
                "dst": {"type": "string"}, "dst_name": {"type": "string"},
                "proto": {"enum": ["tcp", "udp", "icmp", "any"]},
                "ports": {"type": "array", "items": {"type": "string"}},
                "added": {"type": "boolean"}}}}}},
        "PolicyRollback": {"type": "object", "additionalProperties": false, "required": ["version"], "properties": {
            "version": {"type": "integer", "minimum": 0}}},
        "EnrollRequest": {"type": "object", "additionalProperties": false, "required": ["protocol", "enroll_key", "public_key"], "properties": {
            "protocol": {"type": "integer", "const": zmesh_shared::PROTOCOL_VERSION},
            "enroll_key": {"type": "string", "description": "the secret part of zmek1.<secret>.<pin> (the whole key text is accepted too)"},
            "public_key": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "hostname": {"type": ["string", "null"]},
            "os": {"type": ["string", "null"]}}},
        "EnrollResponse": {"type": "object", "properties": {
            "protocol": {"type": "integer"},
            "device_id": {"type": "string"},
            "network_id": {"type": "string"},
            "name": {"type": "string"},
            "state": {"enum": ["pending", "active", "revoked"]},
            "overlay_v4": {"type": "string"},
            "overlay_v6": {"type": "string"},
            "network_v4": {"type": "string"},
            "network_v6": {"type": "string"},
            "credential": {"type": "string", "description": "bearer credential for the stream; shown only once"},
            "signing_key": {"type": "string", "description": "Ed25519 key that signs peer maps"}}}
    });
    if let (Some(o), Value::Object(extra)) = (out.as_object_mut(), super::audit_openapi::schemas())
    {
        o.extend(extra);
    }
    if let (Some(o), Value::Object(extra)) = (out.as_object_mut(), user_schemas()) {
        o.extend(extra);
    }
    out
}

fn user_schemas() -> Value {
    let ms = json!({"type": ["integer", "null"], "description": "Unix milliseconds"});
    let pw = json!({"type": "string", "minLength": crate::domain::password::MIN_PASSWORD, "maxLength": crate::domain::password::MAX_PASSWORD, "writeOnly": true});
    json!({
        "User": {"type": "object", "properties": {
            "id": {"type": "string", "pattern": "^usr_[0-9a-f]{32}$"},
            "username": {"type": "string"},
            "role": {"enum": ["admin", "auditor"]},
            "created_at_ms": {"type": "integer"},
            "created_by": {"type": "string"},
            "disabled_at_ms": ms,
            "last_sign_in_ms": ms}},
        "UserList": {"type": "object", "properties": {"users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}},
        "CreateUser": {"type": "object", "additionalProperties": false, "required": ["username", "password"], "properties": {
            "username": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"},
            "password": pw,
            "role": {"enum": ["admin", "auditor"], "default": "auditor"}}},
        "PatchUser": {"type": "object", "additionalProperties": false, "properties": {
            "role": {"enum": ["admin", "auditor"]},
            "password": pw,
            "disabled": {"type": "boolean"}}},
        "CreatePersonalToken": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
            "name": {"type": "string", "maxLength": 128},
            "ttl_seconds": {"type": "integer", "minimum": 1, "default": 2592000}}},
        "PersonalTokenCreated": {"type": "object", "required": ["token", "id"], "properties": {
            "token": {"type": "string", "description": "zmp_…; shown only once"},
            "owner": {"type": "string"},
            "id": {"type": "string"}, "name": {"type": "string"}, "role": {"enum": ["admin", "auditor"]},
            "created_at_ms": {"type": "integer"}, "expires_at_ms": ms, "revoked_at_ms": ms}},
        "WhoAmI": {"type": "object", "properties": {
            "kind": {"enum": ["token", "user"]}, "name": {"type": "string"},
            "role": {"enum": ["admin", "auditor"]}, "label": {"type": "string"}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referenced_schema_exists() {
        let doc = document();
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
}
