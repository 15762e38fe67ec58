//! Applying a newer roster: stored and logged, spread to peers, connections of members
//! no longer admitted closed.

use std::sync::Arc;

use liaison_protocol::SignedRoster;
use liaison_protocol::audit::EntryKind;
use tracing::{info, warn};

use crate::bus::Bus;
use crate::bus::peer::PeerHandle;
use crate::bus::roster_record;
use crate::error::NodeError;
use crate::net::transport::{self};

impl Bus {
    /// A ROSTER frame from a peer, or a roster applied by the operator.
    pub(crate) async fn apply_roster(self: &Arc<Self>, bytes: &[u8]) -> Result<u64, NodeError> {
        let new = SignedRoster::open(bytes, &self.authority()).map_err(|e| {
            let former = SignedRoster::open_any(bytes, &self.authorities()).ok();
            NodeError::Roster(match (former, e) {
                (Some(old), _) => format!(
                    "refused: roster serial {} is signed by a former authority key; this node has \
                     applied the handover to the key in force (serial {} in force)",
                    old.roster().serial,
                    self.roster.get().roster().serial
                ),
                (None, liaison_protocol::VerifyError::UnknownKey(kid)) => format!(
                    "refused: signed by an unknown key (kid {kid}), not the authority key in \
                     force; if the federation authority handed over to a new key, apply the \
                     roster that names it first (the authority's rosters/<serial>.cbor)"
                ),
                (None, e) => format!("refused: {e}"),
            })
        })?;
        let cur = self.roster.get();
        let (n, c) = (new.roster(), cur.roster());
        if n.federation != self.federation {
            return Err(NodeError::Roster(format!(
                "roster for federation {}",
                n.federation
            )));
        }
        if n.serial <= c.serial {
            return Ok(c.serial);
        }
        if let Some(end) = n.valid_until.filter(|end| *end <= self.now()) {
            return Err(NodeError::Roster(format!(
                "refused: roster serial {} expired at {end} (Unix ms) before it arrived; the \
                 federation authority must sign a newer one",
                n.serial
            )));
        }
        if n.dev && !self.dev_mode {
            return Err(NodeError::DevMaterial(
                "a development roster is refused outside dev mode".into(),
            ));
        }
        // A roster handing the federation over to a new authority key: every later roster
        // must be signed by that key, here and after a restart (kept with the roster).
        let handover = match n.next_authority {
            Some(k) if k == self.authority() || self.authorities().contains(&k) => {
                return Err(NodeError::Roster(
                    "refused: it hands over to an authority key already used".into(),
                ));
            }
            other => other,
        };
        let keys: Vec<[u8; 32]> = self
            .authorities()
            .iter()
            .chain(handover.iter())
            .map(liaison_protocol::PublicKey::to_bytes)
            .collect();
        let rec = roster_record(&new);
        let raw = new.bytes().to_vec();
        self.store
            .write(self.now(), move |t| {
                t.put_roster(&raw);
                if handover.is_some() {
                    t.put_authorities(&keys);
                }
                t.log(EntryKind::RosterApplied, rec);
                Ok(())
            })
            .await?;
        if let Some(k) = handover {
            self.hand_over_authority(k);
            info!(node = %self.id, serial = n.serial, authority = %hex::encode(k.to_bytes()), "the federation authority handed over to a new key");
        }
        let serial = n.serial;
        info!(node = %self.id, serial, "roster applied");
        self.roster.set(new);
        // Peers are told first: each actor offers the new roster on its connection before it
        // sends anything more, so a peer knows a key this node switches to below before it
        // sees an object signed with it.
        let peers: Vec<PeerHandle> = match self.peers.lock() {
            Ok(p) => p.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        for p in &peers {
            p.roster_changed();
        }
        self.follow_own_keys();
        // Units that joined may now be within an alert's radius: the ticker looks again.
        self.roster_changed.notify_one();
        self.drop_inactive_peers();
        Ok(serial)
    }

    /// The rosters that handed the federation over to a new authority key, oldest first (for a
    /// peer that missed one: it takes each in turn, then the roster in force).
    pub(crate) async fn handovers(&self) -> Vec<Vec<u8>> {
        let authorities = self.authorities();
        let Ok(stored) = self.store.read(|r| r.rosters()).await else {
            return Vec::new();
        };
        let mut h: Vec<SignedRoster> = stored
            .iter()
            .filter_map(|b| SignedRoster::open_any(b, &authorities).ok())
            .filter(|r| r.roster().next_authority.is_some())
            .collect();
        h.sort_by_key(|r| r.roster().serial);
        h.into_iter().map(|r| r.bytes().to_vec()).collect()
    }

    /// Switches this node's keys to the ones the roster in force names, where it holds them
    /// (`<key>.next.key.pem`): signing, log and witness keys at once, the TLS key for new
    /// handshakes (connections up keep theirs). A key it does not hold is a loud warning: it
    /// goes on with the previous one while the roster lists it.
    pub(crate) fn follow_own_keys(&self) {
        let roster = self.roster.get();
        match self.keys.follow_roster(&self.id, roster.roster()) {
            Ok(notes) => {
                for n in notes {
                    warn!(node = %self.id, "{n}");
                }
            }
            Err(e) => {
                warn!(node = %self.id, error = %e, "this node's keys no longer match the roster")
            }
        }
        let mut tls = self
            .tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (Some(material), Some(ep)) = (&tls.material, &self.endpoint) else {
            return;
        };
        match transport::follow_tls(&self.id, &tls.key_path, roster.roster(), material) {
            Ok((Some(next), _)) => {
                match transport::switch_tls(ep, &next, self.roster.clone(), &self.cfg) {
                    Ok(client) => {
                        tls.client = Some(client);
                        tls.not_after = next.not_after_ms().ok();
                        tls.material = Some(next);
                        info!(node = %self.id, "TLS key rotated: new handshakes use the roster's certificate");
                    }
                    Err(e) => {
                        warn!(node = %self.id, error = %e, "cannot switch to the rotated TLS key")
                    }
                }
            }
            Ok((None, note)) => {
                if let Some(n) = note {
                    warn!(node = %self.id, "{n}");
                }
            }
            Err(e) => {
                warn!(node = %self.id, error = %e, "this node's TLS key no longer matches the roster");
            }
        }
    }

    /// Closes inbound connections whose peer the roster in force no longer admits: a member
    /// suspended, revoked or gone, or a TLS key no longer pinned (rotated).
    pub(crate) fn drop_inactive_peers(&self) {
        let mut inbound = match self.inbound.lock() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        inbound.retain(|(id, conn)| {
            let ok = transport::recheck(conn, &self.roster, Some(id.as_str())).is_ok();
            if !ok {
                conn.close(1u32.into(), b"no longer an active member");
            }
            ok && conn.close_reason().is_none()
        });
    }
}
