//! MS-CHAPv2 (RFC 2759 §9.2, RFC 3079 §3.5.3) and the EAP-MSCHAPv2 peer, against the RFC
//! examples and the bytes of a real strongSwan exchange (the `ecdsa` capture of
//! docs/ikev2-esp.md §7.4: user `carol`, password `carol-password`).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use erebus_ipsec::eap::{EapError, EapMschapv2Peer, EapPacket, EapStep};
use erebus_ipsec::mschapv2;
use proptest::prelude::*;

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(text.len().is_multiple_of(2), "odd hex: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_array<const N: usize>(text: &str) -> [u8; N] {
    hex(text).try_into().unwrap()
}

// RFC 2759 §9.2.
const USER: &[u8] = b"User";
const PASSWORD: &[u8] = b"clientPass";
const AUTH_CHALLENGE: &str = "5B5D7C7D7B3F2F3E3C2C602132262628";
const PEER_CHALLENGE: &str = "21402324255E262A28295F2B3A337C7E";
const NT_RESPONSE: &str = "82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF";

#[test]
fn rfc2759_password_hash() {
    assert_eq!(
        mschapv2::password_hash(PASSWORD),
        hex_array::<16>("44EBBA8D5312B8D611474411F56989AE")
    );
}

#[test]
fn rfc2759_challenge_hash() {
    assert_eq!(
        mschapv2::challenge_hash(&hex_array(PEER_CHALLENGE), &hex_array(AUTH_CHALLENGE), USER),
        hex_array::<8>("D02E4386BCE91226")
    );
}

#[test]
fn challenge_hash_ignores_the_domain() {
    let peer = hex_array(PEER_CHALLENGE);
    let auth = hex_array(AUTH_CHALLENGE);
    assert_eq!(
        mschapv2::challenge_hash(&peer, &auth, b"EXAMPLE\\User"),
        mschapv2::challenge_hash(&peer, &auth, USER)
    );
}

#[test]
fn rfc2759_nt_response() {
    assert_eq!(
        mschapv2::nt_response(
            &hex_array(AUTH_CHALLENGE),
            &hex_array(PEER_CHALLENGE),
            USER,
            PASSWORD
        ),
        hex_array::<24>(NT_RESPONSE)
    );
}

#[test]
fn rfc2759_authenticator_response() {
    assert_eq!(
        mschapv2::authenticator_response(
            PASSWORD,
            &hex_array(NT_RESPONSE),
            &hex_array(PEER_CHALLENGE),
            &hex_array(AUTH_CHALLENGE),
            USER
        ),
        "S=407A5589115FD0D6209F510FE9C04566932CDA56"
    );
}

#[test]
fn rfc3079_master_key() {
    assert_eq!(
        *mschapv2::master_key(PASSWORD, &hex_array(NT_RESPONSE)),
        hex_array::<16>("FDECE3717A8C838CB388E527AE3CDD31")
    );
}

#[test]
fn msk_is_strongswans_layout() {
    // docs/ikev2-esp.md §7.5: RFC 3079's two start keys, then 32 zero bytes.
    let msk = mschapv2::msk(PASSWORD, &hex_array(NT_RESPONSE));
    let mut expected = hex("D5F0E9521E3EA9589645E86051C82226 8B7CDC149B993A1BA118CB153F56DCCB");
    expected.extend_from_slice(&[0; 32]);
    assert_eq!(msk.as_slice(), expected.as_slice());
}

#[test]
fn non_ascii_passwords_are_hashed_as_utf16() {
    // Reference values: MD4 of Python's "...".encode("utf-16-le").
    assert_eq!(
        mschapv2::password_hash("pässwörd".as_bytes()),
        hex_array::<16>("0553152250ac01adb4213cb9938663e4")
    );
    // A character outside the BMP is a surrogate pair; invalid UTF-8 counts as U+FFFD.
    assert_eq!(
        mschapv2::password_hash(&["😀x".as_bytes(), &[0xff]].concat()),
        hex_array::<16>("b44fd4d7834b67c9e86b90a79deec99c")
    );
}

// The strongSwan capture (captures/ecdsa, EAP IKE_SA).
const CAPTURE_AUTH_CHALLENGE: &str = "7d41dd412ad6d35dd0bee991f5368147";
const CAPTURE_PEER_CHALLENGE: &str = "3cc1973a22506f2a3ddff449f4a6fbcc";
const CAPTURE_IDENTITY_REQUEST: &str = "0100000501";
const CAPTURE_IDENTITY_RESPONSE: &str = "0200000a016361726f6c";
const CAPTURE_CHALLENGE: &str =
    "019b00241a019b001f107d41dd412ad6d35dd0bee991f53681477374726f6e675377616e";
const CAPTURE_RESPONSE: &str = "029b00401a029b003b313cc1973a22506f2a3ddff449f4a6fbcc\
     00000000000000009c36abe7aac2a32354f5774c368494b44d62b627186eacd0006361726f6c";
const CAPTURE_SUCCESS_REQUEST: &str = "019c00491a039b0044533d423330333841303341373544\
     4233433832313839363138304132363030313030433734384441334620\
     4d3d57656c636f6d65327374726f6e675377616e00";
const CAPTURE_SUCCESS_RESPONSE: &str = "029c00061a03";
const CAPTURE_EAP_SUCCESS: &str = "039c0004";
/// The MSK of the capture's exchange, as verify_capture.py computes it (it checks the MSK
/// against both AUTH payloads that strongSwan's peers sent with it).
const CAPTURE_MSK: &str = "43b8f2d8433edad4dcefd8f359c5b85e278e1d68af1c0b70a5012d77fba35b1e";

fn respond(step: EapStep) -> Vec<u8> {
    match step {
        EapStep::Respond(bytes) => bytes,
        EapStep::Success => panic!("expected a response, got Success"),
    }
}

#[test]
fn replays_the_strongswan_capture_byte_for_byte() {
    let peer_challenge = hex_array(CAPTURE_PEER_CHALLENGE);
    let mut peer = EapMschapv2Peer::new(b"carol", b"carol-password");

    let out = respond(
        peer.handle(&hex(CAPTURE_IDENTITY_REQUEST), [0; 16])
            .unwrap(),
    );
    assert_eq!(out, hex(CAPTURE_IDENTITY_RESPONSE));
    assert!(peer.msk().is_none());

    let out = respond(
        peer.handle(&hex(CAPTURE_CHALLENGE), peer_challenge)
            .unwrap(),
    );
    assert_eq!(out, hex(CAPTURE_RESPONSE));
    assert!(peer.msk().is_none());

    let out = respond(peer.handle(&hex(CAPTURE_SUCCESS_REQUEST), [0; 16]).unwrap());
    assert_eq!(out, hex(CAPTURE_SUCCESS_RESPONSE));
    assert!(peer.msk().is_none(), "no MSK before EAP-Success");

    assert_eq!(
        peer.handle(&hex(CAPTURE_EAP_SUCCESS), [0; 16]).unwrap(),
        EapStep::Success
    );
    let mut msk = hex(CAPTURE_MSK);
    msk.extend_from_slice(&[0; 32]);
    assert_eq!(peer.msk(), Some(msk.as_slice()));

    // Nothing is accepted after the end.
    assert!(matches!(
        peer.handle(&hex(CAPTURE_EAP_SUCCESS), [0; 16]),
        Err(EapError::Unexpected(_))
    ));
}

#[test]
fn capture_nt_response_and_authenticator_response() {
    let auth = hex_array(CAPTURE_AUTH_CHALLENGE);
    let peer = hex_array(CAPTURE_PEER_CHALLENGE);
    let nt = mschapv2::nt_response(&auth, &peer, b"carol", b"carol-password");
    assert_eq!(
        nt,
        hex_array::<24>("9c36abe7aac2a32354f5774c368494b44d62b627186eacd0")
    );
    assert_eq!(
        mschapv2::authenticator_response(b"carol-password", &nt, &peer, &auth, b"carol"),
        "S=B3038A03A75DB3C821896180A2600100C748DA3F"
    );
}

/// A minimal EAP-MSCHAPv2 server for the tests, computing its side with the same functions.
struct Server {
    user: Vec<u8>,
    password: Vec<u8>,
    auth_challenge: [u8; 16],
    id: u8,
}

impl Server {
    fn new(user: &[u8], password: &[u8]) -> Self {
        Self {
            user: user.to_vec(),
            password: password.to_vec(),
            auth_challenge: *b"0123456789abcdef",
            id: 0x40,
        }
    }

    fn packet(code: u8, id: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![code, id];
        out.extend_from_slice(&u16::try_from(4 + body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn identity_request(&mut self) -> Vec<u8> {
        self.id = self.id.wrapping_add(1);
        Self::packet(1, self.id, &[1])
    }

    fn challenge(&mut self) -> Vec<u8> {
        self.id = self.id.wrapping_add(1);
        let mut body = vec![26, 1, self.id];
        let ms_len = u16::try_from(5 + 16 + 6).unwrap();
        body.extend_from_slice(&ms_len.to_be_bytes());
        body.push(16);
        body.extend_from_slice(&self.auth_challenge);
        body.extend_from_slice(b"server");
        Self::packet(1, self.id, &body)
    }

    /// Checks the peer's Response and returns (MS-CHAPv2 Success text, MSK), or None when the
    /// NT-Response is wrong.
    fn check_response(&self, response: &[u8]) -> Option<(String, Vec<u8>)> {
        assert_eq!(response[0], 2);
        assert_eq!(response[1], self.id);
        assert_eq!(
            usize::from(u16::from_be_bytes([response[2], response[3]])),
            response.len()
        );
        assert_eq!(&response[4..6], &[26, 2]);
        assert_eq!(response[6], self.id);
        assert_eq!(
            usize::from(u16::from_be_bytes([response[7], response[8]])),
            response.len() - 5
        );
        assert_eq!(response[9], 49);
        let peer_challenge: [u8; 16] = response[10..26].try_into().unwrap();
        assert_eq!(&response[26..34], &[0; 8]);
        let nt: [u8; 24] = response[34..58].try_into().unwrap();
        assert_eq!(response[58], 0);
        assert_eq!(&response[59..], self.user.as_slice());
        let expected = mschapv2::nt_response(
            &self.auth_challenge,
            &peer_challenge,
            &self.user,
            &self.password,
        );
        if nt != expected {
            return None;
        }
        let s = mschapv2::authenticator_response(
            &self.password,
            &nt,
            &peer_challenge,
            &self.auth_challenge,
            &self.user,
        );
        Some((s, mschapv2::msk(&self.password, &nt).to_vec()))
    }

    fn success_request(&mut self, s: &str) -> Vec<u8> {
        let ms_id = self.id;
        self.id = self.id.wrapping_add(1);
        let text = format!("{s} M=welcome");
        let mut body = vec![26, 3, ms_id];
        body.extend_from_slice(&u16::try_from(5 + text.len()).unwrap().to_be_bytes());
        body.extend_from_slice(text.as_bytes());
        Self::packet(1, self.id, &body)
    }

    fn failure_request(&mut self) -> Vec<u8> {
        let ms_id = self.id;
        self.id = self.id.wrapping_add(1);
        let text = "E=691 R=0 C=00112233445566778899AABBCCDDEEFF V=3 M=Authentication failure";
        let mut body = vec![26, 4, ms_id];
        body.extend_from_slice(&u16::try_from(5 + text.len()).unwrap().to_be_bytes());
        body.extend_from_slice(text.as_bytes());
        body.push(0);
        Self::packet(1, self.id, &body)
    }
}

#[test]
fn full_exchange_against_a_test_server() {
    let mut server = Server::new(b"alice", "pässwörd".as_bytes());
    let mut peer = EapMschapv2Peer::new(b"alice", "pässwörd".as_bytes());

    let out = respond(peer.handle(&server.identity_request(), [9; 16]).unwrap());
    assert_eq!(out, [&[2, server.id, 0, 10, 1][..], b"alice"].concat());

    let out = respond(peer.handle(&server.challenge(), [7; 16]).unwrap());
    let (s, msk) = server
        .check_response(&out)
        .expect("the NT-Response verifies");

    let out = respond(peer.handle(&server.success_request(&s), [0; 16]).unwrap());
    assert_eq!(out, [2, server.id, 0, 6, 26, 3]);

    assert_eq!(
        peer.handle(&[3, server.id, 0, 4], [0; 16]).unwrap(),
        EapStep::Success
    );
    assert_eq!(peer.msk(), Some(msk.as_slice()));
    assert_eq!(msk.len(), 64);
}

#[test]
fn lower_case_authenticator_response_is_accepted() {
    let mut server = Server::new(b"alice", b"secret");
    let mut peer = EapMschapv2Peer::new(b"alice", b"secret");
    let out = respond(peer.handle(&server.challenge(), [1; 16]).unwrap());
    let (s, _) = server.check_response(&out).unwrap();
    let s = format!("S={}", s[2..].to_ascii_lowercase());
    assert!(matches!(
        peer.handle(&server.success_request(&s), [0; 16]),
        Ok(EapStep::Respond(_))
    ));
}

#[test]
fn wrong_authenticator_response_is_an_attack() {
    let mut server = Server::new(b"alice", b"secret");
    let mut peer = EapMschapv2Peer::new(b"alice", b"secret");
    let out = respond(peer.handle(&server.challenge(), [1; 16]).unwrap());
    let (s, _) = server.check_response(&out).unwrap();
    // Flip one hex digit.
    let mut bad = s.into_bytes();
    bad[10] = if bad[10] == b'0' { b'1' } else { b'0' };
    let bad = String::from_utf8(bad).unwrap();
    assert_eq!(
        peer.handle(&server.success_request(&bad), [0; 16]),
        Err(EapError::AuthenticatorMismatch)
    );
    assert!(peer.msk().is_none());
    // And an EAP-Success afterwards gets nowhere.
    assert!(peer.handle(&[3, server.id, 0, 4], [0; 16]).is_err());
    assert!(peer.msk().is_none());
}

#[test]
fn server_that_does_not_know_the_password_is_caught() {
    // The server has another password: its S= cannot match ours.
    let mut server = Server::new(b"alice", b"other");
    let mut peer = EapMschapv2Peer::new(b"alice", b"secret");
    let out = respond(peer.handle(&server.challenge(), [1; 16]).unwrap());
    let peer_challenge: [u8; 16] = out[10..26].try_into().unwrap();
    let nt: [u8; 24] = out[34..58].try_into().unwrap();
    let s = mschapv2::authenticator_response(
        b"other",
        &nt,
        &peer_challenge,
        &server.auth_challenge,
        b"alice",
    );
    assert_eq!(
        peer.handle(&server.success_request(&s), [0; 16]),
        Err(EapError::AuthenticatorMismatch)
    );
}

#[test]
fn eap_success_without_mschapv2_success_is_refused() {
    let mut server = Server::new(b"alice", b"secret");
    let mut peer = EapMschapv2Peer::new(b"alice", b"secret");
    let _ = respond(peer.handle(&server.challenge(), [1; 16]).unwrap());
    assert_eq!(
        peer.handle(&[3, server.id, 0, 4], [0; 16]),
        Err(EapError::AuthenticatorMismatch)
    );
    assert!(peer.msk().is_none());

    let mut peer = EapMschapv2Peer::new(b"alice", b"secret");
    assert!(matches!(
        peer.handle(&[3, 1, 0, 4], [0; 16]),
        Err(EapError::Unexpected(_))
    ));
    assert!(peer.msk().is_none());
}

#[test]
fn mschapv2_failure_e691() {
    let mut server = Server::new(b"alice", b"secret");
    let mut peer = EapMschapv2Peer::new(b"alice", b"wrong");
    let out = respond(peer.handle(&server.challenge(), [1; 16]).unwrap());
    assert!(server.check_response(&out).is_none());
    let Err(EapError::Failure(message)) = peer.handle(&server.failure_request(), [0; 16]) else {
        panic!("expected a failure");
    };
    assert!(message.contains("E=691"), "{message}");
    assert!(message.contains("Authentication failure"), "{message}");
    assert!(
        message.contains("the server refused the EAP password"),
        "{message}"
    );
    assert_eq!(
        peer.failure_response(),
        Some(&[2, server.id, 0, 6, 26, 4][..])
    );
    assert!(peer.msk().is_none());
}

#[test]
fn eap_failure() {
    let mut peer = EapMschapv2Peer::new(b"alice", b"secret");
    let _ = peer
        .handle(&hex(CAPTURE_IDENTITY_REQUEST), [0; 16])
        .unwrap();
    let error = peer.handle(&[4, 1, 0, 4], [0; 16]).unwrap_err();
    assert!(matches!(error, EapError::Failure(_)));
    assert!(error.to_string().contains("EAP-Failure"), "{error}");
}

#[test]
fn other_methods_get_a_nak_proposing_mschapv2() {
    let mut peer = EapMschapv2Peer::new(b"alice", b"secret");
    // EAP-MD5 challenge.
    let out = respond(peer.handle(&[1, 5, 0, 6, 4, 0], [0; 16]).unwrap());
    assert_eq!(out, [2, 5, 0, 6, 3, 26]);
    // EAP-TLS start.
    let out = respond(peer.handle(&[1, 6, 0, 6, 13, 0x20], [0; 16]).unwrap());
    assert_eq!(out, [2, 6, 0, 6, 3, 26]);
    // An expanded type gets an expanded Nak.
    let out = respond(
        peer.handle(&[1, 7, 0, 12, 254, 0, 0, 9, 0, 0, 0, 1], [0; 16])
            .unwrap(),
    );
    assert_eq!(
        out,
        [
            2, 7, 0, 20, 254, 0, 0, 0, 0, 0, 0, 3, 254, 0, 0, 0, 0, 0, 0, 26
        ]
    );
    // The exchange still works afterwards.
    let mut server = Server::new(b"alice", b"secret");
    let out = respond(peer.handle(&server.challenge(), [1; 16]).unwrap());
    assert!(server.check_response(&out).is_some());
}

#[test]
fn notification_is_acknowledged() {
    let mut peer = EapMschapv2Peer::new(b"alice", b"secret");
    let mut request = vec![1, 3, 0, 0, 2];
    request.extend_from_slice(b"hello");
    request[3] = u8::try_from(request.len()).unwrap();
    let out = respond(peer.handle(&request, [0; 16]).unwrap());
    assert_eq!(out, [2, 3, 0, 5, 2]);
}

#[test]
fn packet_codec_round_trip() {
    let bytes = EapPacket::encode(2, 9, 1, b"carol").unwrap();
    assert_eq!(bytes, hex("0209000a016361726f6c"));
    let packet = EapPacket::parse(&bytes).unwrap();
    assert_eq!(packet.code, 2);
    assert_eq!(packet.identifier, 9);
    assert_eq!(packet.eap_type, Some(1));
    assert_eq!(packet.type_data, b"carol");
    assert!(EapPacket::encode(2, 9, 1, &vec![0; 70_000]).is_err());
}

#[test]
fn truncated_capture_packets_are_errors() {
    for packet in [
        CAPTURE_IDENTITY_REQUEST,
        CAPTURE_CHALLENGE,
        CAPTURE_SUCCESS_REQUEST,
    ] {
        let bytes = hex(packet);
        for len in 0..bytes.len() {
            let mut peer = EapMschapv2Peer::new(b"carol", b"carol-password");
            if packet == CAPTURE_SUCCESS_REQUEST {
                let _ = peer
                    .handle(&hex(CAPTURE_CHALLENGE), hex_array(CAPTURE_PEER_CHALLENGE))
                    .unwrap();
            }
            assert!(
                peer.handle(&bytes[..len], [0; 16]).is_err(),
                "{packet} truncated to {len} bytes was accepted"
            );
        }
    }
}

#[test]
fn success_request_with_wrong_ms_id_is_refused() {
    let mut peer = EapMschapv2Peer::new(b"carol", b"carol-password");
    let _ = peer
        .handle(&hex(CAPTURE_CHALLENGE), hex_array(CAPTURE_PEER_CHALLENGE))
        .unwrap();
    let mut success = hex(CAPTURE_SUCCESS_REQUEST);
    success[6] ^= 1;
    assert!(matches!(
        peer.handle(&success, [0; 16]),
        Err(EapError::Malformed(_))
    ));
    // The right one still works.
    assert!(peer.handle(&hex(CAPTURE_SUCCESS_REQUEST), [0; 16]).is_ok());
}

proptest! {
    #[test]
    fn garbage_never_panics(
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..6),
        challenge in any::<[u8; 16]>(),
    ) {
        let mut peer = EapMschapv2Peer::new(b"carol", b"carol-password");
        for packet in &packets {
            let _ = peer.handle(packet, challenge);
        }
        let _ = peer.msk();
    }

    #[test]
    fn mutated_capture_packets_never_panic(
        index in 0usize..4,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let packets = [
            CAPTURE_IDENTITY_REQUEST,
            CAPTURE_CHALLENGE,
            CAPTURE_SUCCESS_REQUEST,
            CAPTURE_EAP_SUCCESS,
        ];
        let mut peer = EapMschapv2Peer::new(b"carol", b"carol-password");
        for (i, packet) in packets.iter().enumerate() {
            let mut bytes = hex(packet);
            if i == index {
                for (at, value) in &flips {
                    let len = bytes.len();
                    bytes[at % len] ^= value;
                }
                bytes.truncate(cut % (bytes.len() + 1));
            }
            let _ = peer.handle(&bytes, hex_array(CAPTURE_PEER_CHALLENGE));
        }
        // An MSK only ever comes out of an exchange whose S= verified.
        if let Some(msk) = peer.msk() {
            let mut expected = hex(CAPTURE_MSK);
            expected.extend_from_slice(&[0; 32]);
            prop_assert_eq!(msk, expected.as_slice());
        }
    }
}
