//! Property-based contract test of the admin and agent API against the OpenAPI
//! document the console serves: a real console (HTTPS, SQLite in a temp dir) is driven,
//! for every documented operation, with generated requests (valid bodies drawn from the
//! request schema and real objects, and invalid ones: wrong types, missing or unknown
//! fields, malformed JSON, wrong media types, unknown ids, bad path and query values, no
//! or a bogus token, an auditor token on writes). Every answer must be a documented
//! status of that operation, never a 5xx, with a body that validates against the
//! schema documented for that status; a 422 must name the field at fault.

mod support {
    pub mod schema_gen;
    pub mod stream_console;
}

use std::collections::HashMap;
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};
use support::schema_gen::{self, pick, Hints};
use support::stream_console::{console, new_key, Console};
use zmesh_shared::{WgPrivateKey, WgPublicKey};

/// Generated requests per operation; `CONTRACT_CASES` overrides it.
const CASES: u32 = 24;

const TAGS_POLICY: &str = r#"{"version": 1,
  "tag_owners": {"tag:web": [], "tag:prod": [], "tag:db": []},
  "rules": [{"src": ["*"], "dst": ["*:*"]}]}"#;

#[derive(Debug, Clone, Copy)]
enum Auth {
    None,
    Bogus,
    Admin,
    Auditor,
    Device,
}

#[derive(Debug, Clone)]
enum Payload {
    None,
    Json(Value),
    /// Content type (none: header absent) and body text.
    Raw(Option<&'static str>, String),
}

#[derive(Debug, Clone)]
struct Case {
    auth: Auth,
    path: String,
    query: Vec<(String, String)>,
    body: Payload,
}

/// The console under test and what the strategies draw from.
struct World {
    _console: Console,
    http: reqwest::Client,
    base: String,
    doc: Value,
    admin: String,
    auditor: String,
    device_credential: String,
    /// Path parameter values by the path's first segment after the version.
    ids: HashMap<&'static str, Vec<String>>,
    query_values: HashMap<&'static str, Vec<String>>,
    hints: Hints,
    validators: Mutex<HashMap<(String, u16), jsonschema::Validator>>,
}

struct Response {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl World {
    async fn send(&self, method: &Method, case: &Case) -> Response {
        let mut r = self
            .http
            .request(method.clone(), format!("{}{}", self.base, case.path));
        if !case.query.is_empty() {
            r = r.query(&case.query);
        }
        r = match case.auth {
            Auth::None => r,
            Auth::Bogus => r.bearer_auth("zmt_not-a-real-token"),
            Auth::Admin => r.bearer_auth(&self.admin),
            Auth::Auditor => r.bearer_auth(&self.auditor),
            Auth::Device => r.bearer_auth(&self.device_credential),
        };
        r = match &case.body {
            Payload::None => r,
            Payload::Json(v) => r
                .header("content-type", "application/json")
                .body(v.to_string()),
            Payload::Raw(ct, b) => {
                let r = match ct {
                    Some(ct) => r.header("content-type", *ct),
                    None => r,
                };
                r.body(b.clone())
            }
        };
        let resp = r.send().await.expect("the console answers");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
        let body = resp.bytes().await.expect("a whole body").to_vec();
        Response {
            status,
            content_type,
            body,
        }
    }

    /// The contract: a documented status, a documented media type, a body valid
    /// against the documented schema, and a named field on every 422.
    fn check(&self, op_name: &str, op: &Value, r: &Response) -> Result<(), String> {
        let text = String::from_utf8_lossy(&r.body);
        if r.status >= 500 {
            return Err(format!("{op_name}: {} (server error): {text}", r.status));
        }
        let Some(doc_resp) = op["responses"].get(r.status.to_string()) else {
            return Err(format!(
                "{op_name}: status {} is not documented: {text}",
                r.status
            ));
        };
        let content = doc_resp.get("content").and_then(Value::as_object);
        let Some(content) = content else {
            if r.body.is_empty() {
                return Ok(());
            }
            return Err(format!(
                "{op_name}: {} is documented without a body, got {text}",
                r.status
            ));
        };
        let ct = r.content_type.clone().unwrap_or_default();
        let Some(media) = content.get(&ct) else {
            return Err(format!(
                "{op_name}: {} answered {ct:?}, documented {:?}: {text}",
                r.status,
                content.keys().collect::<Vec<_>>()
            ));
        };
        if ct != "application/json" {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("{op_name}: {} body is not JSON ({e}): {text}", r.status))?;
        let key = (op_name.to_string(), r.status);
        let mut cache = self.validators.lock().unwrap();
        let validator = cache
            .entry(key)
            .or_insert_with(|| schema_gen::validator(&self.doc, &media["schema"]));
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if !errors.is_empty() {
            return Err(format!(
                "{op_name}: {} body does not match its schema: {errors:?}\nbody: {v}",
                r.status
            ));
        }
        if r.status == 422 && v["error"]["field"].as_str().is_none_or(str::is_empty) {
            return Err(format!("{op_name}: 422 without a field: {v}"));
        }
        Ok(())
    }

    fn auth_strategy(&self, op: &Value) -> BoxedStrategy<Auth> {
        let sec = op["security"].to_string();
        if sec.contains("adminToken") {
            prop_oneof![
                6 => Just(Auth::Admin),
                2 => Just(Auth::Auditor),
                1 => Just(Auth::None),
                1 => Just(Auth::Bogus),
            ]
            .boxed()
        } else if sec.contains("deviceCredential") {
            prop_oneof![Just(Auth::Device), Just(Auth::None), Just(Auth::Bogus)].boxed()
        } else {
            prop_oneof![3 => Just(Auth::None), 1 => Just(Auth::Admin)].boxed()
        }
    }

    fn path_strategy(&self, path: &str) -> BoxedStrategy<String> {
        let family = path.split('/').nth(3).unwrap_or("");
        let pool = self.ids.get(family).cloned().unwrap_or_default();
        let segs: Vec<BoxedStrategy<String>> = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    let junk = vec![
                        "nosuch".to_string(),
                        "%FF".to_string(),
                        "a%20b".to_string(),
                        "dev_00000000000000000000000000000000".to_string(),
                    ];
                    let mut alts: Vec<(u32, BoxedStrategy<String>)> = vec![
                        (1, proptest::sample::select(junk).boxed()),
                        (
                            1,
                            proptest::string::string_regex("[A-Za-z0-9_~-]{1,20}")
                                .unwrap()
                                .boxed(),
                        ),
                    ];
                    if !pool.is_empty() {
                        alts.push((4, proptest::sample::select(pool.clone()).boxed()));
                    }
                    proptest::strategy::Union::new_weighted(alts).boxed()
                } else {
                    Just(seg.to_string()).boxed()
                }
            })
            .collect();
        segs.prop_map(|s| s.join("/")).boxed()
    }

    fn query_strategy(&self, op: &Value) -> BoxedStrategy<Vec<(String, String)>> {
        let mut params: Vec<BoxedStrategy<Option<(String, String)>>> = vec![];
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["in"] != "query" {
                continue;
            }
            let name = p["name"].as_str().unwrap().to_string();
            let values = self
                .query_values
                .get(name.as_str())
                .cloned()
                .unwrap_or_else(|| vec!["1".into(), "x".into()]);
            params.push(
                proptest::option::weighted(
                    0.3,
                    proptest::sample::select(values).prop_map(move |v| (name.clone(), v)),
                )
                .boxed(),
            );
        }
        if params.is_empty() {
            return Just(vec![]).boxed();
        }
        params.push(
            proptest::option::weighted(0.1, Just(("bogus".to_string(), "1".to_string()))).boxed(),
        );
        params
            .prop_map(|ps| ps.into_iter().flatten().collect())
            .boxed()
    }

    fn body_strategy(&self, op: &Value) -> BoxedStrategy<Payload> {
        let Some(content) = op["requestBody"]["content"].as_object() else {
            return prop_oneof![
                9 => Just(Payload::None),
                1 => Just(Payload::Json(json!({"ignored": true}))),
            ]
            .boxed();
        };
        let schema = &content["application/json"]["schema"];
        let valid = schema_gen::valid(&self.doc, schema, &self.hints, 0);
        let resolved = schema_gen::resolve(&self.doc, schema).clone();
        let required: Vec<String> = resolved["required"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let props: Vec<String> = resolved["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let mut alts: Vec<(u32, BoxedStrategy<Payload>)> = vec![
            (8, valid.clone().prop_map(Payload::Json).boxed()),
            (
                1,
                Just(Payload::Raw(
                    Some("application/json"),
                    "{\"x\": ".to_string(),
                ))
                .boxed(),
            ),
            (1, Just(Payload::Raw(None, String::new())).boxed()),
            (
                1,
                Just(Payload::Raw(Some("text/xml"), "<x/>".into())).boxed(),
            ),
            (1, Just(Payload::Json(json!([1, 2]))).boxed()),
            (
                1,
                valid
                    .clone()
                    .prop_map(|mut v| {
                        if let Some(o) = v.as_object_mut() {
                            o.insert("unknown_field".into(), json!(1));
                        }
                        Payload::Json(v)
                    })
                    .boxed(),
            ),
        ];
        if !required.is_empty() {
            let strat = (valid.clone(), proptest::sample::select(required))
                .prop_map(|(mut v, f)| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove(&f);
                    }
                    Payload::Json(v)
                })
                .boxed();
            alts.push((2, strat));
        }
        if !props.is_empty() {
            let strat = (
                valid,
                proptest::sample::select(props),
                schema_gen::wrong_type(),
            )
                .prop_map(|(mut v, f, bad)| {
                    if let Some(o) = v.as_object_mut() {
                        o.insert(f, bad);
                    }
                    Payload::Json(v)
                })
                .boxed();
            alts.push((3, strat));
        }
        if content.contains_key("text/plain") {
            let texts = vec![
                TAGS_POLICY.to_string(),
                "{\"rules\": [".to_string(),
                "{\"version\": 1, \"rules\": [{\"src\": [\"tag:nope\"], \"dst\": [\"*:*\"]}]}"
                    .to_string(),
            ];
            alts.push((
                3,
                proptest::sample::select(texts)
                    .prop_map(|t| Payload::Raw(Some("text/plain"), t))
                    .boxed(),
            ));
        }
        proptest::strategy::Union::new_weighted(alts).boxed()
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A console with one of everything: tokens, a policy declaring tags, an enrollment
/// key, an enrolled and an agentless device, a user, a signed checkpoint.
async fn world() -> World {
    let c = console().await;
    let mk = |name: &str, role: &str| json!({"name": name, "role": role});
    let admin: Value = c
        .admin
        .post("/api/v1/tokens", Some(&mk("contract", "admin")))
        .await
        .unwrap();
    let auditor: Value = c
        .admin
        .post("/api/v1/tokens", Some(&mk("contract-ro", "auditor")))
        .await
        .unwrap();
    let victim: Value = c
        .admin
        .post("/api/v1/tokens", Some(&mk("victim", "admin")))
        .await
        .unwrap();
    let (st, _) = c
        .admin
        .raw(
            Method::PUT,
            "/api/v1/policy",
            Some(("text/plain", TAGS_POLICY.into())),
        )
        .await
        .unwrap();
    assert_eq!(st, 200);
    let key = new_key(&c).await;
    let keys: Value = c.admin.get("/api/v1/enroll-keys").await.unwrap();
    let key_id = keys["enroll_keys"][0]["id"].as_str().unwrap().to_string();
    let agent = c.enroll(&key, "agent1").await;
    let router_key = WgPrivateKey::generate().public_key().to_string();
    let router: Value = c
        .admin
        .post(
            "/api/v1/devices",
            Some(&json!({"name": "router", "public_key": router_key})),
        )
        .await
        .unwrap();
    let user: Value = c
        .admin
        .post(
            "/api/v1/users",
            Some(
                &json!({"username": "alice", "password": "correct horse battery", "role": "admin"}),
            ),
        )
        .await
        .unwrap();
    let _: Vec<u8> = c.admin.post_raw("/api/v1/audit/checkpoints").await.unwrap();

    let tls = zmesh_console::infra::tls_client::pinned_client_config(c.pin).unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap();
    let base = format!("https://{}", c.addr);
    let doc: Value = http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let agent_id = agent.device_id.to_string();
    let router_id = router["id"].as_str().unwrap().to_string();
    let user_id = user["id"].as_str().unwrap().to_string();
    let mut ids = HashMap::new();
    ids.insert(
        "devices",
        vec![
            agent_id.clone(),
            router_id.clone(),
            "agent1".into(),
            "router".into(),
        ],
    );
    ids.insert("enroll-keys", vec![key_id]);
    ids.insert("tokens", vec![victim["id"].as_str().unwrap().to_string()]);
    ids.insert("users", vec![user_id.clone(), "alice".into()]);
    ids.insert("networks", strs(&["default", "nosuch", "Bad_Name"]));
    ids.insert(
        "policy",
        strs(&["0", "1", "2", "-1", "18446744073709551616"]),
    );

    let mut q = HashMap::new();
    let times = ["0", "2024-05-01", "2024-05-01T00:00:00Z", "yesterday", "-5"];
    q.insert("since", strs(&times));
    q.insert("until", strs(&times));
    q.insert(
        "device",
        vec![
            agent_id.clone(),
            "router".into(),
            "nosuch".into(),
            "".into(),
        ],
    );
    q.insert("format", strs(&["jsonl", "csv", "cef", "xml"]));
    q.insert("actor", strs(&["token:contract", "", "\u{1}"]));
    q.insert("action", strs(&["device.", "policy.saved", ""]));
    q.insert("verdict", strs(&["accepted", "denied", "maybe"]));
    q.insert("one_sided", strs(&["true", "false", "1"]));
    q.insert("network", strs(&["default", "nosuch", "Bad_Name", ""]));
    q.insert("force", strs(&["true", "false", "1"]));
    q.insert("after", strs(&["0", "5", "x"]));
    q.insert("limit", strs(&["1", "10000", "0", "10001", "x"]));

    let soon = zmesh_shared::time::now_ms() + 3_600_000;
    let mut hints = Hints::new();
    let tags = [
        json!([]),
        json!(["web", "tag:prod"]),
        json!(["db"]),
        json!(["nope"]),
    ];
    hints.insert("tags", pick(tags.to_vec()));
    let names = ["web1", "router", "agent1", "-bad-", "db2", "ci token"];
    hints.insert("name", pick(names.iter().map(|n| json!(n)).collect()));
    hints.insert(
        "public_key",
        prop_oneof![
            4 => any::<[u8; 32]>().prop_map(|b| json!(WgPublicKey(b).to_string())),
            1 => Just(json!(router_key)),
            1 => Just(json!("short")),
        ]
        .boxed(),
    );
    hints.insert(
        "src",
        pick(vec![json!(agent_id), json!("router"), json!("nosuch")]),
    );
    hints.insert(
        "dst",
        pick(vec![json!(router_id), json!("agent1"), json!("nosuch")]),
    );
    hints.insert("port", pick(vec![json!(22), json!(443), json!(0)]));
    hints.insert(
        "version",
        pick(vec![json!(0), json!(1), json!(2), json!(99)]),
    );
    let policies = [
        TAGS_POLICY,
        "{\"rules\": [",
        "{\"version\": 1, \"rules\": []}",
    ];
    hints.insert("policy", pick(policies.iter().map(|p| json!(p)).collect()));
    hints.insert("enroll_key", pick(vec![json!(key), json!("zmek_unknown")]));
    let protocols = vec![json!(zmesh_shared::PROTOCOL_VERSION), json!(99)];
    hints.insert("protocol", pick(protocols));
    let users = ["bob", "alice", "carol", " "];
    hints.insert("username", pick(users.iter().map(|u| json!(u)).collect()));
    let pws = ["correct horse battery", "short", "another long passphrase"];
    hints.insert("password", pick(pws.iter().map(|p| json!(p)).collect()));
    hints.insert(
        "role",
        pick(vec![json!("admin"), json!("auditor"), json!("root")]),
    );
    hints.insert(
        "ttl_seconds",
        pick(vec![json!(3600), json!(0), json!(86400)]),
    );
    hints.insert("expires_at_ms", pick(vec![json!(0), json!(soon)]));
    hints.insert("key_expires_at_ms", pick(vec![json!(null), json!(soon)]));
    World {
        http,
        base,
        doc,
        admin: admin["token"].as_str().unwrap().to_string(),
        auditor: auditor["token"].as_str().unwrap().to_string(),
        device_credential: agent.credential.expose().to_string(),
        ids,
        query_values: q,
        hints,
        validators: Mutex::new(HashMap::new()),
        _console: c,
    }
}

/// Reads first, then writes, then revocations, then deletions.
fn rank(method: &str, path: &str) -> u8 {
    match method {
        "get" => 0,
        "delete" => 3,
        _ if path.ends_with("/revoke") => 2,
        _ => 1,
    }
}

#[test]
fn every_operation_keeps_its_contract() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let w = rt.block_on(world());
    let cases = std::env::var("CONTRACT_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES);
    let mut ops: Vec<(String, String, Value)> = vec![];
    for (path, item) in w.doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.clone(), path.clone(), op.clone()));
        }
    }
    ops.sort_by_key(|(m, p, _)| (rank(m, p), p.clone(), m.clone()));
    assert!(ops.len() >= 38, "every route is documented");
    let mut failures = vec![];
    for (method, path, op) in &ops {
        let name = format!("{} {path}", method.to_uppercase());
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let strategy = (
            w.auth_strategy(op),
            w.path_strategy(path),
            w.query_strategy(op),
            w.body_strategy(op),
        )
            .prop_map(|(auth, path, query, body)| Case {
                auth,
                path,
                query,
                body,
            });
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 64,
            ..Config::default()
        });
        let seen = Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
        let result = runner.run(&strategy, |case| {
            let r = rt.block_on(w.send(&m, &case));
            *seen.lock().unwrap().entry(r.status).or_default() += 1;
            w.check(&name, op, &r).map_err(TestCaseError::fail)
        });
        eprintln!("{name}: {:?}", seen.into_inner().unwrap());
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Another method on a documented path answers 405, an unknown path 404, both with an
/// `ErrorBody`.
#[test]
fn undocumented_methods_and_paths_answer_error_bodies() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let w = rt.block_on(world());
    let error_body = json!({"$ref": "#/components/schemas/ErrorBody"});
    let v = schema_gen::validator(&w.doc, &error_body);
    let all = ["get", "post", "put", "patch", "delete"];
    for (path, item) in w.doc["paths"].as_object().unwrap() {
        let Some(other) = all.iter().find(|m| item.get(**m).is_none()) else {
            continue;
        };
        let path = path.replace("{id}", "nosuch").replace("{version}", "1");
        let m = Method::from_bytes(other.to_uppercase().as_bytes()).unwrap();
        let case = Case {
            auth: Auth::Admin,
            path: path.clone(),
            query: vec![],
            body: Payload::None,
        };
        let r = rt.block_on(w.send(&m, &case));
        assert_eq!(r.status, 405, "{other} {path}");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v.is_valid(&body), "{other} {path}: {body}");
    }
    let case = Case {
        auth: Auth::Admin,
        path: "/api/v1/not-a-route".into(),
        query: vec![],
        body: Payload::None,
    };
    let r = rt.block_on(w.send(&Method::GET, &case));
    assert_eq!(r.status, 404);
    assert!(v.is_valid(&serde_json::from_slice(&r.body).unwrap()));
}
