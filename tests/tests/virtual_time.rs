//! Retries, backoff and expiry on the federation's manual clock: time moves only when the
//! test advances it, so what is due happens exactly then, and nothing waits in real time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liaison_tests::{Federation, count_state, member, msg, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn two_bureaus() -> Federation {
    Federation::new(&spec(vec![
        member("fj", "public_security", "CHN", None),
        member("sx", "public_security", "CHN", None),
    ]))
    .unwrap()
    .in_virtual_time()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_in_backoff_is_dialled_again_exactly_when_its_clock_says() {
    let mut fed = two_bureaus();
    // Test config: backoff from 20 ms, doubling, at most 300 ms, times a jitter in [0.5, 1).
    let (initial, max) = (20, 300);
    let door = fed.closed_door("sx").await.unwrap();
    let fj = fed.start("fj").await.unwrap();
    fj.send(msg("sx", "bus.test", b"when you are back"))
        .await
        .unwrap();
    let mut last_wait = 0;
    for attempt in 1..=6u32 {
        // The dial fails at once; the link then waits on the clock.
        wait_for(LIMIT, async || {
            let p = &fj.peers()[0];
            u32::try_from(p.failures).unwrap() == attempt && p.retry_at.is_some()
        })
        .await
        .unwrap();
        let p = &fj.peers()[0];
        let wait = p.retry_at.unwrap() - fed.clock.now_ms();
        let base: u64 = (initial << (attempt - 1)).min(max);
        assert!(
            wait >= base / 2 && wait < base.max(2),
            "attempt {attempt}: waits {wait} ms"
        );
        assert!(
            wait >= last_wait / 2,
            "backoff shrank: {last_wait} → {wait}"
        );
        last_wait = wait;
        // Not a moment earlier: one ms short of it, the link has not been dialled again.
        fed.advance(Duration::from_millis(wait - 1));
        let p = &fj.peers()[0];
        assert_eq!(u32::try_from(p.failures).unwrap(), attempt);
        assert_eq!(p.retry_at, Some(fed.clock.now_ms() + 1));
        fed.advance(Duration::from_millis(1));
    }
    assert!(last_wait < max);
    wait_for(LIMIT, async || {
        let p = &fj.peers()[0];
        p.failures == 7 && p.retry_at.is_some()
    })
    .await
    .unwrap();
    // The recipient is up: the next dial, when due, delivers.
    door.remove().await;
    let sx = fed.start("sx").await.unwrap();
    fed.advance(Duration::from_millis(max));
    wait_for(LIMIT, async || {
        count_state(&fj, "outgoing", "delivered").await == 1
    })
    .await
    .unwrap();
    assert_eq!(sx.inbox(10, false).await.unwrap().len(), 1);
    assert_eq!(fj.peers()[0].retry_at, None);
    fed.stop("fj").await;
    fed.stop("sx").await;
}
