//! `zmesh-console serve` (the real binary) with single sign-on against a test OpenID
//! Provider: temp data dir, loopback, no STUN, debug logs to a file the tests read.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_zmesh-console");

/// The console process, killed by its PID when dropped (also when the test fails).
pub struct Serve {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the console with `--oidc-*` flags for `issuer` (client `zmesh-console`, the
/// secret in ZMESH_OIDC_CLIENT_SECRET) plus `extra` flags.
pub fn start(dir: &Path, issuer: &str, secret: &str, extra: &[&str]) -> Serve {
    let data = dir.join("data");
    let log = dir.join("console.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-stun",
            "--oidc-issuer",
            issuer,
            "--oidc-client-id",
            "zmesh-console",
        ])
        .args(extra)
        .env("ZMESH_OIDC_CLIENT_SECRET", secret)
        .env("ZMESH_LOG", "debug")
        .env_remove("ZMESH_DATABASE_URL")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let url_file = data.join("console.url");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !url_file.exists() {
        assert!(Instant::now() < deadline, "console did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = std::fs::read_to_string(url_file)
        .unwrap()
        .trim()
        .to_string();
    Serve {
        child,
        url,
        data,
        log,
    }
}
