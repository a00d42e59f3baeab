//! Identity in the policy, at the packet level, in network namespaces: the real console
//! with single sign-on against the real test OpenID Provider, a server enrolled with a
//! key, and two laptops enrolled by login, alice's and bob's. The policy lets the IdP
//! group `eng` reach the server on tcp/22 only. alice (in `eng`) connects to port 22
//! and not to 8080; bob (not in `eng`) learns nothing of the server and cannot connect.
//! bob is moved into `eng` at the provider and signs in again: the console syncs his
//! groups, every peer gets its new map and filter at once, and bob connects.
//! Needs root, python3 and node; with `CI` set, their absence is a failure.

#[path = "../../console/tests/support/oidc.rs"]
mod oidc;
#[path = "support/signin.rs"]
mod signin;
mod support;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use oidc::{OidcOptions, OidcProvider};
use signin::{block_on, console_client, sign_in_and_confirm, sso};
use support::netns::{lab_or_skip, tail, wait_for, Lab};
use support::nsthread::{in_netns, LoopbackForward};
use support::printed_fingerprint;
use support::tcp::{probe, stays_closed, SERVER};
use support::{has_binary, Agent, Console};

const SECRET: &str = "sso-groups-client-secret-41d8";
const PW: &str = "correct horse battery staple";

fn users(bob_groups: &[&str]) -> Value {
    json!({
        "alice": {"password": PW, "email": "alice@example.com", "name": "Alice", "groups": ["eng"]},
        "bob": {"password": PW, "email": "bob@example.com", "name": "Bob", "groups": bob_groups},
    })
}

/// Everything a login enrollment needs to know about the console.
struct Site<'a> {
    lab: &'a Lab,
    console: &'a Console,
    base: String,
    fp: String,
}

/// `zmesh up` without a key on `agent`, completed by `user` in the browser's place.
fn enroll_by_login(site: &Site, agent: &Agent, user: &str, email: &str) {
    let bin = support::zmesh_bin();
    let state = agent.state_dir.to_str().unwrap().to_string();
    let mut up = site
        .lab
        .command(
            &agent.ns,
            &[
                bin.to_str().unwrap(),
                "up",
                "--console",
                &site.base,
                "--fingerprint",
                &site.fp,
                "--name",
                &agent.name,
                "--state-dir",
                &state,
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = up.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("`zmesh up` printed no sign-in link within 30 s");
    let link = first
        .strip_prefix("To sign in, visit: ")
        .unwrap_or_else(|| panic!("first line of `zmesh up`: {first:?}"))
        .to_string();
    let (b, f) = (site.base.clone(), site.fp.clone());
    let (user, email, name) = (user.to_string(), email.to_string(), agent.name.clone());
    in_netns(&site.console.ns, move || {
        block_on(sign_in_and_confirm(link, b, f, &user, PW, &email, &name))
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = up.try_wait().unwrap() {
            assert!(s.success(), "zmesh up for {}: {s:?}", agent.name);
            return;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            let _ = up.wait();
            panic!(
                "`zmesh up` did not finish after the sign-in; daemon log:\n{}",
                tail(&site.lab.log_path(&format!("daemon-{}", agent.name)), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /api/v1/users` with the admin token: the user named `email`.
async fn user_record(base: String, fp: String, token: String, email: &str) -> Value {
    let users: Value = console_client(&fp)
        .get(format!("{base}/api/v1/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == email)
        .cloned()
        .unwrap_or_else(|| panic!("no user {email} in {users}"))
}

#[test]
fn idp_groups_decide_who_reaches_the_server() {
    for bin in ["node", "python3"] {
        if !has_binary(bin) {
            if std::env::var_os("CI").is_some() {
                panic!("sso_groups: CI is set but `{bin}` is missing");
            }
            eprintln!("NOTICE: skipping sso_groups: needs {bin}");
            return;
        }
    }
    let Some(mut lab) = lab_or_skip("sso_groups") else {
        return;
    };
    let t0 = Instant::now();
    let mut console = Console::new(&mut lab, Ipv4Addr::new(10, 81, 0, 1));
    let mut srv = Agent::new(&mut lab, "srv", Ipv4Addr::new(10, 81, 0, 11));
    let mut alap = Agent::new(&mut lab, "alap", Ipv4Addr::new(10, 81, 0, 12));
    let mut blap = Agent::new(&mut lab, "blap", Ipv4Addr::new(10, 81, 0, 13));
    let base = console.url();

    let idp = OidcProvider::start_with(
        &users(&["sales"]),
        "zmesh-console",
        SECRET,
        &OidcOptions {
            redirect_uris: vec![format!("{base}/oidc/callback")],
            ..Default::default()
        },
    );
    let port: u16 = idp.issuer().rsplit(':').next().unwrap().parse().unwrap();
    let _fwd = LoopbackForward::start(&console.ns, port, Duration::from_secs(600));
    let probe_ns = srv.ns.clone();
    console.start_with(
        &mut lab,
        &probe_ns,
        &[
            "--public-url",
            &base,
            "--oidc-issuer",
            idp.issuer(),
            "--oidc-client-id",
            "zmesh-console",
        ],
        &[("ZMESH_OIDC_CLIENT_SECRET", SECRET)],
    );
    let fp = printed_fingerprint(&lab);
    let token = std::fs::read_to_string(console.data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    // The server joins with a key and listens on 22 and 8080 (on its overlay too).
    srv.start_daemon(&mut lab);
    let key = console.create_key(&lab);
    srv.zmesh(
        &lab,
        &[
            "up",
            "--console",
            &base,
            "--enroll-key",
            &key,
            "--name",
            "srv",
        ],
    );
    let srv_ns = srv.ns.clone();
    lab.spawn(
        &srv_ns,
        "tcp-server",
        &["python3", "-c", SERVER, "22", "8080"],
    );
    let policy = lab.dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{
  "version": 1,
  "groups": { "group:eng": [] },
  "rules": [ { "src": ["group:eng"], "dst": ["srv:22"], "proto": "tcp" } ]
}"#,
    )
    .unwrap();
    console.cli(&lab, &["policy", "set", policy.to_str().unwrap()]);

    // alice's and bob's laptops join by signing in.
    alap.start_daemon(&mut lab);
    blap.start_daemon(&mut lab);
    let site = Site {
        lab: &lab,
        console: &console,
        base: base.clone(),
        fp: fp.clone(),
    };
    enroll_by_login(&site, &alap, "alice", "alice@example.com");
    enroll_by_login(&site, &blap, "bob", "bob@example.com");

    // alice (eng) reaches the server on 22, not on 8080; bob learns of no one.
    wait_for(
        "alap to list srv",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (alap.peer_names(&lab) == ["srv"]).then_some(()),
    );
    let srv_ip = srv.overlay_v4(&lab);
    assert!(
        probe(&lab, &alap, srv_ip, 22, true, 10.0),
        "alice cannot reach srv:22"
    );
    assert!(
        stays_closed(&lab, &alap, srv_ip, 8080, 2.0),
        "alice reaches srv:8080, which no rule allows"
    );
    assert_eq!(srv.peer_names(&lab), ["alap"], "srv knows only alice");
    assert!(blap.peer_names(&lab).is_empty(), "bob learns of no one");
    assert!(
        stays_closed(&lab, &blap, srv_ip, 22, 2.0),
        "bob reaches srv:22 while not in eng"
    );

    // bob is moved into eng at the provider and signs in again.
    idp.set_users(&users(&["sales", "eng"]));
    let (b, f) = (base.clone(), fp.clone());
    let (status, t_sync) = in_netns(&console.ns, move || {
        block_on(async move {
            let (status, _) = sso(&console_client(&f), &b, "/oidc/login", "bob", PW).await;
            (status, Instant::now())
        })
    });
    // A member has no console access, but the sign-in synced his groups.
    assert_eq!(status, StatusCode::FORBIDDEN);
    wait_for(
        "blap to list srv and srv to list blap",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || (blap.peer_names(&lab) == ["srv"] && srv.peer_names(&lab).len() == 2).then_some(()),
    );
    let took = t_sync.elapsed();
    eprintln!("group sync: bob's laptop and the server had new maps {took:?} after the sign-in");
    assert!(
        took < Duration::from_secs(2),
        "maps follow a group change at once: {took:?}"
    );
    assert!(
        probe(&lab, &blap, srv_ip, 22, true, 10.0),
        "bob cannot reach srv:22 after joining eng"
    );
    assert!(
        stays_closed(&lab, &blap, srv_ip, 8080, 2.0),
        "bob reaches srv:8080"
    );
    let (b, f, t) = (base.clone(), fp.clone(), token.clone());
    let bob = in_netns(&console.ns, move || {
        block_on(user_record(b, f, t, "bob@example.com"))
    });
    assert_eq!(bob["groups"], json!(["eng", "sales"]), "{bob}");

    for a in [&mut srv, &mut alap, &mut blap] {
        a.stop_daemon(&mut lab);
    }
    console.kill(&mut lab);
    eprintln!("sso_groups passed in {:?}", t0.elapsed());
}
