//! The load harness in small, for CI: 200 simulated agents on two console replicas
//! (one PostgreSQL, haproxy in front), one replica SIGKILLed under load. Asserts
//! correctness only, never timing: every agent is connected again, after a change made
//! on the survivor every agent's delta-built map equals the full map a fresh stream
//! gets, and every map or delta an agent applied was acknowledged. Without PostgreSQL
//! or haproxy it prints a notice and returns, unless `CI` is set (then it fails).

#[path = "support/scale/mod.rs"]
mod scale;

use std::path::PathBuf;

fn console_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_zmesh")).with_file_name("zmesh-console");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` (with the same CARGO_TARGET_DIR) before this test",
        p.display()
    );
    p
}

/// Skips (or, under CI, fails) when a required program is missing.
fn required(what: &str, r: Result<(), String>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but {what} is not available (Debian package `{what}`): {e}")
        }
        Err(e) => {
            eprintln!("NOTICE: scale test skipped, {what} is not available: {e}");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_killed_every_map_rebuilt_and_acknowledged() {
    let haproxy = scale::procs::which("haproxy")
        .map(|_| ())
        .ok_or_else(|| "haproxy not found on PATH or in /usr/sbin".to_string());
    if !required("haproxy", haproxy) {
        return;
    }
    let pg = scale::pg::shared();
    if !required("postgresql", pg.as_ref().map(|_| ()).map_err(Clone::clone)) {
        return;
    }
    let db = pg.unwrap().create_db().await.expect("a fresh database");
    let opts = scale::run::Opts {
        agents: 200,
        backend: "postgres".into(),
        database: Some(db.url.clone()),
        replicas: 2,
        kill_one: true,
        hubs: 0,
        stuck: 2,
        stuck_changes: 5,
        rounds: 1,
        verify_sample: 0,
        ramp: 32,
        enroll_concurrency: 16,
        console_bin: console_bin(),
        durable: false,
    };
    let rep = scale::run::run(opts).await.expect("scale run");
    rep.print();
    println!("{}", rep.summary());

    assert_eq!(rep.connect_missing, 0, "not every agent got its first map");
    for s in &rep.scenarios {
        assert_eq!(
            s.missing, 0,
            "{}: not every agent applied the change",
            s.name
        );
    }
    let f = rep.failover.as_ref().expect("the failover ran");
    assert!(f.affected > 0, "killing a replica disconnected no agent");
    assert_eq!(
        f.not_reconnected, 0,
        "agents not connected again after the kill"
    );
    assert_eq!(
        rep.verified,
        200 - 1,
        "every live agent's map compared with a rebuild"
    );
    assert_eq!(rep.verify_errors, 0, "fresh streams failed");
    assert_eq!(rep.stale, 0, "maps differ from a from-scratch rebuild");
    assert_eq!(
        rep.ack_mismatch, 0,
        "agents that did not acknowledge what they applied"
    );
}
