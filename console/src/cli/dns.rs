//! `zmesh-console dns`: the network's names. Show and set the DNS suffix (devices
//! answer as `NAME.SUFFIX` at every agent's resolver), add and remove extra records,
//! and split-DNS domains answered by resolvers reachable through the mesh.

use anyhow::bail;
use clap::Subcommand;
use serde_json::Value;

use super::ApiClient;
use crate::http::api::dns::{AddDnsRecord, PutSplitDns, SetDns};

#[derive(Debug, Subcommand)]
pub enum DnsCmd {
    /// Print the suffix, the extra records and the split-DNS domains.
    Show {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set the suffix, e.g. `corp.example` (devices become NAME.corp.example).
    Set { suffix: String },
    /// Go back to the default suffix, NETWORK-NAME.zmesh.internal.
    Reset,
    /// Add an extra name under the suffix: `add-record wiki 100.64.9.9` answers
    /// wiki.SUFFIX (A for an IPv4 address, AAAA for an IPv6 one).
    AddRecord { name: String, ip: String },
    /// Remove every extra record of a name.
    RemoveRecord { name: String },
    /// Answer DOMAIN by these resolvers, reachable through the mesh (split DNS).
    Split {
        domain: String,
        #[arg(required = true, num_args = 1..=4)]
        resolvers: Vec<String>,
    },
    /// Stop answering DOMAIN through the mesh.
    RemoveSplit { domain: String },
}

/// A domain or record name as a path segment: anything else cannot be one.
fn seg(s: &str) -> anyhow::Result<&str> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        bail!("{s:?} is not a valid DNS name");
    }
    Ok(s)
}

fn print(v: &Value) {
    let default = if v["default"].as_bool() == Some(true) {
        " (default)"
    } else {
        ""
    };
    let suffix = v["suffix"].as_str().unwrap_or("?");
    println!("suffix {suffix}{default}");
    for r in v["records"].as_array().into_iter().flatten() {
        println!(
            "record {}.{suffix} {}",
            r["name"].as_str().unwrap_or("?"),
            r["ip"].as_str().unwrap_or("?")
        );
    }
    for s in v["split"].as_array().into_iter().flatten() {
        let rs: Vec<&str> = s["resolvers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str())
            .collect();
        println!(
            "split {} -> {}",
            s["domain"].as_str().unwrap_or("?"),
            rs.join(" ")
        );
    }
}

pub async fn run(c: ApiClient, cmd: DnsCmd) -> anyhow::Result<()> {
    let v: Value = match cmd {
        DnsCmd::Show { json } => {
            let v: Value = c.get("/api/v1/dns").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            v
        }
        DnsCmd::Set { suffix } => {
            let body = SetDns {
                suffix: Some(suffix),
            };
            c.put("/api/v1/dns", &body).await?
        }
        DnsCmd::Reset => c.put("/api/v1/dns", &SetDns { suffix: None }).await?,
        DnsCmd::AddRecord { name, ip } => {
            c.post("/api/v1/dns/records", Some(&AddDnsRecord { name, ip }))
                .await?
        }
        DnsCmd::RemoveRecord { name } => {
            c.delete_json(&format!("/api/v1/dns/records/{}", seg(&name)?))
                .await?
        }
        DnsCmd::Split { domain, resolvers } => {
            c.put(
                &format!("/api/v1/dns/split/{}", seg(&domain)?),
                &PutSplitDns { resolvers },
            )
            .await?
        }
        DnsCmd::RemoveSplit { domain } => {
            c.delete_json(&format!("/api/v1/dns/split/{}", seg(&domain)?))
                .await?
        }
    };
    print(&v);
    Ok(())
}
