//! The federation roster (docs/formats.md §5), signed by the federation authority: who the members
//! are, their keys and endpoints, relays, locations, status, and the policy of which agency
//! kinds may send which message kinds to which.

use ciborium::Value;
use ed25519_dalek::SigningKey;

use crate::cbor::{self, MapBuilder, MapReader};
use crate::cose::{SignedObject, TYP_ROSTER};
use crate::error::{DecodeError, VerifyError};
use crate::ids::{NodeId, check_id};
use crate::keys::{Kid, PublicKey};

/// Largest encoded roster.
pub const MAX_ROSTER_LEN: usize = 1024 * 1024;
/// Roster format version.
pub const ROSTER_VERSION: u64 = 1;

/// A member's standing in the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// May connect and exchange messages.
    Active = 0,
    /// Temporarily refused.
    Suspended = 1,
    /// Refused for good.
    Revoked = 2,
}

impl std::fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
        })
    }
}

/// A point on the map, in millionths of a degree (no floats on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// Latitude × 10⁶.
    pub lat_e6: i64,
    /// Longitude × 10⁶.
    pub lon_e6: i64,
}

impl Location {
    /// Great-circle distance in metres (haversine, mean Earth radius).
    pub fn distance_m(&self, other: &Self) -> u64 {
        const R: f64 = 6_371_008.8;
        let rad = |e6: i64| (e6 as f64 / 1e6).to_radians();
        let (la1, lo1, la2, lo2) = (
            rad(self.lat_e6),
            rad(self.lon_e6),
            rad(other.lat_e6),
            rad(other.lon_e6),
        );
        let a = ((la2 - la1) / 2.0).sin().powi(2)
            + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
        (2.0 * R * a.sqrt().asin()).round() as u64
    }
}

/// Where a roster stands against its validity (key 9, `valid_until`) at a time, with a grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "standing")]
pub enum Standing {
    /// Within its validity, or it has none.
    Valid,
    /// Past its validity, within the grace: traffic goes on, with a warning.
    InGrace {
        /// When its validity ended, Unix ms.
        expired_at: u64,
        /// When the grace ends, Unix ms.
        stops_at: u64,
    },
    /// Past the grace: no new traffic until a newer roster is applied.
    Expired {
        /// When its validity ended, Unix ms.
        expired_at: u64,
        /// When the grace ended, Unix ms.
        stopped_at: u64,
    },
}

/// One member node of the federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub id: NodeId,
    /// Agency kind: `joint_meeting`, `public_security`, `marriage_registry`, `border_station`,
    /// `foreign_counterpart`, …
    pub agency: String,
    /// Human-readable name.
    pub name: String,
    /// ISO 3166 alpha-3 country.
    pub country: String,
    /// Administrative division code (GB/T 2260 in China).
    pub division: Option<String>,
    /// Node signing key (envelopes, receipts).
    pub signing_key: PublicKey,
    /// Audit log key (checkpoints).
    pub log_key: PublicKey,
    /// Witness key (cosignatures).
    pub witness_key: PublicKey,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the node's TLS certificate.
    pub tls_spki_sha256: [u8; 32],
    /// Where the node listens (`host:port`).
    pub endpoints: Vec<String>,
    /// The relay through which this member is reached, if not directly.
    pub via: Option<NodeId>,
    /// Location, for alert radius.
    pub location: Option<Location>,
    /// Active, suspended or revoked.
    pub status: MemberStatus,
    /// The keys this member held before its latest rotation, still accepted beside the new
    /// ones while a roster lists them (protocol.md §5.3).
    pub previous: Option<PreviousKeys>,
    /// The member's TLS certificate (DER), as the federation CA issued it, so a node picks up
    /// its renewed certificate from the roster.
    pub tls_cert: Option<Vec<u8>>,
}

/// Keys a member held before it rotated them: each still verifies what it signed, and still
/// opens a TLS handshake, as long as a roster lists it; the authority's tools drop them from
/// the first roster signed after `until_ms`. The member itself signs only with its current
/// keys from the moment it holds a roster naming them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreviousKeys {
    /// Former node signing key.
    pub signing_key: Option<PublicKey>,
    /// Former audit log key.
    pub log_key: Option<PublicKey>,
    /// Former witness key.
    pub witness_key: Option<PublicKey>,
    /// Former TLS key (SPKI SHA-256).
    pub tls_spki_sha256: Option<[u8; 32]>,
    /// When the overlap ends (Unix ms).
    pub until_ms: u64,
}

impl PreviousKeys {
    fn to_value(&self) -> Value {
        let key = |k: &Option<PublicKey>| k.map(|k| Value::Bytes(k.to_bytes().to_vec()));
        MapBuilder::new()
            .put_opt(1, key(&self.signing_key))
            .put_opt(2, key(&self.log_key))
            .put_opt(3, key(&self.witness_key))
            .put_opt(4, self.tls_spki_sha256.map(|s| Value::Bytes(s.to_vec())))
            .put(5, self.until_ms)
            .build()
    }

    fn from_value(v: Value) -> Result<Self, VerifyError> {
        let mut m = MapReader::new("previous keys", v)?;
        let key = |b: Option<[u8; 32]>| b.map(|b| PublicKey::from_bytes(&b)).transpose();
        let p = Self {
            signing_key: key(m.opt_fixed(1)?)?,
            log_key: key(m.opt_fixed(2)?)?,
            witness_key: key(m.opt_fixed(3)?)?,
            tls_spki_sha256: m.opt_fixed(4)?,
            until_ms: m.uint(5)?,
        };
        m.finish()?;
        Ok(p)
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.signing_key.is_none()
            && self.log_key.is_none()
            && self.witness_key.is_none()
            && self.tls_spki_sha256.is_none()
    }
}

impl Member {
    /// Whether the member may connect and exchange messages.
    pub fn is_active(&self) -> bool {
        self.status == MemberStatus::Active
    }

    fn prev(&self) -> Option<&PreviousKeys> {
        self.previous.as_ref()
    }

    /// The node signing keys that verify for this member: the current one, then a previous.
    pub fn signing_keys(&self) -> impl Iterator<Item = &PublicKey> {
        std::iter::once(&self.signing_key).chain(self.prev().and_then(|p| p.signing_key.as_ref()))
    }

    /// The log keys that verify this member's checkpoints: the current one, then a previous.
    pub fn log_keys(&self) -> impl Iterator<Item = &PublicKey> {
        std::iter::once(&self.log_key).chain(self.prev().and_then(|p| p.log_key.as_ref()))
    }

    /// The witness keys that verify this member's cosignatures: current, then previous.
    pub fn witness_keys(&self) -> impl Iterator<Item = &PublicKey> {
        std::iter::once(&self.witness_key).chain(self.prev().and_then(|p| p.witness_key.as_ref()))
    }

    /// The TLS keys (SPKI SHA-256) a handshake of this member may present.
    pub fn tls_pins(&self) -> impl Iterator<Item = &[u8; 32]> {
        std::iter::once(&self.tls_spki_sha256)
            .chain(self.prev().and_then(|p| p.tls_spki_sha256.as_ref()))
    }

    fn to_value(&self) -> Value {
        MapBuilder::new()
            .put(1, self.id.as_str())
            .put(2, self.agency.as_str())
            .put(3, self.name.as_str())
            .put(4, self.country.as_str())
            .put_opt(5, self.division.as_deref())
            .put(6, Value::Bytes(self.signing_key.to_bytes().to_vec()))
            .put(7, Value::Bytes(self.log_key.to_bytes().to_vec()))
            .put(8, Value::Bytes(self.witness_key.to_bytes().to_vec()))
            .put(9, Value::Bytes(self.tls_spki_sha256.to_vec()))
            .put(10, cbor::text_array(&self.endpoints))
            .put_opt(11, self.via.as_ref().map(|v| v.as_str()))
            .put_opt(
                12,
                self.location
                    .map(|l| Value::Array(vec![Value::from(l.lat_e6), Value::from(l.lon_e6)])),
            )
            .put(13, self.status as u64)
            .put_opt(14, self.previous.as_ref().map(PreviousKeys::to_value))
            .put_opt(15, self.tls_cert.as_ref().map(|c| Value::Bytes(c.clone())))
            .build()
    }

    fn from_value(v: Value) -> Result<Self, VerifyError> {
        const OBJ: &str = "roster member";
        let mut m = MapReader::new(OBJ, v)?;
        let id = NodeId::new(m.text(1)?)?;
        let agency = m.text(2)?;
        check_id("agency kind", &agency.replace('_', "-"))?;
        let name = m.text(3)?;
        let country = m.text(4)?;
        if country.len() != 3 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(DecodeError::Field {
                object: OBJ,
                key: 4,
                problem: "country must be ISO 3166 alpha-3",
            }
            .into());
        }
        let division = m.opt_text(5)?;
        let signing_key = PublicKey::from_bytes(&m.fixed(6)?)?;
        let log_key = PublicKey::from_bytes(&m.fixed(7)?)?;
        let witness_key = PublicKey::from_bytes(&m.fixed(8)?)?;
        let tls_spki_sha256 = m.fixed(9)?;
        let endpoints = m
            .array(10)?
            .into_iter()
            .map(|e| {
                cbor::as_text(e).ok_or(DecodeError::Field {
                    object: OBJ,
                    key: 10,
                    problem: "endpoints must be text",
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let via = m.opt_text(11)?.map(NodeId::new).transpose()?;
        let location = match m.opt_array(12)? {
            None => None,
            Some(a) => {
                let pair: Option<[Value; 2]> = a.try_into().ok();
                let loc = pair.and_then(|[la, lo]| {
                    let la = i64::try_from(i128::from(la.as_integer()?)).ok()?;
                    let lo = i64::try_from(i128::from(lo.as_integer()?)).ok()?;
                    ((-90_000_000..=90_000_000).contains(&la)
                        && (-180_000_000..=180_000_000).contains(&lo))
                    .then_some(Location {
                        lat_e6: la,
                        lon_e6: lo,
                    })
                });
                Some(loc.ok_or(DecodeError::Field {
                    object: OBJ,
                    key: 12,
                    problem: "location must be [lat×10⁶, lon×10⁶] in range",
                })?)
            }
        };
        let status = match m.uint(13)? {
            0 => MemberStatus::Active,
            1 => MemberStatus::Suspended,
            2 => MemberStatus::Revoked,
            _ => {
                return Err(DecodeError::Field {
                    object: OBJ,
                    key: 13,
                    problem: "status must be 0, 1 or 2",
                }
                .into());
            }
        };
        let previous = m.opt_value(14).map(PreviousKeys::from_value).transpose()?;
        let tls_cert = m.opt_bytes(15)?;
        m.finish()?;
        Ok(Self {
            id,
            agency,
            name,
            country,
            division,
            signing_key,
            log_key,
            witness_key,
            tls_spki_sha256,
            endpoints,
            via,
            location,
            status,
            previous,
            tls_cert,
        })
    }
}

/// One policy rule: agencies of kind `from` may send messages whose kind matches one of
/// `kinds` to agencies of kind `to`. `*` matches any agency kind; a kind pattern is exact,
/// `prefix.*`, or `*`. Unless `abroad` is true the rule applies only within one country.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// Sender agency kind or `*`.
    pub from: String,
    /// Recipient agency kind or `*`.
    pub to: String,
    /// Message kind patterns.
    pub kinds: Vec<String>,
    /// Whether the rule also allows sending to another country.
    pub abroad: bool,
}

impl Rule {
    fn matches(&self, from: &Member, to: &Member, kind: &str) -> bool {
        let agency_ok = |pat: &str, agency: &str| pat == "*" || pat == agency;
        agency_ok(&self.from, &from.agency)
            && agency_ok(&self.to, &to.agency)
            && (self.abroad || from.country == to.country)
            && self.kinds.iter().any(|p| kind_matches(p, kind))
    }

    fn to_value(&self) -> Value {
        MapBuilder::new()
            .put(1, self.from.as_str())
            .put(2, self.to.as_str())
            .put(3, cbor::text_array(&self.kinds))
            .put_opt(4, self.abroad.then_some(true))
            .build()
    }

    fn from_value(v: Value) -> Result<Self, DecodeError> {
        const OBJ: &str = "policy rule";
        let mut m = MapReader::new(OBJ, v)?;
        let from = m.text(1)?;
        let to = m.text(2)?;
        let kinds = m
            .array(3)?
            .into_iter()
            .map(|k| {
                cbor::as_text(k).ok_or(DecodeError::Field {
                    object: OBJ,
                    key: 3,
                    problem: "kind patterns must be text",
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let abroad = match m.opt_bool(4)? {
            None => false,
            Some(true) => true,
            Some(false) => {
                return Err(DecodeError::Field {
                    object: OBJ,
                    key: 4,
                    problem: "omit instead of false",
                });
            }
        };
        m.finish()?;
        Ok(Self {
            from,
            to,
            kinds,
            abroad,
        })
    }
}

fn kind_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// Why the roster refuses a message or a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a member of this federation.
    #[error("{0} is not a member of the federation")]
    UnknownMember(NodeId),
    /// Suspended or revoked.
    #[error("{0} is {1} in the roster (the federation authority's decision)")]
    NotActive(NodeId, MemberStatus),
    /// No rule allows this kind between these agencies.
    #[error("policy forbids {kind} from {from} ({from_agency}) to {to} ({to_agency})")]
    Forbidden {
        kind: String,
        from: NodeId,
        from_agency: String,
        to: NodeId,
        to_agency: String,
    },
    /// The recipient is reached only through a relay that is itself unreachable.
    #[error("no route to {0}")]
    NoRoute(NodeId),
}

/// The roster's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    /// Federation id.
    pub federation: String,
    /// Serial number; a node accepts only higher serials.
    pub serial: u64,
    /// Issued at, Unix ms.
    pub issued_at: u64,
    /// Valid until, Unix ms (the authority's `sign --valid-days`); None: no end.
    pub valid_until: Option<u64>,
    /// Members.
    pub members: Vec<Member>,
    /// Policy rules.
    pub rules: Vec<Rule>,
    /// Largest message body, bytes.
    pub max_body_len: u64,
    /// A development federation (generated by certs-dev): refused outside dev mode.
    pub dev: bool,
    /// The key the authority hands the federation over to: this roster is signed by the key
    /// in force, every later one MUST be signed by this one (protocol.md §4.5, key 10).
    pub next_authority: Option<PublicKey>,
}

impl Roster {
    /// Encodes the roster payload.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(
            &MapBuilder::new()
                .put(1, ROSTER_VERSION)
                .put(2, self.federation.as_str())
                .put(3, self.serial)
                .put(4, self.issued_at)
                .put(
                    5,
                    Value::Array(self.members.iter().map(Member::to_value).collect()),
                )
                .put(
                    6,
                    Value::Array(self.rules.iter().map(Rule::to_value).collect()),
                )
                .put(7, self.max_body_len)
                .put_opt(8, self.dev.then_some(true))
                .put_opt(9, self.valid_until)
                .put_opt(
                    10,
                    self.next_authority
                        .map(|k| Value::Bytes(k.to_bytes().to_vec())),
                )
                .build(),
        )
    }

    /// Where this roster stands at `now` (Unix ms) with a grace of `grace_ms` after its
    /// validity.
    pub fn standing(&self, now: u64, grace_ms: u64) -> Standing {
        match self.valid_until {
            Some(end) if now >= end => {
                let stops = end.saturating_add(grace_ms);
                if now < stops {
                    Standing::InGrace {
                        expired_at: end,
                        stops_at: stops,
                    }
                } else {
                    Standing::Expired {
                        expired_at: end,
                        stopped_at: stops,
                    }
                }
            }
            _ => Standing::Valid,
        }
    }

    /// Decodes an unsigned roster payload strictly (the authority's draft; a signed roster is
    /// opened with [`SignedRoster::open`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, VerifyError> {
        const OBJ: &str = "roster";
        let v = cbor::decode_strict(bytes, MAX_ROSTER_LEN, None)?;
        let mut m = MapReader::new(OBJ, v)?;
        if m.uint(1)? != ROSTER_VERSION {
            return Err(DecodeError::Field {
                object: OBJ,
                key: 1,
                problem: "unsupported roster version",
            }
            .into());
        }
        let federation = m.text(2)?;
        check_id("federation id", &federation)?;
        let serial = m.uint(3)?;
        let issued_at = m.uint(4)?;
        let members = m
            .array(5)?
            .into_iter()
            .map(Member::from_value)
            .collect::<Result<Vec<_>, _>>()?;
        let rules = m
            .array(6)?
            .into_iter()
            .map(Rule::from_value)
            .collect::<Result<Vec<_>, _>>()?;
        let max_body_len = m.uint(7)?;
        let dev = match m.opt_bool(8)? {
            None => false,
            Some(true) => true,
            Some(false) => {
                return Err(DecodeError::Field {
                    object: OBJ,
                    key: 8,
                    problem: "omit instead of false",
                }
                .into());
            }
        };
        let valid_until = m.opt_uint(9)?;
        if valid_until.is_some_and(|v| v <= issued_at) {
            return Err(DecodeError::Field {
                object: OBJ,
                key: 9,
                problem: "valid until a time before it was issued",
            }
            .into());
        }
        let next_authority = m
            .opt_fixed::<32>(10)?
            .map(|k| PublicKey::from_bytes(&k))
            .transpose()?;
        m.finish()?;
        let roster = Self {
            federation,
            serial,
            issued_at,
            valid_until,
            members,
            rules,
            max_body_len,
            dev,
            next_authority,
        };
        roster.check_consistency()?;
        Ok(roster)
    }

    fn check_consistency(&self) -> Result<(), DecodeError> {
        let bad = |problem: String| DecodeError::Invalid {
            what: "roster",
            problem,
        };
        for (i, m) in self.members.iter().enumerate() {
            if self.members[..i].iter().any(|o| o.id == m.id) {
                return Err(bad(format!("member {} listed twice", m.id)));
            }
            // No key, current or previous, of one member is another's (nor one of its own
            // kinds reused for another kind).
            let keys = |x: &Member| -> Vec<[u8; 32]> {
                x.signing_keys()
                    .chain(x.log_keys())
                    .chain(x.witness_keys())
                    .map(PublicKey::to_bytes)
                    .collect()
            };
            let mine = keys(m);
            if self.members[..i].iter().any(|o| {
                keys(o).iter().any(|k| mine.contains(k))
                    || o.tls_pins().any(|p| m.tls_pins().any(|q| p == q))
            }) {
                return Err(bad(format!("member {} reuses another member's key", m.id)));
            }
            if m.previous.as_ref().is_some_and(PreviousKeys::is_empty) {
                return Err(bad(format!(
                    "member {} lists previous keys without a key",
                    m.id
                )));
            }
            if let Some(via) = &m.via {
                match self.member(via) {
                    None => return Err(bad(format!("{} is reached via unknown {via}", m.id))),
                    Some(r) if r.via.is_some() => {
                        return Err(bad(format!("relay {via} of {} is itself relayed", m.id)));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Signs the roster with the federation authority key.
    pub fn sign(&self, authority: &SigningKey) -> SignedRoster {
        SignedRoster {
            signed: SignedObject::sign(TYP_ROSTER, self.encode(), authority),
            roster: self.clone(),
        }
    }

    /// The member with this id.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.iter().find(|m| &m.id == id)
    }

    /// The active member with this id, or why not.
    pub fn active_member(&self, id: &NodeId) -> Result<&Member, PolicyError> {
        let m = self
            .member(id)
            .ok_or_else(|| PolicyError::UnknownMember(id.clone()))?;
        if m.is_active() {
            Ok(m)
        } else {
            Err(PolicyError::NotActive(id.clone(), m.status))
        }
    }

    /// The member whose node signing key has this kid, with the key.
    /// A previous key (still listed after a rotation) counts as the member's.
    pub fn signer(&self, kid: &Kid) -> Option<(NodeId, PublicKey)> {
        self.members.iter().find_map(|m| {
            m.signing_keys()
                .find(|k| &k.kid() == kid)
                .map(|k| (m.id.clone(), *k))
        })
    }

    /// The member whose TLS key (current, or previous while listed) has this SPKI hash.
    pub fn by_tls_key(&self, spki_sha256: &[u8; 32]) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.tls_pins().any(|p| p == spki_sha256))
    }

    /// Whether the policy lets `from` send a message of `kind` to `to`; both must be active.
    pub fn check_send(&self, from: &NodeId, to: &NodeId, kind: &str) -> Result<(), PolicyError> {
        let f = self.active_member(from)?;
        let t = self.active_member(to)?;
        if self.rules.iter().any(|r| r.matches(f, t, kind)) {
            Ok(())
        } else {
            Err(PolicyError::Forbidden {
                kind: kind.to_owned(),
                from: from.clone(),
                from_agency: f.agency.clone(),
                to: to.clone(),
                to_agency: t.agency.clone(),
            })
        }
    }

    /// The next hop from `me` towards `to`: `to` itself when directly reachable, otherwise the
    /// relay. A member behind a relay sends everything through its relay.
    pub fn next_hop(&self, me: &NodeId, to: &NodeId) -> Result<NodeId, PolicyError> {
        let target = self.active_member(to)?;
        let mine = self.member(me).and_then(|m| m.via.clone());
        let hop = match (&target.via, mine) {
            // I am the relay of the target, or the target is my relay: direct.
            (Some(via), _) if via == me => to.clone(),
            (_, Some(my_relay)) if &my_relay == to => to.clone(),
            (_, Some(my_relay)) => my_relay,
            (Some(via), None) => via.clone(),
            (None, None) => to.clone(),
        };
        self.active_member(&hop)
            .map_err(|_| PolicyError::NoRoute(to.clone()))?;
        Ok(hop)
    }
}

impl Roster {
    /// The hops a message takes from `from` to `to`, both included (at most four nodes:
    /// sender, its relay, the recipient's relay, recipient).
    pub fn path(&self, from: &NodeId, to: &NodeId) -> Result<Vec<NodeId>, PolicyError> {
        let mut path = vec![from.clone()];
        let mut at = from.clone();
        while &at != to {
            let next = self.next_hop(&at, to)?;
            if path.contains(&next) || path.len() >= 4 {
                return Err(PolicyError::NoRoute(to.clone()));
            }
            path.push(next.clone());
            at = next;
        }
        Ok(path)
    }
}

/// A roster whose authority signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRoster {
    signed: SignedObject,
    roster: Roster,
}

impl SignedRoster {
    /// Parses and verifies a roster against the pinned federation authority key.
    pub fn open(bytes: &[u8], authority: &PublicKey) -> Result<Self, VerifyError> {
        let signed = SignedObject::parse(bytes, MAX_ROSTER_LEN)?;
        signed.expect_typ(TYP_ROSTER)?;
        signed.verify_with(authority)?;
        let roster = Roster::decode(signed.payload())?;
        Ok(Self { signed, roster })
    }

    /// Opens a roster signed by any of `authorities` (an offline checker given the keys the
    /// federation's authority held over time, protocol.md §4.5 key 10): the one its kid names.
    pub fn open_any(bytes: &[u8], authorities: &[PublicKey]) -> Result<Self, VerifyError> {
        let signed = SignedObject::parse(bytes, MAX_ROSTER_LEN)?;
        let key = authorities
            .iter()
            .find(|k| k.kid() == signed.kid())
            .ok_or_else(|| VerifyError::UnknownKey(hex::encode(signed.kid())))?;
        Self::open(bytes, key)
    }

    /// The kid of the key that signed it.
    pub fn signer_kid(&self) -> Kid {
        self.signed.kid()
    }

    /// The verified roster.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// The encoded, signed roster.
    pub fn bytes(&self) -> &[u8] {
        self.signed.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        PublicKey::from(&SigningKey::from_bytes(&[seed; 32]))
    }

    fn member(id: &str, agency: &str, country: &str, seed: u8, via: Option<&str>) -> Member {
        Member {
            id: NodeId::new(id).unwrap(),
            agency: agency.into(),
            name: id.into(),
            country: country.into(),
            division: None,
            signing_key: key(seed),
            log_key: key(seed + 100),
            witness_key: key(seed + 150),
            tls_spki_sha256: [seed; 32],
            endpoints: vec!["127.0.0.1:4000".into()],
            via: via.map(|v| NodeId::new(v).unwrap()),
            location: Some(Location {
                lat_e6: 26_074_500,
                lon_e6: 119_296_500,
            }),
            status: MemberStatus::Active,
            previous: None,
            tls_cert: None,
        }
    }

    pub(crate) fn sample() -> Roster {
        Roster {
            federation: "cn-atip-demo".into(),
            serial: 1,
            issued_at: 1,
            valid_until: None,
            members: vec![
                member("cn-35-psb", "public_security", "CHN", 1, None),
                member("cn-5325-hekou", "border_station", "CHN", 2, None),
                member(
                    "vn-laocai-bg",
                    "foreign_counterpart",
                    "VNM",
                    3,
                    Some("cn-5325-hekou"),
                ),
            ],
            rules: vec![
                Rule {
                    from: "*".into(),
                    to: "*".into(),
                    kinds: vec!["bus.*".into()],
                    abroad: true,
                },
                Rule {
                    from: "public_security".into(),
                    to: "public_security".into(),
                    kinds: vec!["assist.*".into()],
                    abroad: false,
                },
            ],
            max_body_len: 1 << 20,
            dev: true,
            next_authority: None,
        }
    }

    #[test]
    fn a_roster_past_its_validity_has_a_grace_then_stops() {
        let mut r = sample();
        assert_eq!(r.standing(u64::MAX, 10), Standing::Valid);
        r.valid_until = Some(1_000);
        assert_eq!(r.standing(999, 10), Standing::Valid);
        assert_eq!(
            r.standing(1_000, 10),
            Standing::InGrace {
                expired_at: 1_000,
                stops_at: 1_010
            }
        );
        assert_eq!(
            r.standing(1_010, 10),
            Standing::Expired {
                expired_at: 1_000,
                stopped_at: 1_010
            }
        );
        // The field goes on the wire and back; a validity before the issue is refused.
        let back = Roster::decode(&r.encode()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.valid_until, Some(1_000));
        r.valid_until = Some(r.issued_at);
        assert!(Roster::decode(&r.encode()).is_err());
    }

    #[test]
    fn sign_open_round_trip() {
        let auth = SigningKey::from_bytes(&[42; 32]);
        let signed = sample().sign(&auth);
        let opened = SignedRoster::open(signed.bytes(), &PublicKey::from(&auth)).unwrap();
        assert_eq!(opened.roster(), &sample());
        let other = PublicKey::from(&SigningKey::from_bytes(&[43; 32]));
        assert!(SignedRoster::open(signed.bytes(), &other).is_err());
    }

    #[test]
    fn routes_through_relay() {
        let r = sample();
        let fj = NodeId::new("cn-35-psb").unwrap();
        let hk = NodeId::new("cn-5325-hekou").unwrap();
        let vn = NodeId::new("vn-laocai-bg").unwrap();
        assert_eq!(r.next_hop(&fj, &vn).unwrap(), hk);
        assert_eq!(r.next_hop(&hk, &vn).unwrap(), vn);
        assert_eq!(r.next_hop(&vn, &fj).unwrap(), hk);
        assert_eq!(r.next_hop(&vn, &hk).unwrap(), hk);
        assert_eq!(r.next_hop(&fj, &hk).unwrap(), hk);
        assert_eq!(
            r.path(&fj, &vn).unwrap(),
            vec![fj.clone(), hk.clone(), vn.clone()]
        );
        assert_eq!(
            r.path(&vn, &fj).unwrap(),
            vec![vn.clone(), hk.clone(), fj.clone()]
        );
        assert_eq!(r.path(&fj, &fj).unwrap(), vec![fj.clone()]);
    }

    #[test]
    fn two_relays_route_through_both() {
        let mut r = sample();
        r.members
            .push(member("cn-45-dongxing", "border_station", "CHN", 4, None));
        r.members.push(member(
            "vn-quangninh",
            "foreign_counterpart",
            "VNM",
            5,
            Some("cn-45-dongxing"),
        ));
        let a = NodeId::new("vn-laocai-bg").unwrap();
        let b = NodeId::new("vn-quangninh").unwrap();
        let path: Vec<String> = r
            .path(&a, &b)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            path,
            [
                "vn-laocai-bg",
                "cn-5325-hekou",
                "cn-45-dongxing",
                "vn-quangninh"
            ]
        );
    }

    #[test]
    fn policy_by_agency_and_country() {
        let r = sample();
        let fj = NodeId::new("cn-35-psb").unwrap();
        let hk = NodeId::new("cn-5325-hekou").unwrap();
        let vn = NodeId::new("vn-laocai-bg").unwrap();
        assert!(r.check_send(&fj, &hk, "bus.ping").is_ok());
        assert!(r.check_send(&fj, &vn, "bus.ping").is_ok());
        assert!(matches!(
            r.check_send(&fj, &hk, "assist.request"),
            Err(PolicyError::Forbidden { .. })
        ));
    }

    #[test]
    fn distances() {
        // Fuzhou to Xi'an is about 1,500 km.
        let fz = Location {
            lat_e6: 26_074_500,
            lon_e6: 119_296_500,
        };
        let xa = Location {
            lat_e6: 34_341_600,
            lon_e6: 108_939_800,
        };
        let d = fz.distance_m(&xa);
        assert!((1_300_000..1_500_000).contains(&d), "{d}");
    }
}
