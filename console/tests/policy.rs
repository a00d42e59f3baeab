//! Access policy through the console, end to end: a real HTTPS console on 127.0.0.1:0
//! (SQLite in a temp dir), agents enrolled over HTTPS with real WebSocket streams.
//! Checks that maps list only the peers the policy links and carry the inbound filter,
//! that a policy change reaches connected streams as a signed delta within 1 s, that a
//! rejected policy changes nothing, and the policy API (history, versions, rollback,
//! check, diff, auditor rights, declared tags).

mod support {
    pub mod stream_console;
}

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use zmesh_shared::peermap::PeerMap;
use zmesh_shared::wire::ServerMsg;
use zmesh_shared::DeviceId;

use support::stream_console::*;

/// Another console message within `d`, skipping control frames; `None` if none came.
async fn within(ws: &mut Ws, d: Duration) -> Option<ServerMsg> {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => {
                return Some(serde_json::from_str(t.as_str()).unwrap())
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                panic!("stream ended")
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn put_policy(c: &Console, text: &str) -> (reqwest::StatusCode, Value) {
    let (st, body) = c
        .admin
        .raw(
            reqwest::Method::PUT,
            "/api/v1/policy",
            Some(("text/plain", text.to_string())),
        )
        .await
        .unwrap();
    (st, serde_json::from_str(&body).unwrap())
}

fn ids(m: &PeerMap) -> Vec<DeviceId> {
    m.peers.iter().map(|p| p.device_id).collect()
}

const ONLY_A1_TO_A2_SSH: &str = r#"{
  "version": 1,
  "rules": [
    { "src": ["a1"], "dst": ["a2:22"], "proto": "tcp" },
  ],
  "tests": [ { "src": "a1", "accept": ["a2:22"], "deny": ["a2:80", "a3:22"] } ],
}"#;

/// Three agents under the default policy see each other; a policy that links only a1
/// and a2 reaches all three streams as signed deltas within 1 s, after which a3 knows
/// no one, a1 and a2 know only each other, and only a2 accepts (a1, tcp/22).
#[tokio::test]
async fn policy_change_reaches_streams_and_unlinked_devices_never_meet() {
    let c = console().await;
    let key = new_key(&c).await;
    let mut enrolled = vec![];
    for n in ["a1", "a2", "a3"] {
        enrolled.push(c.enroll(&key, n).await);
    }
    let signing = enrolled[0].signing_key;
    let mut socks = vec![];
    let mut maps = vec![];
    for e in &enrolled {
        let mut ws = c.connect(e.credential.expose()).await.unwrap();
        let m = hello_and_map(&mut ws, e.device_id, &signing).await;
        assert_eq!(m.peers.len(), 2, "the default policy links everyone");
        assert_eq!(m.filter.len(), 1, "and accepts everything");
        maps.push(m);
        socks.push(ws);
    }
    let (a1, a2, a3) = (
        enrolled[0].device_id,
        enrolled[1].device_id,
        enrolled[2].device_id,
    );

    let started = std::time::Instant::now();
    let (st, v) = put_policy(&c, ONLY_A1_TO_A2_SSH).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["version"], 1);
    for (i, ws) in socks.iter_mut().enumerate() {
        match within(ws, Duration::from_secs(1)).await {
            Some(ServerMsg::PeerDelta { delta }) => {
                let d = delta.verify(&signing).expect("delta signed");
                assert_eq!(d.version, v["revision"].as_u64().unwrap());
                maps[i].apply(&d).unwrap();
            }
            other => panic!("agent {i}: expected PeerDelta within 1 s, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(ids(&maps[0]), vec![a2]);
    assert_eq!(ids(&maps[1]), vec![a1]);
    assert!(maps[2].peers.is_empty(), "a3 is linked to no one");
    assert!(maps[0].filter.is_empty() && maps[2].filter.is_empty());
    let f = &maps[1].filter;
    assert_eq!(f.len(), 1);
    let a1v4 = maps[1].peer(&a1).unwrap().overlay_v4;
    use zmesh_shared::policy::Proto;
    assert!(f[0].accepts(a1v4.into(), Proto::Tcp, 22));
    assert!(!f[0].accepts(a1v4.into(), Proto::Tcp, 80));
    assert!(!f[0].accepts(a1v4.into(), Proto::Udp, 22));

    // A fresh connection gets the same thing as a full map; a3's map names neither.
    let mut ws3 = c.connect(enrolled[2].credential.expose()).await.unwrap();
    let full3 = hello_and_map(&mut ws3, a3, &signing).await;
    assert!(full3.peers.is_empty() && full3.filter.is_empty());
    let mut ws1 = c.connect(enrolled[0].credential.expose()).await.unwrap();
    let full1 = hello_and_map(&mut ws1, a1, &signing).await;
    assert_eq!(ids(&full1), vec![a2]);
    assert!(full1.peer(&a3).is_none());
}

/// A policy with several problems is refused with every one of them (line and
/// column), and nothing changes: same version, same revision, no frame on any stream.
#[tokio::test]
async fn rejected_policy_changes_nothing() {
    let c = console().await;
    let key = new_key(&c).await;
    let e1 = c.enroll(&key, "b1").await;
    let e2 = c.enroll(&key, "b2").await;
    let mut w1 = c.connect(e1.credential.expose()).await.unwrap();
    let mut w2 = c.connect(e2.credential.expose()).await.unwrap();
    let m1 = hello_and_map(&mut w1, e1.device_id, &e1.signing_key).await;
    hello_and_map(&mut w2, e2.device_id, &e2.signing_key).await;
    let before: Value = c.admin.get("/api/v1/policy").await.unwrap();

    // Shape problems (all listed) ...
    let bad = r#"{
  "version": 1,
  "rules": [
    { "src": ["b1"], "dst": ["b2:0", "b2:70000"], "proto": "tcp" },
    { "src": ["b1"], "dst": ["b2:22"], "proto": "sctp" },
  ],
}"#;
    // ... and reference problems (all listed).
    let unknown = r#"{
  "version": 1,
  "rules": [
    { "src": ["group:nope"], "dst": ["b2:22"], "proto": "tcp" },
    { "src": ["b1"], "dst": ["ghost:22", "tag:undeclared:1"], "proto": "tcp" },
  ],
}"#;
    for (text, wants) in [
        (bad, &["port 0", "70000", "sctp"][..]),
        (unknown, &["group:nope", "ghost", "tag:undeclared"][..]),
    ] {
        let (st, v) = put_policy(&c, text).await;
        assert_eq!(st, 422, "{v}");
        assert_eq!(v["error"]["code"], "policy_invalid");
        assert_eq!(v["error"]["field"], "policy");
        let errs = v["errors"].as_array().unwrap();
        assert_eq!(errs.len(), 3, "every reason is listed: {v}");
        for e in errs {
            assert!(e["line"].as_u64().unwrap() >= 4, "{e}");
            assert!(e["column"].as_u64().unwrap() >= 1, "{e}");
        }
        let text = v.to_string();
        for want in wants {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }
    }
    // Syntax errors too, with their place.
    let (st, v) = put_policy(
        &c,
        "{\n  \"version\": 1,\n  \"rules\": [ { \"src\": [\"*\"] \n",
    )
    .await;
    assert_eq!(st, 422, "{v}");
    assert!(v["errors"][0]["line"].as_u64().unwrap() >= 3, "{v}");

    let after: Value = c.admin.get("/api/v1/policy").await.unwrap();
    assert_eq!(after, before, "the policy in force is unchanged");
    assert_eq!(after["version"], 0);
    for ws in [&mut w1, &mut w2] {
        assert!(
            within(ws, Duration::from_secs(1)).await.is_none(),
            "no delta after a rejected policy"
        );
    }
    // still at the same revision: a reconnect gets the very same map version
    let mut w3 = c.connect(e1.credential.expose()).await.unwrap();
    let again = hello_and_map(&mut w3, e1.device_id, &e1.signing_key).await;
    assert_eq!(again.version, m1.version);
    let hist: Value = c.admin.get("/api/v1/policy/history").await.unwrap();
    assert_eq!(hist["versions"].as_array().unwrap().len(), 1, "{hist}");
}

/// Versions, history, rollback, check, diff, auditor rights and declared tags.
#[tokio::test]
async fn policy_api_history_rollback_check_diff() {
    let c = console().await;
    // Tags must be declared before a key may carry them.
    let err = c
        .admin
        .post::<_, Value>(
            "/api/v1/enroll-keys",
            Some(&json!({"reusable": true, "tags": ["server"]})),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tags[0]") && err.contains("tag:server"),
        "{err}"
    );

    let key = new_key(&c).await;
    let e1 = c.enroll(&key, "c1").await;
    let e2 = c.enroll(&key, "c2").await;

    let v1 = r#"{"version": 1, "tag_owners": {"tag:server": []},
      "rules": [{"src": ["c1"], "dst": ["c2:22,443"], "proto": "tcp"}]}"#;
    let (st, r1) = put_policy(&c, v1).await;
    assert_eq!(st, 200, "{r1}");
    assert_eq!(r1["summary"], "0 edges added, 8 removed", "{r1}");
    // JSON wrapper form, and a declared tag now works for keys and device edits
    let v2 = r#"{"version": 1, "tag_owners": {"tag:server": []},
      "rules": [{"src": ["c1"], "dst": ["c2:22"], "proto": "tcp"},
                {"src": ["c2"], "dst": ["c1:*"], "proto": "icmp"}]}"#;
    let r2: Value = c
        .admin
        .raw(
            reqwest::Method::PUT,
            "/api/v1/policy",
            Some(("application/json", json!({ "policy": v2 }).to_string())),
        )
        .await
        .map(|(_, b)| serde_json::from_str(&b).unwrap())
        .unwrap();
    assert_eq!(r2["version"], 2, "{r2}");
    assert!(r2["revision"].as_u64().unwrap() > r1["revision"].as_u64().unwrap());
    let _: Value = c
        .admin
        .post("/api/v1/enroll-keys", Some(&json!({"tags": ["server"]})))
        .await
        .unwrap();

    let check = |src: &str, dst: &str, proto: &str, port: Option<u16>| json!({"src": src, "dst": dst, "proto": proto, "port": port});
    let yes: Value = c
        .auditor
        .post(
            "/api/v1/policy/check",
            Some(&check("c1", "c2", "tcp", Some(22))),
        )
        .await
        .unwrap();
    assert_eq!(yes["allowed"], true, "{yes}");
    assert_eq!(yes["rule"]["index"], 0);
    assert_eq!(yes["rule"]["line"], 2);
    assert_eq!(yes["policy_version"], 2);
    let no: Value = c
        .admin
        .post(
            "/api/v1/policy/check",
            Some(&check("c1", "c2", "tcp", Some(443))),
        )
        .await
        .unwrap();
    assert_eq!(no["allowed"], false, "{no}");
    assert!(no["rule"].is_null());
    let icmp: Value = c
        .admin
        .post(
            "/api/v1/policy/check",
            Some(&check(&e2.device_id.to_string(), "c1", "icmp", None)),
        )
        .await
        .unwrap();
    assert_eq!(icmp["rule"]["index"], 1, "{icmp}");
    let err = c
        .admin
        .post::<_, Value>(
            "/api/v1/policy/check",
            Some(&check("c1", "nobody", "tcp", Some(1))),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`dst`"), "{err}");

    // diff of going back to v1: c1 -> c2 tcp/443 comes back, the icmp edge goes
    let (st, body) = c
        .auditor
        .raw(
            reqwest::Method::POST,
            "/api/v1/policy/diff",
            Some(("text/plain", v1.to_string())),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    let changes = d["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{d}");
    assert!(changes.iter().any(|e| e["added"] == true
        && e["src_name"] == "c1"
        && e["dst_name"] == "c2"
        && e["proto"] == "tcp"
        && e["ports"] == json!(["443"])));
    assert!(changes
        .iter()
        .any(|e| e["added"] == false && e["src_name"] == "c2" && e["proto"] == "icmp"));
    assert_eq!(d["summary"], "1 edges added, 1 removed");

    // auditors read but never write
    let (st, _) = c
        .auditor
        .raw(
            reqwest::Method::PUT,
            "/api/v1/policy",
            Some(("text/plain", v1.to_string())),
        )
        .await
        .unwrap();
    assert_eq!(st, 403);
    let (st, _) = c
        .auditor
        .raw(
            reqwest::Method::POST,
            "/api/v1/policy/rollback",
            Some(("application/json", r#"{"version": 1}"#.to_string())),
        )
        .await
        .unwrap();
    assert_eq!(st, 403);

    // rollback makes a new version equal to the old one
    let rb: Value = c
        .admin
        .post("/api/v1/policy/rollback", Some(&json!({"version": 1})))
        .await
        .unwrap();
    assert_eq!(rb["version"], 3, "{rb}");
    assert_eq!(rb["rollback_of"], 1);
    assert_eq!(rb["text"], v1);
    let cur: Value = c.auditor.get("/api/v1/policy").await.unwrap();
    assert_eq!(cur["version"], 3);
    let old: Value = c.auditor.get("/api/v1/policy/versions/2").await.unwrap();
    assert_eq!(old["text"], v2);
    let def: Value = c.auditor.get("/api/v1/policy/versions/0").await.unwrap();
    assert!(def["text"].as_str().unwrap().contains("\"*:*\""));
    let hist: Value = c.auditor.get("/api/v1/policy/history").await.unwrap();
    let vs: Vec<u64> = hist["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(vs, vec![3, 2, 1, 0]);
    // every change is in the audit log, in the same transaction as the version
    let events = c
        .admin
        .get_text("/api/v1/audit/events?action=policy.rollback")
        .await
        .unwrap();
    assert!(
        events.contains("policy:3") && events.contains("text_sha256"),
        "{events}"
    );
    assert!(hist["versions"][0]["author"]
        .as_str()
        .unwrap()
        .contains("root"));
    let err = c
        .admin
        .post::<_, Value>("/api/v1/policy/rollback", Some(&json!({"version": 99})))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`version`"), "{err}");
    // a device named in the policy cannot silently vanish from a rollback target:
    // deleting c2 makes version 2 refer to an unknown device, so rolling back fails
    c.admin
        .delete(&format!("/api/v1/devices/{}", e2.device_id))
        .await
        .unwrap();
    let (st, body) = c
        .admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/policy/rollback",
            Some(("application/json", r#"{"version": 2}"#.to_string())),
        )
        .await
        .unwrap();
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("c2"), "{body}");
    let _ = e1;
}

const COMMENTED: &str = r#"{
  "version": 1,
  // who works here
  "groups": { "group:eng": ["d1"] },
  "tag_owners": { "tag:db": [] },
  "rules": [
    // engineers reach each other
    { "src": ["group:eng"], "dst": ["group:eng:*"] },
  ],
}"#;

async fn edit(c: &Console, text: &str, edits: Value) -> (reqwest::StatusCode, Value) {
    let (st, body) = c
        .admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/policy/edit",
            Some((
                "application/json",
                json!({ "text": text, "edits": edits }).to_string(),
            )),
        )
        .await
        .unwrap();
    (st, serde_json::from_str(&body).unwrap())
}

/// The visual editor's API: structured edits keep the comments, an edit the inventory
/// refuses is refused with its reason (nothing saved), and a rule's description shows
/// in the diff and in the audit event of the save.
#[tokio::test]
async fn structured_edits_keep_comments_and_carry_descriptions() {
    let c = console().await;
    let key = new_key(&c).await;
    c.enroll(&key, "d1").await;
    let (st, v) = put_policy(&c, COMMENTED).await;
    assert_eq!(st, 200, "{v}");

    // No edits: the outline of the draft.
    let (st, v) = edit(&c, COMMENTED, json!([])).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["text"], COMMENTED);
    assert_eq!(v["outline"]["groups"][0]["name"], "group:eng");
    assert_eq!(v["outline"]["rules"][0]["line"], 8);

    let add = json!([{ "op": "add_rule", "rule": {
        "src": ["group:eng"], "dst": ["tag:db:5432"], "proto": "tcp",
        "description": "engineers query the databases" } }]);
    let (st, v) = edit(&c, COMMENTED, add).await;
    assert_eq!(st, 200, "{v}");
    let text = v["text"].as_str().unwrap().to_string();
    for kept in ["// who works here", "// engineers reach each other"] {
        assert!(text.contains(kept), "{kept:?} lost: {text}");
    }
    assert_eq!(
        v["outline"]["rules"][1]["description"],
        "engineers query the databases"
    );

    // The diff names the rule with its description.
    let (st, body) = c
        .admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/policy/diff",
            Some(("text/plain", text.clone())),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        d["rules_added"][0]["description"], "engineers query the databases",
        "{d}"
    );
    assert_eq!(d["rules_added"][0]["dst"], json!(["tag:db:5432"]));
    assert_eq!(d["rules_removed"], json!([]));

    // Refused edits change nothing and say why.
    let before: Value = c.admin.get("/api/v1/policy").await.unwrap();
    let unknown = json!([{ "op": "add_rule", "rule": {
        "src": ["group:nope"], "dst": ["tag:db:5432"], "proto": "tcp" } }]);
    let (st, v) = edit(&c, &text, unknown).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["code"], "policy_invalid");
    assert!(v.to_string().contains("group:nope"), "{v}");
    let port = json!([{ "op": "add_rule", "rule": {
        "src": ["group:eng"], "dst": ["tag:db:0"], "proto": "tcp" } }]);
    let (st, v) = edit(&c, &text, port).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["field"], "edits[0]", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("port 0"),
        "{v}"
    );
    let gone = json!([{ "op": "remove_rule", "index": 7 }]);
    let (st, v) = edit(&c, &text, gone).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["field"], "edits[0].index", "{v}");
    let (st, v) = edit(&c, &text, json!([{ "op": "explode" }])).await;
    assert!(st == 400 || st == 422, "{st} {v}");
    let after: Value = c.admin.get("/api/v1/policy").await.unwrap();
    assert_eq!(after, before, "nothing is saved by an edit");

    // Saving records the rule and its description in the audit event.
    let (st, v) = put_policy(&c, &text).await;
    assert_eq!(st, 200, "{v}");
    let events = c
        .admin
        .get_text("/api/v1/audit/events?action=policy.set")
        .await
        .unwrap();
    let last = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|e| e["action"] == "policy.set")
        .expect("a policy.set event");
    assert_eq!(
        last["after"]["rules"]["added"][0]["description"], "engineers query the databases",
        "{last}"
    );
}
