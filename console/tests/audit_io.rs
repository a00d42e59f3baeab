//! Audit exports and forwarding against independent parsers: a round trip of hostile
//! strings through CSV and JSONL parsed back by Python's csv and json modules, and
//! RFC 5424 framing checked byte by byte by a small octet-counting TCP listener (the
//! real-receiver test against rsyslogd is tests/syslog_rsyslog.rs).

mod support {
    pub mod audit_fixture;
}

use std::io::Write;

use serde_json::{json, Value};
use support::audit_fixture::{export_to_vec, populate, sqlite};
use zmesh_console::service::audit::{checkpoint, export, verify};
use zmesh_console::store::{AuditChange, AuditCtx, EventFilter};
use zmesh_console::syslog;
use zmesh_shared::SigningKey;

const HOSTILE: &[&str] = &[
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\tleading tab",
    "\r\nleading CRLF",
    "line1\nline2\r\nline3",
    "quote \" inside \"\"",
    "'apostrophe",
    "emoji 🦀🔥 and ümlaut",
    "comma, semicolon; pipe| backslash\\ equals=",
    "=HYPERLINK(\"http://evil.example/\",\"x\")",
    " leading space",
];

#[tokio::test]
async fn hostile_strings_round_trip_through_python_csv_and_json() {
    let (dir, s) = sqlite().await;
    let key = SigningKey::generate();
    for (i, h) in HOSTILE.iter().enumerate() {
        let st = s.acting(AuditCtx::new(*h, Some(h.to_string())));
        let mut c = AuditChange::new("test.hostile", *h);
        c.before = Some(json!({"text": h, "i": i, "nested": {"list": [h, "", null]}}));
        c.after = Some(json!(h));
        st.record_event(c).await.unwrap();
    }
    checkpoint::create(&s, &key, "manual").await.unwrap();
    let events = s
        .audit_events_page(0, 1000, &EventFilter::default(), 1000)
        .await
        .unwrap();
    assert_eq!(events.len(), HOSTILE.len());
    let script = r#"
import csv, json, sys
out = []
with open(sys.argv[1], newline='', encoding='utf-8') as f:
    for row in csv.DictReader(f):
        if row['record'] != 'event':
            continue
        un = lambda v: v[1:] if v.startswith("'") else v
        out.append({k: un(v) for k, v in row.items()})
with open(sys.argv[2], encoding='utf-8') as f:
    js = [json.loads(l) for l in f if l.strip()]
json.dump({"csv": out, "jsonl": [e for e in js if e["type"] == "event"]}, sys.stdout)
"#;
    let csv = export_to_vec(&s, export::Format::Csv, &key, &EventFilter::default()).await;
    let jsonl = export_to_vec(&s, export::Format::Jsonl, &key, &EventFilter::default()).await;
    // no cell a spreadsheet would evaluate
    let mut r = &csv[..];
    while let Some(row) = verify::read_csv_record(&mut r).unwrap() {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "dangerous cell {cell:?}"
            );
        }
    }
    let (csv_path, jsonl_path) = (dir.path().join("e.csv"), dir.path().join("e.jsonl"));
    std::fs::write(&csv_path, &csv).unwrap();
    std::fs::write(&jsonl_path, &jsonl).unwrap();
    let mut py = tempfile::NamedTempFile::new().unwrap();
    py.write_all(script.as_bytes()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(py.path())
        .arg(&csv_path)
        .arg(&jsonl_path)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (pc, pj) = (
        parsed["csv"].as_array().unwrap(),
        parsed["jsonl"].as_array().unwrap(),
    );
    assert_eq!((pc.len(), pj.len()), (events.len(), events.len()));
    for ((e, c), j) in events.iter().zip(pc).zip(pj) {
        assert_eq!(c["seq"], e.seq.to_string());
        assert_eq!(c["actor"], e.actor.as_str());
        assert_eq!(c["action"], e.action.as_str());
        assert_eq!(c["target"].as_str(), e.target.as_deref());
        assert_eq!(c["source_addr"].as_str(), e.source_addr.as_deref());
        assert_eq!(c["hash"], e.hash.as_str());
        assert_eq!(c["prev_hash"], e.prev_hash.as_str());
        let before: Value = serde_json::from_str(c["before"].as_str().unwrap()).unwrap();
        let after: Value = serde_json::from_str(c["after"].as_str().unwrap()).unwrap();
        assert_eq!(Some(before), e.before);
        assert_eq!(Some(after), e.after);
        let mut j = j.clone();
        j.as_object_mut().unwrap().remove("type");
        let back: zmesh_shared::audit::AuditEvent = serde_json::from_value(j).unwrap();
        assert_eq!(&back, e);
    }
    // and both exports still verify offline
    let pk = key.public_key();
    assert!(verify::verify_export(&csv[..], &pk).unwrap().ok);
    assert!(verify::verify_export(&jsonl[..], &pk).unwrap().ok);
}

/// A tiny RFC 6587 octet-counting TCP receiver stands in for rsyslog.
#[tokio::test]
async fn syslog_forwarding_to_a_tcp_receiver() {
    use tokio::io::AsyncReadExt;
    let (_d, s) = sqlite().await;
    let key = SigningKey::generate();
    let n = populate(&s, &key).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target =
        syslog::SyslogTarget::parse(&format!("tcp://{}", listener.local_addr().unwrap()), None)
            .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let fwd = tokio::spawn(syslog::run(s.clone(), target, async move {
        let _ = stop_rx.await;
    }));
    let (mut conn, _) = tokio::time::timeout(std::time::Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut got: Vec<String> = vec![];
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while (got.len() as u64) < n {
        let mut chunk = [0u8; 8192];
        let k = tokio::time::timeout_at(deadline, conn.read(&mut chunk))
            .await
            .expect("syslog messages within 10 s")
            .unwrap();
        assert!(k > 0, "forwarder closed the connection");
        buf.extend_from_slice(&chunk[..k]);
        // take complete frames: "LEN SP MSG"
        while let Some(sp) = buf.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
            if buf.len() < sp + 1 + len {
                break;
            }
            got.push(String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap());
            buf.drain(..sp + 1 + len);
        }
    }
    let _ = stop_tx.send(());
    fwd.await.unwrap();
    let events = s
        .audit_events_page(0, 1 << 40, &EventFilter::default(), 100)
        .await
        .unwrap();
    for (m, e) in got.iter().zip(&events) {
        assert!(m.starts_with("<109>1 ") || m.starts_with("<108>1 "), "{m}");
        let fields: Vec<&str> = m.splitn(7, ' ').collect();
        assert_eq!(fields[3], "zmesh-console");
        assert_eq!(fields[5], e.action);
        assert!(
            fields[6].starts_with(&format!(
                "[zmesh@32473 seq=\"{}\" hash=\"{}\"",
                e.seq, e.hash
            )),
            "{m}"
        );
        let json_start = m.find('\u{feff}').unwrap() + '\u{feff}'.len_utf8();
        let back: zmesh_shared::audit::AuditEvent = serde_json::from_str(&m[json_start..]).unwrap();
        assert_eq!(&back, e);
    }
    assert_eq!(s.forward_cursor("syslog").await.unwrap(), n);
}
