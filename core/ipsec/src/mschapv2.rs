//! MS-CHAPv2 computations (RFC 2759 §8) and the MPPE keys that make the EAP-MSCHAPv2 MSK
//! (RFC 3079 §3), as pure functions.
//!
//! The password is taken as UTF-8 bytes and hashed as UTF-16LE, as Windows and strongSwan do.
//! Byte sequences that are not valid UTF-8 count as U+FFFD. The user name is used without any
//! `DOMAIN\` prefix (everything up to and including the first backslash is dropped, as
//! strongSwan does).
//!
//! The [`msk`] is strongSwan's layout: the server's MasterReceiveKey, its MasterSendKey, then
//! 32 zero bytes (64 bytes). Both sides of an IKEv2 EAP exchange use this same value.

use des::Des;
use des::cipher::{BlockCipherEncrypt, KeyInit};
use md4::Md4;
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

/// RFC 2759 §8.7 Magic1.
const MAGIC1: &[u8] = b"Magic server to client signing constant";
/// RFC 2759 §8.7 Magic2.
const MAGIC2: &[u8] = b"Pad to make it do more than one iteration";
/// RFC 3079 §3.4 Magic1, for the master key.
const MASTER_MAGIC: &[u8] = b"This is the MPPE Master Key";
/// RFC 3079 §3.4 Magic2: the server's receive key.
const SERVER_RECEIVE_MAGIC: &[u8] =
    b"On the client side, this is the send key; on the server side, it is the receive key.";
/// RFC 3079 §3.4 Magic3: the server's send key.
const SERVER_SEND_MAGIC: &[u8] =
    b"On the client side, this is the receive key; on the server side, it is the send key.";
/// RFC 3079 §3.4 SHSpad1.
const SHS_PAD1: [u8; 40] = [0; 40];
/// RFC 3079 §3.4 SHSpad2.
const SHS_PAD2: [u8; 40] = [0xf2; 40];

/// The MD4 of the UTF-16LE password: NtPasswordHash (RFC 2759 §8.3).
///
/// `password` is UTF-8; invalid sequences are hashed as U+FFFD.
pub fn password_hash(password: &[u8]) -> [u8; 16] {
    let mut utf16 = Zeroizing::new(Vec::with_capacity(password.len() * 2));
    for chunk in password.utf8_chunks() {
        for unit in chunk.valid().encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        if !chunk.invalid().is_empty() {
            utf16.extend_from_slice(&0xfffd_u16.to_le_bytes());
        }
    }
    Md4::digest(utf16.as_slice()).into()
}

/// The MD4 of the password hash: HashNtPasswordHash (RFC 2759 §8.4).
fn password_hash_hash(password: &[u8]) -> Zeroizing<[u8; 16]> {
    let hash = Zeroizing::new(password_hash(password));
    Zeroizing::new(Md4::digest(hash.as_slice()).into())
}

/// The user name without any `DOMAIN\` prefix (RFC 2759 §8.2).
fn strip_domain(user_name: &[u8]) -> &[u8] {
    match user_name.iter().position(|&b| b == b'\\') {
        Some(at) => user_name.get(at + 1..).unwrap_or_default(),
        None => user_name,
    }
}

/// ChallengeHash (RFC 2759 §8.2): the first 8 bytes of SHA-1(PeerChallenge |
/// AuthenticatorChallenge | UserName), the user name without any `DOMAIN\` prefix.
pub fn challenge_hash(
    peer_challenge: &[u8; 16],
    auth_challenge: &[u8; 16],
    user_name: &[u8],
) -> [u8; 8] {
    let digest = Sha1::new()
        .chain_update(peer_challenge)
        .chain_update(auth_challenge)
        .chain_update(strip_domain(user_name))
        .finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Spreads a 56-bit key over 8 bytes, 7 bits per byte (the low, parity bit is left 0; DES
/// ignores it).
fn des_key(seven: &[u8; 7]) -> [u8; 8] {
    let mut bits = [0u8; 8];
    bits[1..].copy_from_slice(seven);
    let k = u64::from_be_bytes(bits);
    let mut key = [0u8; 8];
    for (i, byte) in key.iter_mut().enumerate() {
        // Bits 55..49 go to byte 0, and so on down to bits 6..0 in byte 7; the mask keeps the
        // value below 0x80, so the shift and the narrowing are exact.
        let seven_bits = (k >> (49 - 7 * i)) & 0x7f;
        *byte = u8::try_from(seven_bits << 1).unwrap_or_default();
    }
    key
}

/// ChallengeResponse (RFC 2759 §8.5): three single-DES encryptions of the challenge hash under
/// the password hash padded to 21 bytes.
fn challenge_response(challenge: &[u8; 8], password_hash: &[u8; 16]) -> [u8; 24] {
    let mut padded = Zeroizing::new([0u8; 21]);
    padded[..16].copy_from_slice(password_hash);
    let mut out = [0u8; 24];
    for (part, out) in padded.chunks_exact(7).zip(out.chunks_exact_mut(8)) {
        let mut seven = Zeroizing::new([0u8; 7]);
        seven.copy_from_slice(part);
        let key = Zeroizing::new(des_key(&seven));
        let cipher = Des::new(&(*key).into());
        let mut block = (*challenge).into();
        cipher.encrypt_block(&mut block);
        out.copy_from_slice(&block);
    }
    out
}

/// GenerateNTResponse (RFC 2759 §8.1): the 24-byte NT-Response the peer sends.
pub fn nt_response(
    auth_challenge: &[u8; 16],
    peer_challenge: &[u8; 16],
    user_name: &[u8],
    password: &[u8],
) -> [u8; 24] {
    let challenge = challenge_hash(peer_challenge, auth_challenge, user_name);
    let hash = Zeroizing::new(password_hash(password));
    challenge_response(&challenge, &hash)
}

/// GenerateAuthenticatorResponse (RFC 2759 §8.7): `"S="` followed by 40 upper-case hex
/// digits, what the server must send in its Success packet.
pub fn authenticator_response(
    password: &[u8],
    nt_response: &[u8; 24],
    peer_challenge: &[u8; 16],
    auth_challenge: &[u8; 16],
    user_name: &[u8],
) -> String {
    let digest = authenticator_response_bytes(
        password,
        nt_response,
        peer_challenge,
        auth_challenge,
        user_name,
    );
    let mut out = String::with_capacity(42);
    out.push_str("S=");
    for byte in digest {
        out.push(hex_digit(byte >> 4));
        out.push(hex_digit(byte & 0x0f));
    }
    out
}

/// The 20 bytes that [`authenticator_response`] writes in hex.
pub fn authenticator_response_bytes(
    password: &[u8],
    nt_response: &[u8; 24],
    peer_challenge: &[u8; 16],
    auth_challenge: &[u8; 16],
    user_name: &[u8],
) -> [u8; 20] {
    let hash_hash = password_hash_hash(password);
    let digest = Sha1::new()
        .chain_update(hash_hash.as_slice())
        .chain_update(nt_response)
        .chain_update(MAGIC1)
        .finalize();
    let challenge = challenge_hash(peer_challenge, auth_challenge, user_name);
    Sha1::new()
        .chain_update(digest)
        .chain_update(challenge)
        .chain_update(MAGIC2)
        .finalize()
        .into()
}

/// The upper-case hex digit of a nibble.
fn hex_digit(nibble: u8) -> char {
    char::from(
        b"0123456789ABCDEF"
            .get(usize::from(nibble & 0x0f))
            .copied()
            .unwrap_or(b'0'),
    )
}

/// GetMasterKey (RFC 3079 §3.4): the 16-byte MPPE master key.
pub fn master_key(password: &[u8], nt_response: &[u8; 24]) -> Zeroizing<[u8; 16]> {
    let hash_hash = password_hash_hash(password);
    let digest: Zeroizing<[u8; 20]> = Zeroizing::new(
        Sha1::new()
            .chain_update(hash_hash.as_slice())
            .chain_update(nt_response)
            .chain_update(MASTER_MAGIC)
            .finalize()
            .into(),
    );
    let mut key = Zeroizing::new([0u8; 16]);
    key.copy_from_slice(&digest[..16]);
    key
}

/// GetAsymetricStartKey (RFC 3079 §3.4) for a 128-bit key with the given magic.
fn start_key(master: &[u8; 16], magic: &[u8], out: &mut [u8]) {
    let digest: Zeroizing<[u8; 20]> = Zeroizing::new(
        Sha1::new()
            .chain_update(master)
            .chain_update(SHS_PAD1)
            .chain_update(magic)
            .chain_update(SHS_PAD2)
            .finalize()
            .into(),
    );
    out.copy_from_slice(&digest[..16]);
}

/// The 64-byte EAP-MSCHAPv2 MSK as strongSwan builds it: the server's MasterReceiveKey (the
/// client's send key), the server's MasterSendKey, then 32 zero bytes.
pub fn msk(password: &[u8], nt_response: &[u8; 24]) -> Zeroizing<[u8; 64]> {
    let master = master_key(password, nt_response);
    let mut out = Zeroizing::new([0u8; 64]);
    start_key(&master, SERVER_RECEIVE_MAGIC, &mut out[..16]);
    start_key(&master, SERVER_SEND_MAGIC, &mut out[16..32]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn des_key_spreads_seven_bits_per_byte() {
        assert_eq!(
            des_key(&[0xff; 7]),
            [0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe]
        );
        assert_eq!(
            des_key(&[0x80, 0, 0, 0, 0, 0, 1]),
            [0x80, 0, 0, 0, 0, 0, 0, 2]
        );
    }

    #[test]
    fn domain_prefix_is_dropped() {
        assert_eq!(strip_domain(b"CORP\\User"), b"User");
        assert_eq!(strip_domain(b"User"), b"User");
        assert_eq!(strip_domain(b"CORP\\"), b"");
    }
}
