//! `zmesh-console`: `serve` runs the control plane; `keys` and `devices` are the admin
//! CLI talking to a running console over HTTPS.

use std::process::ExitCode;

use clap::Parser;
use zmesh_console::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZMESH_LOG").unwrap_or_else(|_| {
        let default = if matches!(cli.command, Command::Serve(_) | Command::Relay(_)) {
            "info"
        } else {
            "warn"
        };
        tracing_subscriber::EnvFilter::new(default)
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        zmesh_console::cli::LogFormat::Json => logs.json().init(),
        // A file or the journal gets plain text, a terminal gets colours.
        zmesh_console::cli::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(zmesh_console::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
