//! Human-readable output; `--json` prints the API's JSON as it is.

use serde_json::Value;

/// Writes one line to stdout. When the reader has gone (a closed pipe: `liaison … | head`),
/// the program ends quietly with success, as other command-line tools do; any other failure
/// to write ends it with an error message.
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("liaison: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Prints `v` as JSON, or as the text `human` makes of it.
pub(crate) fn print(json: bool, v: &Value, human: impl FnOnce(&Value) -> String) {
    if json {
        outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        outln!("{}", human(v));
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("-")
}

/// `2026-11-23 11:36:16Z` from Unix ms.
pub(crate) fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (d, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, sec) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = d as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{sec:02}Z")
}

fn state(v: &Value) -> String {
    let st = &v["state"];
    match st["state"].as_str() {
        Some("in_custody") => format!("in custody of {}", s(st, "relay")),
        Some("rejected") => format!("rejected: {}", s(st, "reason")),
        Some(other) => other.replace('_', " "),
        None => "-".into(),
    }
}

pub(crate) fn inbox(v: &Value, body: bool) -> String {
    let items = v.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "inbox is empty".into();
    }
    let mut out = format!(
        "{:>5}  {:<20}  {:<14}  {:<34}  {:<8}  {:<32}  case\n",
        "seq", "received", "from", "kind", "priority", "message id"
    );
    for m in &items {
        out.push_str(&format!(
            "{:>5}  {:<20}  {:<14}  {:<34}  {:<8}  {:<32}  {}\n",
            m["inbox_seq"].to_string(),
            time(m["sent_at"].as_u64().unwrap_or(0)),
            s(m, "from"),
            s(m, "kind"),
            s(m, "priority"),
            s(m, "message_id"),
            s(m, "case_ref"),
        ));
        if body {
            out.push_str(&format!("       {}\n", body_text(m)));
        }
    }
    out.push_str("take one with: liaison ack <seq>");
    out
}

fn body_text(m: &Value) -> String {
    use base64::Engine as _;
    match m["body"].as_str() {
        None => "(body purged)".into(),
        Some(b) => match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(bytes) if action_text(&bytes).is_some() => action_text(&bytes).unwrap_or_default(),
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => format!("({} bytes of binary)", e.into_bytes().len()),
            },
            Err(_) => "(undecodable body)".into(),
        },
    }
}

/// An officer-signed action as text: handling and the document (the node verified every
/// signature before it took the message; `liaison case timeline` names who signed).
fn action_text(bytes: &[u8]) -> Option<String> {
    use liaison_protocol::action::{Action, MAX_ACTION_LEN};
    let obj = liaison_protocol::SignedObject::parse(bytes, MAX_ACTION_LEN).ok()?;
    if obj.typ() != liaison_protocol::cose::TYP_ACTION {
        return None;
    }
    let a = Action::decode(obj.payload()).ok()?;
    Some(format!(
        "[{}: {}{}{}] {}",
        a.handling.code(),
        a.handling.describe(),
        if a.sensitivity.is_empty() {
            String::new()
        } else {
            format!(", sensitive: {}", a.sensitivity.join(" "))
        },
        if a.abroad { ", releasable abroad" } else { "" },
        serde_json::to_string(&a.document).unwrap_or_default()
    ))
}

pub(crate) fn messages(v: &Value) -> String {
    let items: Vec<&Value> = v
        .as_array()
        .map(|a| a.iter().filter(|m| m["direction"] != "incoming").collect())
        .unwrap_or_default();
    if items.is_empty() {
        return "nothing sent or relayed".into();
    }
    let mut out = format!(
        "{:<20}  {:<8}  {:<14}  {:<28}  {:<8}  {:<30}  message id\n",
        "sent", "", "to", "kind", "priority", "state"
    );
    for m in items {
        out.push_str(&format!(
            "{:<20}  {:<8}  {:<14}  {:<28}  {:<8}  {:<30}  {}\n",
            time(m["sent_at"].as_u64().unwrap_or(0)),
            if m["direction"] == "relay" {
                "relayed"
            } else {
                "sent"
            },
            s(m, "to"),
            s(m, "kind"),
            s(m, "priority"),
            state(m),
            s(m, "message_id"),
        ));
    }
    out.trim_end().to_owned()
}

pub(crate) fn message(m: &Value) -> String {
    format!(
        "message  {}\ndigest   {}\nfrom     {}\nto       {}\nkind     {}\npriority {}\nsent     {}\ncase     {}\nstate    {}\nproof    {}\nbody     {}",
        s(m, "message_id"),
        s(m, "digest"),
        s(m, "from"),
        s(m, "to"),
        s(m, "kind"),
        s(m, "priority"),
        time(m["sent_at"].as_u64().unwrap_or(0)),
        m["case_ref"].as_str().unwrap_or("-"),
        state(m),
        if m["proof"].is_string() {
            "signed receipt or record held (see --json)"
        } else {
            "none yet"
        },
        body_text(m),
    )
}

pub(crate) fn peers(v: &Value) -> String {
    let items = v.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no peer queues yet".into();
    }
    let mut out = format!(
        "{:<16}  {:<9}  {:>7} {:>7} {:>7} {:>7}  {:>9}  {:>9}  {:>8}  last error\n",
        "peer", "link", "flash", "urgent", "prio", "routine", "in flight", "delivered", "failures"
    );
    for p in &items {
        let q = &p["queued"];
        let mut error = p["last_error"].as_str().unwrap_or("-").to_owned();
        if let Some(at) = p["retry_at"].as_u64() {
            error.push_str(&format!(" (dialled again at {})", time(at)));
        }
        out.push_str(&format!(
            "{:<16}  {:<9}  {:>7} {:>7} {:>7} {:>7}  {:>9}  {:>9}  {:>8}  {}\n",
            s(p, "peer"),
            if p["connected"] == true { "up" } else { "down" },
            q[3],
            q[2],
            q[1],
            q[0],
            p["in_flight"],
            p["delivered"],
            p["failures"],
            error,
        ));
    }
    out.trim_end().to_owned()
}

fn deadline(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) => time(ms),
        None => "-".into(),
    }
}

/// The answer to an officer's step.
pub(crate) fn act(v: &Value) -> String {
    let msgs = v["messages"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{} on case {}: state {}, deadline {}\nsigned action {}",
        s(v, "kind"),
        s(v, "case_ref"),
        s(v, "state").replace('_', " "),
        deadline(&v["deadline"]),
        s(v, "action"),
    );
    if msgs.is_empty() {
        out.push_str("\nrecorded on this node (nothing sent)");
    }
    for m in &msgs {
        out.push_str(&format!(
            "\nqueued message {} (first hop {})",
            s(m, "message_id"),
            s(m, "hop")
        ));
    }
    out
}

/// A list of cases.
pub(crate) fn cases(v: &Value) -> String {
    let items = v.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "no cases".into();
    }
    let mut out = format!(
        "{:<44}  {:<12}  {:<22}  {:<20}  {}\n",
        "case", "workflow", "state", "deadline", "parties"
    );
    for c in &items {
        let state = format!(
            "{}{}",
            s(c, "state").replace('_', " "),
            if c["overdue"] == true { " OVERDUE" } else { "" }
        );
        out.push_str(&format!(
            "{:<44}  {:<12}  {:<22}  {:<20}  {} ↔ {}{}\n",
            s(c, "case_ref"),
            s(c, "workflow"),
            state,
            deadline(&c["deadline"]),
            s(c, "opened_by"),
            c["counterpart"].as_str().unwrap_or("-"),
            match c["supervisor"]["node"].as_str() {
                Some(n) => format!(", supervised by {n}"),
                None => String::new(),
            }
        ));
    }
    out.trim_end().to_owned()
}

/// A case with its timeline.
pub(crate) fn timeline(v: &Value) -> String {
    let c = &v["case"];
    let mut out = format!(
        "case {} ({})\nstate {}{}   deadline {}\nopened by {} at {}   other party {}\n",
        s(c, "case_ref"),
        s(c, "workflow"),
        s(c, "state").replace('_', " "),
        if c["overdue"] == true {
            " — OVERDUE"
        } else {
            ""
        },
        deadline(&c["deadline"]),
        s(c, "opened_by"),
        time(c["opened_at"].as_u64().unwrap_or(0)),
        c["counterpart"].as_str().unwrap_or("-"),
    );
    if let Some(sup) = c["supervisor"].as_object() {
        out.push_str(&format!(
            "supervised by {} (report every {} days)\n",
            sup.get("node").and_then(Value::as_str).unwrap_or("-"),
            sup.get("interval_ms")
                .and_then(Value::as_u64)
                .map_or(0, |ms| ms / 86_400_000)
        ));
    }
    for e in v["timeline"].as_array().into_iter().flatten() {
        // What the node checked, as it words it (an older node sends the line itself).
        let verified =
            serde_json::from_value::<liaison_node::store::Verified>(e["verified"].clone())
                .map(|v| v.to_string())
                .unwrap_or_default();
        let to: Vec<&str> = e["to"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "\n{}  {:<34} {:<9} {} → {}\n    by {}\n    {}\n    state after: {}   deadline: {}\n",
            time(e["at"].as_u64().unwrap_or(0)),
            s(e, "kind"),
            s(e, "direction"),
            s(e, "from"),
            if to.is_empty() {
                "-".to_owned()
            } else {
                to.join(", ")
            },
            e["officer"].as_str().map_or_else(
                || s(e, "actor").to_owned(),
                |o| format!("{} — {o}", s(e, "actor"))
            ),
            if verified.is_empty() {
                "(node event)"
            } else {
                &verified
            },
            s(e, "state").replace('_', " "),
            deadline(&e["deadline"]),
        ));
    }
    out.trim_end().to_owned()
}

/// Annual figures.
pub(crate) fn figures(v: &Value) -> String {
    let mut out = format!("annual figures for {}\n", v["year"]);
    if let Some(f) = v["figures"].as_object() {
        for (k, n) in f {
            out.push_str(&format!("  {:<36} {n}\n", k.replace('_', " ")));
        }
    }
    out.trim_end().to_owned()
}

/// The roster in force: one line per member, then its keys.
pub(crate) fn roster(v: &Value) -> String {
    let mut out = format!(
        "roster serial {} of {}{}, issued {}, {} policy rules, bodies up to {} bytes\n",
        v["serial"],
        s(v, "federation"),
        if v["dev"] == true {
            " (DEVELOPMENT)"
        } else {
            ""
        },
        time(v["issued_at"].as_u64().unwrap_or(0)),
        v["policy_rules"],
        v["max_body_len"],
    );
    for m in v["members"].as_array().into_iter().flatten() {
        let endpoints: Vec<&str> = m["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "\n{:<14} {:<9} {} {} ({}{})\n    endpoints: {}{}\n    signing {}  log {}  witness {}  tls spki {}\n",
            s(m, "id"),
            s(m, "status"),
            s(m, "agency"),
            s(m, "name"),
            s(m, "country"),
            m["division"].as_str().map(|d| format!(", {d}")).unwrap_or_default(),
            if endpoints.is_empty() { "-".to_owned() } else { endpoints.join(", ") },
            m["via"].as_str().map(|v| format!(" (reached via {v})")).unwrap_or_default(),
            s(m, "signing_key"),
            s(m, "log_key"),
            s(m, "witness_key"),
            s(m, "tls_spki_sha256"),
        ));
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn times() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::time(1_795_520_176_000), "2026-11-24 11:36:16Z");
    }
}
