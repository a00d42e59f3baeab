//! The real binary: `zmesh-console serve` on 127.0.0.1:0 in a temp data dir, driven by
//! the admin CLI of the same binary (certificate pinned from DATA_DIR/tls/cert.pem,
//! token from DATA_DIR/admin.token). Also checks file modes and SIGTERM shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_zmesh-console");

/// Kills the console (by its PID) even when the test fails.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cli(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("ZMESH_TOKEN")
        .env_remove("ZMESH_CONSOLE_URL")
        .output()
        .unwrap()
}

fn ok(data: &Path, args: &[&str]) -> String {
    let o = cli(data, args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn start(data: &Path) -> Serve {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--stun-listen",
            "127.0.0.1:0",
            "--tls-san",
            "vpn.example.com",
            "--data-dir",
        ])
        .arg(data)
        .env_remove("ZMESH_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Serve(child);
    let url: PathBuf = data.join("console.url");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !url.exists() {
        assert!(Instant::now() < deadline, "console did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

#[test]
fn serve_and_admin_cli_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = start(&data);

    for (f, mode) in [
        ("admin.token", 0o600),
        ("signing.key", 0o600),
        ("tls/key.pem", 0o600),
        (".", 0o700),
    ] {
        let m = std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{f}");
    }
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();

    // Tags must be declared in the access policy before keys or admins hand them out.
    let pol = dir.path().join("tags.json");
    std::fs::write(
        &pol,
        r#"{"version": 1, "tag_owners": {"tag:web": [], "tag:db": [], "tag:net": [], "tag:a": [], "tag:b": []},
            "rules": [{"src": ["*"], "dst": ["*:*"]}]}"#,
    )
    .unwrap();
    assert!(ok(&data, &["policy", "set", pol.to_str().unwrap()]).contains("policy version 1"));
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\n  \"version\": 1,\n  \"rules\": [{\"src\": [\"group:x\"], \"dst\": [\"*:0\"], \"proto\": \"tcp\"},\n    {\"src\": [\"*\"], \"dst\": [\"*:22\"], \"proto\": \"sctp\"}]}\n",
    )
    .unwrap();
    let o = cli(&data, &["policy", "set", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("3:") && err.contains("4:"), "{err}");
    assert!(err.contains("port 0") && err.contains("sctp"), "{err}");
    assert!(ok(&data, &["policy", "get"]).contains("tag:net"));
    let hist = ok(&data, &["policy", "history"]);
    assert!(
        hist.contains("VERSION") && hist.contains("token:"),
        "{hist}"
    );
    assert_eq!(hist.lines().count(), 3, "{hist}");
    let diff = ok(&data, &["policy", "diff", pol.to_str().unwrap()]);
    assert!(diff.contains("0 edges added, 0 removed"), "{diff}");
    assert!(ok(&data, &["policy", "rollback", "0"]).contains("policy version 2"));
    assert!(ok(&data, &["policy", "rollback", "1"]).contains("policy version 3"));

    let key = ok(
        &data,
        &[
            "keys",
            "create",
            "--reusable",
            "--tags",
            "web,db",
            "--ttl",
            "2h",
            "--description",
            "fleet",
        ],
    );
    let key = key.trim();
    assert!(
        key.starts_with("zmek1.") && !key.contains('\n'),
        "key alone on stdout: {key:?}"
    );
    let fp =
        zmesh_console::infra::tls::fingerprint_of_pem_file(&data.join("tls/cert.pem")).unwrap();
    assert!(
        key.ends_with(&fp.to_string()),
        "key carries the certificate pin"
    );
    let list = ok(&data, &["keys", "list"]);
    assert!(
        list.contains("reusable") && list.contains("db,web") && list.contains("fleet"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&data, &["keys", "list", "--json"])).unwrap();
    let key_id = json[0]["id"].as_str().unwrap().to_string();

    let pk = zmesh_shared::WgPrivateKey::generate()
        .public_key()
        .to_string();
    let out = ok(
        &data,
        &[
            "devices",
            "add",
            "router",
            "--public-key",
            &pk,
            "--tags",
            "net",
        ],
    );
    assert!(out.contains("added router"), "{out}");
    ok(&data, &["devices", "rename", "router", "gw"]);
    assert!(ok(&data, &["devices", "tags", "gw", "a,b"]).contains("a,b"));
    let conf = ok(&data, &["devices", "export-config", "gw"]);
    assert!(
        conf.contains("[Interface]") && conf.contains("# PrivateKey = <set on the device>"),
        "{conf}"
    );
    let table = ok(&data, &["devices", "list"]);
    assert!(
        table.contains("gw") && table.contains("agentless") && table.contains("a,b"),
        "{table}"
    );

    // Errors are reported with the field and a failing exit status.
    let o = cli(&data, &["devices", "rename", "gw", "Bad!"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("field `name`"));
    let o = cli(&data, &["--token", "zmt_wrong", "devices", "list"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("401"));
    // A different pinned certificate is refused: verification cannot be bypassed.
    let other = tempfile::tempdir().unwrap();
    zmesh_console::infra::tls::load_or_create(
        other.path(),
        &zmesh_console::infra::config::TlsSource::SelfSigned { extra_sans: vec![] },
    )
    .unwrap();
    let url = std::fs::read_to_string(data.join("console.url")).unwrap();
    let o = cli(
        other.path(),
        &[
            "--console",
            url.trim(),
            "--token",
            token.trim(),
            "devices",
            "list",
        ],
    );
    assert!(
        !o.status.success(),
        "a console with another certificate must be refused"
    );

    ok(&data, &["devices", "revoke", "gw"]);
    ok(&data, &["devices", "delete", "gw"]);
    let devs: serde_json::Value =
        serde_json::from_str(&ok(&data, &["devices", "list", "--json"])).unwrap();
    assert_eq!(devs.as_array().unwrap().len(), 0);
    ok(&data, &["keys", "revoke", &key_id]);
    assert!(ok(&data, &["keys", "list"]).contains("revoked"));

    // SIGTERM stops it cleanly.
    // SAFETY: plain kill(2) on the PID of the child this test started.
    let rc = unsafe { libc::kill(serve.0.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = serve.0.try_wait().unwrap() {
            assert!(st.success(), "exit status {st}");
            break;
        }
        assert!(Instant::now() < deadline, "console did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
