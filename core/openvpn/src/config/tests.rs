//! Tests of the profile parser, over the corpus in `testvectors/profiles/` and small inline
//! profiles.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

macro_rules! corpus {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testvectors/profiles/",
            $name
        ))
    };
}

fn parse(bytes: &[u8]) -> (Profile, Vec<Warning>) {
    match Profile::parse(bytes) {
        Ok(parsed) => parsed,
        Err(error) => panic!("profile refused: {error}"),
    }
}

fn parse_str(text: &str) -> (Profile, Vec<Warning>) {
    parse(text.as_bytes())
}

fn refused(text: &str) -> ProfileError {
    match Profile::parse(text.as_bytes()) {
        Ok((profile, _)) => panic!("profile accepted: {profile:?}"),
        Err(error) => error,
    }
}

fn inline(material: &Option<Material>) -> &[u8] {
    match material {
        Some(Material::Inline(bytes)) => bytes.expose(),
        other => panic!("not inline: {other:?}"),
    }
}

fn file(material: &Option<Material>) -> PathBuf {
    match material {
        Some(Material::File(path)) => path.clone(),
        other => panic!("not a file: {other:?}"),
    }
}

fn warned(warnings: &[Warning]) -> Vec<(usize, &str)> {
    warnings
        .iter()
        .map(|w| (w.line, w.directive.as_str()))
        .collect()
}

/// The bytes of a static key block: 16 lines of 32 hex characters between the markers.
fn assert_static_key_block(bytes: &[u8]) {
    let text = core::str::from_utf8(bytes).unwrap();
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "-----BEGIN OpenVPN Static key V1-----")
        .skip(1)
        .take_while(|l| *l != "-----END OpenVPN Static key V1-----")
        .collect();
    assert_eq!(body.len(), 16, "{text}");
    assert!(
        body.iter()
            .all(|l| l.len() == 32 && l.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    assert!(text.ends_with("-----END OpenVPN Static key V1-----\n"));
}

#[test]
fn config_corpus_tls_auth_inline() {
    let (profile, warnings) = parse(corpus!("tls-auth-inline.ovpn"));
    assert_eq!(profile.mode(), Mode::Tls);
    assert!(profile.client && profile.pull && profile.tls_client);
    assert_eq!(profile.connections.len(), 1);
    let connection = &profile.connections[0];
    assert_eq!(connection.host, "vpn.example.net");
    assert_eq!(connection.port, 1194);
    assert_eq!(connection.transport, Transport::Udp);
    assert_eq!(connection.line, 9);
    assert!(connection.nobind);
    assert_eq!(connection.explicit_exit_notify, Some(1));
    assert_eq!(profile.resolv_retry, Some(ResolvRetry::Infinite));
    assert!(profile.persist_key && profile.persist_tun);
    assert_eq!(profile.remote_cert_tls, Some(CertRole::Server));
    assert_eq!(profile.cipher, Some(DataCipher::Aes256Cbc));
    assert_eq!(
        profile.negotiable_ciphers(),
        [
            DataCipher::Aes256Gcm,
            DataCipher::Aes128Gcm,
            DataCipher::ChaCha20Poly1305,
            DataCipher::Aes256Cbc
        ]
    );
    assert_eq!(profile.digest(), Digest::Sha256);
    assert_eq!(profile.compression, Some(Compression::StubV2));
    assert_eq!((profile.verb, profile.mute), (Some(3), Some(20)));

    let ca = inline(&profile.ca);
    assert!(ca.starts_with(b"-----BEGIN CERTIFICATE-----\n"));
    assert!(ca.ends_with(b"-----END CERTIFICATE-----\n"));
    assert!(inline(&profile.cert).starts_with(b"-----BEGIN CERTIFICATE-----\n"));
    assert!(inline(&profile.key).starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
    match &connection.tls_wrap {
        Some(TlsWrap::Auth {
            key: Material::Inline(key),
            direction,
        }) => {
            assert_eq!(*direction, Some(KeyDirection::Inverse));
            assert!(
                key.expose()
                    .starts_with(b"#\n# 2048 bit OpenVPN static key\n")
            );
            assert_static_key_block(key.expose());
        }
        other => panic!("{other:?}"),
    }
    // One warning per ignored directive, on its own line.
    assert_eq!(
        warned(&warnings),
        [
            (23, "block-outside-dns"),
            (24, "script-security"),
            (25, "up"),
            (26, "down"),
        ]
    );
}

#[test]
fn config_corpus_tls_crypt_userpass() {
    let (profile, warnings) = parse(corpus!("tls-crypt-userpass.ovpn"));
    assert_eq!(profile.mode(), Mode::Tls);
    assert_eq!(profile.dev.as_deref(), Some("tun0"));
    assert!(profile.remote_random);
    let remotes: Vec<(&str, u16, Transport, AddressFamily)> = profile
        .connections
        .iter()
        .map(|c| (c.host.as_str(), c.port, c.transport, c.family))
        .collect();
    assert_eq!(
        remotes,
        [
            ("gw1.example.org", 1194, Transport::Udp, AddressFamily::Any),
            ("gw2.example.org", 443, Transport::Tcp, AddressFamily::Any),
            // No port on the line: `port 1196` applies.
            ("192.0.2.10", 1195, Transport::Udp, AddressFamily::Any),
            ("2001:db8::10", 1194, Transport::Udp, AddressFamily::Ipv6),
        ]
    );
    assert_eq!(profile.connections[2].port, 1195);
    for connection in &profile.connections {
        assert_eq!(connection.server_poll_timeout, Some(4));
        assert_eq!(
            connection.connect_retry,
            Some(ConnectRetry {
                initial: 2,
                max: Some(30)
            })
        );
        assert_eq!(
            connection.mssfix,
            Some(Mssfix {
                size: Some(1400),
                mode: MssfixMode::Payload
            })
        );
        assert_eq!(connection.tun_mtu, Some(1500));
        assert!(matches!(
            &connection.tls_wrap,
            Some(TlsWrap::Crypt {
                key: Material::Inline(_)
            })
        ));
    }
    assert_eq!(profile.connect_retry_max, Some(5));
    assert_eq!(profile.resolv_retry, Some(ResolvRetry::Seconds(60)));
    assert_eq!(profile.auth_user_pass, Some(AuthUserPass::Prompt));
    assert!(profile.auth_nocache);
    assert_eq!(profile.auth_retry, Some(AuthRetry::Interact));
    assert_eq!(
        profile.static_challenge,
        Some(StaticChallenge {
            text: "Enter your one-time code".to_owned(),
            echo: true,
            format: None
        })
    );
    assert!(profile.no_client_cert);
    assert!(profile.setenv.contains(&SetEnv {
        name: "UV_DEVICE".to_owned(),
        value: "erebus test".to_owned()
    }));
    assert!(profile.push_peer_info);
    assert_eq!(
        profile.verify_x509_name,
        Some(VerifyX509Name {
            name: "server.example.org".to_owned(),
            kind: X509NameKind::Name
        })
    );
    assert_eq!(
        profile.tls_version_min,
        Some(TlsVersionMin {
            version: Some(TlsVersion::V1_2),
            or_highest: false
        })
    );
    assert_eq!(
        profile.tls_ciphersuites.as_deref(),
        Some("TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")
    );
    assert!(profile.tls_cipher.is_some());
    // The optional `?AES-256-OCB` is skipped with a warning.
    assert_eq!(
        profile.data_ciphers,
        Some(vec![DataCipher::Aes256Gcm, DataCipher::ChaCha20Poly1305])
    );
    assert_eq!(profile.data_ciphers_fallback, Some(DataCipher::Aes128Cbc));
    assert_eq!(profile.reneg_sec, Some(RenegSec { max: 0, min: None }));
    assert_eq!(
        profile.keepalive,
        Some(Keepalive {
            interval: 10,
            timeout: 60
        })
    );
    assert!(profile.route_nopull);
    assert_eq!(
        profile.pull_filters,
        [
            PullFilter {
                action: PullFilterAction::Ignore,
                text: "redirect-gateway".to_owned()
            },
            PullFilter {
                action: PullFilterAction::Accept,
                text: "route 10.".to_owned()
            },
            PullFilter {
                action: PullFilterAction::Reject,
                text: "dhcp-option DNS6".to_owned()
            },
        ]
    );
    assert_eq!(profile.routes.len(), 2);
    assert_eq!(
        profile.routes[0].ipv4_net(),
        IpNet::from_netmask(Ipv4Addr::new(10, 20, 0, 0), Ipv4Addr::new(255, 255, 0, 0))
    );
    assert_eq!(profile.routes[1].network, "intranet.example.org");
    assert_eq!(profile.routes[1].ipv4_net(), None);
    assert_eq!(
        profile.routes_ipv6[0].network,
        IpNet::new("2001:db8:1::".parse().unwrap(), 48).unwrap()
    );
    assert_eq!(
        profile.redirect_gateway,
        Some(RedirectGateway {
            ipv4: true,
            ipv6: true,
            def1: true,
            bypass_dhcp: true,
            ..RedirectGateway::default()
        })
    );
    assert_eq!(
        profile.dhcp_options,
        [
            DhcpOption::Dns(IpAddr::V4(Ipv4Addr::new(10, 20, 0, 53))),
            DhcpOption::Dns(IpAddr::V6("2001:db8:1::53".parse().unwrap())),
            DhcpOption::Domain("corp.example.org".to_owned()),
            DhcpOption::DomainSearch("lab.example.org".to_owned()),
            DhcpOption::Other {
                kind: "WINS".to_owned(),
                value: Some("10.20.0.54".to_owned())
            },
        ]
    );
    assert_eq!(
        profile.ignore_unknown_options,
        ["block-outside-dns", "register-dns"]
    );
    assert!(profile.mute_replay_warnings);
    assert_eq!(
        profile.replay_window,
        Some(ReplayWindow {
            size: 128,
            seconds: Some(30)
        })
    );
    assert_eq!(
        (profile.sndbuf, profile.rcvbuf, profile.txqueuelen),
        (Some(393_216), Some(393_216), Some(1000))
    );
    assert_eq!(
        warned(&warnings),
        [
            (27, "data-ciphers"),
            (47, "block-outside-dns"),
            (48, "register-dns"),
            (49, "user"),
            (50, "group"),
        ]
    );
}

#[test]
fn config_corpus_connection_blocks() {
    let (profile, warnings) = parse(corpus!("connection-blocks.ovpn"));
    assert_eq!(profile.connections.len(), 2);
    let (udp, tcp) = (&profile.connections[0], &profile.connections[1]);
    assert_eq!(
        (udp.host.as_str(), udp.port, udp.transport),
        ("vpn.example.com", 1194, Transport::Udp)
    );
    assert_eq!(udp.line, 7);
    // Inherited from the top level before the block.
    assert!(udp.nobind && tcp.nobind);
    assert_eq!(
        udp.connect_retry,
        Some(ConnectRetry {
            initial: 3,
            max: None
        })
    );
    assert_eq!(udp.explicit_exit_notify, Some(2));
    assert_eq!(
        udp.fragment,
        Some(Fragment {
            size: 1300,
            mtu: false
        })
    );
    assert_eq!(
        (tcp.host.as_str(), tcp.port, tcp.transport),
        ("vpn.example.com", 443, Transport::Tcp)
    );
    assert_eq!(
        tcp.connect_retry,
        Some(ConnectRetry {
            initial: 10,
            max: Some(60)
        })
    );
    assert_eq!(tcp.explicit_exit_notify, None);
    assert_eq!(tcp.fragment, None);
    // The profile-wide tls-crypt-v2 applies to both blocks.
    for connection in [udp, tcp] {
        assert_eq!(
            connection.tls_wrap,
            Some(TlsWrap::CryptV2 {
                key: Material::File(PathBuf::from("client-v2.key"))
            })
        );
    }
    assert_eq!(file(&profile.ca), PathBuf::from("ca.crt"));
    assert_eq!(file(&profile.cert), PathBuf::from("client.crt"));
    assert_eq!(file(&profile.key), PathBuf::from("client.key"));
    // The top-level remote is ignored, and `proto` after the blocks reaches none of them.
    assert_eq!(warned(&warnings), [(17, "proto"), (16, "remote")]);
}

#[test]
fn config_corpus_windows_crlf_bom() {
    let bytes = corpus!("windows-crlf-bom.ovpn");
    assert!(bytes.starts_with(b"\xEF\xBB\xBF# Windows"));
    assert!(bytes.windows(2).any(|w| w == b"\r\n"));
    let (profile, warnings) = parse(bytes);
    assert_eq!(profile.mode(), Mode::Tls);
    let connection = &profile.connections[0];
    assert_eq!(connection.host, "vpn.example.com");
    assert_eq!(connection.port, 443);
    // `proto tcp` with `client` means a TCP client.
    assert_eq!(connection.transport, Transport::Tcp);
    assert_eq!(
        file(&profile.pkcs12),
        PathBuf::from(r"C:\Users\Ana Lima\OpenVPN\config\ana.p12")
    );
    assert_eq!(
        connection.tls_wrap,
        Some(TlsWrap::Auth {
            key: Material::File(PathBuf::from(r"C:\Users\Ana Lima\OpenVPN\config\ta.key")),
            direction: Some(KeyDirection::Inverse)
        })
    );
    assert_eq!(
        profile.auth_user_pass,
        Some(AuthUserPass::From(Material::File(PathBuf::from(
            r"C:\Users\Ana Lima\creds.txt"
        ))))
    );
    assert_eq!(profile.cipher, Some(DataCipher::Aes128Gcm));
    assert_eq!(
        warned(&warnings),
        [
            (10, "route-method"),
            (11, "route-delay"),
            (12, "block-outside-dns"),
            (13, "management"),
            (14, "win-sys"),
        ]
    );
}

#[test]
fn config_corpus_static_key_p2p() {
    let (profile, warnings) = parse(corpus!("static-key-p2p.ovpn"));
    assert_eq!(profile.mode(), Mode::StaticKey);
    assert!(!profile.client && !profile.pull && !profile.tls_client);
    let secret = profile.secret.as_ref().unwrap();
    assert_eq!(secret.direction, Some(KeyDirection::Inverse));
    match &secret.key {
        Material::Inline(key) => assert_static_key_block(key.expose()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        profile.ifconfig,
        Some(Ifconfig {
            local: Ipv4Addr::new(10, 8, 0, 2),
            remote_or_netmask: Ipv4Addr::new(10, 8, 0, 1)
        })
    );
    assert_eq!(profile.cipher, Some(DataCipher::Aes256Cbc));
    assert_eq!(profile.auth, Some(Digest::Sha256));
    assert_eq!(profile.connections[0].host, "peer.example.net");
    assert_eq!(profile.connections[0].tls_wrap, None);
    assert_eq!(warned(&warnings), [(10, "ping-timer-rem")]);
}

#[test]
fn config_corpus_plaintext_p2p() {
    let (profile, warnings) = parse(corpus!("plaintext-p2p.ovpn"));
    assert_eq!(profile.mode(), Mode::Plaintext);
    assert!(warnings.is_empty(), "{warnings:?}");
    let connection = &profile.connections[0];
    assert_eq!(
        (connection.host.as_str(), connection.port, connection.family),
        ("198.51.100.7", 1194, AddressFamily::Ipv4)
    );
    assert_eq!(
        profile.ifconfig,
        Some(Ifconfig {
            local: Ipv4Addr::new(10, 9, 0, 2),
            remote_or_netmask: Ipv4Addr::new(10, 9, 0, 1)
        })
    );
    assert_eq!(
        profile.ifconfig_ipv6,
        Some(IfconfigIpv6 {
            local: IpNet::new("fd00:9::2".parse().unwrap(), 64).unwrap(),
            remote: "fd00:9::1".parse::<Ipv6Addr>().unwrap()
        })
    );
    assert_eq!(
        profile.routes,
        [Route {
            network: "10.9.1.0".to_owned(),
            netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            gateway: Some("10.9.0.1".to_owned()),
            metric: None
        }]
    );
    assert_eq!(
        (profile.ping, profile.ping_restart, profile.verb),
        (Some(10), Some(60), Some(3))
    );
}

#[test]
fn config_corpus_tls_crypt_v2_fingerprint() {
    let (profile, warnings) = parse(corpus!("tls-crypt-v2-fingerprint.ovpn"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(profile.ca, None);
    assert_eq!(profile.peer_fingerprints.len(), 2);
    assert_eq!(profile.peer_fingerprints[0][..3], [0x5E, 0x66, 0x2A]);
    assert_eq!(profile.peer_fingerprints[1][31], 0xF9);
    assert_eq!(profile.connections[0].family, AddressFamily::Ipv6);
    match &profile.connections[0].tls_wrap {
        Some(TlsWrap::CryptV2 {
            key: Material::Inline(key),
        }) => assert!(
            key.expose()
                .starts_with(b"-----BEGIN OpenVPN tls-crypt-v2 client key-----\n")
        ),
        other => panic!("{other:?}"),
    }
    let Some(AuthUserPass::From(Material::Inline(block))) = &profile.auth_user_pass else {
        panic!("{:?}", profile.auth_user_pass);
    };
    let credentials = Credentials::parse(block.expose()).unwrap();
    assert_eq!(credentials.username, "alice");
    assert_eq!(
        credentials.password.as_ref().map(SecretString::expose),
        Some("correct horse battery staple")
    );
}

/// Every bad profile of the corpus, with the line and directive its error must name.
const BAD: &[(&str, &[u8], Option<usize>, &str)] = &[
    ("dev-tap", corpus!("bad/dev-tap.ovpn"), Some(3), "dev"),
    (
        "cipher-bf-cbc",
        corpus!("bad/cipher-bf-cbc.ovpn"),
        Some(6),
        "cipher",
    ),
    (
        "data-ciphers-unknown",
        corpus!("bad/data-ciphers-unknown.ovpn"),
        Some(4),
        "data-ciphers",
    ),
    ("auth-md5", corpus!("bad/auth-md5.ovpn"), Some(5), "auth"),
    (
        "http-proxy",
        corpus!("bad/http-proxy.ovpn"),
        Some(4),
        "http-proxy",
    ),
    (
        "socks-proxy-in-connection",
        corpus!("bad/socks-proxy-in-connection.ovpn"),
        Some(7),
        "socks-proxy",
    ),
    (
        "unknown-directive",
        corpus!("bad/unknown-directive.ovpn"),
        Some(6),
        "frobnicate",
    ),
    (
        "ignore-unknown-too-late",
        corpus!("bad/ignore-unknown-too-late.ovpn"),
        Some(4),
        "frobnicate",
    ),
    (
        "missing-argument",
        corpus!("bad/missing-argument.ovpn"),
        Some(4),
        "remote",
    ),
    (
        "bad-number",
        corpus!("bad/bad-number.ovpn"),
        Some(6),
        "keepalive",
    ),
    ("bad-port", corpus!("bad/bad-port.ovpn"), Some(3), "remote"),
    (
        "tls-auth-and-tls-crypt",
        corpus!("bad/tls-auth-and-tls-crypt.ovpn"),
        Some(7),
        "tls-crypt",
    ),
    (
        "secret-with-tls-client",
        corpus!("bad/secret-with-tls-client.ovpn"),
        Some(7),
        "secret",
    ),
    ("no-remote", corpus!("bad/no-remote.ovpn"), None, "remote"),
    (
        "unclosed-inline",
        corpus!("bad/unclosed-inline.ovpn"),
        Some(5),
        "ca",
    ),
    (
        "connection-without-remote",
        corpus!("bad/connection-without-remote.ovpn"),
        Some(5),
        "connection",
    ),
    (
        "ca-in-connection",
        corpus!("bad/ca-in-connection.ovpn"),
        Some(6),
        "ca",
    ),
    (
        "static-key-gcm",
        corpus!("bad/static-key-gcm.ovpn"),
        Some(4),
        "cipher",
    ),
    (
        "static-key-no-cipher",
        corpus!("bad/static-key-no-cipher.ovpn"),
        Some(4),
        "secret",
    ),
    (
        "bad-backslash",
        corpus!("bad/bad-backslash.ovpn"),
        Some(4),
        "ca",
    ),
    (
        "tcp-server",
        corpus!("bad/tcp-server.ovpn"),
        Some(2),
        "proto",
    ),
    (
        "tcp-ambiguous",
        corpus!("bad/tcp-ambiguous.ovpn"),
        Some(2),
        "remote",
    ),
    (
        "ca-without-tls",
        corpus!("bad/ca-without-tls.ovpn"),
        Some(4),
        "ca",
    ),
    (
        "pull-without-tls",
        corpus!("bad/pull-without-tls.ovpn"),
        Some(1),
        "pull",
    ),
    ("no-ca", corpus!("bad/no-ca.ovpn"), None, "ca"),
    (
        "cert-without-key",
        corpus!("bad/cert-without-key.ovpn"),
        Some(5),
        "cert",
    ),
    (
        "server-option",
        corpus!("bad/server-option.ovpn"),
        Some(6),
        "push",
    ),
    (
        "unterminated-quote",
        corpus!("bad/unterminated-quote.ovpn"),
        Some(6),
        "static-challenge",
    ),
    (
        "fragment-over-tcp",
        corpus!("bad/fragment-over-tcp.ovpn"),
        Some(4),
        "fragment",
    ),
    (
        "two-remotes-in-connection",
        corpus!("bad/two-remotes-in-connection.ovpn"),
        Some(7),
        "remote",
    ),
    (
        "tls-crypt-twice-in-connection",
        corpus!("bad/tls-crypt-twice-in-connection.ovpn"),
        Some(8),
        "tls-auth",
    ),
];

#[test]
fn config_corpus_bad_profiles_name_line_and_directive() {
    for &(name, bytes, line, directive) in BAD {
        let error = match Profile::parse(bytes) {
            Ok((profile, _)) => panic!("{name}: accepted: {profile:?}"),
            Err(error) => error,
        };
        assert_eq!(
            (error.line, error.directive.as_str()),
            (line, directive),
            "{name}: {error}"
        );
        // The message is a sentence a user can act on, not a code.
        assert!(error.message.len() > 20, "{name}: {error}");
        assert!(error.message.contains(' '), "{name}: {error}");
    }
}

#[test]
fn config_bad_profile_messages_say_why() {
    let message = |name: &str| {
        let (_, bytes, _, _) = BAD.iter().find(|(n, ..)| *n == name).unwrap();
        Profile::parse(bytes).unwrap_err().to_string()
    };
    assert!(message("dev-tap").contains("tap"));
    assert!(message("cipher-bf-cbc").contains("`BF-CBC`"));
    assert!(message("cipher-bf-cbc").starts_with("line 6: cipher: "));
    assert!(message("data-ciphers-unknown").contains("`CAMELLIA-256-CBC`"));
    assert!(message("auth-md5").contains("`MD5`"));
    assert!(message("http-proxy").contains("proxy"));
    assert!(message("unknown-directive").contains("ignore-unknown-option"));
    assert!(message("missing-argument").contains("argument"));
    assert!(message("bad-number").contains("`sixty`"));
    assert!(message("no-remote").starts_with("remote: "));
    assert!(message("static-key-no-cipher").contains("BF-CBC"));
}

#[test]
fn config_directive_names_take_double_dashes_and_quotes() {
    let (profile, _) = parse_str(
        "--client\n--dev tun\n--remote 'vpn.example.net' \"443\" tcp4-client\n--ca ca.crt\n\
         auth-user-pass \"my creds.txt\"\n",
    );
    let connection = &profile.connections[0];
    assert_eq!(connection.port, 443);
    assert_eq!(connection.transport, Transport::Tcp);
    assert_eq!(connection.family, AddressFamily::Ipv4);
    assert_eq!(
        profile.auth_user_pass,
        Some(AuthUserPass::From(Material::File("my creds.txt".into())))
    );
}

#[test]
fn config_unknown_options_escape_hatches() {
    let base = "client\ndev tun\nremote vpn.example.net\nca ca.crt\nauth-user-pass\n";
    // `setenv opt`: a warning, even for a wrong argument count.
    let (_, warnings) = parse_str(&format!(
        "{base}setenv opt frobnicate yes\nsetenv opt nobind 1\n"
    ));
    assert_eq!(warned(&warnings), [(6, "frobnicate"), (7, "nobind")]);
    assert!(warnings[0].message.contains("setenv opt"));
    // A known option behind `setenv opt` still takes effect.
    let (profile, warnings) = parse_str(&format!("{base}setenv opt nobind\n"));
    assert!(warnings.is_empty());
    assert!(profile.connections[0].nobind);
    // `ignore-unknown-option` covers later lines only, and strips `--`.
    let (_, warnings) = parse_str(&format!(
        "{base}ignore-unknown-option --frobnicate other\nfrobnicate\n"
    ));
    assert_eq!(warned(&warnings), [(7, "frobnicate")]);
    // `setenv FORWARD_COMPATIBLE 1` turns every later unknown option into a warning.
    let (_, warnings) = parse_str(&format!(
        "{base}setenv FORWARD_COMPATIBLE 1\nfrobnicate\nwhatever 1 2\n"
    ));
    assert_eq!(warned(&warnings), [(7, "frobnicate"), (8, "whatever")]);
    // But none of them excuses an option erebus cannot honour.
    let error = refused(&format!("{base}setenv opt dev-type tap\n"));
    assert_eq!(
        (error.line, error.directive.as_str()),
        (Some(6), "dev-type")
    );
    let error = refused(&format!(
        "{base}ignore-unknown-option cipher\ncipher BF-CBC\n"
    ));
    assert_eq!((error.line, error.directive.as_str()), (Some(7), "cipher"));
}

#[test]
fn config_ignored_options_warn_once_each() {
    let (_, warnings) = parse_str(
        "client\ndev tun\nremote a.example\nca ca.crt\nauth-user-pass\nuser nobody\n\
         group nogroup\ndaemon\nlog /var/log/ovpn.log\nstatus s.log 10\nroute-up /bin/true\n\
         plugin /lib/x.so arg\nchroot /var/empty\nwritepid /run/o.pid\nmanagement-hold\n\
         dhcp-release\ntls-verify /bin/check\nauth-user-pass-verify /bin/v via-env\n",
    );
    let names: Vec<&str> = warnings.iter().map(|w| w.directive.as_str()).collect();
    assert_eq!(
        names,
        [
            "user",
            "group",
            "daemon",
            "log",
            "status",
            "route-up",
            "plugin",
            "chroot",
            "writepid",
            "management-hold",
            "dhcp-release",
            "tls-verify",
            "auth-user-pass-verify"
        ]
    );
    assert_eq!(warnings[0].line, 6);
    assert!(warnings.iter().all(|w| w.message.starts_with("ignored: ")));
}

#[test]
fn config_key_direction_follows_openvpn() {
    let base = "client\ndev tun\nremote a.example\nca ca.crt\nauth-user-pass\n";
    let wrap = |extra: &str| {
        parse_str(&format!("{base}{extra}")).0.connections[0]
            .tls_wrap
            .clone()
    };
    // The argument of a file tls-auth sets the direction.
    assert!(matches!(
        wrap("tls-auth ta.key 0\n"),
        Some(TlsWrap::Auth {
            direction: Some(KeyDirection::Normal),
            ..
        })
    ));
    // Without one, the wrap is bidirectional.
    assert!(matches!(
        wrap("tls-auth ta.key\n"),
        Some(TlsWrap::Auth {
            direction: None,
            ..
        })
    ));
    // `key-direction` applies wherever it stands, like OpenVPN's single setting.
    assert!(matches!(
        wrap("<tls-auth>\nx\n</tls-auth>\nkey-direction 1\n"),
        Some(TlsWrap::Auth {
            direction: Some(KeyDirection::Inverse),
            ..
        })
    ));
    let error = refused(&format!("{base}key-direction 2\n"));
    assert_eq!(
        (error.line, error.directive.as_str()),
        (Some(6), "key-direction")
    );
    // Static key: `secret file 0`.
    let (profile, _) =
        parse_str("dev tun\nremote p.example\nsecret s.key 0\ncipher none\nauth none\n");
    assert_eq!(
        profile.secret,
        Some(SharedSecret {
            key: Material::File("s.key".into()),
            direction: Some(KeyDirection::Normal)
        })
    );
    assert_eq!(profile.mode(), Mode::StaticKey);
    assert_eq!(profile.cipher, Some(DataCipher::None));
    assert_eq!(profile.digest(), Digest::None);
}

#[test]
fn config_connection_blocks_inherit_and_override() {
    let (profile, warnings) = parse_str(
        "client\ndev tun\nca ca.crt\nauth-user-pass\nport 1300\nproto tcp\ntls-auth ta.key 1\n\
         <connection>\nremote a.example\n</connection>\n\
         <connection>\nremote b.example 443 udp\ntls-crypt tc.key\nlport 5000\n</connection>\n\
         nobind\n<connection>\nremote c.example\n</connection>\n",
    );
    let c = &profile.connections;
    assert_eq!(c.len(), 3);
    assert_eq!((c[0].port, c[0].transport), (1300, Transport::Tcp));
    assert_eq!((c[1].port, c[1].transport), (443, Transport::Udp));
    assert_eq!(c[1].local_port, Some(5000));
    assert_eq!(c[0].local_port, None);
    assert!(matches!(
        c[0].tls_wrap,
        Some(TlsWrap::Auth {
            direction: Some(KeyDirection::Inverse),
            ..
        })
    ));
    assert!(matches!(c[1].tls_wrap, Some(TlsWrap::Crypt { .. })));
    // `nobind` came between blocks: only the third block has it.
    assert!(!c[0].nobind && !c[1].nobind && c[2].nobind);
    assert_eq!(warned(&warnings), [(16, "nobind")]);
}

#[test]
fn config_compression_variants() {
    let base = "client\ndev tun\nremote a.example\nca ca.crt\nauth-user-pass\n";
    let compression = |line: &str| {
        let (profile, warnings) = parse_str(&format!("{base}{line}\n"));
        (profile.compression, warnings.len())
    };
    assert_eq!(compression("comp-lzo no"), (Some(Compression::LzoStub), 0));
    assert_eq!(
        compression("comp-lzo"),
        (Some(Compression::Lzo { adaptive: true }), 1)
    );
    assert_eq!(
        compression("comp-lzo yes"),
        (Some(Compression::Lzo { adaptive: false }), 1)
    );
    assert_eq!(compression("compress"), (Some(Compression::Stub), 0));
    assert_eq!(
        compression("compress stub-v2"),
        (Some(Compression::StubV2), 0)
    );
    assert_eq!(
        compression("compress lz4-v2"),
        (Some(Compression::Lz4V2), 1)
    );
    // The later of comp-lzo and compress wins.
    let (profile, _) = parse_str(&format!("{base}comp-lzo no\ncompress stub-v2\n"));
    assert_eq!(profile.compression, Some(Compression::StubV2));
    let error = refused(&format!("{base}comp-lzo maybe\n"));
    assert_eq!(
        (error.line, error.directive.as_str()),
        (Some(6), "comp-lzo")
    );
    let (profile, _) = parse_str(&format!("{base}allow-compression asym\n"));
    assert_eq!(profile.allow_compression, Some(AllowCompression::Asym));
}

#[test]
fn config_argument_errors_name_the_line() {
    let base = "client\ndev tun\nremote a.example\nca ca.crt\nauth-user-pass\n";
    for (line, directive) in [
        ("nobind 1", "nobind"),
        ("keepalive 10", "keepalive"),
        ("verb -1", "verb"),
        ("verb 99999999999", "verb"),
        ("proto sctp", "proto"),
        ("remote-cert-tls peer", "remote-cert-tls"),
        ("verify-x509-name srv cn", "verify-x509-name"),
        ("tls-version-min 1.4", "tls-version-min"),
        ("ifconfig 10.0.0.1 x", "ifconfig"),
        ("ifconfig-ipv6 fd00::2/48 fd00::1", "ifconfig-ipv6"),
        ("route 10.0.0.0 255.0.255.0", "route"),
        ("dhcp-option DNS not-an-ip", "dhcp-option"),
        ("pull-filter drop route", "pull-filter"),
        ("redirect-gateway everything", "redirect-gateway"),
        ("replay-window 70000", "replay-window"),
        ("fragment 40", "fragment"),
        ("peer-fingerprint AB:CD", "peer-fingerprint"),
        ("auth-retry sometimes", "auth-retry"),
        ("topology star", "topology"),
        ("<remote>\nx\n</remote>", "remote"),
        ("capath /etc/ssl/certs", "capath"),
        ("pkcs11-providers /usr/lib/p11.so", "pkcs11-providers"),
        ("setenv GENERIC_CONFIG 1", "setenv"),
    ] {
        let error = refused(&format!("{base}{line}\n"));
        assert_eq!(
            (error.line, error.directive.as_str()),
            (Some(6), directive),
            "{line}: {error}"
        );
    }
}

#[test]
fn config_secrets_stay_out_of_debug_output() {
    let (profile, _) = parse(corpus!("tls-crypt-v2-fingerprint.ovpn"));
    let debug = format!("{profile:?}");
    assert!(!debug.contains("correct horse"), "{debug}");
    assert!(!debug.contains("BEGIN OpenVPN tls-crypt-v2"), "{debug}");
    let (profile, _) = parse(corpus!("tls-auth-inline.ovpn"));
    let debug = format!("{profile:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(!debug.contains("Static key"), "{debug}");
    assert!(debug.contains("redacted"));
    let (profile, _) = parse_str(
        "client\ndev tun\nremote a.example\nca ca.crt\nauth-user-pass\nauth-token s3cr3t-t0ken\n",
    );
    assert_eq!(
        profile.auth_token.as_ref().map(SecretString::expose),
        Some("s3cr3t-t0ken")
    );
    assert!(!format!("{profile:?}").contains("s3cr3t"));
    let credentials = Credentials::parse(b"bob\r\nhunter2\r\n").unwrap();
    assert_eq!(credentials.username, "bob");
    assert!(!format!("{credentials:?}").contains("hunter2"));
}

#[test]
fn config_credentials_file_format() {
    let only_user = Credentials::parse(b"carol\n").unwrap();
    assert_eq!(only_user.username, "carol");
    assert_eq!(only_user.password, None);
    assert_eq!(Credentials::parse(b""), Err(CredentialsError::NoUsername));
    assert_eq!(
        Credentials::parse(b"\nx\n"),
        Err(CredentialsError::NoUsername)
    );
    assert_eq!(
        Credentials::parse(b"\xff\n"),
        Err(CredentialsError::NotUtf8)
    );
}

#[test]
fn config_mode_helper() {
    let (tls, _) = parse(corpus!("tls-auth-inline.ovpn"));
    let (static_key, _) = parse(corpus!("static-key-p2p.ovpn"));
    let (plaintext, _) = parse(corpus!("plaintext-p2p.ovpn"));
    assert_eq!(
        [tls.mode(), static_key.mode(), plaintext.mode()],
        [Mode::Tls, Mode::StaticKey, Mode::Plaintext]
    );
    // `tls-client` + `pull` without `client` is TLS too, and `tcp` is then ambiguous.
    let (profile, _) = parse_str(
        "tls-client\npull\ndev tun\nremote a.example 1194 tcp-client\nca ca.crt\nauth-user-pass\n",
    );
    assert_eq!(profile.mode(), Mode::Tls);
    assert!(!profile.client);
}

#[test]
fn config_tls_cipher_outside_data_ciphers_warns() {
    let (_, warnings) = parse_str(
        "client\ndev tun\nremote a.example\nca ca.crt\nauth-user-pass\ncipher AES-256-CBC\n",
    );
    assert_eq!(warned(&warnings), [(6, "cipher")]);
    let (_, warnings) = parse_str(
        "client\ndev tun\nremote a.example\nca ca.crt\nauth-user-pass\ncipher AES-256-GCM\n",
    );
    assert!(warnings.is_empty());
}

#[test]
fn config_empty_and_comment_only_profiles_have_no_server() {
    for text in ["", "\n\n", "# nothing\n; here\n", "\u{feff}\r\n"] {
        let error = refused(text);
        assert_eq!((error.line, error.directive.as_str()), (None, "remote"));
    }
}

/// Words that make the generated profiles below hit many directives.
const WORDS: &[&str] = &[
    "client",
    "dev",
    "tun",
    "tap",
    "remote",
    "proto",
    "udp",
    "tcp",
    "port",
    "1194",
    "0",
    "1",
    "ca",
    "cert",
    "key",
    "tls-auth",
    "tls-crypt",
    "secret",
    "cipher",
    "AES-256-GCM",
    "auth",
    "SHA256",
    "<connection>",
    "</connection>",
    "<ca>",
    "</ca>",
    "<secret>",
    "</secret>",
    "setenv",
    "opt",
    "ignore-unknown-option",
    "route",
    "10.0.0.0",
    "255.0.0.0",
    "dhcp-option",
    "DNS",
    "ifconfig",
    "keepalive",
    "\"",
    "'",
    "\\",
    "#",
    ";",
    "--",
    "\r",
    "\t",
    " ",
];

proptest! {
    #[test]
    fn config_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Profile::parse(&bytes);
    }

    #[test]
    fn config_arbitrary_word_salad_never_panics(
        lines in proptest::collection::vec(
            proptest::collection::vec(proptest::sample::select(WORDS), 0..6), 0..40)
    ) {
        let text: String = lines
            .iter()
            .map(|words| words.join(" "))
            .collect::<Vec<_>>()
            .join("\n");
        if let Err(error) = Profile::parse(text.as_bytes()) {
            // Every error that names a line names one the profile has.
            if let Some(line) = error.line {
                prop_assert!(line >= 1 && line <= lines.len().max(1), "{error}");
            }
        }
    }

    #[test]
    fn config_valid_profile_survives_any_trailing_comment(comment in "[^\n\r]{0,80}") {
        let text = format!(
            "client\ndev tun\nremote a.example\nca ca.crt\nauth-user-pass\n# {comment}\n"
        );
        let (profile, warnings) = Profile::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(profile.connections.len(), 1);
        prop_assert!(warnings.is_empty());
    }
}

#[test]
fn mssfix_gives_the_mss_that_keeps_packets_within_the_limit() {
    // AES-GCM with a peer id: 4 bytes of header, 4 of packet id, 16 of tag.
    let aead = 24;
    let mtu = |size| Mssfix {
        size: Some(size),
        mode: MssfixMode::Mtu,
    };
    // The default, `mssfix 1492 mtu`, over UDP: 1492 - 20 - 8 - 24 - 40.
    let default = Mssfix {
        size: None,
        mode: MssfixMode::Mtu,
    };
    assert_eq!(default.tcp_mss(aead, false), Some(1400));
    assert_eq!(mtu(1492).tcp_mss(aead, false), Some(1400));
    // Over TCP the outer TCP header and the length prefix count instead of UDP's.
    assert_eq!(mtu(1492).tcp_mss(aead, true), Some(1386));
    // Without a keyword the size is the UDP payload.
    let payload = Mssfix {
        size: Some(1300),
        mode: MssfixMode::Payload,
    };
    assert_eq!(payload.tcp_mss(aead, false), Some(1236));
    // `mssfix 0` turns clamping off; a tiny limit still leaves TCP the IPv4 minimum.
    assert_eq!(mtu(0).tcp_mss(aead, false), None);
    assert_eq!(mtu(200).tcp_mss(aead, false), Some(536));
    let (profile, _) =
        Profile::parse(b"remote vpn.example 1194\nifconfig 10.8.0.2 10.8.0.1\nmssfix 1300\n")
            .unwrap();
    assert_eq!(profile.connections[0].mssfix, Some(payload));
}
