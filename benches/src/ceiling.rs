//! The ceiling: what the primitives the bus is made of cost on this machine, so every
//! figure of the bus can be read as a fraction of what its parts allow.

use std::time::Instant;

use anyhow::Result;
use ed25519_dalek::{Signer as _, SigningKey};
use liaison_protocol::{Digest, Envelope, Header, MessageId, NodeId, Priority, PublicKey};

fn time<T>(label: &str, n: usize, mut f: impl FnMut() -> T) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    let per = start.elapsed().as_secs_f64() / n as f64;
    println!(
        "  {label:<44} {:>10.2} µs   {:>10.0} /s",
        per * 1e6,
        1.0 / per
    );
    1.0 / per
}

/// Signatures and the messages they sign, for the verification ceilings.
pub(crate) struct Signed {
    keys: Vec<ed25519_dalek::VerifyingKey>,
    sigs: Vec<ed25519_dalek::Signature>,
    msgs: Vec<Vec<u8>>,
}

impl Signed {
    pub(crate) fn new(n: usize, size: usize) -> Self {
        let key = SigningKey::from_bytes(&[3; 32]);
        let msgs: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let mut m = vec![0x5a; size];
                m[..8].copy_from_slice(&(i as u64).to_be_bytes());
                m
            })
            .collect();
        Self {
            keys: vec![key.verifying_key(); n],
            sigs: msgs.iter().map(|m| key.sign(m)).collect(),
            msgs,
        }
    }

    fn strict(&self, range: std::ops::Range<usize>) -> bool {
        range.into_iter().all(|i| {
            self.keys[i]
                .verify_strict(&self.msgs[i], &self.sigs[i])
                .is_ok()
        })
    }

    fn batch(&self, range: std::ops::Range<usize>, chunk: usize) -> bool {
        let mut i = range.start;
        while i < range.end {
            let j = (i + chunk).min(range.end);
            let msgs: Vec<&[u8]> = self.msgs[i..j].iter().map(Vec::as_slice).collect();
            if ed25519_dalek::verify_batch(&msgs, &self.sigs[i..j], &self.keys[i..j]).is_err() {
                return false;
            }
            i = j;
        }
        true
    }

    /// Signatures per second, `verify_strict` one by one, on `threads` threads.
    pub(crate) fn strict_rate(&self, threads: usize) -> f64 {
        self.rate(threads, |r| self.strict(r))
    }

    /// Signatures per second with `verify_batch` over chunks of 64, on `threads` threads.
    pub(crate) fn batch_rate(&self, threads: usize) -> f64 {
        self.rate(threads, |r| self.batch(r, 64))
    }

    fn rate(&self, threads: usize, f: impl Fn(std::ops::Range<usize>) -> bool + Sync) -> f64 {
        let n = self.msgs.len();
        let per = n.div_ceil(threads);
        let t = Instant::now();
        let ok = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|k| {
                    let f = &f;
                    s.spawn(move || f(k * per..((k + 1) * per).min(n)))
                })
                .collect();
            hs.into_iter().all(|h| h.join().unwrap_or(false))
        });
        assert!(ok, "a signature did not verify");
        n as f64 / t.elapsed().as_secs_f64()
    }
}

pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

pub(crate) fn run(size: usize) -> Result<()> {
    let key = SigningKey::from_bytes(&[1; 32]);
    let pk = PublicKey::from(&key);
    let msg = vec![0x5a; size];
    let sig = key.sign(&msg).to_bytes();
    let cores = threads();
    println!("ceiling: primitives on this machine ({size} B where it applies, {cores} cores)");
    time("Ed25519 sign", 5_000, || key.sign(&msg));
    time("Ed25519 verify_strict", 5_000, || {
        pk.verify(&msg, &sig).is_ok()
    });
    let signed = Signed::new(20_000, 128);
    let one = signed.strict_rate(1);
    let all = signed.strict_rate(cores);
    let batch_one = signed.batch_rate(1);
    let batch_all = signed.batch_rate(cores);
    println!(
        "  {:<44} {:>10.2} µs   {:>10.0} /s",
        "verify_strict, 1 thread (128 B)",
        1e6 / one,
        one
    );
    println!(
        "  {:<44} {:>10.2} µs   {:>10.0} /s",
        format!("verify_strict, {cores} threads (128 B)"),
        1e6 / all,
        all
    );
    println!(
        "  {:<44} {:>10.2} µs   {:>10.0} /s",
        "verify_batch of 64, 1 thread (128 B)",
        1e6 / batch_one,
        batch_one
    );
    println!(
        "  {:<44} {:>10.2} µs   {:>10.0} /s",
        format!("verify_batch of 64, {cores} threads (128 B)"),
        1e6 / batch_all,
        batch_all
    );
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
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let mut i = 0u64;
    time("sled insert (no flush)", 20_000, || {
        i += 1;
        db.insert(i.to_be_bytes(), msg.as_slice()).map(|_| ())
    });
    time("sled batch of 16 inserts (one apply_batch)", 2_000, || {
        let mut b = sled::Batch::default();
        for _ in 0..16 {
            i += 1;
            b.insert(&i.to_be_bytes()[..], msg.as_slice());
        }
        db.apply_batch(b)
    });
    time("sled insert + flush (fsync)", 500, || {
        i += 1;
        db.insert(i.to_be_bytes(), msg.as_slice())
            .and_then(|_| db.flush())
    });
    let f = std::fs::File::create(dir.path().join("fsync"))?;
    time("write 4 KiB + fdatasync", 500, || {
        use std::io::Write as _;
        let mut f = &f;
        f.write_all(&[0x5a; 4096]).and_then(|()| f.sync_data())
    });
    Ok(())
}
