//! A real (non-dev) federation of five nodes built only with the operators' commands, as
//! docs/operations.md tells them (no certs-dev): founded, enrolled, exchanging messages; a
//! member revoked and refused by all four others; every kind of key rotated while messages
//! flow, with evidence from before still verifying; a node backed up, lost and restored,
//! resuming with nothing lost or duplicated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Nodes, liaison, start_node};
use serde_json::Value;

fn ok(config: Option<&Path>, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = liaison(config, &args);
    assert!(
        out.status.success(),
        "liaison {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "liaison {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn wait_until(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    eprintln!("waiting: {what}");
    common::wait_until(limit, f);
}

/// The running nodes by id.
struct Running(Vec<String>, Nodes);

impl Running {
    fn start(&mut self, id: &str, cfg: &Path) {
        self.1.0.push(start_node(cfg, &[]));
        self.0.push(id.to_owned());
    }

    fn stop(&mut self, id: &str, cfg: &Path) {
        ok(Some(cfg), &["node", "stop"]);
        let i = self.0.iter().position(|n| n == id).unwrap();
        self.0.remove(i);
        let mut c = self.1.0.remove(i);
        assert!(c.wait().unwrap().success());
    }
}

struct Fed {
    dir: PathBuf,
    auth: PathBuf,
    authority_key: String,
    ids: Vec<&'static str>,
}

impl Fed {
    fn a(&self) -> &str {
        self.auth.to_str().unwrap()
    }

    fn cfg(&self, id: &str) -> PathBuf {
        self.dir.join(id).join("node.toml")
    }

    fn sign_and_copy(&self) -> u64 {
        let signed = ok(None, &["federation", "sign", "--dir", self.a()]);
        signed["serial"].as_u64().unwrap()
    }

    fn apply(&self, id: &str) {
        ok(
            Some(&self.cfg(id)),
            &[
                "roster",
                "apply",
                self.auth.join("roster.cbor").to_str().unwrap(),
            ],
        );
    }

    fn send(&self, from: &str, to: &str, body: &str) -> String {
        let sent = ok(
            Some(&self.cfg(from)),
            &["send", "--to", to, "--kind", "bus.test", "--body", body],
        );
        sent["message_id"].as_str().unwrap().to_owned()
    }

    fn state(&self, node: &str, id: &str) -> String {
        let v = liaison(Some(&self.cfg(node)), &["show", id, "--json"]);
        serde_json::from_slice::<Value>(&v.stdout)
            .map(|v| v["state"]["state"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    }

    fn delivered(&self, sent: &[(String, String)]) {
        wait_until("every message delivered", Duration::from_secs(60), || {
            sent.iter()
                .all(|(from, id)| self.state(from, id) == "delivered")
        });
    }

    /// One message from each of `nodes` to each other.
    fn all_pairs(&self, nodes: &[&str], tag: &str) -> Vec<(String, String)> {
        let mut sent = Vec::new();
        for from in nodes {
            for to in nodes {
                if from != to {
                    let id = self.send(from, to, &format!("{tag}: {from} to {to}"));
                    sent.push(((*from).to_owned(), id));
                }
            }
        }
        sent
    }

    fn status(&self, id: &str) -> Value {
        ok(Some(&self.cfg(id)), &["status"])
    }
}

/// Founds the federation and enrols five nodes, every step an operator's command.
fn found(dir: &Path) -> Fed {
    let auth = dir.join("authority");
    let founded = ok(
        None,
        &[
            "federation",
            "init",
            "--dir",
            auth.to_str().unwrap(),
            "--id",
            "cn-atip",
        ],
    );
    let fed = Fed {
        dir: dir.to_owned(),
        auth,
        authority_key: founded["authority_key"].as_str().unwrap().to_owned(),
        ids: vec![
            "cn-35-psb",
            "cn-61-psb",
            "cn-45-psb",
            "cn-53-psb",
            "cn-5325-hekou",
        ],
    };
    for id in &fed.ids {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let agency = if id.ends_with("hekou") {
            "border_station"
        } else {
            "public_security"
        };
        common::Enrol {
            auth: &fed.auth,
            authority_key: &fed.authority_key,
            id,
            agency,
            listen: &listen,
            location: None,
        }
        .run(&dir.join(id));
    }
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nfrom = \"*\"\nto = \"*\"\nkinds = [\"bus.*\"]\n",
    )
    .unwrap();
    ok(
        None,
        &[
            "federation",
            "set-policy",
            "--dir",
            fed.a(),
            "--rules",
            rules.to_str().unwrap(),
        ],
    );
    assert_eq!(fed.sign_and_copy(), 1);
    for id in &fed.ids {
        std::fs::copy(
            fed.auth.join("roster.cbor"),
            dir.join(id).join("roster.cbor"),
        )
        .unwrap();
        ok(Some(&fed.cfg(id)), &["node", "check-config"]);
    }
    fed
}

#[test]
fn five_agencies_run_a_real_federation_with_the_operators_commands_alone() {
    let dir = tempfile::tempdir().unwrap();
    let fed = found(dir.path());
    let mut run = Running(Vec::new(), Nodes(Vec::new()));
    for id in &fed.ids {
        run.start(id, &fed.cfg(id));
    }
    let [fj, sx, gx, yn, hk] = [fed.ids[0], fed.ids[1], fed.ids[2], fed.ids[3], fed.ids[4]];

    // Everyone talks to everyone.
    let sent = fed.all_pairs(&fed.ids, "first");
    fed.delivered(&sent);
    // Evidence from now, for later: a bundle of fj's first entry and the roster in force.
    let bundle = dir.path().join("before.bundle");
    ok(
        Some(&fed.cfg(fj)),
        &["audit", "prove", "0", "--out", bundle.to_str().unwrap()],
    );
    let roster_1 = fed.auth.join("rosters/0000000001.cbor");

    // The border station is revoked; the roster is applied at one node and reaches the
    // other three with its traffic; all four refuse the revoked member from then on.
    ok(
        None,
        &[
            "federation",
            "revoke",
            "--dir",
            fed.a(),
            hk,
            "--reason",
            "station closed",
        ],
    );
    assert_eq!(fed.sign_and_copy(), 2);
    fed.apply(fj);
    let spread = fed.all_pairs(&[fj, sx, gx, yn], "after the revocation");
    fed.delivered(&spread);
    for id in [fj, sx, gx, yn] {
        wait_until(
            &format!("{id} holds roster 2"),
            Duration::from_secs(30),
            || fed.status(id)["roster_serial"] == 2,
        );
        let refused = liaison(
            Some(&fed.cfg(id)),
            &[
                "send",
                "--to",
                hk,
                "--kind",
                "bus.test",
                "--body",
                "to the revoked",
            ],
        );
        assert!(!refused.status.success(), "{id} sent to a revoked member");
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(
            err.contains("revoked") || err.contains("Revoked"),
            "{id}: {err}"
        );
    }
    // The revoked station's own messages are held in its queue, not lost and not delivered.
    let held = fed.send(hk, fj, "from the revoked");
    wait_until(
        "the revoked station refused",
        Duration::from_secs(30),
        || {
            let peers = ok(Some(&fed.cfg(hk)), &["peers"]);
            peers.as_array().unwrap().iter().any(|p| {
                p["peer"] == fj
                    && p["failures"].as_u64().unwrap_or(0) > 0
                    && p["queued"][0].as_u64() == Some(1)
            })
        },
    );
    assert_ne!(fed.state(hk, &held), "delivered");

    // Every kind of key rotated, one command at each end, while messages flow.
    let mut rotations = Vec::new();
    for (id, kind) in [(sx, "signing"), (gx, "log"), (yn, "witness")] {
        let made = ok(Some(&fed.cfg(id)), &["node", "rotate-key", "--kind", kind]);
        let key = made["public_key"].as_str().unwrap().to_owned();
        ok(
            None,
            &[
                "federation",
                "rotate-key",
                "--dir",
                fed.a(),
                id,
                "--kind",
                kind,
                "--key",
                &key,
            ],
        );
        rotations.push((id, kind, key));
    }
    let renewal = ok(Some(&fed.cfg(fj)), &["node", "renew-tls"]);
    let tls = ok(
        None,
        &[
            "federation",
            "rotate-key",
            "--dir",
            fed.a(),
            fj,
            "--kind",
            "tls",
            "--csr",
            renewal["csr"].as_str().unwrap(),
            "--overlap-days",
            "0",
        ],
    );
    let during = fed.all_pairs(&[fj, sx, gx, yn], "during the rotation");
    assert_eq!(fed.sign_and_copy(), 3);
    // A rotation without overlap is applied at every node at once.
    for id in [fj, sx, gx, yn] {
        fed.apply(id);
    }
    let after = fed.all_pairs(&[fj, sx, gx, yn], "after the rotation");
    fed.delivered(&during);
    fed.delivered(&after);
    for (id, kind, key) in &rotations {
        assert_eq!(
            fed.status(id)["keys_in_use"][*kind],
            key.as_str(),
            "{id} {kind}"
        );
    }
    assert_eq!(fed.status(fj)["tls_spki_sha256"], tls["new"]);
    // Checkpoints by the new log key are cosigned by the new witness key.
    for id in [gx, yn] {
        ok(Some(&fed.cfg(id)), &["audit", "witness"]);
    }
    // The evidence from before still verifies, against the roster in force then, and every
    // log verifies whole.
    ok(
        None,
        &[
            "audit",
            "check-bundle",
            bundle.to_str().unwrap(),
            "--roster",
            roster_1.to_str().unwrap(),
            "--authority-key",
            &fed.authority_key,
        ],
    );
    for id in [fj, sx, gx, yn] {
        let v = ok(Some(&fed.cfg(id)), &["audit", "verify"]);
        assert!(v["first_problem"].is_null(), "{id}: {v}");
    }

    // sx is backed up while it runs, then lost; messages sent to it meanwhile wait at the
    // senders; restored into a new directory it takes them, each once, and keeps its inbox.
    let inbox_before = ok(Some(&fed.cfg(sx)), &["inbox", "--limit", "1000"]);
    let backup = ok(
        Some(&fed.cfg(sx)),
        &["node", "backup", "--out", "sx.backup"],
    );
    let file = backup["path"].as_str().unwrap().to_owned();
    let kept = dir.path().join("sx.backup");
    std::fs::copy(&file, &kept).unwrap();
    run.stop(sx, &fed.cfg(sx));
    std::fs::remove_dir_all(dir.path().join(sx)).unwrap();
    let waiting: Vec<(String, String)> = [fj, gx, yn]
        .iter()
        .map(|from| ((*from).to_owned(), fed.send(from, sx, "while sx was down")))
        .collect();
    let restored = dir.path().join(sx);
    ok(
        None,
        &[
            "node",
            "restore",
            "--from",
            kept.to_str().unwrap(),
            "--dir",
            restored.to_str().unwrap(),
        ],
    );
    run.start(sx, &fed.cfg(sx));
    fed.delivered(&waiting);
    let inbox = ok(Some(&fed.cfg(sx)), &["inbox", "--limit", "1000"]);
    let ids: Vec<&str> = inbox
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a message reached sx twice");
    assert_eq!(
        ids.len(),
        inbox_before.as_array().unwrap().len() + waiting.len()
    );
    let v = ok(Some(&fed.cfg(sx)), &["audit", "verify"]);
    assert!(v["first_problem"].is_null(), "{v}");
    for id in [fj, sx, gx, yn, hk] {
        ok(Some(&fed.cfg(id)), &["node", "stop"]);
    }
}
