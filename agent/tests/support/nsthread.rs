//! The test process inside a lab namespace: run a closure on a thread that has entered
//! the namespace (its sockets live there), and forward a loopback port of the test's
//! own namespace into a lab namespace, so a process there reaches a helper (such as
//! the OpenID Provider) that listens on the host's 127.0.0.1 only.

use std::fs::File;
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Moves the calling thread into network namespace `ns` (as `ip netns` names it).
fn enter(ns: &str) -> Result<(), String> {
    let f = File::open(format!("/run/netns/{ns}")).map_err(|e| format!("open netns {ns}: {e}"))?;
    enter_fd(&f)
}

fn enter_fd(f: &File) -> Result<(), String> {
    // SAFETY: setns(2) on a namespace file descriptor we hold open; affects this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `ns` and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns).unwrap_or_else(|e| panic!("{e}"));
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Forwards `127.0.0.1:port` inside a lab namespace to `127.0.0.1:port` of the test
/// process's namespace, until dropped (or `lifetime` passes).
pub struct LoopbackForward {
    stop: Arc<AtomicBool>,
}

impl Drop for LoopbackForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl LoopbackForward {
    pub fn start(ns: &str, port: u16, lifetime: Duration) -> LoopbackForward {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (ns, stop2) = (ns.to_string(), stop.clone());
        std::thread::spawn(move || {
            let bound = (|| {
                let home = File::open("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
                enter(&ns)?;
                let l = TcpListener::bind(("127.0.0.1", port)).map_err(|e| e.to_string());
                // back home: connections upstream are made from the test's namespace
                enter_fd(&home)?;
                let l = l?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok::<_, String>(l)
            })();
            let l = match bound {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let deadline = Instant::now() + lifetime;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                match l.accept() {
                    Ok((down, _)) => {
                        let _ = down.set_nonblocking(false);
                        if let Ok(up) = TcpStream::connect(("127.0.0.1", port)) {
                            pipe(down, up);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => LoopbackForward { stop },
            Ok(Err(e)) => panic!("forwarding 127.0.0.1:{port} into the lab: {e}"),
            Err(e) => panic!("forwarding 127.0.0.1:{port} into the lab: {e}"),
        }
    }
}

/// Copies both ways until either side closes or is idle for a minute.
fn pipe(a: TcpStream, b: TcpStream) {
    for (mut from, to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        let _ = from.set_read_timeout(Some(Duration::from_secs(60)));
        std::thread::spawn(move || {
            let mut to = to;
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}
