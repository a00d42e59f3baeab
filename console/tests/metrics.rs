//! `zmesh-console serve --metrics-listen` (the real binary): after an enrollment, a
//! refused enrollment, an agent stream, a STUN request and API calls (one a 404), a
//! scrape shows those exact values, requests are counted under their route template
//! (never the raw path), the agent's acknowledgement of a change is timed in the
//! change-apply histogram, the text passes `promtool check metrics`, OpenMetrics text
//! is served to a client that asks for it, and the API port does not serve `/metrics`.

mod support {
    pub mod promtool;
    pub mod stream_console;
}

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use zmesh_console::cli::ApiClient;
use zmesh_console::infra::config::TlsSource;
use zmesh_shared::wire::{ClientMsg, ServerMsg};

use support::promtool;
use support::stream_console::{hello_and_map, new_key, next, Console};

const BIN: &str = env!("CARGO_BIN_EXE_zmesh-console");

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address after `prefix` on a line of the console's output.
fn printed_addr(log: &Path, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(line[prefix.len()..].split_whitespace().next()?.to_string())
}

fn wait_addr(log: &Path, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = printed_addr(log, prefix) {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "console did not print {prefix:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn scrape(url: &str, accept: Option<&str>) -> (String, String) {
    let mut r = reqwest::Client::new().get(url);
    if let Some(a) = accept {
        r = r.header("accept", a);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (r.text().await.unwrap(), ct)
}

fn val(text: &str, series: &str) -> f64 {
    promtool::value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn refuses_a_public_metrics_address_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-stun"])
        .args(["--metrics-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-allow-remote"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_shows_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("console.log");
    let out = std::fs::File::create(&log).unwrap();
    let _serve = Serve(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--stun-listen", "127.0.0.1:0", "--stun-alt-port", "off"])
            .args(["--relay-listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env_remove("ZMESH_DATABASE_URL")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let metrics_addr = wait_addr(&log, "metrics on http://");
    let metrics_url = format!("http://{}", metrics_addr.trim_end_matches("/metrics"));
    let metrics_url = format!("{metrics_url}/metrics");
    let api = wait_addr(&log, "listening on https://");
    let stun_addr = wait_addr(&log, "STUN responder on udp ");

    let id = zmesh_console::infra::tls::load_or_create(
        &data,
        &TlsSource::SelfSigned { extra_sans: vec![] },
    )
    .unwrap();
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let tls = zmesh_console::infra::tls_client::pinned_client_config(id.fingerprint).unwrap();
    let client = || ApiClient::new(format!("https://{api}"), token.clone(), tls.clone()).unwrap();
    let c = Console {
        _dir: tempfile::tempdir().unwrap(),
        addr: api.parse().unwrap(),
        pin: id.fingerprint,
        admin: client(),
        admin_token: token.clone(),
        auditor: client(),
        stop: None,
    };

    // one enrollment, one refused (unknown key), one stream with its map
    let key = new_key(&c).await;
    let a = c.enroll(&key, "alpha").await;
    let refused = c
        .admin
        .post::<_, serde_json::Value>(
            "/agent/v1/enroll",
            Some(&json!({
                "protocol": zmesh_shared::PROTOCOL_VERSION,
                "enroll_key": "zmek1.nosuchkeynosuchkeynosuchkey",
                "public_key": zmesh_shared::WgPrivateKey::generate().public_key().to_string(),
            })),
        )
        .await;
    assert!(refused.is_err());
    let mut ws = c.connect(a.credential.expose()).await.unwrap();
    hello_and_map(&mut ws, a.device_id, &a.signing_key).await;
    // a second enrollment reaches the first agent as a delta
    let b = c.enroll(&key, "bravo").await;
    let enrolled_at = loop {
        match next(&mut ws).await {
            Some(ServerMsg::PeerDelta { delta }) => {
                break delta.verify(&a.signing_key).unwrap().version
            }
            Some(_) => continue,
            None => panic!("stream ended before the delta"),
        }
    };
    // the enrollment's rollout is recorded before the next change (else the two could be
    // tracked as one)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = c.admin.get("/api/v1/changes").await.unwrap();
        if v["changes"][0]["revision"].as_u64() >= Some(enrolled_at) {
            break;
        }
        assert!(Instant::now() < deadline, "enrollment not tracked: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // an admin's change (tracked until the connected agents applied it) as another delta
    let _: serde_json::Value = c
        .admin
        .patch(
            &format!("/api/v1/devices/{}", b.device_id),
            &json!({"name": "bravo-2"}),
        )
        .await
        .unwrap();
    let version = loop {
        match next(&mut ws).await {
            Some(ServerMsg::PeerDelta { delta }) => {
                break delta.verify(&a.signing_key).unwrap().version
            }
            Some(_) => continue,
            None => panic!("stream ended before the delta"),
        }
    };
    // ... which the agent acknowledges, as a real one does once it is in force
    let ack = serde_json::to_string(&ClientMsg::Applied { version }).unwrap();
    ws.send(Message::Text(ack.into())).await.unwrap();

    // API calls: a list (200) and a device that does not exist (404)
    let _: serde_json::Value = c.admin.get("/api/v1/devices").await.unwrap();
    let missing = zmesh_shared::DeviceId::new().to_string();
    assert!(c
        .admin
        .get::<serde_json::Value>(&format!("/api/v1/devices/{missing}"))
        .await
        .is_err());
    let _: serde_json::Value = c
        .admin
        .get(&format!("/api/v1/devices/{}", b.device_id))
        .await
        .unwrap();

    // one STUN Binding request, answered
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(&zmesh_shared::stun::binding_request([7; 12]), &stun_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
        .await
        .expect("STUN answer")
        .unwrap();

    // the API port does not serve the metrics
    let on_api = c.admin.get_text("/metrics").await;
    let e = on_api.expect_err("/metrics must not be served on the API port");
    assert!(
        e.to_string().contains("404") || e.to_string().contains("not found"),
        "{e}"
    );

    let (t, ct) = scrape(&metrics_url, None).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert_eq!(val(&t, "zmesh_console_agent_streams"), 1.0);
    assert_eq!(
        val(&t, "zmesh_console_enrollments_total{method=\"key\"}"),
        2.0
    );
    assert_eq!(
        val(
            &t,
            "zmesh_console_enrollment_refusals_total{reason=\"unknown\"}"
        ),
        1.0
    );
    assert_eq!(
        val(&t, "zmesh_console_stream_messages_total{kind=\"map\"}"),
        1.0
    );
    assert!(val(&t, "zmesh_console_stream_messages_total{kind=\"delta\"}") >= 1.0);
    assert!(val(&t, "zmesh_console_stream_sent_bytes_total{kind=\"map\"}") > 100.0);
    // by route template, never by the raw path (which holds an id)
    let route = "route=\"/api/v1/devices/{id}\"";
    assert_eq!(
        val(
            &t,
            &format!("zmesh_console_http_requests_total{{method=\"GET\",{route},code=\"404\"}}")
        ),
        1.0
    );
    assert_eq!(
        val(
            &t,
            &format!("zmesh_console_http_requests_total{{method=\"GET\",{route},code=\"200\"}}")
        ),
        1.0
    );
    assert_eq!(
        val(
            &t,
            "zmesh_console_http_requests_total{method=\"POST\",route=\"/agent/v1/enroll\",code=\"401\"}"
        ),
        1.0
    );
    assert_eq!(
        val(
            &t,
            "zmesh_console_http_requests_total{method=\"GET\",route=\"unmatched\",code=\"404\"}"
        ),
        1.0
    );
    assert!(!t.contains(&missing) && !t.contains(&b.device_id.to_string()));
    assert_eq!(
        val(
            &t,
            &format!(
                "zmesh_console_http_request_duration_seconds_count{{method=\"GET\",{route},class=\"4xx\"}}"
            )
        ),
        1.0
    );
    assert_eq!(
        val(
            &t,
            "zmesh_console_stun_requests_total{outcome=\"answered\"}"
        ),
        1.0
    );
    assert_eq!(val(&t, "zmesh_console_relay_connections"), 0.0);
    assert!(val(&t, "zmesh_console_audit_head_sequence") >= 3.0);
    let rev = t
        .lines()
        .find(|l| l.starts_with("zmesh_console_network_revision{network="))
        .expect("a network revision");
    assert!(
        rev.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 2.0,
        "{rev}"
    );
    // no database error happened; the series exist from the start
    assert_eq!(
        val(&t, "zmesh_console_database_errors_total{source=\"http\"}"),
        0.0
    );
    assert_eq!(
        val(&t, "zmesh_console_enrollments_total{method=\"login\"}"),
        0.0
    );
    assert_eq!(
        val(&t, "zmesh_console_stun_requests_total{outcome=\"ignored\"}"),
        0.0
    );
    assert!(val(&t, "process_resident_memory_bytes") > 1e6);
    assert!(val(&t, "process_open_fds") >= 5.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = val(&t, "process_start_time_seconds");
    assert!(start <= now && start > now - 600.0, "{start} vs {now}");
    assert_eq!(val(&t, "zmesh_console_build_info{version=\"0.1.0\"}"), 1.0);
    promtool::check(&t);

    // OpenMetrics for a scraper that asks (Prometheus does)
    let (om, ct) = scrape(
        &metrics_url,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.ends_with("# EOF\n"));
    assert!(
        om.contains("# TYPE zmesh_console_enrollments counter"),
        "{om}"
    );
    assert!(om.contains("zmesh_console_enrollments_total{method=\"key\"} 2"));
    // only /metrics on the metrics port
    let r = reqwest::get(metrics_url.replace("/metrics", "/api/v1/devices"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // acknowledgements are timed when a change's rollout finishes: bravo's enrollment and
    // the rename each reached alpha (the one connected agent), and its one Applied (of
    // the rename's version) covers both
    let deadline = Instant::now() + Duration::from_secs(15);
    let t = loop {
        let (t, _) = scrape(&metrics_url, None).await;
        if val(&t, "zmesh_console_change_acks_total") >= 2.0 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no acknowledgement counted:\n{t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(val(&t, "zmesh_console_change_acks_total"), 2.0);
    assert_eq!(val(&t, "zmesh_console_change_apply_seconds_count"), 2.0);
    let took = val(&t, "zmesh_console_change_apply_seconds_sum");
    assert!((0.0..15.0).contains(&took), "{took}");
    assert_eq!(
        val(&t, "zmesh_console_change_apply_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );

    // the gauge follows the stream closing
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (t, _) = scrape(&metrics_url, None).await;
        if val(&t, "zmesh_console_agent_streams") == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "streams gauge stayed at 1:\n{t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
