//! `liaison federation …`: the federation authority's tools (the joint-meeting office), working
//! offline on a directory it keeps: the authority signing key, the federation CA, the draft
//! roster it edits and every roster it signed.
//!
//! ```text
//! <dir>/federation.toml     federation id, largest body
//! <dir>/authority.key.pem   the key that signs rosters (0600)
//! <dir>/ca.key.pem, ca.pem  the federation CA (0600 / public)
//! <dir>/draft.cbor          the roster being edited (unsigned payload)
//! <dir>/rosters/<serial>.cbor, <dir>/roster.cbor   every signed roster, and the newest
//! <dir>/certs/<node>.pem    the TLS certificates issued
//! <dir>/journal.log         what was done, when, and why (suspensions, revocations …)
//! ```
//!
//! Nothing here talks to a node: the signed roster goes to the nodes out of band (`liaison
//! roster apply`), and from there to every node (protocol.md §7.4).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use ed25519_dalek::SigningKey;
use liaison_protocol::roster::{Location, Member, MemberStatus, PreviousKeys, Rule};
use liaison_protocol::{NodeId, PublicKey, Roster, SignedRoster};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::output;

/// The authority's commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum FederationCmd {
    /// Found a federation: the authority key, the federation CA, an empty draft roster.
    Init {
        /// The authority's directory (new or empty; keep it offline).
        #[arg(long)]
        dir: PathBuf,
        /// Federation id (e.g. cn-atip).
        #[arg(long)]
        id: String,
        /// Largest message body, bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_body_len: u64,
        /// Keep the authority key under a passphrase (encrypted PKCS#8: PBES2 with scrypt and
        /// AES-256-CBC), read from the environment variable LIAISON_AUTHORITY_PASSPHRASE, here
        /// and for every later `sign`.
        #[arg(long)]
        encrypt: bool,
    },
    /// Add a member from the files its `liaison init` wrote: the join request and the TLS
    /// certificate request, which is signed into the member's certificate.
    AddMember {
        #[arg(long)]
        dir: PathBuf,
        /// The member's join-request.json (from `liaison init`).
        #[arg(long)]
        request: PathBuf,
        /// The member's tls.csr.pem (from `liaison init`).
        #[arg(long)]
        csr: PathBuf,
        /// Agency kind: public_security, marriage_registry, border_station,
        /// foreign_counterpart, joint_meeting.
        #[arg(long)]
        agency: String,
        /// The agency's name.
        #[arg(long)]
        name: String,
        /// ISO 3166-1 alpha-3 country code.
        #[arg(long)]
        country: String,
        /// Administrative division (e.g. a province code).
        #[arg(long)]
        division: Option<String>,
        /// Location, "latitude,longitude" in degrees (alerts are sent by distance).
        #[arg(long)]
        location: Option<String>,
        /// Where the node listens, host:port (repeatable; tried in order).
        #[arg(long = "endpoint")]
        endpoints: Vec<String>,
        /// The member it is reached through (a relay), if any.
        #[arg(long)]
        via: Option<String>,
        /// Days the TLS certificate is valid.
        #[arg(long, default_value_t = 365)]
        cert_days: u32,
    },
    /// Suspend a member (refused until reinstated; its queued messages are held).
    Suspend {
        #[arg(long)]
        dir: PathBuf,
        /// The member.
        node: String,
        /// Why (kept in the journal).
        #[arg(long)]
        reason: String,
    },
    /// Reinstate a suspended member.
    Reinstate {
        #[arg(long)]
        dir: PathBuf,
        /// The member.
        node: String,
        /// Why (kept in the journal).
        #[arg(long)]
        reason: String,
    },
    /// Revoke a member for good.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        /// The member.
        node: String,
        /// Why (kept in the journal).
        #[arg(long)]
        reason: String,
    },
    /// Replace one of a member's keys: signing, log or witness (with --key), or TLS (with
    /// --csr, signed into a new certificate).
    RotateKey {
        #[arg(long)]
        dir: PathBuf,
        /// The member.
        node: String,
        /// Which key: signing, log, witness or tls.
        #[arg(long, value_parser = ["signing", "log", "witness", "tls"])]
        kind: String,
        /// The new public key, hex (signing, log, witness).
        #[arg(long, conflicts_with = "csr")]
        key: Option<String>,
        /// The new TLS certificate request (tls).
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Days the new TLS certificate is valid.
        #[arg(long, default_value_t = 365)]
        cert_days: u32,
        /// Days the old key is still accepted beside the new one (messages in flight, a member
        /// that has not yet switched); 0 refuses it as soon as a node applies the roster (a
        /// compromised key).
        #[arg(long, default_value_t = 7)]
        overlap_days: u32,
    },
    /// Replace the policy: which agency kinds may send which kinds to which, and what may go
    /// abroad, from a TOML file of [[rule]] tables (from, to, kinds, abroad).
    SetPolicy {
        #[arg(long)]
        dir: PathBuf,
        /// The rules file.
        #[arg(long)]
        rules: PathBuf,
    },
    /// Make a new authority key to hand the federation over to: the next `sign` signs with
    /// the current key a roster naming the new one, and every roster after it is signed by the
    /// new key (nodes follow by themselves; give new members the new key).
    RotateAuthority {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Sign the draft as the next roster (serial + 1), valid for a number of days.
    Sign {
        #[arg(long)]
        dir: PathBuf,
        /// Days the roster is valid.
        #[arg(long, default_value_t = 30)]
        valid_days: u32,
    },
    /// Show the draft (or a signed roster file).
    Show {
        #[arg(long)]
        dir: PathBuf,
        /// A signed roster file instead of the draft.
        #[arg(long)]
        roster: Option<PathBuf>,
    },
    /// Two signed rosters side by side: members added, removed and changed, policy changes.
    Diff {
        #[arg(long)]
        dir: PathBuf,
        /// The older roster file.
        old: PathBuf,
        /// The newer roster file.
        new: PathBuf,
    },
}

/// The authority's settings.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    federation: String,
    max_body_len: u64,
    /// The authority's public key (hex): what nodes pin.
    authority_key: String,
    /// The authority key file is under a passphrase.
    encrypted: bool,
    /// The authority's earlier public keys (hex), oldest first: rosters signed before a
    /// handover (`rotate-authority`) verify with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    former_authority_keys: Vec<String>,
}

/// Where the authority key's passphrase is read from.
const PASSPHRASE_ENV: &str = "LIAISON_AUTHORITY_PASSPHRASE";

fn passphrase() -> Result<zeroize::Zeroizing<String>> {
    let p = zeroize::Zeroizing::new(std::env::var(PASSPHRASE_ENV).map_err(|_| {
        anyhow::anyhow!("the authority key is under a passphrase: set {PASSPHRASE_ENV}")
    })?);
    if p.chars().count() < 12 {
        bail!("{PASSPHRASE_ENV} is shorter than 12 characters");
    }
    Ok(p)
}

/// The authority's directory.
struct Authority {
    dir: PathBuf,
}

impl Authority {
    fn open(dir: &Path) -> Result<Self> {
        if !dir.join("federation.toml").exists() {
            bail!(
                "{} holds no federation: found one with `liaison federation init --dir {} --id …`",
                dir.display(),
                dir.display()
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn settings(&self) -> Result<Settings> {
        let text = std::fs::read_to_string(self.dir.join("federation.toml"))?;
        toml::from_str(&text).context("federation.toml")
    }

    /// The authority's signing key (asks for the passphrase when it is under one).
    fn key(&self) -> Result<SigningKey> {
        self.key_at(&self.dir.join("authority.key.pem"))
    }

    /// The key waiting to take over (`rotate-authority`), if any.
    fn next_key(&self) -> Result<Option<SigningKey>> {
        let path = self.dir.join("authority.next.key.pem");
        if path.exists() {
            self.key_at(&path).map(Some)
        } else {
            Ok(None)
        }
    }

    fn key_at(&self, path: &Path) -> Result<SigningKey> {
        let path = path.to_owned();
        if !self.settings()?.encrypted {
            return Ok(liaison_node::identity::load_signing_key(&path)?);
        }
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let pem = liaison_node::identity::read_secret_file(&path)?;
        SigningKey::from_pkcs8_encrypted_pem(&pem, passphrase()?.as_bytes()).map_err(|_| {
            anyhow::anyhow!(
                "{}: wrong passphrase, or not an encrypted authority key",
                path.display()
            )
        })
    }

    /// Every public key the authority has used, oldest first, the one in force last.
    fn all_public_keys(&self) -> Result<Vec<PublicKey>> {
        let s = self.settings()?;
        s.former_authority_keys
            .iter()
            .chain(std::iter::once(&s.authority_key))
            .map(|k| key_hex("federation.toml authority key", k))
            .collect()
    }

    fn draft(&self) -> Result<Roster> {
        let bytes = std::fs::read(self.dir.join("draft.cbor")).context("draft.cbor")?;
        let draft = Roster::decode(&bytes).map_err(|e| anyhow::anyhow!("draft.cbor: {e}"))?;
        let settings = self.settings()?;
        if draft.federation != settings.federation {
            bail!(
                "draft.cbor is a roster of {}, federation.toml says {}",
                draft.federation,
                settings.federation
            );
        }
        Ok(draft)
    }

    fn save_draft(&self, r: &Roster) -> Result<()> {
        write_atomic(&self.dir.join("draft.cbor"), &r.encode())
    }

    /// Every roster signed so far, oldest first.
    fn signed(&self) -> Result<Vec<SignedRoster>> {
        let keys = self.all_public_keys()?;
        let mut out = Vec::new();
        let dir = self.dir.join("rosters");
        if !dir.exists() {
            return Ok(out);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f)?;
            out.push(
                SignedRoster::open_any(&bytes, &keys)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
            );
        }
        out.sort_by_key(|r| r.roster().serial);
        Ok(out)
    }

    /// After the roster naming `next` is signed: `next` becomes the authority key (its file
    /// takes the key file's place, the old key is kept as authority.retired-<serial>.key.pem)
    /// and federation.toml lists the old public key among the former ones.
    fn hand_over(&self, next: &SigningKey, serial: u64) -> Result<String> {
        let mut s = self.settings()?;
        let retired = self
            .dir
            .join(format!("authority.retired-{serial:010}.key.pem"));
        std::fs::rename(self.dir.join("authority.key.pem"), &retired)?;
        std::fs::rename(
            self.dir.join("authority.next.key.pem"),
            self.dir.join("authority.key.pem"),
        )?;
        let old = std::mem::replace(
            &mut s.authority_key,
            hex::encode(next.verifying_key().to_bytes()),
        );
        s.former_authority_keys.push(old);
        write_atomic(
            &self.dir.join("federation.toml"),
            toml::to_string(&s)?.as_bytes(),
        )?;
        self.journal(&format!(
            "roster serial {serial} handed the federation over to authority key {}",
            s.authority_key
        ))?;
        Ok(s.authority_key)
    }

    fn journal(&self, line: &str) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("journal.log"))?;
        writeln!(f, "{} {line}", output::time(liaison_node::clock::now_ms()))?;
        Ok(())
    }

    fn ca(&self) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>> {
        let key_pem = liaison_node::identity::read_secret_file(&self.dir.join("ca.key.pem"))?;
        let key = rcgen::KeyPair::from_pem(&key_pem).context("ca.key.pem")?;
        let cert = std::fs::read_to_string(self.dir.join("ca.pem")).context("ca.pem")?;
        rcgen::Issuer::from_ca_cert_pem(&cert, key).context("ca.pem")
    }

    /// Signs a member's TLS certificate request (from [`read_request`]) into a certificate naming
    /// `node`, for client and server use, valid `days`, written to `certs/<node>.pem`.
    fn issue(
        &self,
        node: &NodeId,
        mut req: rcgen::CertificateSigningRequestParams,
        days: u32,
    ) -> Result<(PathBuf, Vec<u8>)> {
        let now = time::OffsetDateTime::now_utc();
        req.params.not_before = now - time::Duration::minutes(5);
        req.params.not_after = now + time::Duration::days(i64::from(days));
        req.params.is_ca = rcgen::IsCa::ExplicitNoCa;
        req.params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        req.params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = req.signed_by(&self.ca()?)?;
        std::fs::create_dir_all(self.dir.join("certs"))?;
        let out = self.dir.join("certs").join(format!("{node}.pem"));
        std::fs::write(&out, cert.pem())?;
        Ok((out, cert.der().to_vec()))
    }

    /// Refuses a key any member holds or held in a signed roster (key ids are never reused).
    fn check_key_fresh(&self, draft: &Roster, key: &PublicKey) -> Result<()> {
        for r in self.every_roster(draft)? {
            for m in &r.members {
                if m.signing_keys()
                    .chain(m.log_keys())
                    .chain(m.witness_keys())
                    .any(|k| k == key)
                {
                    bail!(
                        "key {} is (or was) a key of {}: a new key must be new",
                        hex::encode(key.to_bytes()),
                        m.id
                    );
                }
            }
        }
        Ok(())
    }

    /// Refuses a TLS key any member holds or held.
    fn check_pin_fresh(&self, draft: &Roster, spki: &[u8; 32]) -> Result<()> {
        for r in self.every_roster(draft)? {
            if let Some(m) = r.members.iter().find(|m| m.tls_pins().any(|p| p == spki)) {
                bail!("that TLS key is (or was) {}'s: make a new request", m.id);
            }
        }
        Ok(())
    }

    fn every_roster(&self, draft: &Roster) -> Result<Vec<Roster>> {
        let mut all = vec![draft.clone()];
        all.extend(self.signed()?.iter().map(|s| s.roster().clone()));
        Ok(all)
    }
}

/// A member's TLS certificate request, read and checked: it names exactly `node`. Returns it
/// with the SHA-256 of its key's SubjectPublicKeyInfo (the roster's pin).
fn read_request(
    node: &NodeId,
    csr: &Path,
) -> Result<(rcgen::CertificateSigningRequestParams, [u8; 32])> {
    let pem = std::fs::read_to_string(csr).with_context(|| format!("reading {}", csr.display()))?;
    let req = rcgen::CertificateSigningRequestParams::from_pem(&pem)
        .with_context(|| format!("{} is not a certificate signing request", csr.display()))?;
    let names: Vec<String> = req
        .params
        .subject_alt_names
        .iter()
        .map(|s| match s {
            rcgen::SanType::DnsName(n) => n.as_str().to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    if names != [node.to_string()] {
        bail!(
            "the certificate request names {names:?}, not exactly {node}: make it with \
                 `liaison init --id {node}`"
        );
    }
    let spki: [u8; 32] = Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(
        &req.public_key,
    ))
    .into();
    Ok((req, spki))
}

/// What `liaison init` writes for the authority (join-request.json).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinRequest {
    pub(crate) node: String,
    pub(crate) federation: String,
    pub(crate) signing_key: String,
    pub(crate) log_key: String,
    pub(crate) witness_key: String,
    pub(crate) tls_spki_sha256: String,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn key_hex(what: &str, hex_key: &str) -> Result<PublicKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{what}: expected 64 hex characters"))?;
    PublicKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

fn location(s: &str) -> Result<Location> {
    let (lat, lon) = s
        .split_once(',')
        .context("--location: expected latitude,longitude (e.g. 26.07,119.30)")?;
    let deg = |v: &str, max: f64| -> Result<i64> {
        let d: f64 = v.trim().parse().context("--location: not a number")?;
        if !(-max..=max).contains(&d) {
            bail!("--location: {d} is out of range");
        }
        Ok((d * 1e6).round() as i64)
    };
    Ok(Location {
        lat_e6: deg(lat, 90.0)?,
        lon_e6: deg(lon, 180.0)?,
    })
}

/// The rules file of `set-policy`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RuleEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    from: String,
    to: String,
    kinds: Vec<String>,
    #[serde(default)]
    abroad: bool,
}

fn member_json(m: &Member) -> Value {
    json!({
        "node": m.id, "agency": m.agency, "name": m.name, "country": m.country,
        "division": m.division, "status": m.status.to_string(),
        "signing_key": hex::encode(m.signing_key.to_bytes()),
        "log_key": hex::encode(m.log_key.to_bytes()),
        "witness_key": hex::encode(m.witness_key.to_bytes()),
        "tls_spki_sha256": hex::encode(m.tls_spki_sha256),
        "endpoints": m.endpoints, "via": m.via,
        "location": m.location.map(|l| json!([l.lat_e6 as f64 / 1e6, l.lon_e6 as f64 / 1e6])),
    })
}

fn roster_json(r: &Roster) -> Value {
    json!({
        "federation": r.federation, "serial": r.serial, "issued_at": r.issued_at,
        "valid_until": r.valid_until, "max_body_len": r.max_body_len, "dev": r.dev,
        "next_authority": r.next_authority.map(|k| hex::encode(k.to_bytes())),
        "members": r.members.iter().map(member_json).collect::<Vec<_>>(),
        "rules": r.rules.iter().map(|u| json!({"from": u.from, "to": u.to, "kinds": u.kinds, "abroad": u.abroad})).collect::<Vec<_>>(),
    })
}

fn roster_text(r: &Roster) -> String {
    let mut s = format!(
        "federation {} roster serial {}{}{}\n",
        r.federation,
        r.serial,
        if r.issued_at > 0 {
            format!(", issued {}", output::time(r.issued_at))
        } else {
            String::new()
        },
        r.valid_until.map_or(String::new(), |v| format!(
            ", valid until {}",
            output::time(v)
        ))
    );
    for m in &r.members {
        s.push_str(&format!(
            "  {:<16} {:<10} {:<20} {:<4} {:<9} {}{}\n",
            m.id.as_str(),
            m.status.to_string(),
            m.agency,
            m.country,
            m.endpoints.join(","),
            m.name,
            m.via
                .as_ref()
                .map_or(String::new(), |v| format!(" (via {v})"))
        ));
    }
    if r.rules.is_empty() {
        s.push_str("  no policy rules: nothing may be sent\n");
    }
    for u in &r.rules {
        s.push_str(&format!(
            "  rule: {} -> {}: {}{}\n",
            u.from,
            u.to,
            u.kinds.join(" "),
            if u.abroad { " (also abroad)" } else { "" }
        ));
    }
    s.trim_end().to_owned()
}

fn set_status(
    a: &Authority,
    node: &str,
    status: MemberStatus,
    reason: &str,
    what: &str,
) -> Result<Value> {
    let mut draft = a.draft()?;
    let id = NodeId::new(node)?;
    let m = draft
        .members
        .iter_mut()
        .find(|m| m.id == id)
        .with_context(|| format!("{node} is not a member (liaison federation show --dir …)"))?;
    if m.status == MemberStatus::Revoked {
        bail!("{node} was revoked: a revocation is for good");
    }
    m.status = status;
    a.save_draft(&draft)?;
    a.journal(&format!("{what} {node}: {reason}"))?;
    Ok(
        json!({"node": node, "status": status.to_string(), "reason": reason,
        "next": "liaison federation sign"}),
    )
}

/// Runs an authority command.
pub(crate) fn run(cmd: FederationCmd, json_out: bool) -> Result<()> {
    let v = match cmd {
        FederationCmd::Init {
            dir,
            id,
            max_body_len,
            encrypt,
        } => init(&dir, &id, max_body_len, encrypt)?,
        FederationCmd::AddMember {
            dir,
            request,
            csr,
            agency,
            name,
            country,
            division,
            location: loc,
            endpoints,
            via,
            cert_days,
        } => {
            let a = Authority::open(&dir)?;
            let mut draft = a.draft()?;
            let req: JoinRequest = serde_json::from_slice(
                &std::fs::read(&request)
                    .with_context(|| format!("reading {}", request.display()))?,
            )
            .with_context(|| format!("{} is not a join request", request.display()))?;
            if req.federation != draft.federation {
                bail!(
                    "the join request is for federation {}, this is {}",
                    req.federation,
                    draft.federation
                );
            }
            let id = NodeId::new(req.node.clone())?;
            if draft.member(&id).is_some() {
                bail!("{id} is already a member");
            }
            if endpoints.is_empty() && via.is_none() {
                bail!("a member needs --endpoint host:port (or --via its relay)");
            }
            let signing = key_hex("signing key", &req.signing_key)?;
            let log = key_hex("log key", &req.log_key)?;
            let witness = key_hex("witness key", &req.witness_key)?;
            for k in [&signing, &log, &witness] {
                a.check_key_fresh(&draft, k)?;
            }
            let (tls_req, spki) = read_request(&id, &csr)?;
            if hex::encode(spki) != req.tls_spki_sha256 {
                bail!(
                    "the certificate request's key ({}) is not the TLS key of the join request \
                     ({}): send the tls.csr.pem made with it",
                    hex::encode(spki),
                    req.tls_spki_sha256
                );
            }
            a.check_pin_fresh(&draft, &spki)?;
            let via = via.map(NodeId::new).transpose()?;
            draft.members.push(Member {
                id: id.clone(),
                agency,
                name,
                country,
                division,
                signing_key: signing,
                log_key: log,
                witness_key: witness,
                tls_spki_sha256: spki,
                endpoints,
                via,
                location: loc.as_deref().map(location).transpose()?,
                status: MemberStatus::Active,
                previous: None,
                tls_cert: None,
            });
            // The roster's own rules (one key per member, known relays …) hold for the draft.
            Roster::decode(&draft.encode()).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (cert_path, der) = a.issue(&id, tls_req, cert_days)?;
            if let Some(m) = draft.members.iter_mut().find(|m| m.id == id) {
                m.tls_cert = Some(der);
            }
            a.save_draft(&draft)?;
            a.journal(&format!("added {id}"))?;
            let next = if draft.rules.is_empty() {
                "liaison federation set-policy (the draft lets nothing be sent yet), then liaison federation sign"
            } else {
                "liaison federation sign"
            };
            json!({"node": id, "certificate": cert_path, "tls_spki_sha256": hex::encode(spki),
                "next": next})
        }
        FederationCmd::Suspend { dir, node, reason } => set_status(
            &Authority::open(&dir)?,
            &node,
            MemberStatus::Suspended,
            &reason,
            "suspended",
        )?,
        FederationCmd::Reinstate { dir, node, reason } => {
            let a = Authority::open(&dir)?;
            if a.draft()?
                .member(&NodeId::new(node.clone())?)
                .map(|m| m.status)
                != Some(MemberStatus::Suspended)
            {
                bail!("{node} is not suspended");
            }
            set_status(&a, &node, MemberStatus::Active, &reason, "reinstated")?
        }
        FederationCmd::Revoke { dir, node, reason } => set_status(
            &Authority::open(&dir)?,
            &node,
            MemberStatus::Revoked,
            &reason,
            "revoked",
        )?,
        FederationCmd::RotateKey {
            dir,
            node,
            kind,
            key,
            csr,
            cert_days,
            overlap_days,
        } => {
            let a = Authority::open(&dir)?;
            let mut draft = a.draft()?;
            let id = NodeId::new(node.clone())?;
            if draft.member(&id).is_none() {
                bail!("{node} is not a member");
            }
            let until = liaison_node::clock::now_ms() + u64::from(overlap_days) * 86_400_000;
            let (old, new) = if kind == "tls" {
                let csr = csr.context("--kind tls needs --csr (the member's new tls.csr.pem)")?;
                let (tls_req, spki) = read_request(&id, &csr)?;
                a.check_pin_fresh(&draft, &spki)?;
                let (_, der) = a.issue(&id, tls_req, cert_days)?;
                let m = draft
                    .members
                    .iter_mut()
                    .find(|m| m.id == id)
                    .context("member")?;
                let old = m.tls_spki_sha256;
                if overlap_days > 0 {
                    let p = m.previous.get_or_insert_with(PreviousKeys::default);
                    p.tls_spki_sha256 = Some(old);
                    p.until_ms = p.until_ms.max(until);
                }
                m.tls_spki_sha256 = spki;
                m.tls_cert = Some(der);
                (hex::encode(old), hex::encode(spki))
            } else {
                let key = key_hex(
                    "--key",
                    &key.with_context(|| {
                        format!("--kind {kind} needs --key (the new public key, hex)")
                    })?,
                )?;
                a.check_key_fresh(&draft, &key)?;
                let m = draft
                    .members
                    .iter_mut()
                    .find(|m| m.id == id)
                    .context("member")?;
                let mut previous = m.previous.take().unwrap_or_default();
                let (slot, prev) = match kind.as_str() {
                    "signing" => (&mut m.signing_key, &mut previous.signing_key),
                    "log" => (&mut m.log_key, &mut previous.log_key),
                    _ => (&mut m.witness_key, &mut previous.witness_key),
                };
                let old = *slot;
                if overlap_days > 0 {
                    *prev = Some(old);
                    previous.until_ms = previous.until_ms.max(until);
                }
                *slot = key;
                m.previous = (!previous.is_empty()).then_some(previous);
                (hex::encode(old.to_bytes()), hex::encode(key.to_bytes()))
            };
            Roster::decode(&draft.encode()).map_err(|e| anyhow::anyhow!("{e}"))?;
            a.save_draft(&draft)?;
            a.journal(&format!(
                "rotated the {kind} key of {id}: {old} -> {new} (the old one accepted for {overlap_days} days)"
            ))?;
            json!({"node": id, "kind": kind, "old": old, "new": new, "overlap_days": overlap_days,
                "next": "liaison federation sign"})
        }
        FederationCmd::SetPolicy { dir, rules } => {
            let a = Authority::open(&dir)?;
            let mut draft = a.draft()?;
            let text = std::fs::read_to_string(&rules)
                .with_context(|| format!("reading {}", rules.display()))?;
            let file: RulesFile =
                toml::from_str(&text).with_context(|| format!("{}", rules.display()))?;
            draft.rules = file
                .rule
                .into_iter()
                .map(|u| Rule {
                    from: u.from,
                    to: u.to,
                    kinds: u.kinds,
                    abroad: u.abroad,
                })
                .collect();
            Roster::decode(&draft.encode()).map_err(|e| anyhow::anyhow!("{e}"))?;
            a.save_draft(&draft)?;
            a.journal(&format!(
                "policy set from {} ({} rules)",
                rules.display(),
                draft.rules.len()
            ))?;
            json!({"rules": draft.rules.len(), "next": "liaison federation sign"})
        }
        FederationCmd::RotateAuthority { dir } => {
            let a = Authority::open(&dir)?;
            let path = dir.join("authority.next.key.pem");
            if path.exists() {
                bail!(
                    "{} exists: a handover is under way; `liaison federation sign` completes it",
                    path.display()
                );
            }
            // The current key must be at hand (and its passphrase right) to sign the handover.
            a.key()?;
            let next = new_authority_key(&path, a.settings()?.encrypted)?;
            let public = hex::encode(next.verifying_key().to_bytes());
            a.journal(&format!(
                "new authority key {public} made; the next roster hands over to it"
            ))?;
            json!({"next_authority_key": public, "key_file": path,
                "next": "liaison federation sign (signs with the current key a roster naming the new one)"})
        }
        FederationCmd::Sign { dir, valid_days } => {
            let a = Authority::open(&dir)?;
            let mut draft = a.draft()?;
            let last = a.signed()?.last().map_or(0, |r| r.roster().serial);
            if valid_days == 0 {
                bail!("--valid-days must be at least 1");
            }
            let now = liaison_node::clock::now_ms();
            // Previous keys whose overlap ended are no longer listed: refused from this roster.
            let mut retired = Vec::new();
            for m in &mut draft.members {
                if m.previous.as_ref().is_some_and(|p| p.until_ms <= now) {
                    m.previous = None;
                    retired.push(m.id.to_string());
                }
            }
            for id in &retired {
                a.journal(&format!("the previous keys of {id} are no longer listed"))?;
            }
            draft.serial = last + 1;
            draft.issued_at = now;
            draft.valid_until = Some(now + u64::from(valid_days) * 24 * 3600 * 1000);
            // A pending handover: this roster, signed by the key in force, names the next one.
            let current = a.key()?;
            let next = a.next_key()?;
            draft.next_authority = next.as_ref().map(PublicKey::from);
            let signed = draft.sign(&current);
            draft.next_authority = None;
            std::fs::create_dir_all(dir.join("rosters"))?;
            let file = dir
                .join("rosters")
                .join(format!("{:010}.cbor", draft.serial));
            write_atomic(&file, signed.bytes())?;
            write_atomic(&dir.join("roster.cbor"), signed.bytes())?;
            a.save_draft(&draft)?;
            a.journal(&format!("signed roster serial {}", draft.serial))?;
            let handed_over = match next {
                None => None,
                Some(next) => Some(a.hand_over(&next, draft.serial)?),
            };
            json!({"serial": draft.serial, "valid_until": draft.valid_until, "roster": dir.join("roster.cbor"),
                "file": file, "members": draft.members.len(), "retired_previous_keys": retired,
                "authority_key": handed_over})
        }
        FederationCmd::Show { dir, roster } => {
            let a = Authority::open(&dir)?;
            let r = match roster {
                Some(f) => open_signed(&a, &f)?.roster().clone(),
                None => a.draft()?,
            };
            let v = roster_json(&r);
            output::print(json_out, &v, |_| roster_text(&r));
            return Ok(());
        }
        FederationCmd::Diff { dir, old, new } => {
            let a = Authority::open(&dir)?;
            let (o, n) = (open_signed(&a, &old)?, open_signed(&a, &new)?);
            let v = diff(o.roster(), n.roster());
            output::print(json_out, &v, diff_text);
            return Ok(());
        }
    };
    output::print(json_out, &v, |v| {
        let mut s = String::new();
        if let Some(o) = v.as_object() {
            for (k, val) in o {
                let val = val.as_str().map_or_else(|| val.to_string(), str::to_owned);
                s.push_str(&format!("{k}: {val}\n"));
            }
        }
        s.trim_end().to_owned()
    });
    Ok(())
}

fn open_signed(a: &Authority, f: &Path) -> Result<SignedRoster> {
    let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
    SignedRoster::open_any(&bytes, &a.all_public_keys()?).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a roster of this federation's authority: {e}",
            f.display()
        )
    })
}

/// A new authority key at `path` (0600), under the passphrase when `encrypt`.
fn new_authority_key(path: &Path, encrypt: bool) -> Result<SigningKey> {
    if !encrypt {
        return Ok(liaison_node::identity::generate_signing_key(path)?);
    }
    let p = passphrase()?;
    use pkcs8::EncodePrivateKey as _;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_encrypted_pem(&mut rand::rngs::OsRng, p.as_bytes(), pkcs8::LineEnding::LF)
    .context("encrypting the authority key")?;
    liaison_node::identity::write_secret_file(path, &pem)?;
    Ok(key)
}

fn init(dir: &Path, id: &str, max_body_len: u64, encrypt: bool) -> Result<Value> {
    let fed = NodeId::new(id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} is not empty; choose a new directory", dir.display());
    }
    // The passphrase is checked before anything is written.
    if encrypt {
        passphrase()?;
    }
    std::fs::create_dir_all(dir.join("rosters"))?;
    let authority = new_authority_key(&dir.join("authority.key.pem"), encrypt)?;
    // The federation CA: an Ed25519 key, a self-signed certificate for 10 years, path length 0.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        format!("liaison federation CA {fed}"),
    );
    p.distinguished_name = dn;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(3650);
    let ca = p.self_signed(&ca_key)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    liaison_node::identity::write_secret_file(
        &dir.join("ca.key.pem"),
        &crate::pki::key_pair_pem(&ca_key)?,
    )?;
    std::fs::write(
        dir.join("federation.toml"),
        toml::to_string(&Settings {
            federation: fed.to_string(),
            max_body_len,
            authority_key: hex::encode(authority.verifying_key().to_bytes()),
            encrypted: encrypt,
            former_authority_keys: Vec::new(),
        })?,
    )?;
    let draft = Roster {
        federation: fed.to_string(),
        serial: 0,
        issued_at: 0,
        valid_until: None,
        members: Vec::new(),
        rules: Vec::new(),
        max_body_len,
        dev: false,
        next_authority: None,
    };
    write_atomic(&dir.join("draft.cbor"), &draft.encode())?;
    let a = Authority {
        dir: dir.to_owned(),
    };
    a.journal(&format!("founded federation {fed}"))?;
    Ok(json!({
        "federation": fed, "dir": dir,
        "authority_key": hex::encode(authority.verifying_key().to_bytes()),
        "ca": dir.join("ca.pem"),
        "next": "give each agency the authority key and ca.pem; add members from their `liaison init` files",
    }))
}

fn diff(o: &Roster, n: &Roster) -> Value {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    for m in &n.members {
        match o.member(&m.id) {
            None => added.push(member_json(m)),
            Some(old) if old != m => {
                let (a, b) = (member_json(old), member_json(m));
                let fields: Vec<Value> = b
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| a.get(k.as_str()) != Some(v))
                    .map(|(k, v)| json!({"field": k, "old": a[k.as_str()], "new": v}))
                    .collect();
                changed.push(json!({"node": m.id, "changes": fields}));
            }
            Some(_) => {}
        }
    }
    for m in &o.members {
        if n.member(&m.id).is_none() {
            removed.push(json!(m.id));
        }
    }
    json!({
        "old_serial": o.serial, "new_serial": n.serial,
        "added": added, "removed": removed, "changed": changed,
        "rules_changed": o.rules != n.rules,
        "old_rules": roster_json(o)["rules"], "new_rules": roster_json(n)["rules"],
    })
}

fn diff_text(v: &Value) -> String {
    let mut s = format!("roster serial {} -> {}\n", v["old_serial"], v["new_serial"]);
    for m in v["added"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "  + {} ({}, {})\n",
            crate::str_of(m, "node"),
            crate::str_of(m, "agency"),
            crate::str_of(m, "status")
        ));
    }
    for m in v["removed"].as_array().into_iter().flatten() {
        s.push_str(&format!("  - {}\n", m.as_str().unwrap_or_default()));
    }
    for c in v["changed"].as_array().into_iter().flatten() {
        for f in c["changes"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "  ~ {} {}: {} -> {}\n",
                crate::str_of(c, "node"),
                crate::str_of(f, "field"),
                f["old"],
                f["new"]
            ));
        }
    }
    if v["rules_changed"] == true {
        s.push_str(&format!(
            "  policy: {} -> {}\n",
            v["old_rules"], v["new_rules"]
        ));
    }
    s.trim_end().to_owned()
}
