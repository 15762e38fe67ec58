//! A fixture for tests of the workflows (unit and property tests, and other crates' tests):
//! the demo federation's six members at their real places, with keys from fixed seeds. Not a
//! federation anyone should run.

use ed25519_dalek::SigningKey;

use crate::error::DecodeError;
use crate::ids::NodeId;
use crate::keys::PublicKey;
use crate::roster::{Location, Member, MemberStatus, Roster};

fn member(
    id: &str,
    agency: &str,
    country: &str,
    seed: u8,
    (lat, lon): (f64, f64),
) -> Result<Member, DecodeError> {
    let key = PublicKey::from(&SigningKey::from_bytes(&[seed; 32]));
    Ok(Member {
        id: NodeId::new(id)?,
        agency: agency.into(),
        name: id.into(),
        country: country.into(),
        division: None,
        signing_key: key,
        log_key: key,
        witness_key: key,
        tls_spki_sha256: [0; 32],
        endpoints: vec![],
        via: None,
        location: Some(Location {
            lat_e6: (lat * 1e6).round() as i64,
            lon_e6: (lon * 1e6).round() as i64,
        }),
        status: MemberStatus::Active,
        previous: None,
        tls_cert: None,
    })
}

/// The demo federation's members (docs/domain.md §5) with no policy rules: Fujian and Shaanxi
/// public security, the Xi'an registry, Hekou border station, the Lao Cai border guard and the
/// joint-meeting office.
pub fn demo_roster() -> Result<Roster, DecodeError> {
    Ok(Roster {
        federation: "cn-atip-demo".into(),
        serial: 1,
        issued_at: 1,
        valid_until: None,
        members: vec![
            member(
                "cn-35-psb",
                "public_security",
                "CHN",
                1,
                (26.0745, 119.2965),
            )?,
            member(
                "cn-61-psb",
                "public_security",
                "CHN",
                2,
                (34.3416, 108.9398),
            )?,
            member(
                "cn-6101-mca",
                "marriage_registry",
                "CHN",
                3,
                (34.3416, 108.9398),
            )?,
            member(
                "cn-5325-hekou",
                "border_station",
                "CHN",
                4,
                (22.5120, 103.9540),
            )?,
            member(
                "vn-laocai-bg",
                "foreign_counterpart",
                "VNM",
                5,
                (22.4856, 103.9707),
            )?,
            member("cn-jmo", "joint_meeting", "CHN", 6, (39.9042, 116.4074))?,
        ],
        rules: vec![],
        max_body_len: 1 << 20,
        dev: true,
        next_authority: None,
    })
}
