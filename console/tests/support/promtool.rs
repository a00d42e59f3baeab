//! `promtool check metrics` (Debian's `prometheus` package) on a scrape's text. Without
//! promtool the check is skipped with a notice, except under CI, where it must exist.
//! Included with `#[path]` by the console's and the agent's metrics tests.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `text`; panics with its output on any error or
/// lint problem. Returns false (and prints a notice) when promtool is not installed.
pub fn check(text: &str) -> bool {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI: promtool is required ({e}): apt-get install prometheus")
        }
        Err(_) => {
            eprintln!("notice: promtool not installed (apt-get install prometheus); metrics text not linted");
            return false;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n--- text ---\n{text}",
        out.status
    );
    true
}

/// The value of the sample `series` (name and labels exactly as written), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
