//! The node's modules depend on each other one way (docs/architecture.md, "Inside the node"):
//!
//! ```text
//! store ← net ← bus ← cases, audit ← api ← node (the façade and composition root)
//! ```
//!
//! The bus reaches cases and audit only through the hooks they install (`bus::hook`); cases
//! and audit use the bus's crate API, never its internals (`bus::receive`, `settle`,
//! `membership`, `inbound`, `peer`). This test reads every source file and fails on any
//! `crate::` path that breaks the rule, naming the file and the path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Leaf modules anyone may use.
const LEAVES: &[&str] = &["clock", "config", "error", "identity", "locks", "roster"];

/// What each layer may name besides the leaves.
fn allowed(module: &str) -> Option<&'static [&'static str]> {
    Some(match module {
        "store" => &[],
        "net" => &[],
        "bus" => &["net", "store"],
        "cases" | "audit" => &["bus", "net", "store"],
        "api" => &["bus", "cases", "audit", "net", "store", "node"],
        // The façade, the crate root, the runner's service-manager side and the node's
        // backup as a whole compose everything.
        "node" | "lib" | "main" | "systemd" | "backup" => return None,
        // A leaf uses other leaves only (checked below).
        _ => &[],
    })
}

const BUS_INTERNALS: &[&str] = &["receive", "settle", "membership", "inbound", "peer"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`src/bus/peer.rs` → `bus`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every `crate::a::b` path in `text`, as (a, b).
fn crate_paths(text: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let seg = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let a = seg(rest);
        let b = rest
            .get(a.len()..)
            .and_then(|r| r.strip_prefix("::"))
            .map(seg)
            .unwrap_or_default();
        out.insert((a, b));
    }
    out
}

#[test]
fn modules_depend_on_each_other_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "sources not found in {}", src.display());
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let Some(allowed) = allowed(&module) else {
            continue;
        };
        for (a, b) in crate_paths(&text) {
            // Names the crate root re-exports (`crate::Node`, `crate::AuditReport` …).
            if a.is_empty() || a.starts_with(char::is_uppercase) || a == module {
                continue;
            }
            let leaf = LEAVES.contains(&a.as_str());
            if LEAVES.contains(&module.as_str()) && !leaf {
                problems.push(format!(
                    "{}: leaf {module} names crate::{a}",
                    file.display()
                ));
            } else if !leaf && !allowed.contains(&a.as_str()) {
                problems.push(format!("{}: {module} names crate::{a}", file.display()));
            } else if a == "bus" && BUS_INTERNALS.contains(&b.as_str()) {
                problems.push(format!(
                    "{}: {module} reaches into the bus's internals: crate::bus::{b}",
                    file.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_sees_a_violation() {
    // The parser finds what the rule is about (so the test above cannot pass by reading
    // nothing).
    let found = crate_paths("use crate::bus::peer::X; let y = crate::cases::Cases::new();");
    assert!(found.contains(&("bus".into(), "peer".into())));
    assert!(found.contains(&("cases".into(), "Cases".into())));
    assert_eq!(allowed("bus"), Some(&["net", "store"][..]));
    assert!(!allowed("bus").unwrap().contains(&"cases"));
}
