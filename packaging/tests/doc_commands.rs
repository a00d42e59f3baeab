//! Every shell command in README.md and docs/*.md is checked: `zmesh` and
//! `zmesh-console` command lines must parse with the real clap definitions, scripts must
//! exist and be executable, anything else must be a known system tool. The core commands
//! of the quick start must be among them, so the check cannot pass by finding nothing.

use std::collections::BTreeSet;

use zmesh_packaging::{repo_root, shell};

#[test]
fn every_documented_command_parses() {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);

    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    let mut count = 0;
    for f in &files {
        let md = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        for c in shell::commands_in_markdown(&md) {
            count += 1;
            match shell::check_line(&root, &c.text) {
                Ok(names) => seen.extend(names),
                Err(e) => errors.push(format!("{rel}:{}: {e}", c.line)),
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} documented command(s) do not match the code:\n{}",
        errors.len(),
        errors.join("\n")
    );
    for must in [
        "zmesh daemon",
        "zmesh up",
        "zmesh status",
        "zmesh ping",
        "zmesh-console serve",
        "zmesh-console keys create",
        "zmesh-console devices list",
        "zmesh-console devices revoke",
        "packaging/install.sh",
        "scripts/demo.sh",
        "cargo test",
    ] {
        assert!(
            seen.iter()
                .any(|s| s == must || s.ends_with(&format!(" {must}"))),
            "no documented command covers {must:?}; seen {seen:?}"
        );
    }
    eprintln!(
        "checked {count} documented commands in {} files",
        files.len()
    );
}
