//! Data-channel key derivation: the 256-byte `key2` of one key id, from the TLS exporter
//! (OpenVPN 2.6's default) or from OpenVPN's legacy PRF, and its split into the client's
//! sending and receiving keys.
//!
//! `key2` is two key slots of 128 bytes, each a 64-byte cipher key slot and a 64-byte HMAC
//! slot (AEAD ciphers take their implicit IV from the start of the HMAC slot):
//!
//! ```text
//! [  0..128)  client to server    [128..256)  server to client
//! ```
//!
//! The client encrypts with the first slot and decrypts with the second; the server the other
//! way round.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha1::Sha1;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::keymethod::{ClientKeySource, ServerKeySource};
use crate::keys::{DirectionalKeys, KEY_HALF_LEN, KeySlot};
use crate::tls::{ControlTls, TlsError};

/// The exporter label of the data-channel keys (25 ASCII bytes, no NUL).
pub const EKM_LABEL: &[u8] = b"EXPORTER-OpenVPN-datakeys";
/// The legacy PRF's label for the master secret.
const MASTER_SECRET_LABEL: &[u8] = b"OpenVPN master secret";
/// The legacy PRF's label for the key expansion.
const KEY_EXPANSION_LABEL: &[u8] = b"OpenVPN key expansion";

/// How the data-channel keys of a key id are derived, as the server's push decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDerivation {
    /// `key-derivation tls-ekm` or `protocol-flags ... tls-ekm`: the TLS exporter.
    TlsEkm,
    /// Neither: OpenVPN's PRF over the key-method randoms and the session ids.
    LegacyPrf,
}

/// 256 bytes of data-channel key material (OpenVPN's `struct key2`).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Key2([u8; KEY2_LEN]);

/// The length of `key2`.
const KEY2_LEN: usize = 256;

impl fmt::Debug for Key2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key2(<secret>)")
    }
}

impl Key2 {
    /// Its length.
    pub const LEN: usize = KEY2_LEN;

    /// Wraps 256 bytes of key material.
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Keys from the TLS exporter of the key id's TLS session: label
    /// `EXPORTER-OpenVPN-datakeys`, no context, 256 bytes.
    ///
    /// # Errors
    ///
    /// When the handshake has not completed.
    pub fn from_ekm(tls: &impl ControlTls) -> Result<Self, TlsError> {
        let mut key = Self([0; Self::LEN]);
        tls.export_keying_material(EKM_LABEL, &mut key.0)?;
        Ok(key)
    }

    /// Keys from OpenVPN's legacy PRF:
    ///
    /// ```text
    /// master = PRF(pre_master, "OpenVPN master secret" || c.random1 || s.random1)       48 bytes
    /// key2   = PRF(master, "OpenVPN key expansion" || c.random2 || s.random2
    ///              || client session id || server session id)                         256 bytes
    /// ```
    pub fn from_legacy_prf(
        client: &ClientKeySource,
        server: &ServerKeySource,
        client_session_id: [u8; 8],
        server_session_id: [u8; 8],
    ) -> Self {
        let mut master = Zeroizing::new([0u8; 48]);
        tls1_prf(
            &client.pre_master,
            MASTER_SECRET_LABEL,
            &[&client.random1, &server.random1],
            master.as_mut(),
        );
        let mut key = Self([0; Self::LEN]);
        tls1_prf(
            master.as_ref(),
            KEY_EXPANSION_LABEL,
            &[
                &client.random2,
                &server.random2,
                &client_session_id,
                &server_session_id,
            ],
            &mut key.0,
        );
        key
    }

    /// Slot 0 (client to server) or 1 (server to client).
    fn slot(&self, index: usize) -> KeySlot {
        let base = index * 2 * KEY_HALF_LEN;
        let mut cipher = [0u8; KEY_HALF_LEN];
        let mut hmac = [0u8; KEY_HALF_LEN];
        cipher.copy_from_slice(&self.0[base..base + KEY_HALF_LEN]);
        hmac.copy_from_slice(&self.0[base + KEY_HALF_LEN..base + 2 * KEY_HALF_LEN]);
        let slot = KeySlot::new(cipher, hmac);
        cipher.zeroize();
        hmac.zeroize();
        slot
    }

    /// The client's data-channel keys: send with slot 0, receive with slot 1.
    pub fn client_keys(&self) -> DirectionalKeys {
        DirectionalKeys {
            send: self.slot(0),
            recv: self.slot(1),
        }
    }

    /// The server's data-channel keys (for tests and a server emulator): send with slot 1,
    /// receive with slot 0.
    pub fn server_keys(&self) -> DirectionalKeys {
        DirectionalKeys {
            send: self.slot(1),
            recv: self.slot(0),
        }
    }
}

/// `P_hash` of RFC 2246 §5 with the HMAC `M`, XORed into `out`.
fn p_hash_xor<M: KeyInit + Mac + Clone>(
    secret: &[u8],
    label: &[u8],
    seed: &[&[u8]],
    out: &mut [u8],
) {
    let Ok(keyed) = <M as KeyInit>::new_from_slice(secret) else {
        // HMAC takes keys of any length: this cannot happen.
        return;
    };
    let with_seed = |mut mac: M| {
        mac.update(label);
        for part in seed {
            mac.update(part);
        }
        mac
    };
    // A(1) = HMAC(secret, seed); A(i+1) = HMAC(secret, A(i)).
    let mut a = Zeroizing::new(with_seed(keyed.clone()).finalize().into_bytes().to_vec());
    for chunk in out.chunks_mut(a.len()) {
        let mut mac = keyed.clone();
        mac.update(&a);
        let block = with_seed(mac).finalize().into_bytes();
        for (o, b) in chunk.iter_mut().zip(block.iter()) {
            *o ^= b;
        }
        let mut next = keyed.clone();
        next.update(&a);
        *a = next.finalize().into_bytes().to_vec();
    }
}

/// The TLS 1.0 PRF (RFC 2246 §5): `P_MD5(S1, label || seed) XOR P_SHA1(S2, label || seed)`,
/// where S1 and S2 are the two halves of the secret, overlapping by one byte when its length
/// is odd. `seed` is given in parts to save copying.
pub fn tls1_prf(secret: &[u8], label: &[u8], seed: &[&[u8]], out: &mut [u8]) {
    out.fill(0);
    let half = secret.len().div_ceil(2);
    let (s1, s2) = (&secret[..half], &secret[secret.len() - half..]);
    p_hash_xor::<Hmac<Md5>>(s1, label, seed, out);
    p_hash_xor::<Hmac<Sha1>>(s2, label, seed, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha384;

    fn unhex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `crypto_test_tls_prf` of OpenVPN's unit tests (`tests/unit_tests/openvpn/test_crypto.c`).
    #[test]
    fn control_prf_matches_openvpn_unit_test() {
        let secret = b"Lorem ipsum dolor sit amet, consectetur adipisici elit, sed eiusmod \
                       tempor incidunt ut labore et dolore magna aliqua.";
        assert_eq!(secret.len() % 2, 1, "an odd secret exercises the overlap");
        let seed = b"Quis aute iure reprehenderit in voluptate velit esse cillum dolore";
        let mut out = [0u8; 32];
        tls1_prf(secret, b"", &[seed], &mut out);
        assert_eq!(
            out.to_vec(),
            unhex("d98c8518c85e946927916acfc2d592fbb1567e4b4b1459e6a904ac2ddab72d67")
        );
    }

    const LEGACY_C2S: &str =
        include_str!("../../../../testvectors/captures/tls-legacy-prf/plaintext-c2s.hex");
    const LEGACY_S2C: &str =
        include_str!("../../../../testvectors/captures/tls-legacy-prf/plaintext-s2c.hex");
    const LEGACY_PACKETS: &str =
        include_str!("../../../../testvectors/captures/tls-legacy-prf/control-packets.txt");

    /// The session id of the first packet sent in `direction`.
    fn session_id(packets: &str, direction: &str) -> [u8; 8] {
        let line = packets.lines().find(|l| l.starts_with(direction)).unwrap();
        unhex(&line[4..])[1..9].try_into().unwrap()
    }

    #[test]
    fn control_prf_legacy_key2_matches_capture() {
        let client_message = unhex(LEGACY_C2S);
        let server_message = unhex(LEGACY_S2C);
        let client = ClientKeySource {
            pre_master: client_message[5..53].try_into().unwrap(),
            random1: client_message[53..85].try_into().unwrap(),
            random2: client_message[85..117].try_into().unwrap(),
        };
        let (server, _) = super::super::keymethod::parse_server_message(&server_message)
            .unwrap()
            .unwrap();
        let client_sid = session_id(LEGACY_PACKETS, "c2s");
        let server_sid = session_id(LEGACY_PACKETS, "s2c");
        assert_eq!(client_sid.to_vec(), unhex("8df771dcf38f4d8d"));
        assert_eq!(server_sid.to_vec(), unhex("9ac80c279935aefc"));
        // The pre-master as the client logged it.
        assert_eq!(
            client.pre_master.to_vec(),
            unhex(
                "110188cc 4732b8c0 3bfc51cc 13aefdf5 5d115745 c905dc9d 631d1c79 f8a6f9ee \
                 6885d893 2602a530 bc08ef42 b2f51d10"
            )
        );

        let mut master = [0u8; 48];
        tls1_prf(
            &client.pre_master,
            MASTER_SECRET_LABEL,
            &[&client.random1, &server.key_source.random1],
            &mut master,
        );
        assert_eq!(
            master.to_vec(),
            unhex(
                "200a9c077b2cd70618e2e45518c45accc0dcd70488a84a128ed80f7d34d1a4f9\
                 8e8b5457a1cf710bf9d7636c08efa0fc"
            )
        );

        let key2 = Key2::from_legacy_prf(&client, &server.key_source, client_sid, server_sid);
        let keys = key2.client_keys();
        // "Master Encrypt (cipher, AES-256-GCM, 256 bits)" and "Master Decrypt" of client.log.
        assert_eq!(
            keys.send.cipher_key()[..32].to_vec(),
            unhex("f602eb53ef8148016795960037d8a25c489fce4181b9604b013a30e3d698ff72")
        );
        assert_eq!(
            keys.recv.cipher_key()[..32].to_vec(),
            unhex("f8570a6bbb330fd63cbdd6c0c0689bca26770b59ba0770c40cf318ec92428433")
        );
        // The AEAD implicit IVs, which authenticated every data packet of the capture.
        assert_eq!(
            keys.send.hmac_key()[..8].to_vec(),
            unhex("cf65e3e75f4fce2e")
        );
        assert_eq!(
            keys.recv.hmac_key()[..8].to_vec(),
            unhex("4acb28b5ecb6eccb")
        );
        // The server sees the same key2 the other way round.
        assert_eq!(key2.server_keys().send, keys.recv);
        assert_eq!(key2.server_keys().recv, keys.send);
    }

    /// HKDF-Expand-Label of RFC 8446 §7.1 with SHA-384.
    fn expand_label(secret: &[u8], label: &[u8], context: &[u8], len: usize) -> Vec<u8> {
        let mut info = Vec::new();
        info.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        info.push(u8::try_from(6 + label.len()).unwrap());
        info.extend_from_slice(b"tls13 ");
        info.extend_from_slice(label);
        info.push(u8::try_from(context.len()).unwrap());
        info.extend_from_slice(context);
        let mut out = Vec::new();
        let mut previous: Vec<u8> = Vec::new();
        for counter in 1u8.. {
            if out.len() >= len {
                break;
            }
            let mut mac = <Hmac<Sha384> as KeyInit>::new_from_slice(secret).unwrap();
            mac.update(&previous);
            mac.update(&info);
            mac.update(&[counter]);
            previous = mac.finalize().into_bytes().to_vec();
            out.extend_from_slice(&previous);
        }
        out.truncate(len);
        out
    }

    /// The exporter of the tls-udp capture, recomputed from its key log: the data keys the
    /// stock client and server logged come out of `Key2`'s client split.
    #[test]
    fn control_prf_ekm_key2_maps_to_logged_keys() {
        use sha2::Digest;
        let keylog = include_str!("../../../../testvectors/captures/tls-udp/keylog.txt");
        let secret = keylog
            .lines()
            .find_map(|l| l.strip_prefix("EXPORTER_SECRET "))
            .map(|rest| unhex(rest.split_whitespace().nth(1).unwrap()))
            .unwrap();
        let empty_hash = Sha384::digest(b"");
        // RFC 8446 §7.5: Derive-Secret(secret, label, "") then expand with Hash(context);
        // OpenVPN's "no context" is the empty context in TLS 1.3.
        let derived = expand_label(&secret, EKM_LABEL, &empty_hash, 48);
        let bytes = expand_label(&derived, b"exporter", &empty_hash, Key2::LEN);
        let key2 = Key2::from_bytes(bytes.try_into().unwrap());
        let keys = key2.client_keys();
        assert_eq!(
            keys.send.cipher_key()[..32].to_vec(),
            unhex("ba085923582b6f592fadf89267af6a30e4d77a0ed503ad073b5d14726bca44e5")
        );
        assert_eq!(
            keys.recv.cipher_key()[..32].to_vec(),
            unhex("6f3912e5aec3e0e9547e343d52a5044388a650c7b2d20c19ca2a3fe60aa35ac6")
        );
        assert_eq!(
            keys.send.hmac_key()[..8].to_vec(),
            unhex("3031092d7ee8b76c")
        );
        assert_eq!(
            keys.recv.hmac_key()[..8].to_vec(),
            unhex("f2d38f9352bcfabe")
        );
    }

    #[test]
    fn control_prf_output_length_is_free() {
        // Lengths that are not multiples of either hash size.
        let mut a = [0u8; 7];
        let mut b = [0u8; 45];
        tls1_prf(b"secret", b"label", &[b"seed"], &mut a);
        tls1_prf(b"secret", b"label", &[b"se", b"ed"], &mut b);
        assert_eq!(a[..], b[..7]);
        assert_ne!(a, [0; 7]);
    }
}
