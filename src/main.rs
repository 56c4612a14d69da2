//! `lsnpool --config pooler.toml`: load the config, build the pools, serve clients.

use clap::Parser;
use lsnpool_proxy::{serve, serve_unix, spawn_janitor, Pooler, Topology};
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
    let threads = runtime_threads(config.pooler.worker_threads);
    // One thread runs a single event loop, as PgBouncer does: no worker wakes another, which
    // on a machine the pooler shares with PostgreSQL costs more than a second thread gives.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lsnpool: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config, cli.config))
}

/// `pooler.worker_threads`: 0 picks half the CPUs, at least one. Relaying is mostly system
/// calls, and the pooler shares its machine with the database or the application: measured
/// on 2 CPUs, one event loop used about 20 % less CPU per transaction than two workers.
fn runtime_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (cpus / 2).max(1)
}

async fn run(config: Arc<lsnpool_config::Config>, config_path: PathBuf) -> ExitCode {
// The recorder must exist before the monitors register their gauges.
    if !config.pooler.metrics_listen.is_empty() {
        if let Err(code) = start_metrics(&config.pooler.metrics_listen) {
            return code;
        }
    }
    let topology = match Topology::build(config.clone()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("lsnpool: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&config.pooler.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lsnpool: cannot listen on {} (pooler.listen): {e}", config.pooler.listen);
            return ExitCode::FAILURE;
        }
    };
    let unix = match bind_unix(&config.pooler) {
        Ok(u) => u,
        Err(msg) => {
            eprintln!("lsnpool: {msg}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %config.pooler.listen, unix_socket = unix.as_ref().map(|(u, _)| u.path.display().to_string()), "lsnpool ready");
    let pooler = Pooler::new(topology, config_path);
    spawn_janitor(&pooler);
    let server = tokio::spawn(serve(pooler.clone(), listener));
    // Kept until run() returns: dropping it removes the socket file.
    let _unix_socket = unix.map(|(socket, listener)| {
        tokio::spawn(serve_unix(pooler.clone(), listener, socket.port));
        socket
    });
    let immediate = watch_signals(pooler.clone());
    // Serve until shutdown begins (signal or the admin console's SHUTDOWN)...
    let _ = server.await;
    // ...then let every client finish its transaction and leave, unless told to hurry.
    tokio::select! {
        _ = async {
            while pooler.client_count() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        } => tracing::info!("all clients gone; exiting"),
        _ = immediate.notified() => tracing::info!("immediate shutdown"),
    }
    ExitCode::SUCCESS
}

/// lsnpool's Unix-domain socket file, removed when lsnpool exits.
struct UnixSocket {
    path: PathBuf,
    port: u16,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `<unix_socket_dir>/.s.PGSQL.<listen port>`, as PgBouncer and PostgreSQL name it. A
/// socket file nobody answers on is a previous run's and is replaced; one that answers is
/// another process's, and lsnpool does not start.
fn bind_unix(p: &lsnpool_config::PoolerConfig) -> Result<Option<(UnixSocket, tokio::net::UnixListener)>, String> {
    if p.unix_socket_dir.is_empty() {
        return Ok(None);
    }
    let port = p.listen.parse::<std::net::SocketAddr>().map(|a| a.port()).map_err(|e| format!("pooler.listen: {e}"))?;
    let path = PathBuf::from(format!("{}/.s.PGSQL.{port}", p.unix_socket_dir));
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!("another process listens on {} (pooler.unix_socket_dir)", path.display()));
        }
        std::fs::remove_file(&path).map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(|e| format!("cannot listen on {} (pooler.unix_socket_dir): {e}", path.display()))?;
    // Anyone on the host may connect, as PgBouncer's default unix_socket_mode (0777): logins
    // are still authenticated.
    let socket = UnixSocket { path, port }; // from here on, removed again on any return
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&socket.path, std::fs::Permissions::from_mode(0o777)).map_err(|e| format!("cannot set the permissions of {}: {e}", socket.path.display()))?;
    Ok(Some((socket, listener)))
}

fn start_metrics(addr: &str) -> Result<(), ExitCode> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| ExitCode::from(2))?;
    // Buckets make the wait and transaction timings histograms, which add up across instances.
    const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map_err(|e| {
            eprintln!("lsnpool: metrics buckets: {e}");
            ExitCode::FAILURE
        })?
        .install()
        .map_err(|e| {
            eprintln!("lsnpool: cannot serve metrics on {addr} (pooler.metrics_listen): {e}");
            ExitCode::FAILURE
        })
}

/// SIGHUP reloads; SIGTERM and SIGINT start a graceful shutdown; a second SIGINT (or
/// SIGTERM) asks for an immediate one, signalled on the returned Notify.
fn watch_signals(pooler: Arc<Pooler>) -> Arc<tokio::sync::Notify> {
    use tokio::signal::unix::{signal, SignalKind};
    let immediate = Arc::new(tokio::sync::Notify::new());
    let notify = immediate.clone();
    tokio::spawn(async move {
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    if let Err(e) = pooler.reload() {
                        tracing::error!(error = %e, "SIGHUP reload failed; the old configuration stays in force");
                    }
                }
                _ = term.recv() => {
                    if pooler.is_shutting_down() { notify.notify_one(); }
                    pooler.begin_shutdown();
                }
                _ = int.recv() => {
                    if pooler.is_shutting_down() { notify.notify_one(); }
                    pooler.begin_shutdown();
                }
            }
        }
    });
    immediate
}
