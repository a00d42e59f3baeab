//! `zmesh-console policy …`: show, set, check, diff, history and rollback of the
//! access policy. `set` and `diff` print every problem of a refused policy as
//! `line:col: reason` (on stderr) and fail; `check` exits 0 when allowed, 1 when denied.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use zmesh_shared::policy::PolicyError;

use super::client::ApiClient;
use super::output;

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Print the policy in force.
    Get {
        /// Print version, author and summary as JSON instead of the text alone.
        #[arg(long)]
        json: bool,
    },
    /// Validate FILE against the live inventory and make it the policy in force.
    Set {
        file: PathBuf,
        #[command(flatten)]
        wait: super::changes::WaitArgs,
    },
    /// May SRC reach DST? PROTO/PORT is e.g. tcp/22, udp/53, icmp or any.
    /// Exits 0 when allowed, 1 when denied.
    Check {
        src: String,
        dst: String,
        #[arg(value_name = "PROTO/PORT")]
        proto_port: String,
    },
    /// Show every (source, destination, proto/ports) edge FILE would add or remove.
    Diff {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List every version, newest first.
    History {
        #[arg(long)]
        json: bool,
    },
    /// Make a copy of VERSION the policy in force (validated like `set`).
    Rollback {
        version: u64,
        #[command(flatten)]
        wait: super::changes::WaitArgs,
    },
}

/// Parses `tcp/22`, `udp/53`, `icmp`, `any`.
pub fn parse_proto_port(s: &str) -> anyhow::Result<(String, Option<u16>)> {
    let (proto, port) = match s.split_once('/') {
        Some((p, n)) => {
            let n: u16 = n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{n:?} is not a port (1-65535)"))?;
            (p, Some(n))
        }
        None => (s, None),
    };
    let proto = proto.to_ascii_lowercase();
    match (proto.as_str(), port) {
        ("tcp" | "udp", None) => bail!("{proto} needs a port: {proto}/PORT"),
        ("tcp" | "udp" | "icmp" | "any", _) => Ok((proto, port)),
        _ => bail!("unknown protocol {proto:?}: expected tcp/PORT, udp/PORT, icmp or any"),
    }
}

/// Prints the reasons of a 422 policy rejection and fails; other errors pass through.
fn fail_rejected(status: StatusCode, body: &str) -> anyhow::Result<Value> {
    if status.is_success() {
        return serde_json::from_str(body).context("the console's answer is not JSON");
    }
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(errs) = v.get("errors").and_then(Value::as_array) {
        for e in errs {
            match serde_json::from_value::<PolicyError>(e.clone()) {
                Ok(pe) => eprintln!("{pe}"),
                Err(_) => eprintln!("{e}"),
            }
        }
        bail!(
            "{}",
            v["error"]["message"].as_str().unwrap_or("policy rejected")
        );
    }
    match v["error"]["message"].as_str() {
        Some(m) => bail!("{m} ({status})"),
        None => bail!("console answered {status}"),
    }
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

pub async fn run(c: ApiClient, cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Get { json } => {
            let v: Value = c.get("/api/v1/policy").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                eprintln!(
                    "# version {} by {}",
                    v["version"],
                    v["author"].as_str().unwrap_or("?")
                );
                print!("{}", v["text"].as_str().unwrap_or(""));
            }
        }
        PolicyCmd::Set { file, wait } => {
            let text = read(&file)?;
            let r0 = super::changes::before(&c, wait).await?;
            let (status, body) = c
                .raw(Method::PUT, "/api/v1/policy", Some(("text/plain", text)))
                .await?;
            let v = fail_rejected(status, &body)?;
            println!(
                "policy version {} in force (network revision {}): {}",
                v["version"],
                v["revision"],
                v["summary"].as_str().unwrap_or("")
            );
            super::changes::report(&c, wait, r0).await?;
        }
        PolicyCmd::Check {
            src,
            dst,
            proto_port,
        } => {
            let (proto, port) = parse_proto_port(&proto_port)?;
            let body = json!({"src": src, "dst": dst, "proto": proto, "port": port});
            let v: Value = c.post("/api/v1/policy/check", Some(&body)).await?;
            if v["allowed"].as_bool() == Some(true) {
                let r = &v["rule"];
                println!(
                    "allowed: {src} -> {dst} {proto_port} by rule {} (line {}, column {})",
                    r["index"].as_u64().map_or(0, |i| i + 1),
                    r["line"],
                    r["column"]
                );
            } else {
                println!("denied: no rule accepts {src} -> {dst} {proto_port}");
                std::process::exit(1);
            }
        }
        PolicyCmd::Diff { file, json } => {
            let text = read(&file)?;
            let (status, body) = c
                .raw(
                    Method::POST,
                    "/api/v1/policy/diff",
                    Some(("text/plain", text)),
                )
                .await?;
            let v = fail_rejected(status, &body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for e in v["changes"].as_array().into_iter().flatten() {
                    let ports = output::join(&e["ports"]);
                    println!(
                        "{} {} -> {} {}{}",
                        if e["added"].as_bool() == Some(true) {
                            "+"
                        } else {
                            "-"
                        },
                        e["src_name"].as_str().unwrap_or("?"),
                        e["dst_name"].as_str().unwrap_or("?"),
                        e["proto"].as_str().unwrap_or("?"),
                        if ports.is_empty() {
                            String::new()
                        } else {
                            format!("/{ports}")
                        }
                    );
                }
                println!("{}", v["summary"].as_str().unwrap_or(""));
            }
        }
        PolicyCmd::History { json } => {
            let v: Value = c.get("/api/v1/policy/history").await?;
            let items = v["versions"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", output::policy_table(&items));
            }
        }
        PolicyCmd::Rollback { version, wait } => {
            let r0 = super::changes::before(&c, wait).await?;
            let body = serde_json::to_string(&json!({ "version": version }))?;
            let (status, body) = c
                .raw(
                    Method::POST,
                    "/api/v1/policy/rollback",
                    Some(("application/json", body)),
                )
                .await?;
            let v = fail_rejected(status, &body)?;
            println!(
                "policy version {} in force (copy of version {version}): {}",
                v["version"],
                v["summary"].as_str().unwrap_or("")
            );
            super::changes::report(&c, wait, r0).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_port_forms() {
        assert_eq!(
            parse_proto_port("tcp/22").unwrap(),
            ("tcp".into(), Some(22))
        );
        assert_eq!(parse_proto_port("ICMP").unwrap(), ("icmp".into(), None));
        assert!(parse_proto_port("tcp").is_err());
        assert!(parse_proto_port("tcp/0").is_err());
        assert!(parse_proto_port("tcp/70000").is_err());
        assert!(parse_proto_port("sctp/1").is_err());
    }
}
