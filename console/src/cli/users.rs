//! `zmesh-console users list|create|disable|enable`: console users (local accounts and
//! people who signed in through SSO) over the admin API.

use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{join, table};
use super::ApiClient;

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Create a local account; its password is read from standard input (first line,
    /// at least 12 characters). With --network NAME the account sees and changes that
    /// network only.
    Create {
        username: String,
        #[arg(long, default_value = "auditor", value_parser = ["admin", "auditor"])]
        role: String,
    },
    /// List users: name, role, state, sign-in method, groups, last sign-in, and for SSO
    /// users the last check at the identity provider and its result.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable a user (by username or id): their sessions end and tokens are revoked.
    Disable {
        user: String,
        #[command(flatten)]
        wait: super::changes::WaitArgs,
    },
    /// Enable a disabled user again.
    Enable {
        user: String,
        #[command(flatten)]
        wait: super::changes::WaitArgs,
    },
}

/// The id of the user named `who` (a username or an id).
async fn user_id(c: &ApiClient, who: &str) -> anyhow::Result<String> {
    let v: Value = c.get("/api/v1/users").await?;
    let users = v["users"].as_array().cloned().unwrap_or_default();
    let found = users.iter().find(|u| {
        u["id"].as_str() == Some(who)
            || u["username"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(who))
    });
    match found.and_then(|u| u["id"].as_str()) {
        Some(id) => Ok(id.to_string()),
        None => bail!("no user {who:?}"),
    }
}

fn when(v: &Value) -> String {
    v.as_i64()
        .and_then(|ms| {
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms as u64))
        })
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "never".into())
}

pub async fn run(c: ApiClient, cmd: UsersCmd) -> anyhow::Result<()> {
    match cmd {
        UsersCmd::Create { username, role } => {
            let mut pw = String::new();
            std::io::stdin().read_line(&mut pw)?;
            let pw = pw.trim_end_matches(['\r', '\n']).to_string();
            let mut body = json!({"username": username, "role": role, "password": pw});
            if let Some(n) = c.network() {
                body["network"] = n.into();
            }
            let u: Value = c.post("/api/v1/users", Some(&body)).await?;
            println!(
                "created {} {}{}",
                u["role"].as_str().unwrap_or("?"),
                u["username"].as_str().unwrap_or(&username),
                c.network()
                    .map(|n| format!(" (network {n})"))
                    .unwrap_or_default()
            );
        }
        UsersCmd::List { json } => {
            let v: Value = c.get("/api/v1/users").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["users"])?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["users"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|u| {
                    vec![
                        u["username"].as_str().unwrap_or("").to_string(),
                        u["role"].as_str().unwrap_or("").to_string(),
                        if u["disabled_at_ms"].is_null() {
                            "active".into()
                        } else {
                            "disabled".into()
                        },
                        if u["issuer"].is_null() {
                            "local".into()
                        } else {
                            "sso".into()
                        },
                        join(&u["groups"]),
                        when(&u["last_sign_in_ms"]),
                        if u["issuer"].is_null() {
                            "-".into()
                        } else {
                            format!(
                                "{} ({})",
                                when(&u["idp_checked_at_ms"]),
                                u["idp_check"].as_str().unwrap_or("not yet")
                            )
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "USER",
                        "ROLE",
                        "STATE",
                        "SIGN-IN",
                        "GROUPS",
                        "LAST SIGN-IN",
                        "LAST IDP CHECK",
                    ],
                    &rows
                )
            );
        }
        UsersCmd::Disable { user, wait } => {
            let id = user_id(&c, &user).await?;
            let r0 = super::changes::before(&c, wait).await?;
            let u: Value = c
                .patch(&format!("/api/v1/users/{id}"), &json!({"disabled": true}))
                .await?;
            println!("disabled {}", u["username"].as_str().unwrap_or(&user));
            super::changes::report(&c, wait, r0).await?;
        }
        UsersCmd::Enable { user, wait } => {
            let id = user_id(&c, &user).await?;
            let r0 = super::changes::before(&c, wait).await?;
            let u: Value = c
                .patch(&format!("/api/v1/users/{id}"), &json!({"disabled": false}))
                .await?;
            println!("enabled {}", u["username"].as_str().unwrap_or(&user));
            super::changes::report(&c, wait, r0).await?;
        }
    }
    Ok(())
}
