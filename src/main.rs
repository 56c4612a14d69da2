//! `lsnpool --config pooler.toml`: load the config, build the pools, serve clients.

use clap::Parser;
use lsnpool_proxy::{serve, Pooler, Topology};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(version, about = "PostgreSQL transaction pooler with LSN-aware read routing")]
struct Cli {
    /// Path of the TOML config; `LSNPOOL_SECTION__KEY` environment variables override its keys.
    #[arg(short, long, env = "LSNPOOL_CONFIG", default_value = "pooler.toml")]
    config: PathBuf,
    /// Check the config and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("LSNPOOL_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_target(false)
        .init();
    let config = match lsnpool_config::load(&cli.config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("lsnpool: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lsnpool: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Arc<lsnpool_config::Config>) -> ExitCode {
    let topology = match Topology::build(config.clone()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("lsnpool: {e}");
            return ExitCode::from(2);
        }
    };
    if !config.pooler.metrics_listen.is_empty() {
        if let Err(code) = start_metrics(&config.pooler.metrics_listen) {
            return code;
        }
    }
    let listener = match tokio::net::TcpListener::bind(&config.pooler.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lsnpool: cannot listen on {} (pooler.listen): {e}", config.pooler.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %config.pooler.listen, "lsnpool ready");
    let pooler = Pooler::new(topology);
    tokio::select! {
        r = serve(pooler, listener) => {
            if let Err(e) = r {
                tracing::error!(error = %e, "listener failed");
                return ExitCode::FAILURE;
            }
        }
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    ExitCode::SUCCESS
}

fn start_metrics(addr: &str) -> Result<(), ExitCode> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| ExitCode::from(2))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| {
            eprintln!("lsnpool: cannot serve metrics on {addr} (pooler.metrics_listen): {e}");
            ExitCode::FAILURE
        })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
