//! Agent metrics end to end: the real console and two real agents in network
//! namespaces ping each other over a direct path; then `zmesh metrics` (through the
//! control socket) and the daemon's `--metrics-listen` HTTP endpoint show the direct
//! path's packets and bytes both ways (and none relayed), the control stream connected,
//! the map's revision and age, the peer on a direct path, the handshake and the
//! filter's accepts; the text passes `promtool check metrics`. Needs root; CI fails
//! rather than skips without it or without promtool.

#[path = "../../console/tests/support/promtool.rs"]
mod promtool;
mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::netns::{lab_or_skip, wait_for, Lab};
use support::{Agent, Console};

const METRICS: &str = "127.0.0.1:9470";

fn val(text: &str, series: &str) -> f64 {
    promtool::value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// One HTTP request from inside `ns` (bash's /dev/tcp: no curl needed); the raw answer.
fn http_get(lab: &Lab, ns: &str, path: &str, accept: &str) -> String {
    let (host, port) = METRICS.split_once(':').unwrap();
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port} && \
         printf 'GET {path} HTTP/1.1\\r\\nHost: {METRICS}\\r\\nAccept: {accept}\\r\\n\\r\\n' >&3 && \
         cat <&3"
    );
    let out = lab.exec_timeout(ns, &["bash", "-c", &script], Duration::from_secs(20));
    assert!(out.status.success(), "GET {path}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metrics_show_the_direct_path_and_the_control_stream() {
    let Some(mut lab) = lab_or_skip("metrics_netns") else {
        return;
    };
    let mut console = Console::new(&mut lab, Ipv4Addr::new(10, 83, 0, 1));
    let mut alpha = Agent::new(&mut lab, "alpha", Ipv4Addr::new(10, 83, 0, 11));
    let mut bravo = Agent::new(&mut lab, "bravo", Ipv4Addr::new(10, 83, 0, 12));
    alpha.daemon_args = vec!["--metrics-listen".into(), METRICS.into()];
    let probe = alpha.ns.clone();
    console.start(&mut lab, &probe);
    alpha.join(&mut lab, &console, &[]);
    bravo.join(&mut lab, &console, &[]);
    wait_for(
        "alpha to list bravo",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || (alpha.peer_names(&lab) == ["bravo"]).then_some(()),
    );
    let (a4, b4) = (alpha.overlay_v4(&lab), bravo.overlay_v4(&lab));
    wait_for(
        "alpha to reach bravo",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || alpha.ping(&lab, b4, 1).then_some(()),
    );
    assert!(alpha.ping(&lab, b4, 3), "alpha -> bravo");
    assert!(bravo.ping(&lab, a4, 3), "bravo -> alpha");

    let t = alpha.zmesh(&lab, &["metrics"]);
    let series = |dir: &str, path: &str, what: &str| {
        val(
            &t,
            &format!("zmesh_agent_tunnel_{what}_total{{direction=\"{dir}\",path=\"{path}\"}}"),
        )
    };
    // 4 echo requests and 3 replies out at least, as many in
    assert!(series("tx", "direct", "packets") >= 7.0, "{t}");
    assert!(series("rx", "direct", "packets") >= 6.0, "{t}");
    // each a WireGuard data message: 32 bytes of header and tag around a padded packet
    assert!(series("tx", "direct", "bytes") >= 7.0 * 116.0, "{t}");
    assert!(series("rx", "direct", "bytes") >= 6.0 * 116.0, "{t}");
    assert_eq!(series("tx", "relay", "packets"), 0.0);
    assert_eq!(series("rx", "relay", "bytes"), 0.0);
    assert_eq!(val(&t, "zmesh_agent_tunnels_up"), 1.0);
    assert_eq!(val(&t, "zmesh_agent_control_connected"), 1.0);
    assert!(val(&t, "zmesh_agent_map_revision") >= 1.0, "{t}");
    let age = val(&t, "zmesh_agent_map_age_seconds");
    assert!((0.0..300.0).contains(&age), "{age}");
    assert_eq!(val(&t, "zmesh_agent_peers{path=\"direct\"}"), 1.0);
    assert_eq!(val(&t, "zmesh_agent_peers{path=\"relay\"}"), 0.0);
    assert!(val(&t, "zmesh_agent_handshakes_total") >= 1.0);
    // bravo's echo requests passed alpha's policy (the default lets devices reach each
    // other); bravo's replies to alpha's requests passed as replies
    assert!(
        val(
            &t,
            "zmesh_agent_filter_accepted_packets_total{reason=\"rule\"}"
        ) >= 3.0,
        "{t}"
    );
    assert!(
        val(
            &t,
            "zmesh_agent_filter_accepted_packets_total{reason=\"reply\"}"
        ) >= 3.0,
        "{t}"
    );
    assert_eq!(
        val(&t, "zmesh_agent_dropped_packets_total{reason=\"policy\"}"),
        0.0
    );
    assert!(val(&t, "process_resident_memory_bytes") > 1e6);
    promtool::check(&t);

    // the same over HTTP, in both formats, and nothing else served there
    let h = http_get(&lab, &alpha.ns, "/metrics", "text/plain");
    let (head, body) = h.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        val(
            body,
            "zmesh_agent_tunnel_packets_total{direction=\"tx\",path=\"direct\"}"
        ) >= 7.0
    );
    assert_eq!(val(body, "zmesh_agent_control_connected"), 1.0);
    promtool::check(body);
    let om = http_get(&lab, &alpha.ns, "/metrics", "application/openmetrics-text");
    assert!(om.contains("application/openmetrics-text"), "{om}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let other = http_get(&lab, &alpha.ns, "/status", "*/*");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");

    // the control stream's state follows the console
    console.kill(&mut lab);
    wait_for(
        "alpha to see the console gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let t = alpha.zmesh(&lab, &["metrics"]);
            (val(&t, "zmesh_agent_control_connected") == 0.0).then_some(())
        },
    );
    // bravo serves no metrics port: the flag is off by default
    let refused = lab.exec_timeout(
        &bravo.ns,
        &["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9470"],
        Duration::from_secs(10),
    );
    assert!(!refused.status.success());
}
