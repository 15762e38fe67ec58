//! `liaison-bench`: measurements for BENCHMARKS.md (not tests; run by hand on a quiet
//! machine, never in CI).
//!
//! - `bus`: two real nodes on loopback, durability on, a fixed number of messages
//!   outstanding: throughput, send→receipt latency, CPU per message, commits, memory, disk.
//! - `bus-open`: the same at a fixed rate scheduled in advance (open loop).
//! - `officers`: officer-signed assistance checks and their answers, one in flight, then at
//!   fixed rates.
//! - `backlog`: a backlog queued while the recipient was down, drained, with a flash message
//!   sent during the drain.
//! - `audit`: `audit verify` and witness rounds on a log of a million entries.
//! - `ceiling`: the primitives on the same machine.
//! - `idle`: one member's many idle connections to a node: what the node holds, and memory.
//! - `nats`: NATS JetStream with the same sizes and window (see `nats.rs`).
//! - `quic`: raw quinn on loopback with the same sizes and window.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod bus;
mod ceiling;
mod idle;
mod nats;
mod officers;
mod quic;
mod util;

use anyhow::Result;

pub(crate) use util::percentile;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_f(args: &[String], name: &str, default: f64) -> f64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_str<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

const USAGE: &str = "usage: liaison-bench bus [--messages N] [--outstanding N] [--size BYTES]
       liaison-bench bus-open --rate MSG_PER_S [--seconds S] [--size BYTES]
       liaison-bench officers [--requests N] [--rates R,R,…] [--seconds S]
       liaison-bench backlog [--messages N] [--size BYTES]
       liaison-bench audit [--entries N]
       liaison-bench ceiling [--size BYTES]
       liaison-bench idle [--connections N]
       liaison-bench nats [--messages N] [--outstanding N] [--size BYTES] [--sync always|lazy]
                          (--nats-server PATH | --server nats://HOST:PORT)
       liaison-bench quic [--messages N] [--outstanding N] [--size BYTES]";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2)
}

#[global_allocator]
static ALLOCATOR: liaison_node::Allocator = liaison_node::Allocator;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("bus") => rt.block_on(bus::closed(
            arg(&args, "--messages", 20_000),
            arg(&args, "--outstanding", 256),
            arg(&args, "--size", 1024),
        )),
        Some("bus-open") => rt.block_on(bus::open(
            arg_f(&args, "--rate", 0.0).max(1.0),
            arg_f(&args, "--seconds", 5.0),
            arg(&args, "--size", 1024),
        )),
        Some("officers") => {
            let rates: Vec<f64> = arg_str(&args, "--rates")
                .unwrap_or("100,500,1000,2000")
                .split(',')
                .filter_map(|r| r.parse().ok())
                .collect();
            rt.block_on(officers::run(
                arg(&args, "--requests", 500),
                &rates,
                arg_f(&args, "--seconds", 3.0),
            ))
        }
        Some("backlog") => rt.block_on(bus::backlog(
            arg(&args, "--messages", 500_000),
            arg(&args, "--size", 1024),
        )),
        Some("nats") => {
            let sync_always = match arg_str(&args, "--sync").unwrap_or("always") {
                "always" => true,
                "lazy" => false,
                _ => usage(),
            };
            let server = match (arg_str(&args, "--nats-server"), arg_str(&args, "--server")) {
                (Some(bin), None) => nats::Server::Spawn(bin.into()),
                (None, Some(url)) => nats::Server::Url(url.to_owned()),
                _ => usage(),
            };
            rt.block_on(nats::run(
                arg(&args, "--messages", 20_000),
                arg(&args, "--outstanding", 256),
                arg(&args, "--size", 1024),
                sync_always,
                server,
            ))
        }
        Some("quic") => rt.block_on(quic::run(
            arg(&args, "--messages", 20_000),
            arg(&args, "--outstanding", 256),
            arg(&args, "--size", 1024),
        )),
        Some("ceiling") => ceiling::run(arg(&args, "--size", 1024)),
        Some("idle") => rt.block_on(idle::run(arg(&args, "--connections", 5000))),
        Some("audit") => rt.block_on(audit::run(arg(&args, "--entries", 1_000_000))),
        _ => usage(),
    }
}
