//! What the OpenVPN-server targets share: the test PKI, the tls-auth and tls-crypt keys, the
//! server parameters each configuration byte selects, and an erebus client
//! ([`TlsSession`]) for building seeds that bring a session up.

use std::net::SocketAddr;
use std::time::Duration;

use erebus_openvpn::config::{Credentials, Digest, Profile};
use erebus_openvpn::keys::StaticKey;
use erebus_openvpn::server::{ServerParams, WrapKey};
use erebus_openvpn::setup::{TlsMaterials, tls_config};
use erebus_openvpn::tls_session::{TlsConfig, TlsSession};
use erebus_sansio::{Instant, Seed, UnixTime, WallClock};
use zeroize::Zeroizing;

// Ed25519, not the RSA PKI: rustls signs RSA-PSS (and ECDSA) with ring's own randomness,
// so a recorded session would not replay; Ed25519 signatures are deterministic.
/// The trusted CA (`testvectors/tls-pki/ed25519`).
pub const CA: &[u8] = include_bytes!("../../testvectors/tls-pki/ed25519/ed-ca.crt");
/// The server's certificate (`CN=server.erebus.test`).
pub const SERVER_CERT: &[u8] = include_bytes!("../../testvectors/tls-pki/ed25519/ed-server.crt");
/// Its key.
pub const SERVER_KEY: &[u8] = include_bytes!("../../testvectors/tls-pki/ed25519/ed-server.key");
/// A client certificate.
pub const CLIENT_CERT: &[u8] = include_bytes!("../../testvectors/tls-pki/ed25519/ed-client.crt");
/// Its key.
pub const CLIENT_KEY: &[u8] = include_bytes!("../../testvectors/tls-pki/ed25519/ed-client.key");
/// The tls-crypt key of the `tls-udp` capture.
pub const TC_KEY: &[u8] = include_bytes!("../../testvectors/captures/tls-udp/tc.key");
/// The tls-auth key of the `tls-auth` capture.
pub const TA_KEY: &[u8] = include_bytes!("../../testvectors/captures/tls-auth/ta.key");
/// A wall time inside the certificates' validity.
pub const NOW_UNIX: u64 = 1_800_000_000;

/// The wall clock every harness uses.
pub fn wall_clock() -> WallClock {
    WallClock::new(Instant::ZERO, UnixTime::from_secs(NOW_UNIX))
}

/// How the client authenticates and the control channel is wrapped, per configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrap {
    /// No wrapping.
    None,
    /// `tls-auth` (server direction 0, client 1, SHA1).
    Auth,
    /// `tls-crypt`.
    Crypt,
}

/// One server configuration of the session target.
#[derive(Clone, Copy, Debug)]
pub struct SessionConfig {
    /// The wrapping.
    pub wrap: Wrap,
    /// Clients present a certificate.
    pub client_cert: bool,
    /// Clients send a username and password.
    pub user_pass: bool,
    /// Server-side renegotiation interval.
    pub reneg: Option<Duration>,
}

/// The configurations a configuration byte selects (modulo their number).
pub const SESSION_CONFIGS: [SessionConfig; 4] = [
    SessionConfig {
        wrap: Wrap::Crypt,
        client_cert: true,
        user_pass: false,
        reneg: None,
    },
    SessionConfig {
        wrap: Wrap::Auth,
        client_cert: true,
        user_pass: true,
        reneg: None,
    },
    SessionConfig {
        wrap: Wrap::None,
        client_cert: false,
        user_pass: true,
        reneg: None,
    },
    SessionConfig {
        wrap: Wrap::Crypt,
        client_cert: true,
        user_pass: false,
        reneg: Some(Duration::from_secs(20)),
    },
];

fn static_key(text: &[u8]) -> Zeroizing<[u8; 256]> {
    StaticKey::parse(text)
        .expect("the test static key parses")
        .to_bytes()
}

/// The server parameters of `config`.
pub fn server_params(config: &SessionConfig) -> ServerParams {
    let mut params = ServerParams::new(
        SERVER_CERT.to_vec(),
        Zeroizing::new(SERVER_KEY.to_vec()),
        config.client_cert.then(|| CA.to_vec()),
    );
    params.require_user_pass = config.user_pass;
    params.wrap = match config.wrap {
        Wrap::None => WrapKey::None,
        Wrap::Auth => WrapKey::TlsAuth {
            key: static_key(TA_KEY),
            direction: Some(0),
            digest: Digest::Sha1,
        },
        Wrap::Crypt => WrapKey::TlsCrypt {
            key: static_key(TC_KEY),
        },
    };
    params.push = vec![
        "route 10.0.0.0 255.0.0.0".into(),
        "dhcp-option DNS 10.8.0.1".into(),
    ];
    params.keepalive = Some((Duration::from_secs(10), Duration::from_secs(60)));
    params.reneg = config.reneg;
    params
}

/// An erebus client for `config`, talking to `remote` over UDP or TCP.
pub fn client_config(config: &SessionConfig, remote: SocketAddr, tcp: bool) -> TlsConfig {
    let mut text = format!(
        "client\ndev tun\nproto {}\nremote {} {}\nremote-cert-tls server\n\
         verify-x509-name server.erebus.test name\nca ca.crt\n\
         data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n",
        if tcp { "tcp-client" } else { "udp" },
        remote.ip(),
        remote.port()
    );
    if config.client_cert {
        text.push_str("cert client.crt\nkey client.key\n");
    }
    if config.user_pass {
        text.push_str("auth-user-pass\n");
    }
    let wrap_key = match config.wrap {
        Wrap::None => None,
        Wrap::Auth => {
            text.push_str("tls-auth ta.key 1\n");
            Some(TA_KEY)
        }
        Wrap::Crypt => {
            text.push_str("tls-crypt tc.key\n");
            Some(TC_KEY)
        }
    };
    let (profile, _) = Profile::parse(text.as_bytes()).expect("the client profile parses");
    let credentials = Credentials::parse(b"alice\nwonderland\n").expect("credentials");
    let materials = TlsMaterials {
        ca: Some(CA),
        cert: config.client_cert.then_some(CLIENT_CERT),
        key: config.client_cert.then_some(CLIENT_KEY),
        tls_wrap_key: wrap_key,
        user_pass: config.user_pass.then_some(&credentials),
        ..TlsMaterials::default()
    };
    tls_config(&profile, 0, remote, &materials, wall_clock()).expect("the client config")
}

/// A client session (for seeds).
pub fn client(config: &SessionConfig, remote: SocketAddr, tcp: bool, seed: u8) -> TlsSession {
    TlsSession::new(
        client_config(config, remote, tcp),
        &Seed::from_byte(seed),
        Instant::ZERO,
    )
    .expect("the client session")
}
