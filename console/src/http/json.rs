//! `ApiJson<T>`: the JSON body extractor every handler uses.
//!
//! axum's own `Json` answers with plain-text errors and does not say which field was
//! wrong in a form clients can use. This one answers in the `ErrorBody` format:
//! missing/other content type -> 415, empty body or malformed JSON -> 400, and
//! unknown fields, wrong types or bad values -> 422 with `field` set to the JSON path
//! (`tags[1]`, `ttl_seconds`), found with serde_path_to_error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;

/// Largest body any API call accepts; real ones are a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let is_json = ct.as_deref().is_some_and(|c| {
            let mime = c.split(';').next().unwrap_or("").trim();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
        let declared_len = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if !is_json {
            if ct.is_none() && declared_len.unwrap_or(0) == 0 {
                return Err(ApiError::bad_request(
                    "body_required",
                    "this request needs a JSON body (Content-Type: application/json)",
                ));
            }
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::bad_request(
                "body_unreadable",
                format!("could not read the request body: {}", e.body_text()),
            )
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body into `T`, mapping every failure to the right `ApiError`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(ApiError::bad_request(
            "body_too_large",
            format!("request body exceeds {MAX_BODY} bytes"),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "body_required",
            "request body is empty; a JSON object is required",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(err) => {
            let inner = err.inner();
            return Err(match inner.classify() {
                serde_json::error::Category::Data => {
                    let field = field_name(&err.path().to_string(), &inner.to_string());
                    let message = strip_position(&inner.to_string());
                    ApiError::Invalid {
                        code: "invalid",
                        message,
                        field,
                    }
                }
                _ => ApiError::bad_request("invalid_json", format!("malformed JSON: {inner}")),
            });
        }
    };
    de.end()
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The JSON path of the culprit; for an unknown field, the field itself.
fn field_name(path: &str, msg: &str) -> Option<String> {
    let path = if path == "." { "" } else { path };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some(name) = rest.split('`').next() {
            if path.is_empty() {
                return Some(name.to_string());
            }
            if path == name || path.ends_with(&format!(".{name}")) {
                return Some(path.to_string());
            }
            return Some(format!("{path}.{name}"));
        }
    }
    if path.is_empty() {
        // A missing required field reports no path; name it from the message.
        if let Some(rest) = msg.strip_prefix("missing field `") {
            return rest.split('`').next().map(str::to_string);
        }
        return None;
    }
    Some(path.to_string())
}

/// serde_json appends " at line 1 column 17"; useless to an API client.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        ttl: u32,
        #[serde(default)]
        inner: Vec<Inner>,
    }

    fn field(r: Result<Body, ApiError>) -> (u16, Option<String>) {
        match r {
            Err(ApiError::Invalid { field, .. }) => (422, field),
            Err(ApiError::BadRequest { .. }) => (400, None),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn names_the_field() {
        assert_eq!(field(parse(br#"{"ttl": "x"}"#)), (422, Some("ttl".into())));
        assert_eq!(
            field(parse(br#"{"ttl": 1, "bogus": 2}"#)),
            (422, Some("bogus".into()))
        );
        assert_eq!(field(parse(br#"{"ttl": -1}"#)), (422, Some("ttl".into())));
        assert_eq!(
            field(parse(br#"{"ttl": 1, "inner": [{"n": 1}, {"n": 300}]}"#)),
            (422, Some("inner[1].n".into()))
        );
        assert_eq!(
            field(parse(br#"{"ttl": 1, "inner": [{"n": 1, "z": 0}]}"#)),
            (422, Some("inner[0].z".into()))
        );
        assert_eq!(field(parse(br#"{}"#)), (422, Some("ttl".into())));
        assert_eq!(field(parse(br#"{"ttl": 1"#)), (400, None));
        assert_eq!(field(parse(br#"{"ttl": 1} x"#)), (400, None));
        assert_eq!(field(parse(b"  ")), (400, None));
        assert!(parse::<Body>(br#"{"ttl": 5}"#).is_ok());
    }
}
