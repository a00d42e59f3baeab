//! TCP reachability through the mesh, as the namespace tests see it: a tiny server that
//! answers "ok" on every port given, and a probe that opens fresh connections (a new SYN
//! each, no kernel retransmit wait) until the wanted outcome or a deadline.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::netns::Lab;
use super::{text, Agent};

/// Accepts connections forever on every port given and answers "ok".
pub const SERVER: &str = r#"
import socket, sys, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"ok\n")
        finally:
            c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
"#;

/// Tries fresh connections (each one a new SYN, no kernel retransmit wait) until the
/// wanted outcome or the deadline; prints the outcome and the seconds it took.
pub const PROBE: &str = r#"
import socket, sys, time
host, port, want, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "open", float(sys.argv[4])
t0 = time.monotonic()
while True:
    ok = False
    try:
        s = socket.create_connection((host, port), timeout=0.2)
        s.settimeout(1)
        ok = s.recv(3) == b"ok\n"
        s.close()
    except OSError:
        pass
    if ok == want or time.monotonic() - t0 > limit:
        print("open" if ok else "closed", round(time.monotonic() - t0, 3), flush=True)
        sys.exit(0 if ok == want else 1)
    time.sleep(0.02)
"#;

pub fn probe(lab: &Lab, a: &Agent, ip: Ipv4Addr, port: u16, want_open: bool, limit: f64) -> bool {
    let ip = ip.to_string();
    let port = port.to_string();
    let limit_s = limit.to_string();
    let want = if want_open { "open" } else { "closed" };
    let o = lab.exec_timeout(
        &a.ns,
        &["python3", "-c", PROBE, &ip, &port, want, &limit_s],
        Duration::from_secs_f64(limit + 10.0),
    );
    eprintln!(
        "probe {} -> {ip}:{port} want {want}: {}",
        a.name,
        text(&o).trim()
    );
    o.status.success()
}

/// Whether a connection attempt (several, over `secs`) never succeeds.
pub fn stays_closed(lab: &Lab, a: &Agent, ip: Ipv4Addr, port: u16, secs: f64) -> bool {
    // "want open" failing after `secs` means no attempt got through.
    !probe(lab, a, ip, port, true, secs)
}
