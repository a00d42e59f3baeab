//! `zmesh-console routes list|approve|unapprove`: the routes devices advertise (subnet
//! routers, exit nodes) and their approval, over the admin API.

use clap::Subcommand;
use serde_json::{json, Value};

use super::output::table;
use super::ApiClient;

#[derive(Debug, Subcommand)]
pub enum RoutesCmd {
    /// List advertised routes: device, prefix, exit node, approved (by whom), online.
    List {
        /// Print the raw objects as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a route a device advertises.
    ///
    /// It then carries what the policy's rules name, nothing more. An exit node offers
    /// 0.0.0.0/0 and ::/0: approve both.
    Approve {
        /// Device name or id.
        device: String,
        /// The advertised prefix, e.g. 10.1.0.0/24.
        prefix: String,
    },
    /// Withdraw the approval of a route; peers stop using it with their next map.
    Unapprove {
        /// Device name or id.
        device: String,
        /// The advertised prefix.
        prefix: String,
    },
}

fn cell(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

pub async fn run(c: ApiClient, cmd: RoutesCmd) -> anyhow::Result<()> {
    match cmd {
        RoutesCmd::List { json } => {
            let v: Value = c.get("/api/v1/routes").await?;
            let items = v["routes"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(());
            }
            let yes = |b: &Value| {
                if b.as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
            };
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|r| {
                    vec![
                        cell(&r["device_name"]),
                        cell(&r["prefix"]),
                        yes(&r["exit_node"]).into(),
                        if r["approved"].as_bool() == Some(true) {
                            format!("yes ({})", cell(&r["approved_by"]))
                        } else {
                            "no".into()
                        },
                        yes(&r["online"]).into(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["DEVICE", "PREFIX", "EXIT", "APPROVED", "ONLINE"], &rows)
            );
        }
        RoutesCmd::Approve { device, prefix } => {
            let v: Value = c
                .post(
                    "/api/v1/routes/approve",
                    Some(&json!({ "device": device, "prefix": prefix })),
                )
                .await?;
            println!(
                "{} via {} approved by {}",
                cell(&v["prefix"]),
                cell(&v["device_name"]),
                cell(&v["approved_by"])
            );
        }
        RoutesCmd::Unapprove { device, prefix } => {
            let v: Value = c
                .post(
                    "/api/v1/routes/unapprove",
                    Some(&json!({ "device": device, "prefix": prefix })),
                )
                .await?;
            println!(
                "{} via {} is no longer approved",
                cell(&v["prefix"]),
                cell(&v["device_name"])
            );
        }
    }
    Ok(())
}
