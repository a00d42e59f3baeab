//! OpenAPI pieces of the audit, flow and token routes (query parameters, the export's
//! media types and the body schemas), kept apart from the core document.

use serde_json::{json, Value};

fn q(name: &str, desc: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": desc})
}

/// Query parameters of the operations that take some.
pub fn query_params(operation_id: &str) -> Vec<Value> {
    let time = "Unix milliseconds or RFC 3339";
    match operation_id {
        "exportAuditEvents" => vec![
            q("format", "jsonl (default), csv or cef"),
            q("since", &format!("{time}; events at or after")),
            q("until", &format!("{time}; events before")),
            q("actor", "exact actor, e.g. admin:ops"),
            q("device", "device id or name: events by or about it"),
            q(
                "action",
                "exact action (device.revoke) or a prefix ending in '.' (device.)",
            ),
        ],
        "listFlows" => vec![
            q("since", time),
            q("until", time),
            q("device", "device id or name: flows from or to it"),
            q("verdict", "accepted or denied"),
            q("one_sided", "true: only flows the other end did not report"),
            q(
                "after",
                "flow record id to continue after (next_after of the previous page)",
            ),
            q("limit", "1 to 10000, default 1000"),
        ],
        _ => vec![],
    }
}

pub fn export_content() -> Value {
    json!({
        "application/x-ndjson": {"schema": {"type": "string"}, "description": "header line, event lines, end line"},
        "text/csv": {"schema": {"type": "string"}, "description": "RFC 4180; cells starting with = + - @ ' TAB CR carry one extra leading '"},
        "text/plain": {"schema": {"type": "string"}, "description": "CEF, one line per checkpoint and event"}
    })
}

pub fn schemas() -> Value {
    let cp = json!({"type": "object", "required": ["seq", "hash", "time_ms", "signature"], "properties": {
        "seq": {"type": "integer"}, "hash": {"type": "string"}, "time_ms": {"type": "integer"},
        "signature": {"type": "string", "description": "base64 Ed25519 over zmesh-checkpoint-v1|seq|hash|time_ms"}}});
    let token = json!({
        "id": {"type": "string"}, "name": {"type": "string"}, "role": {"enum": ["admin", "auditor"]},
        "created_at_ms": {"type": "integer"}, "expires_at_ms": {"type": ["integer", "null"]},
        "revoked_at_ms": {"type": ["integer", "null"]}});
    let mut created = token.as_object().cloned().unwrap_or_default();
    created.insert(
        "token".into(),
        json!({"type": "string", "description": "shown only once"}),
    );
    json!({
        "Checkpoint": cp,
        "AuditCheckpoints": {"type": "object", "properties": {
            "head": {"type": "object", "properties": {"seq": {"type": "integer"}, "hash": {"type": "string"}}},
            "anchor": {"oneOf": [{"$ref": "#/components/schemas/Checkpoint"}, {"type": "null"}]},
            "checkpoints": {"type": "array", "items": {"$ref": "#/components/schemas/Checkpoint"}},
            "public_key": {"type": "string"}}},
        "VerifyReport": {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "mode": {"enum": ["full", "partial"]},
            "verified": {"type": "integer"}, "first_seq": {"type": ["integer", "null"]},
            "last_seq": {"type": ["integer", "null"]}, "checkpoints": {"type": "integer"},
            "unsigned_tail": {"type": "integer"}, "first_bad_seq": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]}}},
        "FlowList": {"type": "object", "properties": {
            "flows": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "integer"}, "reporter": {"type": "string"},
                "src_device": {"type": "string"}, "dst_device": {"type": "string"},
                "proto": {"type": "integer"}, "src_port": {"type": "integer"}, "dst_port": {"type": "integer"},
                "bytes": {"type": "integer"}, "packets": {"type": "integer"},
                "first_seen_ms": {"type": "integer"}, "last_seen_ms": {"type": "integer"},
                "rule": {"type": ["string", "null"]}, "verdict": {"enum": ["accepted", "denied"]},
                "received_at_ms": {"type": "integer"},
                "one_sided": {"type": "boolean", "description": "the other end has not reported this flow"}}}},
            "next_after": {"type": ["integer", "null"]}}},
        "CreateToken": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
            "name": {"type": "string", "maxLength": 128},
            "role": {"enum": ["admin", "auditor"], "default": "admin"},
            "ttl_seconds": {"type": "integer", "minimum": 1}}},
        "Token": {"type": "object", "properties": token},
        "TokenCreated": {"type": "object", "properties": created},
        "TokenList": {"type": "object", "properties": {"tokens": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}}}}
    })
}
