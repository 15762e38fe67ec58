//! Officers enrolled at this node: enrollment with a node-signed credential, revocation.

use liaison_protocol::PublicKey;
use liaison_protocol::action::Officer;
use liaison_protocol::audit::{EntryKind, event_record};
use liaison_protocol::workflow::Role;

use super::{Cases, EnrollRequest, OfficerView};
use crate::error::NodeError;
use crate::store::OfficerRecord;

impl Cases {
    pub(crate) async fn enroll_officer(
        &self,
        req: EnrollRequest,
    ) -> Result<OfficerView, NodeError> {
        let id = liaison_protocol::action::officer_id(&req.id)?;
        let role = Role::parse(&req.role).ok_or_else(|| {
            NodeError::Invalid(format!(
                "unknown role {:?}: use one of {}",
                req.role,
                Role::ALL.map(Role::name).join(", ")
            ))
        })?;
        for (what, v) in [
            ("name", &req.name),
            ("number", &req.number),
            ("unit", &req.unit),
        ] {
            if v.trim().is_empty() || v.len() > 200 {
                return Err(NodeError::Invalid(format!(
                    "officer {what} must be 1-200 bytes"
                )));
            }
        }
        let key = <[u8; 32]>::try_from(hex::decode(req.public_key.trim()).unwrap_or_default())
            .map_err(|_| NodeError::Invalid("public key must be 64 hex digits".into()))?;
        let key = PublicKey::from_bytes(&key)?;
        let now = self.now();
        let officer = Officer {
            federation: self.bus.federation.clone(),
            node: self.bus.id.clone(),
            id: id.clone(),
            name: req.name,
            number: req.number,
            unit: req.unit,
            role,
            key,
            enrolled_at: now,
        };
        let rec = OfficerRecord {
            credential: officer
                .certify(&self.bus.keys.signing.get())
                .bytes()
                .to_vec(),
            revoked_at: None,
        };
        let stored = rec.clone();
        let enrolled = self
            .bus
            .store
            .write(now, move |t| {
                // Checked in the change that writes: two enrollments cannot both pass.
                if t.officer(&id)?.is_some_and(|old| old.revoked_at.is_none()) {
                    return Ok(Err(id));
                }
                t.put_officer(&id, &stored);
                t.log(EntryKind::KeyChanged, stored.credential.clone());
                Ok(Ok(()))
            })
            .await?;
        if let Err(id) = enrolled {
            return Err(NodeError::Invalid(format!(
                "officer {id} is already enrolled; revoke first to change the key or role"
            )));
        }
        OfficerView::of(&rec, self.bus.roster.get().roster())
    }

    pub(crate) async fn revoke_officer(&self, id: &str) -> Result<OfficerView, NodeError> {
        let now = self.now();
        let oid = id.to_owned();
        let entry = event_record(&format!("officer {id} revoked"), None, None, None);
        let revoked = self
            .bus
            .store
            .write(now, move |t| {
                let Some(mut rec) = t.officer(&oid)? else {
                    return Ok(Err(format!("no officer {oid} is enrolled here")));
                };
                if rec.revoked_at.is_some() {
                    return Ok(Err(format!("officer {oid} is already revoked")));
                }
                rec.revoked_at = Some(now);
                t.put_officer(&oid, &rec);
                t.log(EntryKind::KeyChanged, entry);
                Ok(Ok(rec))
            })
            .await?;
        let rec = revoked.map_err(NodeError::Invalid)?;
        OfficerView::of(&rec, self.bus.roster.get().roster())
    }
}
