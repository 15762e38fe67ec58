//! `liaison-bench`: measurements for BENCHMARKS.md (not tests).
//!
//! - `bus`: two real nodes on loopback, durability on (every receipt after an fsync on each
//!   side), 1 KiB messages, a fixed number outstanding; reports messages per second and the
//!   latency from `send` to the verified receipt being stored at the sender (p50, p99).
//! - `nats`: NATS JetStream with the same sizes and window, publish→ack latency; the bench can
//!   start nats-server itself (`--nats-server PATH`, `--sync always|lazy`; see `nats.rs`).
//! - `quic`: raw quinn on loopback with the same sizes and window, no signing, no storage.
//! - `ceiling`: the primitives on the same machine: Ed25519 sign and `verify_strict`,
//!   SHA-256, envelope seal and open, a sled insert and a flush.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use liaison_node::{Config, Node, SendRequest, StartOptions};
use liaison_protocol::{Digest, Envelope, Header, MessageId, NodeId, Priority, PublicKey};
use tokio::sync::{Semaphore, oneshot};

mod nats;
mod quic;

fn arg(args: &[String], name: &str, default: usize) -> usize {
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
       liaison-bench nats [--messages N] [--outstanding N] [--size BYTES] [--sync always|lazy]
                          (--nats-server PATH | --server nats://HOST:PORT)
       liaison-bench quic [--messages N] [--outstanding N] [--size BYTES]
       liaison-bench ceiling [--size BYTES]
       liaison-bench audit [--entries N]";

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
        Some("bus") => rt.block_on(bus(
            arg(&args, "--messages", 20_000),
            arg(&args, "--outstanding", 256),
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
        Some("ceiling") => ceiling(arg(&args, "--size", 1024)),
        Some("audit") => rt.block_on(audit(arg(&args, "--entries", 1_000_000))),
        _ => usage(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A two-node federation ("a", "b") in `dir` with loopback sockets reserved.
fn two_nodes(
    dir: &std::path::Path,
) -> Result<(liaison_certs_dev::Generated, HashMap<String, UdpSocket>)> {
    let spec = liaison_certs_dev::FederationSpec {
        federation: "bench".into(),
        members: ["a", "b"]
            .iter()
            .map(|id| liaison_certs_dev::MemberSpec {
                id: (*id).into(),
                agency: "public_security".into(),
                name: (*id).into(),
                country: "CHN".into(),
                division: None,
                location: None,
                via: None,
            })
            .collect(),
        rules: liaison_certs_dev::demo_rules(),
        max_body_len: 1 << 20,
    };
    let mut sockets = HashMap::new();
    for id in ["a", "b"] {
        sockets.insert(id.to_owned(), UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?);
    }
    let addrs: HashMap<String, _> = sockets
        .iter()
        .map(|(k, s)| (k.clone(), s.local_addr().unwrap()))
        .collect();
    let g = liaison_certs_dev::generate(&spec, dir, &|id| addrs[id])?;
    Ok((g, sockets))
}

async fn bus(messages: usize, outstanding: usize, size: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (g, mut sockets) = two_nodes(dir.path())?;
    let mut nodes = HashMap::new();
    for (id, path) in &g.configs {
        let mut cfg = Config::load(path)?;
        cfg.delivery.window = outstanding.max(16);
        let node = Node::start(
            cfg,
            StartOptions {
                socket: sockets.remove(id.as_str()),
                api_socket: false,
            },
        )
        .await?;
        nodes.insert(id.to_string(), node);
    }
    let a = nodes["a"].clone();
    let waiting = Arc::new(Tracker::default());
    let mut events = a.settled();
    let w2 = waiting.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => w2.settled(ev.message_id, Instant::now()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("bench invalid: {n} settle events were missed");
                    std::process::exit(3);
                }
                Err(_) => break,
            }
        }
    });
    let body = vec![0x5a; size];
    // Warm up the connection.
    one(&a, &waiting, &body).await?;
    let permits = Arc::new(Semaphore::new(outstanding));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(messages)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..messages {
        let permit = permits.clone().acquire_owned().await?;
        let (a, waiting, body, lat) = (a.clone(), waiting.clone(), body.clone(), latencies.clone());
        tasks.spawn(async move {
            let d = one(&a, &waiting, &body).await;
            drop(permit);
            lat.lock().unwrap().push(d);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r?;
    }
    let elapsed = start.elapsed();
    let mut lat: Vec<Duration> = latencies
        .lock()
        .unwrap()
        .drain(..)
        .collect::<Result<Vec<_>>>()?;
    lat.sort();
    let b_inbox = nodes["b"].inbox(messages + 10, false).await?.len();
    if b_inbox != messages + 1 {
        bail!(
            "recipient holds {b_inbox} messages, expected {}",
            messages + 1
        );
    }
    println!(
        "bus: {messages} messages of {size} B, {outstanding} outstanding, durability on (fsync before every receipt)"
    );
    println!(
        "  throughput  {:.0} msg/s  ({:.2} s)",
        messages as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  send→receipt latency  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    for n in nodes.values() {
        n.shutdown().await;
    }
    Ok(())
}

/// Messages waiting for their receipt, and receipts that came in before their message's
/// waiter was registered (the id is known only once `send` returns).
#[derive(Default)]
struct Tracker {
    inner: Mutex<Waiting>,
}

/// Waiters by message id, and receipts recorded before their waiter came.
type Waiting = (
    HashMap<String, oneshot::Sender<Instant>>,
    HashMap<String, Instant>,
);

impl Tracker {
    fn settled(&self, id: String, at: Instant) {
        let mut g = self.inner.lock().unwrap();
        match g.0.remove(&id) {
            Some(tx) => {
                let _ = tx.send(at);
            }
            None => {
                g.1.insert(id, at);
            }
        }
    }

    /// Resolves with the time the receipt for `id` was recorded.
    fn wait(&self, id: &str) -> Result<Instant, oneshot::Receiver<Instant>> {
        let mut g = self.inner.lock().unwrap();
        if let Some(at) = g.1.remove(id) {
            return Ok(at);
        }
        let (tx, rx) = oneshot::channel();
        g.0.insert(id.to_owned(), tx);
        Err(rx)
    }
}

async fn one(a: &Node, waiting: &Tracker, body: &[u8]) -> Result<Duration> {
    let t0 = Instant::now();
    let r = a
        .send(SendRequest {
            to: NodeId::new("b")?,
            kind: "bus.bench".into(),
            body: body.to_vec(),
            priority: Priority::Routine,
            expires_in_ms: None,
            case_ref: None,
            in_reply_to: None,
        })
        .await?;
    let done = match waiting.wait(&r.message_id) {
        Ok(at) => at,
        Err(rx) => tokio::time::timeout(Duration::from_secs(120), rx)
            .await
            .context("no receipt within 120 s")??,
    };
    Ok(done - t0)
}

fn time<T>(label: &str, n: usize, mut f: impl FnMut() -> T) {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    let per = start.elapsed() / n as u32;
    println!(
        "  {label:<34} {:>10.2} µs   {:>10.0} /s",
        per.as_secs_f64() * 1e6,
        1.0 / per.as_secs_f64()
    );
}

fn ceiling(size: usize) -> Result<()> {
    use ed25519_dalek::{Signer as _, SigningKey};
    let key = SigningKey::from_bytes(&[1; 32]);
    let pk = PublicKey::from(&key);
    let msg = vec![0x5a; size];
    let sig = key.sign(&msg).to_bytes();
    println!("ceiling: primitives on this machine ({size} B where it applies)");
    time("Ed25519 sign", 5_000, || key.sign(&msg));
    time("Ed25519 verify_strict", 5_000, || {
        pk.verify(&msg, &sig).is_ok()
    });
    time("SHA-256", 50_000, || Digest::of(&msg));
    let header = Header {
        federation: "bench".into(),
        id: MessageId([1; 16]),
        from: NodeId::new("a")?,
        to: NodeId::new("b")?,
        sent_at: 1,
        kind: "bus.bench".into(),
        body_len: size as u64,
        body_hash: Digest::of(&msg).0,
        priority: Priority::Routine,
        in_reply_to: None,
        expires_at: None,
        case_ref: None,
    };
    let env = Envelope::seal(header.clone(), &key);
    let a = NodeId::new("a")?;
    time("envelope seal", 5_000, || {
        Envelope::seal(header.clone(), &key)
    });
    time("envelope open (strict + verify)", 5_000, || {
        Envelope::open(env.bytes(), |_| Some((a.clone(), pk))).is_ok()
    });
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 << 20)
        .open()?;
    let mut i = 0u64;
    time("sled insert (no flush)", 20_000, || {
        i += 1;
        db.insert(i.to_be_bytes(), msg.as_slice()).unwrap()
    });
    time("sled insert + flush (fsync)", 500, || {
        i += 1;
        db.insert(i.to_be_bytes(), msg.as_slice()).unwrap();
        db.flush().unwrap()
    });
    Ok(())
}

async fn audit(entries: usize) -> Result<()> {
    use liaison_node::identity::load_signing_key;
    use liaison_node::store::Store;
    use liaison_protocol::audit::EntryKind;

    let dir = tempfile::tempdir()?;
    let (g, mut sockets) = two_nodes(dir.path())?;
    let cfg_a = Config::load(g.config("a").context("a")?)?;
    let b_key = load_signing_key(&dir.path().join("nodes/b/signing.key.pem"))?;
    println!(
        "audit: a log of {entries} \"message received\" entries, each holding a signed envelope"
    );

    // Fill a's store as a year of traffic would: signed envelopes from b, 1,000 per batch.
    let t = Instant::now();
    {
        std::fs::create_dir_all(&cfg_a.data_dir)?;
        let store = Store::open(
            &cfg_a.data_dir.join("store"),
            liaison_node::store::StoreOptions {
                cache_bytes: 256 << 20,
                ..Default::default()
            },
            NodeId::new("a")?,
        )
        .await?;
        let body = [0x5a; 64];
        let mut n = 0usize;
        while n < entries {
            let batch: Vec<Vec<u8>> = (n..(n + 1000).min(entries))
                .map(|i| {
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    Envelope::seal(
                        Header {
                            federation: "bench".into(),
                            id: MessageId(id),
                            from: NodeId::new("b").unwrap(),
                            to: NodeId::new("a").unwrap(),
                            sent_at: 1_790_000_000_000 + i as u64,
                            kind: "bus.bench".into(),
                            body_len: body.len() as u64,
                            body_hash: Digest::of(&body).0,
                            priority: Priority::Routine,
                            in_reply_to: None,
                            expires_at: None,
                            case_ref: None,
                        },
                        &b_key,
                    )
                    .bytes()
                    .to_vec()
                })
                .collect();
            n += batch.len();
            store
                .write(1_790_000_000_000, move |t| {
                    for env in batch {
                        t.log(EntryKind::MessageReceived, env);
                    }
                    Ok(())
                })
                .await?;
        }
        store.close().await?;
    }
    println!(
        "  filled in {:.1} s (signing included)",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let mut nodes = HashMap::new();
    for id in ["a", "b"] {
        let node = Node::start(
            Config::load(g.config(id).context("config")?)?,
            StartOptions {
                socket: sockets.remove(id),
                api_socket: false,
            },
        )
        .await?;
        nodes.insert(id, node);
    }
    println!(
        "  node start with the log (frontier rebuilt from stored leaf hashes): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let a = nodes["a"].clone();

    let t = Instant::now();
    let report = a.audit_verify().await?;
    let secs = t.elapsed().as_secs_f64();
    if report.first_problem.is_some() {
        bail!("audit verify found a problem: {report:?}");
    }
    println!(
        "  audit verify: {} entries, {} signatures in {:.1} s = {:.0} entries/s",
        report.entries,
        report.signatures_checked,
        secs,
        report.entries as f64 / secs
    );

    let t = Instant::now();
    let first = a.witness_round().await?;
    println!(
        "  first witness round (checkpoint signed, no proof): {:.1} ms, cosigned: {}",
        t.elapsed().as_secs_f64() * 1e3,
        first.iter().all(|o| o.result.is_ok())
    );
    // The log grows by one message; the witness checks consistency from the cosigned size.
    a.send(SendRequest {
        to: NodeId::new("b")?,
        kind: "bus.bench".into(),
        body: vec![1; 64],
        priority: Priority::Routine,
        expires_in_ms: None,
        case_ref: None,
        in_reply_to: None,
    })
    .await?;
    let t = Instant::now();
    let second = a.witness_round().await?;
    println!(
        "  next witness round (checkpoint signed, consistency proof over {} entries, checked and cosigned): {:.1} ms, cosigned: {}",
        second.first().map_or(0, |o| o.size),
        t.elapsed().as_secs_f64() * 1e3,
        second.iter().all(|o| o.result.is_ok())
    );
    for n in nodes.values() {
        n.shutdown().await;
    }
    Ok(())
}
