//! How far a change reached the agents, as the CLI shows it: the commands that change
//! what peers see (`devices revoke`, `policy set`, `users disable`, ...) wait a bounded
//! time for the console's rollout of the change and print `applied by N of M connected
//! peers (p50 X ms, p99 Y ms, max Z ms)`; `--no-wait` skips that. `changes list|show`
//! read the same reports.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use reqwest::StatusCode;
use serde_json::Value;

use super::client::ApiClient;

/// How a changing command waits for the agents.
#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Do not wait for connected peers to acknowledge the change.
    #[arg(long)]
    pub no_wait: bool,
    /// Most seconds to wait for connected peers to acknowledge the change.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub wait: u64,
}

#[derive(Debug, Subcommand)]
pub enum ChangesCmd {
    /// The newest changes: revision, time, how many connected peers applied each.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One change (the first published at or after REVISION), with the devices pending.
    Show {
        revision: u64,
        #[arg(long)]
        json: bool,
    },
}

/// The network revision before a change (`None` with `--no-wait`).
pub async fn before(c: &ApiClient, w: WaitArgs) -> anyhow::Result<Option<u64>> {
    if w.no_wait {
        return Ok(None);
    }
    let v: Value = c.get("/api/v1/changes").await?;
    Ok(v["revision"].as_u64())
}

/// Waits (at most `--wait`) for the rollout of the change made after revision `before`
/// and prints its figures and pending devices.
pub async fn report(c: &ApiClient, w: WaitArgs, before: Option<u64>) -> anyhow::Result<()> {
    let Some(r0) = before else {
        return Ok(());
    };
    let now: Value = c.get("/api/v1/changes").await?;
    if now["revision"].as_u64() == Some(r0) {
        println!("no peer's map changed");
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(w.wait);
    let path = format!("/api/v1/changes/{}", r0 + 1);
    let mut last: Option<Value> = None;
    // bounded by the deadline; polls ten times a second
    while Instant::now() < deadline {
        let r = c.get_response_any(&path).await?;
        if r.status() == StatusCode::OK {
            let v: Value = r.json().await.context("reading the change report")?;
            let done = v["finished"].as_bool() == Some(true);
            last = Some(v);
            if done {
                break;
            }
        } else if r.status() != StatusCode::NOT_FOUND {
            anyhow::bail!("{path}: {}", r.status());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match last {
        Some(v) => print!("{}", describe(&v, true)),
        None => println!(
            "the console has not recorded this change yet; see `zmesh-console changes show {}`",
            r0 + 1
        ),
    }
    Ok(())
}

/// The summary line, and the devices still pending (names, at most a line each kind).
fn describe(v: &Value, waited: bool) -> String {
    let mut out = v["summary"].as_str().unwrap_or("?").to_string();
    if waited && v["finished"].as_bool() != Some(true) {
        out.push_str(&format!(
            " (still waiting: `zmesh-console changes show {}`)",
            v["revision"]
        ));
    }
    out.push('\n');
    let pending = v["pending"].as_array().cloned().unwrap_or_default();
    for (connected, label) in [(true, "not yet applied by"), (false, "pending (offline)")] {
        let names: Vec<&str> = pending
            .iter()
            .filter(|p| p["connected"].as_bool() == Some(connected))
            .filter_map(|p| p["name"].as_str())
            .collect();
        if !names.is_empty() {
            out.push_str(&format!("{label}: {}\n", names.join(", ")));
        }
    }
    out
}

pub async fn run(c: ApiClient, cmd: ChangesCmd) -> anyhow::Result<()> {
    match cmd {
        ChangesCmd::List { json } => {
            let v: Value = c.get("/api/v1/changes").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("network revision {}", v["revision"]);
            for ch in v["changes"].as_array().cloned().unwrap_or_default() {
                let when = ch["made_at_ms"]
                    .as_i64()
                    .and_then(|ms| {
                        std::time::UNIX_EPOCH.checked_add(Duration::from_millis(ms as u64))
                    })
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                    .unwrap_or_default();
                println!(
                    "{:>8}  {when}  {}",
                    ch["revision"],
                    ch["summary"].as_str().unwrap_or("")
                );
            }
        }
        ChangesCmd::Show { revision, json } => {
            let v: Value = c.get(&format!("/api/v1/changes/{revision}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("revision {}", v["revision"]);
                print!("{}", describe(&v, false));
            }
        }
    }
    Ok(())
}
