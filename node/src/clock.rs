//! The node's one clock. Everything the node records or decides by time (audit entry times,
//! `sent_at`, signing age, skew, deadlines, expiry, retry and backoff schedules, the reorder
//! window, retention, refusal rates) reads it, and every periodic task and retry waits on it.
//!
//! The system clock is Unix time. A manual clock (tests, simulations) stands still until it
//! is advanced, and then wakes every wait whose time has come, so deadlines, expiry and
//! backoff are tested in virtual time. QUIC's own timers (handshake, idle, keep-alive) and
//! the bounds on one exchange are transport matters and stay on real time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Unix time in milliseconds, from the system clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Debug)]
enum Source {
    System,
    Manual(watch::Sender<u64>),
}

/// A clock shared by a node's tasks (and, in tests, by several nodes). Cloning gives another
/// handle to the same clock.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Source>);

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock that reads `start_ms` until it is advanced.
    pub fn manual(start_ms: u64) -> Self {
        Self(Arc::new(Source::Manual(watch::Sender::new(start_ms))))
    }

    /// Whether this clock moves only when told.
    pub fn is_manual(&self) -> bool {
        matches!(*self.0, Source::Manual(_))
    }

    /// Unix time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        match &*self.0 {
            Source::System => now_ms(),
            Source::Manual(t) => *t.borrow(),
        }
    }

    /// Moves a manual clock forward by `by` and wakes every wait that is due; returns the new
    /// time. The system clock cannot be moved: `None`.
    pub fn advance(&self, by: Duration) -> Option<u64> {
        match &*self.0 {
            Source::System => None,
            Source::Manual(t) => {
                let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
                t.send_modify(|now| *now = now.saturating_add(by));
                Some(*t.borrow())
            }
        }
    }

    /// Waits until the clock reads `at_ms` or later.
    pub async fn sleep_until(&self, at_ms: u64) {
        match &*self.0 {
            Source::System => {
                let now = now_ms();
                if at_ms > now {
                    tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
                }
            }
            Source::Manual(t) => {
                let mut rx = t.subscribe();
                // The sender lives as long as this clock does.
                let _ = rx.wait_for(|now| *now >= at_ms).await;
            }
        }
    }

    /// Waits for `d` on this clock.
    pub async fn sleep(&self, d: Duration) {
        self.sleep_until(self.now_ms().saturating_add(millis(d)))
            .await;
    }

    /// A ticker that fires every `period` from now on this clock.
    pub fn ticker(&self, period: Duration) -> Ticker {
        let period = millis(period).max(1);
        Ticker {
            clock: self.clone(),
            period,
            next: self.now_ms().saturating_add(period),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Fires at a fixed rate on its clock. The next time is set when a tick fires, before the
/// work of the tick is done, so time that passes during the work is not lost; ticks missed
/// altogether (the clock jumped) are skipped, not bunched.
#[derive(Debug)]
pub struct Ticker {
    clock: Clock,
    period: u64,
    next: u64,
}

impl Ticker {
    /// Waits for the next tick; returns the time it fired at. Cancel-safe: a tick whose wait
    /// is dropped is still due.
    pub async fn tick(&mut self) -> u64 {
        self.clock.sleep_until(self.next).await;
        let now = self.clock.now_ms();
        let after = self.next.saturating_add(self.period);
        self.next = if now >= after {
            now.saturating_add(self.period)
        } else {
            after
        };
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_waits_only_when_advanced_past_them() {
        let c = Clock::manual(1_000);
        assert!(c.is_manual());
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move {
                c.sleep_until(1_500).await;
                c.now_ms()
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(c.advance(Duration::from_millis(499)), Some(1_499));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert_eq!(c.advance(Duration::from_millis(1)), Some(1_500));
        assert_eq!(waiter.await.unwrap(), 1_500);
        // A wait already due returns at once.
        c.sleep_until(10).await;
        c.sleep(Duration::ZERO).await;
    }

    #[tokio::test]
    async fn a_ticker_keeps_its_rate_and_skips_what_a_jump_missed() {
        let c = Clock::manual(0);
        let mut t = c.ticker(Duration::from_millis(100));
        c.advance(Duration::from_millis(100));
        assert_eq!(t.tick().await, 100);
        // Work during the tick took 150 ms: the next tick is already due, at its rate.
        c.advance(Duration::from_millis(150));
        assert_eq!(t.tick().await, 250);
        assert_eq!(t.next, 300);
        // A jump of an hour fires once, then the rate goes on from there.
        c.advance(Duration::from_secs(3600));
        assert_eq!(t.tick().await, 3_600_250);
        assert_eq!(t.next, 3_600_350);
    }

    #[tokio::test]
    async fn the_system_clock_is_unix_time_and_cannot_be_moved() {
        let c = Clock::system();
        let before = now_ms();
        assert!(c.now_ms() >= before);
        assert_eq!(c.advance(Duration::from_secs(1)), None);
        c.sleep_until(before).await;
    }
}
