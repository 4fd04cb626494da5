//! The `ocelot` command line. It accepts PgCat's flags and environment variables (`CONFIG_FILE`, `-l/--log-level`,
//! `-F/--log-format`, `-n/--no-color`) so a PgCat service definition runs Ocelot unchanged, plus `--check`.
//! Exit codes: 0 after a clean shutdown, 1 when the proxy cannot start, 2 for an invalid config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};

use crate::app::Proxy;
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Structured,
    Debug,
}

/// PostgreSQL connection pooler and sharding router.
#[derive(Debug, Parser)]
#[command(name = "ocelot", version, about)]
struct Args {
    /// Path to the config file (PgCat's pgcat.toml format).
    #[arg(env = "CONFIG_FILE", default_value = "pgcat.toml")]
    config: PathBuf,
    /// Validate the config file and exit (0 when valid, 2 when not).
    #[arg(long)]
    check: bool,
    /// Log level: error, warn, info, debug, trace, or a tracing filter.
    #[arg(short = 'l', long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(
        short = 'F',
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Disable colours in text logs.
    #[arg(short = 'n', long, env = "NO_COLOR")]
    no_color: bool,
}

fn init_logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Structured => builder.json().init(),
        LogFormat::Debug => builder.pretty().with_ansi(!args.no_color).init(),
        LogFormat::Text => builder.with_ansi(!args.no_color).init(),
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);
    let loaded = match Config::load(&args.config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ocelot: invalid config {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{}: {w}", args.config.display());
    }
    if args.check {
        println!("{}: config is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(loaded.config.general.worker_threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ocelot: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let path = std::fs::canonicalize(&args.config).unwrap_or(args.config);
    runtime.block_on(serve(loaded.config, path))
}

async fn serve(config: Config, path: PathBuf) -> ExitCode {
    let (mut sigint, mut sigterm, mut sighup) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(i), Ok(t), Ok(h)) => (i, t, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("ocelot: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let proxy = match Proxy::start_from(config, Some(path)).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ocelot: {e}");
            return ExitCode::from(1);
        }
    };
    // "Waiting for clients" is PgCat's ready line, which scripts (PgCat's own specs among them) wait for.
    tracing::info!(
        "ocelot {} listening on {}; Waiting for clients",
        env!("CARGO_PKG_VERSION"),
        proxy.local_addr()
    );
    let shared = proxy.shared().clone();
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = shared.shutdown.requested() => {
                tracing::info!("admin SHUTDOWN");
                break;
            }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // Failures are logged by reload and leave the old config in force.
                let _ = crate::shared::reload::reload(&shared).await;
            }
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: exiting now");
                return ExitCode::SUCCESS;
            }
        }
    }
    let timeout = Duration::from_millis(proxy.shared().snapshot().config.general.shutdown_timeout);
    tracing::info!("draining clients for up to {} ms", timeout.as_millis());
    tokio::select! {
        left = proxy.shutdown() => {
            if left > 0 {
                tracing::warn!("shutdown_timeout passed with {left} client(s) still connected");
            }
            tracing::info!("shutdown complete");
        }
        _ = sigterm.recv() => tracing::info!("SIGTERM: exiting now"),
        _ = sigint.recv() => tracing::info!("second SIGINT: exiting now"),
    }
    ExitCode::SUCCESS
}
