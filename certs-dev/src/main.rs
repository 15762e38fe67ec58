//! `liaison-certs-dev`: regenerates the development PKI and demo federation.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Result;

fn usage() -> ! {
    eprintln!(
        "usage: liaison-certs-dev [--out DIR] [--base-port PORT]\n\
         Generates the development CA, keys, node configs and signed roster of the demo\n\
         federation into DIR (default certs-dev/demo). Nodes listen on 127.0.0.1 from PORT\n\
         (default 7101) upwards. Development material only: nodes accept it in dev mode."
    );
    std::process::exit(2)
}

fn main() -> Result<()> {
    let mut out = PathBuf::from("certs-dev/demo");
    let mut base: u16 = 7101;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--base-port" => {
                base = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    liaison_certs_dev::check_out_dir(&out)?;
    let spec = liaison_certs_dev::demo_spec();
    let ids: Vec<String> = spec.members.iter().map(|m| m.id.clone()).collect();
    let g = liaison_certs_dev::generate(&spec, &out, &|id| {
        let i = ids.iter().position(|x| x == id).unwrap_or(0);
        SocketAddr::from((Ipv4Addr::LOCALHOST, base + i as u16))
    })?;
    println!(
        "generated development federation {} in {}",
        spec.federation,
        g.dir.display()
    );
    for (id, cfg) in &g.configs {
        println!("  {id:<16} {}", cfg.display());
    }
    println!("authority key {}", g.authority_key_hex);
    println!("start a node: liaison node start --config <node.toml>");
    Ok(())
}
