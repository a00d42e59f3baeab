//! The shell commands of the Markdown docs: extraction from fenced `sh` blocks, a small
//! POSIX-ish word splitter, and a check of each command against what it names — the clap
//! definitions of `zmesh` and `zmesh-console` (`try_parse_from`), scripts of this
//! repository, or a short list of well-known system tools.

use std::path::Path;

use clap::error::ErrorKind;
use clap::Parser;

/// One command found in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocCommand {
    /// 1-based line of the command's first line in the document.
    pub line: usize,
    pub text: String,
}

/// Fence info strings whose blocks are shell commands.
const SHELL_FENCES: &[&str] = &["sh", "bash", "shell"];

/// Programs the docs may use that are not ours: checked only to be on this list, so a
/// typo or a new tool is a conscious decision.
pub const SYSTEM_TOOLS: &[&str] = &[
    "apt-get",
    "cat",
    "chmod",
    "chown",
    "cp",
    "createdb",
    "createuser",
    "curl",
    "dig",
    "docker",
    "dpkg",
    "dpkg-deb",
    "echo",
    "export",
    "install",
    "ip",
    "journalctl",
    "ls",
    "mkdir",
    "mv",
    "pg_dump",
    "ping",
    "podman",
    "psql",
    "rm",
    "sha256sum",
    "sqlite3",
    "systemctl",
    "systemd-analyze",
    "tar",
    "test",
];

/// Commands of every shell block of a Markdown document, with continuation lines joined
/// and comments removed.
pub fn commands_in_markdown(md: &str) -> Vec<DocCommand> {
    let mut out = Vec::new();
    let mut in_shell = false;
    let mut in_other = false;
    let mut pending: Option<DocCommand> = None;
    for (i, raw) in md.lines().enumerate() {
        let t = raw.trim_start();
        if let Some(info) = t.strip_prefix("```") {
            if in_shell || in_other {
                in_shell = false;
                in_other = false;
                if let Some(p) = pending.take() {
                    out.push(p);
                }
            } else {
                let lang = info.split_whitespace().next().unwrap_or("");
                in_shell = SHELL_FENCES.contains(&lang);
                in_other = !in_shell;
            }
            continue;
        }
        if !in_shell {
            continue;
        }
        let line = strip_comment(raw).trim().to_string();
        let line = line.strip_prefix("$ ").unwrap_or(&line).to_string();
        match pending.as_mut() {
            Some(p) => {
                p.text.push(' ');
                p.text.push_str(line.trim_end_matches('\\').trim());
            }
            None if line.is_empty() => continue,
            None => {
                pending = Some(DocCommand {
                    line: i + 1,
                    text: line.trim_end_matches('\\').trim().to_string(),
                })
            }
        }
        if !line.ends_with('\\') {
            if let Some(p) = pending.take() {
                if !p.text.is_empty() {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// Removes a `#` comment that starts a word outside quotes.
fn strip_comment(line: &str) -> String {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev_space => return line[..i].to_string(),
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    line.to_string()
}

/// Splits a command line into simple commands (at `&&`, `||`, `|`, `;`, trailing `&`)
/// and each into words, honouring single and double quotes and `$(…)`.
pub fn split(line: &str) -> Result<Vec<Vec<String>>, String> {
    let mut cmds = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let flush_word = |word: &mut String, in_word: &mut bool, words: &mut Vec<String>| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == c {
                        closed = true;
                        break;
                    }
                    word.push(d);
                }
                if !closed {
                    return Err(format!("unbalanced {c} in {line:?}"));
                }
            }
            '$' if chars.peek() == Some(&'(') => {
                in_word = true;
                word.push('$');
                let mut depth = 0;
                for d in chars.by_ref() {
                    word.push(d);
                    match d {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                if depth != 0 {
                    return Err(format!("unbalanced $( in {line:?}"));
                }
            }
            '&' | '|' | ';' => {
                if matches!(chars.peek(), Some(&'&') | Some(&'|')) {
                    chars.next();
                }
                flush_word(&mut word, &mut in_word, &mut words);
                if !words.is_empty() {
                    cmds.push(std::mem::take(&mut words));
                }
            }
            c if c.is_whitespace() => flush_word(&mut word, &mut in_word, &mut words),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    flush_word(&mut word, &mut in_word, &mut words);
    if !words.is_empty() {
        cmds.push(words);
    }
    Ok(cmds)
}

fn is_assignment(w: &str) -> Option<(&str, &str)> {
    let (name, value) = w.split_once('=')?;
    let mut cs = name.chars();
    let first = cs.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some((name, value))
}

/// Checks one documented command line; `root` is the repository (for scripts).
/// Returns what it checked, e.g. `zmesh up`, for the caller's coverage list.
pub fn check_line(root: &Path, line: &str) -> Result<Vec<String>, String> {
    let mut checked = Vec::new();
    for words in split(line)? {
        checked.extend(check_words(root, &words)?);
    }
    Ok(checked)
}

fn check_words(root: &Path, words: &[String]) -> Result<Vec<String>, String> {
    let mut checked = Vec::new();
    let mut w: Vec<String> = words.to_vec();
    // Leading assignments; a `$(…)` value is a command of its own.
    while let Some((_, value)) = w.first().and_then(|x| is_assignment(x)) {
        if let Some(inner) = value.strip_prefix("$(").and_then(|v| v.strip_suffix(')')) {
            checked.extend(check_line(root, inner)?);
        }
        w.remove(0);
    }
    if w.is_empty() {
        return Ok(checked);
    }
    if w[0] == "sudo" {
        w.remove(0);
        while let Some(f) = w.first() {
            match f.as_str() {
                "-E" | "-H" => {
                    w.remove(0);
                }
                "-u" => {
                    w.drain(..2.min(w.len()));
                }
                _ => break,
            }
        }
        return check_words(root, &w).map(|mut v| {
            checked.append(&mut v);
            checked
        });
    }
    // `ip netns exec NS CMD…` runs CMD: check CMD too, so a `zmesh` line in a namespace
    // is parsed like any other.
    if w.len() > 4 && w[0] == "ip" && w[1] == "netns" && w[2] == "exec" {
        checked.push("ip".to_string());
        checked.extend(check_words(root, &w[4..])?);
        return Ok(checked);
    }
    let prog = w[0].clone();
    match prog.as_str() {
        "zmesh" => checked.push(parse::<zmesh_agent::cli::Cli>(&w)?),
        "zmesh-console" => checked.push(parse::<zmesh_console::cli::Cli>(&w)?),
        "cargo" => checked.extend(check_cargo(&w)?),
        p if p.contains('/') => {
            let path = root.join(p.trim_start_matches("./"));
            let meta = std::fs::metadata(&path)
                .map_err(|e| format!("{p}: {e} (looked for {})", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o111 == 0 {
                return Err(format!("{p} is not executable"));
            }
            checked.push(p.trim_start_matches("./").to_string());
        }
        p if SYSTEM_TOOLS.contains(&p) => checked.push(p.to_string()),
        p => {
            return Err(format!(
                "unknown program {p:?}: not zmesh, zmesh-console, cargo, a script of this \
                 repository or one of shell::SYSTEM_TOOLS"
            ))
        }
    }
    Ok(checked)
}

/// Parses `w` with the real definitions; returns the program and subcommand path
/// (`zmesh-console keys create`).
fn parse<P: Parser>(w: &[String]) -> Result<String, String> {
    let fail = |e: clap::Error| format!("`{}`: {}", w.join(" "), e.render());
    match P::try_parse_from(w) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(w[0].clone())
        }
        Err(e) => return Err(fail(e)),
    }
    let m = P::command().try_get_matches_from(w).map_err(fail)?;
    let mut name = w[0].clone();
    let mut cur = &m;
    while let Some((sub, next)) = cur.subcommand() {
        name.push(' ');
        name.push_str(sub);
        cur = next;
    }
    Ok(name)
}

fn check_cargo(w: &[String]) -> Result<Vec<String>, String> {
    let sub = w.get(1).map(String::as_str).unwrap_or("");
    let package = w
        .iter()
        .position(|x| x == "-p" || x == "--package")
        .and_then(|i| w.get(i + 1))
        .cloned();
    match sub {
        "run" => {
            let rest = w
                .iter()
                .position(|x| x == "--")
                .map(|i| &w[i + 1..])
                .unwrap_or(&[]);
            let bin = match package.as_deref() {
                Some("zmesh-console") => "zmesh-console",
                Some("zmesh-agent") => "zmesh",
                other => return Err(format!("`cargo run` of unknown package {other:?}")),
            };
            let mut full = vec![bin.to_string()];
            full.extend_from_slice(rest);
            if bin == "zmesh" {
                Ok(vec![parse::<zmesh_agent::cli::Cli>(&full)?])
            } else {
                Ok(vec![parse::<zmesh_console::cli::Cli>(&full)?])
            }
        }
        "test" | "build" | "deb" | "install" | "fmt" | "clippy" => {
            if let Some(p) = &package {
                let known = [
                    "zmesh-agent",
                    "zmesh-console",
                    "zmesh-shared",
                    "zmesh-packaging",
                    "cargo-deb",
                ];
                if !known.contains(&p.as_str()) {
                    return Err(format!("cargo {sub}: unknown package {p}"));
                }
            }
            Ok(vec![format!("cargo {sub}")])
        }
        s => Err(format!("cargo {s}: not a documented cargo subcommand")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD: &str = "text\n```sh\nzmesh up --console https://c:8443 \\\n   --enroll-key zmek1.x   # enroll\n\n# a comment\nsudo zmesh status && zmesh ping b -c 2\n```\n```json\n{\"zmesh\": 1}\n```\n";

    #[test]
    fn extracts_joins_and_strips_comments() {
        let c = commands_in_markdown(MD);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].line, 3);
        assert_eq!(
            c[0].text,
            "zmesh up --console https://c:8443 --enroll-key zmek1.x"
        );
        assert_eq!(c[1].text, "sudo zmesh status && zmesh ping b -c 2");
    }

    #[test]
    fn splits_words_and_commands() {
        let s =
            split(r#"KEY=$(zmesh-console keys create --ttl 1h) && echo "a b" 'c'; x &"#).unwrap();
        assert_eq!(s[0], vec!["KEY=$(zmesh-console keys create --ttl 1h)"]);
        assert_eq!(s[1], vec!["echo", "a b", "c"]);
        assert_eq!(s[2], vec!["x"]);
        assert!(split("echo 'open").is_err());
    }

    #[test]
    fn checks_against_the_real_clis() {
        let root = crate::repo_root();
        for good in [
            "sudo zmesh up --console https://c:8443 --enroll-key zmek1.x",
            "zmesh daemon &",
            "zmesh-console --data-dir /var/lib/zmesh-console devices revoke laptop",
            "KEY=$(zmesh-console keys create --reusable --ttl 24h)",
            "cargo run --release -p zmesh-console -- serve --listen 0.0.0.0:8443",
            "systemctl status zmesh",
            "ip netns exec zm-b zmesh --state-dir s ping alpha",
        ] {
            check_line(&root, good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert_eq!(
            check_line(
                &root,
                "sudo zmesh-console --data-dir /d keys create --reusable"
            )
            .unwrap(),
            vec!["zmesh-console keys create"]
        );
        for bad in [
            "zmesh frobnicate",
            "zmesh up --consol https://c:8443",
            "zmesh-console keys create --ttl soon",
            "zmesh-console devices revoke",
            "KEY=$(zmesh-console keys mint)",
            "cargo run -p zmesh-console -- serve --listen nowhere",
            "frobctl --now",
            "ip netns exec zm-b zmesh pong alpha",
            "scripts/no-such-script.sh",
        ] {
            assert!(check_line(&root, bad).is_err(), "{bad} passed");
        }
    }
}
