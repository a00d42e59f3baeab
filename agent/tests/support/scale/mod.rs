//! The scale harness shared by `examples/bench_scale.rs` (the measurement behind
//! `scripts/bench-scale.sh`) and `tests/scale.rs` (its small version in CI): real
//! `zmesh-console serve` processes (SQLite, or PostgreSQL with one or two replicas
//! behind haproxy), a fleet of simulated agents ([`sim`]) holding real streams, the
//! scenarios ([`run`]) and their figures ([`report`]).
#![allow(dead_code)] // the test and the example use different parts

#[path = "../../../../console/tests/support/pg.rs"]
pub mod pg;
pub mod procs;
pub mod report;
pub mod run;
pub mod sim;

/// Raises the open-file limit to what 10,000 streams need (the soft limit up to the
/// hard one, or higher when we may); consoles and haproxy started later inherit it.
pub fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let more = libc::rlimit {
            rlim_cur: want.max(r.rlim_cur),
            rlim_max: want.max(r.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &more) != 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}
