//! `zmesh-console networks create|list|set|delete`: the networks of one console, over
//! the admin API (`/api/v1/networks`).

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::table;
use super::ApiClient;
use crate::http::api::networks::CreateNetworkBody;

#[derive(Debug, Subcommand)]
pub enum NetworksCmd {
    /// Create a network; its devices enroll with its own enrollment keys
    /// (`keys create --network NAME`).
    Create {
        /// A lower-case DNS label.
        name: String,
        /// Overlay IPv4 range (default: a free random /16 of 100.64.0.0/10).
        #[arg(long, value_name = "CIDR")]
        v4: Option<String>,
        /// Overlay IPv6 range, unique-local (default: a random ULA /48).
        #[arg(long, value_name = "CIDR")]
        v6: Option<String>,
        /// DNS suffix (default NAME.zmesh.internal).
        #[arg(long, value_name = "SUFFIX")]
        dns_suffix: Option<String>,
        /// A device in this network may not be in any other network at the same time.
        #[arg(long)]
        exclusive: bool,
    },
    /// List networks: name, ranges, exclusive, devices, revision.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a network: make it exclusive or not.
    Set {
        name: String,
        /// true: a device in this network may not be in any other at the same time.
        #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
        exclusive: Option<bool>,
    },
    /// Delete a network (not the first one, "default").
    Delete {
        name: String,
        /// Also delete its devices (else a network with devices is refused).
        #[arg(long)]
        force: bool,
    },
}

/// A network name as a path segment: anything but a DNS label cannot match.
fn seg(s: &str) -> anyhow::Result<&str> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("{s:?} is not a network name (a lower-case DNS label)");
    }
    Ok(s)
}

fn yes_no(v: &Value) -> String {
    if v.as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
    .into()
}

pub async fn run(c: ApiClient, cmd: NetworksCmd) -> anyhow::Result<()> {
    match cmd {
        NetworksCmd::Create {
            name,
            v4,
            v6,
            dns_suffix,
            exclusive,
        } => {
            let body = CreateNetworkBody {
                name,
                v4,
                v6,
                dns_suffix,
                exclusive,
            };
            let n: Value = c.post("/api/v1/networks", Some(&body)).await?;
            println!(
                "created network {} {} {}{}",
                n["name"].as_str().unwrap_or("?"),
                n["v4"].as_str().unwrap_or("?"),
                n["v6"].as_str().unwrap_or("?"),
                if n["exclusive"].as_bool() == Some(true) {
                    " (exclusive)"
                } else {
                    ""
                }
            );
            if let Some(other) = n["shares_range_with"].as_str() {
                eprintln!(
                    "note: its IPv4 range lies inside network {other:?}'s; one device cannot be \
                     in both networks at once unless a network has a range of its own (--v4)"
                );
            }
        }
        NetworksCmd::List { json } => {
            let v: Value = c.get("/api/v1/networks").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["networks"])?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["networks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|n| {
                    vec![
                        n["name"].as_str().unwrap_or("").to_string(),
                        n["v4"].as_str().unwrap_or("").to_string(),
                        n["v6"].as_str().unwrap_or("").to_string(),
                        yes_no(&n["exclusive"]),
                        n["devices"].to_string(),
                        n["revision"].to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["NAME", "IPV4", "IPV6", "EXCLUSIVE", "DEVICES", "REVISION"],
                    &rows
                )
            );
        }
        NetworksCmd::Set { name, exclusive } => {
            let Some(x) = exclusive else {
                bail!("nothing to change: give --exclusive true|false");
            };
            let n: Value = c
                .patch(
                    &format!("/api/v1/networks/{}", seg(&name)?),
                    &json!({ "exclusive": x }),
                )
                .await?;
            println!(
                "network {} exclusive: {} (revision {})",
                n["name"].as_str().unwrap_or(&name),
                yes_no(&n["exclusive"]),
                n["revision"]
            );
        }
        NetworksCmd::Delete { name, force } => {
            let path = format!(
                "/api/v1/networks/{}{}",
                seg(&name)?,
                if force { "?force=true" } else { "" }
            );
            let v: Value = c.delete_json(&path).await?;
            println!(
                "deleted network {} ({} device(s) deleted)",
                v["name"].as_str().unwrap_or(&name),
                v["devices_deleted"]
            );
        }
    }
    Ok(())
}
