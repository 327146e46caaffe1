//! `eap`: a sequence of EAP packets from the server, fed one by one to a fresh
//! [`EapMschapv2Peer`].
//!
//! The first byte picks the identity (with or without a `DOMAIN\` prefix) and password. Then
//! come [`Records`](crate::Records): the tag byte's bit 0 asks the harness to write the correct
//! MS-CHAPv2 authenticator response over the 40 hex digits after an `S=` in the packet (the
//! fuzzer cannot compute it, and without it the Success path is out of reach); the tag also
//! seeds the 16-byte peer challenge. Every answer must be an EAP Response with the request's
//! identifier, and the MSK must exist exactly after EAP-Success.

use erebus_ipsec::eap::{
    CODE_REQUEST, CODE_RESPONSE, EapError, EapMschapv2Peer, EapPacket, EapStep, TYPE_MSCHAPV2,
};
use erebus_ipsec::mschapv2;

use crate::Records;

/// Identities and passwords the first byte picks from.
pub const USERS: &[(&[u8], &[u8])] = &[
    (b"carol", b"carol-password"),
    (b"EXAMPLE\\carol", b"carol-password"),
    (b"\xc3\xa9mile", b"p\xc3\xa4ssw\xc3\xb6rd"),
    (b"", b""),
];

/// Tag bit: fill in the authenticator response after `S=`.
pub const FIX_AUTHENTICATOR: u8 = 1;

/// The harness.
pub fn run(data: &[u8]) {
    let Some((&user, records)) = data.split_first() else {
        return;
    };
    let (identity, password) = USERS[usize::from(user) % USERS.len()];
    let mut peer = EapMschapv2Peer::new(identity, password);
    // The last Challenge answered: its authenticator challenge and our peer challenge.
    let mut challenged: Option<([u8; 16], [u8; 16])> = None;
    let mut over = false;
    for (tag, packet) in Records::new(records) {
        let mut packet = packet.to_vec();
        if tag & FIX_AUTHENTICATOR != 0
            && let Some((auth_challenge, peer_challenge)) = &challenged
        {
            fix_authenticator(
                &mut packet,
                identity,
                password,
                auth_challenge,
                peer_challenge,
            );
        }
        let peer_challenge = [tag.rotate_left(3) ^ 0x5a; 16];
        let request = EapPacket::parse(&packet).ok();
        let result = peer.handle(&packet, peer_challenge);
        let _ = format!("{peer:?}");
        match &result {
            Ok(EapStep::Respond(answer)) => {
                assert!(!over, "an answer after the exchange ended");
                let request = request.expect("an answer to a packet that does not parse");
                let parsed = EapPacket::parse(answer).expect("our answer parses");
                assert_eq!(parsed.code, CODE_RESPONSE);
                assert_eq!(parsed.identifier, request.identifier);
                assert_eq!(
                    usize::from(u16::from_be_bytes([answer[2], answer[3]])),
                    answer.len()
                );
                if let Some(c) = mschapv2_challenge(&request) {
                    challenged = Some((c, peer_challenge));
                }
                assert!(peer.msk().is_none());
            }
            Ok(EapStep::Success) => {
                assert!(!over, "success after the exchange ended");
                assert_eq!(peer.msk().map(<[u8]>::len), Some(64));
                over = true;
            }
            Err(error) => {
                let _ = error.to_string();
                if !matches!(error, EapError::Malformed(_)) && !over {
                    over = true;
                }
                if matches!(error, EapError::Failure(_))
                    && let Some(response) = peer.failure_response()
                {
                    assert!(EapPacket::parse(response).is_ok());
                }
            }
        }
        if over {
            assert!(result.is_err() || matches!(result, Ok(EapStep::Success)));
        }
    }
}

/// The authenticator challenge of a well-formed MS-CHAPv2 Challenge request.
fn mschapv2_challenge(request: &EapPacket<'_>) -> Option<[u8; 16]> {
    if request.code != CODE_REQUEST || request.eap_type != Some(TYPE_MSCHAPV2) {
        return None;
    }
    // OpCode 1 | MS-CHAPv2-ID | MS-Length (2) | Value-Size 16 | challenge.
    match request.type_data {
        [1, _, _, _, 16, rest @ ..] => rest.get(..16)?.try_into().ok(),
        _ => None,
    }
}

/// Writes the correct `S=<40 hex digits>` over the first `S=` of `packet` that has room.
fn fix_authenticator(
    packet: &mut [u8],
    identity: &[u8],
    password: &[u8],
    auth_challenge: &[u8; 16],
    peer_challenge: &[u8; 16],
) {
    let Some(at) = packet.windows(2).position(|w| w == b"S=") else {
        return;
    };
    let nt_response = mschapv2::nt_response(auth_challenge, peer_challenge, identity, password);
    let text = mschapv2::authenticator_response(
        password,
        &nt_response,
        peer_challenge,
        auth_challenge,
        identity,
    );
    let room = packet.len() - at;
    let len = text.len().min(room);
    packet[at..at + len].copy_from_slice(&text.as_bytes()[..len]);
}
