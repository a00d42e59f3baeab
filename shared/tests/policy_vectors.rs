//! Golden vectors for the policy engine: each `tests/vectors/*.json` holds a policy
//! text, an inventory and the expected outcome (per-device peers and inbound filters,
//! reachability answers, or the exact validation errors). The examples in
//! docs/policy.md (```json policy-example blocks) must parse and validate too.
//!
//! `ZMESH_BLESS=1 cargo test -p zmesh-shared --test policy_vectors` rewrites the
//! expectations from the current output; review the diff before committing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zmesh_shared::policy::*;
use zmesh_shared::DeviceId;

#[derive(Serialize, Deserialize)]
struct ExpDevice {
    peers: Vec<String>,
    filter: Vec<FilterRule>,
}

#[derive(Serialize, Deserialize)]
struct Check {
    src: String,
    dst: String,
    proto: Proto,
    #[serde(default)]
    port: u16,
    /// Index of the accepting rule, or null for denied.
    rule: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct Vector {
    description: String,
    /// Policy text (comments allowed), or a JSON object.
    policy: Value,
    inventory: Inventory,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<PolicyError>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    devices: Option<BTreeMap<String, ExpDevice>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    checks: Vec<Check>,
    /// Optional second policy: the expected `diff(policy, new_policy)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    diff: Option<Vec<Value>>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap(),
    }
}

fn vector_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

fn run(path: &Path, bless: bool) -> Result<(), String> {
    let raw = std::fs::read_to_string(path).unwrap();
    let mut vec: Vector =
        serde_json::from_str(&raw).map_err(|e| format!("bad vector file: {e}"))?;
    let inv = &vec.inventory;
    let name_of: BTreeMap<DeviceId, String> =
        inv.devices.iter().map(|d| (d.id, d.name.clone())).collect();
    let id_of = |n: &str| {
        inv.devices
            .iter()
            .find(|d| d.name == n)
            .map(|d| d.id)
            .ok_or(format!("no device {n}"))
    };
    let got = Policy::parse_and_validate(&text(&vec.policy), inv);
    let mut failures = Vec::new();
    match (&got, &vec.errors) {
        (Err(errs), Some(want)) if errs == want => {}
        (Err(errs), _) if bless => vec.errors = Some(errs.clone()),
        (Err(errs), want) => failures.push(format!("errors: got {errs:#?}\nwant {want:#?}")),
        (Ok(_), Some(want)) if !bless => {
            failures.push(format!("policy was accepted, expected errors {want:#?}"))
        }
        (Ok(_), _) => vec.errors = None,
    }
    if let Ok(p) = &got {
        let c = compile(p, inv);
        let actual: BTreeMap<String, ExpDevice> = c
            .devices
            .iter()
            .map(|(id, dp)| {
                let mut peers: Vec<String> = dp.peers().map(|i| name_of[&i].clone()).collect();
                peers.sort();
                (
                    name_of[id].clone(),
                    ExpDevice {
                        peers,
                        filter: dp.filter.to_vec(),
                    },
                )
            })
            .collect();
        let a = serde_json::to_value(&actual).unwrap();
        if bless {
            vec.devices = Some(actual);
        } else if vec
            .devices
            .as_ref()
            .map(|d| serde_json::to_value(d).unwrap())
            != Some(a.clone())
        {
            failures.push(format!(
                "compiled devices differ; got {}",
                serde_json::to_string_pretty(&a).unwrap()
            ));
        }
        // Every compiled filter must agree with check() for every pair it mentions.
        for ch in &mut vec.checks {
            let r =
                check(p, inv, id_of(&ch.src)?, id_of(&ch.dst)?, ch.proto, ch.port).map(|r| r.index);
            if bless {
                ch.rule = r;
            } else if r != ch.rule {
                failures.push(format!(
                    "check {} -> {} {:?}/{}: got {r:?} want {:?}",
                    ch.src, ch.dst, ch.proto, ch.port, ch.rule
                ));
            }
        }
        if let Some(np) = &vec.new_policy {
            let np = Policy::parse_and_validate(&text(np), inv)
                .map_err(|e| format!("new_policy invalid: {e:?}"))?;
            let d: Vec<Value> = diff(p, &np, inv)
                .into_iter()
                .map(|e| {
                    let mut v = serde_json::to_value(&e).unwrap();
                    v["src"] = Value::String(name_of[&e.src].clone());
                    v["dst"] = Value::String(name_of[&e.dst].clone());
                    v
                })
                .collect();
            if bless {
                vec.diff = Some(d);
            } else if vec.diff.as_ref() != Some(&d) {
                failures.push(format!(
                    "diff: got {}",
                    serde_json::to_string_pretty(&d).unwrap()
                ));
            }
        }
    }
    if bless {
        std::fs::write(path, serde_json::to_string_pretty(&vec).unwrap() + "\n").unwrap();
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

#[test]
fn golden_vectors() {
    let bless = std::env::var_os("ZMESH_BLESS").is_some();
    let files = vector_files();
    assert!(
        files.len() >= 5,
        "expected the vector files, found {files:?}"
    );
    let mut bad = Vec::new();
    for f in &files {
        if let Err(e) = run(f, bless) {
            bad.push(format!("{}:\n{e}", f.display()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
}

/// The inventory the documentation examples are validated against.
fn doc_inventory() -> Inventory {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/basic.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(v["inventory"].clone()).unwrap()
}

#[test]
fn documentation_examples_validate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut examples = Vec::new();
    let mut cur: Option<String> = None;
    for line in doc.lines() {
        match &mut cur {
            None if line.trim() == "```json policy-example" => cur = Some(String::new()),
            Some(buf) if line.trim() == "```" => {
                examples.push(std::mem::take(buf));
                cur = None;
            }
            Some(buf) => {
                buf.push_str(line);
                buf.push('\n');
            }
            None => {}
        }
    }
    assert!(
        examples.len() >= 2,
        "docs/policy.md should hold policy examples"
    );
    let inv = doc_inventory();
    for (i, ex) in examples.iter().enumerate() {
        if let Err(e) = Policy::parse_and_validate(ex, &inv) {
            panic!("docs/policy.md example {} is invalid: {e:#?}\n{ex}", i + 1);
        }
    }
}
