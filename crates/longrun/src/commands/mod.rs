//! One module per group of subcommands.

pub mod keys;
pub mod ops;
pub mod serve;
pub mod worker;

use clap::Args;

/// Where the API is, for every client command.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the longrun server.
    #[arg(long, env = "LONGRUN_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API key (`lr_...`), sent as `Authorization: Bearer`.
    #[arg(long, env = "LONGRUN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON (for scripts) instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ServerArgs {
    /// A client for the server.
    pub fn client(&self) -> anyhow::Result<longrun_client::Client> {
        Ok(match &self.api_key {
            Some(key) => longrun_client::Client::with_api_key(&self.server, key)?,
            None => longrun_client::Client::new(&self.server)?,
        })
    }
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Parses `NAME=COMMAND` (the `--handler` argument).
pub fn parse_handler(spec: &str) -> Result<(String, String), String> {
    match spec.split_once('=') {
        Some((name, command)) if !name.trim().is_empty() && !command.trim().is_empty() => {
            Ok((name.trim().to_owned(), command.to_owned()))
        }
        _ => Err(format!(
            "`{spec}`: expected NAME=COMMAND, e.g. reports.render=./render.sh"
        )),
    }
}

/// Logs to stderr; `RUST_LOG` overrides `default`.
pub fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
