//! Every change acknowledged: agents acknowledge the maps they apply (`Applied`), the
//! console records per change which connected devices it reached and how fast, lists
//! offline ones as pending until they come back, and writes the final figures into the
//! audit log (`change.applied`). Real console (SQLite), real TLS WebSocket streams.

mod support {
    pub mod stream_console;
}

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use zmesh_shared::wire::{ClientMsg, EnrollResponse, ServerMsg};
use zmesh_shared::SigningPublicKey;

use support::stream_console::*;

/// How a simulated agent answers maps.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Acknowledges every map and delta (as the real agent does once applied).
    Ack,
    /// Reads everything and acknowledges nothing (a broken or old agent).
    Silent,
}

/// Runs an agent on its stream until the stream ends.
fn agent(mut ws: Ws, key: SigningPublicKey, mode: Mode) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let version = match serde_json::from_str::<ServerMsg>(t.as_str()) {
                Ok(ServerMsg::PeerMap { map }) => map.verify(&key).unwrap().version,
                Ok(ServerMsg::PeerDelta { delta }) => delta.verify(&key).unwrap().version,
                _ => continue,
            };
            if mode == Mode::Ack {
                let ack = serde_json::to_string(&ClientMsg::Applied { version }).unwrap();
                if ws.send(Message::Text(ack.into())).await.is_err() {
                    return;
                }
            }
        }
    })
}

async fn revision(c: &Console) -> u64 {
    let v: Value = c.admin.get("/api/v1/changes").await.unwrap();
    v["revision"].as_u64().unwrap()
}

/// The report of the change after `r0`, once `done` holds (at most 10 s).
async fn report_when(c: &Console, r0: u64, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/v1/changes/{}", r0 + 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let r = c.admin.get_response_any(&path).await.unwrap();
        if r.status() == 200 {
            last = r.json().await.unwrap();
            if done(&last) {
                return last;
            }
        } else {
            assert_eq!(r.status(), 404, "{path}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("change after revision {r0} not as expected within 10 s: {last:#}");
}

/// The devices' streams are online once the console has their Hello and map out.
async fn connect_all(
    c: &Console,
    devices: &[&EnrollResponse],
    mode: Mode,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![];
    for d in devices {
        let ws = c.connect(d.credential.expose()).await.unwrap();
        tasks.push(agent(ws, d.signing_key, mode));
    }
    // each stream acknowledged its first map (or had time to)
    tokio::time::sleep(Duration::from_millis(300)).await;
    tasks
}

#[tokio::test]
async fn revocation_is_applied_by_every_connected_peer_and_audited() {
    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "a").await;
    let b = c.enroll(&key, "b").await;
    let gone = c.enroll(&key, "gone").await;
    let off = c.enroll(&key, "off").await;
    let _agents = connect_all(&c, &[&a, &b, &gone], Mode::Ack).await;

    let r0 = revision(&c).await;
    let _: Value = c
        .admin
        .post(
            &format!("/api/v1/devices/{}/revoke", gone.device_id),
            None::<&()>,
        )
        .await
        .unwrap();
    let rep = report_when(&c, r0, |v| v["finished"] == true).await;
    // a and b were connected and their maps lost `gone`; `off` is offline; `gone` is no target
    assert_eq!(rep["connected"], 2, "{rep:#}");
    assert_eq!(rep["applied"], 2, "{rep:#}");
    assert_eq!(rep["offline"], 1, "{rep:#}");
    let summary = rep["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("applied by 2 of 2 connected peers (p50 "),
        "{summary}"
    );
    assert!(summary.ends_with("; 1 offline, pending"), "{summary}");
    let pending: Vec<&str> = rep["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(pending, ["off"]);
    assert!(rep["max_ms"].as_i64().unwrap() < 5_000, "{rep:#}");

    // the final figures are in the audit log, chained like every event
    let log = c
        .admin
        .get_text("/api/v1/audit/events?action=change.applied")
        .await
        .unwrap();
    let ev: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["action"] == "change.applied")
        .collect();
    let ev = ev
        .iter()
        .find(|e| e["after"]["revision"] == rep["revision"])
        .unwrap_or_else(|| panic!("no change.applied event for the revocation: {log}"));
    assert_eq!(ev["after"]["summary"], summary);
    assert_eq!(ev["after"]["pending"][0], "off");

    // the offline device comes back: it acknowledges the map it gets, and the change it
    // missed is no longer pending
    let _off = connect_all(&c, &[&off], Mode::Ack).await;
    let rep = report_when(&c, r0, |v| v["pending_total"] == 0).await;
    assert_eq!(rep["offline_applied"], 1, "{rep:#}");
    // CLI view of the same
    let list: Value = c.admin.get("/api/v1/changes").await.unwrap();
    assert!(list["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|ch| ch["revision"] == rep["revision"]));
}

#[tokio::test]
async fn a_silent_agent_stays_pending_without_holding_up_the_others() {
    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "a").await;
    let b = c.enroll(&key, "b").await;
    let quiet = c.enroll(&key, "quiet").await;
    let _ack = connect_all(&c, &[&a, &b], Mode::Ack).await;
    let _silent = connect_all(&c, &[&quiet], Mode::Silent).await;

    let r0 = revision(&c).await;
    let _: Value = c
        .admin
        .patch(
            &format!("/api/v1/devices/{}", b.device_id),
            &serde_json::json!({"name": "b2"}),
        )
        .await
        .unwrap();
    // a and quiet see b renamed; b's own map changed too (its name): three targets,
    // two of which acknowledge
    let rep = report_when(&c, r0, |v| v["applied"] == 2).await;
    assert_eq!(rep["connected"], 3, "{rep:#}");
    assert_eq!(rep["finished"], false, "{rep:#}");
    let pending = &rep["pending"];
    assert_eq!(pending[0]["name"], "quiet", "{rep:#}");
    assert_eq!(pending[0]["connected"], true, "{rep:#}");
    assert!(rep["summary"]
        .as_str()
        .unwrap()
        .starts_with("applied by 2 of 3 connected peers"));

    // a claim beyond what was sent is not believed
    let mut ws = c.connect(quiet.credential.expose()).await.unwrap();
    let lie = serde_json::to_string(&ClientMsg::Applied { version: 1 << 40 }).unwrap();
    ws.send(Message::Text(lie.into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rep = report_when(&c, r0, |_| true).await;
    assert_eq!(rep["applied"], 2, "{rep:#}");
}

#[tokio::test]
async fn unknown_revision_is_404_and_garbage_is_422() {
    let c = console().await;
    let r = c
        .admin
        .get_response_any("/api/v1/changes/999999")
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .admin
        .get_response_any("/api/v1/changes/latest")
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
}

#[tokio::test]
async fn policy_changes_and_enrollments_are_tracked_too() {
    let c = console().await;
    let key = new_key(&c).await;
    let a = c.enroll(&key, "a").await;
    let b = c.enroll(&key, "b").await;
    let _agents = connect_all(&c, &[&a, &b], Mode::Ack).await;

    // a policy that changes both filters
    let r0 = revision(&c).await;
    let policy = r#"{"version": 1, "rules": [{"src": ["*"], "dst": ["*:22"], "proto": "tcp"}]}"#;
    let _: Value = c
        .admin
        .put("/api/v1/policy", &serde_json::json!({ "policy": policy }))
        .await
        .unwrap();
    let rep = report_when(&c, r0, |v| v["finished"] == true).await;
    assert_eq!(
        (rep["connected"].as_u64(), rep["applied"].as_u64()),
        (Some(2), Some(2)),
        "{rep:#}"
    );

    // an enrollment: both connected peers learn the newcomer
    let r0 = revision(&c).await;
    let _n = c.enroll(&key, "newcomer").await;
    let rep = report_when(&c, r0, |v| v["finished"] == true).await;
    assert_eq!(rep["applied"], 2, "{rep:#}");
    assert_eq!(rep["pending"][0]["name"], "newcomer", "{rep:#}");
}
