//! The figures of a scale run, the table it prints and its one-line summary
//! (`scale: agents=N backend=B p99_apply_ms=X ...`, always the last line).

/// The `q` quantile (0..=1) of `v` by nearest rank; NaN when empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// One timed change: how long each agent took to apply it (ms), pooled over rounds.
#[derive(Debug, Default, Clone)]
pub struct Scenario {
    pub name: String,
    pub rounds: usize,
    pub samples: Vec<f64>,
    /// Agent applications that never came within the timeout.
    pub missing: usize,
    /// How long the API call (or the roaming agent's send) itself took, worst round.
    pub call_ms: f64,
}

#[derive(Debug, Default, Clone)]
pub struct Failover {
    /// Agents whose stream went with the killed replica.
    pub affected: usize,
    /// Seconds from the SIGKILL to each affected agent having its full map again.
    pub reconnect_s: Vec<f64>,
    pub not_reconnected: usize,
    /// Reconnection attempts after the kill, ms after it.
    pub attempts_ms: Vec<u32>,
}

#[derive(Debug, Default, Clone)]
pub struct Stuck {
    pub stuck: usize,
    pub changes: usize,
    /// Per change: p99 apply time of the reading agents (ms) and console RSS (KiB).
    pub p99_ms: Vec<f64>,
    pub rss_kb: Vec<u64>,
    pub missing: usize,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub agents: usize,
    pub backend: String,
    pub topology: String,
    pub replicas: usize,
    pub enrolled: usize,
    pub enroll_s: f64,
    /// Seconds until every agent held its full map.
    pub connect_s: f64,
    pub connect_missing: usize,
    pub scenarios: Vec<Scenario>,
    pub failover: Option<Failover>,
    pub stuck: Option<Stuck>,
    pub console_cpu: Vec<(String, f64)>,
    pub rss_before_kb: u64,
    pub rss_connected_kb: u64,
    pub rss_peak_kb: u64,
    pub streams: usize,
    pub sim_rss_kb: u64,
    /// From-scratch rebuilds compared, maps that differ, versions that differ alone.
    pub verified: usize,
    pub stale: usize,
    pub version_only: usize,
    pub verify_errors: usize,
    /// Agents whose acknowledgements do not match what they applied.
    pub ack_mismatch: usize,
    pub acks: u64,
    /// Applied, but the stream died before the ack went out.
    pub acks_lost: u64,
    pub resyncs: u64,
    pub nofile: u64,
}

impl Report {
    pub fn rss_per_stream_kb(&self) -> f64 {
        self.rss_connected_kb.saturating_sub(self.rss_before_kb) as f64 / self.streams.max(1) as f64
    }

    pub fn p99_apply_ms(&self) -> f64 {
        self.scenarios
            .iter()
            .map(|s| quantile(&s.samples, 0.99))
            .fold(f64::NAN, f64::max)
    }

    pub fn max_apply_ms(&self) -> f64 {
        self.scenarios
            .iter()
            .map(|s| max(&s.samples))
            .fold(f64::NAN, f64::max)
    }

    pub fn reconnect_s(&self) -> Option<f64> {
        self.failover.as_ref().map(|f| max(&f.reconnect_s))
    }

    pub fn print(&self) {
        println!();
        println!(
            "zmesh scale run: {} agents, {}, {} replica(s), {}; fd limit {}",
            self.agents, self.backend, self.replicas, self.topology, self.nofile
        );
        println!(
            "enrollment: {} devices in {:.1} s ({:.0}/s); all {} agents had their full map after {:.2} s{}",
            self.enrolled,
            self.enroll_s,
            self.enrolled as f64 / self.enroll_s.max(1e-9),
            self.agents,
            self.connect_s,
            if self.connect_missing > 0 { format!(" ({} MISSING)", self.connect_missing) } else { String::new() }
        );
        println!();
        println!("| change | rounds | applied | p50 ms | p99 ms | max ms | call ms |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for s in &self.scenarios {
            println!(
                "| {} | {} | {}{} | {:.0} | {:.0} | {:.0} | {:.0} |",
                s.name,
                s.rounds,
                s.samples.len(),
                if s.missing > 0 {
                    format!(" ({} missing)", s.missing)
                } else {
                    String::new()
                },
                quantile(&s.samples, 0.5),
                quantile(&s.samples, 0.99),
                max(&s.samples),
                s.call_ms
            );
        }
        println!();
        let cpu: Vec<String> = self
            .console_cpu
            .iter()
            .map(|(k, v)| format!("{k} {v:.1} s"))
            .collect();
        println!("console CPU: {}", cpu.join(", "));
        println!(
            "console RSS: {} MiB before streams, {} MiB with {} streams ({:.1} KiB per stream), peak {} MiB; simulator RSS {} MiB",
            self.rss_before_kb / 1024,
            self.rss_connected_kb / 1024,
            self.streams,
            self.rss_per_stream_kb(),
            self.rss_peak_kb / 1024,
            self.sim_rss_kb / 1024
        );
        if let Some(f) = &self.failover {
            self.print_failover(f);
        }
        if let Some(s) = &self.stuck {
            print_stuck(s);
        }
        println!(
            "rebuild check: {} maps compared with a fresh stream's full map: {} stale, {} differ in version only, {} errors",
            self.verified, self.stale, self.version_only, self.verify_errors
        );
        println!(
            "acknowledgements: {} sent, {} lost with their stream, {} agents whose current map is unacknowledged; {} resyncs",
            self.acks, self.acks_lost, self.ack_mismatch, self.resyncs
        );
    }

    fn print_failover(&self, f: &Failover) {
        let r = &f.reconnect_s;
        println!(
            "failover: {} agents lost their replica; all back after {:.2} s (p50 {:.2}, p90 {:.2}, p99 {:.2}){}",
            f.affected,
            max(r),
            quantile(r, 0.5),
            quantile(r, 0.9),
            quantile(r, 0.99),
            if f.not_reconnected > 0 { format!("; {} NOT reconnected", f.not_reconnected) } else { String::new() }
        );
        // the herd: attempts per 100 ms window after the kill
        let mut win = std::collections::BTreeMap::<u32, usize>::new();
        for a in &f.attempts_ms {
            *win.entry(a / 100).or_default() += 1;
        }
        let busiest = win.values().copied().max().unwrap_or(0);
        println!(
            "reconnect attempts: {} in all, at most {} in one 100 ms window ({:.0} % of the agents that lost their stream)",
            f.attempts_ms.len(),
            busiest,
            100.0 * busiest as f64 / f.affected.max(1) as f64
        );
        println!("attempts after the kill (ms, per 100 ms):");
        histogram(&win, 100);
        let mut back = std::collections::BTreeMap::<u32, usize>::new();
        for s in r {
            *back.entry((s * 2.0) as u32).or_default() += 1;
        }
        println!("agents back with their full map (s after the kill, per 0.5 s):");
        for (k, n) in &back {
            println!(
                "  {:>5.1}-{:<5.1} {:>6} {}",
                *k as f64 / 2.0,
                (*k + 1) as f64 / 2.0,
                n,
                bar(*n, f.affected)
            );
        }
    }

    /// The last line of every run.
    pub fn summary(&self) -> String {
        let reconnect = self
            .reconnect_s()
            .map_or("-".to_string(), |s| format!("{s:.2}"));
        format!(
            "scale: agents={} backend={} p99_apply_ms={:.0} max_apply_ms={:.0} rss_per_stream_kb={:.1} reconnect_s={} stale={}",
            self.agents,
            self.backend,
            self.p99_apply_ms(),
            self.max_apply_ms(),
            self.rss_per_stream_kb(),
            reconnect,
            self.stale
        )
    }
}

fn bar(n: usize, of: usize) -> String {
    "#".repeat((60 * n).div_ceil(of.max(1)).min(60))
}

fn histogram(win: &std::collections::BTreeMap<u32, usize>, step: u32) {
    let total: usize = win.values().sum();
    let peak = win.values().copied().max().unwrap_or(1);
    for (k, n) in win {
        println!(
            "  {:>6} {:>6} {}",
            k * step,
            n,
            bar(*n * total / peak.max(1), total)
        );
    }
}

fn print_stuck(s: &Stuck) {
    let n = s.p99_ms.len();
    let tenth = (n / 10).max(1);
    let early = quantile(&s.p99_ms[..tenth.min(n)], 0.5);
    let late = quantile(&s.p99_ms[n.saturating_sub(tenth)..], 0.5);
    println!(
        "stuck agents: {} streams never read; over {} changes the others' p99 went {:.0} ms (first tenth, median) -> {:.0} ms (last tenth); worst {:.0} ms; {} missing",
        s.stuck, s.changes, early, late, max(&s.p99_ms), s.missing
    );
    let first = s.rss_kb.first().copied().unwrap_or(0);
    let last = s.rss_kb.last().copied().unwrap_or(0);
    let top = s.rss_kb.iter().copied().max().unwrap_or(0);
    println!(
        "console RSS during those changes: {} MiB first, {} MiB last, {} MiB at most",
        first / 1024,
        last / 1024,
        top / 1024
    );
}

/// The targets for this kind of run, each `met` or `MISSED` with the figure.
pub fn targets(r: &Report) -> Vec<String> {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut out = Vec::new();
    if r.replicas == 1 && r.agents < 5000 {
        let p99 = r
            .scenarios
            .first()
            .map_or(f64::NAN, |s| quantile(&s.samples, 0.99));
        out.push(format!(
            "target ({} agents): policy change applied by all, p99 <= 1000 ms: {} ({p99:.0} ms)",
            r.agents,
            verdict(p99 <= 1000.0 && r.scenarios[0].missing == 0)
        ));
    }
    if r.replicas == 1 && r.agents >= 5000 {
        out.push(format!(
            "target ({} agents): all connected: {} ({} missing)",
            r.agents,
            verdict(r.connect_missing == 0),
            r.connect_missing
        ));
        let p99 = r.p99_apply_ms();
        let missing: usize = r.scenarios.iter().map(|s| s.missing).sum();
        out.push(format!(
            "target ({} agents): every change applied by all, p99 <= 3000 ms: {} ({p99:.0} ms, {missing} missing)",
            r.agents,
            verdict(p99 <= 3000.0 && missing == 0)
        ));
        out.push(format!(
            "target ({} agents): console RSS < 1024 MiB: {} (peak {} MiB)",
            r.agents,
            verdict(r.rss_peak_kb < 1024 * 1024),
            r.rss_peak_kb / 1024
        ));
    }
    if let Some(f) = &r.failover {
        let back = max(&f.reconnect_s);
        out.push(format!(
            "target (failover, {} agents): all reconnected within 30 s: {} ({back:.2} s, {} not back)",
            r.agents,
            verdict(back <= 30.0 && f.not_reconnected == 0),
            f.not_reconnected
        ));
        // a herd: most of the fleet in one instant; jittered backoff spreads it out
        let mut win = std::collections::BTreeMap::<u32, usize>::new();
        for a in &f.attempts_ms {
            *win.entry(a / 100).or_default() += 1;
        }
        let busiest = win.values().copied().max().unwrap_or(0);
        let share = busiest as f64 / f.affected.max(1) as f64;
        out.push(format!(
            "target (failover): no thundering herd (at most half the disconnected agents in any 100 ms): {} ({:.0} %)",
            verdict(share <= 0.5),
            share * 100.0
        ));
        out.push(format!(
            "target (failover): zero stale maps: {} ({} stale of {} compared, {} errors)",
            verdict(r.stale == 0 && r.verify_errors == 0 && r.verified > 0),
            r.stale,
            r.verified,
            r.verify_errors
        ));
    }
    out
}
