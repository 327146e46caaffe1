//! The seed corpus of every target, built from the project's test material. `cargo run
//! --example gen_corpus` writes it to `corpus/<target>/`; the tests check that it reaches
//! what it is meant to reach (a session that comes up, an EAP exchange that succeeds).

use std::net::Ipv4Addr;

use erebus_ipsec::crypto::Aead;
use erebus_ipsec::esp::{HEADROOM, Outbound, TAILROOM};
use erebus_ipsec::proposal::Encr;
use erebus_ipsec::session::id_payload;
use erebus_ipsec::wire::{
    self, Notify, TrafficSelector, Transform, WireProposal, cp, exchange, notify, payload,
    protocol, transform,
};

use crate::Records;
use crate::eap::FIX_AUTHENTICATOR;
use crate::esp_open::{FORGED, RAW, SEALED, SPI};
use crate::ipsec_session::{
    CLOSE, CONFIGS, ENCAPSULATE, ESP, INIT, PATCHED, TIME, config_text, init_flags, sealed_flags,
};

/// The outer capture of the strongSwan reference setup (Ethernet, IKE and ESP in UDP).
pub const ECDSA_OUTER: &[u8] = include_bytes!("../../testvectors/ipsec/captures/ecdsa-outer.pcap");
/// The test file whose `STOCK` constant is the stock strongSwan initiator configuration.
const SWANCTL_TESTS: &str = include_str!("../../core/ipsec/tests/swanctl.rs");

/// One seed: its file name and bytes.
pub type Seed = (String, Vec<u8>);

/// An IKE message of a capture.
#[derive(Clone, Debug)]
pub struct CapturedIke {
    /// Whether the server (198.51.100.1) sent it.
    pub from_server: bool,
    /// The message, without UDP header and non-ESP marker.
    pub message: Vec<u8>,
}

/// The IKE messages of a classic little-endian pcap of Ethernet frames.
pub fn captured_ike(pcap: &[u8]) -> Vec<CapturedIke> {
    let be16 = |b: &[u8], at: usize| usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().expect("4 bytes"));
        let frame = &pcap[at + 16..at + 16 + caplen as usize];
        at += 16 + caplen as usize;
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ip = &ip[..be16(ip, 2).min(ip.len())];
        if ip[9] != 17 {
            continue;
        }
        let udp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        let ports = [be16(udp, 0), be16(udp, 2)];
        let data = &udp[8..];
        let message = if ports.contains(&500) {
            data
        } else if let Some(ike) = data.strip_prefix(&[0u8; 4]) {
            ike
        } else {
            continue; // ESP or a keepalive
        };
        out.push(CapturedIke {
            from_server: ip[12..16] == [198, 51, 100, 1],
            message: message.to_vec(),
        });
    }
    out
}

/// The stock initiator swanctl.conf of `core/ipsec/tests/swanctl.rs`.
pub fn stock_swanctl() -> &'static str {
    let start = SWANCTL_TESTS
        .find("const STOCK: &str = r#\"")
        .expect("the STOCK constant")
        + "const STOCK: &str = r#\"".len();
    let len = SWANCTL_TESTS[start..].find("\"#;").expect("its end");
    &SWANCTL_TESTS[start..start + len]
}

/// Seeds of `swanctl`.
pub fn swanctl() -> Vec<Seed> {
    let mut seeds = vec![(
        "stock-initiator.conf".to_owned(),
        stock_swanctl().as_bytes().to_vec(),
    )];
    for i in 0..CONFIGS.len() {
        let i = u8::try_from(i).expect("few configurations");
        seeds.push((format!("fuzz-config-{i}.conf"), config_text(i).into_bytes()));
    }
    seeds.push((
        "pubkey-includes.conf".to_owned(),
        b"# certificates, includes, pools and odd syntax\n\
connections {\n\
\tcert {\n\
\t\tversion = 2\n\
\t\tremote_addrs = \"vpn.example.test\", 192.0.2.1\n\
\t\tvips = 0.0.0.0\n\
\t\tproposals = aes256gcm16-prfsha384-ecp256, default\n\
\t\tdpd_delay = 30s\n\
\t\tfragmentation = yes\n\
\t\tlocal {\n\
\t\t\tauth = pubkey\n\
\t\t\tcerts = client.crt\n\
\t\t\tid = \"C=CH, O=strongSwan, CN=client\"\n\
\t\t}\n\
\t\tremote {\n\
\t\t\tauth = pubkey\n\
\t\t\tid = @vpn.example.test\n\
\t\t\tcacerts = ca.crt\n\
\t\t}\n\
\t\tchildren {\n\
\t\t\tnet {\n\
\t\t\t\tremote_ts = 10.99.0.0/24, 10.98.0.0/16\n\
\t\t\t\tesp_proposals = aes128gcm16-x25519-noesn\n\
\t\t\t\trekey_time = 1h\n\
\t\t\t\treplay_window = 256\n\
\t\t\t}\n\
\t\t}\n\
\t}\n\
\teap {\n\
\t\tremote_addrs = 192.0.2.2\n\
\t\tlocal { include side.conf\n auth = eap-mschapv2\n eap_id = nested }\n\
\t\tremote { auth = pubkey }\n\
\t\tchildren { c { esp_proposals = chacha20poly1305 } }\n\
\t}\n\
}\n\
pools { p { addrs = 10.3.0.0/24 } }\n\
include inc.conf\n"
            .to_vec(),
    ));
    seeds.push((
        "syntax.conf".to_owned(),
        b"connections { a { remote_addrs = \"quoted \\\"value\\\"\\n\ttab\" # comment\n\
local { auth = psk\nid = 0x0a0b }\nremote { auth = psk }\n\
children { c {} }\n} a { dpd_delay = 5m } }\n\
secrets { ike { secret = 0sZnV6eg== } }\n"
            .to_vec(),
    ));
    seeds
}

/// Seeds of `ike_payloads`: real IKE messages from both sides of the capture.
pub fn ike_payloads() -> Vec<Seed> {
    let messages = captured_ike(ECDSA_OUTER);
    let mut seeds: Vec<Seed> = messages
        .iter()
        .take(8)
        .enumerate()
        .map(|(i, m)| {
            let side = if m.from_server { "server" } else { "client" };
            (format!("ecdsa-outer-{i}-{side}.ike"), m.message.clone())
        })
        .collect();
    // Bare bodies, after the type byte the harness reads first.
    let body = |kind: u8, bytes: Vec<u8>| [vec![kind], bytes].concat();
    seeds.push((
        "ts.body".to_owned(),
        body(
            payload::TSR,
            wire::encode_ts(&[ts("10.99.0.0", "10.99.0.255")]),
        ),
    ));
    seeds.push((
        "cp.body".to_owned(),
        body(
            payload::CP,
            wire::encode_cp(cp::REPLY, &[(cp::IP4_ADDRESS, vec![10, 99, 0, 7])]),
        ),
    ));
    seeds.push((
        "delete.body".to_owned(),
        body(
            payload::DELETE,
            wire::encode_delete(protocol::ESP, &[&[1, 2, 3, 4]]),
        ),
    ));
    seeds.push((
        "idr-dn.body".to_owned(),
        body(
            payload::IDR,
            id_payload("C=CH, O=strongSwan, CN=vpn.example.test"),
        ),
    ));
    seeds
}

/// An EAP Request.
fn eap_request(id: u8, eap_type: u8, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(5 + data.len()).expect("short");
    [&[1, id][..], &len.to_be_bytes(), &[eap_type], data].concat()
}

/// An MS-CHAPv2 Challenge request.
pub fn mschapv2_challenge(id: u8, ms_id: u8) -> Vec<u8> {
    let mut data = vec![1, ms_id, 0, 0, 16];
    data.extend_from_slice(&[0x5c; 16]);
    data.extend_from_slice(b"vpn.example.test");
    let ms_len = u16::try_from(data.len()).expect("short");
    data[2..4].copy_from_slice(&ms_len.to_be_bytes());
    eap_request(id, 26, &data)
}

/// An MS-CHAPv2 Success request with a placeholder authenticator response.
pub fn mschapv2_success(id: u8, ms_id: u8) -> Vec<u8> {
    let text = format!("S={} M=Welcome", "0".repeat(40));
    let mut data = vec![3, ms_id, 0, 0];
    data.extend_from_slice(text.as_bytes());
    let ms_len = u16::try_from(data.len()).expect("short");
    data[2..4].copy_from_slice(&ms_len.to_be_bytes());
    eap_request(id, 26, &data)
}

/// Seeds of `eap`.
pub fn eap() -> Vec<Seed> {
    let records = |user: u8, packets: &[(u8, Vec<u8>)]| {
        let mut out = vec![user];
        for (tag, packet) in packets {
            Records::encode(&mut out, *tag, packet);
        }
        out
    };
    let identity = eap_request(1, 1, b"");
    let success = vec![3, 4, 0, 4];
    let mut failure_data = vec![4, 1, 0, 0];
    failure_data.extend_from_slice(b"E=691 R=0 C=00112233445566778899AABBCCDDEEFF V=3 M=bad");
    vec![
        (
            "mschapv2-success.eap".to_owned(),
            records(
                0,
                &[
                    (0, identity.clone()),
                    (0, mschapv2_challenge(2, 1)),
                    (FIX_AUTHENTICATOR, mschapv2_success(3, 1)),
                    (0, success.clone()),
                ],
            ),
        ),
        (
            "mschapv2-domain-success.eap".to_owned(),
            records(
                1,
                &[
                    (0, mschapv2_challenge(7, 9)),
                    (FIX_AUTHENTICATOR, mschapv2_success(8, 9)),
                    (0, success),
                ],
            ),
        ),
        (
            "mschapv2-failure.eap".to_owned(),
            records(
                0,
                &[
                    (0, identity),
                    (0, mschapv2_challenge(2, 1)),
                    (0, eap_request(3, 26, &failure_data)),
                    (0, vec![4, 3, 0, 4]),
                ],
            ),
        ),
        (
            "other-methods.eap".to_owned(),
            records(
                2,
                &[
                    (0, eap_request(1, 2, b"hello")),
                    (0, eap_request(2, 4, b"md5")),
                    (0, eap_request(3, 254, &[0, 0, 0, 0, 0, 0, 26])),
                    (0, mschapv2_challenge(4, 1)),
                ],
            ),
        ),
    ]
}

/// Seeds of `esp_open`: packets sealed by [`Outbound::seal`] with the harness's AES-256 key.
pub fn esp_open() -> Vec<Seed> {
    let encr = Encr::AesGcm16 { bits: 256 };
    let aead = Aead::new(encr, &vec![0x11; encr.keymat_len()]).expect("a key");
    let mut outbound = Outbound::new(SPI, aead);
    let mut sealed = |inner: &[u8]| {
        let mut buf = vec![0u8; HEADROOM + inner.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + inner.len()].copy_from_slice(inner);
        let range = outbound
            .seal(&mut buf, HEADROOM..HEADROOM + inner.len())
            .expect("seal");
        buf[range].to_vec()
    };
    let packet = ipv4([10, 99, 0, 1], [10, 99, 0, 7], b"ping");
    let first = sealed(&packet);
    let second = sealed(&ipv4([10, 99, 0, 1], [10, 99, 0, 7], b"a longer payload!"));
    let mut one = vec![2];
    Records::encode(&mut one, RAW, &first);
    let mut sequence = vec![2];
    Records::encode(&mut sequence, RAW, &second);
    Records::encode(&mut sequence, RAW, &first);
    Records::encode(&mut sequence, RAW, &second);
    Records::encode(&mut sequence, SEALED, &packet);
    let mut forged = vec![0];
    // SPI, sequence number, IV, then the plaintext payload with its trailer.
    let mut plain = [&SPI.to_be_bytes()[..], &7u32.to_be_bytes(), &[0; 8]].concat();
    plain.extend_from_slice(&packet);
    plain.extend_from_slice(&[1, 2, 2, 4]);
    Records::encode(&mut forged, FORGED, &plain);
    plain[7] = 8;
    let len = plain.len();
    plain[len - 1] = 59;
    Records::encode(&mut forged, FORGED, &plain);
    vec![
        ("sealed-aes256.esp".to_owned(), one),
        ("sealed-sequence.esp".to_owned(), sequence),
        ("forged-trailers.esp".to_owned(), forged),
    ]
}

/// An IPv4 packet (UDP, checksum 0) from `src` to `dst` with `data`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], data: &[u8]) -> Vec<u8> {
    let total = u16::try_from(28 + data.len()).expect("short");
    let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let udp_len = u16::try_from(8 + data.len()).expect("short");
    p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(data);
    p
}

fn ts(start: &str, end: &str) -> TrafficSelector {
    TrafficSelector {
        protocol: 0,
        start_port: 0,
        end_port: 0xffff,
        start: start.parse::<Ipv4Addr>().expect("an address"),
        end: end.parse::<Ipv4Addr>().expect("an address"),
    }
}

/// The ESP transforms the session offers for configuration `config`.
fn esp_transforms(config: u8) -> Vec<Transform> {
    let encr = match config as usize % CONFIGS.len() {
        0 => Transform {
            kind: transform::ENCR,
            id: 20,
            key_bits: Some(256),
        },
        1 => Transform {
            kind: transform::ENCR,
            id: 20,
            key_bits: Some(128),
        },
        _ => Transform {
            kind: transform::ENCR,
            id: 28,
            key_bits: None,
        },
    };
    vec![
        encr,
        Transform {
            kind: transform::ESN,
            id: 0,
            key_bits: None,
        },
    ]
}

fn esp_sa(config: u8, spi: u32) -> Vec<u8> {
    wire::encode_sa(&[WireProposal {
        number: 1,
        protocol: protocol::ESP,
        spi: spi.to_be_bytes().to_vec(),
        transforms: esp_transforms(config),
    }])
}

/// A `SEALED` record body: exchange, flags, then the chain of `payloads`.
pub fn sealed(exchange_type: u8, bits: u8, payloads: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut chain = Vec::new();
    wire::write_chain(&mut chain, payloads);
    let first = payloads.first().map_or(0, |p| p.0);
    [&[exchange_type, bits, first][..], &chain].concat()
}

/// The server's IKE_AUTH response of configuration `config`: its identity, a placeholder AUTH
/// the harness replaces, a virtual IP and DNS server, the CHILD_SA with SPI `spi`.
pub fn auth_response(config: u8, spi: u32) -> Vec<u8> {
    sealed(
        exchange::IKE_AUTH,
        sealed_flags::RESPONSE | sealed_flags::FIX_AUTH,
        &[
            (payload::IDR, id_payload("vpn.example.test")),
            (payload::AUTH, [&[2, 0, 0, 0][..], &[0; 32]].concat()),
            (
                payload::CP,
                wire::encode_cp(
                    cp::REPLY,
                    &[
                        (cp::IP4_ADDRESS, vec![10, 99, 0, 7]),
                        (cp::IP4_DNS, vec![10, 99, 0, 1]),
                    ],
                ),
            ),
            (payload::SA, esp_sa(config, spi)),
            (
                payload::TSI,
                wire::encode_ts(&[ts("10.99.0.7", "10.99.0.7")]),
            ),
            (
                payload::TSR,
                wire::encode_ts(&[ts("10.99.0.0", "10.99.0.255")]),
            ),
        ],
    )
}

/// The records of a session that comes up with configuration `config` and passes a packet
/// each way; `fragments` makes the responder announce and use IKE fragmentation.
pub fn handshake(config: u8, fragments: bool) -> Vec<u8> {
    let mut out = vec![config];
    let init = if fragments {
        init_flags::FRAGMENTATION | init_flags::HASHES
    } else {
        0
    };
    Records::encode(&mut out, INIT, &[init]);
    let mut auth = auth_response(config, 0xc0ff_ee01);
    if fragments {
        auth[1] |= sealed_flags::FRAGMENTS;
    }
    Records::encode(&mut out, crate::ipsec_session::SEALED, &auth);
    Records::encode(
        &mut out,
        ESP,
        &ipv4([10, 99, 0, 1], [10, 99, 0, 7], b"hello"),
    );
    Records::encode(
        &mut out,
        ENCAPSULATE,
        &ipv4([10, 99, 0, 7], [10, 99, 0, 1], b"world"),
    );
    out
}

/// Seeds of `ipsec_session`.
pub fn ipsec_session() -> Vec<Seed> {
    let mut seeds = Vec::new();
    // The captured server messages, with the session's SPIs and message IDs written in.
    let server: Vec<Vec<u8>> = captured_ike(ECDSA_OUTER)
        .into_iter()
        .filter(|m| m.from_server)
        .map(|m| m.message)
        .collect();
    for (i, window) in server.windows(3).take(4).enumerate() {
        let mut out = vec![0];
        for (j, message) in window.iter().enumerate() {
            Records::encode(&mut out, PATCHED, message);
            if j == 0 {
                Records::encode(&mut out, TIME, &[0x03, 0xe8]);
            }
        }
        seeds.push((format!("capture-{i}.session"), out));
    }
    // The first captured response as is (its SPIs are not the session's: dropped).
    if let Some(first) = server.first() {
        let mut out = vec![0];
        Records::encode(&mut out, crate::ipsec_session::RAW, first);
        Records::encode(&mut out, TIME, &[]);
        seeds.push(("capture-raw.session".to_owned(), out));
    }
    for config in 0..u8::try_from(CONFIGS.len()).expect("few") {
        seeds.push((format!("up-{config}.session"), handshake(config, false)));
    }
    seeds.push(("up-fragments.session".to_owned(), handshake(0, true)));
    // Liveness checks both ways, then the server deletes the CHILD_SA and the IKE SA.
    let mut out = handshake(0, false);
    Records::encode(&mut out, TIME, &[]);
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(exchange::INFORMATIONAL, sealed_flags::RESPONSE, &[]),
    );
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(exchange::INFORMATIONAL, 0, &[]),
    );
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(
            exchange::INFORMATIONAL,
            0,
            &[(
                payload::DELETE,
                wire::encode_delete(protocol::ESP, &[&0xc0ff_ee01u32.to_be_bytes()]),
            )],
        ),
    );
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(
            exchange::INFORMATIONAL,
            0,
            &[(payload::DELETE, wire::encode_delete(protocol::IKE, &[]))],
        ),
    );
    seeds.push(("dpd-delete.session".to_owned(), out));
    // The server rekeys the CHILD_SA, then the IKE SA.
    let mut out = handshake(1, false);
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(
            exchange::CREATE_CHILD_SA,
            0,
            &[
                (
                    payload::NOTIFY,
                    Notify::encode(
                        protocol::ESP,
                        &0xc0ff_ee01u32.to_be_bytes(),
                        notify::REKEY_SA,
                        &[],
                    ),
                ),
                (payload::SA, esp_sa(1, 0xc0ff_ee02)),
                (payload::NONCE, vec![0x6e; 32]),
                // The server's view: its networks are TSi here.
                (
                    payload::TSI,
                    wire::encode_ts(&[ts("10.99.0.0", "10.99.0.255")]),
                ),
                (
                    payload::TSR,
                    wire::encode_ts(&[ts("10.99.0.7", "10.99.0.7")]),
                ),
            ],
        ),
    );
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(
            exchange::INFORMATIONAL,
            0,
            &[(
                payload::DELETE,
                wire::encode_delete(protocol::ESP, &[&0xc0ff_ee01u32.to_be_bytes()]),
            )],
        ),
    );
    let ike_sa = ike_rekey_sa(0x77);
    // A P-256 public value: the generator point (the harness writes its own over it).
    let mut ke = vec![0, 19, 0, 0];
    ke.extend_from_slice(&P256_G);
    Records::encode(
        &mut out,
        ESP,
        &ipv4([10, 99, 0, 1], [10, 99, 0, 7], b"rekeyed"),
    );
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(
            exchange::CREATE_CHILD_SA,
            sealed_flags::FILL_KE,
            &[
                (payload::SA, ike_sa),
                (payload::NONCE, vec![0x6f; 32]),
                (payload::KE, ke),
            ],
        ),
    );
    // A liveness check on the new IKE SA, then the old one is deleted.
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(exchange::INFORMATIONAL, 0, &[]),
    );
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(
            exchange::INFORMATIONAL,
            sealed_flags::OLD_SA,
            &[(payload::DELETE, wire::encode_delete(protocol::IKE, &[]))],
        ),
    );
    Records::encode(
        &mut out,
        ESP,
        &ipv4([10, 99, 0, 1], [10, 99, 0, 7], b"after"),
    );
    seeds.push(("server-rekeys.session".to_owned(), out));
    // Our own rekeys come due; the server answers; then we close.
    let mut out = handshake(2, false);
    Records::encode(&mut out, TIME, &3_600_000u32.to_be_bytes());
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(
            exchange::CREATE_CHILD_SA,
            sealed_flags::RESPONSE,
            &[
                (payload::SA, esp_sa(2, 0xc0ff_ee03)),
                (payload::NONCE, vec![0x70; 32]),
                (
                    payload::TSI,
                    wire::encode_ts(&[ts("10.99.0.7", "10.99.0.7")]),
                ),
                (
                    payload::TSR,
                    wire::encode_ts(&[ts("10.99.0.0", "10.99.0.255")]),
                ),
            ],
        ),
    );
    Records::encode(
        &mut out,
        ESP,
        &ipv4([10, 99, 0, 1], [10, 99, 0, 7], b"new child"),
    );
    // The session deletes the old CHILD_SA.
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(exchange::INFORMATIONAL, sealed_flags::RESPONSE, &[]),
    );
    Records::encode(&mut out, TIME, &[]);
    Records::encode(&mut out, CLOSE, &[]);
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(exchange::INFORMATIONAL, sealed_flags::RESPONSE, &[]),
    );
    seeds.push(("own-rekey-close.session".to_owned(), out));
    // Our IKE rekey comes due (config 1: after 20 minutes); the server answers it.
    let mut out = handshake(1, false);
    Records::encode(&mut out, TIME, &1_200_000u32.to_be_bytes());
    let mut ke = vec![0, 19, 0, 0];
    ke.extend_from_slice(&[0; 64]);
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(
            exchange::CREATE_CHILD_SA,
            sealed_flags::RESPONSE | sealed_flags::FILL_KE,
            &[
                (payload::SA, ike_rekey_sa(1)),
                (payload::NONCE, vec![0x71; 32]),
                (payload::KE, ke),
            ],
        ),
    );
    // The session deletes the old IKE SA on it; then a liveness check on the new one.
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(
            exchange::INFORMATIONAL,
            sealed_flags::RESPONSE | sealed_flags::OLD_SA,
            &[],
        ),
    );
    Records::encode(
        &mut out,
        crate::ipsec_session::SEALED,
        &sealed(exchange::INFORMATIONAL, 0, &[]),
    );
    Records::encode(
        &mut out,
        ESP,
        &ipv4([10, 99, 0, 1], [10, 99, 0, 7], b"after"),
    );
    seeds.push(("own-ike-rekey.session".to_owned(), out));
    // A cookie, then a different group, then the answer.
    let mut out = vec![0];
    Records::encode(&mut out, INIT, &[init_flags::COOKIE, 0xc0, 0x01, 0xe5]);
    Records::encode(&mut out, INIT, &[init_flags::INVALID_KE, 0, 19]);
    Records::encode(&mut out, INIT, &[0]);
    Records::encode(&mut out, TIME, &[0, 0, 0x27, 0x10]);
    seeds.push(("cookie-invalid-ke.session".to_owned(), out));
    seeds
}

/// An IKE SA proposal of configuration 1 (AES-128-CBC, HMAC-SHA-256, ECP-256) with an SPI
/// of eight `spi` bytes.
fn ike_rekey_sa(spi: u8) -> Vec<u8> {
    wire::encode_sa(&[WireProposal {
        number: 1,
        protocol: protocol::IKE,
        spi: vec![spi; 8],
        transforms: vec![
            Transform {
                kind: transform::ENCR,
                id: 12,
                key_bits: Some(128),
            },
            Transform {
                kind: transform::INTEG,
                id: 12,
                key_bits: None,
            },
            Transform {
                kind: transform::PRF,
                id: 5,
                key_bits: None,
            },
            Transform {
                kind: transform::KE,
                id: 19,
                key_bits: None,
            },
        ],
    }])
}

/// The P-256 generator, x || y.
const P256_G: [u8; 64] = [
    0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2,
    0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
    0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16,
    0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
];

/// Every target's seeds, by target name.
pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("swanctl", swanctl()),
        ("ike_payloads", ike_payloads()),
        ("eap", eap()),
        ("esp_open", esp_open()),
        ("ipsec_session", ipsec_session()),
    ]
    .into_iter()
    .chain(crate::ovpn_seeds::all())
    .chain(crate::client_seeds::all())
    .collect()
}
