//! What peers and strangers can make this node do, bounded: handshakes in progress (in all
//! and per address), refusal entries per member (a token bucket; the rest counted), malformed
//! input per member (too much: its connections closed and refused for a while), and the
//! counts of everything not logged one by one, logged as one summary entry per interval.
//! Time is an argument; the node passes its clock.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use liaison_protocol::NodeId;

use crate::config::LimitsConfig;

/// Distinct (reason, source) pairs counted per interval; the rest are counted together.
const MAX_KEYS: usize = 64;
/// Longest summary text (the audit record's reason is cut to 1000 bytes).
const MAX_SUMMARY: usize = 1000;
/// Members tracked at once (rate buckets, junk windows, bans); the federation is smaller.
const MAX_MEMBERS: usize = 4096;
const MINUTE: u64 = 60_000;

/// Counts of refusals not logged one by one, per (reason, source).
#[derive(Debug, Default)]
struct Tally {
    counts: BTreeMap<(&'static str, String), (u64, String)>,
    other: u64,
    since: Option<u64>,
}

impl Tally {
    fn add(&mut self, name: &'static str, source: String, sample: &str, now: u64) {
        self.since.get_or_insert(now);
        let key = (name, source);
        if let Some((n, _)) = self.counts.get_mut(&key) {
            *n += 1;
        } else if self.counts.len() < MAX_KEYS {
            self.counts.insert(key, (1, truncate(sample, 120)));
        } else {
            self.other += 1;
        }
    }

    fn take(&mut self, what: &str, now: u64) -> Option<String> {
        let since = self.since.take()?;
        let total: u64 = self.counts.values().map(|(n, _)| n).sum::<u64>() + self.other;
        let mut text = format!(
            "{total} {what} not logged one by one in {} s:",
            now.saturating_sub(since).div_ceil(1000)
        );
        for ((name, source), (n, sample)) in std::mem::take(&mut self.counts) {
            text.push_str(&format!(" {name} from {source} x{n} ({sample});"));
        }
        if self.other > 0 {
            text.push_str(&format!(" others x{};", self.other));
        }
        self.other = 0;
        Some(truncate(&text, MAX_SUMMARY))
    }
}

#[derive(Debug, Default)]
struct MemberState {
    /// Tokens for individual entries, and when they were last refilled.
    tokens: f64,
    refilled: u64,
    /// Malformed input in the current minute, and when it began.
    junk: u32,
    junk_since: u64,
    /// Refused until then.
    banned_until: u64,
}

#[derive(Debug, Default)]
struct State {
    handshakes: usize,
    per_address: HashMap<IpAddr, usize>,
    members: HashMap<NodeId, MemberState>,
    /// Failed handshakes (kind 14 summary).
    handshake_tally: Tally,
    /// Members' refusals beyond their rate (kind 5 summary).
    member_tally: Tally,
}

/// The node's bounds on peers and strangers.
#[derive(Debug)]
pub(crate) struct Guard {
    cfg: LimitsConfig,
    state: Mutex<State>,
}

/// What to do with a new inbound connection attempt.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Go on with the handshake; the permit counts it until dropped.
    Accept(HandshakePermit),
    /// Ask the client to prove its address first (QUIC retry).
    Retry,
    /// Too many handshakes in progress (in all or from this address).
    Refuse,
}

/// One handshake in progress.
#[derive(Debug)]
pub(crate) struct HandshakePermit {
    guard: Arc<Guard>,
    addr: IpAddr,
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        let mut s = self.guard.lock();
        s.handshakes = s.handshakes.saturating_sub(1);
        if let Some(n) = s.per_address.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_address.remove(&self.addr);
            }
        }
    }
}

/// The part of an address failed handshakes are counted under: its /24 (IPv4) or /48 (IPv6).
pub(crate) fn source_prefix(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

impl Guard {
    pub(crate) fn new(cfg: LimitsConfig) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn limits(&self) -> &LimitsConfig {
        &self.cfg
    }

    /// Decides on a new inbound connection attempt from `addr` (`validated`: the address
    /// has proved it receives).
    pub(crate) fn admit(self: &Arc<Self>, addr: IpAddr, validated: bool) -> Admission {
        let mut s = self.lock();
        let from_addr = s.per_address.get(&addr).copied().unwrap_or(0);
        if s.handshakes >= self.cfg.handshakes.max(1)
            || from_addr >= self.cfg.handshakes_per_address.max(1)
        {
            return Admission::Refuse;
        }
        if !validated && s.handshakes >= self.cfg.retry_above {
            return Admission::Retry;
        }
        s.handshakes += 1;
        *s.per_address.entry(addr).or_insert(0) += 1;
        Admission::Accept(HandshakePermit {
            guard: self.clone(),
            addr,
        })
    }

    /// Handshakes in progress.
    pub(crate) fn handshakes(&self) -> usize {
        self.lock().handshakes
    }

    /// Counts a refused handshake (from `source`: an address prefix, or the member dialled).
    pub(crate) fn handshake_refused(
        &self,
        name: &'static str,
        source: String,
        reason: &str,
        now: u64,
    ) {
        self.lock().handshake_tally.add(name, source, reason, now);
    }

    /// Whether a refusal of `member`'s input is logged one by one at `now`; if not, it is
    /// counted for the summary.
    pub(crate) fn log_one(
        &self,
        member: &NodeId,
        name: &'static str,
        reason: &str,
        now: u64,
    ) -> bool {
        let rate = f64::from(self.cfg.entries_per_minute.max(1));
        let mut s = self.lock();
        let st = member_state(&mut s, member, rate, now);
        #[allow(clippy::cast_precision_loss)]
        let refill = now.saturating_sub(st.refilled) as f64 * rate / MINUTE as f64;
        st.tokens = (st.tokens + refill).min(rate);
        st.refilled = now;
        if st.tokens >= 1.0 {
            st.tokens -= 1.0;
            return true;
        }
        s.member_tally.add(name, member.to_string(), reason, now);
        false
    }

    /// Counts malformed input from `member`; true when it went over its limit just now (the
    /// caller closes the member's connections; it is refused until the ban ends).
    pub(crate) fn junk(&self, member: &NodeId, now: u64) -> bool {
        let rate = f64::from(self.cfg.entries_per_minute.max(1));
        let mut s = self.lock();
        let limit = self.cfg.junk_per_minute.max(1);
        let ban = self.cfg.ban_ms;
        let st = member_state(&mut s, member, rate, now);
        if now.saturating_sub(st.junk_since) >= MINUTE {
            st.junk = 0;
            st.junk_since = now;
        }
        st.junk = st.junk.saturating_add(1);
        if st.junk > limit && st.banned_until <= now {
            st.banned_until = now.saturating_add(ban);
            return true;
        }
        false
    }

    /// Whether `member` is refused at `now` for the malformed input it sent.
    pub(crate) fn banned(&self, member: &NodeId, now: u64) -> bool {
        self.lock()
            .members
            .get(member)
            .is_some_and(|m| m.banned_until > now)
    }

    /// The summaries due at `now`: failed handshakes (kind 14) and members' refusals not
    /// logged one by one (kind 5). None when nothing was counted.
    pub(crate) fn take_summaries(&self, now: u64) -> (Option<String>, Option<String>) {
        let mut s = self.lock();
        (
            s.handshake_tally.take("refused handshakes", now),
            s.member_tally.take("refusals of members' input", now),
        )
    }
}

fn member_state<'a>(s: &'a mut State, member: &NodeId, rate: f64, now: u64) -> &'a mut MemberState {
    if !s.members.contains_key(member) && s.members.len() >= MAX_MEMBERS {
        // Forget the members not banned; a member the roster never had cannot get here
        // (only admitted peers are tracked).
        s.members.retain(|_, m| m.banned_until > now);
    }
    s.members
        .entry(member.clone())
        .or_insert_with(|| MemberState {
            tokens: rate,
            refilled: now,
            junk: 0,
            junk_since: now,
            banned_until: 0,
        })
}

/// `s` cut to at most `max` bytes, at a character boundary (reasons in audit records).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LimitsConfig {
        LimitsConfig {
            entries_per_minute: 3,
            junk_per_minute: 5,
            ban_ms: 10_000,
            handshakes: 4,
            handshakes_per_address: 2,
            retry_above: 3,
            ..LimitsConfig::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn handshakes_are_capped_in_all_and_per_address_and_retried_under_load() {
        let g = Guard::new(cfg());
        let a1 = g.admit(ip(1), false);
        let a2 = g.admit(ip(1), false);
        assert!(matches!(a1, Admission::Accept(_)) && matches!(a2, Admission::Accept(_)));
        assert!(matches!(g.admit(ip(1), true), Admission::Refuse));
        let b = g.admit(ip(2), false);
        assert!(matches!(b, Admission::Accept(_)));
        // Three in progress: a new address must prove itself; a validated one goes on.
        assert!(matches!(g.admit(ip(3), false), Admission::Retry));
        let c = g.admit(ip(3), true);
        assert!(matches!(c, Admission::Accept(_)));
        assert!(matches!(g.admit(ip(4), true), Admission::Refuse));
        assert_eq!(g.handshakes(), 4);
        drop((a1, a2, b, c));
        assert_eq!(g.handshakes(), 0);
        assert!(g.lock().per_address.is_empty());
    }

    #[test]
    fn a_members_refusals_are_logged_at_its_rate_and_the_rest_summarised() {
        let g = Guard::new(cfg());
        let m = NodeId::new("gx").unwrap();
        let logged = (0..10)
            .filter(|_| g.log_one(&m, "bad-proof", "x", 0))
            .count();
        assert_eq!(logged, 3);
        // A minute later the bucket is full again, not fuller.
        let logged = (0..10)
            .filter(|_| g.log_one(&m, "bad-proof", "x", MINUTE))
            .count();
        assert_eq!(logged, 3);
        let (hs, members) = g.take_summaries(MINUTE);
        assert!(hs.is_none());
        let text = members.unwrap();
        assert!(text.starts_with("14 refusals of members' input"), "{text}");
        assert!(text.contains("bad-proof from gx x14"), "{text}");
        assert_eq!(g.take_summaries(MINUTE), (None, None));
    }

    #[test]
    fn too_much_junk_bans_a_member_for_a_while() {
        let g = Guard::new(cfg());
        let m = NodeId::new("gx").unwrap();
        let over: Vec<bool> = (0..7).map(|i| g.junk(&m, i)).collect();
        assert_eq!(over, [false, false, false, false, false, true, false]);
        assert!(g.banned(&m, 100));
        assert!(!g.banned(&m, 10_006));
        // A new minute starts a new count.
        assert!(!g.junk(&m, MINUTE + 10));
    }

    #[test]
    fn summaries_are_bounded() {
        let g = Guard::new(cfg());
        for i in 0..300u32 {
            let addr = IpAddr::from([10, (i / 256) as u8, (i % 256) as u8, 1]);
            g.handshake_refused(
                "unknown-ca",
                source_prefix(addr),
                "invalid peer certificate: UnknownIssuer",
                5,
            );
        }
        let (hs, _) = g.take_summaries(60_005);
        let text = hs.unwrap();
        assert!(
            text.starts_with("300 refused handshakes not logged one by one in 60 s:"),
            "{text}"
        );
        assert!(text.len() <= MAX_SUMMARY);
        assert_eq!(g.lock().handshake_tally.counts.len(), 0);
    }

    #[test]
    fn prefixes() {
        assert_eq!(source_prefix(IpAddr::from([192, 0, 2, 77])), "192.0.2.0/24");
        let v6: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        assert_eq!(source_prefix(v6), "2001:db8:1::/48");
    }
}
