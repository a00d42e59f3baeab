//! Checks that keep zmesh's documentation and packaging honest. `cli_doc` renders the
//! CLI reference (docs/cli.md) from the clap definitions of both binaries, so it is
//! generated, never hand-written; `shell` pulls the shell commands out of the Markdown
//! docs and checks each one against those same definitions, so none of them rots.

pub mod cli_doc;
pub mod shell;

use std::path::PathBuf;

/// The workspace root (this crate lives in `<root>/packaging`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("packaging/ has a parent")
        .to_path_buf()
}
