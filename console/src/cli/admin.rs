//! `zmesh-console admin`: console accounts made directly in the database, for the
//! console host's operator (no running console or token needed): the first admin when
//! the setup link is lost, a new setup link, or a password reset.

use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::domain::password::check_password_rules;
use crate::service::{sessions, users};
use crate::store::{AuditCtx, Store};

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Create a user; the password is read from the first line of standard input.
    Create {
        #[arg(long)]
        username: String,
        /// admin or auditor.
        #[arg(long, default_value = "admin")]
        role: String,
        /// Database URL (default: the sqlite file in the data directory).
        #[arg(long, env = "ZMESH_DATABASE_URL")]
        database: Option<String>,
    },
    /// Set a user's password (read from standard input); ends their sessions.
    Passwd {
        #[arg(long)]
        username: String,
        #[arg(long, env = "ZMESH_DATABASE_URL")]
        database: Option<String>,
    },
    /// Print a new one-time setup link (only useful while no user exists).
    SetupLink {
        /// Base URL the browser reaches the console at.
        #[arg(long, default_value = "https://127.0.0.1:8443")]
        url: String,
        #[arg(long, env = "ZMESH_DATABASE_URL")]
        database: Option<String>,
    },
}

async fn open(data_dir: &Path, database: Option<String>) -> anyhow::Result<Store> {
    let url = match database {
        Some(u) => u,
        None => {
            crate::infra::config::default_database_url(&crate::infra::config::absolute(data_dir)?)
        }
    };
    Store::connect(&url).await.context("opening the database")
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    check_password_rules("password", &pw).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(pw)
}

fn operator() -> AuditCtx {
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    AuditCtx::new(format!("cli:{who}"), None)
}

pub async fn run(data_dir: &Path, cmd: AdminCmd) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::Create {
            username,
            role,
            database,
        } => {
            let role = users::parse_role(&role)
                .map_err(|_| anyhow::anyhow!("--role must be admin or auditor"))?;
            let store = open(data_dir, database).await?;
            let pw = read_password()?;
            let u = users::create(&store, operator(), &username, role, pw).await?;
            println!("created {} user {} ({})", u.role.as_str(), u.username, u.id);
        }
        AdminCmd::Passwd { username, database } => {
            let store = open(data_dir, database).await?;
            let Some(c) = store.user_credentials(&username).await? else {
                bail!("no user {username}");
            };
            let pw = read_password()?;
            users::set_password(&store, operator(), &c.user.id, pw).await?;
            println!(
                "password of {} changed; their sessions ended",
                c.user.username
            );
        }
        AdminCmd::SetupLink { url, database } => {
            let store = open(data_dir, database).await?;
            if store.count_users().await? > 0 {
                bail!("users exist already; sign in, or use `admin create`");
            }
            let t = sessions::issue_setup_link(&store).await?;
            println!("{}/ui/setup/{t}", url.trim_end_matches('/'));
        }
    }
    Ok(())
}
