//! Renders the command-line reference of `zmesh` and `zmesh-console` as Markdown from
//! their clap definitions: clap's own long help for every (sub)command, in a fixed order,
//! with environment values hidden so the output depends on nothing but the code.

use clap::{Command, CommandFactory};

/// The header of docs/cli.md; says how to regenerate it.
const HEADER: &str = "\
# zmesh command-line reference

<!-- GENERATED from the clap definitions (agent/src/cli.rs, console/src/cli/, \
console/src/infra/config.rs). Do not edit: run
     ZMESH_BLESS=1 cargo test -p zmesh-packaging --test cli_doc
     to regenerate; that test fails when this file is stale. -->

Two binaries: `zmesh`, the agent (its `daemon` subcommand is what the systemd unit runs;
the other subcommands talk to the daemon over its control socket in the state directory),
and `zmesh-console`, the control plane (`serve`) and its admin CLI, which talks to a running
console over HTTPS. Options marked global may be given before or after the subcommand.
";

/// docs/cli.md, as it must be.
pub fn render() -> String {
    let mut out = String::from(HEADER);
    for cmd in [
        zmesh_agent::cli::Cli::command(),
        zmesh_console::cli::Cli::command(),
    ] {
        let mut cmd = hide_env_values(cmd);
        cmd.build();
        walk(&cmd, 2, &mut out);
    }
    out
}

/// `[env: X=value]` would show the caller's environment; keep only the variable name.
fn hide_env_values(cmd: Command) -> Command {
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd.mut_args(|a| a.hide_env_values(true));
    for s in subs {
        cmd = cmd.mut_subcommand(s, hide_env_values);
    }
    cmd
}

fn walk(cmd: &Command, level: usize, out: &mut String) {
    let name = cmd.get_bin_name().unwrap_or(cmd.get_name());
    out.push('\n');
    out.push_str(&"#".repeat(level.min(4)));
    out.push_str(&format!(" `{name}`\n\n```text\n"));
    let help = cmd.clone().render_long_help().to_string();
    for line in help.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str("```\n");
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        walk(sub, level + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_section_and_no_env_value_leaks() {
        std::env::set_var("ZMESH_STATE_DIR", "/leak-check");
        let doc = render();
        for h in [
            "## `zmesh`",
            "### `zmesh daemon`",
            "### `zmesh up`",
            "### `zmesh ping`",
            "## `zmesh-console`",
            "### `zmesh-console serve`",
            "#### `zmesh-console keys create`",
            "#### `zmesh-console devices revoke`",
        ] {
            assert!(doc.contains(h), "missing {h}");
        }
        assert!(doc.contains("Usage: zmesh up [OPTIONS]"), "{doc}");
        assert!(!doc.contains("/leak-check"));
        assert!(!doc.contains("\u{1b}["), "ANSI escapes in the reference");
    }
}
