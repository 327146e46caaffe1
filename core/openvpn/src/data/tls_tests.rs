//! TLS-mode data-channel tests: captured AEAD sessions decrypted into the packets the server's
//! tun device saw, the nonce and additional-data layout checked with the primitives directly,
//! captured packets reproduced byte for byte, tampering, replay, compression framing, key
//! rotation with a lame duck, packet-id exhaustion, and property tests for every cipher.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use chacha20poly1305::ChaCha20Poly1305;
use erebus_sansio::Seed;
use proptest::prelude::*;

use super::compress::{CompressionAlg, FramingError};
use super::inband::PING_MAGIC;
use super::key2::KEY2_LEN;
use super::tests::hex;
use super::*;
use crate::packet::PeerId;

const TLS_UDP: &str = include_str!("../../../../testvectors/captures/tls-data-channel/tls-udp.txt");
const TLS_AUTH: &str =
    include_str!("../../../../testvectors/captures/tls-data-channel/tls-auth.txt");
const TLS_AUTH_LZO: &str =
    include_str!("../../../../testvectors/captures/tls-data-channel/tls-auth-lzo.txt");
const TLS_UDP_TUN: &[u8] =
    include_bytes!("../../../../testvectors/captures/tls-data-channel/tls-udp.tun.pcap");
const TLS_AUTH_TUN: &[u8] =
    include_bytes!("../../../../testvectors/captures/tls-data-channel/tls-auth.tun.pcap");
const TLS_AUTH_LZO_TUN: &[u8] =
    include_bytes!("../../../../testvectors/captures/tls-data-channel/tls-auth-lzo.tun.pcap");
const TLS_LEGACY_PRF: &str =
    include_str!("../../../../testvectors/captures/tls-data-channel/tls-legacy-prf.txt");
const TLS_LEGACY_PRF_TUN: &[u8] =
    include_bytes!("../../../../testvectors/captures/tls-data-channel/tls-legacy-prf.tun.pcap");
/// The key material of the legacy-PRF session: the decrypted key-method-2 messages, the
/// control packets (for the session ids) and the TLS key log.
const LEGACY_C2S: &str =
    include_str!("../../../../testvectors/captures/tls-legacy-prf/plaintext-c2s.hex");
const LEGACY_S2C: &str =
    include_str!("../../../../testvectors/captures/tls-legacy-prf/plaintext-s2c.hex");
const LEGACY_CONTROL: &str =
    include_str!("../../../../testvectors/captures/tls-legacy-prf/control-packets.txt");
const LEGACY_KEYLOG: &str =
    include_str!("../../../../testvectors/captures/tls-legacy-prf/keylog.txt");
/// The TLS key logs of the captures whose data packets `tls-data-channel/` holds.
const TLS_UDP_KEYLOG: &str = include_str!("../../../../testvectors/captures/tls-udp/keylog.txt");
const TLS_AUTH_KEYLOG: &str = include_str!("../../../../testvectors/captures/tls-auth/keylog.txt");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

/// One capture's data-channel fixture (see the README next to it).
struct Fixture {
    cipher: String,
    compression: String,
    /// The TLS 1.3 exporter secret of the session, when the fixture names it.
    exporter_secret: Option<Vec<u8>>,
    /// `None` when the test derives it (the legacy-PRF capture).
    key2: Option<[u8; KEY2_LEN]>,
    packets: Vec<(Dir, Vec<u8>)>,
}

impl Fixture {
    /// The fixture's `key2` line.
    fn key2(&self) -> &[u8; KEY2_LEN] {
        self.key2.as_ref().expect("the fixture has a key2 line")
    }
}

fn fixture(text: &str) -> Fixture {
    let mut cipher = String::new();
    let mut compression = String::new();
    let mut key2 = None;
    let mut exporter_secret = None;
    let mut packets = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (field, value) = line.split_once(' ').unwrap();
        match field {
            "cipher" => cipher = value.to_owned(),
            "compression" => compression = value.to_owned(),
            "key2" => key2 = Some(hex(value).try_into().unwrap()),
            "exporter-secret" => exporter_secret = Some(hex(value)),
            "c2s" => packets.push((Dir::ClientToServer, hex(value))),
            "s2c" => packets.push((Dir::ServerToClient, hex(value))),
            _ => {}
        }
    }
    Fixture {
        cipher,
        compression,
        exporter_secret,
        key2,
        packets,
    }
}

/// The IP packets of a little-endian raw-IP pcap.
fn pcap_packets(pcap: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(pcap[..4], [0xd4, 0xc3, 0xb2, 0xa1]);
    assert_eq!(u32::from_le_bytes(pcap[20..24].try_into().unwrap()), 101);
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(pcap[at + 16..at + 16 + len].to_vec());
        at += 16 + len;
    }
    out
}

/// An IPv4 packet with the TCP checksum and MSS option value zeroed: `mssfix` in the sending
/// OpenVPN rewrites the MSS of SYNs after (or before) the tun device saw them.
fn mss_neutral(ip: &[u8]) -> Vec<u8> {
    let mut b = ip.to_vec();
    if b[9] != 6 {
        return b;
    }
    let ihl = usize::from(b[0] & 15) * 4;
    let data_offset = usize::from(b[ihl + 12] >> 4) * 4;
    b[ihl + 16..ihl + 18].fill(0);
    let mut o = ihl + 20;
    while o < ihl + data_offset {
        match b[o] {
            0 => break,
            1 => o += 1,
            kind => {
                if kind == 2 {
                    b[o + 2..o + 4].fill(0);
                }
                o += usize::from(b[o + 1]).max(2);
            }
        }
    }
    b
}

fn config_for(fixture: &Fixture) -> DataConfig {
    let compression = match fixture.compression.as_str() {
        "none" => Compression::None,
        "stub-v2" => Compression::from_compress(Some("stub-v2")).unwrap(),
        "comp-lzo-no" => Compression::from_comp_lzo(Some("no")).unwrap(),
        other => panic!("unknown framing {other}"),
    };
    DataConfig {
        cipher: DataCipher::from_openvpn_names(&fixture.cipher, "SHA1").unwrap(),
        // The server pushed `peer-id 0`.
        peer_id: PeerId::new(0),
        compression,
        replay: ReplayConfig::default(),
    }
}

fn key2_channel(
    key2: &[u8; KEY2_LEN],
    role: Key2Role,
    key_id: u8,
    config: &DataConfig,
) -> DataChannel {
    DataChannel::from_key2(
        key2,
        role,
        KeyId::new(key_id).unwrap(),
        config,
        &Seed::from_byte(7),
    )
    .unwrap()
}

fn open_vec(channel: &mut DataChannel, packet: &[u8]) -> Result<Vec<u8>, DropReason> {
    let mut buf = packet.to_vec();
    let range = channel.open(Instant::ZERO, &mut buf)?;
    Ok(buf[range].to_vec())
}

fn seal_vec(channel: &mut DataChannel, payload: &[u8]) -> Vec<u8> {
    let overhead = channel.overhead();
    let mut buf = vec![0u8; overhead.headroom + payload.len() + overhead.tailroom];
    let inner = overhead.headroom..overhead.headroom + payload.len();
    buf[inner.clone()].copy_from_slice(payload);
    let outer = channel.seal(Instant::ZERO, &mut buf, inner).unwrap();
    buf[outer].to_vec()
}

impl DataChannel {
    /// Sets the AEAD packet-id counter, so that the next packet carries `id + 1`.
    fn force_last_sent(&mut self, id: u32) {
        match &mut self.layout {
            Layout::Aead(state) => state.force_last_sent(id),
            _ => panic!("not an AEAD channel"),
        }
    }
}

/// Opens every data packet of a capture with the matching end's channel and checks each inner
/// packet against the server's tun capture. Returns the payloads in capture order.
fn decrypt_capture(text: &str, tun: &[u8]) -> Vec<(Dir, Vec<u8>)> {
    let fixture = fixture(text);
    decrypt_capture_with(&fixture, fixture.key2(), tun)
}

/// [`decrypt_capture`] with `key2` from elsewhere than the fixture.
fn decrypt_capture_with(
    fixture: &Fixture,
    key2: &[u8; KEY2_LEN],
    tun: &[u8],
) -> Vec<(Dir, Vec<u8>)> {
    let config = config_for(fixture);
    let mut client = key2_channel(key2, Key2Role::Client, 0, &config);
    let mut server = key2_channel(key2, Key2Role::Server, 0, &config);
    let tun = pcap_packets(tun);
    let tun_neutral: Vec<Vec<u8>> = tun.iter().map(|p| mss_neutral(p)).collect();
    assert_eq!(fixture.packets.len(), 14);
    let mut exact = 0;
    let mut payloads = Vec::new();
    for (dir, packet) in &fixture.packets {
        // Each end opens what the other sent; a fresh channel of the sending end cannot.
        let (receiver, sender_role) = match dir {
            Dir::ClientToServer => (&mut server, Key2Role::Client),
            Dir::ServerToClient => (&mut client, Key2Role::Server),
        };
        let mut sender = key2_channel(key2, sender_role, 0, &config);
        assert_eq!(
            open_vec(&mut sender, packet),
            Err(DropReason::Unauthentic),
            "{dir:?}"
        );
        let payload = open_vec(receiver, packet).unwrap();
        assert_eq!(payload[0] >> 4, 4, "an IPv4 packet");
        assert_eq!(
            usize::from(u16::from_be_bytes([payload[2], payload[3]])),
            payload.len(),
            "no framing byte left around the IPv4 packet"
        );
        if tun.contains(&payload) {
            exact += 1;
        } else {
            assert!(
                tun_neutral.contains(&mss_neutral(&payload)),
                "{dir:?} packet not in tun.pcap: {payload:02x?}"
            );
        }
        payloads.push((*dir, payload));
    }
    // All but the SYN and/or SYN-ACK are byte-identical.
    assert!(exact >= 12, "{exact} exact matches");
    assert_eq!(client.drops().total() + server.drops().total(), 0);
    assert_eq!(client.debug_highest().id, 6, "the server sent ids 1..=6");
    assert_eq!(server.debug_highest().id, 8, "the client sent ids 1..=8");
    payloads
}

#[test]
fn captured_aes_256_gcm_packets_decrypt_into_the_tun_packets() {
    let payloads = decrypt_capture(TLS_UDP, TLS_UDP_TUN);
    // Known answer (the wire reference, example E): the client's packet id 3 is a TCP ACK from
    // 10.8.0.2 to 10.8.0.1.
    let fixture = fixture(TLS_UDP);
    let index = fixture
        .packets
        .iter()
        .position(|(dir, p)| *dir == Dir::ClientToServer && p[4..8] == [0, 0, 0, 3])
        .unwrap();
    assert_eq!(
        fixture.packets[index].1[8..24],
        hex("103a9ff796d48e74e6f500a1e523e6c9")[..]
    );
    assert_eq!(
        payloads[index].1[..20],
        hex("45000034 09454000 40061d6d 0a080002 0a080001")[..]
    );
}

#[test]
fn captured_chacha20_poly1305_packets_with_stub_v2_decrypt_into_the_tun_packets() {
    let fixture = fixture(TLS_AUTH);
    assert_eq!(fixture.cipher, "CHACHA20-POLY1305");
    assert_eq!(fixture.compression, "stub-v2");
    decrypt_capture(TLS_AUTH, TLS_AUTH_TUN);
}

#[test]
fn captured_comp_lzo_no_packets_lose_their_framing_byte() {
    let payloads = decrypt_capture(TLS_AUTH_LZO, TLS_AUTH_LZO_TUN);
    // Without the framing configured, the same packets show the 0xFA byte in front.
    let fixture = fixture(TLS_AUTH_LZO);
    let mut config = config_for(&fixture);
    assert_eq!(config.compression, Compression::LzoStub);
    config.compression = Compression::None;
    let mut server = key2_channel(fixture.key2(), Key2Role::Server, 0, &config);
    let mut client = key2_channel(fixture.key2(), Key2Role::Client, 0, &config);
    for ((dir, packet), (_, inner)) in fixture.packets.iter().zip(&payloads) {
        let receiver = match dir {
            Dir::ClientToServer => &mut server,
            Dir::ServerToClient => &mut client,
        };
        let raw = open_vec(receiver, packet).unwrap();
        assert_eq!(raw[0], 0xFA);
        assert_eq!(raw[1..], inner[..]);
    }
    // The wire reference's example H: the client's packet id 3, a 52-byte IP packet, 77 bytes.
    let (_, third) = fixture
        .packets
        .iter()
        .find(|(dir, p)| *dir == Dir::ClientToServer && p[4..8] == [0, 0, 0, 3])
        .unwrap();
    assert_eq!(third.len(), 77);
    assert_eq!(third[8..24], hex("a4dd5fb13d778894b5952245bc45b87d")[..]);
}

/// HKDF-Expand-Label of RFC 8446 section 7.1 with SHA-384 (the captures' suite is
/// `TLS_AES_256_GCM_SHA384`).
fn expand_label(secret: &[u8], label: &[u8], context: &[u8], len: usize) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut info = Vec::new();
    info.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    info.push(u8::try_from(6 + label.len()).unwrap());
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label);
    info.push(u8::try_from(context.len()).unwrap());
    info.extend_from_slice(context);
    let mut out = Vec::new();
    let mut previous = Vec::new();
    for counter in 1u8.. {
        if out.len() >= len {
            break;
        }
        let mut mac = <Hmac<sha2::Sha384> as hmac::KeyInit>::new_from_slice(secret).unwrap();
        mac.update(&previous);
        mac.update(&info);
        mac.update(&[counter]);
        previous = mac.finalize().into_bytes().to_vec();
        out.extend_from_slice(&previous);
    }
    out.truncate(len);
    out
}

/// OpenVPN's `tls-ekm` key2 from a TLS 1.3 exporter secret (RFC 8446 section 7.5, label
/// `EXPORTER-OpenVPN-datakeys`, empty context, 256 bytes).
fn ekm_key2(exporter_secret: &[u8]) -> [u8; KEY2_LEN] {
    use sha2::Digest;
    let empty_hash = sha2::Sha384::digest(b"");
    let derived = expand_label(
        exporter_secret,
        crate::control::prf::EKM_LABEL,
        &empty_hash,
        48,
    );
    expand_label(&derived, b"exporter", &empty_hash, KEY2_LEN)
        .try_into()
        .unwrap()
}

/// The `EXPORTER_SECRET` of an NSS key log.
fn keylog_exporter_secret(keylog: &str) -> Vec<u8> {
    keylog
        .lines()
        .find_map(|l| l.strip_prefix("EXPORTER_SECRET "))
        .map(|rest| hex(rest.split_whitespace().nth(1).unwrap()))
        .unwrap()
}

/// The data keys the fixtures carry are the ones their sessions' key logs give: the packets
/// the tests decrypt are tied to the key material of the captures themselves.
#[test]
fn fixture_keys_come_from_the_captured_key_logs() {
    for (text, keylog) in [
        (TLS_UDP, Some(TLS_UDP_KEYLOG)),
        (TLS_AUTH, Some(TLS_AUTH_KEYLOG)),
        (TLS_AUTH_LZO, None),
    ] {
        let fixture = fixture(text);
        let secret = fixture.exporter_secret.clone().unwrap();
        if let Some(keylog) = keylog {
            assert_eq!(secret, keylog_exporter_secret(keylog));
        }
        assert_eq!(ekm_key2(&secret), *fixture.key2());
    }
}

/// The session id of the first control packet sent in `direction` (`c2s` or `s2c`).
fn control_session_id(packets: &str, direction: &str) -> [u8; 8] {
    let line = packets
        .lines()
        .find_map(|l| l.strip_prefix(direction))
        .unwrap();
    hex(line)[1..9].try_into().unwrap()
}

/// The legacy-PRF session (the server did not see the client's TLS-EKM bit, so both ends
/// derived the data keys with OpenVPN's TLS 1.0 PRF): key2 derived from the randoms of the
/// captured key-method-2 messages and the captured session ids decrypts every data packet
/// into the packets the server's tun device saw; the exporter's key2 of the same session
/// opens none of them.
#[test]
fn captured_legacy_prf_packets_decrypt_with_keys_from_the_openvpn_prf() {
    use crate::control::keymethod::{ClientKeySource, parse_server_message};
    use crate::control::prf::Key2;

    let fixture = fixture(TLS_LEGACY_PRF);
    assert!(fixture.key2.is_none(), "the test derives key2 itself");
    // The client's key-method-2 message: 4 zero bytes, method 2, pre-master, random1, random2.
    let client_message = hex(LEGACY_C2S);
    assert_eq!(client_message[..5], [0, 0, 0, 0, 2]);
    let client = ClientKeySource {
        pre_master: client_message[5..53].try_into().unwrap(),
        random1: client_message[53..85].try_into().unwrap(),
        random2: client_message[85..117].try_into().unwrap(),
    };
    let (server, _) = parse_server_message(&hex(LEGACY_S2C)).unwrap().unwrap();
    let key2 = Key2::from_legacy_prf(
        &client,
        &server.key_source,
        control_session_id(LEGACY_CONTROL, "c2s"),
        control_session_id(LEGACY_CONTROL, "s2c"),
    );
    let payloads = decrypt_capture_with(&fixture, key2.as_bytes(), TLS_LEGACY_PRF_TUN);

    // Known plaintext: the client's first packet is its DNS query to 10.8.0.1:53, its fourth
    // the HTTP request; the server's fourth starts the HTTP response.
    let (dir, dns) = &payloads[0];
    assert_eq!(*dir, Dir::ClientToServer);
    assert_eq!(dns[9], 17, "UDP");
    assert_eq!(dns[12..20], hex("0a080002 0a080001")[..]);
    assert_eq!(dns[22..24], 53u16.to_be_bytes());
    let tcp_payload = |ip: &[u8]| {
        let ihl = usize::from(ip[0] & 15) * 4;
        ip[ihl + usize::from(ip[ihl + 12] >> 4) * 4..].to_vec()
    };
    let nth = |dir: Dir, n: usize| {
        payloads
            .iter()
            .filter(|(d, _)| *d == dir)
            .nth(n)
            .map(|(_, p)| p.clone())
            .unwrap()
    };
    assert!(tcp_payload(&nth(Dir::ClientToServer, 3)).starts_with(b"GET / HTTP/1.1\r\n"));
    assert!(tcp_payload(&nth(Dir::ServerToClient, 3)).starts_with(b"HTTP/1."));

    // The same session's exporter keys are not the ones the peers used.
    let ekm = ekm_key2(&keylog_exporter_secret(LEGACY_KEYLOG));
    let config = config_for(&fixture);
    let mut server_by_ekm = key2_channel(&ekm, Key2Role::Server, 0, &config);
    let mut client_by_ekm = key2_channel(&ekm, Key2Role::Client, 0, &config);
    for (dir, packet) in &fixture.packets {
        let receiver = match dir {
            Dir::ClientToServer => &mut server_by_ekm,
            Dir::ServerToClient => &mut client_by_ekm,
        };
        assert_eq!(open_vec(receiver, packet), Err(DropReason::Unauthentic));
    }
}

/// Decrypts a captured AEAD packet with the primitives directly: nonce = packet id || key2
/// HMAC-slot bytes, additional data = the given bytes, tag in front of the ciphertext.
fn reference_open(
    cipher: &str,
    key: &[u8],
    implicit_iv: &[u8],
    aad: &[u8],
    packet: &[u8],
) -> Option<Vec<u8>> {
    let mut nonce = packet[4..8].to_vec();
    nonce.extend_from_slice(implicit_iv);
    let tag = &packet[8..24];
    let mut plain = packet[24..].to_vec();
    let ok = match cipher {
        "AES-256-GCM" => {
            let aead = Aes256Gcm::new_from_slice(key).unwrap();
            aead.decrypt_inout_detached(
                &Nonce::<Aes256Gcm>::try_from(&nonce[..]).unwrap(),
                aad,
                plain.as_mut_slice().into(),
                &Tag::<Aes256Gcm>::try_from(tag).unwrap(),
            )
        }
        _ => {
            let aead = ChaCha20Poly1305::new_from_slice(key).unwrap();
            aead.decrypt_inout_detached(
                &Nonce::<ChaCha20Poly1305>::try_from(&nonce[..]).unwrap(),
                aad,
                plain.as_mut_slice().into(),
                &Tag::<ChaCha20Poly1305>::try_from(tag).unwrap(),
            )
        }
    };
    ok.ok().map(|()| plain)
}

#[test]
fn nonce_and_additional_data_are_laid_out_as_captured() {
    for text in [TLS_UDP, TLS_AUTH, TLS_AUTH_LZO] {
        let fixture = fixture(text);
        let config = config_for(&fixture);
        let mut server = key2_channel(fixture.key2(), Key2Role::Server, 0, &config);
        let mut client = key2_channel(fixture.key2(), Key2Role::Client, 0, &config);
        let k = fixture.key2();
        for (dir, packet) in &fixture.packets {
            let (key, iv, receiver) = match dir {
                Dir::ClientToServer => (&k[0..32], &k[64..72], &mut server),
                Dir::ServerToClient => (&k[128..160], &k[192..200], &mut client),
            };
            assert_eq!(
                packet[..4],
                [0x48, 0, 0, 0],
                "P_DATA_V2, key id 0, peer id 0"
            );
            // Additional data = header and packet id, nonce = packet id || implicit IV.
            let plain = reference_open(&fixture.cipher, key, iv, &packet[..8], packet).unwrap();
            // Neither the packet id alone (the V1 rule) nor the cipher slot's bytes work.
            assert!(reference_open(&fixture.cipher, key, iv, &packet[4..8], packet).is_none());
            let wrong_iv = &k[if *dir == Dir::ClientToServer {
                0..8
            } else {
                128..136
            }];
            assert!(reference_open(&fixture.cipher, key, wrong_iv, &packet[..8], packet).is_none());
            // The ciphertext has exactly the plaintext's length.
            assert_eq!(plain.len(), packet.len() - 24);
            let mut framed = packet.clone();
            let range = receiver.open(Instant::ZERO, &mut framed).unwrap();
            assert_eq!(framed[range.clone()], plain[plain.len() - range.len()..]);
        }
    }
}

#[test]
fn sealing_reproduces_captured_packets_byte_for_byte() {
    for text in [TLS_UDP, TLS_AUTH, TLS_AUTH_LZO] {
        let fixture = fixture(text);
        let config = config_for(&fixture);
        let mut server = key2_channel(fixture.key2(), Key2Role::Server, 0, &config);
        let mut client = key2_channel(fixture.key2(), Key2Role::Client, 0, &config);
        let mut opener_server = key2_channel(fixture.key2(), Key2Role::Server, 0, &config);
        let mut opener_client = key2_channel(fixture.key2(), Key2Role::Client, 0, &config);
        for (dir, packet) in &fixture.packets {
            let (sender, opener) = match dir {
                Dir::ClientToServer => (&mut client, &mut opener_server),
                Dir::ServerToClient => (&mut server, &mut opener_client),
            };
            let inner = open_vec(opener, packet).unwrap();
            let id = u32::from_be_bytes(packet[4..8].try_into().unwrap());
            sender.force_last_sent(id - 1);
            assert_eq!(
                seal_vec(sender, &inner),
                *packet,
                "{} {dir:?} id {id}",
                fixture.cipher
            );
            assert_eq!(sender.last_sent().map(|p| p.id), Some(id));
        }
    }
}

#[test]
fn aead_channels_number_packets_from_one_and_add_24_bytes() {
    let fixture = fixture(TLS_UDP);
    let config = config_for(&fixture);
    let mut client = key2_channel(fixture.key2(), Key2Role::Client, 0, &config);
    assert_eq!(
        client.overhead(),
        Overhead {
            headroom: 24,
            tailroom: 0
        }
    );
    assert_eq!(client.overhead(), config.overhead());
    for id in 1..=3u32 {
        let packet = seal_vec(&mut client, &[0x45; 61]);
        assert_eq!(
            packet.len(),
            85,
            "a 61-byte packet gives an 85-byte datagram, as captured"
        );
        assert_eq!(packet[..8], [0x48, 0, 0, 0, 0, 0, 0, id as u8]);
    }
}

#[test]
fn p_data_v1_authenticates_the_packet_id_only() {
    let fixture = fixture(TLS_UDP);
    let config = DataConfig {
        peer_id: None,
        ..config_for(&fixture)
    };
    let mut client = key2_channel(fixture.key2(), Key2Role::Client, 2, &config);
    let mut server = key2_channel(fixture.key2(), Key2Role::Server, 2, &config);
    assert_eq!(client.overhead().headroom, 1 + 4 + 16);
    let packet = seal_vec(&mut client, b"\x45 v1 payload");
    assert_eq!(packet[0], 0x32, "P_DATA_V1 with key id 2");
    let k = fixture.key2();
    // Shifted so that the packet id sits where `reference_open` expects a V2 packet's.
    let mut shifted = vec![0u8; 3];
    shifted.extend_from_slice(&packet);
    assert_eq!(
        reference_open("AES-256-GCM", &k[..32], &k[64..72], &packet[1..5], &shifted),
        Some(b"\x45 v1 payload".to_vec())
    );
    assert_eq!(
        reference_open("AES-256-GCM", &k[..32], &k[64..72], &packet[..5], &shifted),
        None,
        "the opcode byte is not authenticated"
    );
    assert_eq!(
        open_vec(&mut server, &packet),
        Ok(b"\x45 v1 payload".to_vec())
    );
    // A P_DATA_V2 packet under the same key id is accepted too: the received header counts.
    let mut v2_client = key2_channel(
        fixture.key2(),
        Key2Role::Client,
        2,
        &DataConfig {
            peer_id: PeerId::new(9),
            ..config
        },
    );
    v2_client.force_last_sent(1);
    let packet = seal_vec(&mut v2_client, b"\x45 v2 payload");
    assert_eq!(packet[..8], [0x4a, 0, 0, 9, 0, 0, 0, 2]);
    assert_eq!(
        open_vec(&mut server, &packet),
        Ok(b"\x45 v2 payload".to_vec())
    );
}

#[test]
fn tampered_and_replayed_aead_packets_are_dropped_and_counted() {
    let fixture = fixture(TLS_UDP);
    let config = config_for(&fixture);
    let mut client = key2_channel(fixture.key2(), Key2Role::Client, 0, &config);
    let mut server = key2_channel(fixture.key2(), Key2Role::Server, 0, &config);
    let packet = seal_vec(&mut client, b"\x45 an ip packet");
    // The peer id (additional data), the packet id, the tag, the first and last ciphertext byte.
    for at in [1, 3, 4, 8, 23, 24, packet.len() - 1] {
        let mut bad = packet.clone();
        bad[at] ^= 0x01;
        assert_eq!(
            open_vec(&mut server, &bad),
            Err(DropReason::Unauthentic),
            "byte {at}"
        );
    }
    assert_eq!(server.drops().get(DropReason::Unauthentic), 7);
    // Another key id in the opcode byte names no key of this channel.
    let mut other_key = packet.clone();
    other_key[0] ^= 0x01;
    assert_eq!(
        open_vec(&mut server, &other_key),
        Err(DropReason::UnknownKey)
    );
    // A control opcode, a truncated packet, a packet with no payload.
    let mut control = packet.clone();
    control[0] = 0x20;
    assert_eq!(open_vec(&mut server, &control), Err(DropReason::Malformed));
    assert_eq!(
        open_vec(&mut server, &packet[..3]),
        Err(DropReason::Malformed)
    );
    assert_eq!(
        open_vec(&mut server, &packet[..24]),
        Err(DropReason::Malformed)
    );
    // Packet id 0 is never valid.
    let mut zero = packet.clone();
    zero[4..8].fill(0);
    assert_eq!(open_vec(&mut server, &zero), Err(DropReason::Replayed));
    assert_eq!(
        server.debug_highest(),
        PacketId::default(),
        "drops change nothing"
    );
    // The genuine packet opens once; its replay is refused.
    assert_eq!(
        open_vec(&mut server, &packet),
        Ok(b"\x45 an ip packet".to_vec())
    );
    assert_eq!(open_vec(&mut server, &packet), Err(DropReason::Replayed));
    // A forged packet with a fresh id moves nothing: the next genuine packet still opens.
    let mut forged = seal_vec(&mut client, b"\x45 second");
    let genuine = forged.clone();
    forged[30] ^= 0x80;
    assert_eq!(open_vec(&mut server, &forged), Err(DropReason::Unauthentic));
    assert_eq!(open_vec(&mut server, &genuine), Ok(b"\x45 second".to_vec()));
    let counts = server.drops();
    assert_eq!(counts.get(DropReason::Unauthentic), 8);
    assert_eq!(counts.get(DropReason::Replayed), 2);
    assert_eq!(counts.get(DropReason::UnknownKey), 1);
    assert_eq!(counts.get(DropReason::Malformed), 3);
    assert_eq!(counts.total(), 14);
}

#[test]
fn packet_id_exhaustion_refuses_to_send() {
    let fixture = fixture(TLS_AUTH);
    let config = config_for(&fixture);
    let mut client = key2_channel(fixture.key2(), Key2Role::Client, 0, &config);
    let mut server = key2_channel(fixture.key2(), Key2Role::Server, 0, &config);
    client.force_last_sent(REKEY_PACKET_ID - 2);
    assert!(!client.needs_rekey());
    seal_vec(&mut client, b"\x45");
    assert!(!client.needs_rekey(), "0xFEFFFFFF sent");
    seal_vec(&mut client, b"\x45");
    assert!(
        client.needs_rekey(),
        "time to renegotiate from 0xFF000000 on"
    );
    client.force_last_sent(u32::MAX - 1);
    let last = seal_vec(&mut client, b"\x45 last");
    assert_eq!(last[4..8], [0xff; 4]);
    assert_eq!(open_vec(&mut server, &last), Ok(b"\x45 last".to_vec()));
    // Nothing more may be sent under this key, and the buffer is left alone.
    let mut buf = [0u8; 64];
    buf[30..34].copy_from_slice(b"\x50abc");
    let before = buf;
    assert_eq!(
        client.seal(Instant::ZERO, &mut buf, 30..34),
        Err(SealError::PacketIdExhausted)
    );
    assert_eq!(buf, before);
    assert_eq!(
        DropReason::from(SealError::PacketIdExhausted),
        DropReason::NotReady
    );
}

#[test]
fn every_framing_travels_through_the_channel() {
    let key2: [u8; KEY2_LEN] = core::array::from_fn(|i| (i * 7 + 1) as u8);
    for compression in [
        Compression::None,
        Compression::LzoStub,
        Compression::Lzo,
        Compression::Stub,
        Compression::Lz4,
        Compression::StubV2,
        Compression::Lz4V2,
    ] {
        let config = DataConfig {
            compression,
            peer_id: PeerId::new(5),
            ..DataConfig::new(DataCipher::Aead(AeadAlg::ChaCha20Poly1305))
        };
        let mut client = key2_channel(&key2, Key2Role::Client, 0, &config);
        let mut server = key2_channel(&key2, Key2Role::Server, 0, &config);
        assert_eq!(client.overhead(), config.overhead());
        for payload in [&[0x45u8, 0, 0, 1][..], &[0x50, 1], &PING_MAGIC, &[0x60]] {
            let packet = seal_vec(&mut client, payload);
            assert_eq!(
                open_vec(&mut server, &packet),
                Ok(payload.to_vec()),
                "{compression:?}"
            );
        }
    }
}

#[test]
fn compressed_payloads_are_dropped_with_a_clear_reason() {
    let key2: [u8; KEY2_LEN] = core::array::from_fn(|i| (i * 3 + 5) as u8);
    let aead = DataConfig::new(DataCipher::Aead(AeadAlg::Aes128Gcm));
    // The peer's channel frames nothing, so it can put any marker in front.
    let mut peer = key2_channel(&key2, Key2Role::Server, 0, &aead);
    let cases = [
        (
            Compression::Lzo,
            &[0x66u8, 1, 2][..],
            DropReason::Unsupported,
        ),
        (Compression::Lz4, &[0x69, 1, 2], DropReason::Unsupported),
        (
            Compression::Lz4V2,
            &[0x50, 0x01, 2],
            DropReason::Unsupported,
        ),
        (Compression::LzoStub, &[0x45, 1], DropReason::Malformed),
        (Compression::Stub, &[0xFA, 1], DropReason::Malformed),
        (Compression::LzoStub, &[0xFA], DropReason::Malformed),
    ];
    for (compression, payload, reason) in cases {
        let mut client = key2_channel(
            &key2,
            Key2Role::Client,
            0,
            &DataConfig {
                compression,
                ..aead
            },
        );
        let packet = seal_vec(&mut peer, payload);
        assert_eq!(
            open_vec(&mut client, &packet),
            Err(reason),
            "{compression:?}"
        );
        assert_eq!(client.drops().get(reason), 1);
    }
    assert_eq!(
        FramingError::Compressed(CompressionAlg::Lzo).to_string(),
        "the peer sent an LZO-compressed payload; erebus does not decompress"
    );
}

#[test]
fn cbc_hmac_in_tls_mode_from_key2() {
    use aes::Aes256;
    use cbc::cipher::KeyIvInit;
    let fixture = fixture(TLS_UDP);
    for auth in [AuthAlg::Sha1, AuthAlg::Sha256, AuthAlg::Sha512] {
        let config = DataConfig {
            cipher: DataCipher::from_openvpn_names("AES-256-CBC", auth.openvpn_name()).unwrap(),
            peer_id: PeerId::new(3),
            compression: Compression::LzoStub,
            replay: ReplayConfig::default(),
        };
        let mut client = key2_channel(fixture.key2(), Key2Role::Client, 1, &config);
        let mut server = key2_channel(fixture.key2(), Key2Role::Server, 1, &config);
        assert_eq!(client.overhead(), config.overhead());
        assert_eq!(
            client.overhead().headroom,
            4 + auth.digest_len() + 16 + 4 + 1
        );
        let packet = seal_vec(&mut client, b"\x45 cbc payload");
        assert_eq!(packet[..4], [0x49, 0, 0, 3]);
        // The layout read with the primitives: HMAC over IV || ciphertext with key2[64..], then
        // CBC with key2[0..32] over packet id (short) || 0xFA || payload.
        let hmac_len = auth.digest_len();
        let body = &packet[4..];
        let hmac_key = &fixture.key2()[64..64 + hmac_len];
        let expected_tag = match auth {
            AuthAlg::Sha1 => {
                let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(hmac_key).unwrap();
                m.update(&body[hmac_len..]);
                m.finalize().into_bytes().to_vec()
            }
            AuthAlg::Sha256 => {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(hmac_key).unwrap();
                m.update(&body[hmac_len..]);
                m.finalize().into_bytes().to_vec()
            }
            _ => {
                let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(hmac_key).unwrap();
                m.update(&body[hmac_len..]);
                m.finalize().into_bytes().to_vec()
            }
        };
        assert_eq!(body[..hmac_len], expected_tag[..]);
        let iv = &body[hmac_len..hmac_len + 16];
        let mut plain = vec![0u8; body.len()];
        let plain = cbc::Decryptor::<Aes256>::new_from_slices(&fixture.key2()[..32], iv)
            .unwrap()
            .decrypt_padded_b2b::<Pkcs7>(&body[hmac_len + 16..], &mut plain)
            .unwrap();
        assert_eq!(plain, b"\x00\x00\x00\x01\xFA\x45 cbc payload");
        assert_eq!(
            open_vec(&mut server, &packet),
            Ok(b"\x45 cbc payload".to_vec())
        );
        let back = seal_vec(&mut server, b"\x45 reply");
        assert_eq!(open_vec(&mut client, &back), Ok(b"\x45 reply".to_vec()));
    }
}

fn keys_channel(key2: &[u8; KEY2_LEN], role: Key2Role, key_id: u8) -> DataChannel {
    let config = DataConfig {
        peer_id: PeerId::new(1),
        ..DataConfig::new(DataCipher::Aead(AeadAlg::Aes256Gcm))
    };
    key2_channel(key2, role, key_id, &config)
}

#[test]
fn key_slots_route_by_key_id_and_retire_the_lame_duck() {
    let first: [u8; KEY2_LEN] = core::array::from_fn(|i| i as u8 ^ 0x11);
    let second: [u8; KEY2_LEN] = core::array::from_fn(|i| i as u8 ^ 0x22);
    let mut client = DataKeys::new();
    let mut server = keys_channel(&first, Key2Role::Server, 0);
    // Before the first key: nothing to send with, everything received is "not ready".
    let mut buf = seal_vec(&mut server, b"\x45 early");
    assert_eq!(
        client.open(Instant::ZERO, &mut buf),
        Err(DropReason::NotReady)
    );
    assert_eq!(
        client.seal(Instant::ZERO, &mut [0u8; 64], 30..40),
        Err(SealError::NoKey)
    );
    assert!(!client.is_ready() && client.overhead().is_none());

    client
        .set_primary(keys_channel(&first, Key2Role::Client, 0))
        .unwrap();
    assert_eq!(client.primary_key_id(), KeyId::new(0));
    let mut buf = seal_vec(&mut server, b"\x45 key 0");
    let range = client.open(Instant::ZERO, &mut buf).unwrap();
    assert_eq!(&buf[range], b"\x45 key 0");

    // A renegotiation: key 1 arrives as the secondary. It receives at once; sending stays on 0.
    let mut server_new = keys_channel(&second, Key2Role::Server, 1);
    client
        .install_secondary(keys_channel(&second, Key2Role::Client, 1))
        .unwrap();
    assert_eq!(client.secondary_key_id(), KeyId::new(1));
    let mut buf = seal_vec(&mut server_new, b"\x45 key 1 early");
    let range = client.open(Instant::ZERO, &mut buf).unwrap();
    assert_eq!(&buf[range], b"\x45 key 1 early");
    let mut out = [0u8; 128];
    out[40..44].copy_from_slice(b"\x45out");
    let sealed = client.seal(Instant::ZERO, &mut out, 40..44).unwrap();
    assert_eq!(out[sealed.start], 0x48, "still sent under key id 0");

    // Switch: key 1 sends, key 0 becomes the lame duck until t = 60 s.
    let expiry = Instant::from_secs(60);
    client.promote(expiry).unwrap();
    assert_eq!(client.primary_key_id(), KeyId::new(1));
    assert_eq!(client.lame_duck_key_id(), KeyId::new(0));
    assert_eq!(client.poll_timeout(), Some(expiry));
    let mut out = [0u8; 128];
    out[40..44].copy_from_slice(b"\x45out");
    let sealed = client.seal(Instant::ZERO, &mut out, 40..44).unwrap();
    assert_eq!(out[sealed.start], 0x49, "now sent under key id 1");
    let mut check = out[sealed].to_vec();
    let mut server_new_in = keys_channel(&second, Key2Role::Server, 1);
    let range = server_new_in.open(Instant::ZERO, &mut check).unwrap();
    assert_eq!(&check[range], b"\x45out");

    // The peer's late packets under key 0 still open until the expiry...
    let mut buf = seal_vec(&mut server, b"\x45 late");
    let range = client.open(Instant::from_secs(59), &mut buf).unwrap();
    assert_eq!(&buf[range], b"\x45 late");
    // ...and not after it: the lame duck is gone, its key id unknown.
    let mut buf = seal_vec(&mut server, b"\x45 later");
    assert_eq!(
        client.open(Instant::from_secs(60), &mut buf),
        Err(DropReason::UnknownKey)
    );
    assert_eq!(client.lame_duck_key_id(), None);
    assert_eq!(client.poll_timeout(), None);
    // A key id nobody has, and a packet that is no data packet.
    let mut stray = seal_vec(
        &mut keys_channel(&second, Key2Role::Server, 5),
        b"\x45 five",
    );
    assert_eq!(
        client.open(Instant::from_secs(61), &mut stray),
        Err(DropReason::UnknownKey)
    );
    assert_eq!(
        client.open(Instant::from_secs(61), &mut [0x20, 1, 2]),
        Err(DropReason::Malformed)
    );
    // The current key keeps working.
    let mut buf = seal_vec(&mut server_new, b"\x45 key 1");
    let range = client.open(Instant::from_secs(62), &mut buf).unwrap();
    assert_eq!(&buf[range], b"\x45 key 1");

    let drops = client.drops();
    assert_eq!(drops.get(DropReason::NotReady), 1);
    assert_eq!(drops.get(DropReason::UnknownKey), 2);
    assert_eq!(drops.get(DropReason::Malformed), 1);
    assert_eq!(drops.total(), 4);
}

#[test]
fn key_slot_rules() {
    let key2: [u8; KEY2_LEN] = core::array::from_fn(|i| i as u8 ^ 0x5a);
    let mut keys = DataKeys::new();
    assert_eq!(
        keys.install_secondary(keys_channel(&key2, Key2Role::Client, 1)),
        Err(SlotError::NoPrimary)
    );
    assert_eq!(keys.promote(Instant::ZERO), Err(SlotError::NoSecondary));
    assert_eq!(
        keys.set_primary(DataChannel::plaintext()),
        Err(SlotError::NoKeyId)
    );
    keys.set_primary(keys_channel(&key2, Key2Role::Client, 0))
        .unwrap();
    assert_eq!(
        keys.install_secondary(keys_channel(&key2, Key2Role::Client, 0)),
        Err(SlotError::SameKeyId(0))
    );
    // Rotations 0 -> 1 -> 2: each leaves exactly one lame duck, the latest previous key.
    keys.rotate(
        keys_channel(&key2, Key2Role::Client, 1),
        Instant::from_secs(10),
    )
    .unwrap();
    keys.rotate(
        keys_channel(&key2, Key2Role::Client, 2),
        Instant::from_secs(20),
    )
    .unwrap();
    assert_eq!(keys.primary_key_id(), KeyId::new(2));
    assert_eq!(keys.lame_duck_key_id(), KeyId::new(1));
    assert_eq!(keys.poll_timeout(), Some(Instant::from_secs(20)));
    keys.handle_timeout(Instant::from_secs(19));
    assert_eq!(keys.lame_duck_key_id(), KeyId::new(1));
    keys.handle_timeout(Instant::from_secs(20));
    assert_eq!(keys.lame_duck_key_id(), None);
    // A secondary that reuses the lame duck's key id replaces the lame duck.
    keys.rotate(
        keys_channel(&key2, Key2Role::Client, 3),
        Instant::from_secs(99),
    )
    .unwrap();
    keys.install_secondary(keys_channel(&key2, Key2Role::Client, 2))
        .unwrap();
    assert_eq!(keys.lame_duck_key_id(), None);
    assert_eq!(keys.secondary_key_id(), KeyId::new(2));
    // Rekey advice follows the primary.
    assert!(!keys.needs_rekey());
    keys.clear();
    assert!(!keys.is_ready());
    assert_eq!(keys.primary_key_id(), None);
}

#[test]
fn key_slots_report_rekey_from_the_primary() {
    let key2: [u8; KEY2_LEN] = core::array::from_fn(|i| i as u8 ^ 0x33);
    let mut keys = DataKeys::new();
    let mut channel = keys_channel(&key2, Key2Role::Client, 0);
    channel.force_last_sent(REKEY_PACKET_ID);
    keys.set_primary(channel).unwrap();
    assert!(keys.needs_rekey());
    keys.rotate(
        keys_channel(&key2, Key2Role::Client, 1),
        Instant::from_secs(5),
    )
    .unwrap();
    assert!(!keys.needs_rekey());
}

#[test]
fn zero_aead_keys_are_refused() {
    let mut key2 = [0x11u8; KEY2_LEN];
    key2[128..160].fill(0);
    let config = DataConfig::new(DataCipher::Aead(AeadAlg::Aes256Gcm));
    let err = DataChannel::from_key2(
        &key2,
        Key2Role::Client,
        KeyId::ZERO,
        &config,
        &Seed::from_byte(0),
    )
    .unwrap_err();
    assert_eq!(
        err,
        DataChannelError::ZeroCipherKey {
            direction: "receive"
        }
    );
    // AES-128 looks at the first 16 bytes only.
    key2[128..144].fill(1);
    assert!(
        DataChannel::from_key2(
            &key2,
            Key2Role::Client,
            KeyId::ZERO,
            &DataConfig::new(DataCipher::Aead(AeadAlg::Aes128Gcm)),
            &Seed::from_byte(0),
        )
        .is_ok()
    );
}

#[test]
fn cipher_names() {
    assert_eq!(
        DataCipher::from_openvpn_names("aes-256-gcm", "whatever"),
        Some(DataCipher::Aead(AeadAlg::Aes256Gcm))
    );
    assert_eq!(
        DataCipher::from_openvpn_names("CHACHA20-POLY1305", "SHA1"),
        Some(DataCipher::Aead(AeadAlg::ChaCha20Poly1305))
    );
    assert_eq!(
        DataCipher::from_openvpn_names("AES-192-GCM", "SHA1"),
        Some(DataCipher::Aead(AeadAlg::Aes192Gcm))
    );
    assert_eq!(
        DataCipher::from_openvpn_names("AES-128-CBC", "SHA256"),
        Some(DataCipher::CbcHmac {
            cipher: CipherAlg::Aes128Cbc,
            auth: AuthAlg::Sha256
        })
    );
    assert_eq!(DataCipher::from_openvpn_names("AES-128-CBC", "MD5"), None);
    assert_eq!(DataCipher::from_openvpn_names("BF-CBC", "SHA1"), None);
    for alg in AeadAlg::ALL {
        assert_eq!(AeadAlg::from_openvpn_name(alg.openvpn_name()), Some(alg));
    }
}

#[test]
fn debug_never_prints_key_material() {
    let fixture = fixture(TLS_UDP);
    let config = config_for(&fixture);
    let mut keys = DataKeys::new();
    keys.set_primary(key2_channel(fixture.key2(), Key2Role::Client, 0, &config))
        .unwrap();
    keys.install_secondary(key2_channel(fixture.key2(), Key2Role::Client, 1, &config))
        .unwrap();
    let text = format!("{keys:?}");
    assert!(text.contains("Aes256Gcm"), "{text}");
    for window in fixture.key2().windows(3).step_by(3) {
        let needle: String = window.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&needle), "{text}");
        let decimal = format!("{}, {}, {}", window[0], window[1], window[2]);
        assert!(!text.contains(&decimal), "{text}");
    }
}

/// Every data cipher of TLS mode, for the property tests.
fn every_cipher() -> Vec<DataCipher> {
    let mut ciphers: Vec<DataCipher> = AeadAlg::ALL.into_iter().map(DataCipher::Aead).collect();
    for cipher in [
        CipherAlg::None,
        CipherAlg::Aes128Cbc,
        CipherAlg::Aes192Cbc,
        CipherAlg::Aes256Cbc,
    ] {
        for auth in [
            AuthAlg::None,
            AuthAlg::Sha1,
            AuthAlg::Sha256,
            AuthAlg::Sha512,
        ] {
            ciphers.push(DataCipher::CbcHmac { cipher, auth });
        }
    }
    ciphers
}

const EVERY_FRAMING: [Compression; 7] = [
    Compression::None,
    Compression::LzoStub,
    Compression::Lzo,
    Compression::Stub,
    Compression::Lz4,
    Compression::StubV2,
    Compression::Lz4V2,
];

proptest! {
    #[test]
    fn tls_open_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..120),
        first in any::<u8>(),
        cipher in 0usize..20,
        framing in 0usize..7,
        through_slots in any::<bool>(),
    ) {
        let key2: [u8; KEY2_LEN] = core::array::from_fn(|i| i as u8 ^ 0x77);
        let config = DataConfig {
            cipher: every_cipher()[cipher],
            peer_id: PeerId::new(0),
            compression: EVERY_FRAMING[framing],
            replay: ReplayConfig::default(),
        };
        let channel = key2_channel(&key2, Key2Role::Client, 0, &config);
        // Half the packets get a plausible data header, so the layouts' own checks are reached.
        let mut packet = vec![if first & 1 == 0 { 0x48 } else { first }];
        packet.extend(body);
        if through_slots {
            let mut keys = DataKeys::new();
            keys.set_primary(channel).unwrap();
            if let Ok(range) = keys.open(Instant::ZERO, &mut packet) {
                prop_assert!(range.end <= packet.len() && !range.is_empty());
            }
        } else {
            let mut channel = channel;
            if let Ok(range) = channel.open(Instant::ZERO, &mut packet) {
                prop_assert!(range.end <= packet.len() && !range.is_empty());
            }
        }
    }

    #[test]
    fn tls_seal_then_open_is_identity(
        payload in proptest::collection::vec(any::<u8>(), 1..400),
        cipher in 0usize..20,
        framing in 0usize..7,
        v2 in any::<bool>(),
        key_id in 0u8..8,
    ) {
        let key2: [u8; KEY2_LEN] = core::array::from_fn(|i| (i as u8).wrapping_mul(13) ^ 0x5c);
        let config = DataConfig {
            cipher: every_cipher()[cipher],
            peer_id: if v2 { PeerId::new(0x00AB_CDEF) } else { None },
            compression: EVERY_FRAMING[framing],
            replay: ReplayConfig::default(),
        };
        let mut client = key2_channel(&key2, Key2Role::Client, key_id, &config);
        let mut server = key2_channel(&key2, Key2Role::Server, key_id, &config);
        prop_assert_eq!(client.overhead(), config.overhead());
        let packet = seal_vec(&mut client, &payload);
        prop_assert!(packet.len() <= payload.len() + config.overhead().total());
        prop_assert_eq!(open_vec(&mut server, &packet), Ok(payload.clone()));
        let back = seal_vec(&mut server, &payload);
        prop_assert_eq!(open_vec(&mut client, &back), Ok(payload));
    }
}
