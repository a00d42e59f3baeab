//! `zmesh-console dns`: show and set the network's DNS suffix (devices answer as
//! `NAME.SUFFIX` at every agent's resolver).

use clap::Subcommand;
use serde_json::Value;

use super::ApiClient;
use crate::http::api::dns::SetDns;

#[derive(Debug, Subcommand)]
pub enum DnsCmd {
    /// Print the suffix in force.
    Show {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set the suffix, e.g. `corp.example` (devices become NAME.corp.example).
    Set { suffix: String },
    /// Go back to the default suffix, NETWORK-NAME.zmesh.internal.
    Reset,
}

fn print(v: &Value) {
    let default = if v["default"].as_bool() == Some(true) {
        " (default)"
    } else {
        ""
    };
    println!("suffix {}{default}", v["suffix"].as_str().unwrap_or("?"));
}

pub async fn run(c: ApiClient, cmd: DnsCmd) -> anyhow::Result<()> {
    match cmd {
        DnsCmd::Show { json } => {
            let v: Value = c.get("/api/v1/dns").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print(&v);
            }
        }
        DnsCmd::Set { suffix } => {
            let body = SetDns {
                suffix: Some(suffix),
            };
            print(&c.put("/api/v1/dns", &body).await?);
        }
        DnsCmd::Reset => print(&c.put("/api/v1/dns", &SetDns { suffix: None }).await?),
    }
    Ok(())
}
