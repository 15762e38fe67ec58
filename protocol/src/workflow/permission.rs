//! The provider's permission, asked by the holder (`opened_by`) of the provider
//! (`counterpart`): H2 onward passing to a named recipient, or H1 use in judicial proceedings.

use super::{
    Case, Detail, PermissionDetail, PermissionUse, State, Step, Workflow, WorkflowError, bad,
    counterpart, direction, existing, expect_state, fresh, not_local, open, opt_text, text,
};
use crate::document::Document;
use crate::ids::NodeId;

/// The message (32 hex id) and the recipient an onward-passing permission case is about
/// (None for other cases, and for a permission of judicial use).
pub fn permission_subject(case: &Case) -> Option<(&str, &str)> {
    match &case.detail {
        Detail::Permission(p) if p.use_ == PermissionUse::Onward => {
            Some((&p.message_id, &p.recipient))
        }
        _ => None,
    }
}

/// What a `permission.request` document asks: the use, and the recipient (onward only).
/// Refuses a judicial request naming a recipient, an onward one without, and other uses.
pub fn permission_use(doc: &Document) -> Result<(PermissionUse, Option<&str>), WorkflowError> {
    let recipient = doc.text("recipient");
    match (doc.text("use"), recipient) {
        (None | Some("onward"), Some(r)) => Ok((PermissionUse::Onward, Some(r))),
        (None | Some("onward"), None) => Err(bad(
            "recipient",
            "an onward-passing permission names the node it would be passed to",
        )),
        (Some("judicial"), None) => Ok((PermissionUse::Judicial, None)),
        (Some("judicial"), Some(_)) => Err(bad(
            "recipient",
            "a permission of judicial use names no recipient: leave it out",
        )),
        (Some(other), _) => Err(bad(
            "use",
            format!(
                "{} is not a use: onward or judicial",
                super::catalog::quoted(other)
            ),
        )),
    }
}

pub(super) fn apply(case: Option<&Case>, step: &Step<'_>) -> Result<Case, WorkflowError> {
    let doc = step.doc;
    if step.kind == "permission.request" {
        fresh(case, step)?;
        not_local(step)?;
        let id = doc.text("message_id").unwrap_or_default();
        if id.len() != 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(
                "message_id",
                format!(
                    "{} is not a message id (32 lowercase hex characters)",
                    super::catalog::quoted(id)
                ),
            ));
        }
        let (use_, recipient) = permission_use(doc)?;
        if let Some(recipient) = recipient {
            let rid = NodeId::new(recipient).map_err(|e| bad("recipient", e.to_string()))?;
            if &rid == step.from || &rid == step.to {
                return Err(bad(
                    "recipient",
                    format!("{rid} already holds the message: ask only for a third node"),
                ));
            }
        }
        return Ok(open(
            step,
            Workflow::Permission,
            State::Requested,
            Some(step.to.clone()),
            Detail::Permission(PermissionDetail {
                message_id: id.to_owned(),
                use_,
                recipient: recipient.unwrap_or_default().to_owned(),
                request: step.action.to_hex(),
                purpose: text(doc, "purpose"),
                conditions: None,
            }),
        ));
    }
    let c = existing(
        case,
        step,
        "answers a permission request that was never sent",
    )?;
    let Detail::Permission(p) = &c.detail else {
        return Err(super::rule(step, "the case has no permission data"));
    };
    let provider = counterpart(c, step)?;
    direction(
        c,
        step,
        provider,
        &c.opened_by,
        "only the provider decides, to the holder",
    )?;
    expect_state(c, step, &[State::Requested])?;
    // The answer names the request it answers (its action digest).
    if !p.request.is_empty() && doc.text("request") != Some(p.request.as_str()) {
        return Err(bad(
            "request",
            format!(
                "the answer must name the request of case {} by its action digest {}",
                c.case_ref, p.request
            ),
        ));
    }
    let mut next = c.clone();
    let mut det = p.clone();
    match step.kind {
        "permission.grant" => {
            next.state = State::Granted;
            det.conditions = opt_text(doc, "conditions");
        }
        "permission.deny" => next.state = State::Denied,
        _ => return Err(WorkflowError::UnknownKind(step.kind.to_owned())),
    }
    next.detail = Detail::Permission(det);
    Ok(next)
}
