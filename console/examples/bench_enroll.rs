//! Enrollment and peer-map benchmark (a measurement, not a test).
//!
//! Enrolls N devices with one reusable key (from `--concurrency` tasks at once, as a
//! fleet rollout would), reads one network snapshot, and builds every device's peer
//! map from it; then measures what one change (a device roams, a device enrolls) costs
//! across all connected streams: each rebuilding its map and diffing it (the old way)
//! against one shared view plus a step per stream (`zmesh_console::domain::view`). Runs on SQLite
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
use zmesh_console::domain::peermap::map_for;
use zmesh_console::domain::peermap::{quick_changes, PeerMapBuilder};
use zmesh_console::domain::view::{NetworkView, QuickDelta, Step};
use zmesh_console::store::{EnrollDevice, NetworkSnapshot, NewEnrollKey, Store};
use zmesh_shared::peermap::PeerMap;
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

/// Streams sampled for the "before" figure (all N maps of a full mesh would not fit).
const FANOUT_SAMPLE: usize = 200;

/// What one change costs the console across all N connected streams.
struct Change {
    what: &'static str,
    /// Per stream, as streams did before: rebuild the map, diff it against the last one.
    rebuild: Duration,
    /// Once per revision: build the new shared view.
    view: Duration,
    /// All N streams: the step from the old view to the new one.
    steps: Duration,
}

struct Fanout {
    sample: usize,
    changes: Vec<Change>,
}

/// One device roams (a new endpoint); one device enrolls.
fn fanout(snap: &NetworkSnapshot, now: i64) -> anyhow::Result<Fanout> {
    let old_compiled = Arc::new(zmesh_console::domain::policy::compile_snapshot(snap));
    let old = Arc::new(NetworkView::new(
        Arc::new(snap.clone()),
        old_compiled.clone(),
        now,
        None,
        None,
    ));
    let step = (snap.devices.len() / FANOUT_SAMPLE).max(1);
    let sample: Vec<&zmesh_console::store::DeviceRow> = snap
        .devices
        .iter()
        .step_by(step)
        .take(FANOUT_SAMPLE)
        .collect();
    let old_maps: Vec<PeerMap> = sample
        .iter()
        .map(|d| map_for(snap, &old_compiled, d.id, now).context("no map"))
        .collect::<anyhow::Result<_>>()?;

    let mut roam = snap.clone();
    roam.network.revision += 1;
    let mid = roam.devices.len() / 2;
    roam.devices[mid].endpoints = vec!["198.51.100.20:41641".parse()?];
    let mut enroll = snap.clone();
    enroll.network.revision += 1;
    let mut d = enroll.devices[mid].clone();
    d.id = zmesh_shared::DeviceId::new();
    d.name = "newcomer".into();
    d.public_key = WgPrivateKey::generate().public_key();
    d.overlay_v4 = "100.127.255.1".parse()?;
    d.overlay_v6 = "fd00:ffff::1".parse()?;
    enroll.devices.push(d);

    let mut changes = vec![];
    for (what, new) in [("one device roams", roam), ("one device enrolls", enroll)] {
        let t = Instant::now();
        let new_view = {
            let snap = Arc::new(new);
            let quick =
                quick_changes(&old.snapshot, old.built_at_ms, &snap, now).map(|peers| QuickDelta {
                    from_revision: old.revision(),
                    peers,
                });
            let compiled = match quick {
                Some(_) => old_compiled.clone(),
                None => Arc::new(zmesh_console::domain::policy::compile_snapshot(&snap)),
            };
            NetworkView::new(snap, compiled, now, quick, Some(&old))
        };
        let view = t.elapsed();

        let t = Instant::now();
        let mut deltas = 0usize;
        for d in &old.snapshot.devices {
            if let Step::Delta(_) = new_view.step(&old, d.id, old.revision()) {
                deltas += 1;
            }
        }
        let steps = t.elapsed();

        let t = Instant::now();
        let mut sample_deltas = 0usize;
        for (m, d) in old_maps.iter().zip(&sample) {
            let fresh =
                map_for(&new_view.snapshot, &new_view.compiled, d.id, now).context("no map")?;
            sample_deltas += usize::from(m.diff(&fresh).is_some());
        }
        let rebuild = t.elapsed() / sample.len() as u32;
        if deltas == 0 || sample_deltas == 0 {
            bail!("{what}: no deltas (steps {deltas}, rebuilt {sample_deltas})");
        }
        changes.push(Change {
            what,
            rebuild,
            view,
            steps,
        });
    }
    Ok(Fanout {
        sample: sample.len(),
        changes,
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
    for c in &fo.changes {
        let before = c.rebuild.as_secs_f64() * n as f64;
        let after = (c.view + c.steps).as_secs_f64();
        println!(
            "  {:<19} all {n} streams: rebuild+diff {:.2} s (per stream {:.0} us, {} sampled) vs shared view {:.1} ms + steps {:.1} ms = {:.0}x",
            format!("{}:", c.what),
            before,
            c.rebuild.as_secs_f64() * 1e6,
            fo.sample,
            c.view.as_secs_f64() * 1e3,
            c.steps.as_secs_f64() * 1e3,
            before / after
        );
    }
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
