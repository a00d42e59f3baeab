//! Enrollment and peer-map benchmark (a measurement, not a test).
//!
//! Enrolls N devices with one reusable key (from `--concurrency` tasks at once, as a
//! fleet rollout would), reads one network snapshot, and builds every device's peer
//! map from it. Runs on SQLite (a temp file) and on PostgreSQL: the server at
//! `--database URL` (a fresh database is created there and dropped afterwards), or a
//! temporary one started like the test harness (fsync on, for honest numbers).
//!
//! cargo run --release -p zmesh-console --example bench_enroll -- --devices 10000 [--database URL]

#[path = "../tests/support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use zmesh_console::peermap::PeerMapBuilder;
use zmesh_console::store::{EnrollDevice, NewEnrollKey, Store};
use zmesh_shared::{Secret, WgPrivateKey};

#[derive(Parser, Debug)]
struct Args {
    /// Devices to enroll per backend.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// PostgreSQL server URL (a fresh database is made on it). Without it a temporary
    /// server is started when PostgreSQL is installed.
    #[arg(long)]
    database: Option<String>,
    /// Run only one backend: `sqlite` or `postgres`.
    #[arg(long)]
    only: Option<String>,
}

struct Figures {
    enroll: Duration,
    snapshot: Duration,
    maps: Duration,
    peers_total: usize,
    max_rss_kib: i64,
}

fn max_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss // KiB on Linux
}

async fn run(store: Store, n: usize, concurrency: usize) -> anyhow::Result<Figures> {
    let net = store.default_network().await?;
    let secret = Secret::generate("");
    store
        .create_enroll_key(
            NewEnrollKey {
                network_id: net.id,
                secret_hash: secret.hash(),
                description: Some("bench".into()),
                reusable: true,
                preapproved: true,
                tags: vec!["bench".into()],
                expires_at_ms: None,
                created_by: "bench".into(),
            },
            zmesh_shared::time::now_ms(),
        )
        .await?;
    // keys and credentials are made before the clock starts: we time the store
    let reqs: Vec<EnrollDevice> = (0..n)
        .map(|i| EnrollDevice {
            secret_hash: secret.hash(),
            public_key: WgPrivateKey::generate().public_key(),
            name: None,
            hostname: Some(format!("host-{i:05}.example.net")),
            os: Some("linux".into()),
            credential_hash: Secret::generate("zmd_").hash(),
            now_ms: zmesh_shared::time::now_ms(),
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(reqs));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (store, queue) = (store.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                let Some(e) = queue.lock().unwrap().pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                store.enroll_device(e).await.context("enroll")?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let enroll = start.elapsed();

    let t = Instant::now();
    let snap = store.network_snapshot(net.id).await?;
    let snapshot = t.elapsed();
    if snap.devices.len() != n {
        bail!("snapshot has {} devices, expected {n}", snap.devices.len());
    }

    let t = Instant::now();
    let now = zmesh_shared::time::now_ms();
    let builder = PeerMapBuilder::new(&snap, now);
    let mut peers_total = 0;
    for d in &snap.devices {
        let m = builder
            .build_for(d)
            .context("an active device got no map")?;
        peers_total += m.peers.len();
    }
    let maps = t.elapsed();
    Ok(Figures {
        enroll,
        snapshot,
        maps,
        peers_total,
        max_rss_kib: max_rss_kib(),
    })
}

fn report(backend: &str, n: usize, f: &Figures) {
    println!("== {backend}: {n} devices");
    println!(
        "  enroll:        {:>9.2} s   ({:.0} devices/s)",
        f.enroll.as_secs_f64(),
        n as f64 / f.enroll.as_secs_f64()
    );
    println!(
        "  snapshot:      {:>9.1} ms",
        f.snapshot.as_secs_f64() * 1e3
    );
    println!(
        "  all peer maps: {:>9.2} s   ({} maps, {} peer entries, {:.1} us/map)",
        f.maps.as_secs_f64(),
        n,
        f.peers_total,
        f.maps.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "  peak RSS:      {:>9.1} MiB (process-wide, since start)",
        f.max_rss_kib as f64 / 1024.0
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let want = |b: &str| args.only.as_deref().is_none_or(|o| o == b);
    if let Some(o) = &args.only {
        if o != "sqlite" && o != "postgres" {
            bail!("--only must be sqlite or postgres");
        }
    }
    println!(
        "bench_enroll: {} devices, {} concurrent enrollments",
        args.devices, args.concurrency
    );

    if want("sqlite") {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Store::connect(&url).await?;
        let f = run(store, args.devices, args.concurrency).await?;
        report(
            "sqlite (temp file, WAL, synchronous=NORMAL)",
            args.devices,
            &f,
        );
    }

    if want("postgres") {
        let server = match &args.database {
            Some(url) => Ok(pg::PgServer::external(url)),
            None => tokio::task::spawn_blocking(|| pg::PgServer::start(true)).await?,
        };
        match server {
            Err(e) if args.only.is_some() => bail!("no PostgreSQL server: {e}"),
            Err(e) => println!("== postgres: skipped, no server ({e})"),
            Ok(server) => {
                let db = server.create_db().await.map_err(anyhow::Error::msg)?;
                let store = Store::connect(&db.url).await?;
                let f = run(store.clone(), args.devices, args.concurrency).await?;
                store.pool().close().await;
                let label = if args.database.is_some() {
                    "postgres (given server)"
                } else {
                    "postgres (temporary local server, fsync on)"
                };
                report(label, args.devices, &f);
                drop(db);
                // the server (if ours) stops and its directory goes when `server` drops
                drop(server);
            }
        }
    }
    Ok(())
}
