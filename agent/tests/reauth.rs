//! End-to-end re-authentication, in network namespaces: the real console with single
//! sign-on against the real test OpenID Provider, a server agent enrolled with a key
//! (bravo) and alice's agent enrolled by login (alpha). alice's device key expires (an
//! admin sets the expiry in the past): bravo drops it and pings stop; `zmesh up` says
//! to sign in again; `zmesh up --reauth` prints a link, alice signs in and confirms in
//! the browser's place, and the command finishes: same device id and overlay addresses,
//! a new public key at the console, pings work again. The old key is refused: stock
//! `wireguard-go` holding alpha's old private key never completes a handshake with
//! bravo, and the same interface given the new key does. Also: an admin's renewal brings
//! an expired device back by itself, an abandoned `--reauth` changes nothing, and
//! `--reauth` with the tunnels down works too. Needs root, node, wireguard-go and wg;
//! with `CI` set, their absence is a failure.

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
use support::netns::{lab_or_skip, tail, wait_for, Lab};
use support::nsthread::{in_netns, LoopbackForward};
use support::printed_fingerprint;
use support::{has_binary, text, Agent, Console, WireguardGo};

const SECRET: &str = "agent-reauth-client-secret-2b9d";
const PW: &str = "correct horse battery staple";

fn client(fp: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(
            zmesh_console::infra::tls_client::pinned_client_config(fp.parse().unwrap()).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The user's side, as a browser would do it: open the link, single sign-on as alice,
/// confirm. For a re-authentication the page names the device and asks for no name.
/// Runs inside the console's namespace.
async fn sign_in_and_confirm(link: String, base: String, fp: String, reauth: bool) {
    let http = client(&fp);
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
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
    let csrf = input_value(&page, "csrf");
    let mut form = vec![("csrf", csrf)];
    if reauth {
        assert!(
            page.contains("Sign in again for device <b>alpha</b>"),
            "{page}"
        );
    } else {
        form.push(("name", "alpha".to_string()));
    }
    let r = with_session(http.post(&link))
        .header("origin", &base)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    let want = if reauth {
        "device-reauth"
    } else {
        "device-added"
    };
    assert!(page.contains(want), "{page}");
}

/// An admin API call with the admin token, from inside the console's namespace.
async fn admin(
    base: String,
    fp: String,
    token: String,
    path: String,
    patch: Option<Value>,
) -> Value {
    let http = client(&fp);
    let url = format!("{base}{path}");
    let rb = match patch {
        Some(b) => http.patch(url).json(&b),
        None => http.get(url),
    };
    rb.bearer_auth(token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs `zmesh up ARGS` on `agent`, waits for its sign-in link, lets the user confirm,
/// and returns the lines it printed after the link.
fn up_with_sign_in(
    lab: &Lab,
    agent: &Agent,
    args: &[&str],
    console: &Console,
    fp: &str,
    reauth: bool,
) -> Vec<String> {
    let bin = support::zmesh_bin();
    let state = agent.state_dir.to_str().unwrap().to_string();
    let mut full = vec![bin.to_str().unwrap(), "up"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--state-dir", &state]);
    let mut up = lab
        .command(&agent.ns, &full)
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
    let first = match lines.recv_timeout(Duration::from_secs(30)) {
        Ok(l) => l,
        Err(_) => {
            let _ = up.kill();
            let out = up.wait_with_output().unwrap();
            panic!(
                "`zmesh up {args:?}` printed no sign-in link: {}",
                text(&out)
            );
        }
    };
    let link = first
        .strip_prefix("To sign in, visit: ")
        .unwrap_or_else(|| panic!("first line of `zmesh up`: {first:?}"))
        .to_string();
    let (l, b, f) = (link, console.url(), fp.to_string());
    in_netns(&console.ns, move || {
        block_on(sign_in_and_confirm(l, b, f, reauth))
    });
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
                tail(&lab.log_path(&format!("daemon-{}", agent.name)), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = lines.try_iter().collect();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "zmesh up: {status:?} {rest:?} {err}");
    rest
}

/// Starts `zmesh up --reauth --json`, checks the link it prints, and interrupts it.
fn abandon_reauth(lab: &Lab, agent: &Agent, base: &str) {
    let bin = support::zmesh_bin();
    let state = agent.state_dir.to_str().unwrap().to_string();
    let mut up = lab
        .command(
            &agent.ns,
            &[
                bin.to_str().unwrap(),
                "up",
                "--reauth",
                "--json",
                "--state-dir",
                &state,
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = up.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(30));
    let _ = up.kill();
    let _ = up.wait();
    let first = first.expect("`zmesh up --reauth --json` printed no link");
    let v: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    let link = v["login_url"].as_str().unwrap();
    assert!(link.starts_with(&format!("{base}/ui/login/")), "{v}");
    assert!(v["expires_at_ms"].as_i64().unwrap() > now_ms(), "{v}");
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
        .to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn reauth_keeps_the_device_and_rotates_its_key() {
    let missing: Vec<&str> = ["node", "wireguard-go", "wg"]
        .into_iter()
        .filter(|b| !has_binary(b))
        .collect();
    if !missing.is_empty() {
        if std::env::var_os("CI").is_some() {
            panic!("reauth: CI is set but {missing:?} missing");
        }
        eprintln!("NOTICE: skipping reauth: needs {missing:?}");
        return;
    }
    let Some(mut lab) = lab_or_skip("reauth") else {
        return;
    };
    let t0 = Instant::now();
    let mut console = Console::new(&mut lab, Ipv4Addr::new(10, 76, 0, 1));
    let mut alpha = Agent::new(&mut lab, "alpha", Ipv4Addr::new(10, 76, 0, 11));
    let mut bravo = Agent::new(&mut lab, "bravo", Ipv4Addr::new(10, 76, 0, 12));
    let wg_ns = lab
        .add_node(Ipv4Addr::new(10, 76, 0, 21))
        .expect("wireguard-go namespace");
    let base = console.url();
    let users = json!({
        "alice": {"password": PW, "email": "alice@example.com", "name": "Alice", "groups": []},
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
            "--device-key-lifetime",
            "7",
        ],
        &[("ZMESH_OIDC_CLIENT_SECRET", SECRET)],
    );
    let fp = printed_fingerprint(&lab);
    let token = std::fs::read_to_string(console.data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let api = |path: String, patch: Option<Value>| {
        let (b, f, t) = (base.clone(), fp.clone(), token.clone());
        in_netns(&console.ns, move || block_on(admin(b, f, t, path, patch)))
    };

    // bravo joins with an enrollment key; alpha by alice's sign-in.
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
    alpha.start_daemon(&mut lab);
    let rest = up_with_sign_in(
        &lab,
        &alpha,
        &["--console", &base, "--fingerprint", &fp, "--name", "alpha"],
        &console,
        &fp,
        false,
    );
    assert!(rest.iter().any(|l| l.contains("is up")), "{rest:?}");
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
    let s1 = alpha.status(&lab);
    let id = s1["self"]["device_id"].as_str().unwrap().to_string();
    let old_pub = s1["self"]["public_key"].as_str().unwrap().to_string();
    let old_key = std::fs::read_to_string(alpha.state_dir.join("private.key")).unwrap();
    let dev = api(format!("/api/v1/devices/{id}"), None);
    assert_eq!(dev["public_key"], old_pub.as_str());
    let exp = dev["key_expires_at_ms"].as_i64().expect("an expiry");
    assert!(
        (exp - (now_ms() + 7 * 86_400_000)).abs() < 600_000,
        "login-enrolled keys expire after --device-key-lifetime: {dev}"
    );
    // `zmesh status` shows it (the console tells it on connecting).
    let shown = rfc3339(exp);
    assert_eq!(s1["self"]["key_expires_at"], shown.as_str(), "{s1}");
    let table = alpha.zmesh(&lab, &["status"]);
    assert!(table.contains(&format!("key expires {shown}")), "{table}");

    // The key expires: bravo drops alpha, alpha drops its peers, pings stop.
    api(
        format!("/api/v1/devices/{id}"),
        Some(json!({"key_expires_at_ms": now_ms() - 1000})),
    );
    wait_for(
        "bravo to drop the expired device",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || bravo.peer_names(&lab).is_empty().then_some(()),
    );
    wait_for(
        "alpha to know its key expired",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || (alpha.status(&lab)["self"]["state"] == "expired").then_some(()),
    );
    assert!(
        alpha.peer_names(&lab).is_empty(),
        "an expired device keeps no peers"
    );
    assert!(!bravo.ping(&lab, ip_a, 2), "bravo still reaches alpha");
    let out = alpha.try_zmesh(&lab, &["up"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("zmesh up --reauth"), "{}", text(&out));

    // A sign-in nobody completes changes nothing local (its link, printed as JSON, is
    // left unused and the command interrupted).
    abandon_reauth(&lab, &alpha, &base);
    assert_eq!(
        std::fs::read_to_string(alpha.state_dir.join("private.key")).unwrap(),
        old_key
    );
    assert_eq!(alpha.status(&lab)["self"]["state"], "expired");

    // A restart remembers the expiry (and the console confirms it).
    alpha.stop_daemon(&mut lab);
    alpha.start_daemon(&mut lab);
    assert_eq!(alpha.status(&lab)["self"]["state"], "expired");
    wait_for(
        "alpha to drop its cached peers again",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || alpha.peer_names(&lab).is_empty().then_some(()),
    );

    // An admin may renew the key instead: the agent, asking again by itself, comes back
    // (the way back of a device enrolled with a key). Then it expires again.
    let t_renew = Instant::now();
    api(
        format!("/api/v1/devices/{id}"),
        Some(json!({"key_expires_at_ms": now_ms() + 86_400_000})),
    );
    wait_for(
        "alpha to come back after the renewal",
        Duration::from_secs(45),
        Duration::from_millis(200),
        || {
            (alpha.status(&lab)["self"]["state"] == "up" && alpha.peer_names(&lab) == ["bravo"])
                .then_some(())
        },
    );
    eprintln!(
        "reauth: back {:?} after an admin renewed the key",
        t_renew.elapsed()
    );
    assert!(
        bravo.ping(&lab, ip_a, 2),
        "bravo cannot reach the renewed alpha"
    );
    api(
        format!("/api/v1/devices/{id}"),
        Some(json!({"key_expires_at_ms": now_ms() - 1000})),
    );
    wait_for(
        "alpha to know its key expired again",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || (alpha.status(&lab)["self"]["state"] == "expired").then_some(()),
    );
    // Renewed while the agent was stopped: it comes back when started.
    alpha.stop_daemon(&mut lab);
    api(
        format!("/api/v1/devices/{id}"),
        Some(json!({"key_expires_at_ms": now_ms() + 86_400_000})),
    );
    alpha.start_daemon(&mut lab);
    wait_for(
        "alpha to come back after a renewal while stopped",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            (alpha.status(&lab)["self"]["state"] == "up" && alpha.peer_names(&lab) == ["bravo"])
                .then_some(())
        },
    );
    api(
        format!("/api/v1/devices/{id}"),
        Some(json!({"key_expires_at_ms": now_ms() - 1000})),
    );
    wait_for(
        "alpha to know its key expired a third time",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || (alpha.status(&lab)["self"]["state"] == "expired").then_some(()),
    );

    // `zmesh up --reauth`: alice signs in again; same device, new key.
    let rest = up_with_sign_in(&lab, &alpha, &["--reauth"], &console, &fp, true);
    assert_eq!(rest.len(), 1, "one final line after the link: {rest:?}");
    assert!(
        rest[0].starts_with("alpha re-authenticated: same device ")
            && rest[0].contains(&id)
            && rest[0].contains(&ip_a.to_string()),
        "{rest:?}"
    );
    let s2 = alpha.status(&lab);
    assert_eq!(s2["self"]["device_id"], id.as_str());
    assert_eq!(s2["self"]["overlay_ips"], s1["self"]["overlay_ips"]);
    assert_eq!(s2["self"]["state"], "up");
    let new_pub = s2["self"]["public_key"].as_str().unwrap().to_string();
    assert_ne!(new_pub, old_pub, "the key was rotated");
    assert!(rest[0].contains(&new_pub), "{rest:?}");
    let dev = api(format!("/api/v1/devices/{id}"), None);
    assert_eq!(dev["public_key"], new_pub.as_str(), "{dev}");
    assert_eq!(dev["name"], "alpha");
    let exp2 = dev["key_expires_at_ms"].as_i64().unwrap();
    assert!(exp2 > now_ms() + 6 * 86_400_000, "{dev}");
    wait_for(
        "status to show the renewed expiry",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (alpha.status(&lab)["self"]["key_expires_at"] == rfc3339(exp2).as_str()).then_some(()),
    );
    let t_back = Instant::now();
    for (a, want) in [(&alpha, "bravo"), (&bravo, "alpha")] {
        wait_for(
            &format!("{} to list {want} again", a.name),
            Duration::from_secs(20),
            Duration::from_millis(100),
            || (a.peer_names(&lab) == [want]).then_some(()),
        );
        eprintln!(
            "reauth: {} lists {want} {:?} after `zmesh up --reauth` ended",
            a.name,
            t_back.elapsed()
        );
    }
    let bravo_sees = bravo.status(&lab)["peers"][0]["public_key"].clone();
    assert_eq!(bravo_sees, new_pub.as_str(), "bravo has alpha's new key");
    assert!(alpha.ping(&lab, ip_b, 3), "alpha cannot ping bravo again");
    assert!(bravo.ping(&lab, ip_a, 3), "bravo cannot ping alpha again");

    // The old key is refused: stock WireGuard with alpha's old private key gets no
    // handshake from bravo; given the new key, the same interface does.
    let bs = bravo.status(&lab);
    let bravo_pub = bs["self"]["public_key"].as_str().unwrap().to_string();
    let bravo_port = bs["self"]["listen_port"].as_u64().unwrap();
    let setconf = format!(
        "[Interface]\nPrivateKey = {}\n[Peer]\nPublicKey = {bravo_pub}\nEndpoint = {}:{bravo_port}\n\
         AllowedIPs = {ip_b}/32\nPersistentKeepalive = 1\n",
        old_key.trim(),
        bravo.underlay,
    );
    let wg = WireguardGo::start(&mut lab, &wg_ns, "r", &setconf, &[], &[]);
    // wireguard-go retries its handshake every 5 s: three or more tries in 12 s.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        wg.handshakes(&lab, &wg_ns),
        vec![0],
        "bravo answered a handshake from alpha's old key"
    );
    let new_key_file = alpha.state_dir.join("private.key");
    lab.exec_ok(
        &wg_ns,
        &[
            "wg",
            "set",
            &wg.ifname,
            "private-key",
            new_key_file.to_str().unwrap(),
        ],
    )
    .unwrap();
    wait_for(
        "a handshake with alpha's new key",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            wg.handshakes(&lab, &wg_ns)
                .iter()
                .any(|t| *t > 0)
                .then_some(())
        },
    );
    wg.stop(&mut lab);

    // With the tunnels down, `--reauth` works too (and brings them up): a third key.
    alpha.zmesh(&lab, &["down"]);
    let rest = up_with_sign_in(&lab, &alpha, &["--reauth"], &console, &fp, true);
    assert!(rest[0].contains("re-authenticated"), "{rest:?}");
    let s3 = alpha.status(&lab);
    assert_eq!(s3["self"]["device_id"], id.as_str());
    assert_eq!(s3["self"]["overlay_ips"], s1["self"]["overlay_ips"]);
    assert_eq!(s3["self"]["state"], "up");
    let third = s3["self"]["public_key"].as_str().unwrap();
    assert!(third != new_pub && third != old_pub, "{s3}");
    wait_for(
        "bravo to have alpha's third key",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || (bravo.status(&lab)["peers"][0]["public_key"] == third).then_some(()),
    );
    assert!(
        alpha.ping(&lab, ip_b, 3),
        "alpha cannot ping bravo after the third key"
    );

    // Secrets stay out of the daemon's log.
    let log = std::fs::read_to_string(lab.log_path("daemon-alpha")).unwrap();
    assert!(!log.contains("zmw_") && !log.contains("zmd_"), "{log}");
    assert!(!log.contains(old_key.trim()), "private key in the log");

    alpha.stop_daemon(&mut lab);
    bravo.stop_daemon(&mut lab);
    console.kill(&mut lab);
    drop(idp);
    eprintln!("reauth passed in {:?}", t0.elapsed());
}
