//! `liaison-node`: runs one agency node.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Runs a liaison agency node.
#[derive(Debug, Parser)]
#[command(name = "liaison-node", version)]
struct Args {
    /// The node's configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// Accept development certificates and rosters (certs-dev). Never in production.
    #[arg(long)]
    dev: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Check the configuration, keys, TLS material and roster as the node does at start,
    /// without starting it; exits non-zero with the reason at the first problem.
    CheckConfig,
}

#[global_allocator]
static ALLOCATOR: liaison_node::Allocator = liaison_node::Allocator;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::CheckConfig) = args.command {
        let checked = liaison_node::Config::load(&args.config).and_then(|mut cfg| {
            cfg.dev_mode |= args.dev;
            liaison_node::check_config(&cfg)
        });
        return match checked {
            Ok(notes) => {
                for n in notes {
                    println!("{n}");
                }
                println!("{}: the configuration is ready", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("liaison-node: {}: {e}", args.config.display());
                ExitCode::FAILURE
            }
        };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("liaison-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let cfg = liaison_node::Config::load(&args.config)?;
        liaison_node::run(cfg, args.dev).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("liaison-node: {e}");
            ExitCode::FAILURE
        }
    }
}
