//! The access log as evidence, on real databases: records deleted, edited, inserted or
//! cut off past an anchor in the database are caught by `audit verify` at their
//! sequence number (SQLite and PostgreSQL); an exported file that was edited fails the
//! offline check at the record's sequence number (also through the CLI); the CSV export
//! parses with Python's csv module and the CEF export line by line; the API refuses
//! unknown parameters and bad values naming the field; and an evidence pack verifies
//! offline, and fails when a file inside it is altered.
//! PostgreSQL runs are skipped with a notice when no server can be had, unless `CI` is
//! set (then they fail).
mod support {
    pub mod audit_fixture;
    pub mod pg;
}

use std::io::{Read, Write};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use support::audit_fixture::sqlite;
use tower::ServiceExt;
use zmesh_console::bus::Bus;
use zmesh_console::service::audit::access_export::{self, AccessSelection, Directory};
use zmesh_console::service::audit::access_file::verify_access_export;
use zmesh_console::service::audit::evidence::{build, verify_pack};
use zmesh_console::service::audit::{checkpoint, export, verify};
use zmesh_console::store::{AuditCtx, NewAgentlessDevice, Role, Store};
use zmesh_console::{app, AppState};
use zmesh_shared::flowlog::{sign_flow, AccessEntry};
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{FlowRecord, FlowVerdict};
use zmesh_shared::{DeviceId, Secret, SigningKey, WgPrivateKey};

async fn exec(s: &Store, sql: &str) {
    sqlx::query(sql).execute(s.pool()).await.unwrap();
}

fn flow(src: DeviceId, dst: DeviceId, n: u64, t: i64) -> FlowRecord {
    FlowRecord {
        src_device: src,
        dst_device: dst,
        proto: if n % 2 == 0 { 6 } else { 17 },
        src_port: 40000 + n as u16,
        dst_port: 443,
        bytes: 1000 + n,
        packets: 10,
        bytes_back: 4000,
        packets_back: 8,
        first_seen_ms: t,
        last_seen_ms: t + 5000,
        rule: Some("rules[0]".into()),
        policy_version: Some(1),
        verdict: if n % 5 == 0 {
            FlowVerdict::Denied
        } else {
            FlowVerdict::Accepted
        },
    }
}

/// Three devices (the first owned by user alice) with report keys, 12 records of flows
/// from the first to the second in batches of three (records 1-4: two flows reported
/// by both ends; then one end each, flows 5 and 10 denied), anchors at 6 and 12, and a
/// signed audit checkpoint. Returns the devices.
async fn populate(s: &Store, key: &SigningKey) -> Vec<(DeviceId, SigningKey)> {
    let admin = s.acting(AuditCtx::new("admin:ops", None));
    let net = s.default_network().await.unwrap();
    let mut devs = vec![];
    for (i, owner) in ["user:alice", "admin:ops", "admin:ops"].iter().enumerate() {
        let d = admin
            .add_agentless_device(NewAgentlessDevice {
                network_id: net.id,
                name: format!("dev{i}"),
                public_key: WgPrivateKey::generate().public_key(),
                tags: vec![],
                owner: owner.to_string(),
                now_ms: now_ms(),
            })
            .await
            .unwrap();
        let k = SigningKey::generate();
        s.acting(AuditCtx::new(format!("device:{}", d.id), None))
            .register_report_key(d.id, &k.public_key(), now_ms())
            .await
            .unwrap();
        devs.push((d.id, k));
    }
    let (x, y) = (devs[0].0, devs[1].0);
    let t = now_ms() - 60_000;
    let mut xs = 0;
    let mut ys = 0;
    let mut n = 0u64;
    for batch in 0..4 {
        for _ in 0..3 {
            n += 1;
            // records 1-4 are flows 1 and 2 reported by both ends; the rest one end each
            let id = if n <= 4 { n.div_ceil(2) } else { n };
            let f = flow(x, y, id, t);
            let (rep, k, c) = if n % 2 == 0 {
                ys += 1;
                (y, &devs[1].1, ys)
            } else {
                xs += 1;
                (x, &devs[0].1, xs)
            };
            let (kept, _) = s
                .append_access(rep, &[sign_flow(k, rep, c, f)], now_ms())
                .await
                .unwrap();
            assert_eq!(kept, 1);
        }
        if batch == 1 || batch == 3 {
            s.anchor_access_head().await.unwrap().unwrap();
        }
    }
    checkpoint::create(s, key, "manual").await.unwrap().unwrap();
    devs
}

async fn insert_raw(s: &Store, e: &AccessEntry) {
    let f = &e.signed.record;
    sqlx::query(
        "INSERT INTO access_records (seq, reporter, report_seq, src_device, dst_device, proto, \
         src_port, dst_port, bytes, packets, bytes_back, packets_back, first_seen_ms, last_seen_ms, \
         rule, policy_version, verdict, sig, received_at_ms, prev_hash, hash) VALUES ($1, $2, $3, \
         $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(e.seq as i64)
    .bind(e.reporter.to_string())
    .bind(e.signed.report_seq as i64)
    .bind(f.src_device.to_string())
    .bind(f.dst_device.to_string())
    .bind(i64::from(f.proto))
    .bind(i64::from(f.src_port))
    .bind(i64::from(f.dst_port))
    .bind(f.bytes as i64)
    .bind(f.packets as i64)
    .bind(f.bytes_back as i64)
    .bind(f.packets_back as i64)
    .bind(f.first_seen_ms)
    .bind(f.last_seen_ms)
    .bind(f.rule.clone())
    .bind(f.policy_version.map(|v| v as i64))
    .bind(f.verdict.as_str())
    .bind(&e.signed.sig)
    .bind(e.received_at_ms)
    .bind(&e.prev_hash)
    .bind(&e.hash)
    .execute(s.pool())
    .await
    .unwrap();
}

#[derive(Debug, Clone, Copy)]
enum Tamper {
    None,
    Delete,
    Edit,
    Insert,
    Truncate,
}

/// Applies one tampering of the access records; returns the seq `audit verify` must name.
async fn tamper(s: &Store, t: Tamper, devs: &[(DeviceId, SigningKey)]) -> Option<u64> {
    match t {
        Tamper::None => None,
        Tamper::Delete => {
            exec(s, "DELETE FROM access_records WHERE seq = 5").await;
            Some(5)
        }
        Tamper::Edit => {
            exec(s, "UPDATE access_records SET bytes = 1 WHERE seq = 4").await;
            Some(4)
        }
        Tamper::Insert => {
            // room at 8, and a record linked to 7, sealed correctly, signed by a key
            // that is not the device's
            exec(
                s,
                "UPDATE access_records SET seq = -(seq + 1) WHERE seq >= 8",
            )
            .await;
            exec(s, "UPDATE access_records SET seq = -seq WHERE seq < 0").await;
            let seven = s.access_page(6, 1).await.unwrap().remove(0);
            let x = devs[0].0;
            let forged = sign_flow(&SigningKey::generate(), x, 999, flow(x, devs[2].0, 99, 0));
            let e = AccessEntry::seal(8, &seven.hash, x, forged, now_ms());
            insert_raw(s, &e).await;
            exec(s, "UPDATE access_head SET seq = seq + 1").await;
            Some(8)
        }
        Tamper::Truncate => {
            let nine = s.access_page(8, 1).await.unwrap().remove(0);
            exec(s, "DELETE FROM access_records WHERE seq > 9").await;
            sqlx::query("UPDATE access_head SET seq = 9, hash = $1")
                .bind(&nine.hash)
                .execute(s.pool())
                .await
                .unwrap();
            Some(10)
        }
    }
}

async fn access_export_bytes(
    s: &Store,
    key: &SigningKey,
    sel: &AccessSelection,
    fmt: export::Format,
) -> Vec<u8> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let (s2, sel2, pk) = (s.clone(), sel.clone(), key.public_key().to_string());
    let h = tokio::spawn(async move {
        access_export::run(&s2, &sel2, fmt, pk, &Directory::new(), tx)
            .await
            .unwrap()
    });
    let mut out = vec![];
    while let Some(b) = rx.recv().await {
        out.extend_from_slice(&b);
    }
    h.await.unwrap();
    out
}

async fn check_tamper(s: &Store, t: Tamper, backend: &str) {
    let key = SigningKey::generate();
    let pk = key.public_key();
    let devs = populate(s, &key).await;
    let want = tamper(s, t, &devs).await;
    let r = verify::verify_store(s, &pk).await.unwrap();
    let acc = r.access.clone().expect("the access log was checked");
    match want {
        None => assert!(r.ok && acc.ok && acc.verified == 12, "{backend}: {r:?}"),
        Some(seq) => {
            assert!(!r.ok && !acc.ok, "{backend} {t:?} not caught: {acc:?}");
            assert_eq!(acc.first_bad_seq, Some(seq), "{backend} {t:?}: {acc:?}");
            // an export of the tampered log fails offline at the same record
            let file =
                access_export_bytes(s, &key, &AccessSelection::default(), export::Format::Jsonl)
                    .await;
            let e = verify_access_export(&file[..], &pk, None).unwrap();
            assert!(!e.ok, "{backend} {t:?}: export not caught: {e:?}");
            assert_eq!(e.first_bad_seq, Some(seq), "{backend} {t:?} export: {e:?}");
        }
    }
}

const CASES: [Tamper; 5] = [
    Tamper::None,
    Tamper::Delete,
    Tamper::Edit,
    Tamper::Insert,
    Tamper::Truncate,
];

#[tokio::test]
async fn access_tamper_detection_sqlite() {
    for t in CASES {
        let (_d, s) = sqlite().await;
        check_tamper(&s, t, "sqlite").await;
    }
}

#[tokio::test]
async fn access_tamper_detection_postgres() {
    for t in CASES {
        let Some(db) = support::pg::fresh_db("access_tamper_detection_postgres").await else {
            return;
        };
        let s = Store::connect(&db.url).await.unwrap();
        check_tamper(&s, t, "postgres").await;
    }
}

/// Rewrites the JSONL export: `edit` may change or drop (None) each record line.
fn rewrite(file: &[u8], edit: impl Fn(Value) -> Option<Value>) -> Vec<u8> {
    let mut out = vec![];
    for l in file.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_slice(l).unwrap();
        let v = if v["type"] == "access" {
            edit(v)
        } else {
            Some(v)
        };
        if let Some(v) = v {
            out.extend_from_slice(v.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    out
}

#[tokio::test]
async fn edited_export_files_fail_offline_naming_the_record() {
    let (dir, s) = sqlite().await;
    let key = SigningKey::generate();
    let pk = key.public_key();
    populate(&s, &key).await;
    let sel = AccessSelection::default();
    let file = access_export_bytes(&s, &key, &sel, export::Format::Jsonl).await;
    let r = verify_access_export(&file[..], &pk, None).unwrap();
    assert!(
        r.ok && r.mode == "complete" && r.verified == 12 && r.anchors == 2,
        "{r:?}"
    );
    // a byte count changed
    let edited = rewrite(&file, |mut v| {
        if v["seq"] == 7 {
            v["bytes"] = 1.into();
        }
        Some(v)
    });
    let r = verify_access_export(&edited[..], &pk, None).unwrap();
    assert_eq!((r.ok, r.first_bad_seq), (false, Some(7)), "{r:?}");
    // a row deleted
    let deleted = rewrite(&file, |v| (v["seq"] != 3).then_some(v));
    let r = verify_access_export(&deleted[..], &pk, None).unwrap();
    assert_eq!((r.ok, r.first_bad_seq), (false, Some(3)), "{r:?}");
    // the same through the CLI, which names the sequence number
    let (good, bad) = (dir.path().join("good.jsonl"), dir.path().join("bad.jsonl"));
    std::fs::write(&good, &file).unwrap();
    std::fs::write(&bad, &edited).unwrap();
    let cli = |f: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_zmesh-console"))
            .args(["audit", "verify", "--file"])
            .arg(f)
            .args(["--key", &pk.to_string()])
            .output()
            .unwrap()
    };
    let out = cli(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("12 records verified"));
    let out = cli(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at seq 7"), "{err}");
    // a filtered export verifies record by record
    let mut only_x = AccessSelection::default();
    only_x.filter.verdict = Some(FlowVerdict::Denied);
    let file = access_export_bytes(&s, &key, &only_x, export::Format::Jsonl).await;
    let r = verify_access_export(&file[..], &pk, None).unwrap();
    assert!(r.ok && r.mode == "filtered" && r.verified == 2, "{r:?}");
    let edited = rewrite(&file, |mut v| {
        v["bytes_back"] = 0.into();
        Some(v)
    });
    let r = verify_access_export(&edited[..], &pk, None).unwrap();
    assert_eq!((r.ok, r.first_bad_seq), (false, Some(5)), "{r:?}");
}

struct Api {
    _dir: tempfile::TempDir,
    state: AppState,
    auditor: String,
}

async fn api() -> Api {
    let (dir, store) = sqlite().await;
    let auditor = Secret::generate("zmt_");
    store
        .create_admin_token("aud", Role::Auditor, &auditor.hash(), None, now_ms())
        .await
        .unwrap();
    let key = SigningKey::generate();
    let state = AppState::new(store, key, None, Bus::new()).await.unwrap();
    Api {
        _dir: dir,
        state,
        auditor: auditor.expose().into(),
    }
}

impl Api {
    async fn get(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {}", self.auditor))
            .body(Body::empty())
            .unwrap();
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let st = resp.status();
        (
            st,
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    }
}

fn python(script: &str, arg: &std::path::Path) -> Value {
    let mut py = tempfile::NamedTempFile::new().unwrap();
    py.write_all(script.as_bytes()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(py.path())
        .arg(arg)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A CEF line: `CEF:0|vendor|product|version|id|name|sev|ext` with escaped pipes in the
/// header and `key=value` pairs (escaped `=`) in the extension.
fn check_cef(line: &str) -> (Vec<String>, std::collections::HashMap<String, String>) {
    let mut fields = vec![];
    let mut cur = String::new();
    let mut chars = line.chars();
    while fields.len() < 7 {
        match chars.next().expect("7 header fields") {
            '\\' => cur.push(chars.next().unwrap()),
            '|' => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    assert_eq!(fields[0], "CEF:0");
    let ext: String = chars.collect();
    let mut map = std::collections::HashMap::new();
    let mut key = String::new();
    let mut val = String::new();
    let mut it = ext.chars().peekable();
    let mut in_val = false;
    while let Some(c) = it.next() {
        match (in_val, c) {
            (false, '=') => in_val = true,
            (false, c) => key.push(c),
            (true, '\\') => val.push(it.next().unwrap()),
            (true, ' ') => {
                // a space ends the value only before the next `key=`
                let rest: String = it.clone().take_while(|c| *c != ' ').collect();
                if rest.contains('=') && !rest.starts_with('=') {
                    map.insert(std::mem::take(&mut key), std::mem::take(&mut val));
                    in_val = false;
                } else {
                    val.push(' ');
                }
            }
            (true, c) => val.push(c),
        }
    }
    map.insert(key, val);
    (fields, map)
}

#[tokio::test]
async fn api_exports_parse_and_refuse_bad_parameters() {
    let a = api().await;
    let s = &a.state.store;
    let devs = populate(s, &a.state.signing_key).await;
    s.create_user("alice", Role::Auditor, "$argon2id$x", now_ms())
        .await
        .unwrap();
    exec(
        s,
        "UPDATE users SET email = 'Alice@Example.com' WHERE username = 'alice'",
    )
    .await;
    // CSV, parsed by Python
    let (st, csv) = a.get("/api/v1/audit/access?format=csv").await;
    assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&csv));
    let path = a._dir.path().join("a.csv");
    std::fs::write(&path, &csv).unwrap();
    let script = r#"
import csv, json, sys
with open(sys.argv[1], newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
un = lambda v: v[1:] if v.startswith("'") else v
json.dump([{k: un(v) for k, v in r.items()} for r in rows], sys.stdout)
"#;
    let rows = python(script, &path);
    let rows = rows.as_array().unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r["record"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "export");
    assert_eq!(kinds.iter().filter(|k| **k == "anchor").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "key").count(), 2);
    let acc: Vec<&Value> = rows.iter().filter(|r| r["record"] == "access").collect();
    assert_eq!(acc.len(), 12);
    let first = acc[0];
    assert_eq!(first["seq"], "1");
    assert_eq!(first["src_name"], "dev0");
    assert_eq!(first["src_owner"], "user:alice");
    assert_eq!(first["dst_owner"], "admin:ops");
    assert_eq!(first["bytes"], "1001");
    assert_eq!(first["bytes_back"], "4000");
    assert_eq!(first["packets_back"], "8");
    assert_eq!(first["ends"], "both");
    assert_eq!(first["rule"], "rules[0]");
    assert!(first["first_seen"].as_str().unwrap().ends_with('Z'));
    let ends: Vec<&str> = acc.iter().map(|r| r["ends"].as_str().unwrap()).collect();
    assert!(
        ends.contains(&"source only") && ends.contains(&"destination only"),
        "{ends:?}"
    );
    // no cell a spreadsheet would evaluate
    let mut r = &csv[..];
    while let Some(row) = verify::read_csv_record(&mut r).unwrap() {
        assert!(
            row.iter().all(|c| !c.starts_with(['=', '+', '-', '@'])),
            "{row:?}"
        );
    }
    // CEF
    let (st, cef) = a
        .get("/api/v1/audit/access?format=cef&verdict=denied")
        .await;
    assert_eq!(st, StatusCode::OK);
    let cef = String::from_utf8(cef).unwrap();
    let lines: Vec<&str> = cef
        .lines()
        .filter(|l| l.contains("|access.denied|"))
        .collect();
    assert_eq!(lines.len(), 2, "{cef}");
    for l in lines {
        let (h, ext) = check_cef(l);
        assert_eq!(
            (h[1].as_str(), h[4].as_str(), h[6].as_str()),
            ("zmesh", "access.denied", "5")
        );
        assert_eq!(ext["act"], "denied");
        assert_eq!(ext["dpt"], "443");
        assert_eq!(ext["suser"], "user:alice");
        assert_eq!(ext["shost"], "dev0");
        assert!(ext["src"].parse::<std::net::Ipv4Addr>().is_ok());
        assert!(ext["out"].parse::<u64>().is_ok() && ext["in"] == "4000");
    }
    // user filter (email, any case), one-sided, and the JSONL verifies
    let (st, j) = a
        .get("/api/v1/audit/access?user=alice%40example.com&one_sided=true")
        .await;
    assert_eq!(st, StatusCode::OK);
    let n = j
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"{\""))
        .count();
    let r = verify_access_export(&j[..], &a.state.signing_key.public_key(), None).unwrap();
    assert!(r.ok && r.mode == "filtered" && r.verified == 8, "{r:?} {n}");
    let (st, j) = a
        .get(&format!("/api/v1/flows?user=alice&device={}", devs[2].0))
        .await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_slice(&j).unwrap();
    assert_eq!(
        v["flows"].as_array().unwrap().len(),
        0,
        "dev2 is not alice's"
    );
    // refusals name the field
    for (q, field) in [
        ("format=xml", "format"),
        ("verdict=maybe", "verdict"),
        ("one_sided=yes", "one_sided"),
        ("since=yesterday", "since"),
        ("user=nobody", "user"),
        ("actor=x", "actor"),
    ] {
        let (st, b) = a.get(&format!("/api/v1/audit/access?{q}")).await;
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
        assert_eq!(v["error"]["field"], field, "{q}: {v}");
    }
    // who exported is in the audit log
    let ev = s
        .audit_events_page(0, 1 << 40, &Default::default(), 10_000)
        .await
        .unwrap();
    assert!(ev
        .iter()
        .any(|e| e.action == "audit.export" && e.after.as_ref().unwrap()["log"] == "access"));
}

/// Re-packs `pack` with `edit` applied to each (name, bytes).
fn repack(pack: &[u8], edit: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let mut ar = tar::Archive::new(pack);
    let mut b = tar::Builder::new(vec![]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = vec![];
        e.read_to_end(&mut data).unwrap();
        let data = edit(&name, data);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, &name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn evidence_pack_verifies_offline_and_fails_when_altered() {
    let a = api().await;
    let s = &a.state.store;
    let key = &a.state.signing_key;
    let pk = key.public_key();
    populate(s, key).await;
    let t = now_ms();
    let ctx = AuditCtx::new("token:aud", None);
    let mut f = build(&a.state, ctx, t - 3_600_000, t + 60_000)
        .await
        .unwrap();
    let mut pack = vec![];
    f.read_to_end(&mut pack).unwrap();
    let r = verify_pack(&pack[..], &pk).unwrap();
    assert!(r.ok, "{r:?}");
    let acc = r.access.clone().unwrap();
    assert_eq!((acc.mode.as_str(), acc.verified), ("range", 12), "{acc:?}");
    assert!(r.policies >= 1, "{r:?}");
    // through the CLI too
    let path = a._dir.path().join("pack.tar");
    std::fs::write(&path, &pack).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zmesh-console"))
        .args(["audit", "verify", "--file"])
        .arg(&path)
        .args(["--key", &pk.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("evidence pack OK"));

    let edit_record = |name: &str, data: Vec<u8>| {
        if name != "access.jsonl" {
            return data;
        }
        rewrite(&data, |mut v| {
            if v["seq"] == 6 {
                v["bytes"] = 7.into();
            }
            Some(v)
        })
    };
    // an access record changed: the manifest's hash no longer matches
    let bad = repack(&pack, edit_record);
    let r = verify_pack(&bad[..], &pk).unwrap();
    assert!(
        !r.ok && r.failed_file.as_deref() == Some("access.jsonl"),
        "{r:?}"
    );
    // ... and with the manifest fixed up, the signed audit.evidence event catches it
    let edited_access = {
        let mut ar = tar::Archive::new(&pack[..]);
        let mut out = vec![];
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy() == "access.jsonl" {
                e.read_to_end(&mut out).unwrap();
            }
        }
        edit_record("access.jsonl", out)
    };
    let fixed = repack(&pack, |name, data| match name {
        "access.jsonl" => edited_access.clone(),
        "manifest.json" => {
            let mut m: Value = serde_json::from_slice(&data).unwrap();
            for f in m["files"].as_array_mut().unwrap() {
                if f["name"] == "access.jsonl" {
                    f["sha256"] = sha(&edited_access).into();
                    f["bytes"] = edited_access.len().into();
                }
            }
            serde_json::to_vec(&m).unwrap()
        }
        _ => data,
    });
    let r = verify_pack(&fixed[..], &pk).unwrap();
    assert!(
        !r.ok && r.failed_file.as_deref() == Some("access.jsonl"),
        "{r:?}"
    );
    assert!(r.error.unwrap().contains("signed audit.evidence"));
    // a policy file altered
    let bad = repack(&pack, |name, mut data| {
        if name.starts_with("policy/") {
            data.extend_from_slice(b" ");
        }
        data
    });
    let r = verify_pack(&bad[..], &pk).unwrap();
    assert!(!r.ok && r.failed_file.unwrap().starts_with("policy/"));
    // another console's key
    let r = verify_pack(&pack[..], &SigningKey::generate().public_key()).unwrap();
    assert!(!r.ok);
}
