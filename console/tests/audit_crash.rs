//! Concurrency and crash test of the audit log with the real binary: several writers
//! create enrollment keys through the API while `zmesh-console serve` is SIGKILLed and
//! restarted a few times. Afterwards every acknowledged change has exactly one event,
//! no event lacks its change (and no change its event), the sequence has no gap or
//! fork, and the chain verifies, through the CLI too (`audit verify`, and an export
//! verified offline with `audit verify --file --public-key`).
//!
//! On SQLite one console; on PostgreSQL two replicas on one database, killed in turn.
//! Without PostgreSQL that run is skipped with a notice, unless `CI` is set.

mod support {
    pub mod pg;
}

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use zmesh_console::cli::ApiClient;
use zmesh_console::service::audit::verify;
use zmesh_console::store::{EventFilter, Store};
use zmesh_shared::SigningKey;

const BIN: &str = env!("CARGO_BIN_EXE_zmesh-console");
const WRITERS: usize = 4;
const KILLS: usize = 3;

/// A console process, killed (SIGKILL) on drop if still running.
struct Console {
    child: Option<Child>,
    data: PathBuf,
    port: u16,
    db: String,
}

impl Console {
    fn start(data: &Path, port: u16, db: &str) -> Console {
        let mut c = Console {
            child: None,
            data: data.to_path_buf(),
            port,
            db: db.to_string(),
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.data.join("console.url"));
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--database")
            .arg(&self.db)
            .arg("--audit-checkpoint-events")
            .arg("25")
            // replicas share this host: only the HTTPS port is under test
            .arg("--no-stun")
            .arg("--data-dir")
            .arg(&self.data)
            .env_remove("ZMESH_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.data.join("console.url").exists() {
            assert!(Instant::now() < deadline, "console did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn term(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client(data: &Path, port: u16, token: &str) -> ApiClient {
    let (cert, _) = zmesh_console::infra::tls::self_signed_paths(data);
    let pin = zmesh_console::infra::tls::fingerprint_of_pem_file(&cert).unwrap();
    let tls = zmesh_console::infra::tls_client::pinned_client_config(pin).unwrap();
    ApiClient::new(format!("https://127.0.0.1:{port}"), token.into(), tls).unwrap()
}

fn copy_identity(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("tls")).unwrap();
    for f in ["signing.key", "admin.token", "tls/cert.pem", "tls/key.pem"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[derive(Debug, Default)]
struct Outcomes {
    /// description -> enrollment key id, for acknowledged creations
    acked: HashMap<String, String>,
    /// descriptions whose request failed (may or may not have committed)
    unknown: Vec<String>,
}

async fn crash_run(db: &str, replicas: usize) {
    let dir = tempfile::tempdir().unwrap();
    let datas: Vec<PathBuf> = (0..replicas)
        .map(|i| dir.path().join(format!("d{i}")))
        .collect();
    let ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let mut consoles = vec![Console::start(&datas[0], ports[0], db)];
    for i in 1..replicas {
        copy_identity(&datas[0], &datas[i]);
        consoles.push(Console::start(&datas[i], ports[i], db));
    }
    let token = std::fs::read_to_string(datas[0].join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Outcomes::default()));
    let mut writers = vec![];
    for w in 0..WRITERS {
        let (stop, out, token) = (stop.clone(), out.clone(), token.clone());
        let targets: Vec<(PathBuf, u16)> =
            datas.iter().cloned().zip(ports.iter().cloned()).collect();
        writers.push(tokio::spawn(async move {
            let clients: Vec<ApiClient> =
                targets.iter().map(|(d, p)| client(d, *p, &token)).collect();
            let mut i = 0usize;
            // bounded: at most 100k requests even if stop is never set
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let desc = format!("w{w}-{i}");
                let c = &clients[(w + i) % clients.len()];
                let r: anyhow::Result<Value> = c
                    .post(
                        "/api/v1/enroll-keys",
                        Some(&json!({"description": desc, "reusable": true})),
                    )
                    .await;
                match r {
                    Ok(v) => {
                        out.lock()
                            .unwrap()
                            .acked
                            .insert(desc, v["id"].as_str().unwrap().to_string());
                    }
                    Err(_) => {
                        out.lock().unwrap().unknown.push(desc);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
        }));
    }
    for k in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(700 + 300 * k as u64)).await;
        let c = &mut consoles[k % replicas];
        let c = tokio::task::block_in_place(|| {
            c.kill9();
            std::thread::sleep(Duration::from_millis(100));
            c.spawn();
            c.port
        });
        let _ = c;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // through the CLI while the console still runs
    let data0 = &datas[0];
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(data0)
            .args(args)
            .env_remove("ZMESH_TOKEN")
            .env_remove("ZMESH_CONSOLE_URL")
            .output()
            .unwrap()
    };
    let o = cli(&["audit", "verify"]);
    assert!(
        o.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let export = dir.path().join("export.jsonl");
    let o = cli(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--output",
        export.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "audit export: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let key = std::fs::read_to_string(data0.join("signing.key")).unwrap();
    let pk = SigningKey::from_base64(key.trim())
        .unwrap()
        .public_key()
        .to_string();
    let o = Command::new(BIN)
        .args([
            "audit",
            "verify",
            "--file",
            export.to_str().unwrap(),
            "--public-key",
            &pk,
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "offline verify: {} {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("audit chain OK (full mode)"));
    for c in &mut consoles {
        tokio::task::block_in_place(|| c.term());
    }

    let store = Store::connect(db).await.unwrap();
    let events = store
        .audit_events_page(0, 1 << 40, &EventFilter::default(), 1_000_000)
        .await
        .unwrap();
    let head = store.audit_head().await.unwrap();
    assert_eq!(
        events.len() as u64,
        head.seq,
        "gap or fork: {} events, head {}",
        events.len(),
        head.seq
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "sequence gap");
    }
    let pkey: zmesh_shared::SigningPublicKey = pk.parse().unwrap();
    let r = verify::verify_store(&store, &pkey).await.unwrap();
    assert!(r.ok, "{r:?}");
    assert!(r.checkpoints >= 1, "checkpoints were signed: {r:?}");

    let net = store.default_network().await.unwrap();
    let keys: HashMap<String, String> = store
        .list_enroll_keys(net.id)
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.id.to_string(), k.description.unwrap_or_default()))
        .collect();
    let mut creates: HashMap<String, Vec<String>> = HashMap::new();
    for e in events.iter().filter(|e| e.action == "enroll_key.create") {
        let id = e
            .target
            .as_deref()
            .unwrap()
            .strip_prefix("enroll_key:")
            .unwrap()
            .to_string();
        let desc = e.after.as_ref().unwrap()["description"]
            .as_str()
            .unwrap()
            .to_string();
        // no event lacks its change
        assert_eq!(
            keys.get(&id),
            Some(&desc),
            "event {} has no enrollment key",
            e.seq
        );
        creates.entry(desc).or_default().push(id);
    }
    // no change lacks its event, and none has two
    assert_eq!(creates.values().map(Vec::len).sum::<usize>(), keys.len());
    assert!(
        creates.values().all(|v| v.len() == 1),
        "a change with two events"
    );
    let out = out.lock().unwrap();
    for (desc, id) in &out.acked {
        assert_eq!(
            creates.get(desc),
            Some(&vec![id.clone()]),
            "acknowledged {desc} has no single event"
        );
    }
    for desc in &out.unknown {
        assert!(creates.get(desc).is_none_or(|v| v.len() == 1));
    }
    assert!(
        out.acked.len() > 20,
        "too few writes got through: {}",
        out.acked.len()
    );
    eprintln!(
        "crash test: {} acknowledged, {} failed in flight ({} of those committed), {} events, {} checkpoints",
        out.acked.len(),
        out.unknown.len(),
        out.unknown.iter().filter(|d| creates.contains_key(*d)).count(),
        events.len(),
        r.checkpoints
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_sigkill_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/crash.db", dir.path().display());
    crash_run(&db, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_sigkill_two_replicas_postgres() {
    let Some(db) =
        support::pg::fresh_db("concurrent_writers_and_sigkill_two_replicas_postgres").await
    else {
        return;
    };
    crash_run(&db.url, 2).await;
}
