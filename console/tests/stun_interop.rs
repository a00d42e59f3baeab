//! Interop of the console's STUN responder: Debian's classic `stun` client (RFC 3489,
//! package `stun-client`) and our own RFC 8489 codec get the right mapped address.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use zmesh_shared::stun;

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn start_responder() -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sock = rt
        .block_on(zmesh_console::stun::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    rt.spawn(zmesh_console::stun::run(sock));
    (addr, rt)
}

#[test]
fn our_codec_gets_its_mapped_address() {
    let (srv, _rt) = start_responder();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let tid = [0x5a; 12];
    s.send_to(&stun::binding_request(tid), srv).unwrap();
    let mut buf = [0u8; 600];
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!(from, srv);
    assert_eq!(
        stun::decode(&buf[..n]).unwrap(),
        stun::Message::BindingSuccess {
            tid,
            mapped: s.local_addr().unwrap()
        }
    );
    // garbage gets no answer and does not kill the responder
    s.send_to(b"\x00\x01\x00\x04garbage-garbage-garbage", srv)
        .unwrap();
    s.send_to(&[0u8; 3], srv).unwrap();
    s.send_to(&stun::binding_request([1; 12]), srv).unwrap();
    let (n, _) = s.recv_from(&mut buf).unwrap();
    assert!(matches!(
        stun::decode(&buf[..n]),
        Ok(stun::Message::BindingSuccess { tid, .. }) if tid == [1; 12]
    ));
}

#[test]
fn debian_stun_client_gets_its_mapped_address() {
    if !have("stun") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: Debian package stun-client (the `stun` command) is required"
        );
        eprintln!("skipping: `stun` (Debian stun-client) not installed");
        return;
    }
    let (srv, _rt) = start_responder();
    // A fixed source port lets us check the mapped address exactly.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let o = Command::new("timeout")
        .args([
            "10",
            "stun",
            &srv.to_string(),
            "1",
            "-v",
            "-p",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let want = format!("MappedAddress = 127.0.0.1:{port}");
    assert!(out.contains(&want), "expected {want:?} in:\n{out}");
}
