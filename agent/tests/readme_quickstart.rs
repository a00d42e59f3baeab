//! The README's "Quick start", run as written: its ```sh commands are read from
//! README.md at build time (`include_str!`) and run one by one, in order, so the README
//! cannot drift from what works. "This machine" of the README is a fresh network
//! namespace of the test lab; every command runs there in a root shell started in the
//! lab's temporary directory (standing in for the top of the repository). Needs root;
//! see `support::netns` for skipping outside CI.
//!
//! How README commands map, and the only substitutions made (all listed here):
//! - `cargo build …` is not run (the test's own build has the binaries): it must still
//!   name both packages, and `target/release` in the working directory is a symlink to
//!   the directory of the test's `zmesh` and `zmesh-console`, so the README's
//!   `export PATH="$PWD/target/release:$PATH"` runs unchanged and finds them.
//! - `export …` lines are kept and replayed before every later command (the README
//!   runs in one shell; the test runs each command in a fresh `bash -c`).
//! - The name given to `ip netns add NAME` is replaced, as a whole word in every later
//!   command, by a name unique to this run (namespaces are global), and the test deletes
//!   that namespace when it ends. `ip netns add` itself runs outside the machine's
//!   `ip netns exec` (see the comment where it runs); all other commands run inside.
//! - `zmek1.…` is replaced by the key the README's `keys create` command printed.
//! - A command ending in `&` is started in the background and tracked by PID; the test
//!   then waits (bounded) until it is ready, as a person typing the next command would:
//!   `zmesh-console serve` until it accepts TCP on 127.0.0.1:8443 and has printed the
//!   first-admin setup link the README quotes, `zmesh daemon` until its control socket
//!   exists. Before `zmesh … ping PEER`, the test waits (bounded) until the same agent's
//!   `status --json` lists PEER (the peer map reaches it asynchronously), then runs the
//!   ping exactly as written; its failure fails the test.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::netns::{lab_or_skip, wait_for, Lab};
use support::{console_bin, find_enroll_key, text, wait_tcp, zmesh_bin};

const README: &str = include_str!("../../README.md");

/// The first-admin link `serve` prints, as the README quotes it (up to the token).
const SETUP_LINK: &str = "create the first admin at https://127.0.0.1:8443/ui/setup/zsu_";

/// Shell commands of the README's "## Quick start" section, in order: comments removed,
/// `\` continuations joined.
fn quickstart_commands(md: &str) -> Vec<String> {
    let start = md
        .find("\n## Quick start\n")
        .expect("README.md has no \"## Quick start\" section");
    let section = &md[start + 1..];
    let section = match section[3..].find("\n## ") {
        Some(end) => &section[..end + 3],
        None => section,
    };
    let mut out = Vec::new();
    let (mut in_block, mut in_sh) = (false, false);
    let mut pending = String::new();
    for line in section.lines() {
        let t = line.trim();
        if let Some(info) = t.strip_prefix("```") {
            in_sh = !in_block && info.trim() == "sh";
            in_block = !in_block;
            continue;
        }
        if !in_sh {
            continue;
        }
        // A comment starts at a `#` after a blank; the quick start quotes no `#`.
        let code = match t.find(" #") {
            Some(i) => t[..i].trim_end(),
            None if t.starts_with('#') => "",
            None => t,
        };
        let (code, continued) = match code.strip_suffix('\\') {
            Some(c) => (c.trim_end(), true),
            None => (code, false),
        };
        if !pending.is_empty() && !code.is_empty() {
            pending.push(' ');
        }
        pending.push_str(code);
        if !continued && !pending.is_empty() {
            out.push(std::mem::take(&mut pending));
        }
    }
    out
}

/// Replaces whole words of `line` found in `subst` (shell words here are plain tokens).
fn substitute(line: &str, subst: &[(String, String)]) -> String {
    line.split(' ')
        .map(|w| {
            subst
                .iter()
                .find(|(from, _)| from == w)
                .map_or(w, |(_, to)| to.as_str())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The value after `--state-dir` in a command line.
fn state_dir_of(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "--state-dir")?;
    words.next()
}

/// The "shell" the README's commands run in: the machine's namespace, the working
/// directory, and the `export`s so far.
struct Shell {
    ns: String,
    dir: PathBuf,
    exports: Vec<String>,
}

impl Shell {
    fn script(&self, line: &str) -> String {
        let mut s = format!("set -e; cd '{}'; ", self.dir.display());
        for e in &self.exports {
            s.push_str(e);
            s.push_str("; ");
        }
        s.push_str(line);
        s
    }

    fn run(&self, lab: &Lab, line: &str, timeout: Duration) -> std::process::Output {
        lab.exec_timeout(&self.ns, &["bash", "-c", &self.script(line)], timeout)
    }
}

/// Removes a namespace's private /etc files (`/etc/netns/NS`) however the test ends.
struct PrivateEtc(PathBuf);

impl Drop for PrivateEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn readme_quick_start_runs_as_written() {
    let t0 = Instant::now();
    let commands = quickstart_commands(README);
    // The test cannot pass by finding nothing: the core of the quick start must be there.
    for must in [
        "cargo build",
        "zmesh-console serve",
        "keys create",
        " up ",
        " ping ",
    ] {
        assert!(
            commands.iter().any(|c| c.contains(must)),
            "the README's quick start has no {must:?} command: {commands:#?}"
        );
    }
    assert!(
        README.contains(SETUP_LINK),
        "the README no longer quotes the setup link {SETUP_LINK:?} that this test checks"
    );
    let last = commands.last().unwrap();
    assert!(
        last.contains(" ping "),
        "the quick start should end with a ping through the mesh, ends with {last:?}"
    );

    let Some(mut lab) = lab_or_skip("readme_quick_start_runs_as_written") else {
        return;
    };
    let console = console_bin();
    let bin_dir = zmesh_bin().parent().unwrap().to_path_buf();
    assert_eq!(console.parent().unwrap(), bin_dir);
    let machine = lab.add_ns().expect("namespace for \"this machine\"");
    // The README's daemon points "this machine"'s DNS at its resolver: give the
    // namespace a resolv.conf of its own (`ip netns exec` binds /etc/netns/NS/resolv.conf
    // over /etc/resolv.conf) so the real machine's file is never touched.
    let etc = PrivateEtc(PathBuf::from("/etc/netns").join(&machine));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(etc.0.join("resolv.conf"), "# quick-start test namespace\n").unwrap();
    let dir = lab.dir.path().join("repo");
    std::fs::create_dir_all(dir.join("target")).unwrap();
    std::os::unix::fs::symlink(&bin_dir, dir.join("target/release")).unwrap();
    let mut sh = Shell {
        ns: machine.clone(),
        dir: dir.clone(),
        exports: Vec::new(),
    };

    let mut subst: Vec<(String, String)> = Vec::new();
    let mut pings = 0;
    for (i, raw) in commands.iter().enumerate() {
        if raw.starts_with("cargo build") {
            for p in ["-p zmesh-agent", "-p zmesh-console"] {
                assert!(raw.contains(p), "the README's build step lacks {p}: {raw}");
            }
            eprintln!("README[{i}] (built by cargo for this test) $ {raw}");
            continue;
        }
        if let Some(name) = raw.strip_prefix("ip netns add ") {
            let unique = format!("zq{}-{i}", std::process::id());
            lab.adopt_ns(&unique);
            subst.push((name.trim().to_string(), unique));
        }
        let line = substitute(raw, &subst);
        assert!(
            !line.contains("zmek1.…"),
            "README[{i}] uses the enrollment key before `keys create` printed one: {raw}"
        );
        eprintln!("README[{i}] $ {line}");
        if raw.starts_with("export ") {
            sh.exports.push(line);
            continue;
        }
        if raw.starts_with("ip netns add ") {
            // Not inside the machine's `ip netns exec`: that runs in a mount namespace of
            // its own, so the name `ip netns add` mounts there would vanish with it. Which
            // network namespace runs it makes no difference: the new one starts empty.
            let args: Vec<&str> = line.split_whitespace().collect();
            let out = std::process::Command::new(args[0])
                .args(&args[1..])
                .output()
                .expect("ip netns add");
            assert!(out.status.success(), "README[{i}] {raw}: {}", text(&out));
            continue;
        }
        if let Some(bg) = line.strip_suffix('&') {
            start_background(&mut lab, &sh, i, bg.trim());
            continue;
        }
        if let Some(peer) = ping_target(&line) {
            wait_for_peer(&lab, &sh, &line, peer);
            pings += 1;
        }
        let out = sh.run(&lab, &line, Duration::from_secs(90));
        eprint!("{}", text(&out));
        assert!(
            out.status.success(),
            "README quick-start command {i} failed ({:?}): {raw}\n{}",
            out.status,
            text(&out)
        );
        if raw.contains("keys create") {
            let key = find_enroll_key(&String::from_utf8_lossy(&out.stdout))
                .unwrap_or_else(|| panic!("`{raw}` printed no zmek1 key: {}", text(&out)));
            subst.push(("zmek1.…".to_string(), key));
        }
    }
    assert!(pings >= 1, "no ping was run");
    eprintln!(
        "README quick start: {} commands OK in {:.1} s",
        commands.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// `PEER` of a `zmesh … ping PEER` command line.
fn ping_target(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "ping")?;
    words.next()
}

/// Waits until the agent this ping line talks to lists `peer` (same line, `status --json`
/// in place of `ping PEER`).
fn wait_for_peer(lab: &Lab, sh: &Shell, line: &str, peer: &str) {
    let status = line.replace(&format!("ping {peer}"), "status --json");
    wait_for(
        &format!("`{status}` to list {peer}"),
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let out = sh.run(lab, &status, Duration::from_secs(10));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            v["peers"]
                .as_array()?
                .iter()
                .any(|p| p["name"] == peer)
                .then_some(())
        },
    );
}

/// Starts a README command that ends in `&`, tracked by PID (`exec` keeps it one
/// process), and waits until it is ready for the next command.
fn start_background(lab: &mut Lab, sh: &Shell, i: usize, cmd: &str) {
    let name = format!("readme-{i}");
    let script = sh.script(&format!("exec {cmd}"));
    lab.spawn(&sh.ns, &name, &["bash", "-c", &script]);
    if cmd.contains("zmesh-console serve") {
        wait_tcp(
            lab,
            &sh.ns,
            "127.0.0.1".parse().unwrap(),
            8443,
            Duration::from_secs(30),
        );
        // The README tells the reader to look for this link; it must be printed.
        let log = lab.log_path(&name);
        wait_for(
            "the console to print the first-admin setup link",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                std::fs::read_to_string(&log)
                    .ok()?
                    .contains(SETUP_LINK)
                    .then_some(())
            },
        );
    } else if cmd.contains(" daemon") {
        let state = state_dir_of(cmd).expect("a README daemon without --state-dir");
        let sock = sh.dir.join(state).join("zmesh.sock");
        wait_for(
            &format!("the control socket {}", sock.display()),
            Duration::from_secs(15),
            Duration::from_millis(50),
            || socket_ready(&sock).then_some(()),
        );
    } else {
        panic!("README[{i}]: the test does not know how to wait for `{cmd}`; teach it");
    }
}

fn socket_ready(p: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(p).is_ok()
}
