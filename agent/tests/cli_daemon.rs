//! The real `zmesh` binary as daemon and CLI, without tunnels: the control socket's
//! mode, status of an unenrolled agent, and clear errors for bad input.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn zmesh(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zmesh"))
        .args(args)
        .arg("--state-dir")
        .arg(dir)
        .env_remove("ZMESH_ENROLL_KEY")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn daemon_answers_the_cli_over_a_private_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    // Without a daemon: a clear message.
    let out = zmesh(&dir, &["status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("zmesh daemon"), "{}", stderr(&out));

    let _d = Daemon(
        Command::new(env!("CARGO_BIN_EXE_zmesh"))
            .args([
                "daemon",
                "--tun",
                "zmtest0",
                "--host-dns",
                "off",
                "--state-dir",
            ])
            .arg(&dir)
            .spawn()
            .unwrap(),
    );
    let sock = dir.join("zmesh.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "daemon never created its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let out = zmesh(&dir, &["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["self"].is_null());
    assert_eq!(v["peers"], serde_json::json!([]));
    let out = zmesh(&dir, &["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not enrolled"));

    // `up` before enrolling, a malformed key, a non-https console: clear errors.
    let out = zmesh(&dir, &["up"]);
    assert!(
        !out.status.success() && stderr(&out).contains("not enrolled"),
        "{}",
        stderr(&out)
    );
    let out = zmesh(
        &dir,
        &[
            "up",
            "--console",
            "https://127.0.0.1:9",
            "--enroll-key",
            "nope",
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("--enroll-key"),
        "{}",
        stderr(&out)
    );
    let key = format!("zmek1.{}.{}", "a".repeat(43), "0".repeat(64));
    let out = zmesh(
        &dir,
        &[
            "up",
            "--console",
            "http://127.0.0.1:9",
            "--enroll-key",
            &key,
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("https"),
        "{}",
        stderr(&out)
    );
    // nothing reachable on port 9: the error says so, and no enrollment is recorded
    let out = zmesh(
        &dir,
        &[
            "up",
            "--console",
            "https://127.0.0.1:9",
            "--enroll-key",
            &key,
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("console"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("enrollment.json").exists());
    // the key made for the attempt is private
    let k = dir.join("private.key");
    assert_eq!(
        std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // the private key never appears in status output
    let key_text = std::fs::read_to_string(&k).unwrap();
    let out = zmesh(&dir, &["status", "--json"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(key_text.trim()));

    let out = zmesh(&dir, &["logout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!k.exists(), "logout must remove the private key");
}
