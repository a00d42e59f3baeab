//! Access-log benchmarks (not a test): how fast the console takes in signed flow
//! reports, beside the cost of the parts in the same run, and how a large access log
//! verifies (peak memory included).
//!
//! ```text
//! cargo run --release -p zmesh-console --example access_bench -- ingest DB_URL N DEVICES
//! cargo run --release -p zmesh-console --example access_bench -- gen    DB_URL N
//! cargo run --release -p zmesh-console --example access_bench -- verify DB_URL
//! cargo run --release -p zmesh-console --example access_bench -- export DB_URL FORMAT
//! ```
//! `ingest` signs N records (batches of 1000, as agents send them) for DEVICES devices,
//! then feeds them through the real intake (`service::access::ingest`: signature check
//! with the device's registered key, replay check, chain append in one transaction per
//! batch) and prints records/s; beside it, in the same run: Ed25519 verification alone,
//! and the chain append alone (`Store::append_access` with no signature check) on
//! other report numbers. `gen` fills the log through the same store path, fast enough
//! for a million records; `verify` runs the database verification in a process of its
//! own and prints its peak RSS (VmHWM), which shows whether memory stays bounded;
//! `export` streams the whole log in FORMAT (csv, jsonl, cef) the way the API and CLI
//! do (names resolved, the one-sided flag computed per record) and prints the same.

use std::time::Instant;

use zmesh_console::bus::Bus;
use zmesh_console::service::access;
use zmesh_console::service::audit::{access_export, access_verify, evidence, export};
use zmesh_console::service::devices;
use zmesh_console::service::Core;
use zmesh_console::store::{AuditCtx, Store};
use zmesh_shared::flowlog::{sign_flow, verify_flow, SignedFlow};
use zmesh_shared::time::now_ms;
use zmesh_shared::wire::{FlowRecord, FlowVerdict};
use zmesh_shared::{DeviceId, SigningKey, WgPrivateKey};

const BATCH: usize = 1000;

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

fn record(src: DeviceId, dst: DeviceId, i: u64) -> FlowRecord {
    let t = now_ms();
    FlowRecord {
        src_device: src,
        dst_device: dst,
        proto: 6,
        src_port: 30000 + (i % 30000) as u16,
        dst_port: [22, 443, 5432][i as usize % 3],
        bytes: 1000 + i % 5000,
        packets: 10 + i % 50,
        bytes_back: 20000 + i % 9000,
        packets_back: 20 + i % 70,
        first_seen_ms: t - 5000,
        last_seen_ms: t,
        rule: Some(format!("rules[{}]", i % 4)),
        policy_version: Some(3),
        verdict: if i % 10 == 0 {
            FlowVerdict::Denied
        } else {
            FlowVerdict::Accepted
        },
    }
}

/// `n` devices with registered report keys.
async fn devices(core: &Core, n: usize) -> anyhow::Result<Vec<(DeviceId, SigningKey)>> {
    let tag = now_ms();
    let mut out = vec![];
    for i in 0..n {
        let ctx = AuditCtx::new("admin:bench", None);
        let row = devices::add_agentless(
            core,
            ctx.clone(),
            "admin:bench".into(),
            format!("bench-{tag}-{i}"),
            WgPrivateKey::generate().public_key(),
            vec![],
        )
        .await?;
        let key = SigningKey::generate();
        access::register_key(core, &ctx, row.id, &key.public_key()).await?;
        out.push((row.id, key));
    }
    Ok(out)
}

/// Signed batches: device i reports flows to device i+1, numbered from `from`.
fn batches(
    devs: &[(DeviceId, SigningKey)],
    n: usize,
    from: u64,
) -> Vec<(DeviceId, Vec<SignedFlow>)> {
    let mut out = vec![];
    let mut i = 0u64;
    while (i as usize) < n {
        let (me, key) = &devs[(i as usize / BATCH) % devs.len()];
        let peer = devs[((i as usize / BATCH) + 1) % devs.len()].0;
        let m = BATCH.min(n - i as usize);
        let b = (0..m as u64)
            .map(|j| sign_flow(key, *me, from + i + j, record(*me, peer, i + j)))
            .collect();
        out.push((*me, b));
        i += m as u64;
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: access_bench ingest|gen|verify|export DB_URL [N|FORMAT] [DEVICES]";
    let (cmd, url) = (
        args.get(1).map(String::as_str).unwrap_or(""),
        args.get(2).ok_or_else(|| anyhow::anyhow!(usage))?,
    );
    let store = Store::connect(url).await?;
    // N for ingest/gen (export takes a format there)
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let ndev: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(20);
    match cmd {
        "ingest" => {
            let core = Core::new(store.clone(), SigningKey::generate(), Bus::new()).await?;
            let devs = devices(&core, ndev.max(2)).await?;
            let t = Instant::now();
            let signed = batches(&devs, n, 1);
            let sign_s = t.elapsed().as_secs_f64();
            // Ed25519 verification alone, on the same records.
            let keys: std::collections::HashMap<_, _> =
                devs.iter().map(|(d, k)| (*d, k.public_key())).collect();
            let t = Instant::now();
            for (d, b) in &signed {
                for f in b {
                    verify_flow(&keys[d], *d, f)?;
                }
            }
            let verify_s = t.elapsed().as_secs_f64();
            // The real intake.
            let t = Instant::now();
            let mut kept = 0;
            for (d, b) in &signed {
                kept += access::ingest(&core, *d, b).await?.kept;
            }
            let ingest_s = t.elapsed().as_secs_f64();
            anyhow::ensure!(kept == n, "kept {kept} of {n}");
            // The chain append alone (other report numbers, no signature check).
            let again = batches(&devs, n, 1 << 40);
            let t = Instant::now();
            for (d, b) in &again {
                store.append_access(*d, b, now_ms()).await?;
            }
            let append_s = t.elapsed().as_secs_f64();
            let rate = |s: f64| n as f64 / s;
            println!(
                "ingest: {n} signed records from {} devices in batches of {BATCH}: {ingest_s:.2} s, {:.0} records/s",
                devs.len(),
                rate(ingest_s)
            );
            println!(
                "  same run, the parts: Ed25519 verify alone {:.0} records/s; chain append alone {:.0} records/s; signing (agent side) {:.0} records/s",
                rate(verify_s),
                rate(append_s),
                rate(sign_s)
            );
        }
        "gen" => {
            let core = Core::new(store.clone(), SigningKey::generate(), Bus::new()).await?;
            let devs = devices(&core, ndev.max(2)).await?;
            let t = Instant::now();
            let mut done = 0;
            let from = (now_ms() as u64) * 1000;
            while done < n {
                let m = (50 * BATCH).min(n - done);
                for (d, b) in batches(&devs, m, from + done as u64) {
                    store.append_access(d, &b, now_ms()).await?;
                }
                done += m;
            }
            store.anchor_access_head().await?;
            println!(
                "gen: {n} access records in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        "verify" => {
            let t = Instant::now();
            let r = access_verify::verify_access_store(&store).await?;
            println!(
                "verify: ok={} {} records (chain + every device signature), {:.2} s, {:.0} records/s, peak RSS {:.1} MiB",
                r.ok,
                r.verified,
                t.elapsed().as_secs_f64(),
                r.verified as f64 / t.elapsed().as_secs_f64(),
                peak_rss_mib()
            );
        }
        "export" => {
            let fmt = export::Format::parse(args.get(3).map(String::as_str).unwrap_or("jsonl"))
                .ok_or_else(|| anyhow::anyhow!("format: csv, jsonl or cef"))?;
            let core = Core::new(store.clone(), SigningKey::generate(), Bus::new()).await?;
            let dir = evidence::directory(&core).await?;
            let t = Instant::now();
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            let s = store.clone();
            let pk = core.signing_key.public_key().to_string();
            let h = tokio::spawn(async move {
                access_export::run(&s, &Default::default(), fmt, pk, &dir, tx).await
            });
            let mut bytes = 0usize;
            while let Some(b) = rx.recv().await {
                bytes += b.len();
            }
            let n = h.await??;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "export {fmt:?}: {n} access records, {:.1} MiB, {secs:.1} s, {:.0} records/s, peak RSS {:.1} MiB",
                bytes as f64 / 1048576.0,
                n as f64 / secs,
                peak_rss_mib()
            );
        }
        _ => anyhow::bail!(usage),
    }
    Ok(())
}
