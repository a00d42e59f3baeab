//! Load harness (a measurement, not a test): N simulated agents with real streams
//! against real `zmesh-console serve` processes; see docs/performance.md ("Agents at
//! scale") and `scripts/bench-scale.sh`, which builds and runs it. Prints a table and,
//! last, one summary line `scale: agents=N backend=B p99_apply_ms=X ...`.
//!
//! cargo run --release -p zmesh-agent --example bench_scale -- --agents 1000 \
//!     --console-bin target/release/zmesh-console [--backend postgres] [--replicas 2 --kill-one]

#[path = "../tests/support/scale/mod.rs"]
mod scale;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Simulated agents, each its own device and stream.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// sqlite or postgres (a temporary server, fsync on, unless --database).
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// PostgreSQL database URL to use instead of a temporary server.
    #[arg(long)]
    database: Option<String>,
    /// 2: two replicas on one PostgreSQL behind haproxy (TCP mode).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// SIGKILL one replica under load and time the fleet's return.
    #[arg(long)]
    kill_one: bool,
    /// Hub devices every agent sees (0: full mesh). Default: full mesh up to 2,500
    /// agents, else 8 hubs (a full mesh of 10,000 is 10,000 maps of 10,000 peers,
    /// ~35 GB of map text to send and more to hold in this one simulator process).
    #[arg(long)]
    hubs: Option<usize>,
    /// Streams that connect and then never read.
    #[arg(long, default_value_t = 0)]
    stuck: usize,
    /// Changes made while the stuck streams stay stuck.
    #[arg(long, default_value_t = 200)]
    stuck_changes: usize,
    /// Repetitions of each timed change.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Maps compared with a fresh stream's full map (0: every agent's).
    #[arg(long, default_value_t = 0)]
    verify_sample: usize,
    /// First connections in flight at once.
    #[arg(long, default_value_t = 64)]
    ramp: usize,
    #[arg(long, default_value_t = 32)]
    enroll_concurrency: usize,
    /// The console binary (a release build for honest figures).
    #[arg(long)]
    console_bin: PathBuf,
    /// Simulator worker threads (the console competes for the same cores).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let hubs = a.hubs.unwrap_or(if a.agents > 2500 { 8 } else { 0 });
    let opts = scale::run::Opts {
        agents: a.agents,
        backend: a.backend,
        database: a.database,
        replicas: a.replicas,
        kill_one: a.kill_one,
        hubs,
        stuck: a.stuck,
        stuck_changes: a.stuck_changes,
        rounds: a.rounds.max(1),
        verify_sample: a.verify_sample,
        ramp: a.ramp,
        enroll_concurrency: a.enroll_concurrency,
        console_bin: a.console_bin,
        durable: true,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()?;
    let rep = rt.block_on(scale::run::run(opts))?;
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    rep.print();
    let targets = scale::report::targets(&rep);
    for t in &targets {
        println!("{t}");
    }
    println!("{}", rep.summary());
    Ok(())
}
