//! Known-answer tests of prf+, SKEYSEED, the IKE SA keys, the SK payload and ESP against
//! published vectors (NIST ACVP IKEv2 KDF, RFC 7634 Appendices A and B) and against real
//! strongSwan 5.9.8 traffic with the keys strongSwan logged (testvectors/ipsec/captures/README.md).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use erebus_ipsec::crypto::{Aead, IV_LEN, SecretBytes, SkCipher, TAG_LEN};
use erebus_ipsec::esp::{HEADROOM, Inbound, NEXT_IPV4, Outbound, TAILROOM};
use erebus_ipsec::ike::{IkeKeys, IkeSa};
use erebus_ipsec::proposal::{Encr, Prf};
use erebus_ipsec::wire::{self, HEADER_LEN, Header, Notify, exchange, flags, payload, transform};
use erebus_sansio::tunnel::DropReason;
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../../testvectors/ipsec/captures/", $name))
    };
}
macro_rules! fixture_str {
    ($name:literal) => {
        include_str!(concat!("../../../testvectors/ipsec/captures/", $name))
    };
}

const ACVP: &str = fixture_str!("acvp-ikev2-kdf.txt");
const ECDSA_OUTER: &[u8] = fixture!("ecdsa-outer.pcap");
const ECDSA_INNER: &[u8] = fixture!("ecdsa-inner.pcap");
const ECDSA_PSK_KEYS: &str = fixture_str!("ecdsa-psk-responder-keys.log");
const ECDSA_EAP_KEYS: &str = fixture_str!("ecdsa-eap-responder-keys.log");
const RSA_EAP_IKE: &[u8] = fixture!("rsa-eap-ike.pcap");
const RSA_EAP_KEYS: &str = fixture_str!("rsa-eap-responder-keys.log");
const RSA_SERVER_CERT: &[u8] =
    include_bytes!("../../../testvectors/ipsec/strongswan-rsa-server.crt");
const RSA_AUTH: &str = include_str!("../../../testvectors/ipsec/strongswan-rsa-auth.hex");

/// The PSK of the captures' `rw-psk` connection.
const PSK: &[u8] = b"test-psk-not-secret-0123456789";
/// The responder; the initiator is 198.51.100.2.
const SERVER: [u8; 4] = [198, 51, 100, 1];
/// Every SA of the captures negotiated PRF_HMAC_SHA2_256.
const PRF: Prf = Prf::HmacSha256;
/// The strongSwan key log labels.
const OCTETS: &str = "octets = message + nonce + prf(Sk_px, IDx')";
const SHARED_KEY_AUTH: &str = "AUTH = prf(prf(secret, keypad), octets)";

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(text.len().is_multiple_of(2), "odd hex: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Fixture readers

/// The hex dumps of a strongSwan key log (`<label> => <n> bytes @ <address>` followed by rows
/// `<offset>: XX XX ...  <ascii>`), in order.
struct KeyLog(Vec<(String, Vec<u8>)>);

impl KeyLog {
    fn parse(text: &str) -> Self {
        let mut dumps: Vec<(String, Vec<u8>, usize)> = Vec::new();
        for line in text.lines() {
            // The message follows the "<connection|number> " tag.
            let Some(at) = line.find("> ") else { continue };
            let message = &line[at + 2..];
            if let Some((label, rest)) = message.split_once(" => ")
                && rest.contains(" bytes @ ")
            {
                let len = rest.split(' ').next().unwrap().parse().unwrap();
                dumps.push((label.to_owned(), Vec::new(), len));
            } else if let Some((offset, row)) = message.trim_start().split_once(": ")
                && offset.parse::<usize>().is_ok()
                && let Some((_, data, len)) = dumps.last_mut()
            {
                // 16 "XX " groups, then the ASCII column.
                for byte in row.get(..48).unwrap_or(row).split_whitespace() {
                    if data.len() < *len {
                        data.push(u8::from_str_radix(byte, 16).unwrap());
                    }
                }
            }
        }
        for (label, data, len) in &dumps {
            assert_eq!(data.len(), *len, "truncated dump of {label}");
        }
        Self(dumps.into_iter().map(|(l, d, _)| (l, d)).collect())
    }

    /// Every value logged under `label`, in order.
    fn all(&self, label: &str) -> Vec<&[u8]> {
        self.0
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, d)| &d[..])
            .collect()
    }

    /// The first value logged under `label`.
    fn one(&self, label: &str) -> &[u8] {
        self.all(label)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("{label} is not in the log"))
    }
}

/// A UDP datagram of the outer capture, after the non-ESP marker is taken off.
#[derive(Clone, Debug)]
enum Datagram {
    Ike(Vec<u8>),
    Esp(Vec<u8>),
    Keepalive,
}

/// The UDP datagrams of an Ethernet capture and whether the server sent them.
fn outer_datagrams(pcap: &[u8]) -> Vec<(bool, Datagram)> {
    let mut reader = PcapReader::new(pcap).unwrap();
    assert_eq!(reader.header().datalink, DataLink::ETHERNET);
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let frame = packet.unwrap().data;
        if frame[12..14] != [0x08, 0x00] {
            continue; // ARP
        }
        let ip = &frame[14..];
        let ip = &ip[..usize::from(be16(ip, 2))];
        if ip[9] != 17 {
            continue;
        }
        let udp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        let ports = [be16(udp, 0), be16(udp, 2)];
        let data = &udp[8..];
        // RFC 3948: no marker when a port is 500; otherwise 4 zero bytes mark IKE.
        let datagram = if ports.contains(&500) {
            Datagram::Ike(data.to_vec())
        } else if data == [0xff] {
            Datagram::Keepalive
        } else if let Some(ike) = data.strip_prefix(&[0u8; 4]) {
            Datagram::Ike(ike.to_vec())
        } else {
            Datagram::Esp(data.to_vec())
        };
        out.push((ip[12..16] == SERVER, datagram));
    }
    out
}

/// The packets of a raw-IP capture (the responder's TUN device).
fn inner_packets(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = PcapReader::new(pcap).unwrap();
    assert_eq!(reader.header().datalink, DataLink::RAW);
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        out.push(packet.unwrap().data.into_owned());
    }
    out
}

/// The ESP packets of an outer capture, in order, with who sent them. The responder's TUN
/// capture holds their inner packets in the same order.
fn esp_packets(datagrams: &[(bool, Datagram)]) -> Vec<(bool, Vec<u8>)> {
    datagrams
        .iter()
        .filter_map(|(from_server, d)| match d {
            Datagram::Esp(esp) => Some((*from_server, esp.clone())),
            _ => None,
        })
        .collect()
}

/// The body of the first payload of type `kind` in a chain.
fn body_of(first: u8, chain: &[u8], kind: u8) -> Option<Vec<u8>> {
    wire::split_chain(first, chain)
        .unwrap()
        .iter()
        .find(|p| p.kind == kind)
        .map(|p| p.body.to_vec())
}

/// One IKE SA of a capture, created by an IKE_SA_INIT exchange.
struct CapturedSa {
    /// RealMessage1 and RealMessage2 (RFC 7296 §2.15).
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    spi_i: u64,
    spi_r: u64,
    encr: Encr,
    /// Every later message with these SPIs, in order, and whether the server sent it.
    messages: Vec<(bool, Vec<u8>)>,
}

fn chosen_encr(sa_body: &[u8]) -> Encr {
    let proposals = wire::decode_sa(sa_body).unwrap();
    assert_eq!(
        proposals.len(),
        1,
        "a response carries the chosen proposal only"
    );
    let encr = proposals[0]
        .transforms
        .iter()
        .find(|t| t.kind == transform::ENCR)
        .unwrap();
    match (encr.id, encr.key_bits) {
        (20, Some(bits)) => Encr::AesGcm16 { bits },
        (28, None) => Encr::ChaCha20Poly1305,
        other => panic!("unexpected cipher {other:?}"),
    }
}

/// The IKE SAs that an IKE_SA_INIT exchange of the capture created, in order.
fn captured_sas(datagrams: &[(bool, Datagram)]) -> Vec<CapturedSa> {
    let ike: Vec<(bool, &Vec<u8>)> = datagrams
        .iter()
        .filter_map(|(from_server, d)| match d {
            Datagram::Ike(msg) => Some((*from_server, msg)),
            _ => None,
        })
        .collect();
    let mut sas = Vec::new();
    for (i, (from_server, response)) in ike.iter().enumerate() {
        let header = Header::parse(response).unwrap();
        if header.exchange != exchange::IKE_SA_INIT || !header.is_response() {
            continue;
        }
        assert!(from_server);
        let chain = &response[HEADER_LEN..];
        let Some(nr) = body_of(header.next_payload, chain, payload::NONCE) else {
            continue; // COOKIE or INVALID_KE_PAYLOAD
        };
        let (_, request) = ike[..i]
            .iter()
            .rev()
            .find(|(_, m)| {
                let h = Header::parse(m).unwrap();
                h.exchange == exchange::IKE_SA_INIT && !h.is_response() && h.spi_i == header.spi_i
            })
            .unwrap();
        let request_header = Header::parse(request).unwrap();
        let ni = body_of(
            request_header.next_payload,
            &request[HEADER_LEN..],
            payload::NONCE,
        )
        .unwrap();
        let sa_body = body_of(header.next_payload, chain, payload::SA).unwrap();
        let messages = ike[i + 1..]
            .iter()
            .filter(|(_, m)| {
                let h = Header::parse(m).unwrap();
                h.spi_i == header.spi_i && h.spi_r == header.spi_r
            })
            .map(|(from_server, m)| (*from_server, (*m).clone()))
            .collect();
        sas.push(CapturedSa {
            init_request: (*request).clone(),
            init_response: (*response).clone(),
            ni,
            nr,
            spi_i: header.spi_i,
            spi_r: header.spi_r,
            encr: chosen_encr(&sa_body),
            messages,
        });
    }
    sas
}

// ---------------------------------------------------------------------------------------------
// Helpers over the code under test

/// Whether two AEADs hold the same key and salt (they seal a probe identically).
fn same_key(a: &Aead, b: &Aead) -> bool {
    let seal = |aead: &Aead| {
        let mut buf = *b"a probe of a full block and then some";
        let tag = aead.seal(&[7; IV_LEN], b"aad", &mut buf).unwrap();
        (buf, tag)
    };
    seal(a) == seal(b)
}

/// SKEYSEED and the IKE SA keys of `sa` from the logged g^ir, each checked against the log.
fn derive_and_check_keys(sa: &CapturedSa, log: &KeyLog) -> IkeKeys {
    let nonces = [&sa.ni[..], &sa.nr[..]].concat();
    let skeyseed = PRF.compute(&nonces, &[log.one("shared Diffie Hellman secret")]);
    assert_eq!(&skeyseed[..], log.one("SKEYSEED"), "SKEYSEED");
    let keys =
        IkeKeys::derive(PRF, sa.encr, &skeyseed, &sa.ni, &sa.nr, sa.spi_i, sa.spi_r).unwrap();
    assert_eq!(&keys.sk_d[..], log.one("Sk_d secret"), "SK_d");
    assert_eq!(&keys.sk_pi[..], log.one("Sk_pi secret"), "SK_pi");
    assert_eq!(&keys.sk_pr[..], log.one("Sk_pr secret"), "SK_pr");
    let sk_ei = Aead::new(sa.encr, log.one("Sk_ei secret")).unwrap();
    let sk_er = Aead::new(sa.encr, log.one("Sk_er secret")).unwrap();
    assert!(same_key(keys.encrypt_i.aead().unwrap(), &sk_ei), "SK_ei");
    assert!(same_key(keys.encrypt_r.aead().unwrap(), &sk_er), "SK_er");
    assert!(!same_key(keys.encrypt_i.aead().unwrap(), &sk_er));
    keys
}

/// Our view of a captured IKE SA: `we_initiated` opens what the server sent, `!we_initiated`
/// (the server's view) what the client sent.
fn ike_sa(sa: &CapturedSa, log: &KeyLog, we_initiated: bool) -> IkeSa {
    let mut ike = IkeSa::new(sa.spi_i, PRF, sa.encr);
    ike.spi_r = sa.spi_r;
    ike.we_initiated = we_initiated;
    ike.keys = Some(derive_and_check_keys(sa, log));
    ike
}

/// A decrypted IKE message.
struct Opened {
    header: Header,
    from_server: bool,
    first: u8,
    inner: Vec<u8>,
}

fn notify_name(kind: u16) -> String {
    match kind {
        16384 => "INIT_CONTACT".into(),
        16393 => "REKEY_SA".into(),
        16396 => "MOBIKE_SUP".into(),
        16399 => "NO_ADD_ADDR".into(),
        16404 => "MULT_AUTH".into(),
        16417 => "EAP_ONLY".into(),
        16420 => "MSG_ID_SYN_SUP".into(),
        other => other.to_string(),
    }
}

/// The payload list as strongSwan's log prints it (CP, EAP and notify details shortened).
fn describe(first: u8, inner: &[u8]) -> String {
    wire::split_chain(first, inner)
        .unwrap()
        .iter()
        .map(|p| match p.kind {
            payload::SA => "SA".to_owned(),
            payload::KE => "KE".to_owned(),
            payload::IDI => "IDi".to_owned(),
            payload::IDR => "IDr".to_owned(),
            payload::CERT => "CERT".to_owned(),
            payload::CERTREQ => "CERTREQ".to_owned(),
            payload::AUTH => "AUTH".to_owned(),
            payload::NONCE => "No".to_owned(),
            payload::NOTIFY => format!("N({})", notify_name(Notify::parse(p.body).unwrap().kind)),
            payload::DELETE => "D".to_owned(),
            payload::TSI => "TSi".to_owned(),
            payload::TSR => "TSr".to_owned(),
            payload::CP => "CP".to_owned(),
            payload::EAP => "EAP".to_owned(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens every SK message of `sa` with `IkeSa::open`, checks the I flag against the sender and
/// that `IkeSa::seal` and the AEAD rebuild the message. SKF fragments are left out.
fn open_all(sa: &CapturedSa, log: &KeyLog) -> Vec<Opened> {
    let mut client = ike_sa(sa, log, true);
    let mut server = ike_sa(sa, log, false);
    let mut opened = Vec::new();
    for (from_server, msg) in &sa.messages {
        let header = Header::parse(msg).unwrap();
        if header.next_payload == payload::SKF {
            continue;
        }
        assert!(client.owns(&header) && server.owns(&header));
        // The client is the original initiator of every SA created by IKE_SA_INIT here.
        assert_eq!(header.flags & flags::INITIATOR == 0, *from_server);
        let (receiver, sender) = if *from_server {
            (&client, &mut server)
        } else {
            (&server, &mut client)
        };
        let (first, inner) = receiver.open(msg, &header).unwrap();
        // The sender's own view cannot open it: the other direction's key.
        assert!(sender.open(msg, &header).is_err());
        let mut tampered = msg.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(receiver.open(&tampered, &header).is_err());

        // strongSwan pads AEAD messages with nothing but the Pad Length byte: sealing the
        // plaintext again under the captured IV gives the captured bytes.
        let sending_key = if *from_server {
            Aead::new(sa.encr, log.one("Sk_er secret")).unwrap()
        } else {
            Aead::new(sa.encr, log.one("Sk_ei secret")).unwrap()
        };
        let sk_end = HEADER_LEN + 4;
        let iv: [u8; IV_LEN] = msg[sk_end..sk_end + IV_LEN].try_into().unwrap();
        let mut plaintext = [&inner[..], &[0]].concat();
        let tag = sending_key
            .seal(&iv, &msg[..sk_end], &mut plaintext)
            .unwrap();
        assert_eq!([&msg[..sk_end + IV_LEN], &plaintext, &tag].concat(), *msg);

        // IkeSa::seal builds the same header and SK header (only the IV and so the
        // ciphertext differ), and the receiver opens it.
        let ours = sender
            .seal(
                header.exchange,
                header.is_response(),
                header.message_id,
                first,
                &inner,
            )
            .unwrap();
        assert_eq!(ours.len(), msg.len());
        assert_eq!(ours[..sk_end], msg[..sk_end]);
        let our_header = Header::parse(&ours).unwrap();
        assert_eq!(
            receiver.open(&ours, &our_header).unwrap(),
            (first, inner.clone())
        );

        opened.push(Opened {
            header,
            from_server: *from_server,
            first,
            inner,
        });
    }
    opened
}

/// Checks each opened message against `(exchange, message ID, response, sent by the server,
/// payloads)`.
fn check_sequence(opened: &[Opened], expected: &[(u8, u32, bool, bool, &str)]) {
    assert_eq!(opened.len(), expected.len());
    for (o, &(exchange, id, response, from_server, payloads)) in opened.iter().zip(expected) {
        let what = format!("exchange {exchange} message {id} response {response}");
        assert_eq!(o.header.exchange, exchange, "{what}");
        assert_eq!(o.header.message_id, id, "{what}");
        assert_eq!(o.header.is_response(), response, "{what}");
        assert_eq!(o.from_server, from_server, "{what}");
        assert_eq!(describe(o.first, &o.inner), payloads, "{what}");
    }
}

/// The body of the first `kind` payload of the first opened message matching `pick` that has one.
fn find_body(opened: &[Opened], pick: impl Fn(&Opened) -> bool, kind: u8) -> Vec<u8> {
    opened
        .iter()
        .filter(|o| pick(o))
        .find_map(|o| body_of(o.first, &o.inner, kind))
        .unwrap()
}

/// The plaintext of an ESP packet (inner packet, padding, Pad Length, Next Header).
fn esp_plaintext(aead: &Aead, packet: &[u8]) -> Vec<u8> {
    let iv: [u8; IV_LEN] = packet[8..HEADROOM].try_into().unwrap();
    let tag_at = packet.len() - TAG_LEN;
    let mut plaintext = packet[HEADROOM..tag_at].to_vec();
    assert!(aead.open(&iv, &packet[..8], &mut plaintext, &packet[tag_at..]));
    plaintext
}

/// The first CHILD_SA of an IKE SA created in IKE_AUTH: its KEYMAT against the log, every ESP
/// packet of it decrypted with `esp::Inbound` to the packet the TUN capture holds, and
/// `esp::Outbound` re-encrypting them with strongSwan's layout. Returns the packets checked.
fn check_first_child_sa(
    sa: &CapturedSa,
    opened: &[Opened],
    log: &KeyLog,
    datagrams: &[(bool, Datagram)],
    inner: &[Vec<u8>],
) -> usize {
    let sk_d = derive_and_check_keys(sa, log).sk_d;
    // RFC 7296 §2.17: KEYMAT = prf+(SK_d, Ni | Nr), initiator-to-responder keys first.
    let key_len = sa.encr.keymat_len();
    let keymat = PRF.plus(&sk_d, &[&sa.ni, &sa.nr], 2 * key_len);
    assert_eq!(&keymat[..key_len], log.one("encryption initiator key"));
    assert_eq!(&keymat[key_len..], log.one("encryption responder key"));
    let (to_server_key, to_client_key) = keymat.split_at(key_len);

    // Each side's SA payload carries its inbound SPI.
    let spi = |from_server: bool| {
        let body = find_body(
            opened,
            |o| o.header.exchange == exchange::IKE_AUTH && o.from_server == from_server,
            payload::SA,
        );
        be32(&wire::decode_sa(&body).unwrap()[0].spi, 0)
    };
    let (client_spi, server_spi) = (spi(false), spi(true));
    let aead = |key: &[u8]| Aead::new(sa.encr, key).unwrap();
    let mut to_server = Inbound::new(server_spi, aead(to_server_key), 64);
    let mut to_client = Inbound::new(client_spi, aead(to_client_key), 64);
    let mut out_to_server = Outbound::new(server_spi, aead(to_server_key));
    let mut out_to_client = Outbound::new(client_spi, aead(to_client_key));

    let esp = esp_packets(datagrams);
    assert_eq!(esp.len(), inner.len(), "one TUN packet per ESP packet");
    let mut checked = 0;
    let mut matched = vec![false; inner.len()];
    for (index, (from_server, packet)) in esp.iter().enumerate() {
        let spi = be32(packet, 0);
        let (inbound, outbound, key) = if spi == server_spi {
            assert!(!from_server);
            (&mut to_server, &mut out_to_server, to_server_key)
        } else if spi == client_spi {
            assert!(from_server);
            (&mut to_client, &mut out_to_client, to_client_key)
        } else {
            continue;
        };
        let seq = be32(packet, 4);

        // Inbound: the inner packet, padding 1, 2, ... (checked by `open`), Next Header 4.
        let mut buf = packet.clone();
        let range = inbound.open(&mut buf).unwrap().unwrap();
        assert_eq!(range.start, HEADROOM);
        // The two captures ran separately, so a packet may sit a place or two away in the
        // TUN capture; each TUN packet stands for one ESP packet.
        let decrypted = &buf[range.clone()];
        let found = (index.saturating_sub(2)..(index + 3).min(inner.len()))
            .find(|&i| !matched[i] && inner[i] == decrypted)
            .unwrap_or_else(|| panic!("ESP {spi:08x} {seq} is not in the TUN capture"));
        matched[found] = true;
        let expected_inner = &inner[found];
        let trailer = &buf[range.end..buf.len() - TAG_LEN];
        let pad = usize::from(trailer[trailer.len() - 2]);
        assert_eq!(trailer.len(), pad + 2);
        assert!(trailer[..pad].iter().zip(1..).all(|(b, i)| *b == i));
        assert_eq!(trailer[pad + 1], NEXT_IPV4);
        assert_eq!(inbound.open(&mut packet.clone()), Err(DropReason::Replayed));

        // Outbound, same key, SPI and (counting from 1 like strongSwan) sequence number.
        let len = expected_inner.len();
        let mut out = vec![0; HEADROOM + len + TAILROOM];
        out[HEADROOM..HEADROOM + len].copy_from_slice(expected_inner);
        let sealed = outbound.seal(&mut out, HEADROOM..HEADROOM + len).unwrap();
        let ours = &out[sealed];
        assert_eq!(ours.len(), packet.len());
        assert_eq!(ours[..8], packet[..8], "SPI and sequence number");
        assert_eq!(ours[8..HEADROOM], u64::from(seq).to_be_bytes(), "our IV");
        // libipsec's IV is the sequence number XOR a random per-SA value (iv_gen_seq), not
        // the bare sequence number, so the packets differ in IV and ciphertext. The
        // plaintexts (padding included) are the same, and sealing strongSwan's plaintext
        // under its IV gives its packet exactly.
        let key = aead(key);
        let theirs = esp_plaintext(&key, packet);
        assert_eq!(esp_plaintext(&key, ours), theirs);
        let iv: [u8; IV_LEN] = packet[8..HEADROOM].try_into().unwrap();
        let mut again = theirs.clone();
        let tag = key.seal(&iv, &packet[..8], &mut again).unwrap();
        assert_eq!([&packet[..HEADROOM], &again, &tag].concat(), *packet);
        checked += 1;
    }
    assert_eq!(out_to_server.sequence(), 5);
    assert_eq!(out_to_client.sequence(), 5);
    checked
}

/// The capture's SA that used `encr`.
fn ecdsa_sa(encr: Encr) -> (Vec<(bool, Datagram)>, CapturedSa) {
    let datagrams = outer_datagrams(ECDSA_OUTER);
    let sa = captured_sas(&datagrams)
        .into_iter()
        .find(|sa| sa.encr == encr)
        .unwrap();
    (datagrams, sa)
}

fn psk_sa() -> (Vec<(bool, Datagram)>, CapturedSa) {
    let (datagrams, sa) = ecdsa_sa(Encr::AesGcm16 { bits: 256 });
    // The first IKE SA of the capture.
    assert_eq!(sa.spi_i, 0x9e85_cd99_5f4b_77ac);
    (datagrams, sa)
}

fn eap_sa() -> (Vec<(bool, Datagram)>, CapturedSa) {
    let (datagrams, sa) = ecdsa_sa(Encr::ChaCha20Poly1305);
    assert_eq!(sa.spi_i, 0xb5c3_9969_035d_c0aa);
    (datagrams, sa)
}

// ---------------------------------------------------------------------------------------------
// 1. prf+ and SKEYSEED: NIST ACVP

#[test]
fn prf_plus_and_skeyseed_match_the_acvp_ikev2_kdf_vectors() {
    let mut cases = Vec::new();
    for line in ACVP.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(mode) = line.strip_prefix('[') {
            cases.push((mode.trim_end_matches(']').to_owned(), Vec::new()));
            continue;
        }
        let (name, value) = line.split_once('=').unwrap();
        cases
            .last_mut()
            .unwrap()
            .1
            .push((name.trim().to_owned(), value.trim().to_owned()));
    }
    assert_eq!(cases.len(), 15);
    let mut ike_keys_checked = 0;
    for (mode, fields) in &cases {
        let text = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let field = |name: &str| hex(&text(name));
        let prf = match text("digest").as_str() {
            "SHA256" => Prf::HmacSha256,
            "SHA512" => Prf::HmacSha512,
            other => panic!("{other}"),
        };
        let (ni, nr, output) = (field("ni"), field("nr"), field("output"));
        let got: SecretBytes = match mode.as_str() {
            // SKEYSEED = prf(Ni | Nr, g^ir)
            "gen" => prf.compute(&[&ni[..], &nr[..]].concat(), &[&field("secret")]),
            // {SK_d | ... | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
            "dkm" => {
                let (key, spi_i, spi_r) = (field("key"), field("spii"), field("spir"));
                let km = prf.plus(&key, &[&ni, &nr, &spi_i, &spi_r], output.len());
                // IkeKeys::derive splits the same stream (AEAD: no SK_a*).
                let encr = Encr::AesGcm16 { bits: 256 };
                let keys =
                    IkeKeys::derive(prf, encr, &key, &ni, &nr, be64(&spi_i), be64(&spi_r)).unwrap();
                let (d, e) = (prf.len(), encr.keymat_len());
                assert_eq!(&keys.sk_d[..], &output[..d]);
                let aead = |at: usize| Aead::new(encr, &output[at..at + e]).unwrap();
                assert!(same_key(keys.encrypt_i.aead().unwrap(), &aead(d)));
                assert!(same_key(keys.encrypt_r.aead().unwrap(), &aead(d + e)));
                assert_eq!(&keys.sk_pi[..], &output[d + 2 * e..2 * d + 2 * e]);
                assert_eq!(&keys.sk_pr[..], &output[2 * d + 2 * e..3 * d + 2 * e]);
                ike_keys_checked += 1;
                km
            }
            // KEYMAT = prf+(SK_d, Ni | Nr)
            "child" => prf.plus(&field("key"), &[&ni, &nr], output.len()),
            // KEYMAT = prf+(SK_d, g^ir (new) | Ni | Nr)
            "child-dh" => prf.plus(&field("key"), &[&field("secret"), &ni, &nr], output.len()),
            // SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)
            "rekey" => prf.compute(&field("key"), &[&field("secret"), &ni, &nr]),
            other => panic!("mode {other}"),
        };
        assert_eq!(*got, output, "{mode} with {prf}");
    }
    assert_eq!(ike_keys_checked, 3);
}

#[test]
fn prf_plus_is_a_prefix_of_itself_across_round_boundaries() {
    // The ACVP DKM case: any requested length is a prefix of the longer output.
    let key = hex("EFAA7AB0EAA85A3D0BE2100CD4B6FE00FF5025A9EAFDDB3EF518E9F0D3FE60E6");
    let seed = hex("3651FEF5C9C35E93C09A8B90A3F04D598E5C3AE507221684B1F201BB155C3ACD");
    let full = Prf::HmacSha256.plus(&key, &[&seed], 224);
    assert_eq!(full[..4], hex("462B9DD5")[..]);
    for len in [0, 1, 31, 32, 33, 64, 168, 223] {
        assert_eq!(
            *Prf::HmacSha256.plus(&key, &[&seed[..5], &seed[5..]], len),
            full[..len]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. IkeKeys::derive on the capture's first IKE SA

#[test]
fn ike_keys_of_the_first_capture_sa_equal_the_key_log() {
    let (_, sa) = psk_sa();
    let log = KeyLog::parse(ECDSA_PSK_KEYS);
    assert_eq!(sa.encr, Encr::AesGcm16 { bits: 256 });
    assert_eq!(sa.spi_r, 0x66a2_bba5_22e2_18e6);
    assert_eq!((sa.ni.len(), sa.nr.len()), (32, 32));
    derive_and_check_keys(&sa, &log);
}

// ---------------------------------------------------------------------------------------------
// 3. Every IKE message of the first IKE SA

#[test]
fn every_message_of_the_first_ike_sa_opens_and_parses() {
    let (_, sa) = psk_sa();
    let log = KeyLog::parse(ECDSA_PSK_KEYS);
    let opened = open_all(&sa, &log);
    use exchange::{CREATE_CHILD_SA as CHILD, IKE_AUTH as AUTH, INFORMATIONAL as INFO};
    // The responder's charon.log: "parsed ... [ ... ]" and "generating ... [ ... ]".
    check_sequence(
        &opened,
        &[
            (
                AUTH,
                1,
                false,
                false,
                "IDi N(INIT_CONTACT) CERTREQ IDr AUTH CP SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR) \
                 N(MULT_AUTH) N(EAP_ONLY) N(MSG_ID_SYN_SUP)",
            ),
            (
                AUTH,
                1,
                true,
                true,
                "IDr AUTH CP SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR)",
            ),
            // CHILD_SA rekey by the client, then the old SA's DELETE.
            (CHILD, 2, false, false, "N(REKEY_SA) SA No TSi TSr"),
            (CHILD, 2, true, true, "SA No TSi TSr"),
            (INFO, 3, false, false, "D"),
            (INFO, 3, true, true, "D"),
            // CHILD_SA rekey by the server, with its own message IDs.
            (CHILD, 0, false, true, "N(REKEY_SA) SA No KE TSi TSr"),
            (CHILD, 0, true, false, "SA No TSi TSr"),
            (INFO, 1, false, true, "D"),
            (INFO, 1, true, false, "D"),
            // IKE_SA rekey by the client, then the old IKE SA's DELETE.
            (CHILD, 4, false, false, "SA No KE"),
            (CHILD, 4, true, true, "SA No KE"),
            (INFO, 5, false, false, "D"),
            (INFO, 5, true, true, ""),
        ],
    );
    // The virtual IP and DNS server of the IKE_AUTH response.
    let cp = find_body(&opened, |o| o.from_server, payload::CP);
    let (kind, attributes) = wire::decode_cp(&cp).unwrap();
    assert_eq!(kind, wire::cp::REPLY);
    assert_eq!(
        attributes,
        vec![
            (wire::cp::IP4_ADDRESS, &[10u8, 10, 10, 1][..]),
            (wire::cp::IP4_DNS, &[10, 99, 0, 53][..]),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The PSK AUTH payloads

/// `prf(prf(secret, "Key Pad for IKEv2"), octets)` (RFC 7296 §2.15).
fn shared_key_auth(secret: &[u8], octets: &[u8]) -> SecretBytes {
    let pad = PRF.compute(secret, &[b"Key Pad for IKEv2"]);
    PRF.compute(&pad, &[octets])
}

/// Both AUTH payloads with method 2 (shared key MIC) of `sa`, recomputed from `secret`:
/// InitiatorSignedOctets = RealMessage1 | Nr | prf(SK_pi, IDi') and ResponderSignedOctets =
/// RealMessage2 | Ni | prf(SK_pr, IDr'). `log_octets` are the positions of the two in the log's
/// octets dumps.
fn check_shared_key_auths(
    sa: &CapturedSa,
    opened: &[Opened],
    log: &KeyLog,
    secret: &[u8],
    log_octets: [usize; 2],
) {
    let keys = derive_and_check_keys(sa, log);
    let idi = find_body(opened, |o| !o.from_server, payload::IDI);
    let idr = find_body(opened, |o| o.from_server, payload::IDR);
    let initiator_octets = [
        &sa.init_request[..],
        &sa.nr,
        &PRF.compute(&keys.sk_pi, &[&idi]),
    ]
    .concat();
    let responder_octets = [
        &sa.init_response[..],
        &sa.ni,
        &PRF.compute(&keys.sk_pr, &[&idr]),
    ]
    .concat();
    let logged_octets = log.all(OCTETS);
    assert_eq!(initiator_octets, logged_octets[log_octets[0]]);
    assert_eq!(responder_octets, logged_octets[log_octets[1]]);
    let logged_auth = log.all(SHARED_KEY_AUTH);
    assert_eq!(logged_auth.len(), 2);
    let shared_key_auth_payload = |from_server: bool| {
        let auth = opened
            .iter()
            .filter(|o| o.from_server == from_server)
            .filter_map(|o| body_of(o.first, &o.inner, payload::AUTH))
            .find(|auth| auth[0] == 2)
            .unwrap();
        assert_eq!(auth[1..4], [0, 0, 0]);
        auth[4..].to_vec()
    };
    let initiator = shared_key_auth(secret, &initiator_octets);
    assert_eq!(&initiator[..], logged_auth[0]);
    assert_eq!(shared_key_auth_payload(false), *initiator);
    let responder = shared_key_auth(secret, &responder_octets);
    assert_eq!(&responder[..], logged_auth[1]);
    assert_eq!(shared_key_auth_payload(true), *responder);
    assert_ne!(initiator, responder);
}

#[test]
fn psk_auth_payloads_equal_the_recomputed_shared_key_mic() {
    let (_, sa) = psk_sa();
    let log = KeyLog::parse(ECDSA_PSK_KEYS);
    let opened = open_all(&sa, &log);
    assert_eq!(log.one("secret"), PSK);
    assert_eq!(
        &PRF.compute(PSK, &[b"Key Pad for IKEv2"])[..],
        log.one("prf(secret, keypad)")
    );
    // IDi' and IDr' as the log has them: ID type, 3 reserved bytes, the identity.
    let idi = find_body(&opened, |o| !o.from_server, payload::IDI);
    assert_eq!(
        idi,
        [&[3u8, 0, 0, 0][..], b"psk-client@example.test"].concat()
    );
    let idr = hex("02000000 76706e2e6578616d706c652e74657374"); // ID_FQDN vpn.example.test
    assert_eq!(log.all("IDx'")[..2], [&idi[..], &idr[..]]);
    check_shared_key_auths(&sa, &opened, &log, PSK, [0, 1]);
}

// ---------------------------------------------------------------------------------------------
// 5. ESP of the first CHILD_SA (AES-256-GCM-16)

#[test]
fn first_child_sa_esp_packets_decrypt_to_the_tun_capture() {
    let (datagrams, sa) = psk_sa();
    let log = KeyLog::parse(ECDSA_PSK_KEYS);
    let opened = open_all(&sa, &log);
    let inner = inner_packets(ECDSA_INNER);
    assert_eq!(
        check_first_child_sa(&sa, &opened, &log, &datagrams, &inner),
        10
    );
}

// ---------------------------------------------------------------------------------------------
// 6. ChaCha20-Poly1305: RFC 7634 and the capture's EAP IKE SA

const RFC7634_KEY: &str =
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f a0a1a2a3";
const RFC7634_IV: [u8; IV_LEN] = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17];

#[test]
fn rfc7634_appendix_a_esp_example() {
    let key = hex(RFC7634_KEY);
    let aead = || Aead::new(Encr::ChaCha20Poly1305, &key).unwrap();
    let header = hex("01020304 00000005"); // SPI 0x01020304, sequence number 5
    let plaintext = hex(
        "45000054a6f200004001e778c6336405 c000020508005b7a3a080000553bec10
         000736270809 0a0b0c0d0e0f10111213 1415161718191a1b1c1d1e1f20212223
         2425262728292a2b2c2d2e2f30313233 3435363701020204",
    );
    let sealed = hex(
        "24039428b97f417e3c13753a4f05087b 67c352e6a7fab1b982d466ef407ae5c6
         14ee8099d52844eb61aa95dfab4c02f7 2aa71e7c4c4f64c9befe2facc638e8f3
         cbec163fac469b502773f6fb94e664da 9165b82829f641e076aaa8266b7fb0f7
         b11b369907e1ad43",
    );
    assert_eq!((plaintext.len(), sealed.len()), (88, 88 + TAG_LEN));

    // The exact bytes.
    let mut buf = plaintext.clone();
    let tag = aead().seal(&RFC7634_IV, &header, &mut buf).unwrap();
    assert_eq!([&buf[..], &tag].concat(), sealed);

    // esp::Inbound takes the packet apart: the 84-byte ICMP packet, padding 01 02, Pad
    // Length 2, Next Header 4.
    let packet = [&header[..], &RFC7634_IV, &sealed].concat();
    let mut inbound = Inbound::new(0x0102_0304, aead(), 64);
    let mut opened = packet.clone();
    let range = inbound.open(&mut opened).unwrap().unwrap();
    assert_eq!(&opened[range.clone()], &plaintext[..84]);
    assert_eq!(opened[range.end..opened.len() - TAG_LEN], [1, 2, 2, 4]);
    let mut bad = packet;
    bad[20] ^= 0x80;
    assert_eq!(
        Inbound::new(0x0102_0304, aead(), 64).open(&mut bad),
        Err(DropReason::Unauthentic)
    );

    // esp::Outbound's fifth packet carries the same plaintext (its IV is its own: 5).
    let mut outbound = Outbound::new(0x0102_0304, aead());
    let mut buf = vec![0; HEADROOM + 84 + TAILROOM];
    let mut ours = Vec::new();
    for _ in 0..5 {
        buf[HEADROOM..HEADROOM + 84].copy_from_slice(&plaintext[..84]);
        let range = outbound.seal(&mut buf, HEADROOM..HEADROOM + 84).unwrap();
        ours = buf[range].to_vec();
    }
    assert_eq!(ours[..8], header[..]);
    assert_eq!(ours[8..HEADROOM], 5u64.to_be_bytes());
    assert_eq!(esp_plaintext(&aead(), &ours), plaintext);
}

#[test]
fn rfc7634_appendix_b_ikev2_example() {
    let key = hex(RFC7634_KEY);
    let aead = || Aead::new(Encr::ChaCha20Poly1305, &key).unwrap();
    // IKE header: SPIs c0..c7 and d0..d7, SK, version 2.0, INFORMATIONAL, no flags, message
    // ID 9, length 0x45; then the SK header: first inner payload N, length 0x29.
    let aad = hex("c0c1c2c3c4c5c6c7 d0d1d2d3d4d5d6d7 2e202500 00000009 00000045 29000029");
    // N(SET_WINDOW_SIZE = 10) and Pad Length 0.
    let plaintext = hex("0000000c 00004001 0000000a 00");
    let sealed = hex("610394701f8d017f7c129248896b71bf e25236efd7cdc670669063 15b2");
    let mut buf = plaintext.clone();
    let tag = aead().seal(&RFC7634_IV, &aad, &mut buf).unwrap();
    assert_eq!([&buf[..], &tag].concat(), sealed);

    // IkeSa::open: sent by the original responder (no I flag), so opened with SK_er.
    let message = [&aad[..], &RFC7634_IV, &sealed].concat();
    let header = Header::parse(&message).unwrap();
    assert_eq!(
        (header.exchange, header.message_id, header.flags),
        (exchange::INFORMATIONAL, 9, 0)
    );
    let keys = |encrypt_r: Aead| IkeKeys {
        sk_d: SecretBytes::new(Vec::new()),
        sk_pi: SecretBytes::new(Vec::new()),
        sk_pr: SecretBytes::new(Vec::new()),
        encrypt_i: SkCipher::Aead(Aead::new(Encr::ChaCha20Poly1305, &[0x55; 36]).unwrap()),
        encrypt_r: SkCipher::Aead(encrypt_r),
    };
    let mut initiator = IkeSa::new(0xc0c1_c2c3_c4c5_c6c7, PRF, Encr::ChaCha20Poly1305);
    initiator.spi_r = 0xd0d1_d2d3_d4d5_d6d7;
    initiator.keys = Some(keys(aead()));
    assert!(initiator.owns(&header));
    let (first, inner) = initiator.open(&message, &header).unwrap();
    assert_eq!(first, payload::NOTIFY);
    assert_eq!(inner, plaintext[..12]);
    let chain = wire::split_chain(first, &inner).unwrap();
    assert_eq!(chain.len(), 1);
    let notify = Notify::parse(chain[0].body).unwrap();
    assert_eq!(
        (notify.protocol, notify.kind, notify.data),
        (0, 0x4001, &[0, 0, 0, 10][..])
    );

    // IkeSa::seal as the responder builds the same header and SK header.
    let mut responder = IkeSa::new(0xc0c1_c2c3_c4c5_c6c7, PRF, Encr::ChaCha20Poly1305);
    responder.spi_r = 0xd0d1_d2d3_d4d5_d6d7;
    responder.we_initiated = false;
    responder.keys = Some(keys(aead()));
    let ours = responder
        .seal(exchange::INFORMATIONAL, false, 9, payload::NOTIFY, &inner)
        .unwrap();
    assert_eq!(ours.len(), message.len());
    assert_eq!(ours[..aad.len()], aad[..]);
    let iv: [u8; IV_LEN] = ours[aad.len()..aad.len() + IV_LEN].try_into().unwrap();
    let mut body = ours[aad.len() + IV_LEN..ours.len() - TAG_LEN].to_vec();
    assert!(aead().open(&iv, &aad, &mut body, &ours[ours.len() - TAG_LEN..]));
    assert_eq!(body, plaintext);
}

#[test]
fn chacha20_poly1305_eap_sa_of_the_capture() {
    let (datagrams, sa) = eap_sa();
    let log = KeyLog::parse(ECDSA_EAP_KEYS);
    let opened = open_all(&sa, &log);
    use exchange::{IKE_AUTH as AUTH, INFORMATIONAL as INFO};
    check_sequence(
        &opened,
        &[
            (
                AUTH,
                1,
                false,
                false,
                "IDi N(INIT_CONTACT) CERTREQ IDr CP SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR) \
                 N(MULT_AUTH) N(EAP_ONLY) N(MSG_ID_SYN_SUP)",
            ),
            (AUTH, 1, true, true, "IDr CERT AUTH EAP"),
            (AUTH, 2, false, false, "EAP"),
            (AUTH, 2, true, true, "EAP"),
            (AUTH, 3, false, false, "EAP"),
            (AUTH, 3, true, true, "EAP"),
            (AUTH, 4, false, false, "EAP"),
            (AUTH, 4, true, true, "EAP"),
            (AUTH, 5, false, false, "AUTH"),
            (
                AUTH,
                5,
                true,
                true,
                "AUTH CP SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR)",
            ),
            (INFO, 6, false, false, "D"),
            (INFO, 6, true, true, ""),
        ],
    );
    // EAP-Response/Identity "carol".
    let eap = find_body(
        &opened,
        |o| o.header.message_id == 2 && !o.from_server,
        payload::EAP,
    );
    assert_eq!(eap, hex("0200000a01 6361726f6c"));
    // The AUTHs from the MSK (logged as "secret"); octets 0 is what the server's signature
    // in IKE_AUTH response 1 covers.
    let msk = log.one("secret");
    assert_eq!(msk.len(), 64);
    assert_eq!(log.all(OCTETS)[0], log.all(OCTETS)[2]);
    check_shared_key_auths(&sa, &opened, &log, msk, [1, 2]);
    // ESP with ChaCha20-Poly1305.
    let inner = inner_packets(ECDSA_INNER);
    assert_eq!(
        check_first_child_sa(&sa, &opened, &log, &datagrams, &inner),
        10
    );
}

// ---------------------------------------------------------------------------------------------
// 7. SKF: the RSA capture's IKE_AUTH response in two fragments (RFC 7383)

#[test]
fn rsa_capture_skf_fragments_reassemble() {
    let datagrams = outer_datagrams(RSA_EAP_IKE);
    let sas = captured_sas(&datagrams);
    assert_eq!(sas.len(), 1);
    let sa = &sas[0];
    assert_eq!(sa.encr, Encr::ChaCha20Poly1305);
    let log = KeyLog::parse(RSA_EAP_KEYS);
    let keys = derive_and_check_keys(sa, &log);

    let fragments: Vec<&Vec<u8>> = sa
        .messages
        .iter()
        .filter(|(_, m)| Header::parse(m).unwrap().next_payload == payload::SKF)
        .map(|(from_server, m)| {
            assert!(from_server);
            m
        })
        .collect();
    assert_eq!(fragments.len(), 2);
    let mut first = None;
    let mut reassembled = Vec::new();
    for (number, msg) in (1u16..).zip(&fragments) {
        let header = Header::parse(msg).unwrap();
        assert_eq!(header.exchange, exchange::IKE_AUTH);
        assert_eq!(header.message_id, 1);
        assert!(header.is_response());
        let chain = wire::split_chain(header.next_payload, &msg[HEADER_LEN..]).unwrap();
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].kind, payload::SKF);
        // SKF header: generic header, Fragment Number, Total Fragments; then IV, C, ICV.
        let skf = &msg[HEADER_LEN..];
        assert_eq!((be16(skf, 4), be16(skf, 6)), (number, 2));
        assert_eq!(usize::from(be16(skf, 2)), skf.len());
        let next = skf[0];
        if number == 1 {
            first = Some(next);
        } else {
            assert_eq!(next, 0);
        }
        let aad_end = HEADER_LEN + 8;
        let iv: [u8; IV_LEN] = msg[aad_end..aad_end + IV_LEN].try_into().unwrap();
        let tag_at = msg.len() - TAG_LEN;
        let mut body = msg[aad_end + IV_LEN..tag_at].to_vec();
        // The AAD runs to the end of the 8-byte SKF header (RFC 7383 §2.5.3) ...
        let mut short_aad = body.clone();
        assert!(!keys.encrypt_r.aead().unwrap().open(
            &iv,
            &msg[..HEADER_LEN + 4],
            &mut short_aad,
            &msg[tag_at..]
        ));
        assert!(keys.encrypt_r.aead().unwrap().open(
            &iv,
            &msg[..aad_end],
            &mut body,
            &msg[tag_at..]
        ));
        // ... and each fragment has its own padding.
        let pad = usize::from(*body.last().unwrap());
        body.truncate(body.len() - pad - 1);
        reassembled.extend_from_slice(&body);
    }
    let first = first.unwrap();
    assert_eq!(first, payload::IDR);
    // strongSwan: "splitting IKE message (1722 bytes) into 2 fragments".
    assert_eq!(
        HEADER_LEN + 4 + IV_LEN + reassembled.len() + 1 + TAG_LEN,
        1722
    );
    assert_eq!(describe(first, &reassembled), "IDr CERT AUTH EAP");

    // CERT: X.509 (encoding 4) with the server certificate; AUTH: RFC 7427 digital signature,
    // as already extracted for cert.rs; EAP-Request/Identity.
    let cert = body_of(first, &reassembled, payload::CERT).unwrap();
    let server_der = CertificateDer::from_pem_slice(RSA_SERVER_CERT).unwrap();
    assert_eq!(cert, [&[4u8][..], &server_der[..]].concat());
    assert_eq!(
        body_of(first, &reassembled, payload::AUTH).unwrap(),
        hex(RSA_AUTH)
    );
    assert_eq!(
        body_of(first, &reassembled, payload::EAP).unwrap(),
        hex("0100000501")
    );

    // The SK messages of the same SA open with IkeSa as usual.
    use exchange::{IKE_AUTH as AUTH, INFORMATIONAL as INFO};
    check_sequence(
        &open_all(sa, &log),
        &[
            (
                AUTH,
                1,
                false,
                false,
                "IDi N(INIT_CONTACT) CERTREQ IDr CP SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR) \
                 N(MULT_AUTH) N(EAP_ONLY) N(MSG_ID_SYN_SUP)",
            ),
            (AUTH, 2, false, false, "EAP"),
            (AUTH, 2, true, true, "EAP"),
            (AUTH, 3, false, false, "EAP"),
            (AUTH, 3, true, true, "EAP"),
            (AUTH, 4, false, false, "EAP"),
            (AUTH, 4, true, true, "EAP"),
            (AUTH, 5, false, false, "AUTH"),
            (
                AUTH,
                5,
                true,
                true,
                "AUTH CP SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR)",
            ),
            (INFO, 6, false, false, "D"),
            (INFO, 6, true, true, ""),
        ],
    );
}
