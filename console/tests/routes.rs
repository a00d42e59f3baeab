//! Subnet routes and exit nodes through a real console (HTTPS on 127.0.0.1:0, SQLite in
//! a temp dir), with agents on real WebSocket streams and signed maps: a router
//! advertises over its stream; nothing reaches a peer until the route is approved and
//! a policy rule names its prefix; approval reaches the allowed client's map within
//! 1 s and the router's filter gets the forwarding rule; `*` opens no route; withdrawal
//! takes it back; `auto_approvers` approve without an admin (actor `policy`); bad
//! advertisements are refused, audited and not stored; exit nodes reach the map as
//! `exit_node`.

mod support {
    pub mod stream_console;
}

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ipnet::IpNet;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use zmesh_shared::peermap::PeerMap;
use zmesh_shared::wire::{ClientMsg, ServerMsg};
use zmesh_shared::{DeviceId, SigningPublicKey};

use support::stream_console::*;

struct Agent {
    id: DeviceId,
    ws: Ws,
    map: PeerMap,
}

impl Agent {
    async fn advertise(&mut self, routes: &[&str], exit_node: bool) {
        let msg = ClientMsg::Routes {
            advertise: routes.iter().map(|r| r.parse().unwrap()).collect(),
            exit_node,
        };
        self.ws
            .send(Message::Text(serde_json::to_string(&msg).unwrap().into()))
            .await
            .unwrap();
    }

    /// Applies deltas until `pred` holds on the map or `d` passes; whether it held.
    async fn until(
        &mut self,
        key: &SigningPublicKey,
        d: Duration,
        pred: impl Fn(&PeerMap) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if pred(&self.map) {
                return true;
            }
            let m = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(Some(Ok(Message::Text(t)))) => {
                    serde_json::from_str::<ServerMsg>(t.as_str()).unwrap()
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                    panic!("stream ended")
                }
                Ok(Some(Ok(_))) => continue,
            };
            match m {
                ServerMsg::PeerDelta { delta } => {
                    let d = delta.verify(key).expect("delta signed by the console");
                    self.map.apply(&d).unwrap();
                }
                ServerMsg::PeerMap { map } => self.map = map.verify(key).expect("signed"),
                _ => {}
            }
        }
    }

    /// Takes whatever the console sends within `d`.
    async fn settle(&mut self, key: &SigningPublicKey, d: Duration) {
        self.until(key, d, |_| false).await;
    }

    /// Whether the stream is still served (a Ping gets its Pong).
    async fn alive(&mut self, key: &SigningPublicKey) -> bool {
        let ping = ClientMsg::Ping { nonce: 77 };
        self.ws
            .send(Message::Text(serde_json::to_string(&ping).unwrap().into()))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let m = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    serde_json::from_str::<ServerMsg>(t.as_str()).unwrap()
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                _ => return false,
            };
            match m {
                ServerMsg::Pong { nonce: 77 } => return true,
                ServerMsg::PeerDelta { delta } => {
                    self.map.apply(&delta.verify(key).unwrap()).unwrap();
                }
                _ => {}
            }
        }
    }
}

/// Runs the admin CLI of the console binary against `c` (certificate pinned from the
/// console's data dir).
fn cli(c: &Console, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_zmesh-console"))
        .arg("--data-dir")
        .arg(c._dir.path())
        .arg("--console")
        .arg(format!("https://127.0.0.1:{}", c.addr.port()))
        .args(args)
        .env("ZMESH_TOKEN", &c.admin_token)
        .output()
        .unwrap()
}

/// The route list once `pred` holds (the stream handles messages in the background).
async fn list_when(c: &Console, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let l = list(c).await;
        if pred(&l) || Instant::now() > deadline {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The routes of peer `via` in `m` (`None`: not a peer).
fn routes_via(m: &PeerMap, via: DeviceId) -> Option<(Vec<IpNet>, bool)> {
    m.peer(&via).map(|p| (p.routes.clone(), p.exit_node))
}

async fn put_policy(c: &Console, text: &str) {
    let (st, body) = c
        .admin
        .raw(
            reqwest::Method::PUT,
            "/api/v1/policy",
            Some(("text/plain", text.to_string())),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{body}");
}

async fn approval(c: &Console, what: &str, device: &str, prefix: &str) -> (u16, Value) {
    let (st, body) = c
        .admin
        .raw(
            reqwest::Method::POST,
            &format!("/api/v1/routes/{what}"),
            Some((
                "application/json",
                json!({ "device": device, "prefix": prefix }).to_string(),
            )),
        )
        .await
        .unwrap();
    (
        st.as_u16(),
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

async fn list(c: &Console) -> Vec<Value> {
    let v: Value = c.auditor.get("/api/v1/routes").await.unwrap();
    v["routes"].as_array().unwrap().clone()
}

const POLICY: &str = r#"{
  "version": 1,
  "hosts": { "lan": "10.1.0.0/24" },
  "rules": [
    { "src": ["laptop"], "dst": ["lan:80"], "proto": "tcp" },
    { "src": ["laptop"], "dst": ["autogroup:internet:*"] },
    // `*` means every device: it links `other` to the router, never to its LAN
    { "src": ["other"], "dst": ["*:*"] },
  ],
}"#;

const AUTO: &str = r#"{
  "version": 1,
  "auto_approvers": { "routes": { "10.0.0.0/8": ["router"] }, "exit_node": ["exit"] },
  "rules": [
    { "src": ["laptop"], "dst": ["10.1.0.0/24:80"], "proto": "tcp" },
    { "src": ["laptop"], "dst": ["autogroup:internet:*"] },
    { "src": ["other"], "dst": ["*:*"] },
  ],
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_need_approval_and_a_rule_and_reach_maps() {
    let c = console().await;
    let key = new_key(&c).await;
    let mut agents = vec![];
    let mut signing = None;
    for n in ["router", "laptop", "other", "exit"] {
        let e = c.enroll(&key, n).await;
        let mut ws = c.connect(e.credential.expose()).await.unwrap();
        let map = hello_and_map(&mut ws, e.device_id, &e.signing_key).await;
        signing = Some(e.signing_key);
        agents.push(Agent {
            id: e.device_id,
            ws,
            map,
        });
    }
    let key = signing.unwrap();
    put_policy(&c, POLICY).await;
    for a in &mut agents {
        a.settle(&key, Duration::from_millis(300)).await;
    }
    let [router, laptop, other, exit] = &mut agents[..] else {
        unreachable!()
    };
    let router_id = router.id;
    assert!(
        laptop.map.peer(&router_id).is_none(),
        "no rule links laptop and router yet"
    );

    // advertised, not approved: stored, listed, carries nothing
    router.advertise(&["10.1.0.0/24"], false).await;
    assert!(
        !laptop
            .until(&key, Duration::from_millis(500), |m| m
                .peer(&router_id)
                .is_some())
            .await,
        "an unapproved route reaches nobody"
    );
    let l = list_when(&c, |l| l.len() == 1).await;
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["device_name"], "router");
    assert_eq!(l[0]["prefix"], "10.1.0.0/24");
    assert_eq!(l[0]["approved"], false);
    assert_eq!(l[0]["exit_node"], false);
    assert_eq!(l[0]["online"], true);

    // approval by an admin: the client's next delta, within 1 s
    let started = Instant::now();
    let (st, v) = approval(&c, "approve", "router", "10.1.0.0/24").await;
    assert_eq!(st, 200, "{v}");
    assert!(v["approved_by"].as_str().unwrap().contains("root"), "{v}");
    assert!(
        laptop
            .until(&key, Duration::from_secs(1), |m| routes_via(m, router_id)
                == Some((vec![net("10.1.0.0/24")], false)))
            .await,
        "laptop's map: {:?}",
        laptop.map.peer(&router_id)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let laptop_v4 = laptop.map.me.overlay_v4;
    assert!(
        router
            .until(&key, Duration::from_secs(1), |m| m
                .filter
                .iter()
                .any(|r| r.dst == vec![net("10.1.0.0/24")]))
            .await,
        "router's filter: {:?}",
        router.map.filter
    );
    use zmesh_shared::policy::Proto;
    let fwd = |m: &PeerMap, port| {
        m.filter.iter().any(|r| {
            r.accepts_forward(
                laptop_v4.into(),
                "10.1.0.9".parse().unwrap(),
                Proto::Tcp,
                port,
            )
        })
    };
    assert!(fwd(&router.map, 80) && !fwd(&router.map, 22));
    assert!(
        router.map.peer(&laptop.id).is_some(),
        "the router knows its client"
    );
    // `other` may reach every device, the router included, but not its LAN
    other.settle(&key, Duration::from_millis(300)).await;
    assert_eq!(routes_via(&other.map, router_id), Some((vec![], false)));

    // refusals: nothing stored, the stream goes on
    router.advertise(&["100.64.7.0/24"], false).await;
    router.advertise(&["0.0.0.0/0"], false).await;
    assert!(
        router.alive(&key).await,
        "a refused advertisement does not end the stream"
    );
    let l = list(&c).await;
    assert_eq!(
        l.len(),
        1,
        "nothing of a refused advertisement is stored: {l:?}"
    );
    assert_eq!(l[0]["approved"], true);
    let events = c
        .admin
        .get_text("/api/v1/audit/events?action=route.refused")
        .await
        .unwrap();
    assert!(
        events.contains("overlaps the mesh's overlay range"),
        "{events}"
    );
    assert!(events.contains("only with exit_node"), "{events}");

    // admin errors: a prefix the router does not advertise, an unknown device, junk
    let (st, v) = approval(&c, "approve", "router", "10.9.0.0/24").await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (422, Some("prefix")),
        "{v}"
    );
    let (st, v) = approval(&c, "approve", "router", "banana").await;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (422, Some("prefix")),
        "{v}"
    );
    let (st, _) = approval(&c, "approve", "nobody", "10.1.0.0/24").await;
    assert_eq!(st, 404);
    let (st, _) = c
        .auditor
        .raw(
            reqwest::Method::POST,
            "/api/v1/routes/approve",
            Some((
                "application/json",
                json!({"device": "router", "prefix": "10.1.0.0/24"}).to_string(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(st, 403, "auditors may not approve");

    // withdrawal takes it back
    let (st, v) = approval(&c, "unapprove", "router", "10.1.0.0/24").await;
    assert_eq!(st, 200, "{v}");
    assert!(
        laptop
            .until(&key, Duration::from_secs(1), |m| m
                .peer(&router_id)
                .is_none())
            .await,
        "unapproved: the laptop loses the router"
    );
    assert!(
        router
            .until(&key, Duration::from_secs(1), |m| m
                .filter
                .iter()
                .all(|r| r.dst.is_empty()))
            .await
    );
    let events = c
        .admin
        .get_text("/api/v1/audit/events?action=route.")
        .await
        .unwrap();
    assert!(
        events.contains("route.approve") && events.contains("route.unapprove"),
        "{events}"
    );

    // auto_approvers: a policy that names the router approves its waiting route at once
    put_policy(&c, AUTO).await;
    assert!(
        laptop
            .until(&key, Duration::from_secs(1), |m| routes_via(m, router_id)
                == Some((vec![net("10.1.0.0/24")], false)))
            .await,
        "approved by the new policy's auto_approvers: {:?}",
        laptop.map.peer(&router_id)
    );
    // and what the router advertises from now on, as it arrives
    router
        .advertise(&["10.1.0.0/24", "10.2.0.0/24", "192.168.7.0/24"], false)
        .await;
    let l = list_when(&c, |l| l.len() == 3).await;
    let by: Vec<(String, Value)> = l
        .iter()
        .map(|r| {
            (
                r["prefix"].as_str().unwrap().to_string(),
                r["approved_by"].clone(),
            )
        })
        .collect();
    assert_eq!(
        by,
        vec![
            ("10.1.0.0/24".to_string(), json!("policy")),
            ("10.2.0.0/24".to_string(), json!("policy")),
            ("192.168.7.0/24".to_string(), Value::Null),
        ],
        "only what auto_approvers cover"
    );
    let events = c
        .admin
        .get_text("/api/v1/audit/events?action=route.approve&actor=policy")
        .await
        .unwrap();
    assert!(events.contains("10.2.0.0/24"), "{events}");

    // the admin CLI: list, approve, a refusal naming its reason
    let l = cli(&c, &["routes", "list"]);
    assert!(l.status.success(), "{l:?}");
    let out = String::from_utf8_lossy(&l.stdout);
    assert!(out.starts_with("DEVICE"), "{out}");
    assert!(
        out.contains("10.2.0.0/24") && out.contains("yes (policy)"),
        "{out}"
    );
    let a = cli(&c, &["routes", "approve", "router", "192.168.7.0/24"]);
    assert!(a.status.success(), "{a:?}");
    assert!(
        String::from_utf8_lossy(&a.stdout)
            .contains("192.168.7.0/24 via router approved by admin:root"),
        "{a:?}"
    );
    let a = cli(&c, &["routes", "approve", "router", "10.99.0.0/24"]);
    assert!(!a.status.success());
    assert!(
        String::from_utf8_lossy(&a.stderr).contains("does not advertise"),
        "{a:?}"
    );
    let a = cli(&c, &["routes", "unapprove", "router", "192.168.7.0/24"]);
    assert!(a.status.success(), "{a:?}");

    // exit node: both defaults, approved by `exit_node`, seen as `exit_node` only by
    // the device whose rule names autogroup:internet
    let exit_id = exit.id;
    exit.advertise(&[], true).await;
    assert!(
        laptop
            .until(&key, Duration::from_secs(2), |m| routes_via(m, exit_id)
                == Some((vec![], true)))
            .await,
        "exit node: {:?}",
        laptop.map.peer(&exit_id)
    );
    other.settle(&key, Duration::from_millis(300)).await;
    assert_eq!(routes_via(&other.map, exit_id), Some((vec![], false)));
    let l = list(&c).await;
    let exits: Vec<&Value> = l.iter().filter(|r| r["exit_node"] == true).collect();
    assert_eq!(exits.len(), 2, "{l:?}");
    assert!(exits
        .iter()
        .all(|r| r["device_name"] == "exit" && r["approved"] == true));

    // a default route is refused without exit_node even from an approved exit node,
    // and the stored offer stays
    exit.advertise(&["::/0"], false).await;
    assert!(exit.alive(&key).await);
    assert_eq!(
        list(&c)
            .await
            .iter()
            .filter(|r| r["exit_node"] == true)
            .count(),
        2
    );
}
