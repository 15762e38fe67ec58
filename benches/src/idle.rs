//! `idle`: one member opens many connections to a node and leaves them idle (issue 9's
//! "5,000 idle connections from one member"). The node keeps at most
//! `[limits] connections_per_member` of them and closes the oldest (code 4); what is measured
//! is the resident memory of the process (the node and the client endpoint, whose closed
//! connections are dropped as the node closes them) before, during and after, and how many
//! connections the node still holds.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Instant;

use anyhow::{Context as _, Result};
use liaison_node::Config;
use liaison_node::roster::RosterCell;
use liaison_node::transport::TlsMaterial;

use crate::util::{federation, rss_kib, start};

pub(crate) async fn run(connections: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (g, mut sockets) = federation(dir.path(), &["a", "b"])?;
    let b = start(&g, &mut sockets, "b", |_| {}).await?;
    let cap = Config::load(g.config("b").context("no b")?)?
        .limits
        .connections_per_member;
    let addr = b.local_addr()?;
    // A client with member a's credentials and the node's own TLS configuration.
    let a = Config::load(g.config("a").context("no a")?)?;
    let tls = TlsMaterial::load(&a.ca_cert, &a.tls_cert, &a.tls_key)?;
    let endpoint = liaison_node::transport::endpoint(
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?,
        &tls,
        RosterCell::new(b.roster().as_ref().clone()),
        &a.delivery,
    )?;
    let mib = |kib: u64| kib / 1024;
    let (before, _) = rss_kib("self")?;
    println!(
        "idle: member a opens {connections} connections to node b and leaves them idle \
         (b keeps at most {cap} per member)"
    );
    println!("  resident before: {} MiB", mib(before));
    let t = Instant::now();
    let mut open = Vec::with_capacity(connections);
    let mut peak = before;
    for i in 0..connections {
        open.push(endpoint.connect(addr, "b")?.await?);
        // Drop what the node closed, as a client would.
        if i % 100 == 99 {
            open.retain(|c: &quinn::Connection| c.close_reason().is_none());
            peak = peak.max(rss_kib("self")?.0);
        }
    }
    let elapsed = t.elapsed();
    open.retain(|c| c.close_reason().is_none());
    let (now, hwm) = rss_kib("self")?;
    let held = b.inbound_connections().get("a").copied().unwrap_or(0);
    println!(
        "  {connections} handshakes in {:.1} s ({:.0}/s)",
        elapsed.as_secs_f64(),
        connections as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  node b holds {held} connections of a; the client still has {} open",
        open.len()
    );
    println!(
        "  resident after: {} MiB (sampled peak {} MiB, high-water mark {} MiB): {} MiB more than before",
        mib(now),
        mib(peak),
        mib(hwm),
        mib(now.saturating_sub(before))
    );
    drop(open);
    endpoint.close(0u32.into(), b"done");
    b.shutdown().await;
    Ok(())
}
