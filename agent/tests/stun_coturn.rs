//! Our STUN client against stock coturn (Debian `coturn`, `turnserver` in STUN-only mode)
//! and against the console's own responder: both report the socket's real address, and
//! two servers agreeing means an endpoint-independent mapping (there is no NAT here).

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zmesh_agent::core::NatMapping;
use zmesh_agent::netcheck::{check_udp, stun_query};

struct Turn(Child);
impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_coturn() -> Option<(Turn, SocketAddr)> {
    let have = Command::new("sh")
        .args(["-c", "command -v turnserver"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: Debian package coturn is required"
        );
        eprintln!("skipping: turnserver (coturn) not installed");
        return None;
    }
    let port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--listening-ip",
            "127.0.0.1",
            "--listening-port",
            &port.to_string(),
            "--log-file",
            "stdout",
            "--simple-log",
            "--pidfile",
        ])
        .arg(dir.path().join("turn.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some((Turn(child), SocketAddr::from(([127, 0, 0, 1], port))))
}

#[test]
fn our_stun_client_works_against_coturn() {
    let Some((_turn, srv)) = start_coturn() else {
        return;
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // coturn takes a moment to bind; stun_query retries within its time budget
    let (mapped, rtt) = stun_query(&sock, srv, Duration::from_secs(10)).expect("coturn answered");
    assert_eq!(mapped, sock.local_addr().unwrap());
    assert!(rtt < Duration::from_secs(10));
}

#[test]
fn two_servers_agree_so_mapping_is_endpoint_independent() {
    let Some((_turn, srv)) = start_coturn() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ours = rt
        .block_on(zmesh_console::stun::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let ours_addr = ours.local_addr().unwrap();
    let _guard = rt.enter();
    let task = rt.spawn(zmesh_console::stun::run(ours));
    let th = std::thread::spawn(move || {
        check_udp(
            "127.0.0.1:0".parse().unwrap(),
            &[srv, ours_addr],
            Duration::from_secs(10),
        )
        .unwrap()
    });
    // drive the responder while the blocking check runs
    let report = rt.block_on(async {
        loop {
            if th.is_finished() {
                break th.join().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    task.abort();
    assert!(report.udp);
    assert!(
        report
            .results
            .iter()
            .all(|r| r.mapped == Some(report.local)),
        "{report:?}"
    );
    assert_eq!(report.mapping, NatMapping::EndpointIndependent);
}
