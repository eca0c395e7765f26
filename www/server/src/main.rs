//! tokenwarden reference server.
//!
//! Run from the repository root:
//!
//! ```sh
//! cargo run -p tokenwarden-server                       # http://127.0.0.1:8080, SQLite in www/server/data/
//! cargo run -p tokenwarden-server -- --port 0 --test-mode --memory-store   # for browser tests
//! cargo run -p tokenwarden-server -- --tls          # https://127.0.0.1:8080, self-signed (Safari)
//! ```
//!
//! The first stdout line is `listening on http://ADDR` (`https://` with `--tls`); logs go to
//! stderr (`TW_LOG=debug`, `--log-format json`). `--help` lists every flag;
//! `www/server/README.md` documents them.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use tokenwarden_server::config::{Config, LogFormat};
use tokenwarden_server::{session, AppState};
use tracing_subscriber::EnvFilter;

/// How often ended families are purged and idle limiter keys forgotten.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// Ended families stay this long before they are purged (ms).
const PURGE_GRACE_MS: i64 = 60 * 60 * 1000;

fn init_logging(format: LogFormat) {
    // TW_LOG is an EnvFilter directive list; unset, empty or unparsable means `info`.
    let filter = std::env::var("TW_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGINT (Ctrl-C) or SIGTERM (what systemd, Docker, Kubernetes and `kill` send): both
/// drain open connections (`serve`). SIGTERM used to kill the process at once, cutting off
/// a refresh that had committed its rotation (a lost response).
async fn shutdown_signal() {
    let int = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = int => {}
        () = term => {}
    }
}

fn spawn_maintenance(state: AppState) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(MAINTENANCE_EVERY);
        loop {
            every.tick().await;
            if let Err(e) = session::maintain(&state, PURGE_GRACE_MS).await {
                tracing::error!(error = ?e, "maintenance failed");
            }
        }
    });
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    init_logging(config.log_format);
    let state = match tokenwarden_server::build_state(&config).await {
        Ok(state) => state,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match session::restore_revocations(&state).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(families = n, "recent revocations restored"),
        Err(e) => {
            eprintln!("error: cannot read revocations: {e:?}");
            return ExitCode::FAILURE;
        }
    }
    // Upstream mode: check the --oidc-* flags and discover the OpenID Provider before serving.
    if let Err(e) = tokenwarden_server::upstream::start(&config, &state).await {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let addr = config.listen_addr();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot bind {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // HTTPS (#16): the certificate is ready before the URL is announced.
    let tls = config.tls();
    let acceptor = if tls.enabled {
        match tokenwarden_server::tls::acceptor(&tls) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    println!("listening on {}://{local}", tls.scheme());
    let _ = std::io::stdout().flush();
    tracing::info!(
        test_mode = config.test_mode,
        memory_store = config.memory_store,
        postgres = config.database_url.is_some(),
        upstream = state.upstream.get().is_some(),
        tls = tls.enabled,
        www = %config.www_dir.display(),
        pkg = %config.pkg_dir.display(),
        "tokenwarden-server started"
    );
    spawn_maintenance(state.clone());
    if config.database_url.is_some() {
        tokenwarden_server::shared::spawn_sync(
            state.clone(),
            Duration::from_secs_f64(config.revocation_sync_s),
        );
    }
    let app = tokenwarden_server::app(state);
    let limits = config.limits();
    let served = match acceptor {
        Some(acceptor) => {
            tokenwarden_server::serve::serve_tls(listener, app, limits, acceptor, shutdown_signal())
                .await
        }
        None => tokenwarden_server::serve::serve(listener, app, limits, shutdown_signal()).await,
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
