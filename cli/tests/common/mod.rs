//! What the CLI tests share: running the `liaison` binary, reading its JSON, starting node
//! processes and waiting for a condition.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_liaison");

/// Runs `liaison [--config CFG] ARGS…`.
pub fn liaison(config: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    if let Some(cfg) = config {
        c.arg("--config").arg(cfg);
    }
    c.args(args).output().unwrap()
}

/// The JSON a successful run printed.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Node processes, killed when dropped.
pub struct Nodes(pub Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `liaison node start` for `cfg` (`extra` before `--config`: e.g. `--dev`) and waits
/// until it answers on its API.
pub fn start_node(cfg: &Path, extra: &[&str]) -> Child {
    let child = Command::new(BIN)
        .args(["node", "start"])
        .args(extra)
        .arg("--config")
        .arg(cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), || {
        liaison(Some(cfg), &["status", "--json"]).status.success()
    });
    child
}

/// Starts a node process for each config and waits until each answers on its API.
pub fn start_nodes(cfgs: &[&Path], extra: &[&str]) -> Nodes {
    let mut nodes = Nodes(Vec::new());
    for cfg in cfgs {
        nodes.0.push(start_node(cfg, extra));
    }
    nodes
}

/// Polls `f` until it is true; panics after `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node enrolled as docs/operations.md §2–3 say: `liaison init` in `node_dir`, the authority's
/// `federation add-member` from the files it wrote, the certificate and the CA copied back.
pub struct Enrol<'a> {
    /// The authority's directory.
    pub auth: &'a Path,
    /// The authority key (hex).
    pub authority_key: &'a str,
    /// The node id.
    pub id: &'a str,
    /// Its agency kind.
    pub agency: &'a str,
    /// Where it listens (`host:port`), also its endpoint.
    pub listen: &'a str,
    /// Its location, `lat,lon`.
    pub location: Option<&'a str>,
}

impl Enrol<'_> {
    /// Runs both ends; returns what `add-member` printed.
    pub fn run(&self, node_dir: &Path) -> serde_json::Value {
        json(&liaison(
            None,
            &[
                "init",
                "--id",
                self.id,
                "--federation",
                "cn-atip",
                "--listen",
                self.listen,
                "--authority-key",
                self.authority_key,
                "--dir",
                node_dir.to_str().unwrap(),
                "--json",
            ],
        ));
        let request = node_dir.join("join-request.json");
        let csr = node_dir.join("tls.csr.pem");
        let mut args = vec![
            "federation",
            "add-member",
            "--dir",
            self.auth.to_str().unwrap(),
            "--request",
            request.to_str().unwrap(),
            "--csr",
            csr.to_str().unwrap(),
            "--agency",
            self.agency,
            "--name",
            self.id,
            "--country",
            "CHN",
            "--endpoint",
            self.listen,
            "--json",
        ];
        if let Some(l) = self.location {
            args.extend(["--location", l]);
        }
        let added = json(&liaison(None, &args));
        std::fs::copy(
            added["certificate"].as_str().unwrap(),
            node_dir.join("tls.cert.pem"),
        )
        .unwrap();
        std::fs::copy(self.auth.join("ca.pem"), node_dir.join("ca.pem")).unwrap();
        added
    }
}
