//! The bus between two real nodes on loopback (both in this process, sharing its cores),
//! durability on: `send` returns once the message is on the sender's disk; the recipient
//! answers once message, inbox entry and receipt are on its disk; the sender verifies the
//! receipt and records it. Latency runs from `send` (or, open loop, from the time the send
//! was scheduled for) to that record.
//!
//! - `bus`: closed loop, a fixed number of messages outstanding.
//! - `bus-open`: open loop, sends at a fixed rate scheduled in advance.
//! - `backlog`: messages queued while the recipient is down, then drained, with a flash
//!   message sent in the middle of the drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use liaison_node::Node;
use liaison_protocol::Priority;
use tokio::sync::Semaphore;

use crate::util::{
    Tracker, cpu_seconds, dir_bytes, federation, latency_line, message, rss_kib, start, until,
};

/// What a run of the two nodes cost: CPU per message, commits, memory, disk.
fn costs(a: &Node, b: &Node, messages: usize, cpu: f64, dir: &std::path::Path) -> Result<()> {
    let per = cpu / messages as f64;
    println!(
        "  CPU (user + system, both nodes)  {:.0} µs per message",
        per * 1e6
    );
    for (name, n) in [("sender", a), ("recipient", b)] {
        let s = n.store_stats();
        println!(
            "  {name} store: {} changes in {} group commits ({:.1} per commit, so {:.3} flushes per change)",
            s.changes,
            s.groups,
            s.changes as f64 / s.groups.max(1) as f64,
            s.groups as f64 / s.changes.max(1) as f64
        );
    }
    let (rss, hwm) = rss_kib("self")?;
    println!(
        "  memory of the process (two nodes): resident {} MiB now, {} MiB at most",
        rss / 1024,
        hwm / 1024
    );
    let bytes = |id: &str| dir_bytes(&dir.join("nodes").join(id).join("data"));
    for (name, id) in [("sender", "a"), ("recipient", "b")] {
        let b = bytes(id);
        println!(
            "  {name} disk: {:.1} MiB, {:.2} GiB per million messages",
            b as f64 / (1 << 20) as f64,
            b as f64 / messages as f64 * 1e6 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// Two nodes, a window big enough for `outstanding`.
async fn pair(outstanding: usize) -> Result<(tempfile::TempDir, Node, Node)> {
    let dir = tempfile::tempdir()?;
    let (g, mut sockets) = federation(dir.path(), &["a", "b"])?;
    let cache = std::env::var("LIAISON_BENCH_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let window = |c: &mut liaison_node::Config| {
        c.delivery.window = outstanding.max(16);
        if let Some(mib) = cache {
            c.store.cache_bytes = mib << 20;
        }
    };
    let a = start(&g, &mut sockets, "a", window).await?;
    let b = start(&g, &mut sockets, "b", window).await?;
    Ok((dir, a, b))
}

pub(crate) async fn closed(messages: usize, outstanding: usize, size: usize) -> Result<()> {
    println!(
        "bus: {messages} messages of {size} B, {outstanding} outstanding, durability on (fsync before every receipt)"
    );
    let (dir, a, b) = pair(outstanding).await?;
    let tracker = Tracker::of(&a);
    let body = vec![0x5a; size];
    // Warm up the connection.
    let r = a.send(message("b", &body, Priority::Routine)?).await?;
    tracker.wait(&r.message_id).await?;
    let permits = Arc::new(Semaphore::new(outstanding));
    let mut tasks = tokio::task::JoinSet::new();
    let (idle, _) = rss_kib("self")?;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut lat = Vec::with_capacity(messages);
    for _ in 0..messages {
        let permit = permits.clone().acquire_owned().await?;
        let (a, tracker, body) = (a.clone(), tracker.clone(), body.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let r = a.send(message("b", &body, Priority::Routine)?).await?;
            let done = tracker.wait(&r.message_id).await?;
            drop(permit);
            Ok::<_, anyhow::Error>(done - t)
        });
        // Finished tasks are taken as we go: a finished task keeps its memory until joined.
        while let Some(r) = tasks.try_join_next() {
            lat.push(r??);
        }
    }
    while let Some(r) = tasks.join_next().await {
        lat.push(r??);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "  throughput  {:.0} msg/s  ({secs:.2} s)",
        messages as f64 / secs
    );
    println!("  send→receipt latency  {}", latency_line(lat));
    println!(
        "  memory of the process (two nodes) before the run: resident {} MiB",
        idle / 1024
    );
    costs(&a, &b, messages, cpu, dir.path())?;
    let inbox = b.inbox(messages + 10, false).await?.len();
    if inbox != messages + 1 {
        bail!(
            "recipient holds {inbox} messages, expected {}",
            messages + 1
        );
    }
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

pub(crate) async fn open(rate: f64, seconds: f64, size: usize) -> Result<()> {
    let n = (rate * seconds) as usize;
    println!(
        "bus-open: {n} messages of {size} B sent at {rate:.0} msg/s on a schedule fixed in advance (open loop), durability on"
    );
    let (_dir, a, b) = pair(4096).await?;
    let tracker = Tracker::of(&a);
    let body = vec![0x5a; size];
    let r = a.send(message("b", &body, Priority::Routine)?).await?;
    tracker.wait(&r.message_id).await?;
    let t0 = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let at = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        let (a, tracker, body) = (a.clone(), tracker.clone(), body.clone());
        tasks.spawn(async move {
            let r = a.send(message("b", &body, Priority::Routine)?).await?;
            let done = tracker.wait(&r.message_id).await?;
            Ok::<_, anyhow::Error>(done - at.into_std())
        });
        while let Some(r) = tasks.try_join_next() {
            lat.push(r??);
        }
    }
    while let Some(r) = tasks.join_next().await {
        lat.push(r??);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "  {n} receipted in {secs:.2} s ({:.0} msg/s)",
        n as f64 / secs
    );
    println!("  scheduled send→receipt latency  {}", latency_line(lat));
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// The sender's window in the backlog drain: the one-way runs it is compared with keep 256
/// messages outstanding (and set the window to match).
const BACKLOG_WINDOW: usize = 256;

pub(crate) async fn backlog(messages: usize, size: usize) -> Result<()> {
    println!(
        "backlog: {messages} messages of {size} B queued while the recipient is down, then drained with a window of {BACKLOG_WINDOW} (as workload 1's 256 outstanding); a flash message is sent when a quarter has drained"
    );
    let dir = tempfile::tempdir()?;
    let (g, mut sockets) = federation(dir.path(), &["a", "b"])?;
    let a = start(&g, &mut sockets, "a", |c| {
        c.delivery.window = BACKLOG_WINDOW
    })
    .await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let flash_id = Arc::new(std::sync::Mutex::new(String::new()));
    let flash_done = Arc::new(tokio::sync::Notify::new());
    {
        let mut events = a.settled();
        let (delivered, flash_id, flash_done) =
            (delivered.clone(), flash_id.clone(), flash_done.clone());
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        delivered.fetch_add(1, Ordering::SeqCst);
                        if *flash_id.lock().unwrap_or_else(|p| p.into_inner()) == ev.message_id {
                            flash_done.notify_one();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Counted from the store at the end instead; only the count is off.
                        delivered.fetch_add(n, Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
        });
    }
    let body = vec![0x5a; size];
    let t = Instant::now();
    let permits = Arc::new(Semaphore::new(512));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..messages {
        let permit = permits.clone().acquire_owned().await?;
        let (a, body) = (a.clone(), body.clone());
        tasks.spawn(async move {
            a.send(message("b", &body, Priority::Routine)?).await?;
            drop(permit);
            Ok::<_, anyhow::Error>(())
        });
        while let Some(r) = tasks.try_join_next() {
            r??;
        }
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    println!(
        "  queued in {:.1} s ({:.0} msg/s, sender alone)",
        t.elapsed().as_secs_f64(),
        messages as f64 / t.elapsed().as_secs_f64()
    );
    let (_, queued_hwm) = rss_kib("self")?;
    let t0 = Instant::now();
    let b = start(&g, &mut sockets, "b", |_| {}).await?;
    let quarter = (messages / 4) as u64;
    until(Duration::from_secs(3600), async || {
        delivered.load(Ordering::SeqCst) >= quarter
    })
    .await?;
    let at_quarter = t0.elapsed();
    let tf = Instant::now();
    let r = a.send(message("b", b"flash", Priority::Flash)?).await?;
    *flash_id.lock().unwrap_or_else(|p| p.into_inner()) = r.message_id.clone();
    let flash = tokio::time::timeout(Duration::from_secs(60), flash_done.notified()).await;
    let flash_latency = tf.elapsed();
    until(Duration::from_secs(3600), async || {
        delivered.load(Ordering::SeqCst) > messages as u64
    })
    .await?;
    let drain = t0.elapsed().as_secs_f64();
    println!(
        "  drained in {drain:.1} s: {:.0} msg/s (a quarter after {:.1} s)",
        messages as f64 / drain,
        at_quarter.as_secs_f64()
    );
    match flash {
        Ok(()) => println!(
            "  flash message sent during the drain: receipted after {:.1} ms",
            flash_latency.as_secs_f64() * 1e3
        ),
        Err(_) => println!("  flash message sent during the drain: NOT receipted within 60 s"),
    }
    let (_, hwm) = rss_kib("self")?;
    println!(
        "  memory of the process: {} MiB at most while queueing, {} MiB at most overall",
        queued_hwm / 1024,
        hwm / 1024
    );
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
