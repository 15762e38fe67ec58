//! Request and answer between two officers: an assistance check (`assist.request`, signed by
//! an investigator at node a) and its answer (`assist.accept` and `assist.answer`, signed by
//! an investigator at node b). Every step is an officer-signed action that the sending node
//! checks (officer, credential, role, purpose, recipients, handling, state machine), seals,
//! stores durably and sends; the receiving node checks it again, applies it to its copy of
//! the case and stores it durably before its receipt. A step's latency runs from `act` at
//! the sending node to its receipt recorded there (the step applied at the other side).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use liaison_node::{ActRequest, EnrollRequest, Node};
use liaison_protocol::NodeId;
use liaison_protocol::action::{Action, Handling};
use liaison_protocol::workflow;

use crate::util::{Tracker, federation, latency_line, start};

struct Officer {
    node: Node,
    key: SigningKey,
    credential: Vec<u8>,
}

impl Officer {
    async fn enroll(node: &Node, id: &str, seed: u8) -> Result<Self> {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let view = node
            .enroll_officer(EnrollRequest {
                id: id.into(),
                name: format!("Officer {id}"),
                number: "000001".into(),
                unit: "CID".into(),
                role: "investigator".into(),
                public_key: hex::encode(key.verifying_key().to_bytes()),
            })
            .await?;
        Ok(Self {
            node: node.clone(),
            key,
            credential: base64::engine::general_purpose::STANDARD.decode(view.credential)?,
        })
    }

    /// Signs and submits `kind` on `case` to `to`; returns the message id.
    async fn act(&self, kind: &str, case: &str, to: &str) -> Result<String> {
        let spec = workflow::spec(kind).context("kind not in the catalog")?;
        let action = Action {
            federation: "bench".into(),
            node: self.node.id().clone(),
            kind: kind.into(),
            case_ref: case.into(),
            at: liaison_node::now_ms(),
            purpose: spec.purpose.into(),
            handling: Handling::H0,
            sensitivity: Vec::new(),
            retention_days: 365,
            abroad: false,
            document: workflow::example(kind).context("no example document")?,
            derived_from: Vec::new(),
            credential: Some(self.credential.clone()),
        };
        let signed = action.sign(&self.key);
        let r = self
            .node
            .act(ActRequest {
                action: base64::engine::general_purpose::STANDARD.encode(signed.bytes()),
                to: vec![NodeId::new(to)?],
                priority: None,
                in_reply_to: None,
            })
            .await?;
        Ok(r.messages
            .first()
            .context("the step was not sent")?
            .message_id
            .clone())
    }
}

pub(crate) async fn run(requests: usize, rates: &[f64], seconds: f64) -> Result<()> {
    println!(
        "officers: assistance checks between two officers (request at a; accept and answer at b), every step officer-signed, checked at both nodes, durable at both before its receipt"
    );
    let dir = tempfile::tempdir()?;
    let (g, mut sockets) = federation(dir.path(), &["a", "b"])?;
    let a = start(&g, &mut sockets, "a", |_| {}).await?;
    let b = start(&g, &mut sockets, "b", |_| {}).await?;
    let (ta, tb) = (Tracker::of(&a), Tracker::of(&b));
    let oa = Arc::new(Officer::enroll(&a, "a/lin.wei", 1).await?);
    let ob = Arc::new(Officer::enroll(&b, "b/zhao.lei", 2).await?);

    // One in flight: request, then accept and answer, one case after the other.
    let mut steps = Vec::new();
    let mut rounds = Vec::new();
    for i in 0..requests + 1 {
        let case = format!("BENCH-{i}");
        let t0 = Instant::now();
        let id = oa.act("assist.request", &case, "b").await?;
        let t_req = ta.wait(&id).await?;
        let t1 = Instant::now();
        let id = ob.act("assist.accept", &case, "a").await?;
        let t_acc = tb.wait(&id).await?;
        let t2 = Instant::now();
        let id = ob.act("assist.answer", &case, "a").await?;
        let t_ans = tb.wait(&id).await?;
        if i == 0 {
            continue; // warm-up
        }
        steps.extend([t_req - t0, t_acc - t1, t_ans - t2]);
        rounds.push(t_ans - t0);
    }
    println!("  one in flight, {requests} checks:");
    println!("    one step, act → receipt       {}", latency_line(steps));
    println!("    request → answer applied at a {}", latency_line(rounds));

    // Open loop: requests at a fixed rate, each a new case.
    for &rate in rates {
        let n = (rate * seconds) as usize;
        let t0 = tokio::time::Instant::now() + Duration::from_millis(20);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let at = t0 + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(at).await;
            let (oa, ta) = (oa.clone(), ta.clone());
            let case = format!("RATE-{rate}-{i}");
            tasks.spawn(async move {
                let id = oa.act("assist.request", &case, "b").await?;
                let done = ta.wait(&id).await?;
                Ok::<_, anyhow::Error>(done - at.into_std())
            });
        }
        let mut lat = Vec::with_capacity(n);
        while let Some(r) = tasks.join_next().await {
            lat.push(r??);
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "  {rate:>5.0} requests/s for {seconds:.0} s ({:.0}/s achieved): scheduled act → receipt  {}",
            n as f64 / secs,
            latency_line(lat)
        );
    }
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
