//! Development PKI and demo federation for liaison. **Never for production.**
//!
//! [`generate`] writes, for a [`FederationSpec`]: a development CA (its name says
//! `liaison DEV`), a federation authority key, for every member a TLS certificate and key and
//! its signing, log and witness keys (all PKCS#8 PEM, mode 0600), a node config with
//! `dev_mode = true`, and the roster signed by the authority with the `dev` flag set. A node
//! refuses both the CA and the roster unless it runs in dev mode.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use liaison_protocol::{Location, Member, MemberStatus, NodeId, PublicKey, Roster, Rule};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, PublicKeyData as _,
};
use sha2::{Digest as _, Sha256};

/// The demo federation's id.
pub const DEMO_FEDERATION: &str = "cn-atip-demo";
/// Largest body in generated rosters: 1 MiB (documents are attached by hash, not inline).
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

/// One member to generate.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// Node id.
    pub id: String,
    /// Agency kind.
    pub agency: String,
    /// Name.
    pub name: String,
    /// ISO 3166 alpha-3.
    pub country: String,
    /// Administrative division.
    pub division: Option<String>,
    /// Latitude and longitude in degrees × 10⁶.
    pub location: Option<(i64, i64)>,
    /// Relay.
    pub via: Option<String>,
}

/// A federation to generate.
#[derive(Debug, Clone)]
pub struct FederationSpec {
    /// Federation id.
    pub federation: String,
    /// Members.
    pub members: Vec<MemberSpec>,
    /// Policy.
    pub rules: Vec<Rule>,
    /// Largest body.
    pub max_body_len: u64,
}

fn m(
    id: &str,
    agency: &str,
    name: &str,
    country: &str,
    division: Option<&str>,
    loc: (i64, i64),
    via: Option<&str>,
) -> MemberSpec {
    MemberSpec {
        id: id.into(),
        agency: agency.into(),
        name: name.into(),
        country: country.into(),
        division: division.map(Into::into),
        location: Some(loc),
        via: via.map(Into::into),
    }
}

fn rule(from: &str, to: &str, kinds: &[&str], abroad: bool) -> Rule {
    Rule {
        from: from.into(),
        to: to.into(),
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        abroad,
    }
}

/// The policy of the demo federation (docs/domain.md §3–§5).
pub fn demo_rules() -> Vec<Rule> {
    vec![
        // Operators' connectivity checks, everywhere.
        rule("*", "*", &["bus.*"], true),
        // Cross-province assistance checks, bulletins and alerts between bureaus.
        rule(
            "public_security",
            "public_security",
            &["assist.*", "bulletin.*", "alert.*"],
            false,
        ),
        // Border inspection takes part in assistance checks (identity, entry records).
        rule("public_security", "border_station", &["assist.*"], false),
        rule("border_station", "public_security", &["assist.*"], false),
        // Alerts reach every domestic unit.
        rule("public_security", "*", &["alert.*"], false),
        // Foreign-marriage identity checks.
        rule(
            "marriage_registry",
            "border_station",
            &["marriage_check.request", "marriage_check.close"],
            false,
        ),
        rule(
            "border_station",
            "marriage_registry",
            &["marriage_check.answer"],
            false,
        ),
        rule(
            "marriage_registry",
            "public_security",
            &["marriage_check.referral", "marriage_check.close"],
            false,
        ),
        // Repatriation: domestic legs and the cross-border leg.
        rule(
            "public_security",
            "border_station",
            &["repatriation.*"],
            false,
        ),
        rule(
            "border_station",
            "public_security",
            &["repatriation.*"],
            false,
        ),
        rule(
            "public_security",
            "foreign_counterpart",
            &["repatriation.*"],
            true,
        ),
        rule(
            "border_station",
            "foreign_counterpart",
            &["repatriation.*"],
            true,
        ),
        rule(
            "foreign_counterpart",
            "public_security",
            &["repatriation.*"],
            true,
        ),
        rule(
            "foreign_counterpart",
            "border_station",
            &["repatriation.*"],
            true,
        ),
        // Permission to pass on H2 material goes between any two members.
        rule("*", "*", &["permission.*"], true),
        // Supervision and annual reports with the joint-meeting office.
        rule("joint_meeting", "*", &["supervision.*"], false),
        rule("*", "joint_meeting", &["supervision.*", "report.*"], false),
    ]
}

/// The demo federation of docs/domain.md §5.
pub fn demo_spec() -> FederationSpec {
    FederationSpec {
        federation: DEMO_FEDERATION.into(),
        members: vec![
            m(
                "cn-jmo",
                "joint_meeting",
                "National Anti-Trafficking Joint-Meeting Office",
                "CHN",
                None,
                (39_904_200, 116_407_400),
                None,
            ),
            m(
                "cn-35-psb",
                "public_security",
                "Fujian Provincial Public Security Department",
                "CHN",
                Some("35"),
                (26_074_500, 119_296_500),
                None,
            ),
            m(
                "cn-61-psb",
                "public_security",
                "Shaanxi Provincial Public Security Department",
                "CHN",
                Some("61"),
                (34_341_600, 108_939_800),
                None,
            ),
            m(
                "cn-6101-mca",
                "marriage_registry",
                "Xi'an Civil Affairs Marriage Registry",
                "CHN",
                Some("6101"),
                (34_265_800, 108_954_100),
                None,
            ),
            m(
                "cn-5325-hekou",
                "border_station",
                "Hekou Port Border Inspection Station, Yunnan",
                "CHN",
                Some("5325"),
                (22_509_700, 103_965_600),
                None,
            ),
            m(
                "vn-laocai-bg",
                "foreign_counterpart",
                "Lao Cai Provincial Border Guard, Viet Nam",
                "VNM",
                None,
                (22_485_600, 103_970_700),
                Some("cn-5325-hekou"),
            ),
        ],
        rules: demo_rules(),
        max_body_len: DEFAULT_MAX_BODY,
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The output directory.
    pub dir: PathBuf,
    /// The federation authority public key, hex (pinned in every node config).
    pub authority_key_hex: String,
    /// Each member's node config file.
    pub configs: Vec<(NodeId, PathBuf)>,
    /// The roster as generated.
    pub roster: Roster,
}

impl Generated {
    /// The config file of `id`.
    pub fn config(&self, id: &str) -> Option<&Path> {
        self.configs
            .iter()
            .find(|(n, _)| n.as_str() == id)
            .map(|(_, p)| p.as_path())
    }
}

fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn new_ed25519(path: &Path) -> Result<SigningKey> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = liaison_protocol::keys::private_key_pem(&key).context("encoding key")?;
    write_secret(path, &pem)?;
    Ok(key)
}

/// An rcgen Ed25519 key pair as a key file in the project's one form (PKCS#8 v1, protocol.md
/// §2), not the v2 form rcgen writes.
fn key_pair_pem(key: &KeyPair) -> Result<String> {
    let sk = SigningKey::from_pkcs8_der(&key.serialize_der()).context("reading the TLS key")?;
    Ok(liaison_protocol::keys::private_key_pem(&sk)
        .context("encoding key")?
        .to_string())
}

/// The development CA's certificate parameters (the same for its certificate and as issuer).
fn ca_params(federation: &str) -> Result<CertificateParams> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("liaison DEV CA {federation} - NOT FOR PRODUCTION"),
    );
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca_params)
}

/// Generates the federation into `out`. `endpoint` gives each member's listen address.
pub fn generate(
    spec: &FederationSpec,
    out: &Path,
    endpoint: &dyn Fn(&str) -> SocketAddr,
) -> Result<Generated> {
    std::fs::create_dir_all(out)?;
    // Development CA.
    let ca_key = KeyPair::generate_for(&PKCS_ED25519)?;
    let ca_params = ca_params(&spec.federation)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    std::fs::write(out.join("ca.pem"), ca_cert.pem())?;
    write_secret(&out.join("ca.key.pem"), &key_pair_pem(&ca_key)?)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let authority = new_ed25519(&out.join("authority.key.pem"))?;
    let authority_key_hex = hex::encode(authority.verifying_key().to_bytes());

    let mut members = Vec::new();
    let mut configs = Vec::new();
    for ms in &spec.members {
        let id = NodeId::new(ms.id.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = out.join("nodes").join(&ms.id);
        std::fs::create_dir_all(&dir)?;
        let tls_key = KeyPair::generate_for(&PKCS_ED25519)?;
        let mut p = CertificateParams::new(vec![ms.id.clone()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{} (liaison DEV)", ms.id));
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&tls_key, &issuer)?;
        std::fs::write(dir.join("tls.cert.pem"), cert.pem())?;
        write_secret(&dir.join("tls.key.pem"), &key_pair_pem(&tls_key)?)?;
        let spki: [u8; 32] = Sha256::digest(tls_key.subject_public_key_info()).into();

        let signing = new_ed25519(&dir.join("signing.key.pem"))?;
        let log = new_ed25519(&dir.join("log.key.pem"))?;
        let witness = new_ed25519(&dir.join("witness.key.pem"))?;
        let addr = endpoint(&ms.id);
        members.push(Member {
            id: id.clone(),
            agency: ms.agency.clone(),
            name: ms.name.clone(),
            country: ms.country.clone(),
            division: ms.division.clone(),
            signing_key: PublicKey::from(&signing),
            log_key: PublicKey::from(&log),
            witness_key: PublicKey::from(&witness),
            tls_spki_sha256: spki,
            endpoints: vec![addr.to_string()],
            via: ms
                .via
                .as_ref()
                .map(|v| NodeId::new(v.clone()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            location: ms
                .location
                .map(|(lat_e6, lon_e6)| Location { lat_e6, lon_e6 }),
            status: MemberStatus::Active,
            previous: None,
            tls_cert: None,
        });
        let config = format!(
            "# liaison-node config for {id} (development federation {fed}; dev_mode only)\n\
             node_id = \"{id}\"\nfederation = \"{fed}\"\nlisten = \"{addr}\"\n\
             data_dir = \"data\"\nauthority_key = \"{authority_key_hex}\"\n\
             ca_cert = \"../../ca.pem\"\ntls_cert = \"tls.cert.pem\"\ntls_key = \"tls.key.pem\"\n\
             signing_key = \"signing.key.pem\"\nlog_key = \"log.key.pem\"\n\
             witness_key = \"witness.key.pem\"\nroster = \"../../roster.cbor\"\n\
             dev_mode = true\n",
            fed = spec.federation,
        );
        let cfg_path = dir.join("node.toml");
        std::fs::write(&cfg_path, config)?;
        configs.push((id, cfg_path));
    }
    let roster = Roster {
        federation: spec.federation.clone(),
        serial: 1,
        issued_at: 0,
        valid_until: None,
        members,
        rules: spec.rules.clone(),
        max_body_len: spec.max_body_len,
        dev: true,
        next_authority: None,
    };
    std::fs::write(out.join("roster.cbor"), roster.sign(&authority).bytes())?;
    Ok(Generated {
        dir: out.to_owned(),
        authority_key_hex,
        configs,
        roster,
    })
}

/// Signs a changed roster (serial + 1) with the federation authority key in `dir`, writes it
/// to `roster.cbor` there and returns its bytes. For revocation and roster-update tests.
pub fn reissue_roster(g: &mut Generated, change: impl FnOnce(&mut Roster)) -> Result<Vec<u8>> {
    let pem = std::fs::read_to_string(g.dir.join("authority.key.pem"))?;
    let authority = SigningKey::from_pkcs8_pem(&pem).context("authority key")?;
    let mut next = g.roster.clone();
    change(&mut next);
    if next.serial <= g.roster.serial {
        next.serial = g.roster.serial + 1;
    }
    let bytes = next.sign(&authority).bytes().to_vec();
    std::fs::write(g.dir.join("roster.cbor"), &bytes)?;
    g.roster = next;
    Ok(bytes)
}

/// A new TLS key for member `id`, written to `key_out` (PKCS#8 v1, mode 0600), and its
/// certificate from the development CA: returns the certificate (DER) and its key's SPKI
/// SHA-256. For TLS rotation tests.
pub fn issue_tls(g: &Generated, id: &str, key_out: &Path) -> Result<(Vec<u8>, [u8; 32])> {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(g.dir.join("ca.key.pem"))?)?;
    let issuer = Issuer::new(ca_params(&g.roster.federation)?, ca_key);
    let tls_key = KeyPair::generate_for(&PKCS_ED25519)?;
    let mut p = CertificateParams::new(vec![id.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{id} (liaison DEV)"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&tls_key, &issuer)?;
    write_secret(key_out, &key_pair_pem(&tls_key)?)?;
    let spki: [u8; 32] = Sha256::digest(tls_key.subject_public_key_info()).into();
    Ok((cert.der().to_vec(), spki))
}

/// Checks that `out` is a safe place to (re)generate into.
pub fn check_out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.join("ca.pem").exists() && out.read_dir()?.next().is_some() {
        bail!(
            "{} is not empty and holds no generated federation; choose another directory",
            out.display()
        );
    }
    Ok(())
}
