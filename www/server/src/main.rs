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
//! stderr (`TW_LOG=debug`).
//! `--help` lists every flag; `www/server/README.md` documents the test-mode API.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use tokenwarden_server::config::{Command, Config, USAGE};
use tracing::level_filters::LevelFilter;

fn init_logging() {
    let level = match std::env::var("TW_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "warn" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        "off" => LevelFilter::OFF,
        _ => LevelFilter::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let config = match Config::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let state = match tokenwarden_server::build_state(&config) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot bind {}: {e}", config.bind);
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // HTTPS hook (#16): the certificate is ready before the URL is announced.
    let tls = if config.tls.enabled {
        match tokenwarden_server::tls::rustls_config(&config.tls).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    println!("listening on {}://{addr}", config.tls.scheme());
    let _ = std::io::stdout().flush();
    tracing::info!(
        test_mode = config.test_mode,
        memory_store = config.memory_store,
        www = %config.www_dir.display(),
        pkg = %config.pkg_dir.display(),
        "tokenwarden-server started"
    );
    let app = tokenwarden_server::app(state);
    let served = match tls {
        Some(tls) => tokenwarden_server::tls::serve(listener, app, tls, shutdown_signal()).await,
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
