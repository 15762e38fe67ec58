//! `quic`: raw quinn on loopback, the floor under the bus's transport. Same message sizes and
//! window as `bus`, one bidirectional stream per message as the bus uses, the server answers
//! each with an 8-byte ack (the body length it read). No signing, no storage, no fsync. TLS 1.3
//! with ring like the nodes, but server authentication only (a self-signed rcgen certificate):
//! the handshake happens once per connection, so this does not change the per-message cost.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls_pki_types::PrivatePkcs8KeyDer;
use tokio::sync::Semaphore;

use crate::percentile;

const ALPN: &[u8] = b"liaison-bench";

fn transport(outstanding: usize) -> Arc<quinn::TransportConfig> {
    // As the nodes do: twice the window in concurrent bidirectional streams.
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(
        u32::try_from(outstanding.max(16) * 2).unwrap_or(1024),
    ));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Arc::new(t)
}

fn endpoints(outstanding: usize) -> Result<(quinn::Endpoint, quinn::Endpoint)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = ck.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server)?));
    server.transport_config(transport(outstanding));
    let server = quinn::Endpoint::server(server, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client)?));
    client.transport_config(transport(outstanding));
    let mut client_ep = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    client_ep.set_default_client_config(client);
    Ok((server, client_ep))
}

/// Server side: every stream is read to its end and answered with the length read.
async fn serve(ep: quinn::Endpoint, size: usize, received: Arc<AtomicUsize>) {
    while let Some(incoming) = ep.accept().await {
        let received = received.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let received = received.clone();
                tokio::spawn(async move {
                    let Ok(body) = recv.read_to_end(size + 1024).await else {
                        return;
                    };
                    received.fetch_add(1, Ordering::Relaxed);
                    let ack = (body.len() as u64).to_be_bytes();
                    if send.write_all(&ack).await.is_ok() {
                        let _ = send.finish();
                    }
                });
            }
        });
    }
}

async fn one(conn: &quinn::Connection, body: &[u8]) -> Result<Duration> {
    let t0 = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(body).await?;
    send.finish()?;
    let ack = recv.read_to_end(64).await?;
    if ack != (body.len() as u64).to_be_bytes() {
        bail!("bad ack {ack:?}");
    }
    Ok(t0.elapsed())
}

pub(crate) async fn run(messages: usize, outstanding: usize, size: usize) -> Result<()> {
    let (server, client) = endpoints(outstanding)?;
    let addr = server.local_addr()?;
    let received = Arc::new(AtomicUsize::new(0));
    tokio::spawn(serve(server.clone(), size, received.clone()));
    let conn = client
        .connect(addr, "localhost")?
        .await
        .context("QUIC handshake")?;

    let body: Arc<[u8]> = vec![0x5a_u8; size].into();
    // Warm up the connection.
    one(&conn, &body).await?;
    let permits = Arc::new(Semaphore::new(outstanding));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..messages {
        let permit = permits.clone().acquire_owned().await?;
        let (conn, body) = (conn.clone(), body.clone());
        tasks.spawn(async move {
            let d = one(&conn, &body).await;
            drop(permit);
            d
        });
    }
    let mut lat = Vec::with_capacity(messages);
    while let Some(r) = tasks.join_next().await {
        lat.push(r??);
    }
    let elapsed = start.elapsed();
    lat.sort();
    let got = received.load(Ordering::Relaxed);
    if got != messages + 1 {
        bail!("the server read {got} messages, expected {}", messages + 1);
    }
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    server.close(0u32.into(), b"done");

    println!(
        "quic: {messages} messages of {size} B, {outstanding} outstanding, raw quinn on loopback (one bidirectional stream per message, 8-byte ack; no signing, no storage)"
    );
    println!(
        "  throughput  {:.0} msg/s  ({:.2} s)",
        messages as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  send→ack latency  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}
