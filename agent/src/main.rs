//! `zmesh`: the agent binary (daemon and CLI).

use clap::Parser;

fn main() {
    let cli = zmesh_agent::cli::Cli::parse();
    let is_daemon = matches!(cli.cmd, zmesh_agent::cli::Command::Daemon { .. });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if is_daemon { "info" } else { "warn" })
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        zmesh_agent::cli::LogFormat::Json => logs.json().init(),
        // A file or the journal gets plain text, a terminal gets colours.
        zmesh_agent::cli::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zmesh: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(zmesh_agent::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zmesh: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
