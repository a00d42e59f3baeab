//! SIEM forwarding against a real receiver: Debian's `rsyslogd`, over plain TCP and over
//! TLS (its gtls driver, with a CA this test makes). Every audit event must arrive once,
//! in order, with its chain fields and the event itself intact.
//!
//! Needs the `rsyslog` and `rsyslog-gnutls` packages (`.ci/run` installs them). Without
//! them the test fails when `CI` is set and prints a notice otherwise.

mod support {
    pub mod audit_fixture;
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::audit_fixture::{populate, sqlite};
use zmesh_console::store::EventFilter;
use zmesh_console::syslog;
use zmesh_shared::audit::AuditEvent;
use zmesh_shared::SigningKey;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

fn available() -> bool {
    let gtls = Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists()
        || Path::new("/usr/lib/rsyslog/lmnsd_gtls.so").exists()
        || glob_gtls();
    if Path::new(RSYSLOGD).exists() && gtls {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("rsyslogd with the gtls driver is missing: apt-get install rsyslog rsyslog-gnutls");
    }
    eprintln!(
        "notice: rsyslog/rsyslog-gnutls not installed; skipping the real-receiver syslog test"
    );
    false
}

fn glob_gtls() -> bool {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("rsyslog/lmnsd_gtls.so").exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One rsyslogd in the foreground with its own config, work dir and output file; killed
/// by its PID on drop.
struct Rsyslog {
    child: Child,
    out: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16, tls: Option<&TlsFiles>) -> Rsyslog {
        let out = dir.join("out.log");
        let (global_tls, module_tls) = match tls {
            Some(t) => (
                format!(
                    " DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" \
                     DefaultNetstreamDriverKeyFile=\"{}\"",
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                ),
                " StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\"",
            ),
            None => (String::new(), ""),
        };
        let conf = format!(
            "global(workDirectory=\"{dir}\"{global_tls})\n\
             module(load=\"imtcp\"{module_tls})\n\
             template(name=\"zm\" type=\"string\" string=\"%msgid%\\t%structured-data%\\t%msg%\\n\")\n\
             ruleset(name=\"zm\") {{ action(type=\"omfile\" file=\"{out}\" template=\"zm\") }}\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"zm\")\n",
            dir = dir.display(),
            out = out.display(),
        );
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rsyslogd");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog { child, out }
    }

    /// Lines rsyslog wrote so far.
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_tls(dir: &Path) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let srv_key = KeyPair::generate().unwrap();
    let srv = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&srv_key, &ca, &ca_key)
        .unwrap();
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, srv.pem()).unwrap();
    std::fs::write(&files.key, srv_key.serialize_pem()).unwrap();
    files
}

async fn forward_and_check(url: &str, ca: Option<PathBuf>, rs: &Rsyslog) {
    let (_d, s) = sqlite().await;
    let key = SigningKey::generate();
    let n = populate(&s, &key).await;
    let target = syslog::SyslogTarget::parse(url, ca).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let fwd = tokio::spawn(syslog::run(s.clone(), target, async move {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(20);
    while (rs.lines().len() as u64) < n {
        assert!(
            Instant::now() < deadline,
            "rsyslog received {} of {n} events: {:?}",
            rs.lines().len(),
            rs.lines()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    fwd.await.unwrap();
    let events = s
        .audit_events_page(0, 1 << 40, &EventFilter::default(), 1000)
        .await
        .unwrap();
    let lines = rs.lines();
    assert_eq!(lines.len(), events.len(), "each event exactly once");
    for (line, e) in lines.iter().zip(&events) {
        let mut f = line.splitn(3, '\t');
        let (msgid, sd, msg) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        assert_eq!(msgid, e.action, "{line}");
        assert!(sd.contains(&format!("seq=\"{}\"", e.seq)), "{line}");
        assert!(sd.contains(&format!("hash=\"{}\"", e.hash)), "{line}");
        let json = msg.trim_start_matches('\u{feff}').trim_start();
        let back: AuditEvent =
            serde_json::from_str(json).unwrap_or_else(|err| panic!("{err}: {line}"));
        assert_eq!(&back, e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_every_event_over_tcp() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rs = Rsyslog::start(dir.path(), port, None);
    forward_and_check(&format!("tcp://127.0.0.1:{port}"), None, &rs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_every_event_over_tls() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = make_tls(dir.path());
    let port = free_port();
    let rs = Rsyslog::start(dir.path(), port, Some(&tls));
    forward_and_check(
        &format!("tls://localhost:{port}"),
        Some(tls.ca.clone()),
        &rs,
    )
    .await;
}
