//! `ovpn_profile`: the bytes are a client `.ovpn` profile, parsed by [`Profile::parse`]. A
//! profile that parses is then set up as a client would: its inline blocks (`<ca>`, `<cert>`,
//! `<key>`, `<extra-certs>`, `<tls-auth>`/`<tls-crypt>`/`<secret>` static keys,
//! `<auth-user-pass>`) go through [`StaticKey::parse`], [`Credentials::parse`] and then
//! [`tls_config`] (which parses the PEM material) or [`p2p_config`] for its first connection.
//! Materials given as file names are read as the test PKI, so a profile naming files reaches
//! the same code. Warnings must name a line of the file.

use std::net::SocketAddr;

use erebus_openvpn::config::{AuthUserPass, Credentials, Material, Mode, Profile, TlsWrap};
use erebus_openvpn::keys::StaticKey;
use erebus_openvpn::setup::{TlsMaterials, p2p_config, tls_config};

use crate::ovpn_common::{CA, CLIENT_CERT, CLIENT_KEY, TC_KEY, wall_clock};

/// The address every connection is set up with (never contacted).
const REMOTE: &str = "192.0.2.1:1194";

/// The bytes of `material`: inline as given, a file by its name's hint (`ca`, `cert`, `key`,
/// anything else a static key), as a client reads the files next to its profile.
fn bytes<'a>(material: &'a Material, file: &'static [u8]) -> &'a [u8] {
    match material {
        Material::Inline(secret) => secret.expose(),
        Material::File(_) => file,
    }
}

/// The harness.
pub fn run(data: &[u8]) {
    let Ok((profile, warnings)) = Profile::parse(data) else {
        return;
    };
    let lines = data.split(|&b| b == b'\n').count();
    for warning in &warnings {
        assert!(
            (1..=lines).contains(&warning.line),
            "warning on line {} of {lines}: {warning}",
            warning.line
        );
        let _ = warning.to_string();
    }
    let _ = (profile.negotiable_ciphers(), profile.digest());
    let credentials = match &profile.auth_user_pass {
        Some(AuthUserPass::From(material)) => {
            Credentials::parse(bytes(material, b"alice\nwonderland\n")).ok()
        }
        _ => None,
    };
    let wrap_key = profile
        .connections
        .first()
        .and_then(|c| c.tls_wrap.as_ref())
        .map(|wrap| match wrap {
            TlsWrap::Auth { key, .. } | TlsWrap::Crypt { key } | TlsWrap::CryptV2 { key } => {
                bytes(key, TC_KEY)
            }
        });
    if let Some(key) = wrap_key {
        let _ = StaticKey::parse(key);
    }
    let remote: SocketAddr = REMOTE.parse().expect("an address");
    match profile.mode() {
        Mode::Tls => {
            let materials = TlsMaterials {
                ca: profile.ca.as_ref().map(|m| bytes(m, CA)),
                cert: profile.cert.as_ref().map(|m| bytes(m, CLIENT_CERT)),
                key: profile.key.as_ref().map(|m| bytes(m, CLIENT_KEY)),
                extra_certs: profile.extra_certs.as_ref().map(|m| bytes(m, CA)),
                tls_wrap_key: wrap_key,
                user_pass: credentials.as_ref(),
            };
            for index in 0..profile.connections.len().min(2) {
                let _ = tls_config(&profile, index, remote, &materials, wall_clock());
            }
        }
        Mode::StaticKey | Mode::Plaintext => {
            let secret = profile.secret.as_ref().map(|s| bytes(&s.key, TC_KEY));
            if let Some(connection) = profile.connections.first() {
                let _ = p2p_config(&profile, connection, remote, secret, wall_clock());
            }
        }
    }
}
