//! Several networks on one real HTTPS console (support/stream_console.rs) and its admin
//! CLI: a second network `lab` with its own range and its own admin and auditor; the
//! lab admin cannot see or change `default` (devices, policy, keys, audit); an
//! enrollment key of `lab` enrolls into `lab` with `lab`'s range; audit events carry
//! the network; making a network exclusive reaches a connected agent as a delta; the
//! first network and a network with devices are not deleted (unless forced).

#[path = "support/stream_console.rs"]
mod stream_console;

use std::process::Command;

use serde_json::{json, Value};
use stream_console::{console, hello_and_map, next, Console};
use zmesh_console::cli::ApiClient;
use zmesh_shared::wire::ServerMsg;

const BIN: &str = env!("CARGO_BIN_EXE_zmesh-console");

/// Runs the admin CLI against the console with `token`; stdout, or the error.
fn cli(c: &Console, token: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new(BIN)
        .arg("--data-dir")
        .arg(c._dir.path())
        .arg("--console")
        .arg(format!("https://{}", c.addr))
        .args(args)
        .env("ZMESH_TOKEN", token)
        .env_remove("ZMESH_NETWORK")
        .output()
        .unwrap();
    if o.status.success() {
        Ok(String::from_utf8(o.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

fn client(c: &Console, token: &str) -> ApiClient {
    let tls = zmesh_console::infra::tls_client::pinned_client_config(c.pin).unwrap();
    ApiClient::new(format!("https://{}", c.addr), token.to_string(), tls).unwrap()
}

async fn status(c: &ApiClient, path: &str) -> (u16, String) {
    let r = c.get_response_any(path).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn events(c: &ApiClient, query: &str) -> Vec<Value> {
    let text = c
        .get_text(&format!("/api/v1/audit/events?{query}"))
        .await
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["seq"].is_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_network_with_its_own_admin() {
    let c = console().await;
    let root = c.admin_token.clone();

    // the CLI creates the network and its admin; an overlapping range is refused
    let out = cli(
        &c,
        &root,
        &["networks", "create", "lab", "--v4", "10.88.0.0/16"],
    )
    .unwrap();
    assert!(out.contains("created network lab 10.88.0.0/16"), "{out}");
    let e = cli(
        &c,
        &root,
        &["networks", "create", "lab2", "--v4", "10.88.4.0/24"],
    )
    .unwrap_err();
    assert!(
        e.contains("overlaps network \"lab\"") && e.contains("v4"),
        "{e}"
    );
    let e = cli(&c, &root, &["networks", "create", "Lab"]).unwrap_err();
    assert!(e.contains("name"), "{e}");
    let lab_token = cli(
        &c,
        &root,
        &["--network", "lab", "tokens", "create", "--name", "lab-ops"],
    )
    .unwrap()
    .trim()
    .to_string();
    let lab_audit = cli(
        &c,
        &root,
        &[
            "tokens",
            "create",
            "--name",
            "lab-audit",
            "--role",
            "auditor",
            "--network",
            "lab",
        ],
    )
    .unwrap()
    .trim()
    .to_string();
    let lab = client(&c, &lab_token);
    let lab_auditor = client(&c, &lab_audit);

    // a device in default, one in lab (with a key the lab admin made in its network)
    let d1 = c.enroll(&stream_console::new_key(&c).await, "d1").await;
    let key: Value = lab
        .post("/api/v1/enroll-keys", Some(&json!({"reusable": true})))
        .await
        .unwrap();
    let l1 = c.enroll(key["key"].as_str().unwrap(), "l1").await;
    let lab_net: Value = c.admin.get("/api/v1/networks/lab").await.unwrap();
    assert_eq!(l1.network_id.to_string(), lab_net["id"].as_str().unwrap());
    let range: ipnet::Ipv4Net = "10.88.0.0/16".parse().unwrap();
    assert!(range.contains(&l1.overlay_v4), "{}", l1.overlay_v4);
    assert!(!range.contains(&d1.overlay_v4));
    // the CLI's key of lab enrolls into lab too
    let k2 = cli(&c, &root, &["keys", "create", "--network", "lab"]).unwrap();
    let l2 = c.enroll(k2.trim(), "l2").await;
    assert_eq!(l2.network_id, l1.network_id);

    // the lab admin sees lab only, and default not at all (same 404 as no network)
    let mine: Value = lab.get("/api/v1/devices").await.unwrap();
    let names: Vec<&str> = mine["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["l1", "l2"]);
    for path in [
        "/api/v1/devices?network=default",
        "/api/v1/policy?network=default",
        "/api/v1/enroll-keys?network=default",
        "/api/v1/dns?network=default",
        "/api/v1/audit/events?network=default",
        "/api/v1/networks/default",
    ] {
        let (s, body) = status(&lab, path).await;
        assert_eq!(s, 404, "{path}: {body}");
        assert!(
            body.contains("\"not_found\"") && body.contains("default"),
            "{body}"
        );
        assert!(!body.contains("d1"), "{body}");
        let (s2, body2) = status(&lab, &path.replace("default", "nosuch")).await;
        assert_eq!(s2, 404);
        assert_eq!(body2.replace("nosuch", "default"), body, "{path}");
    }
    let (s, _) = status(&lab, &format!("/api/v1/devices/{}", d1.device_id)).await;
    assert_eq!(s, 404);
    let r = lab
        .raw(
            reqwest::Method::PUT,
            "/api/v1/policy?network=default",
            Some(("application/json", r#"{"version":1,"rules":[]}"#.into())),
        )
        .await
        .unwrap();
    assert_eq!(r.0.as_u16(), 404, "{}", r.1);
    let e = cli(&c, &lab_token, &["--network", "default", "devices", "list"]).unwrap_err();
    assert!(e.contains("404"), "{e}");
    // console-wide routes: 403 naming the scope
    for path in ["/api/v1/users", "/api/v1/tokens", "/api/v1/audit/verify"] {
        let (s, body) = status(&lab, path).await;
        assert_eq!(s, 403, "{path}");
        assert!(body.contains("scoped to network lab"), "{body}");
    }
    let e = cli(
        &c,
        &lab_token,
        &["networks", "set", "default", "--exclusive", "true"],
    )
    .unwrap_err();
    assert!(e.contains("403"), "{e}");
    let listed = cli(&c, &lab_token, &["networks", "list"]).unwrap();
    assert!(
        listed.contains("lab") && !listed.contains("default"),
        "{listed}"
    );
    let listed = cli(&c, &root, &["networks", "list"]).unwrap();
    assert!(
        listed.contains("lab") && listed.contains("default"),
        "{listed}"
    );
    // the console-wide admin reaches lab with ?network=
    let theirs: Value = c.admin.get("/api/v1/devices?network=lab").await.unwrap();
    assert_eq!(theirs["devices"].as_array().unwrap().len(), 2);

    // events carry the network: the lab auditor sees lab's only, with the refusals
    let seen = events(&lab_auditor, "").await;
    assert!(!seen.is_empty());
    let lab_id = lab_net["id"].as_str().unwrap();
    assert!(seen.iter().all(|e| e["network"] == lab_id), "{seen:?}");
    assert!(seen.iter().any(|e| e["action"] == "enroll_key.create"));
    let all = events(&c.admin, "").await;
    assert!(all
        .iter()
        .any(|e| e["action"] == "auth.forbidden" && e["network"] == lab_id));
    assert!(all
        .iter()
        .any(|e| e["action"] == "network.create" && e["network"] == lab_id));
    let filtered = events(&c.admin, "network=lab").await;
    assert_eq!(filtered.len(), seen.len());
    // and the whole chain still verifies
    let v: Value = c.admin.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(v["ok"], true, "{v}");

    // exclusive reaches a connected agent of the network as a delta
    let mut ws = c.connect(d1.credential.expose()).await.unwrap();
    let m = hello_and_map(&mut ws, d1.device_id, &d1.signing_key).await;
    let info = m.network.clone().expect("the map names its network");
    assert_eq!((info.name.as_str(), info.exclusive), ("default", false));
    let out = cli(
        &c,
        &root,
        &["networks", "set", "default", "--exclusive", "true"],
    )
    .unwrap();
    assert!(out.contains("exclusive: yes"), "{out}");
    let delta = loop {
        match next(&mut ws).await {
            Some(ServerMsg::PeerDelta { delta }) => break delta.verify(&d1.signing_key).unwrap(),
            Some(_) => continue,
            None => panic!("stream ended"),
        }
    };
    let n = delta.network.expect("the delta carries the network");
    assert!(n.exclusive);
    assert_eq!(n.name, "default");

    // deleting: never the first network, a network with devices only when forced
    let e = cli(&c, &root, &["networks", "delete", "default"]).unwrap_err();
    assert!(e.contains("cannot be deleted"), "{e}");
    let e = cli(&c, &root, &["networks", "delete", "lab"]).unwrap_err();
    assert!(e.contains("2 device(s)") && e.contains("force"), "{e}");
    let out = cli(&c, &root, &["networks", "delete", "lab", "--force"]).unwrap();
    assert!(out.contains("2 device(s) deleted"), "{out}");
    let (s, _) = status(&c.admin, "/api/v1/devices?network=lab").await;
    assert_eq!(s, 404);
    let all = events(&c.admin, "action=network.delete").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["before"]["devices"], json!(["l1", "l2"]));
    let v: Value = c.admin.get("/api/v1/audit/verify").await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
}
