//! The node under abuse: floods of failed handshakes, members that send junk or hold many
//! connections, and a member whose key left the roster. The permanent log grows by bounded
//! summaries, members keep being served, and nothing is admitted that the roster does not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liaison_node::Node;
use liaison_node::config::Config;
use liaison_protocol::audit::EntryKind;
use liaison_protocol::{Frame, Roster};
use liaison_tests::{Federation, RawPeer, count_state, member, msg, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn fed3() -> Federation {
    Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
        member("gx", "public_security", "CHN", None),
    ]))
    .unwrap()
}

/// Texts of the entries of `kind` in the node's log.
async fn texts(node: &Node, kind: EntryKind) -> Vec<String> {
    node.log_entries(0, node.log_len())
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == kind)
        .map(|(_, e)| String::from_utf8_lossy(&e.object).into_owned())
        .collect()
}

/// The application close code a connection ended with, if the peer closed it so.
fn close_code(e: &quinn::ConnectionError) -> Option<u64> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

/// How a connection ended, waiting for it at most `LIMIT`.
async fn closed(conn: &quinn::Connection) -> quinn::ConnectionError {
    tokio::time::timeout(LIMIT, conn.closed())
        .await
        .expect("the connection stayed open")
}

/// Summaries only: no interval passes during the test, the node logs them when it stops.
fn hourly_summaries(c: &mut Config) {
    c.limits.summary_interval_ms = 3_600_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_failed_handshakes_is_one_summary_and_members_are_still_served() {
    const FLOOD: usize = 300;
    let mut fed = fed3();
    let sx = fed
        .start_with("sx", |c| {
            hourly_summaries(c);
            // Every handshake from an address not yet proven is sent a QUIC retry first.
            c.limits.retry_above = 0;
        })
        .await
        .unwrap();
    let fj = fed.start("fj").await.unwrap();
    let addr = fed.addr("sx");
    // Certificates of another federation's CA, from one client address.
    let other = Federation::new(&spec(vec![member("fj", "public_security", "CHN", None)])).unwrap();
    let dir = other.member_dir("fj");
    let foreign = RawPeer::client(
        &fed.generated.dir.join("ca.pem"),
        &dir.join("tls.cert.pem"),
        &dir.join("tls.key.pem"),
        &fed.generated.dir.join("roster.cbor"),
        &fed.generated.authority_key_hex,
    )
    .unwrap();
    for _ in 0..FLOOD {
        // TLS 1.3: the client may finish before the server's refusal arrives; either way
        // the connection ends without being served.
        if let Ok(conn) = foreign.connect(addr, "sx").unwrap().await {
            let e = closed(&conn).await;
            assert!(close_code(&e).is_none(), "served: {e}");
        }
    }
    // Members are served through the flood, after a retry of their own.
    let sent = fj
        .send(msg("sx", "bus.test", b"after the flood"))
        .await
        .unwrap();
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    assert_eq!(
        sx.inbox(10, false).await.unwrap()[0].message_id,
        sent.message_id
    );
    // Not one entry per refusal: nothing yet, one summary at the end of the interval.
    assert!(texts(&sx, EntryKind::HandshakeRefused).await.is_empty());
    assert_eq!(sx.handshakes_in_progress(), 0);
    fed.stop("sx").await;
    drop(sx);
    let sx = fed.start("sx").await.unwrap();
    let summaries = texts(&sx, EntryKind::HandshakeRefused).await;
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let s = &summaries[0];
    assert!(s.contains(&format!("{FLOOD} refused handshakes")), "{s}");
    assert!(s.contains("bad-certificate from 127.0.0.0/24"), "{s}");
    assert!(s.len() < 1_200, "{s}");
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sending_malformed_frames_is_disconnected_for_a_while_and_its_log_bounded() {
    const JUNK: u32 = 50;
    const FRAMES: usize = 10_000;
    let mut fed = fed3();
    let sx = fed
        .start_with("sx", |c| {
            hourly_summaries(c);
            c.limits.junk_per_minute = JUNK;
            c.limits.ban_ms = 1_500;
        })
        .await
        .unwrap();
    let before = texts(&sx, EntryKind::Rejected).await.len();
    let raw = fed.raw("fj", "sx").await.unwrap();
    let mut answered = 0;
    let mut tried = 0;
    while tried < FRAMES {
        tried += 1;
        match raw.exchange_bytes(b"\xff not a frame").await {
            Ok(Frame::Error { .. }) => answered += 1,
            Ok(other) => panic!("junk answered with {other:?}"),
            Err(_) => break,
        }
    }
    // Disconnected as soon as it went over its limit.
    assert!(
        answered >= JUNK as usize && answered <= JUNK as usize + 1,
        "{answered}"
    );
    assert_eq!(close_code(&closed(&raw.conn).await), Some(3));
    // Refused while banned, however it comes back, and its node's traffic waits.
    let again = fed.raw("fj", "sx").await.unwrap();
    assert_eq!(close_code(&closed(&again.conn).await), Some(3));
    let fj = fed.start("fj").await.unwrap();
    fj.send(msg("sx", "bus.test", b"after the ban"))
        .await
        .unwrap();
    // After the ban it is served again.
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    // Individual entries up to its rate (the burst, and what a few seconds refill), the rest
    // counted for the summary.
    let one_by_one = texts(&sx, EntryKind::Rejected).await.len() - before;
    assert!((20..=22).contains(&one_by_one), "{one_by_one} entries");
    fed.stop("sx").await;
    drop(sx);
    let sx = fed.start("sx").await.unwrap();
    let all = texts(&sx, EntryKind::Rejected).await;
    let summaries: Vec<_> = all
        .iter()
        .filter(|t| t.contains("refusals of members' input"))
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert!(summaries[0].contains("from fj"), "{}", summaries[0]);
    assert!(all.len() - before <= one_by_one + 1);
    fed.stop("fj").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_of_one_member_are_capped_and_others_still_served() {
    const CONNECTIONS: usize = 400;
    const CAP: usize = 8;
    let mut fed = fed3();
    let sx = fed
        .start_with("sx", |c| c.limits.connections_per_member = CAP)
        .await
        .unwrap();
    let gx = fed.start("gx").await.unwrap();
    let addr = fed.addr("sx");
    let raw = fed.raw("fj", "sx").await.unwrap();
    let mut conns = vec![raw.conn.clone()];
    for _ in 1..CONNECTIONS {
        conns.push(raw.endpoint.connect(addr, "sx").unwrap().await.unwrap());
    }
    // The node keeps the newest few; the others are closed with a reason.
    wait_for(LIMIT, async || {
        sx.inbound_connections().get("fj").copied().unwrap_or(0) <= CAP
            && conns.iter().filter(|c| c.close_reason().is_none()).count() <= CAP
    })
    .await
    .unwrap();
    let closed = conns.iter().filter_map(quinn::Connection::close_reason);
    assert!(closed.clone().all(|e| close_code(&e) == Some(4)));
    assert!(closed.count() >= CONNECTIONS - CAP);
    // The newest still works.
    let newest = conns.last().unwrap();
    assert!(newest.close_reason().is_none());
    let (mut send, mut recv) = newest.open_bi().await.unwrap();
    send.write_all(&Frame::Roster(sx.roster().bytes().to_vec()).to_bytes())
        .await
        .unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(1 << 16).await.unwrap();
    assert!(matches!(
        Frame::decode_exact(&answer, 1 << 16).unwrap(),
        Frame::Ack(_)
    ));
    // Other members are served.
    gx.send(msg("sx", "bus.test", b"still here")).await.unwrap();
    wait_for(LIMIT, async || {
        count_state(&gx, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    fed.stop("gx").await;
    fed.stop("sx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_key_left_the_roster_is_cut_off_and_refused_on_reconnect() {
    let mut fed = fed3();
    let sx = fed.start("sx").await.unwrap();
    let addr = fed.addr("sx");
    let raw = fed.raw("fj", "sx").await.unwrap();
    let current = Frame::Roster(sx.roster().bytes().to_vec());
    assert!(matches!(
        raw.exchange(&current).await.unwrap(),
        Frame::Ack(_)
    ));
    // fj's TLS key is replaced in the roster (a rotation whose new key fj's peer here lacks).
    let roster = fed
        .reissue_roster(|r: &mut Roster| {
            for m in &mut r.members {
                if m.id.as_str() == "fj" {
                    m.tls_spki_sha256 = [7; 32];
                }
            }
        })
        .unwrap();
    sx.apply_roster(&roster).await.unwrap();
    // The connection it held is closed, and the same client (same TLS configuration and
    // session cache) is refused when it comes back.
    let e = closed(&raw.conn).await;
    assert_eq!(close_code(&e), Some(1), "{e}");
    let refused = match raw.endpoint.connect(addr, "sx").unwrap().await {
        Err(_) => true,
        Ok(conn) => raw_exchange_fails(&conn, &current).await,
    };
    assert!(refused, "a key no longer pinned was admitted");
    fed.stop("sx").await;
}

async fn raw_exchange_fails(conn: &quinn::Connection, frame: &Frame) -> bool {
    let Ok((mut send, mut recv)) = conn.open_bi().await else {
        return true;
    };
    if send.write_all(&frame.to_bytes()).await.is_err() || send.finish().is_err() {
        return true;
    }
    recv.read_to_end(1 << 16).await.is_err()
}
