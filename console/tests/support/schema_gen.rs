//! Proptest strategies drawn from an OpenAPI document's JSON schemas, and response
//! validation against them (JSON Schema 2020-12, `#/components/...` refs resolved by
//! embedding the document's components into the validated schema).

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::Union;
use serde_json::{json, Map, Value};

/// Values the generator prefers for properties of a given name (real ids, names that
/// exist or not, keys): without them random strings would almost never hit a 2xx.
pub type Hints = BTreeMap<&'static str, BoxedStrategy<Value>>;

/// One of these values.
pub fn pick(values: Vec<Value>) -> BoxedStrategy<Value> {
    proptest::sample::select(values).boxed()
}

/// Follows a local `$ref` (`#/components/schemas/X`) inside `doc`.
pub fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let ptr = r.strip_prefix('#').expect("local reference");
        s = doc
            .pointer(ptr)
            .unwrap_or_else(|| panic!("dangling reference {r}"));
    }
    s
}

fn string_strategy(schema: &Value) -> BoxedStrategy<Value> {
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        let p = p.trim_start_matches('^').trim_end_matches('$');
        if let Ok(s) = proptest::string::string_regex(p) {
            return s.prop_map(Value::String).boxed();
        }
    }
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(1);
    let max = schema
        .get("maxLength")
        .and_then(Value::as_u64)
        .unwrap_or(24)
        .min(min + 16);
    proptest::string::string_regex(&format!(
        "[a-z0-9][a-z0-9-]{{{},{}}}",
        min.saturating_sub(1),
        max.saturating_sub(1)
    ))
    .expect("valid regex")
    .prop_map(Value::String)
    .boxed()
}

fn integer_strategy(schema: &Value) -> BoxedStrategy<Value> {
    let lo = schema
        .get("minimum")
        .and_then(Value::as_i64)
        .unwrap_or(-1000);
    let hi = schema
        .get("maximum")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MAX);
    // Mostly small numbers (lifetimes, versions, ports), sometimes the whole range.
    let small_hi = hi.min(lo.saturating_add(100_000));
    prop_oneof![
        3 => (lo..=small_hi).prop_map(Value::from),
        1 => (lo..=hi).prop_map(Value::from),
    ]
    .boxed()
}

/// A strategy for JSON values that satisfy `schema` (up to patterns the regex engine
/// cannot read and the semantic rules no schema states), preferring `hints`.
pub fn valid(doc: &Value, schema: &Value, hints: &Hints, depth: u32) -> BoxedStrategy<Value> {
    let s = resolve(doc, schema);
    let mut alts: Vec<BoxedStrategy<Value>> = vec![];
    for key in ["anyOf", "oneOf"] {
        if let Some(items) = s.get(key).and_then(Value::as_array) {
            alts.extend(items.iter().map(|i| valid(doc, i, hints, depth + 1)));
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        let parts: Vec<_> = all
            .iter()
            .map(|i| valid(doc, i, hints, depth + 1))
            .collect();
        let own = object_strategy(doc, s, hints, depth);
        return (parts, own)
            .prop_map(|(parts, own)| {
                let mut m = Map::new();
                for p in parts.into_iter().chain([own]) {
                    if let Value::Object(o) = p {
                        m.extend(o);
                    }
                }
                Value::Object(m)
            })
            .boxed();
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        alts.push(proptest::sample::select(e.clone()).boxed());
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if s.get("enum").is_none() {
        for t in types {
            alts.push(match t {
                "null" => Just(Value::Null).boxed(),
                "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
                "integer" => integer_strategy(s),
                "number" => (-1e6f64..1e6).prop_map(|f| json!(f)).boxed(),
                "string" => string_strategy(s),
                "array" if depth < 4 => {
                    let items = s.get("items").cloned().unwrap_or(json!({}));
                    proptest::collection::vec(valid(doc, &items, hints, depth + 1), 0..3)
                        .prop_map(Value::Array)
                        .boxed()
                }
                "object" => object_strategy(doc, s, hints, depth),
                _ => Just(json!([])).boxed(),
            });
        }
    }
    if alts.is_empty() {
        alts.push(Just(json!({})).boxed());
    }
    Union::new(alts).boxed()
}

fn object_strategy(doc: &Value, s: &Value, hints: &Hints, depth: u32) -> BoxedStrategy<Value> {
    let props = s.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = vec![];
    for (name, ps) in props.into_iter().flatten() {
        let v = match hints.get(name.as_str()) {
            Some(h) if depth < 4 => prop_oneof![
                4 => h.clone(),
                1 => valid(doc, ps, hints, depth + 1),
            ]
            .boxed(),
            _ if depth < 4 => valid(doc, ps, hints, depth + 1),
            _ => Just(Value::Null).boxed(),
        };
        let is_required = required.contains(&name.as_str());
        let name = name.clone();
        let kv = v.prop_map(move |v| (name.clone(), v));
        fields.push(if is_required {
            kv.prop_map(Some).boxed()
        } else {
            proptest::option::of(kv).boxed()
        });
    }
    fields
        .prop_map(|kvs| Value::Object(kvs.into_iter().flatten().collect()))
        .boxed()
}

/// Values of the wrong JSON type for most schemas.
pub fn wrong_type() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!("")),
        Just(json!("\u{1}")),
        Just(json!([1, "x"])),
        Just(json!({"nested": {}})),
        Just(json!(u64::MAX)),
    ]
    .boxed()
}

/// A validator for `schema`, with `doc`'s components embedded so that its
/// `#/components/schemas/...` references resolve.
pub fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = Map::new();
    root.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    root.insert("components".into(), doc["components"].clone());
    root.insert("allOf".into(), json!([schema]));
    jsonschema::draft202012::new(&Value::Object(root))
        .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}
