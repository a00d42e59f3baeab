//! Audit log benchmarks (not a test): append rate, export of a large log, verification.
//!
//! ```text
//! cargo run --release -p zmesh-console --example audit_bench -- append DB_URL N TASKS
//! cargo run --release -p zmesh-console --example audit_bench -- gen    DB_URL N
//! cargo run --release -p zmesh-console --example audit_bench -- export DB_URL FORMAT
//! cargo run --release -p zmesh-console --example audit_bench -- verify DB_URL
//! ```
//! `append` measures real appends (one transaction each, as a change would make).
//! `gen` fills a log quickly (many events per transaction, chained in the process) so
//! `export` and `verify` have something large to read; those two run in a process of
//! their own and print its peak RSS (VmHWM), which shows whether memory stays bounded.

use std::time::Instant;

use serde_json::json;
use zmesh_console::service::audit::{checkpoint, export, verify};
use zmesh_console::store::{AuditChange, AuditCtx, Store};
use zmesh_shared::audit::EventBody;
use zmesh_shared::time::now_ms;
use zmesh_shared::SigningKey;

/// A fixed key so `gen` and `verify` (separate runs) agree.
const BENCH_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: audit_bench append|gen|export|verify DB_URL [N|FORMAT] [TASKS]";
    let (cmd, url) = (
        args.get(1).map(String::as_str).unwrap_or(""),
        args.get(2).ok_or_else(|| anyhow::anyhow!(usage))?,
    );
    let store = Store::connect(url).await?;
    let key = SigningKey::from_base64(BENCH_KEY)?;
    match cmd {
        "append" => {
            let n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5000);
            let tasks: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
            let t = Instant::now();
            let mut hs = vec![];
            for w in 0..tasks {
                let s = store.acting(AuditCtx::new(
                    format!("admin:w{w}"),
                    Some("127.0.0.1".into()),
                ));
                hs.push(tokio::spawn(async move {
                    for i in 0..n / tasks {
                        let mut c = AuditChange::new("bench.append", format!("device:dev_{i}"));
                        c.after = Some(json!({"i": i, "name": "bench"}));
                        s.record_event(c).await.expect("append");
                    }
                }));
            }
            for h in hs {
                h.await?;
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "append: {n} events, {tasks} tasks, {secs:.2} s, {:.0} events/s",
                n as f64 / secs
            );
        }
        "gen" => {
            let n: u64 = args
                .get(3)
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1_000_000);
            let t = Instant::now();
            let head = store.audit_head().await?;
            let mut prev = head.hash;
            let mut seq = head.seq;
            let pool = store.pool();
            let batch = 500u64;
            while seq < head.seq + n {
                let mut tx = pool.begin().await?;
                let upto = (seq + batch).min(head.seq + n);
                let mut sql = String::from("INSERT INTO audit_events (seq, time_ms, actor, action, target, source_addr, before_json, after_json, prev_hash, hash) VALUES ");
                let mut rows = vec![];
                for s in seq + 1..=upto {
                    let e = EventBody {
                        time_ms: now_ms(),
                        actor: format!("admin:user{}", s % 7),
                        action: "device.rename".into(),
                        target: Some(format!("device:dev_{:032x}", s)),
                        source_addr: Some("192.0.2.1".into()),
                        before: Some(json!({"name": format!("old{s}"), "tags": ["a", "b"]})),
                        after: Some(json!({"name": format!("new{s}"), "tags": ["a", "b"]})),
                        network: None,
                    }
                    .seal(s, &prev);
                    prev = e.hash.clone();
                    rows.push(e);
                }
                let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
                let vals: Vec<String> = rows
                    .iter()
                    .map(|e| {
                        format!(
                            "({}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                            e.seq,
                            e.time_ms,
                            q(&e.actor),
                            q(&e.action),
                            q(e.target.as_deref().unwrap_or("")),
                            q(e.source_addr.as_deref().unwrap_or("")),
                            q(&e.before.as_ref().unwrap().to_string()),
                            q(&e.after.as_ref().unwrap().to_string()),
                            q(&e.prev_hash),
                            q(&e.hash)
                        )
                    })
                    .collect();
                sql.push_str(&vals.join(","));
                sqlx::query(&sql).execute(&mut *tx).await?;
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2")
                    .bind(upto as i64)
                    .bind(&prev)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                seq = upto;
                if seq % 100_000 == 0 {
                    checkpoint::create(&store, &key, "periodic").await?;
                }
            }
            checkpoint::create(&store, &key, "periodic").await?;
            println!("gen: {n} events in {:.1} s", t.elapsed().as_secs_f64());
        }
        "export" => {
            let fmt = export::Format::parse(args.get(3).map(String::as_str).unwrap_or("jsonl"))
                .ok_or_else(|| anyhow::anyhow!("format: csv, jsonl or cef"))?;
            let t = Instant::now();
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            let s = store.clone();
            let pk = key.public_key().to_string();
            let h = tokio::spawn(
                async move { export::run(&s, &Default::default(), fmt, pk, tx).await },
            );
            let mut bytes = 0usize;
            while let Some(b) = rx.recv().await {
                bytes += b.len();
            }
            let n = h.await??;
            println!(
                "export {fmt:?}: {n} events, {:.1} MiB, {:.1} s, {:.0} events/s, peak RSS {:.1} MiB",
                bytes as f64 / 1048576.0,
                t.elapsed().as_secs_f64(),
                n as f64 / t.elapsed().as_secs_f64(),
                peak_rss_mib()
            );
        }
        "verify" => {
            let t = Instant::now();
            let r = verify::verify_store(&store, &key.public_key()).await?;
            println!(
                "verify: ok={} {} events, {} checkpoints, {:.2} s, {:.0} events/s, peak RSS {:.1} MiB",
                r.ok,
                r.verified,
                r.checkpoints,
                t.elapsed().as_secs_f64(),
                r.verified as f64 / t.elapsed().as_secs_f64(),
                peak_rss_mib()
            );
        }
        _ => anyhow::bail!(usage),
    }
    Ok(())
}
