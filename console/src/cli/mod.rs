//! Command line of `zmesh-console`: `serve`, and the admin commands (`keys`,
//! `devices`, `policy`) that call a running console's REST API over HTTPS, pinning its
//! certificate from DATA_DIR/tls/cert.pem (or a CA file) and authenticating with
//! DATA_DIR/admin.token (or --token / ZMESH_TOKEN).

mod admin;
mod audit;
mod audit_report;
mod changes;
mod client;
mod dns;
mod networks;
mod output;
mod policy;
mod routes;
mod users;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::http::api::types::{AddDevice, CreateEnrollKey, PatchDevice};
use crate::infra::config::{ServeArgs, ServeConfig};
pub use client::ApiClient;

#[derive(Debug, Parser)]
#[command(
    name = "zmesh-console",
    version,
    about = "zmesh control plane and its admin CLI"
)]
pub struct Cli {
    /// Data directory (database, TLS identity, signing key, admin token).
    #[arg(
        long,
        env = "ZMESH_DATA_DIR",
        default_value = "./zmesh-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        env = "ZMESH_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; colours only when standard error is a terminal.
    Text,
    /// One JSON object per line (for journald/SIEM pipelines).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the console (HTTPS API for agents and admins).
    Serve(Box<ServeArgs>),
    /// Run a relay alone (TLS/TCP forwarding for devices without a direct path).
    Relay(crate::relay::cli::RelayArgs),
    /// Console accounts, straight in the database (first admin, password reset).
    Admin {
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
    /// Manage enrollment keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Manage devices.
    Devices {
        #[command(subcommand)]
        cmd: DevicesCmd,
    },
    /// List the routes devices advertise (subnet routers, exit nodes); approve them.
    Routes {
        #[command(subcommand)]
        cmd: routes::RoutesCmd,
    },
    /// Names: the DNS suffix (devices answer as NAME.SUFFIX), extra records, split DNS.
    Dns {
        #[command(subcommand)]
        cmd: dns::DnsCmd,
    },
    /// Show, change, check and roll back the access policy.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Export and verify the tamper-evident audit log; read flow records.
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
    /// Manage admin and auditor API tokens.
    Tokens {
        #[command(subcommand)]
        cmd: audit::TokensCmd,
    },
    /// List, disable and enable console users (local and SSO).
    Users {
        #[command(subcommand)]
        cmd: users::UsersCmd,
    },
    /// How far each change reached the agents: applied by N of M connected peers.
    Changes {
        #[command(subcommand)]
        cmd: changes::ChangesCmd,
    },
    /// Several networks on one console: create, list, make exclusive, delete.
    Networks {
        #[command(subcommand)]
        cmd: networks::NetworksCmd,
    },
}

/// How the CLI reaches the console.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Console URL (default: DATA_DIR/console.url).
    #[arg(
        long = "console",
        env = "ZMESH_CONSOLE_URL",
        global = true,
        value_name = "URL"
    )]
    pub console: Option<String>,
    /// Admin API token (default: DATA_DIR/admin.token). Prefer the env var to the flag.
    #[arg(long, env = "ZMESH_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Verify the console against this CA bundle instead of pinning DATA_DIR/tls/cert.pem.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The network a command acts in, by name (default: the token's own network if it
    /// is scoped to one, else the first network, "default"). With `users create` and
    /// `tokens create`: the one network the new account or token is scoped to.
    #[arg(long, env = "ZMESH_NETWORK", global = true, value_name = "NAME")]
    pub network: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create an enrollment key; prints the key alone on stdout.
    Create {
        /// May enroll any number of devices (default: one device).
        #[arg(long)]
        reusable: bool,
        /// Devices enrolled with it wait for `devices approve`.
        #[arg(long)]
        needs_approval: bool,
        /// Tags given to devices enrolled with it (comma-separated).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Lifetime, e.g. 30m, 24h, 7d (default 24h, at most 365d).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List enrollment keys.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an enrollment key.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum DevicesCmd {
    /// List devices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending device.
    Approve {
        device: String,
        #[command(flatten)]
        wait: changes::WaitArgs,
    },
    /// Revoke a device (its credential dies at once; peers drop it).
    Revoke {
        device: String,
        #[command(flatten)]
        wait: changes::WaitArgs,
    },
    /// Delete a device.
    Delete {
        device: String,
        #[command(flatten)]
        wait: changes::WaitArgs,
    },
    /// Rename a device.
    Rename {
        device: String,
        new_name: String,
        #[command(flatten)]
        wait: changes::WaitArgs,
    },
    /// Replace a device's tags (comma-separated; "" clears them).
    Tags {
        device: String,
        tags: String,
        #[command(flatten)]
        wait: changes::WaitArgs,
    },
    /// Register an agentless (stock WireGuard) device.
    Add {
        name: String,
        #[arg(long)]
        public_key: String,
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Print the wg-quick configuration of an agentless device.
    ExportConfig { device: String },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let cfg = ServeConfig::from_args(&cli.data_dir, *args)?;
            crate::server::run(cfg).await
        }
        Command::Relay(args) => crate::relay::cli::run(&cli.data_dir, args).await,
        Command::Admin { cmd } => admin::run(&cli.data_dir, cmd).await,
        Command::Keys { cmd } => keys(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await,
        Command::Devices { cmd } => {
            devices(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await
        }
        Command::Routes { cmd } => {
            routes::run(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await
        }
        Command::Dns { cmd } => {
            dns::run(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await
        }
        Command::Policy { cmd } => {
            policy::run(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await
        }
        Command::Audit {
            cmd:
                audit::AuditCmd::Verify {
                    file: Some(f),
                    public_key,
                    json,
                },
        } => audit::verify_file(&f, public_key.as_deref().unwrap_or_default(), json),
        Command::Audit { cmd } => {
            audit::audit(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await
        }
        Command::Tokens { cmd } => {
            audit::tokens(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await
        }
        Command::Users { cmd } => {
            users::run(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await
        }
        Command::Changes { cmd } => {
            changes::run(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await
        }
        Command::Networks { cmd } => {
            networks::run(ApiClient::from_args(&cli.data_dir, &cli.conn)?, cmd).await
        }
    }
}

/// A path segment: device names and ids are `[A-Za-z0-9_-]`, so anything else cannot
/// match and is refused here rather than turned into a surprising URL.
fn seg(s: &str) -> anyhow::Result<String> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("{s:?} is not a valid device name, device id or key id");
    }
    Ok(s.to_string())
}

async fn keys(c: ApiClient, cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Create {
            reusable,
            needs_approval,
            tags,
            ttl,
            description,
        } => {
            let body = CreateEnrollKey {
                reusable,
                preapproved: !needs_approval,
                tags,
                ttl_seconds: ttl.map(|d| d.as_secs().max(1)),
                expires_at_ms: None,
                description,
            };
            let v: Value = c.post("/api/v1/enroll-keys", Some(&body)).await?;
            let key = v["key"]
                .as_str()
                .context("console answered without a key")?;
            eprintln!(
                "created enrollment key {} (shown once; store it now)",
                v["id"].as_str().unwrap_or("?")
            );
            println!("{key}");
        }
        KeysCmd::List { json } => {
            let v: Value = c.get("/api/v1/enroll-keys").await?;
            let items = v["enroll_keys"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", output::keys_table(&items));
            }
        }
        KeysCmd::Revoke { id } => {
            let v: Value = c
                .post(
                    &format!("/api/v1/enroll-keys/{}/revoke", seg(&id)?),
                    None::<&()>,
                )
                .await?;
            println!("revoked {}", v["id"].as_str().unwrap_or(&id));
        }
    }
    Ok(())
}

async fn devices(c: ApiClient, cmd: DevicesCmd) -> anyhow::Result<()> {
    let path = |d: &str| -> anyhow::Result<String> { Ok(format!("/api/v1/devices/{}", seg(d)?)) };
    match cmd {
        DevicesCmd::List { json } => {
            let v: Value = c.get("/api/v1/devices").await?;
            let items = v["devices"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", output::devices_table(&items));
            }
        }
        DevicesCmd::Approve { device, wait } => {
            let r0 = changes::before(&c, wait).await?;
            let v: Value = c
                .post(&format!("{}/approve", path(&device)?), None::<&()>)
                .await?;
            println!(
                "{} is {}",
                v["name"].as_str().unwrap_or(&device),
                v["state"].as_str().unwrap_or("?")
            );
            changes::report(&c, wait, r0).await?;
        }
        DevicesCmd::Revoke { device, wait } => {
            let r0 = changes::before(&c, wait).await?;
            let v: Value = c
                .post(&format!("{}/revoke", path(&device)?), None::<&()>)
                .await?;
            println!(
                "{} is {}",
                v["name"].as_str().unwrap_or(&device),
                v["state"].as_str().unwrap_or("?")
            );
            changes::report(&c, wait, r0).await?;
        }
        DevicesCmd::Delete { device, wait } => {
            let r0 = changes::before(&c, wait).await?;
            c.delete(&path(&device)?).await?;
            println!("deleted {device}");
            changes::report(&c, wait, r0).await?;
        }
        DevicesCmd::Rename {
            device,
            new_name,
            wait,
        } => {
            let r0 = changes::before(&c, wait).await?;
            let body = PatchDevice {
                name: Some(new_name),
                ..Default::default()
            };
            let v: Value = c.patch(&path(&device)?, &body).await?;
            println!("renamed {device} to {}", v["name"].as_str().unwrap_or("?"));
            changes::report(&c, wait, r0).await?;
        }
        DevicesCmd::Tags { device, tags, wait } => {
            let r0 = changes::before(&c, wait).await?;
            let tags: Vec<String> = tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            let body = PatchDevice {
                tags: Some(tags),
                ..Default::default()
            };
            let v: Value = c.patch(&path(&device)?, &body).await?;
            println!(
                "{} tags: {}",
                v["name"].as_str().unwrap_or(&device),
                output::join(&v["tags"])
            );
            changes::report(&c, wait, r0).await?;
        }
        DevicesCmd::Add {
            name,
            public_key,
            tags,
        } => {
            let public_key = public_key
                .parse()
                .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
            let body = AddDevice {
                name,
                public_key,
                tags,
            };
            let v: Value = c.post("/api/v1/devices", Some(&body)).await?;
            println!(
                "added {} ({}) {} {}",
                v["name"].as_str().unwrap_or("?"),
                v["id"].as_str().unwrap_or("?"),
                v["overlay_v4"].as_str().unwrap_or(""),
                v["overlay_v6"].as_str().unwrap_or("")
            );
        }
        DevicesCmd::ExportConfig { device } => {
            let text = c
                .get_text(&format!("{}/wireguard-config", path(&device)?))
                .await?;
            print!("{text}");
        }
    }
    Ok(())
}
