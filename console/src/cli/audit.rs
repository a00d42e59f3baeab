//! `zmesh-console audit …` (export, verify, checkpoint, flows) and `tokens …` (admin
//! and auditor API tokens). Everything goes through the console's API except
//! `audit verify --file`, which checks an export offline with the public key alone.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::Value;
use zmesh_shared::SigningPublicKey;

use super::audit_report as evidence_out;
use super::{output, seg, ApiClient};
use crate::http::api::tokens::CreateToken;
use crate::service::audit::access_file::{is_access_export, verify_access_export};
use crate::service::audit::evidence::{is_tar, verify_pack};
use crate::service::audit::verify::{verify_export, VerifyReport};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Stream the audit log (or, with --log access, the access log) to stdout (or
    /// --output) as CSV, JSON Lines or CEF.
    Export {
        /// `events`: the audit events; `access`: the signed flow records.
        #[arg(long, default_value = "events", value_parser = ["events", "access"])]
        log: String,
        #[arg(long, default_value = "jsonl", value_parser = ["csv", "jsonl", "cef"])]
        format: String,
        /// Unix milliseconds or RFC 3339 (2024-05-01, 2024-05-01T12:00:00Z).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Exact actor, e.g. admin:ops (events).
        #[arg(long, conflicts_with_all = ["user", "verdict", "one_sided"])]
        actor: Option<String>,
        /// Device id or name: events by or about it, or flows from or to it.
        #[arg(long)]
        device: Option<String>,
        /// Action (device.revoke) or prefix ending in '.' (device.) (events).
        #[arg(long, conflicts_with_all = ["user", "verdict", "one_sided"])]
        action: Option<String>,
        /// A user's email or username: flows from or to their devices (access).
        #[arg(long)]
        user: Option<String>,
        /// Only accepted or denied flows (access).
        #[arg(long, value_parser = ["accepted", "denied"])]
        verdict: Option<String>,
        /// Only flows the other end did not report (access).
        #[arg(long)]
        one_sided: bool,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Build an evidence pack (tar) for a time window: policy versions, audit events,
    /// access records and the keys and checkpoints that prove them offline.
    Evidence {
        /// Unix milliseconds or RFC 3339 (2024-05-01, 2024-05-01T12:00:00Z).
        #[arg(long)]
        since: String,
        #[arg(long)]
        until: String,
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Verify the chain: the console's whole log, or an export file offline.
    Verify {
        /// An event export (JSONL or CSV), an access export (JSONL) or an evidence pack
        /// (tar) to verify offline, without the console.
        #[arg(long, requires = "public_key")]
        file: Option<PathBuf>,
        /// The console's signing public key (base64), or a file holding it.
        #[arg(long, visible_alias = "key")]
        public_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint of the current chain head now.
    Checkpoint,
    /// List flow records reported by agents.
    Flows {
        #[arg(long)]
        device: Option<String>,
        /// A user's email or username: flows from or to their devices.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, value_parser = ["accepted", "denied"])]
        verdict: Option<String>,
        /// Only flows the other end did not report.
        #[arg(long)]
        one_sided: bool,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Create an API token; prints the token alone on stdout.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "admin", value_parser = ["admin", "auditor"])]
        role: String,
        /// Lifetime, e.g. 90d (default: no expiry).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List API tokens.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token.
    Revoke { id: String },
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut ser = Vec::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            ser.push(format!("{k}={}", encode(v)));
        }
    }
    if ser.is_empty() {
        String::new()
    } else {
        format!("?{}", ser.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn print_report(r: &VerifyReport, json: bool) -> anyhow::Result<()> {
    let events_ok = r.first_bad_seq.is_none() && r.error.is_none();
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else if events_ok {
        println!(
            "audit chain OK ({} mode): {} events verified ({}..{}), {} signed checkpoints, {} events after the newest checkpoint",
            r.mode,
            r.verified,
            r.first_seq.map(|s| s.to_string()).unwrap_or("-".into()),
            r.last_seq.map(|s| s.to_string()).unwrap_or("-".into()),
            r.checkpoints,
            r.unsigned_tail
        );
        if let Some(a) = r.access.as_ref().filter(|a| a.ok) {
            println!(
                "access log OK: {} records verified ({}..{}), every device signature checked, {} anchors in the audit log, {} records after the newest anchor",
                a.verified,
                a.first_seq.map(|s| s.to_string()).unwrap_or("-".into()),
                a.last_seq.map(|s| s.to_string()).unwrap_or("-".into()),
                a.anchors,
                a.unanchored_tail
            );
        }
    }
    if !events_ok {
        let seq = r.first_bad_seq.map(|s| s.to_string()).unwrap_or("-".into());
        bail!(
            "audit chain FAILED verification at seq {seq}: {}",
            r.error.as_deref().unwrap_or("?")
        );
    }
    if let Some(a) = r.access.as_ref().filter(|a| !a.ok) {
        let seq = a.first_bad_seq.map(|s| s.to_string()).unwrap_or("-".into());
        bail!(
            "access log FAILED verification at seq {seq}: {}",
            a.error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

fn public_key(arg: &str) -> anyhow::Result<SigningPublicKey> {
    let text = match std::fs::read_to_string(arg) {
        Ok(t) => t,
        Err(_) => arg.to_string(),
    };
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("--public-key: not an Ed25519 public key: {e}"))
}

/// `audit verify --file`: needs neither a console nor a token. Tells an evidence pack,
/// an access export and an event export apart by their first bytes.
pub fn verify_file(file: &PathBuf, key: &str, json: bool) -> anyhow::Result<()> {
    use std::io::BufRead;
    let pk = public_key(key)?;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let head = r.fill_buf()?.to_vec();
    if is_tar(&head) {
        let rep = verify_pack(r, &pk)?;
        return evidence_out::print_pack(&rep, json);
    }
    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
    if is_access_export(&String::from_utf8_lossy(first)) {
        let rep = verify_access_export(r, &pk, None)?;
        return evidence_out::print_access(&rep, json);
    }
    let r = verify_export(r, &pk)?;
    print_report(&r, json)
}

/// Streams a GET answer to `output` (or stdout).
async fn download(c: &ApiClient, path: &str, output: Option<&PathBuf>) -> anyhow::Result<()> {
    let mut resp = c.get_response(path).await?;
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    while let Some(chunk) = resp.chunk().await.context("reading the export")? {
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(())
}

pub async fn audit(c: ApiClient, cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Export {
            log,
            format,
            since,
            until,
            actor,
            device,
            action,
            user,
            verdict,
            one_sided,
            output,
        } => {
            let path = if log == "access" {
                let q = query(&[
                    ("format", Some(&format)),
                    ("since", since.as_deref()),
                    ("until", until.as_deref()),
                    ("device", device.as_deref()),
                    ("user", user.as_deref()),
                    ("verdict", verdict.as_deref()),
                    ("one_sided", one_sided.then_some("true")),
                ]);
                format!("/api/v1/audit/access{q}")
            } else {
                if user.is_some() || verdict.is_some() || one_sided {
                    bail!(
                        "--user, --verdict and --one-sided filter the access log: add --log access"
                    );
                }
                let q = query(&[
                    ("format", Some(&format)),
                    ("since", since.as_deref()),
                    ("until", until.as_deref()),
                    ("actor", actor.as_deref()),
                    ("device", device.as_deref()),
                    ("action", action.as_deref()),
                ]);
                format!("/api/v1/audit/events{q}")
            };
            download(&c, &path, output.as_ref()).await?;
        }
        AuditCmd::Evidence {
            since,
            until,
            output,
        } => {
            let q = query(&[("since", Some(&since)), ("until", Some(&until))]);
            download(&c, &format!("/api/v1/audit/evidence{q}"), Some(&output)).await?;
            eprintln!(
                "wrote {}; check it offline with `zmesh-console audit verify --file {} --key CONSOLE_PUBLIC_KEY`",
                output.display(),
                output.display()
            );
        }
        AuditCmd::Verify {
            file,
            public_key,
            json,
        } => {
            if let Some(f) = file {
                return verify_file(&f, public_key.as_deref().unwrap_or_default(), json);
            }
            let r: VerifyReport = c.get("/api/v1/audit/verify").await?;
            print_report(&r, json)?;
        }
        AuditCmd::Checkpoint => {
            let resp = c.post_raw("/api/v1/audit/checkpoints").await?;
            if resp.is_empty() {
                println!("nothing new to sign");
            } else {
                let v: Value = serde_json::from_slice(&resp)?;
                println!("signed checkpoint at seq {}", v["seq"]);
            }
        }
        AuditCmd::Flows {
            device,
            user,
            verdict,
            one_sided,
            since,
            until,
            limit,
            json,
        } => {
            let limit = limit.to_string();
            let q = query(&[
                ("device", device.as_deref()),
                ("user", user.as_deref()),
                ("verdict", verdict.as_deref()),
                ("one_sided", one_sided.then_some("true")),
                ("since", since.as_deref()),
                ("until", until.as_deref()),
                ("limit", Some(&limit)),
            ]);
            let v: Value = c.get(&format!("/api/v1/flows{q}")).await?;
            let items = v["flows"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|f| {
                        vec![
                            f["src_device"].as_str().unwrap_or("?").into(),
                            format!("{}:{}", f["src_port"], f["dst_port"]),
                            f["dst_device"].as_str().unwrap_or("?").into(),
                            f["proto"].to_string(),
                            f["verdict"].as_str().unwrap_or("?").into(),
                            f["rule"].as_str().unwrap_or("-").into(),
                            f["bytes"].to_string(),
                            if f["one_sided"] == true {
                                "ONE-SIDED"
                            } else {
                                "both"
                            }
                            .into(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    output::table(
                        &["SRC", "PORTS", "DST", "PROTO", "VERDICT", "RULE", "BYTES", "REPORTED"],
                        &rows
                    )
                );
            }
        }
    }
    Ok(())
}

pub async fn tokens(c: ApiClient, cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create { name, role, ttl } => {
            let body = CreateToken {
                name,
                role: Some(role),
                ttl_seconds: ttl.map(|d| d.as_secs().max(1)),
                // `--network NAME`: the token is scoped to that network
                network: c.network().map(str::to_string),
            };
            let v: Value = c.post("/api/v1/tokens", Some(&body)).await?;
            let token = v["token"]
                .as_str()
                .context("console answered without a token")?;
            eprintln!(
                "created {} token {} (shown once; store it now)",
                v["role"].as_str().unwrap_or("?"),
                v["id"].as_str().unwrap_or("?")
            );
            println!("{token}");
        }
        TokensCmd::List { json } => {
            let v: Value = c.get("/api/v1/tokens").await?;
            let items = v["tokens"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|t| {
                        let state = if !t["revoked_at_ms"].is_null() {
                            "revoked"
                        } else {
                            "valid"
                        };
                        vec![
                            t["id"].as_str().unwrap_or("?").into(),
                            t["name"].as_str().unwrap_or("?").into(),
                            t["role"].as_str().unwrap_or("?").into(),
                            state.into(),
                        ]
                    })
                    .collect();
                print!("{}", output::table(&["ID", "NAME", "ROLE", "STATE"], &rows));
            }
        }
        TokensCmd::Revoke { id } => {
            let v: Value = c
                .post(&format!("/api/v1/tokens/{}/revoke", seg(&id)?), None::<&()>)
                .await?;
            println!("revoked {}", v["id"].as_str().unwrap_or(&id));
        }
    }
    Ok(())
}
