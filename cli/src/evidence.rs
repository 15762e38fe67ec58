//! The offline checkers a prosecutor, a supervising office or another country runs on a file:
//! `liaison case check` (a case evidence file) and `liaison audit check-bundle` (an evidence
//! bundle or a consistency proof), with the federation authority's key and no node.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::output;

/// The authority keys given (`--authority-key K` or `K1,K2,…`: every key the federation's
/// authority held, for files that span a handover).
fn authority_keys(given: &str) -> Result<Vec<liaison_protocol::PublicKey>> {
    given
        .split(',')
        .map(|k| {
            let key: [u8; 32] = hex::decode(k.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .context("--authority-key must be 64 hex characters (several: comma-separated)")?;
            Ok(liaison_protocol::PublicKey::from_bytes(&key)?)
        })
        .collect()
}

pub(crate) fn check_case(file: &Path, authority_key: &str, json: bool) -> Result<ExitCode> {
    use liaison_protocol::evidence::CaseEvidence;
    let authorities = authority_keys(authority_key)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let verdict = CaseEvidence::decode(&bytes)
        .map_err(liaison_protocol::evidence::EvidenceError::from)
        .and_then(|c| {
            c.verify_any(&authorities)
                .map(|checked| (c.case_ref, checked))
        });
    match verdict {
        Ok((case_ref, checked)) => {
            let proven = &checked.proven;
            let items: Vec<Value> = proven
                .iter()
                .map(|p| serde_json::json!({"node": p.node, "index": p.index, "kind": p.entry.kind, "at": p.entry.at}))
                .collect();
            let records: Vec<Value> = checked
                .records
                .iter()
                .map(|r| {
                    serde_json::json!({"officer": r.officer, "node": r.node,
                        "message_id": r.message.to_hex(), "handling": r.handling.code(),
                        "handling_text": r.handling.text(), "permission_case": r.permission})
                })
                .collect();
            let withheld: Vec<Value> = checked
                .withheld
                .iter()
                .map(|w| {
                    serde_json::json!({"message_id": w.message.to_hex(),
                        "handling": format!("H{}", w.handling), "provider": w.provider,
                        "reason": w.reason})
                })
                .collect();
            let mut codes: Vec<&str> = checked.records.iter().map(|r| r.handling.code()).collect();
            codes.extend(
                checked
                    .withheld
                    .iter()
                    .map(|w| ["H0", "H1", "H2", "H3"][usize::from(w.handling.min(3))]),
            );
            codes.sort_unstable();
            codes.dedup();
            let v = serde_json::json!({"ok": true, "case_ref": case_ref,
                "for_court": checked.for_court, "handling_codes": codes, "entries": items,
                "handover_records": records, "withheld": withheld});
            output::print(json, &v, |_| {
                let mut s = format!(
                    "case {case_ref}{}: {} entries verified; handling codes held: {}\n",
                    if checked.for_court {
                        " (file for a court)"
                    } else {
                        ""
                    },
                    proven.len(),
                    if codes.is_empty() {
                        "none".to_owned()
                    } else {
                        codes.join(", ")
                    }
                );
                for r in &checked.records {
                    s.push_str(&format!(
                        "  signed handover record verified: {} ({}), {}: {}{}\n",
                        r.officer,
                        r.node,
                        r.handling.code(),
                        r.handling.describe(),
                        r.permission.as_ref().map_or(String::new(), |c| format!(
                            "; judicial use permitted by {} (permission case {c})",
                            r.node
                        ))
                    ));
                }
                for w in &checked.withheld {
                    s.push_str(&format!(
                        "  WITHHELD: message {} from {}: {}\n",
                        w.message.to_hex(),
                        w.provider,
                        w.reason
                    ));
                }
                for p in proven {
                    s.push_str(&format!(
                        "  {}  {}/log#{:<6} {:?}\n",
                        output::time(p.entry.at),
                        p.node,
                        p.index,
                        p.entry.kind
                    ));
                }
                s.trim_end().to_owned()
            });
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let v = serde_json::json!({"ok": false, "error": e.to_string()});
            output::print(json, &v, |_| format!("CASE EVIDENCE DOES NOT VERIFY: {e}"));
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(crate) fn check_bundle(
    file: &Path,
    roster: &Path,
    authority_key: &str,
    json: bool,
) -> Result<ExitCode> {
    use liaison_protocol::evidence::Evidence;
    let authorities = authority_keys(authority_key)?;
    let roster_bytes =
        std::fs::read(roster).with_context(|| format!("reading {}", roster.display()))?;
    let roster = liaison_protocol::SignedRoster::open_any(&roster_bytes, &authorities)
        .context("the roster does not verify against the authority key")?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if let Ok(c) = liaison_protocol::evidence::Consistency::decode(&bytes) {
        return check_consistency(&c, roster.roster(), json);
    }
    let verdict = Evidence::decode(&bytes)
        .map_err(liaison_protocol::evidence::EvidenceError::from)
        .and_then(|e| e.verify(roster.roster()));
    match verdict {
        Ok(p) => {
            let v = serde_json::json!({
                "ok": true, "node": p.node, "index": p.index, "tree_size": p.size,
                "entry_kind": p.entry.kind, "entry_at": p.entry.at,
                "cosigned_by": p.cosigned_by.iter().map(|(n, t)| serde_json::json!({"witness": n, "time": t})).collect::<Vec<_>>(),
            });
            output::print(json, &v, |_| {
                format!(
                    "bundle verified: entry {} ({:?}, {}) is in {}'s log of {} entries, checkpoint signed by {}'s log key{}",
                    p.index,
                    p.entry.kind,
                    output::time(p.entry.at),
                    p.node,
                    p.size,
                    p.node,
                    if p.cosigned_by.is_empty() {
                        ", no cosignatures".to_owned()
                    } else {
                        format!(
                            ", cosigned by {}",
                            p.cosigned_by
                                .iter()
                                .map(|(n, _)| n.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let v = serde_json::json!({"ok": false, "error": e.to_string()});
            output::print(json, &v, |_| format!("BUNDLE DOES NOT VERIFY: {e}"));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `audit check-bundle` on a consistency proof (`audit prove --consistency`).
fn check_consistency(
    c: &liaison_protocol::evidence::Consistency,
    roster: &liaison_protocol::Roster,
    json: bool,
) -> Result<ExitCode> {
    match c.verify(roster) {
        Ok(p) => {
            let v = serde_json::json!({
                "ok": true, "node": p.node,
                "old_size": p.old.0, "old_root": hex::encode(p.old.1),
                "new_size": p.new.0, "new_root": hex::encode(p.new.1),
            });
            output::print(json, &v, |_| {
                format!(
                    "consistency verified: {}'s log of {} entries extends its log of {} entries (both checkpoints signed by its log key)",
                    p.node, p.new.0, p.old.0
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let v = serde_json::json!({"ok": false, "error": e.to_string()});
            output::print(json, &v, |_| format!("CONSISTENCY DOES NOT VERIFY: {e}"));
            Ok(ExitCode::FAILURE)
        }
    }
}
