//! `nats`: NATS JetStream, the peer docs/peers.md names. A JetStream publisher keeps a window of
//! publishes whose acks are outstanding, 1 KiB messages into a file-storage stream; latency is
//! from the publish call to the ack. With `--nats-server PATH` the bench starts the server
//! itself (generated config in a temporary directory, `sync_interval: always` or the default
//! lazy sync), checks through the monitoring port that the server runs with the sync it was
//! asked for, and stops it afterwards. With `--server URL` it uses a server started by hand.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use async_nats::jetstream::{self, stream};
use tokio::sync::Semaphore;

use crate::percentile;

const STREAM: &str = "LIAISON_BENCH";
const SUBJECT: &str = "liaison.bench";

/// Where the server is: started by the bench, or given as a URL.
#[derive(Debug)]
pub(crate) enum Server {
    Spawn(PathBuf),
    Url(String),
}

/// A nats-server child process with its own store; killed when dropped.
#[derive(Debug)]
struct Spawned {
    child: Child,
    url: String,
    monitor: u16,
    dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn spawn(bin: &Path, sync_always: bool) -> Result<Spawned> {
    let dir = tempfile::tempdir()?;
    let (port, monitor) = (free_port()?, free_port()?);
    let store = dir.path().join("js");
    let sync = if sync_always {
        ", sync_interval: always"
    } else {
        ""
    };
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\njetstream {{ store_dir: {:?}{sync} }}\n",
            store.display().to_string()
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("nats.log"))?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut s = Spawned {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        monitor,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = s.child.try_wait()? {
            let log = std::fs::read_to_string(s.dir.path().join("nats.log")).unwrap_or_default();
            bail!("nats-server exited with {status}:\n{log}");
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
            && TcpStream::connect((Ipv4Addr::LOCALHOST, monitor)).is_ok()
        {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("nats-server did not listen on port {port} within 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server's own view of its JetStream sync setting, from `/varz` on the monitoring port.
fn server_sync_always(monitor: u16) -> Result<bool> {
    let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, monitor))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = String::new();
    c.read_to_string(&mut resp)?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("no body in /varz response")?;
    let varz: serde_json::Value = serde_json::from_str(body).context("/varz is not JSON")?;
    Ok(varz["jetstream"]["config"]["sync_always"]
        .as_bool()
        .unwrap_or(false))
}

pub(crate) async fn run(
    messages: usize,
    outstanding: usize,
    size: usize,
    sync_always: bool,
    server: Server,
) -> Result<()> {
    let spawned = match &server {
        Server::Spawn(bin) => Some(spawn(bin, sync_always)?),
        Server::Url(_) => None,
    };
    let url = match (&server, &spawned) {
        (_, Some(s)) => s.url.clone(),
        (Server::Url(u), None) => u.clone(),
        (Server::Spawn(_), None) => bail!("server not started"),
    };
    let sync_note = match &spawned {
        Some(s) => {
            let reported = server_sync_always(s.monitor)?;
            if reported != sync_always {
                bail!("asked for sync always = {sync_always}, the server reports {reported}");
            }
            format!("started by the bench, /varz reports sync_always: {reported}")
        }
        None => "started by hand, sync setting not checked by the bench".to_owned(),
    };

    let client = async_nats::connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let version = client.server_info().version;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(120))
        .build(client.clone());
    // A stream left by an earlier run against the same server would skew the count below.
    let _ = js.delete_stream(STREAM).await;
    let mut stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the stream: {e}"))?;

    let body = vec![0x5a_u8; size];
    // Warm up: one publish and its ack before the clock starts.
    js.publish(SUBJECT, body.clone().into())
        .await
        .map_err(|e| anyhow::anyhow!("publish: {e}"))?
        .await
        .map_err(|e| anyhow::anyhow!("ack: {e}"))?;

    let permits = Arc::new(Semaphore::new(outstanding));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..messages {
        let permit = permits.clone().acquire_owned().await?;
        let t0 = Instant::now();
        let ack = js
            .publish(SUBJECT, body.clone().into())
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        tasks.spawn(async move {
            let r = ack.await;
            let d = t0.elapsed();
            drop(permit);
            r.map(|_| d).map_err(|e| anyhow::anyhow!("ack: {e}"))
        });
    }
    let mut lat = Vec::with_capacity(messages);
    while let Some(r) = tasks.join_next().await {
        lat.push(r??);
    }
    let elapsed = start.elapsed();
    lat.sort();

    let stored = stream
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
        .state
        .messages;
    if stored != messages as u64 + 1 {
        bail!(
            "the stream holds {stored} messages, expected {}",
            messages + 1
        );
    }
    let _ = js.delete_stream(STREAM).await;
    drop(client);

    let sync = if sync_always {
        "sync_interval: always (fsync before every ack)"
    } else {
        "default lazy sync (ack before fsync)"
    };
    println!(
        "nats: {messages} messages of {size} B, {outstanding} outstanding, JetStream file storage, {sync}"
    );
    println!("  nats-server {version} ({sync_note})");
    println!(
        "  throughput  {:.0} msg/s  ({:.2} s)",
        messages as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  publish→ack latency  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    drop(spawned);
    Ok(())
}
