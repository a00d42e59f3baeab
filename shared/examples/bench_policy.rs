//! Benchmark (not a test): parse, validate and compile a policy with 10,000 devices and
//! 500 rules, then diff it against a modified copy. Prints wall time per phase and the
//! process's peak RSS.
//!
//! `cargo run --release -p zmesh-shared --example bench_policy`

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::Instant;

use zmesh_shared::policy::*;
use zmesh_shared::DeviceId;

const DEVICES: u32 = 10_000;
const USERS: u32 = 2_000;
const TAGS: u32 = 50;
const GROUPS: u32 = 100;
const RULES: u32 = 500;

fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

fn inventory() -> Inventory {
    let devices = (0..DEVICES)
        .map(|i| {
            let tagged = i % 5 >= 3; // 40 % servers with one tag each
            InvDevice {
                id: DeviceId::from_uuid(uuid::Uuid::from_u128(0x1000_0000 + i as u128)),
                name: format!("dev-{i}"),
                owner: format!("user{}@example.com", i % USERS),
                tags: if tagged {
                    vec![format!("tag:svc{}", i % TAGS)]
                } else {
                    vec![]
                },
                overlay_v4: Ipv4Addr::from(0x6440_0000 + 1 + i),
                overlay_v6: format!("fd7a::{:x}", i + 1).parse().unwrap(),
                active: i % 97 != 0,
                user_owned: !tagged,
                groups: vec![],
                routes: vec![],
            }
        })
        .collect();
    Inventory { devices }
}

fn policy(variant: u32) -> String {
    let mut s = String::from("{\n \"version\": 1,\n \"groups\": {\n");
    for g in 0..GROUPS {
        let members: Vec<String> = (0..20)
            .map(|k| format!("\"user:user{}@example.com\"", (g * 20 + k) % USERS))
            .collect();
        writeln!(s, "  \"group:team{g}\": [{}],", members.join(", ")).unwrap();
    }
    s.push_str("  \"group:admins\": [\"user:user0@example.com\", \"group:team1\"]\n },\n \"tag_owners\": {\n");
    for t in 0..TAGS {
        writeln!(s, "  \"tag:svc{t}\": [\"group:admins\"],").unwrap();
    }
    s.push_str(" },\n \"hosts\": { \"low\": \"100.64.0.0/24\" },\n \"rules\": [\n");
    for r in 0..RULES {
        let line = match r % 50 {
            0 => "{ \"src\": [\"*\"], \"dst\": [\"tag:svc0:*\"], \"proto\": \"icmp\" }".to_string(),
            1 => "{ \"src\": [\"group:admins\"], \"dst\": [\"*:22\"], \"proto\": \"tcp\" }".to_string(),
            2 => "{ \"src\": [\"low\"], \"dst\": [\"tag:svc2:53\"], \"proto\": \"udp\" }".to_string(),
            _ => format!(
                "{{ \"src\": [\"group:team{}\", \"tag:svc{}\"], \"dst\": [\"tag:svc{}:{},8000-8099\"], \"proto\": \"tcp\" }}",
                r % GROUPS,
                (r + 7) % TAGS,
                r % TAGS,
                1000 + (r + variant) % 300
            ),
        };
        writeln!(s, "  {line},").unwrap();
    }
    s.push_str(" ]\n}\n");
    s
}

fn main() {
    let inv = inventory();
    let text = policy(0);
    println!(
        "devices: {DEVICES} ({} active), rules: {RULES}, policy text: {} KiB",
        inv.devices.iter().filter(|d| d.active).count(),
        text.len() / 1024
    );
    let rss0 = peak_rss_mib();

    let t = Instant::now();
    let p = Policy::parse_and_validate(&text, &inv).expect("valid");
    println!(
        "parse + validate: {:>8.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let c = compile(&p, &inv);
    let dt = t.elapsed();
    let edges: usize = c.devices.values().map(|d| d.peer_count()).sum();
    let filter_rules: usize = c.devices.values().map(|d| d.filter.len()).sum();
    let mut lists: Vec<*const FilterRule> = c.devices.values().map(|d| d.filter.as_ptr()).collect();
    lists.sort();
    lists.dedup();
    println!("compile:          {:>8.1} ms  ({edges} peer entries, {filter_rules} filter rules, {} distinct filters)", dt.as_secs_f64() * 1e3, lists.len());
    let rss1 = peak_rss_mib();

    let t = Instant::now();
    let again = compile(&p, &inv);
    println!(
        "compile again:    {:>8.1} ms  (deterministic: {})",
        t.elapsed().as_secs_f64() * 1e3,
        again == c
    );

    let a = inv.devices[1].id;
    let b = inv.devices[3].id;
    let t = Instant::now();
    let r = check(&p, &inv, a, b, Proto::Tcp, 22);
    println!(
        "check one pair:   {:>8.1} ms  ({r:?})",
        t.elapsed().as_secs_f64() * 1e3
    );

    let q = Policy::parse_and_validate(&policy(1), &inv).expect("valid");
    let t = Instant::now();
    let d = diff(&p, &q, &inv);
    println!(
        "diff (every rule's port changed): {:>8.1} ms  ({} edge changes)",
        t.elapsed().as_secs_f64() * 1e3,
        d.len()
    );
    let mut all = String::from("{ \"version\": 1, \"tag_owners\": {");
    for t in 0..TAGS {
        write!(all, "\"tag:svc{t}\": [], ").unwrap();
    }
    all.push_str("}, \"rules\": [ { \"src\": [\"*\"], \"dst\": [\"*:*\"] } ] }");
    let pa = Policy::parse_and_validate(&all, &inv).expect("valid");
    let t = Instant::now();
    let ca = compile(&pa, &inv);
    let edges: usize = ca.devices.values().map(|d| d.peer_count()).sum();
    println!(
        "compile *:*:      {:>8.1} ms  ({edges} peer entries)",
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "peak RSS: {rss0:.1} MiB before, {rss1:.1} MiB after compile, {:.1} MiB at end",
        peak_rss_mib()
    );
}
