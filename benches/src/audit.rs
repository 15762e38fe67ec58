//! `audit`: a node whose log holds a million "message received" entries, each with a signed
//! envelope: `audit verify` against the verification ceiling measured in the same run, and
//! the cost of a witness round at that size.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use liaison_node::{Config, Node, StartOptions};
use liaison_protocol::{Digest, Envelope, Header, MessageId, NodeId, Priority};

use crate::util::federation;

pub(crate) async fn run(entries: usize) -> Result<()> {
    use liaison_node::identity::load_signing_key;
    use liaison_node::store::Store;
    use liaison_protocol::audit::EntryKind;

    let dir = tempfile::tempdir()?;
    let (g, mut sockets) = federation(dir.path(), &["a", "b"])?;
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
                clock: None,
            },
        )
        .await?;
        nodes.insert(id, node);
    }
    println!(
        "  node start with the log (frontier from the stored tree nodes): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let a = nodes["a"].clone();

    // The ceiling, measured here and now: verify_strict (and, for comparison, batch
    // verification) on every core.
    let cores = crate::ceiling::threads();
    let signed = crate::ceiling::Signed::new(40_000, 300);
    let strict = signed.strict_rate(cores);
    let batch = signed.batch_rate(cores);
    let t = Instant::now();
    let report = a.audit_verify().await?;
    let secs = t.elapsed().as_secs_f64();
    if report.first_problem.is_some() {
        bail!("audit verify found a problem: {report:?}");
    }
    let rate = report.signatures_checked as f64 / secs;
    println!(
        "  audit verify: {} entries, {} signatures in {:.1} s = {:.0} entries/s",
        report.entries,
        report.signatures_checked,
        secs,
        report.entries as f64 / secs
    );
    println!(
        "  ceiling on {cores} cores: verify_strict {strict:.0}/s (audit verify at {:.0} %), verify_batch {batch:.0}/s ({:.0} %)",
        rate / strict * 100.0,
        rate / batch * 100.0
    );

    let t = Instant::now();
    let first = a.witness_round().await?;
    println!(
        "  first witness round (checkpoint signed, no proof): {:.1} ms, cosigned: {}",
        t.elapsed().as_secs_f64() * 1e3,
        first.iter().all(|o| o.result.is_ok())
    );
    // The log grows by one message; the witness checks consistency from the cosigned size.
    let tracker = crate::util::Tracker::of(&a);
    let r = a
        .send(crate::util::message("b", &[1; 64], Priority::Routine)?)
        .await?;
    tracker.wait(&r.message_id).await?;
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
