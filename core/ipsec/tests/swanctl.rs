//! swanctl.conf parsing: the stock strongSwan initiator configuration, the settings syntax,
//! every error and warning, proposals, and arbitrary input.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use erebus_ipsec::config::{
    AuthMethod, ChildConfig, Connection, LocalSide, RemoteSide, Secret, Warning,
};
use erebus_ipsec::proposal::{DhGroup, Encr, Integ, Prf, Proposal};
use erebus_ipsec::swanctl::{
    self, LoadOptions, ProposalKind, SwanctlError, connection_names, default_proposals, load,
    load_with_options, parse_proposal,
};
use erebus_sansio::tunnel::IpNet;
use proptest::prelude::*;
use zeroize::Zeroizing;

/// `conf/initiator/swanctl.conf` of the strongSwan reference setup, verbatim.
const STOCK: &str = r#"# swanctl.conf of the stock strongSwan INITIATOR (road warrior).
# Connections (pick one with: ./initiator.sh <name>):
#   psk       PSK, IKE aes256gcm16-prfsha256-x25519, ESP aes256gcm16
#   psk-4500  same, but IKE_SA_INIT is sent straight to UDP 4500 (with the
#             non-ESP marker), as a client that never uses port 500 would
#   eap       EAP-MSCHAPv2 (carol), server cert, IKE/ESP chacha20poly1305
# The responder address comes from the SSW_RESP_IP default in lib.sh.

connections {
	psk {
		version = 2
		remote_addrs = 198.51.100.1
		vips = 0.0.0.0
		proposals = aes256gcm16-prfsha256-x25519
		local {
			auth = psk
			id = psk-client@example.test
		}
		remote {
			auth = psk
			id = vpn.example.test
		}
		children {
			psk {
				remote_ts = 10.99.0.0/24
				esp_proposals = aes256gcm16
			}
		}
	}
	psk-4500 {
		version = 2
		remote_addrs = 198.51.100.1
		remote_port = 4500
		vips = 0.0.0.0
		proposals = aes256gcm16-prfsha256-x25519
		local {
			auth = psk
			id = psk-client@example.test
		}
		remote {
			auth = psk
			id = vpn.example.test
		}
		children {
			psk-4500 {
				remote_ts = 10.99.0.0/24
				esp_proposals = aes256gcm16
			}
		}
	}
	eap {
		version = 2
		remote_addrs = 198.51.100.1
		vips = 0.0.0.0
		proposals = chacha20poly1305-prfsha256-x25519
		local {
			auth = eap-mschapv2
			id = carol@example.test
			eap_id = carol
		}
		remote {
			auth = pubkey
			id = vpn.example.test
		}
		children {
			eap {
				remote_ts = 10.99.0.0/24
				esp_proposals = chacha20poly1305
			}
		}
	}
}

secrets {
	ike-psk {
		id-1 = psk-client@example.test
		id-2 = vpn.example.test
		secret = "test-psk-not-secret-0123456789"
	}
	eap-carol {
		id = carol
		secret = "carol-password"
	}
}
"#;

const CA_PEM: &[u8] = b"-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";

type Reader = Box<dyn FnMut(&Path) -> Result<Zeroizing<Vec<u8>>, String>>;

/// A file reader over an in-memory directory, keyed by the path as the parser asks for it.
fn fs(files: &[(&str, &[u8])]) -> Reader {
    let files: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, b)| ((*p).to_owned(), b.to_vec()))
        .collect();
    Box::new(move |path: &Path| {
        let want = path.to_string_lossy();
        files
            .iter()
            .find(|(p, _)| *p == want)
            .map(|(_, b)| Zeroizing::new(b.clone()))
            .ok_or_else(|| "no such file".to_owned())
    })
}

fn no_files() -> Reader {
    fs(&[])
}

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec())
}

fn net(s: &str) -> IpNet {
    let (a, n) = s.split_once('/').unwrap();
    IpNet::new(a.parse().unwrap(), n.parse().unwrap()).unwrap()
}

fn prop(encr: &[Encr], integ: &[Integ], prf: &[Prf], dh: &[DhGroup], esn: &[bool]) -> Proposal {
    Proposal {
        encr: encr.to_vec(),
        integ: integ.to_vec(),
        prf: prf.to_vec(),
        dh: dh.to_vec(),
        esn: esn.to_vec(),
    }
}

const GCM256: Encr = Encr::AesGcm16 { bits: 256 };
const GCM128: Encr = Encr::AesGcm16 { bits: 128 };
const CHACHA: Encr = Encr::ChaCha20Poly1305;
const CBC256: Encr = Encr::AesCbc { bits: 256 };
const CBC128: Encr = Encr::AesCbc { bits: 128 };

/// The 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
}

// ---------------------------------------------------------------------------------------------
// The stock initiator configuration
// ---------------------------------------------------------------------------------------------

fn stock_psk(name: &str, port: u16) -> Connection {
    Connection {
        name: name.to_owned(),
        remote_addrs: vec!["198.51.100.1".to_owned()],
        remote_port: port,
        vips: vec![Ipv4Addr::UNSPECIFIED],
        proposals: vec![prop(
            &[GCM256],
            &[],
            &[Prf::HmacSha256],
            &[DhGroup::Curve25519],
            &[],
        )],
        local: LocalSide {
            auth: AuthMethod::Psk,
            id: Some("psk-client@example.test".to_owned()),
            eap_id: None,
            certs: vec![],
            private_key: None,
        },
        remote: RemoteSide {
            auth: AuthMethod::Psk,
            id: Some("vpn.example.test".to_owned()),
            cacerts: vec![],
        },
        children: vec![ChildConfig {
            name: name.to_owned(),
            remote_ts: vec![net("10.99.0.0/24")],
            esp_proposals: vec![prop(&[GCM256], &[], &[], &[], &[])],
            rekey_time: Duration::from_secs(3600),
            life_time: Duration::from_secs(3960),
            replay_window: 128,
        }],
        dpd_delay: Duration::ZERO,
        rekey_time: Duration::from_secs(4 * 3600),
        keyingtries: 1,
        psk: Some(secret("test-psk-not-secret-0123456789")),
        eap_password: None,
    }
}

#[test]
fn stock_connection_names() {
    let names = connection_names(STOCK.as_bytes(), "swanctl.conf", &mut *no_files()).unwrap();
    assert_eq!(names, ["psk", "psk-4500", "eap"]);
}

#[test]
fn stock_psk_connection() {
    let (conn, warnings) = load(
        STOCK.as_bytes(),
        "swanctl.conf",
        Some("psk"),
        &mut *no_files(),
    )
    .unwrap();
    assert_eq!(conn, stock_psk("psk", 500));
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn stock_psk_4500_connection() {
    let (conn, warnings) = load(
        STOCK.as_bytes(),
        "swanctl.conf",
        Some("psk-4500"),
        &mut *no_files(),
    )
    .unwrap();
    assert_eq!(conn, stock_psk("psk-4500", 4500));
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn stock_eap_connection_with_the_x509ca_directory() {
    let options = LoadOptions {
        x509ca: vec![Secret::new(CA_PEM.to_vec())],
    };
    let (conn, warnings) = load_with_options(
        STOCK.as_bytes(),
        "swanctl.conf",
        Some("eap"),
        &mut *no_files(),
        &options,
    )
    .unwrap();
    let expected = Connection {
        name: "eap".to_owned(),
        remote_addrs: vec!["198.51.100.1".to_owned()],
        remote_port: 500,
        vips: vec![Ipv4Addr::UNSPECIFIED],
        proposals: vec![prop(
            &[CHACHA],
            &[],
            &[Prf::HmacSha256],
            &[DhGroup::Curve25519],
            &[],
        )],
        local: LocalSide {
            auth: AuthMethod::EapMschapv2,
            id: Some("carol@example.test".to_owned()),
            eap_id: Some("carol".to_owned()),
            certs: vec![],
            private_key: None,
        },
        remote: RemoteSide {
            auth: AuthMethod::Pubkey,
            id: Some("vpn.example.test".to_owned()),
            cacerts: vec![Secret::new(CA_PEM.to_vec())],
        },
        children: vec![ChildConfig {
            name: "eap".to_owned(),
            remote_ts: vec![net("10.99.0.0/24")],
            esp_proposals: vec![prop(&[CHACHA], &[], &[], &[], &[])],
            rekey_time: Duration::from_secs(3600),
            life_time: Duration::from_secs(3960),
            replay_window: 128,
        }],
        dpd_delay: Duration::ZERO,
        rekey_time: Duration::from_secs(4 * 3600),
        keyingtries: 1,
        psk: None,
        eap_password: Some(secret("carol-password")),
    };
    assert_eq!(conn, expected);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn stock_eap_without_a_ca_is_refused() {
    let err = load(
        STOCK.as_bytes(),
        "swanctl.conf",
        Some("eap"),
        &mut *no_files(),
    )
    .unwrap_err();
    let line = line_of(STOCK, "auth = pubkey");
    assert_eq!(
        err.to_string(),
        format!(
            "swanctl.conf: line {line}: connections.eap.remote.auth: the server's certificate \
             cannot be verified: set remote.cacerts"
        )
    );
    assert_eq!(err.line(), Some(line));
}

#[test]
fn stock_eap_with_cacerts_in_the_file() {
    let text = STOCK.replace(
        "\t\t\tauth = pubkey\n",
        "\t\t\tauth = pubkey\n\t\t\tcacerts = ca.crt\n",
    );
    let mut files = fs(&[("x509ca/ca.crt", CA_PEM)]);
    let (conn, _) = load(text.as_bytes(), "swanctl.conf", Some("eap"), &mut *files).unwrap();
    assert_eq!(conn.remote.cacerts, vec![Secret::new(CA_PEM.to_vec())]);
}

#[test]
fn several_connections_and_none_named() {
    let err = load(STOCK.as_bytes(), "swanctl.conf", None, &mut *no_files()).unwrap_err();
    assert!(matches!(err, SwanctlError::Connection { .. }));
    let text = err.to_string();
    assert!(text.starts_with("swanctl.conf: "), "{text}");
    assert!(text.contains("psk, psk-4500, eap"), "{text}");
}

#[test]
fn unknown_connection_name() {
    let err = load(
        STOCK.as_bytes(),
        "swanctl.conf",
        Some("nope"),
        &mut *no_files(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no connection 'nope'"), "{text}");
    assert!(text.contains("psk, psk-4500, eap"), "{text}");
}

#[test]
fn no_connections() {
    let err = load(b"# nothing\n", "swanctl.conf", None, &mut *no_files()).unwrap_err();
    assert!(err.to_string().contains("no connections"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// A small configuration to vary
// ---------------------------------------------------------------------------------------------

const BASE: &str = "connections {
    home {
        remote_addrs = vpn.example.net
        @CONN@
        local {
            auth = psk
            id = me@example.net
            @LOCAL@
        }
        remote {
            auth = psk
            id = vpn.example.net
            @REMOTE@
        }
        children {
            net {
                remote_ts = 10.0.0.0/8
                @CHILD@
            }
        }
    }
}
secrets {
    ike-1 {
        id = me@example.net
        secret = swordfish
    }
    @SECRETS@
}
@TOP@
";

/// `BASE` with its placeholders filled (`CONN`, `LOCAL`, `REMOTE`, `CHILD`, `SECRETS`, `TOP`).
fn with(fills: &[(&str, &str)]) -> String {
    let mut text = BASE.to_owned();
    for (name, fill) in fills {
        text = text.replace(&format!("@{name}@"), fill);
    }
    for name in ["CONN", "LOCAL", "REMOTE", "CHILD", "SECRETS", "TOP"] {
        text = text.replace(&format!("@{name}@"), "");
    }
    text
}

fn load_text(text: &str) -> Result<(Connection, Vec<Warning>), SwanctlError> {
    load(text.as_bytes(), "swanctl.conf", None, &mut *no_files())
}

/// Loading `text` fails on the line containing `at`, with a message containing `needle`.
#[track_caller]
fn fails(text: &str, at: &str, needle: &str) {
    fails_with(text, &mut *no_files(), at, needle);
}

#[track_caller]
fn fails_with(
    text: &str,
    files: &mut swanctl::FileReader<'_>,
    at: &str,
    needle: &str,
) -> SwanctlError {
    let err = load(text.as_bytes(), "swanctl.conf", None, files).unwrap_err();
    let line = line_of(text, at);
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("swanctl.conf: line {line}: ")),
        "expected line {line}: {message}"
    );
    assert!(message.contains(needle), "expected {needle:?}: {message}");
    err
}

/// Loading `text` succeeds with exactly one warning, on the line containing `at`, for `key`.
#[track_caller]
fn warns(text: &str, at: &str, key: &str, needle: &str) -> Connection {
    let (conn, warnings) = load_text(text).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert_eq!(w.line, line_of(text, at), "{w:?}");
    assert_eq!(w.key, key);
    assert_eq!(w.file, Path::new("swanctl.conf"));
    assert!(w.message.contains(needle), "expected {needle:?}: {w:?}");
    assert!(
        w.to_string()
            .starts_with(&format!("swanctl.conf: line {}: {key}: ", w.line))
    );
    conn
}

#[test]
fn base_loads_with_defaults() {
    let (conn, warnings) = load_text(&with(&[])).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(conn.name, "home");
    assert_eq!(conn.remote_addrs, ["vpn.example.net"]);
    assert_eq!(conn.remote_port, 500);
    assert!(conn.vips.is_empty());
    assert_eq!(conn.proposals, default_proposals(ProposalKind::Ike));
    assert_eq!(
        conn.children[0].esp_proposals,
        default_proposals(ProposalKind::Esp)
    );
    assert_eq!(conn.children[0].remote_ts, vec![net("10.0.0.0/8")]);
    assert_eq!(conn.rekey_time, Duration::from_secs(14400));
    assert_eq!(conn.dpd_delay, Duration::ZERO);
    assert_eq!(conn.keyingtries, 1);
    assert_eq!(conn.psk, Some(secret("swordfish")));
}

#[test]
fn connection_options() {
    let text = with(&[
        (
            "CONN",
            "version = 0\nremote_addrs = a.example.net, 192.0.2.7 b.example.net\n\
             remote_port = 4500\nvips = 0.0.0.0,10.1.2.3\nproposals = aes128-sha384-modp2048, \
             default\ndpd_delay = 30s\nrekey_time = 2h\nover_time = 10m\nrand_time = 5m\n\
             keyingtries = 0\nfragmentation = force\nunique = replace\nsend_certreq = no\n\
             send_cert = ifasked\nencap = yes\nmobike = no",
        ),
        (
            "CHILD",
            "rekey_time = 20m\nrand_time = 1m\nmode = tunnel\nstart_action = start\n\
             close_action = restart\ndpd_action = restart\nipcomp = no\nlocal_ts = dynamic\n\
             esp_proposals = aes256gcm16-x25519-esn-noesn, aes256-sha512",
        ),
    ]);
    let (conn, warnings) = load_text(&text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        conn.remote_addrs,
        ["a.example.net", "192.0.2.7", "b.example.net"]
    );
    assert_eq!(conn.remote_port, 4500);
    assert_eq!(
        conn.vips,
        [Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(10, 1, 2, 3)]
    );
    let mut expected = vec![prop(
        &[CBC128],
        &[Integ::HmacSha384_192],
        &[Prf::HmacSha384],
        &[DhGroup::Modp2048],
        &[],
    )];
    expected.extend(default_proposals(ProposalKind::Ike));
    assert_eq!(conn.proposals, expected);
    assert_eq!(conn.dpd_delay, Duration::from_secs(30));
    assert_eq!(conn.rekey_time, Duration::from_secs(7200));
    assert_eq!(conn.keyingtries, 0);
    let child = &conn.children[0];
    assert_eq!(child.rekey_time, Duration::from_secs(1200));
    assert_eq!(child.life_time, Duration::from_secs(1320));
    assert_eq!(
        child.esp_proposals,
        vec![
            prop(&[GCM256], &[], &[], &[DhGroup::Curve25519], &[true, false]),
            prop(&[CBC256], &[Integ::HmacSha512_256], &[], &[], &[]),
        ]
    );
}

#[test]
fn child_life_time_given() {
    let (conn, _) = load_text(&with(&[("CHILD", "rekey_time = 1d\nlife_time = 90000")])).unwrap();
    assert_eq!(conn.children[0].rekey_time, Duration::from_secs(86400));
    assert_eq!(conn.children[0].life_time, Duration::from_secs(90000));
}

#[test]
fn traffic_selectors() {
    let (conn, _) = load_text(&with(&[(
        "CHILD",
        "remote_ts = 10.1.0.0/16, 192.0.2.9 dynamic,0.0.0.0/0",
    )]))
    .unwrap();
    assert_eq!(
        conn.children[0].remote_ts,
        vec![
            net("10.1.0.0/16"),
            IpNet::host(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))),
            net("0.0.0.0/0"),
        ]
    );
    let (conn, _) = load_text(&with(&[("CHILD", "remote_ts = dynamic")])).unwrap();
    assert!(conn.children[0].remote_ts.is_empty());
}

#[test]
fn several_children_keep_their_order() {
    let text = with(&[]).replace(
        "            net {",
        "            b { remote_ts = 10.2.0.0/16 }\n            net {",
    );
    let (conn, _) = load_text(&text).unwrap();
    let names: Vec<&str> = conn.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["b", "net"]);
}

#[test]
fn empty_value_means_default() {
    let (conn, _) = load_text(&with(&[("CONN", "remote_port =\nproposals =")])).unwrap();
    assert_eq!(conn.remote_port, 500);
    assert_eq!(conn.proposals, default_proposals(ProposalKind::Ike));
}

// ---------------------------------------------------------------------------------------------
// Syntax
// ---------------------------------------------------------------------------------------------

#[test]
fn quoting_comments_and_layout() {
    let text = r#"
connections
{
    home { remote_addrs = "vpn.example.net" # the server
        local { auth = psk ; id = "me#1@example.net" }   # not a comment inside quotes
        remote { auth = psk }
        children { net { remote_ts = 10.0.0.0/8 } }
    }
}
connections { home { remote_port = 4500 } }   # reopened: merged
connections { home { remote_port = 4501 } }   # later keys override
secrets {
    ike-x {
        id = "me#1@example.net"
        secret = "a \"quoted\" # secret\\with\nlines
and a real newline" trailing words
    }
}
"#;
    let err = load_text(text).unwrap_err();
    // `auth = psk ; id = ...` is one value on one line: strongSwan has no `;` separator.
    assert!(
        err.to_string()
            .contains("unknown authentication method 'psk ; id = "),
        "{err}"
    );

    let text = text.replace("auth = psk ; id = ", "auth = psk\n id = ");
    let (conn, warnings) = load_text(&text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(conn.remote_addrs, ["vpn.example.net"]);
    assert_eq!(conn.remote_port, 4501);
    assert_eq!(conn.local.id.as_deref(), Some("me#1@example.net"));
    assert_eq!(conn.remote.id, None);
    assert_eq!(
        conn.psk.unwrap().expose(),
        b"a \"quoted\" # secret\\with\nlines\nand a real newline trailing words"
    );
}

#[test]
fn crlf_line_ends_and_a_byte_order_mark() {
    let text = format!("\u{feff}{}", STOCK.replace('\n', "\r\n"));
    let (conn, warnings) = load(
        text.as_bytes(),
        "swanctl.conf",
        Some("psk"),
        &mut *no_files(),
    )
    .unwrap();
    assert_eq!(conn, stock_psk("psk", 500));
    assert!(warnings.is_empty());
    let text = text.replace("version = 2", "version = 1");
    let err = load(
        text.as_bytes(),
        "swanctl.conf",
        Some("psk"),
        &mut *no_files(),
    )
    .unwrap_err();
    assert_eq!(err.line(), Some(line_of(STOCK, "version = 2")));
}

#[test]
fn include_at_any_level() {
    let main =
        "connections {\n    include conf.d/home.conf\n}\ninclude \"secrets.conf\" # comment\n";
    let home = b"home {\n  remote_addrs = vpn.example.net\n  include parts/sides.conf\n  children { c { remote_ts = 10.0.0.0/8 } }\n}\n";
    let sides = b"local { auth = psk\n id = me }\nremote { auth = psk\n id = them }\n";
    let secrets = b"secrets { ike { id = me\n secret = 0x0102:0a0b } }\n";
    let mut files = fs(&[
        ("conf.d/home.conf", home),
        ("conf.d/parts/sides.conf", sides),
        ("secrets.conf", secrets),
    ]);
    let names = connection_names(main.as_bytes(), "swanctl.conf", &mut *files).unwrap();
    assert_eq!(names, ["home"]);
    let (conn, warnings) = load(main.as_bytes(), "swanctl.conf", None, &mut *files).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(conn.local.id.as_deref(), Some("me"));
    assert_eq!(conn.remote.id.as_deref(), Some("them"));
    assert_eq!(conn.psk.unwrap().expose(), [1, 2, 10, 11]);
}

#[test]
fn errors_in_included_files_name_that_file() {
    let main = "connections {\n    include conf.d/home.conf\n}\n";
    let home = b"home {\n  remote_addrs = vpn.example.net\n  version = 1\n}\n";
    let mut files = fs(&[("conf.d/home.conf", home)]);
    let err = load(main.as_bytes(), "swanctl.conf", None, &mut *files).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conf.d/home.conf: line 3: connections.home.version: IKEv1 is not supported"
    );

    let home = b"home {\n  remote_addrs = vpn.example.net\n  mobike = yes\n  local { auth = psk }\n  remote { auth = psk }\n  children { c { } }\n}\n";
    let main = "connections {\n    include conf.d/home.conf\n}\nsecrets { ike { secret = x } }\n";
    let mut files = fs(&[("conf.d/home.conf", home)]);
    let (_, warnings) = load(main.as_bytes(), "swanctl.conf", None, &mut *files).unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].file, Path::new("conf.d/home.conf"));
    assert_eq!(warnings[0].line, 3);
}

#[test]
fn include_errors() {
    let text = "connections {\n  include conf.d/*.conf\n}\n";
    let err = load(text.as_bytes(), "swanctl.conf", None, &mut *no_files()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "swanctl.conf: line 2: include conf.d/*.conf: globs are not supported in include; name \
         one file"
    );
    let text = "# x\ninclude missing.conf\n";
    let err = load(text.as_bytes(), "swanctl.conf", None, &mut *no_files()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "swanctl.conf: line 2: include missing.conf: no such file"
    );
    let text = "include self.conf\n";
    let mut files = fs(&[("self.conf", b"include self.conf\n")]);
    let err = load(text.as_bytes(), "swanctl.conf", None, &mut *files).unwrap_err();
    assert!(err.to_string().contains("nested too deeply"), "{err}");
    // `include = x` is an option called include.
    fails(
        "\n\ninclude = x\n",
        "include = x",
        "include: unknown option",
    );
}

#[test]
fn syntax_errors() {
    let cases: &[(&str, &str, &str)] = &[
        ("connections {\n  a {\n", "a {", "section 'a' is not closed"),
        ("x = 1\n}\n", "}", "unexpected '}'"),
        ("\n= 1\n", "= 1", "unexpected '='"),
        ("\n{\n", "{", "unexpected '{'"),
        ("\nfoo bar\n", "foo bar", "expected '=' or '{' after 'foo'"),
        ("\n\"x\" = 1\n", "\"x\"", "unexpected quoted string"),
        ("\nx = \"open\nmore\n", "x = ", "unterminated quoted string"),
        ("\ninclude \n", "include", "include needs a file name"),
    ];
    for (text, at, needle) in cases {
        let err = load(text.as_bytes(), "swanctl.conf", None, &mut *no_files()).unwrap_err();
        assert!(matches!(err, SwanctlError::Syntax { .. }), "{err}");
        let message = err.to_string();
        let line = line_of(text, at);
        assert!(
            message.starts_with(&format!("swanctl.conf: line {line}: "))
                && message.contains(needle),
            "{text:?}: {message}"
        );
    }
    let err = load(b"\n\nx = \xff\n", "swanctl.conf", None, &mut *no_files()).unwrap_err();
    assert_eq!(err.to_string(), "swanctl.conf: line 3: not UTF-8 text");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let text = "a {".repeat(10_000);
    let err = load(text.as_bytes(), "swanctl.conf", None, &mut *no_files()).unwrap_err();
    assert!(err.to_string().contains("nested too deeply"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn the_example_message() {
    let text = with(&[("CONN", "proposals = aes999-prfsha256-x25519")]);
    let err = load_text(&text).unwrap_err();
    let line = line_of(&text, "aes999");
    assert_eq!(
        err.to_string(),
        format!(
            "swanctl.conf: line {line}: connections.home.proposals: unknown algorithm 'aes999'"
        )
    );
}

#[test]
fn connection_errors() {
    let c = |s: &str| with(&[("CONN", s)]);
    fails(
        &c("version = 1"),
        "version = 1",
        "connections.home.version: IKEv1 is not supported",
    );
    fails(&c("version = 3"), "version = 3", "expected 0 or 2");
    fails(
        &c("remote_addrs = %any"),
        "%any",
        "cannot be used by an initiator",
    );
    fails(&c("remote_addrs = 10.0.0.0/8"), "10.0.0.0/8", "is a subnet");
    fails(
        &c("remote_addrs = 10.0.0.1-10.0.0.9"),
        "10.0.0.1-",
        "address range",
    );
    fails(&c("remote_port = 0"), "remote_port", "expected a port");
    fails(&c("remote_port = http"), "remote_port", "expected a port");
    fails(&c("vips = nope"), "vips", "'nope' is not an IP address");
    fails(&c("dpd_delay = 10x"), "dpd_delay", "expected a duration");
    fails(&c("rekey_time = h"), "rekey_time", "expected a duration");
    fails(&c("rekey_time = 99999999999d"), "rekey_time", "too long");
    fails(
        &c("keyingtries = -1"),
        "keyingtries",
        "expected a whole number",
    );
    fails(&c("encap = maybe"), "encap", "expected yes or no");
    fails(
        &c("fragmentation = sometimes"),
        "fragmentation",
        "expected one of",
    );
    fails(
        &c("frobnicate = yes"),
        "frobnicate",
        "connections.home.frobnicate: unknown option",
    );
    fails(
        &c("extra { }"),
        "extra {",
        "connections.home.extra: unknown section",
    );
    fails(
        &c("local-2 { auth = psk }"),
        "        local {",
        "connections.home.local: multiple authentication rounds are not supported (this \
         section and 'local-2' on line 4)",
    );
    fails(
        &c("remote-2 { auth = psk }"),
        "        remote {",
        "multiple authentication rounds are not supported",
    );
    fails(
        &c("proposals = aes256gcm16-prfsha256"),
        "proposals",
        "has no key exchange method",
    );

    let text = with(&[]).replace("        remote_addrs = vpn.example.net\n", "");
    fails(
        &text,
        "    home {",
        "connections.home.remote_addrs: missing",
    );

    let text = with(&[]).replace("                remote_ts = 10.0.0.0/8\n", "");
    let text = text.replace("            net {\n                \n            }\n", "");
    fails(&text, "children {", "at least one child");
    let text = with(&[]).replace("        children {", "        nochildren {");
    fails(&text, "nochildren", "unknown section");
}

#[test]
fn missing_children_section() {
    let text = "connections {\n home {\n  remote_addrs = x\n  local { auth = psk }\n  remote { auth = psk }\n }\n}\nsecrets { ike { secret = s } }\n";
    fails(
        text,
        " home {",
        "connections.home.children: at least one child",
    );
}

#[test]
fn local_errors() {
    let l = |s: &str| with(&[("LOCAL", s)]);
    fails(
        &l("auth = eap"),
        "auth = eap",
        "erebus supports only eap-mschapv2",
    );
    fails(
        &l("auth = eap-md5"),
        "eap-md5",
        "EAP method 'eap-md5' is not supported",
    );
    fails(&l("auth = xauth"), "auth = xauth", "XAuth is IKEv1 only");
    fails(
        &l("auth = kerberos"),
        "kerberos",
        "unknown authentication method 'kerberos'",
    );
    fails(
        &l("pubkeys = key.pem"),
        "pubkeys",
        "raw public keys are not supported",
    );
    fails(&l("xauth_id = bob"), "xauth_id", "XAuth is IKEv1 only");
    fails(
        &l("certs = me.pem"),
        "certs",
        "cannot read certificate 'me.pem' (tried x509/me.pem, me.pem)",
    );
    fails(
        &l("colour = red"),
        "colour",
        "connections.home.local.colour: unknown option",
    );
    fails(
        &l("cert-1 { handle = 01 }"),
        "handle",
        "certificates on tokens are not supported",
    );
    fails(&l("cert-1 { }"), "cert-1", "missing: file");
    fails(&l("other { }"), "other {", "unknown section");
}

#[test]
fn remote_errors() {
    let r = |s: &str| with(&[("REMOTE", s)]);
    fails(
        &r("auth = eap-mschapv2"),
        "auth = eap-mschapv2",
        "the server side must authenticate with psk or a certificate",
    );
    fails(
        &r("auth = eap"),
        "auth = eap",
        "the server side must authenticate",
    );
    fails(
        &r("pubkeys = key.pem"),
        "pubkeys",
        "raw public keys are not supported",
    );
    fails(
        &r("cacerts = ca.pem"),
        "cacerts",
        "cannot read CA certificate 'ca.pem' (tried x509ca/ca.pem, ca.pem)",
    );
    fails(
        &r("colour = red"),
        "colour",
        "connections.home.remote.colour: unknown option",
    );
    let text = with(&[]).replace(
        "            auth = psk\n            id = vpn",
        "            auth = pubkey\n            id = vpn",
    );
    fails(
        &text,
        "auth = pubkey",
        "the server's certificate cannot be verified: set remote.cacerts",
    );
}

#[test]
fn child_errors() {
    let ch = |s: &str| with(&[("CHILD", s)]);
    fails(
        &ch("mode = transport"),
        "mode",
        "mode 'transport' is not supported",
    );
    fails(&ch("mode = pass"), "mode", "tunnel mode only");
    fails(
        &ch("esp_proposals = aes256gcm16-sha256"),
        "esp_proposals",
        "takes no integrity algorithm",
    );
    fails(
        &ch("esp_proposals = aes256"),
        "esp_proposals",
        "needs an integrity algorithm",
    );
    fails(
        &ch("esp_proposals = aes256gcm16-prfsha256"),
        "esp_proposals",
        "belongs in IKE proposals",
    );
    fails(
        &ch("ah_proposals = sha256"),
        "ah_proposals",
        "AH is not supported",
    );
    fails(
        &ch("life_time = forever"),
        "life_time",
        "expected a duration",
    );
    fails(
        &ch("colour = red"),
        "colour",
        "connections.home.children.net.colour: unknown option",
    );
    fails(&ch("sub { }"), "sub {", "unknown section");
    let text = with(&[]).replace("10.0.0.0/8", "10.0.0.0/33");
    fails(&text, "10.0.0.0/33", "prefix length must be 0 to 32");
    let text = with(&[]).replace("10.0.0.0/8", "10.0.0.1-10.0.0.9");
    fails(&text, "10.0.0.1-", "address ranges are not supported");
    let text = with(&[]).replace("10.0.0.0/8", "10.0.0.0/8[tcp/80]");
    fails(
        &text,
        "[tcp/80]",
        "protocol and port selectors are not supported",
    );
    let text = with(&[]).replace("10.0.0.0/8", "intranet");
    fails(&text, "intranet", "is not a subnet");
    let text = with(&[]).replace("10.0.0.0/8", "fd00::/8");
    fails(&text, "fd00::/8", "no IPv4 network left");
}

#[test]
fn top_level_errors() {
    fails(
        &with(&[("TOP", "charon = yes")]),
        "charon",
        "charon: unknown option",
    );
    fails(
        &with(&[("TOP", "plugins { }")]),
        "plugins",
        "plugins: unknown section",
    );
    fails(
        &with(&[("CONN", "}\n  stray = 1\n  other {")]),
        "stray",
        "connections.stray: unknown option",
    );
    fails(
        &with(&[("SECRETS", "junk = 1")]),
        "junk",
        "secrets.junk: unknown option",
    );
    fails(
        &with(&[("SECRETS", "foo-1 { secret = x }")]),
        "foo-1",
        "unknown secret type",
    );
    fails(
        &with(&[("SECRETS", "eap-1 { id = me }")]),
        "eap-1",
        "secrets.eap-1: missing: secret",
    );
    fails(
        &with(&[("SECRETS", "eap-1 { colour = red }")]),
        "colour",
        "unknown option",
    );
    fails(
        &with(&[("SECRETS", "ike-2 { secret = 0xabc }")]),
        "0xabc",
        "even, non-zero number of hex digits",
    );
    fails(
        &with(&[("SECRETS", "ike-2 { secret = 0xzz }")]),
        "0xzz",
        "not hex",
    );
    fails(
        &with(&[("SECRETS", "ike-2 { secret = 0s!!!! }")]),
        "0s!!!!",
        "not valid base64",
    );
    fails(
        &with(&[("SECRETS", "private-1 { secret = pw }")]),
        "private-1",
        "missing: file",
    );
}

#[test]
fn psk_without_a_secret() {
    let text = with(&[]).replace(
        "id = me@example.net\n        secret",
        "id = other@example.net\n        secret",
    );
    fails(
        &text,
        "auth = psk",
        "connections.home.local.auth: no PSK in secrets for ids me@example.net and vpn.example.net",
    );
    let text = "connections { c {\n remote_addrs = x\n local { auth = pubkey\n certs = a.pem }\n remote {\n auth = psk\n }\n children { c { } }\n} }\n";
    let mut files = fs(&[("x509/a.pem", b"A"), ("private/a.pem", b"K")]);
    fails_with(
        text,
        &mut *files,
        "auth = psk",
        "connections.c.remote.auth: no PSK in secrets for ids (our address) and %any",
    );
}

#[test]
fn eap_errors() {
    let eap = |local: &str| {
        format!(
            "connections {{ c {{\n remote_addrs = x\n local {{\n{local}\n }}\n remote {{ auth = psk }}\n children {{ c {{ }} }}\n}} }}\nsecrets {{\n ike {{ secret = s }}\n eap-bob {{ id = bob\n secret = pw }}\n}}\n"
        )
    };
    fails(
        &eap("auth = eap-mschapv2\n id = carol"),
        "auth = eap-mschapv2",
        "no EAP password in secrets for the EAP identity 'carol'",
    );
    fails(
        &eap("auth = eap-mschapv2\n eap_id = %identity"),
        "auth = eap-mschapv2",
        "needs an identity",
    );
    let (conn, _) = load_text(&eap("auth = eap-mschapv2\n id = x\n eap_id = bob")).unwrap();
    assert_eq!(conn.eap_password, Some(secret("pw")));
    let (conn, _) = load_text(&eap("auth = eap-mschapv2\n id = bob")).unwrap();
    assert_eq!(conn.local.eap_id, None);
    assert_eq!(conn.eap_password, Some(secret("pw")));
}

// ---------------------------------------------------------------------------------------------
// Certificates and keys
// ---------------------------------------------------------------------------------------------

fn pubkey_conf(local_extra: &str, secrets: &str) -> String {
    format!(
        "connections {{\n home {{\n  remote_addrs = vpn\n  local {{\n   auth = pubkey\n   id = me\n{local_extra}\n  }}\n  remote {{\n   auth = pubkey\n   cacerts = ca.pem, /etc/ca2.pem\n  }}\n  children {{ c {{ }} }}\n }}\n}}\nsecrets {{\n{secrets}\n}}\n"
    )
}

#[test]
fn pubkey_with_a_key_in_secrets() {
    let text = pubkey_conf("   certs = me.pem", " private-me {\n  file = me.key\n }");
    let mut files = fs(&[
        ("x509/me.pem", b"CERT"),
        ("private/me.key", b"KEY"),
        ("x509ca/ca.pem", b"CA1"),
        ("/etc/ca2.pem", b"CA2"),
    ]);
    let (conn, warnings) = load(text.as_bytes(), "swanctl.conf", None, &mut *files).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(conn.local.auth, AuthMethod::Pubkey);
    assert_eq!(conn.local.certs, vec![secret("CERT")]);
    assert_eq!(conn.local.private_key, Some(secret("KEY")));
    assert_eq!(conn.remote.auth, AuthMethod::Pubkey);
    assert_eq!(conn.remote.cacerts, vec![secret("CA1"), secret("CA2")]);
    assert_eq!(conn.psk, None);
}

#[test]
fn pubkey_key_types_and_plain_paths() {
    // An ecdsa- secret is read from ecdsa/, a certificate not in x509/ as written.
    let text = pubkey_conf("   certs = certs/me.crt", " ecdsa-1 {\n  file = me.pem\n }");
    let mut files = fs(&[
        ("certs/me.crt", b"CERT"),
        ("ecdsa/me.pem", b"ECKEY"),
        ("x509ca/ca.pem", b"CA1"),
        ("/etc/ca2.pem", b"CA2"),
    ]);
    let (conn, _) = load(text.as_bytes(), "swanctl.conf", None, &mut *files).unwrap();
    assert_eq!(conn.local.private_key, Some(secret("ECKEY")));
    // A cert-* section.
    let text = pubkey_conf(
        "   cert-1 { file = me.pem }",
        " rsa-1 { file = /keys/me.pem }",
    );
    let mut files = fs(&[
        ("x509/me.pem", b"CERT"),
        ("/keys/me.pem", b"RSAKEY"),
        ("x509ca/ca.pem", b"CA1"),
        ("/etc/ca2.pem", b"CA2"),
    ]);
    let (conn, _) = load(text.as_bytes(), "swanctl.conf", None, &mut *files).unwrap();
    assert_eq!(conn.local.certs, vec![secret("CERT")]);
    assert_eq!(conn.local.private_key, Some(secret("RSAKEY")));
}

#[test]
fn pubkey_key_found_by_the_certificate_name() {
    let text = pubkey_conf("   certs = client.crt", "");
    let mut files = fs(&[
        ("x509/client.crt", b"CERT"),
        ("rsa/client.key", b"RSAKEY"),
        ("x509ca/ca.pem", b"CA1"),
        ("/etc/ca2.pem", b"CA2"),
    ]);
    let (conn, _) = load(text.as_bytes(), "swanctl.conf", None, &mut *files).unwrap();
    assert_eq!(conn.local.private_key, Some(secret("RSAKEY")));
}

#[test]
fn pubkey_errors() {
    let all = [
        ("x509/me.pem", b"CERT".as_slice()),
        ("x509ca/ca.pem", b"CA1"),
        ("/etc/ca2.pem", b"CA2"),
    ];
    let text = pubkey_conf("", "");
    fails_with(
        &text,
        &mut *fs(&all),
        "auth = pubkey",
        "pubkey authentication needs our certificate: set local.certs",
    );
    let text = pubkey_conf("   certs = me.pem", "");
    fails_with(
        &text,
        &mut *fs(&all),
        "auth = pubkey",
        "cannot read a private key for 'me.pem' (tried private/me.pem",
    );
    let text = pubkey_conf(
        "   certs = me.pem",
        " private-1 {\n  file = me.key\n  secret = \"passphrase\"\n }",
    );
    fails_with(
        &text,
        &mut *fs(&all),
        "passphrase",
        "secrets.private-1.secret: encrypted private keys are not supported",
    );
    let text = pubkey_conf("   certs = me.pem", " private-1 {\n  file = gone.key\n }");
    fails_with(
        &text,
        &mut *fs(&all),
        "gone.key",
        "secrets.private-1.file: cannot read private key 'gone.key' (tried private/gone.key, rsa/gone.key, ecdsa/gone.key, pkcs8/gone.key, gone.key)",
    );
}

#[test]
fn several_private_keys_pick_the_certificate_s() {
    let text = pubkey_conf(
        "   certs = me.pem",
        " private-a { file = other.pem }\n private-b {\n  file = me.pem\n }",
    );
    let mut files = fs(&[
        ("x509/me.pem", b"CERT"),
        ("private/me.pem", b"MYKEY"),
        ("private/other.pem", b"OTHER"),
        ("x509ca/ca.pem", b"CA1"),
        ("/etc/ca2.pem", b"CA2"),
    ]);
    let (conn, warnings) = load(text.as_bytes(), "swanctl.conf", None, &mut *files).unwrap();
    assert_eq!(conn.local.private_key, Some(secret("MYKEY")));
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].line, line_of(&text, "file = me.pem"));
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[test]
fn secret_encodings() {
    for (value, bytes) in [
        ("0x00ff10", vec![0x00, 0xff, 0x10]),
        ("0X0A:0b", vec![0x0a, 0x0b]),
        ("0sAAEC", vec![0, 1, 2]),
        ("0sAAE=", vec![0, 1]),
        ("\"0sAA==\"", vec![0]),
        ("plain text", b"plain text".to_vec()),
    ] {
        let text = with(&[]).replace("secret = swordfish", &format!("secret = {value}"));
        let (conn, _) = load_text(&text).unwrap();
        assert_eq!(conn.psk.unwrap().expose(), bytes, "{value}");
    }
}

#[test]
fn psk_matching_prefers_the_best_match() {
    let text = |secrets: &str| {
        format!(
            "connections {{ c {{\n remote_addrs = x\n local {{ auth = psk\n id = me@example.net }}\n remote {{ auth = psk\n id = gw.example.net }}\n children {{ c {{ }} }}\n}} }}\nsecrets {{\n{secrets}\n}}\n"
        )
    };
    let psk = |secrets: &str| {
        let (conn, _) = load_text(&text(secrets)).unwrap();
        String::from_utf8(conn.psk.unwrap().expose().to_vec()).unwrap()
    };
    // A secret with no ids matches anyone, weakly.
    assert_eq!(psk("ike-any { secret = any }"), "any");
    // strongSwan ranks the peer's id first: a secret with no ids matches the peer (weakly)
    // and so beats one that names only us; one naming the peer beats both; naming both is best.
    assert_eq!(
        psk("ike-any { secret = any }\nike-me { id = me@example.net\n secret = me }"),
        "any"
    );
    assert_eq!(
        psk(
            "ike-me { id = me@example.net\n secret = me }\nike-x { id = x@example.net\n secret = x }"
        ),
        "me"
    );
    assert_eq!(
        psk(
            "ike-me { id = ME@example.net\n secret = me }\nike-gw { id = gw.example.net\n secret = gw }"
        ),
        "gw"
    );
    assert_eq!(
        psk(
            "ike-gw { id = gw.example.net\n secret = gw }\nike-both { id-a = me@example.net\n id-b = gw.example.net\n secret = both }\nike-me { id = me@example.net\n secret = me }"
        ),
        "both"
    );
    // A leading wildcard matches, below an exact match.
    assert_eq!(psk("ike-w { id = *.example.net\n secret = wild }"), "wild");
    assert_eq!(
        psk(
            "ike-w { id = *.example.net\n secret = wild }\nike-gw { id = gw.example.net\n secret = gw }"
        ),
        "gw"
    );
    // First wins a tie; ids of other people do not match.
    assert_eq!(
        psk(
            "ike-1 { id = gw.example.net\n secret = one }\nike-2 { id = gw.example.net\n secret = two }"
        ),
        "one"
    );
    let err = load_text(&text("ike-x { id = someone.else\n secret = x }")).unwrap_err();
    assert!(
        err.to_string()
            .contains("no PSK in secrets for ids me@example.net and gw.example.net"),
        "{err}"
    );
}

#[test]
fn xauth_secrets_are_eap_passwords() {
    let text = "connections { c {\n remote_addrs = x\n local { auth = eap-mschapv2\n id = bob }\n remote { auth = psk }\n children { c { } }\n} }\nsecrets {\n ike { secret = s }\n xauth-bob { id = bob\n secret = pw }\n}\n";
    let (conn, _) = load_text(text).unwrap();
    assert_eq!(conn.eap_password, Some(secret("pw")));
    assert_eq!(conn.psk, Some(secret("s")));
}

// ---------------------------------------------------------------------------------------------
// Warnings
// ---------------------------------------------------------------------------------------------

#[test]
fn connection_warnings() {
    let c = |s: &str| with(&[("CONN", s)]);
    let p = "connections.home.";
    warns(
        &c("local_addrs = 192.0.2.1"),
        "local_addrs",
        &format!("{p}local_addrs"),
        "picks its own local address",
    );
    warns(
        &c("local_port = 4501"),
        "local_port",
        &format!("{p}local_port"),
        "picks its own local address",
    );
    let conn = warns(
        &c("vips = 0.0.0.0, ::"),
        "vips",
        &format!("{p}vips"),
        "'::' ignored",
    );
    assert_eq!(conn.vips, [Ipv4Addr::UNSPECIFIED]);
    warns(
        &c("encap = no"),
        "encap",
        &format!("{p}encap"),
        "always uses UDP encapsulation",
    );
    warns(
        &c("dpd_timeout = 150s"),
        "dpd_timeout",
        &format!("{p}dpd_timeout"),
        "IKEv1",
    );
    warns(
        &c("reauth_time = 24h"),
        "reauth_time",
        &format!("{p}reauth_time"),
        "instead of reauthenticating",
    );
    warns(
        &c("mobike = yes"),
        "mobike",
        &format!("{p}mobike"),
        "MOBIKE",
    );
    warns(
        &c("pools = p1"),
        "pools",
        &format!("{p}pools"),
        "server handing out addresses",
    );
    for key in [
        "aggressive = no",
        "pull = yes",
        "dscp = 000000",
        "if_id_in = 1",
        "if_id_out = 1",
        "mediation = no",
        "childless = allow",
        "ppk_id = x",
    ] {
        let name = key.split(' ').next().unwrap();
        warns(&c(key), key, &format!("{p}{name}"), "ignored");
    }
    // Silent ones.
    let (_, warnings) = load_text(&c(
        "local_addrs = %any\nreauth_time = 0\nencap = yes\nmobike = no",
    ))
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn side_warnings() {
    let l = |s: &str| with(&[("LOCAL", s)]);
    let r = |s: &str| with(&[("REMOTE", s)]);
    warns(
        &l("aaa_id = aaa.example.net"),
        "aaa_id",
        "connections.home.local.aaa_id",
        "ignored",
    );
    warns(
        &r("certs = server.pem"),
        "certs",
        "connections.home.remote.certs",
        "instead of pinning",
    );
    warns(
        &r("cert-1 { file = server.pem }"),
        "cert-1",
        "connections.home.remote.cert-1",
        "instead of pinning",
    );
    warns(
        &r("revocation = strict"),
        "revocation",
        "connections.home.remote.revocation",
        "CRLs or OCSP",
    );
    warns(
        &r("eap_id = %any"),
        "eap_id",
        "connections.home.remote.eap_id",
        "ignored",
    );
    let text = with(&[]).replace(
        "            auth = psk\n            id = vpn",
        "            auth = rsa/pss-sha256\n            cacerts = ca.pem\n            id = vpn",
    );
    let (conn, warnings) = load(
        text.as_bytes(),
        "swanctl.conf",
        None,
        &mut *fs(&[("x509ca/ca.pem", b"CA")]),
    )
    .unwrap();
    assert_eq!(conn.remote.auth, AuthMethod::Pubkey);
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].key, "connections.home.remote.auth");
    assert!(warnings[0].message.contains("signature scheme"));
}

#[test]
fn child_warnings() {
    let ch = |s: &str| with(&[("CHILD", s)]);
    let p = "connections.home.children.net.";
    warns(
        &ch("local_ts = 192.168.1.0/24"),
        "local_ts",
        &format!("{p}local_ts"),
        "virtual IP",
    );
    warns(
        &ch("ipcomp = yes"),
        "ipcomp",
        &format!("{p}ipcomp"),
        "IPComp",
    );
    let text = with(&[]).replace("10.0.0.0/8", "10.0.0.0/8, fd00::/8");
    warns(
        &text,
        "fd00::/8",
        &format!("{p}remote_ts"),
        "'fd00::/8' ignored",
    );
    for key in [
        "updown = /bin/true",
        "hostaccess = yes",
        "policies = no",
        "inactivity = 1h",
        "mark_in = 42",
        "set_mark_out = 1",
        "if_id_in = 7",
        "priority = 5",
        "interface = eth0",
        "copy_df = no",
        "hw_offload = auto",
    ] {
        let name = key.split(' ').next().unwrap();
        warns(&ch(key), key, &format!("{p}{name}"), "ignored");
    }
}

#[test]
fn replay_window_is_honoured_within_bounds() {
    let ch = |s: &str| with(&[("CHILD", s)]);
    let (conn, _) = load_text(&ch("replay_window = 64")).unwrap();
    assert_eq!(conn.children[0].replay_window, 64);
    let (conn, _) = load_text(&ch("rekey_time = 1h")).unwrap();
    assert_eq!(conn.children[0].replay_window, 128);
    for bad in [
        "replay_window = 8",
        "replay_window = 4096",
        "replay_window = many",
    ] {
        let error = load_text(&ch(bad)).unwrap_err().to_string();
        assert!(
            error.contains("replay_window") && error.contains("line"),
            "{error}"
        );
    }
}

#[test]
fn top_level_warnings() {
    let text = with(&[(
        "TOP",
        "pools {\n p1 { addrs = 10.3.0.0/24 }\n}\nauthorities { }",
    )]);
    let (_, warnings) = load_text(&text).unwrap();
    let keys: Vec<(&str, usize)> = warnings.iter().map(|w| (w.key.as_str(), w.line)).collect();
    assert_eq!(
        keys,
        [
            ("pools", line_of(&text, "pools {")),
            ("authorities", line_of(&text, "authorities"))
        ]
    );
    warns(
        &with(&[("SECRETS", "pkcs12-1 { file = x.p12 }")]),
        "pkcs12-1",
        "secrets.pkcs12-1",
        "ignored",
    );
    warns(
        &with(&[("SECRETS", "token-1 { handle = 01 }")]),
        "token-1",
        "secrets.token-1",
        "ignored",
    );
}

// ---------------------------------------------------------------------------------------------
// Proposals
// ---------------------------------------------------------------------------------------------

#[test]
fn ike_proposals() {
    let ike = |s: &str| parse_proposal(s, ProposalKind::Ike);
    assert_eq!(
        ike("aes256gcm16-prfsha256-x25519").unwrap(),
        prop(
            &[GCM256],
            &[],
            &[Prf::HmacSha256],
            &[DhGroup::Curve25519],
            &[]
        )
    );
    assert_eq!(
        ike("chacha20poly1305-prfsha256-x25519").unwrap(),
        prop(
            &[CHACHA],
            &[],
            &[Prf::HmacSha256],
            &[DhGroup::Curve25519],
            &[]
        )
    );
    // A bare integrity keyword implies the PRF.
    assert_eq!(
        ike("aes256-sha256-modp2048").unwrap(),
        prop(
            &[CBC256],
            &[Integ::HmacSha256_128],
            &[Prf::HmacSha256],
            &[DhGroup::Modp2048],
            &[]
        )
    );
    assert_eq!(
        ike("aes128-aes256-sha2_384-sha512-ecp256-curve25519").unwrap(),
        prop(
            &[CBC128, CBC256],
            &[Integ::HmacSha384_192, Integ::HmacSha512_256],
            &[Prf::HmacSha384, Prf::HmacSha512],
            &[DhGroup::Ecp256, DhGroup::Curve25519],
            &[]
        )
    );
    // An explicit PRF wins over the implied one.
    assert_eq!(
        ike("aes256-sha256-prfsha512-x25519").unwrap(),
        prop(
            &[CBC256],
            &[Integ::HmacSha256_128],
            &[Prf::HmacSha512],
            &[DhGroup::Curve25519],
            &[]
        )
    );
    // strongSwan's idiom: next to an AEAD, the integrity keyword only names the PRF.
    assert_eq!(
        ike("aes256gcm16-sha384-x25519").unwrap(),
        prop(
            &[GCM256],
            &[],
            &[Prf::HmacSha384],
            &[DhGroup::Curve25519],
            &[]
        )
    );
    // Aliases and case.
    for alias in ["aes128gcm", "aes128gcm128", "AES128GCM16"] {
        assert_eq!(
            ike(&format!("{alias}-prfsha256-x25519")).unwrap().encr,
            [GCM128]
        );
    }
    for alias in ["aes256gcm", "aes256gcm128"] {
        assert_eq!(
            ike(&format!("{alias}-prfsha256-x25519")).unwrap().encr,
            [GCM256]
        );
    }
    assert_eq!(
        ike("default").unwrap(),
        default_proposals(ProposalKind::Ike)[0]
    );
    // Round trip through Display.
    let p = ike("aes256-sha256-prfsha256-x25519-ecp256").unwrap();
    assert_eq!(ike(&p.to_string()).unwrap(), p);

    for (text, needle) in [
        ("aes999-prfsha256-x25519", "unknown algorithm 'aes999'"),
        (
            "aes192-sha256-x25519",
            "algorithm 'aes192' is not supported by erebus",
        ),
        ("prfsha256-x25519", "no encryption algorithm"),
        ("aes256gcm16-x25519", "no PRF"),
        ("aes256gcm16-prfsha256", "no key exchange method"),
        ("aes256-prfsha256-x25519", "needs an integrity algorithm"),
        (
            "aes256gcm16-aes256-sha256-x25519",
            "mixes AEAD and non-AEAD",
        ),
        (
            "aes256gcm16-prfsha256-x25519-esn",
            "'esn' belongs in ESP proposals",
        ),
        ("aes256gcm16--x25519", "empty algorithm name"),
        ("aes256gcm16-default", "must stand alone"),
        ("", "empty proposal"),
    ] {
        let err = ike(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn esp_proposals() {
    let esp = |s: &str| parse_proposal(s, ProposalKind::Esp);
    assert_eq!(
        esp("aes256gcm16").unwrap(),
        prop(&[GCM256], &[], &[], &[], &[])
    );
    assert_eq!(
        esp("aes128gcm16-x25519").unwrap(),
        prop(&[GCM128], &[], &[], &[DhGroup::Curve25519], &[])
    );
    assert_eq!(
        esp("chacha20poly1305").unwrap(),
        prop(&[CHACHA], &[], &[], &[], &[])
    );
    assert_eq!(
        esp("aes256-sha256").unwrap(),
        prop(&[CBC256], &[Integ::HmacSha256_128], &[], &[], &[])
    );
    assert_eq!(esp("aes256gcm16-esn").unwrap().esn, [true]);
    assert_eq!(esp("aes256gcm16-noesn").unwrap().esn, [false]);
    assert_eq!(esp("aes256gcm16-esn-noesn").unwrap().esn, [true, false]);
    assert_eq!(
        esp("default").unwrap(),
        default_proposals(ProposalKind::Esp)[0]
    );
    for (text, needle) in [
        ("aes256gcm16-sha256", "takes no integrity algorithm"),
        ("aes256", "needs an integrity algorithm"),
        ("aes256gcm16-prfsha256", "belongs in IKE proposals"),
        ("sha256", "no encryption algorithm"),
        ("aes256gcm16-modp1024", "'modp1024' is not supported"),
        ("aes256gcm16-frob", "unknown algorithm 'frob'"),
    ] {
        let err = esp(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn default_proposals_are_valid_and_separate_aead() {
    let ike = default_proposals(ProposalKind::Ike);
    assert_eq!(ike.len(), 2);
    assert!(ike[0].encr.iter().all(|e| e.is_aead()) && ike[0].integ.is_empty());
    assert!(ike[1].encr.iter().all(|e| !e.is_aead()) && !ike[1].integ.is_empty());
    assert!(
        ike.iter()
            .all(|p| !p.prf.is_empty() && p.dh.contains(&DhGroup::Curve25519))
    );
    assert_eq!(ike[0].encr[0], GCM256);
    for p in ike {
        assert_eq!(
            parse_proposal(&p.to_string(), ProposalKind::Ike).unwrap(),
            p
        );
    }
    let esp = default_proposals(ProposalKind::Esp);
    assert_eq!(esp[0].encr, [GCM256, GCM128, CHACHA]);
    assert!(esp.iter().all(|p| p.dh.is_empty() && p.prf.is_empty()));
    for p in esp {
        assert_eq!(
            parse_proposal(&p.to_string(), ProposalKind::Esp).unwrap(),
            p
        );
    }
}

#[test]
fn ipv6_vips_only_warn() {
    let text = with(&[("CONN", "vips = fd00::1")]);
    let (conn, warnings) = load_text(&text).unwrap();
    assert!(conn.vips.is_empty());
    assert_eq!(warnings.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Arbitrary input
// ---------------------------------------------------------------------------------------------

const WORDS: &[&str] = &[
    "connections",
    "secrets",
    "home",
    "local",
    "remote",
    "children",
    "net",
    "local-1",
    "remote_addrs",
    "auth",
    "psk",
    "pubkey",
    "eap-mschapv2",
    "id",
    "eap_id",
    "certs",
    "cacerts",
    "remote_ts",
    "esp_proposals",
    "proposals",
    "version",
    "vips",
    "ike-1",
    "eap-1",
    "private-1",
    "secret",
    "file",
    "include",
    "x.conf",
    "a.pem",
    "0x0102",
    "0sAA==",
    "aes256gcm16-x25519",
    "10.0.0.0/8",
    "0.0.0.0",
    "::",
    "%any",
    "{",
    "}",
    "=",
    "\"",
    "\\",
    "#",
    ",",
    "\n",
    "\t",
    " ",
    "1h",
    "0",
    "2",
    "yes",
    "mobike",
    "pools",
];

proptest! {
    #[test]
    fn load_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut files = fs(&[("x.conf", b"a = b\n"), ("x509/a.pem", b"A"), ("private/a.pem", b"K")]);
        let _ = load(&bytes, "swanctl.conf", None, &mut *files);
        let _ = load(&bytes, "swanctl.conf", Some("home"), &mut *files);
        let _ = connection_names(&bytes, "swanctl.conf", &mut *files);
    }

    #[test]
    fn load_never_panics_on_word_salad(
        words in proptest::collection::vec(proptest::sample::select(WORDS), 0..300)
    ) {
        let text = words.join(" ");
        let mut files = fs(&[("x.conf", b"home { remote_addrs = x }\n"), ("x509/a.pem", b"A")]);
        for conn in [None, Some("home")] {
            if let Err(err) = load(text.as_bytes(), "swanctl.conf", conn, &mut *files) {
                // Every error about a line names one the text has.
                if let Some(line) = err.line() {
                    let lines = text.split('\n').count();
                    prop_assert!(line >= 1 && line <= lines.max(1), "{err} ({lines} lines)");
                }
            }
        }
    }

    #[test]
    fn proposals_never_panic(text in "[a-z0-9_-]{0,60}") {
        let _ = parse_proposal(&text, ProposalKind::Ike);
        let _ = parse_proposal(&text, ProposalKind::Esp);
    }
}
