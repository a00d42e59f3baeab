//! End-to-end enrollment by login, in network namespaces: the real console with single
//! sign-on against the real test OpenID Provider, one agent enrolled with a key and one
//! enrolled by login. `zmesh up --console URL --fingerprint FP` (no key) prints
//! `To sign in, visit: URL` and waits; the test signs in as alice in the browser's
//! place (the provider's login form, then the confirm form with the session cookie,
//! CSRF token and Origin) from inside the console's namespace; `zmesh up` then
//! finishes by itself, the device is alice's, and it pings the key-enrolled agent
//! over the overlay. Needs root and node; with `CI` set, their absence is a failure.

#[path = "../../console/tests/support/oidc.rs"]
mod oidc;
mod support;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::header::COOKIE;
use reqwest::StatusCode;
use serde_json::{json, Value};

use oidc::{cookie_of, input_value, location, login_with_http, OidcOptions, OidcProvider};
use support::netns::{lab_or_skip, tail, wait_for};
use support::nsthread::{in_netns, LoopbackForward};
use support::printed_fingerprint;
use support::{has_binary, text, Agent, Console};

const SECRET: &str = "agent-login-client-secret-7c2e";
const PW: &str = "correct horse battery staple";

/// The user's side, as a browser would do it: open the link, go through single
/// sign-on as alice, confirm. Runs inside the console's namespace.
async fn sign_in_and_confirm(link: String, base: String, fp: String) {
    let pin = fp.parse().unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(zmesh_console::infra::tls_client::pinned_client_config(pin).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert!(to.starts_with("/oidc/login?next=/ui/login/"), "{to}");
    let r = http.get(format!("{base}{to}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let pending = cookie_of(&r, "__Host-zmesh_oidc").expect("the pending sign-in cookie");
    let callback = login_with_http(&location(&r), "alice", PW).await;
    let r = http
        .get(&callback)
        .header(COOKIE, format!("__Host-zmesh_oidc={pending}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let session = cookie_of(&r, "__Host-zmesh_session").expect("a session");
    let with_session =
        |rb: reqwest::RequestBuilder| rb.header(COOKIE, format!("__Host-zmesh_session={session}"));
    let r = with_session(http.get(&link)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("alice@example.com"), "{page}");
    let csrf = input_value(&page, "csrf");
    let name = input_value(&page, "name");
    assert_eq!(name, "alpha", "the name the agent asked for is offered");
    let r = with_session(http.post(&link))
        .header("origin", &base)
        .form(&[("csrf", csrf.as_str()), ("name", name.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("device-added"));
}

/// `GET /api/v1/devices/ID` with the admin token, from inside the console's namespace.
async fn admin_device(base: String, fp: String, token: String, id: String) -> Value {
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(
            zmesh_console::infra::tls_client::pinned_client_config(fp.parse().unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    http.get(format!("{base}/api/v1/devices/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Disables `email` through the admin API (from inside the console's namespace).
async fn disable_user(base: String, fp: String, token: String, email: &str) {
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(
            zmesh_console::infra::tls_client::pinned_client_config(fp.parse().unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let users: Value = http
        .get(format!("{base}/api/v1/users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == email)
        .and_then(|u| u["id"].as_str())
        .unwrap()
        .to_string();
    http.patch(format!("{base}/api/v1/users/{id}"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"disabled": true}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn zmesh_up_without_a_key_enrolls_by_signing_in() {
    if !has_binary("node") {
        if std::env::var_os("CI").is_some() {
            panic!("login_enroll: CI is set but `node` (for the OpenID Provider) is missing");
        }
        eprintln!("NOTICE: skipping login_enroll: needs node for the OpenID Provider");
        return;
    }
    let Some(mut lab) = lab_or_skip("login_enroll") else {
        return;
    };
    let t0 = Instant::now();
    let mut console = Console::new(&mut lab, Ipv4Addr::new(10, 79, 0, 1));
    let mut alpha = Agent::new(&mut lab, "alpha", Ipv4Addr::new(10, 79, 0, 11));
    let mut bravo = Agent::new(&mut lab, "bravo", Ipv4Addr::new(10, 79, 0, 12));
    let base = console.url();

    // The provider listens on the test's loopback; the console reaches it through a
    // forward of the same port inside its namespace.
    let users = json!({
        "alice": {"password": PW, "email": "alice@example.com", "name": "Alice", "groups": ["eng"]},
    });
    let idp = OidcProvider::start_with(
        &users,
        "zmesh-console",
        SECRET,
        &OidcOptions {
            redirect_uris: vec![format!("{base}/oidc/callback")],
            ..Default::default()
        },
    );
    let port: u16 = idp.issuer().rsplit(':').next().unwrap().parse().unwrap();
    let _fwd = LoopbackForward::start(&console.ns, port, Duration::from_secs(600));
    let probe_ns = alpha.ns.clone();
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
    let admin_token = std::fs::read_to_string(console.data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();

    // bravo joins with an enrollment key, as before.
    bravo.start_daemon(&mut lab);
    let key = console.create_key(&lab);
    bravo.zmesh(
        &lab,
        &[
            "up",
            "--console",
            &base,
            "--enroll-key",
            &key,
            "--name",
            "bravo",
        ],
    );

    // alpha has no key: without a fingerprint (or CA file) it is told what to pass.
    alpha.start_daemon(&mut lab);
    let out = alpha.try_zmesh(&lab, &["up", "--console", &base]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--fingerprint SHA256") && text(&out).contains("--ca-file"),
        "{}",
        text(&out)
    );

    // With the fingerprint it starts a login, prints the link and waits.
    let bin = support::zmesh_bin();
    let state = alpha.state_dir.to_str().unwrap().to_string();
    let mut up = lab
        .command(
            &alpha.ns,
            &[
                bin.to_str().unwrap(),
                "up",
                "--console",
                &base,
                "--fingerprint",
                &fp,
                "--name",
                "alpha",
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
    assert!(link.starts_with(&format!("{base}/ui/login/")), "{link}");
    // still waiting for the user
    std::thread::sleep(Duration::from_secs(2));
    assert!(up.try_wait().unwrap().is_none(), "`zmesh up` did not wait");

    let (l, b, f) = (link.clone(), base.clone(), fp.clone());
    in_netns(&console.ns, move || block_on(sign_in_and_confirm(l, b, f)));

    // `zmesh up` finishes by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            let _ = up.wait();
            panic!(
                "`zmesh up` did not finish after the sign-in; daemon log:\n{}",
                tail(&lab.log_path("daemon-alpha"), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = lines.try_iter().collect();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "zmesh up: {status:?} {rest:?} {err}");
    assert_eq!(rest.len(), 1, "one final line after the link: {rest:?}");
    assert!(
        rest[0].starts_with("alpha (") && rest[0].contains("is up"),
        "{rest:?}"
    );

    // alpha is alice's device.
    let s = alpha.status(&lab);
    let id = s["self"]["device_id"].as_str().unwrap().to_string();
    let (b, f, t) = (base.clone(), fp.clone(), admin_token.clone());
    let dev = in_netns(&console.ns, move || block_on(admin_device(b, f, t, id)));
    assert_eq!(dev["owner"], "user:alice@example.com", "{dev}");
    assert_eq!(dev["name"], "alpha", "{dev}");

    // And it reaches bravo over the mesh, and bravo reaches it.
    for (a, want) in [(&alpha, "bravo"), (&bravo, "alpha")] {
        wait_for(
            &format!("{} to list {want}", a.name),
            Duration::from_secs(20),
            Duration::from_millis(200),
            || (a.peer_names(&lab) == [want]).then_some(()),
        );
    }
    let (ip_a, ip_b) = (alpha.overlay_v4(&lab), bravo.overlay_v4(&lab));
    assert!(alpha.ping(&lab, ip_b, 3), "alpha cannot ping bravo");
    assert!(bravo.ping(&lab, ip_a, 3), "bravo cannot ping alpha");

    // The identity provider goes away: existing tunnels are unaffected.
    drop(idp);
    assert!(
        alpha.ping(&lab, ip_b, 2),
        "alpha lost bravo when the IdP stopped"
    );
    assert!(
        bravo.ping(&lab, ip_a, 2),
        "bravo lost alpha when the IdP stopped"
    );

    // Off-boarding: disabling alice revokes her device; bravo drops it at once and
    // packets stop.
    let (b, f, t) = (base.clone(), fp.clone(), admin_token.clone());
    let t_disable = Instant::now();
    in_netns(&console.ns, move || {
        block_on(disable_user(b, f, t, "alice@example.com"))
    });
    wait_for(
        "bravo to drop alice's device",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || bravo.peer_names(&lab).is_empty().then_some(()),
    );
    let took = t_disable.elapsed();
    eprintln!("off-boarding: bravo dropped alice's device {took:?} after the disable call");
    assert!(
        took < Duration::from_secs(2),
        "peers drop a disabled user's device at once: {took:?}"
    );
    assert!(
        !bravo.ping(&lab, ip_a, 2),
        "bravo still reaches alice's device"
    );

    // The poll secret and the credential stay out of the daemon's log.
    let log = std::fs::read_to_string(lab.log_path("daemon-alpha")).unwrap();
    assert!(!log.contains("zmw_") && !log.contains("zmd_"), "{log}");

    alpha.stop_daemon(&mut lab);
    bravo.stop_daemon(&mut lab);
    console.kill(&mut lab);
    eprintln!("login_enroll passed in {:?}", t0.elapsed());
}
