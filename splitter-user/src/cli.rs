//! The command line (`splitter --help`): parses the arguments, runs the subcommand, maps its
//! result to an exit code.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, LogFormat};
use crate::{control, demo, mock_backend, reload, top};
use clap::{Parser, Subcommand};

/// A scatter-gather HTTP/1.1 server: every request goes to every backend, the best response
/// (by one JSON number) comes back, or 204 when none arrives before the route's deadline.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve, with the configuration in FILE.
    Run {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate FILE: exit 0, or exit 1 with an error naming the bad key.
    Check {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check FILE, send SIGHUP to PID (a splitter running with FILE) and wait until it reports
    /// the reload applied (exit 0) or refused (exit 1): systemd's `ExecReload`.
    Reload(reload::ReloadArgs),
    /// Two in-process mock backends, the splitter in front, a short load, a summary.
    Demo(demo::DemoArgs),
    /// The mock backend used by the demo, the tests and the benchmarks.
    MockBackend(mock_backend::MockArgs),
    /// Per-worker counters, live, from the pinned BPF metrics map (eBPF steering, root).
    Top(top::TopArgs),
}

/// Runs `splitter` with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
        Command::Run { config: path } => match Config::load(&path) {
            Ok(config) => {
                init_logging(&config.log_level, config.log_format == LogFormat::Json);
                control::run(&path, config)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
        Command::Demo(args) => {
            init_logging("warn", false);
            demo::run(args)
        }
        Command::Top(args) => top::run(args),
        Command::Reload(args) => reload::run(args),
        Command::MockBackend(args) => {
            init_logging("warn", false);
            mock_backend::run(args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr; `RUST_LOG`, when set, overrides the configured level.
fn init_logging(level: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
