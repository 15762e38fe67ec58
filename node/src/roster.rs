//! The roster in force, shared by the TLS verifiers, the router and the inbound checks.

use std::sync::{Arc, RwLock};

use liaison_protocol::SignedRoster;

/// A shared, swappable roster.
#[derive(Debug, Clone)]
pub struct RosterCell(Arc<RwLock<Arc<SignedRoster>>>);

impl RosterCell {
    /// Wraps the initial roster.
    pub fn new(r: SignedRoster) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(r))))
    }

    /// The roster in force.
    pub fn get(&self) -> Arc<SignedRoster> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the roster.
    pub fn set(&self, r: SignedRoster) {
        let r = Arc::new(r);
        match self.0.write() {
            Ok(mut g) => *g = r,
            Err(p) => *p.into_inner() = r,
        }
    }
}
