//! The node binary as the federation tests start it in a child process (for crash tests):
//! the same entry point as `liaison-node`.

#![forbid(unsafe_code)]

#[global_allocator]
static ALLOCATOR: liaison_node::Allocator = liaison_node::Allocator;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(flag), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: liaison-test-node --config <node.toml>");
        return std::process::ExitCode::from(2);
    };
    if flag != "--config" {
        eprintln!("usage: liaison-test-node --config <node.toml>");
        return std::process::ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let cfg = liaison_node::Config::load(std::path::Path::new(&path))?;
        liaison_node::run(cfg, false).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("liaison-test-node: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
