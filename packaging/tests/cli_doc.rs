//! docs/cli.md must equal what the clap definitions render; run with ZMESH_BLESS=1 to
//! rewrite it after changing a command line.

use zmesh_packaging::{cli_doc, repo_root};

#[test]
fn docs_cli_md_is_generated_from_the_clap_definitions() {
    let path = repo_root().join("docs/cli.md");
    let want = cli_doc::render();
    if std::env::var_os("ZMESH_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write docs/cli.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let first = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or(have.lines().count().min(want.lines().count()) + 1);
        panic!(
            "docs/cli.md is stale (first difference at line {first}); regenerate it with\n  \
             ZMESH_BLESS=1 cargo test -p zmesh-packaging --test cli_doc"
        );
    }
}
