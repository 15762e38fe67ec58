//! Shared pieces of the benchmarks: two-node federations, receipt tracking, percentiles,
//! and what the process costs (CPU from /proc/self/stat, resident memory from
//! /proc/<pid>/status, bytes on disk).

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use liaison_node::{Config, Node, SendRequest, StartOptions};
use liaison_protocol::{NodeId, Priority};
use tokio::sync::oneshot;

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// "p50 … p99 … max …" of a set of latencies, in ms.
pub(crate) fn latency_line(mut l: Vec<Duration>) -> String {
    l.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(percentile(&l, 0.5)),
        ms(percentile(&l, 0.99)),
        ms(l.last().copied().unwrap_or_default())
    )
}

/// A generated federation of `ids` (one country, public security) in `dir`, with loopback
/// sockets reserved.
pub(crate) fn federation(
    dir: &Path,
    ids: &[&str],
) -> Result<(liaison_certs_dev::Generated, HashMap<String, UdpSocket>)> {
    let spec = liaison_certs_dev::FederationSpec {
        federation: "bench".into(),
        members: ids
            .iter()
            .map(|id| liaison_certs_dev::MemberSpec {
                id: (*id).into(),
                agency: "public_security".into(),
                name: (*id).into(),
                country: "CHN".into(),
                division: None,
                location: Some((34_000_000, 108_000_000)),
                via: None,
            })
            .collect(),
        rules: liaison_certs_dev::demo_rules(),
        max_body_len: 1 << 20,
    };
    let mut sockets = HashMap::new();
    for id in ids {
        sockets.insert((*id).to_owned(), UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?);
    }
    let addrs: HashMap<String, _> = sockets
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                s.local_addr()
                    .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into()),
            )
        })
        .collect();
    let g = liaison_certs_dev::generate(&spec, dir, &|id| addrs[id])?;
    Ok((g, sockets))
}

/// Starts member `id` of `g` in this process, after `change` edits its config.
pub(crate) async fn start(
    g: &liaison_certs_dev::Generated,
    sockets: &mut HashMap<String, UdpSocket>,
    id: &str,
    change: impl FnOnce(&mut Config),
) -> Result<Node> {
    let mut cfg = Config::load(g.config(id).context("no such member")?)?;
    change(&mut cfg);
    let socket = match sockets.remove(id) {
        Some(s) => s,
        None => UdpSocket::bind(cfg.listen)?,
    };
    Ok(Node::start(
        cfg,
        StartOptions {
            socket: Some(socket),
            clock: None,
        },
    )
    .await?)
}

/// Messages waiting for their receipt, and receipts that came in before their message's
/// waiter was registered (the id is known only once `send` returns).
#[derive(Default)]
pub(crate) struct Tracker {
    inner: Mutex<Waiting>,
}

/// Waiters by message id, and receipts recorded before their waiter came.
type Waiting = (
    HashMap<String, oneshot::Sender<Instant>>,
    HashMap<String, Instant>,
);

impl Tracker {
    /// A tracker fed by `node`'s settle events.
    pub(crate) fn of(node: &Node) -> Arc<Self> {
        let t = Arc::new(Self::default());
        let mut events = node.settled();
        let t2 = t.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) => t2.settled(ev.message_id, Instant::now()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("bench invalid: {n} settle events were missed");
                        std::process::exit(3);
                    }
                    Err(_) => break,
                }
            }
        });
        t
    }

    fn settled(&self, id: String, at: Instant) {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match g.0.remove(&id) {
            Some(tx) => {
                let _ = tx.send(at);
            }
            None => {
                g.1.insert(id, at);
            }
        }
    }

    /// The time the receipt for `id` was recorded.
    pub(crate) async fn wait(&self, id: &str) -> Result<Instant> {
        let rx = {
            let mut g = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(at) = g.1.remove(id) {
                return Ok(at);
            }
            let (tx, rx) = oneshot::channel();
            g.0.insert(id.to_owned(), tx);
            rx
        };
        Ok(tokio::time::timeout(Duration::from_secs(300), rx)
            .await
            .context("no receipt within 300 s")??)
    }
}

/// A plain message from a node to `to`.
pub(crate) fn message(to: &str, body: &[u8], priority: Priority) -> Result<SendRequest> {
    Ok(SendRequest {
        to: NodeId::new(to)?,
        kind: "bus.bench".into(),
        body: body.to_vec(),
        priority,
        expires_in_ms: None,
        case_ref: None,
        in_reply_to: None,
    })
}

/// CPU time (user + system) this process used so far, from /proc/self/stat (clock ticks of
/// 1/100 s, Linux's USER_HZ).
pub(crate) fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ")".
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory now and at its peak (VmRSS, VmHWM) of process `pid` ("self" for this
/// one), KiB.
pub(crate) fn rss_kib(pid: &str) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Bytes in the files under `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Waits until `f` holds, polling every 20 ms, or fails after `limit`.
pub(crate) async fn until(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    while !f().await {
        if t.elapsed() > limit {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
