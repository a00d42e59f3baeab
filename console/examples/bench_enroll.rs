//! Enrollment and peer-map benchmark (a measurement, not a test).
//!
//! Enrolls N devices with one reusable key (from `--concurrency` tasks at once, as a
//! fleet rollout would), reads one network snapshot, and builds every device's peer
//! map from it; then measures what one roaming device (a new endpoint) costs every
//! connected stream: a rebuilt map plus diff, against the quick patch. Runs on SQLite
//! (a temp file) and on PostgreSQL: the server at `--database URL` (a fresh database is
//! created there and dropped afterwards), or a temporary one started like the test
//! harness (fsync on, for honest numbers).
//!
//! cargo run --release -p zmesh-console --example bench_enroll -- --devices 10000 [--database URL]

#[path = "../tests/support/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use zmesh_console::agent_api::stream::map_for;
use zmesh_console::peermap::{changed_peers, patch, quick_changes, PeerMapBuilder};
use zmesh_console::store::{EnrollDevice, NetworkSnapshot, NewEnrollKey, Store};
use zmesh_shared::peermap::{PeerDelta, PeerMap};
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
    fanout: Fanout,
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
    let fanout = fanout(&snap, now)?;
    Ok(Figures {
        enroll,
        snapshot,
        maps,
        peers_total,
        fanout,
        max_rss_kib: max_rss_kib(),
    })
}

/// Streams sampled for the fan-out figure (all N maps of a full mesh would not fit).
const FANOUT_SAMPLE: usize = 200;

struct Fanout {
    sample: usize,
    /// Per stream: rebuild the map from the snapshot (as a stream did before) and diff.
    rebuild: Duration,
    /// Once per revision: compare the two snapshots.
    compare: Duration,
    /// Per stream: patch the map with the changed peers it has.
    quick: Duration,
}

/// What one device roaming (new endpoint) costs the console, per connected stream.
fn fanout(snap: &NetworkSnapshot, now: i64) -> anyhow::Result<Fanout> {
    let compiled = zmesh_console::policy::compile_snapshot(snap);
    let step = (snap.devices.len() / FANOUT_SAMPLE).max(1);
    let sample: Vec<&zmesh_console::store::DeviceRow> = snap
        .devices
        .iter()
        .step_by(step)
        .take(FANOUT_SAMPLE)
        .collect();
    let mut maps: Vec<PeerMap> = sample
        .iter()
        .map(|d| map_for(snap, &compiled, d.id, now).context("no map"))
        .collect::<anyhow::Result<_>>()?;
    let mut new = snap.clone();
    new.network.revision += 1;
    let roamer = new.devices.len() / 2;
    new.devices[roamer].endpoints = vec!["198.51.100.20:41641".parse()?];

    let t = Instant::now();
    let mut deltas = 0;
    for (m, d) in maps.iter().zip(&sample) {
        let fresh = map_for(&new, &compiled, d.id, now).context("no map")?;
        deltas += usize::from(m.diff(&fresh).is_some());
    }
    let rebuild = t.elapsed() / sample.len() as u32;

    let t = Instant::now();
    let q = quick_changes(snap, now, &new, now).context("an endpoint change must be quick")?;
    let compare = t.elapsed();
    let t = Instant::now();
    let mut quick_deltas = 0;
    for m in maps.iter_mut() {
        let upsert = changed_peers(m, &q);
        if upsert.is_empty() {
            continue;
        }
        quick_deltas += 1;
        let delta = PeerDelta {
            network_id: m.network_id,
            device_id: m.device_id,
            base_version: m.version,
            version: new.network.revision,
            issued_at_ms: now,
            me: None,
            upsert,
            remove: vec![],
            filter: None,
        };
        patch(m, &delta);
    }
    let quick = t.elapsed() / sample.len() as u32;
    if deltas != quick_deltas {
        bail!("rebuild found {deltas} deltas, the quick path {quick_deltas}");
    }
    Ok(Fanout {
        sample: sample.len(),
        rebuild,
        compare,
        quick,
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
    let fo = &f.fanout;
    let all_rebuild = fo.rebuild.as_secs_f64() * n as f64;
    let all_quick = fo.compare.as_secs_f64() + fo.quick.as_secs_f64() * n as f64;
    println!(
        "  one endpoint change, per stream ({} sampled): rebuild+diff {:.1} us, quick patch {:.2} us",
        fo.sample,
        fo.rebuild.as_secs_f64() * 1e6,
        fo.quick.as_secs_f64() * 1e6,
    );
    println!(
        "  one endpoint change, all {n} streams: rebuild {:.2} s vs quick {:.1} ms ({:.1} ms of it comparing snapshots once) = {:.0}x",
        all_rebuild,
        all_quick * 1e3,
        fo.compare.as_secs_f64() * 1e3,
        all_rebuild / all_quick
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
