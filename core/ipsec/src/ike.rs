//! One IKE SA as the client keeps it: SPIs, the keys of RFC 7296 §2.14, the message-ID
//! counters of §2.3 with the outstanding request and the cached response, and the SK payload
//! (§3.14 with RFC 5282 AEAD) that protects every message after IKE_SA_INIT.

use core::time::Duration;

use erebus_sansio::Instant;

use subtle::ConstantTimeEq;

use crate::crypto::{Aead, CBC_BLOCK, CbcHmac, IV_LEN, SecretBytes, SkCipher, TAG_LEN};
use crate::proposal::{Encr, Integ, Prf};
use crate::wire::{self, HEADER_LEN, Header, flags, payload};

/// What a request of ours is for, so its response is handled accordingly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// IKE_SA_INIT.
    Init,
    /// An IKE_AUTH round.
    Auth,
    /// A liveness check (empty INFORMATIONAL).
    Dpd,
    /// Our CHILD_SA rekey.
    RekeyChild,
    /// Deleting the CHILD_SA replaced by our or the server's rekey.
    DeleteOldChild,
    /// Our IKE_SA rekey.
    RekeyIke,
    /// Deleting the IKE SA a rekey replaced.
    DeleteOldIke,
    /// Deleting the IKE SA because we leave.
    Close,
}

/// Our request waiting for its response.
#[derive(Debug)]
pub struct Outstanding {
    /// Its message ID.
    pub id: u32,
    /// What it is for.
    pub purpose: Purpose,
    /// The datagrams, as sent (without the non-ESP marker): retransmitted unchanged.
    pub datagrams: Vec<Vec<u8>>,
    /// When to send them again.
    pub retransmit_at: Instant,
    /// Sends so far.
    pub sends: u32,
}

/// The retransmission schedule: the first wait, its growth and the number of sends.
pub const RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// Growth of the wait per retransmission (strongSwan's `retransmit_base`).
pub const RETRANSMIT_BASE: f64 = 1.8;
/// Sends of one request before the peer counts as gone.
pub const RETRANSMIT_SENDS: u32 = 5;

/// The wait after send number `sends` (1 for the first).
pub fn retransmit_wait(sends: u32) -> Duration {
    let factor = RETRANSMIT_BASE.powi(i32::try_from(sends.saturating_sub(1)).unwrap_or(16));
    RETRANSMIT_TIMEOUT.mul_f64(factor)
}

/// The keys of an IKE SA, split out of prf+ (RFC 7296 §2.14).
pub struct IkeKeys {
    /// SK_d: CHILD_SA and rekey key material comes from it.
    pub sk_d: SecretBytes,
    /// SK_pi: our or their AUTH binds the initiator's identity with it.
    pub sk_pi: SecretBytes,
    /// SK_pr.
    pub sk_pr: SecretBytes,
    /// Protects what the original initiator sends.
    pub encrypt_i: SkCipher,
    /// Protects what the original responder sends.
    pub encrypt_r: SkCipher,
}

impl core::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("IkeKeys(<secret>)")
    }
}

impl IkeKeys {
    /// Derives the keys from SKEYSEED for an AEAD suite: `{SK_d | SK_ai | SK_ar | SK_ei |
    /// SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)`, with empty SK_a*.
    pub fn derive(
        prf: Prf,
        encr: Encr,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Option<Self> {
        Self::derive_suite(prf, encr, None, skeyseed, ni, nr, spi_i, spi_r)
    }

    /// Derives the keys for any suite: with `integ` (AES-CBC), SK_ai and SK_ar are that
    /// algorithm's keys; without (an AEAD), they are empty.
    pub fn derive_suite(
        prf: Prf,
        encr: Encr,
        integ: Option<Integ>,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Option<Self> {
        let d = prf.len();
        let a = if encr.is_aead() { 0 } else { integ?.key_len() };
        let e = encr.keymat_len();
        let total = d + 2 * a + 2 * e + 2 * d;
        let spi_i = spi_i.to_be_bytes();
        let spi_r = spi_r.to_be_bytes();
        let km = prf.plus(skeyseed, &[ni, nr, &spi_i, &spi_r], total);
        let take = |at: usize, len: usize| {
            SecretBytes::new(km.get(at..at + len).unwrap_or_default().to_vec())
        };
        let cipher = |auth_at: usize, encr_at: usize| -> Option<SkCipher> {
            let key = km.get(encr_at..encr_at + e)?;
            Some(match integ.filter(|_| !encr.is_aead()) {
                None => SkCipher::Aead(Aead::new(encr, key)?),
                Some(integ) => SkCipher::CbcHmac(Box::new(CbcHmac::new(
                    key,
                    integ,
                    km.get(auth_at..auth_at + a)?,
                )?)),
            })
        };
        let ei = d + 2 * a;
        Some(Self {
            sk_d: take(0, d),
            encrypt_i: cipher(d, ei)?,
            encrypt_r: cipher(d + a, ei + e)?,
            sk_pi: take(ei + 2 * e, d),
            sk_pr: take(ei + 2 * e + d, d),
        })
    }
}

/// An established (or establishing) IKE SA.
#[derive(Debug)]
pub struct IkeSa {
    /// The original initiator's SPI.
    pub spi_i: u64,
    /// The original responder's SPI.
    pub spi_r: u64,
    /// Whether we are the original initiator (false after the server rekeyed the IKE SA).
    pub we_initiated: bool,
    /// The PRF.
    pub prf: Prf,
    /// The cipher.
    pub encr: Encr,
    /// The keys, once derived.
    pub keys: Option<IkeKeys>,
    /// The ID of our next request.
    pub next_request: u32,
    /// The ID we expect on the peer's next request.
    pub expected_peer_request: u32,
    /// Our request in flight.
    pub outstanding: Option<Outstanding>,
    /// The response to the peer's last request, for its retransmissions.
    pub last_response: Option<(u32, Vec<Vec<u8>>)>,
    iv_counter: u64,
}

/// The SKF header: the generic payload header, the fragment number and the total.
pub const SKF_HEADER_LEN: usize = 8;

/// One decrypted fragment (RFC 7383).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Its number, from 1.
    pub number: u16,
    /// How many fragments the message has.
    pub total: u16,
    /// The first inner payload's type (fragment 1 only; 0 in the others).
    pub first: u8,
    /// Its plaintext, without padding.
    pub plain: Vec<u8>,
}

/// Why an IKE message was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not parseable.
    Malformed,
    /// Failed authentication.
    Unauthentic,
}

impl IkeSa {
    /// A new IKE SA with our `spi_i` (as initiator) and no keys yet.
    pub fn new(spi_i: u64, prf: Prf, encr: Encr) -> Self {
        Self {
            spi_i,
            spi_r: 0,
            we_initiated: true,
            prf,
            encr,
            keys: None,
            next_request: 0,
            expected_peer_request: 0,
            outstanding: None,
            last_response: None,
            iv_counter: 0,
        }
    }

    /// Whether the header's SPIs name this SA.
    pub fn owns(&self, header: &Header) -> bool {
        header.spi_i == self.spi_i && header.spi_r == self.spi_r
    }

    /// Our flag bits for a message: I when we are the original initiator, R for a response.
    pub fn flags(&self, response: bool) -> u8 {
        (if self.we_initiated {
            flags::INITIATOR
        } else {
            0
        }) | (if response { flags::RESPONSE } else { 0 })
    }

    fn sending_key(&self) -> Option<&SkCipher> {
        let keys = self.keys.as_ref()?;
        Some(if self.we_initiated {
            &keys.encrypt_i
        } else {
            &keys.encrypt_r
        })
    }

    fn receiving_key(&self) -> Option<&SkCipher> {
        let keys = self.keys.as_ref()?;
        Some(if self.we_initiated {
            &keys.encrypt_r
        } else {
            &keys.encrypt_i
        })
    }

    /// Builds an encrypted message: the header, then an SK payload holding `inner` (a payload
    /// chain whose first type is `first`).
    pub fn seal(
        &mut self,
        exchange: u8,
        response: bool,
        message_id: u32,
        first: u8,
        inner: &[u8],
    ) -> Option<Vec<u8>> {
        self.seal_payload(exchange, response, message_id, first, None, inner)
    }

    /// Splits `inner` into encrypted fragments (RFC 7383) so that no message is longer than
    /// `max_len` bytes; only the first fragment names the first payload's type. One message
    /// (no split) when it fits.
    pub fn seal_fragments(
        &mut self,
        exchange: u8,
        response: bool,
        message_id: u32,
        first: u8,
        inner: &[u8],
        max_len: usize,
    ) -> Option<Vec<Vec<u8>>> {
        let whole = self.seal(exchange, response, message_id, first, inner)?;
        if whole.len() <= max_len {
            return Some(vec![whole]);
        }
        // Room for plaintext in one fragment: the message less header, SKF header, IV,
        // padding and ICV (at most a block plus the pad length byte).
        let overhead = HEADER_LEN + SKF_HEADER_LEN + CBC_BLOCK + CBC_BLOCK + 32;
        let chunk = max_len.checked_sub(overhead).filter(|c| *c >= 64)?;
        let total = u16::try_from(inner.len().div_ceil(chunk)).ok()?;
        let mut out = Vec::new();
        for (index, part) in inner.chunks(chunk).enumerate() {
            let number = u16::try_from(index + 1).ok()?;
            let next = if number == 1 { first } else { 0 };
            out.push(self.seal_payload(
                exchange,
                response,
                message_id,
                next,
                Some((number, total)),
                part,
            )?);
        }
        Some(out)
    }

    /// One SK payload, or one SKF fragment `(number, total)`, holding `inner`.
    fn seal_payload(
        &mut self,
        exchange: u8,
        response: bool,
        message_id: u32,
        first: u8,
        fragment: Option<(u16, u16)>,
        inner: &[u8],
    ) -> Option<Vec<u8>> {
        let (kind, sk_header) = match fragment {
            None => (payload::SK, 4),
            Some(_) => (payload::SKF, SKF_HEADER_LEN),
        };
        let write_sk_header = |msg: &mut Vec<u8>, sk_len: usize| -> Option<()> {
            msg.push(first);
            msg.push(0);
            msg.extend_from_slice(&u16::try_from(sk_len).ok()?.to_be_bytes());
            if let Some((number, total)) = fragment {
                msg.extend_from_slice(&number.to_be_bytes());
                msg.extend_from_slice(&total.to_be_bytes());
            }
            Some(())
        };
        self.iv_counter += 1;
        let counter = self.iv_counter;
        let flags = self.flags(response);
        let (spi_i, spi_r) = (self.spi_i, self.spi_r);
        let key = self.sending_key()?;
        let header = |length: u32, msg: &mut Vec<u8>| {
            Header {
                spi_i,
                spi_r,
                next_payload: kind,
                exchange,
                flags,
                message_id,
                length,
            }
            .write(msg);
        };
        match key {
            SkCipher::Aead(aead) => {
                let iv = counter.to_be_bytes();
                // Pad Length byte, no padding: an AEAD needs no block alignment.
                let sk_len = sk_header + IV_LEN + inner.len() + 1 + TAG_LEN;
                let length = u32::try_from(HEADER_LEN + sk_len).ok()?;
                let mut msg = Vec::with_capacity(HEADER_LEN + sk_len);
                header(length, &mut msg);
                write_sk_header(&mut msg, sk_len)?;
                msg.extend_from_slice(&iv);
                let aad_end = HEADER_LEN + sk_header;
                let body_start = msg.len();
                msg.extend_from_slice(inner);
                msg.push(0);
                let (head, body) = msg.split_at_mut(body_start);
                let tag = aead.seal(&iv, &head[..aad_end], body)?;
                msg.extend_from_slice(&tag);
                Some(msg)
            }
            SkCipher::CbcHmac(cbc) => {
                // The IV must be unpredictable: the counter encrypted under the key is, to
                // anyone without the key.
                let mut iv = [0u8; CBC_BLOCK];
                iv[8..].copy_from_slice(&counter.to_be_bytes());
                cbc.encrypt(&[0; CBC_BLOCK], &mut iv)?;
                let padded = (inner.len() + 1).div_ceil(CBC_BLOCK) * CBC_BLOCK;
                let pad = padded - inner.len() - 1;
                let sk_len = sk_header + CBC_BLOCK + padded + cbc.icv_len();
                let length = u32::try_from(HEADER_LEN + sk_len).ok()?;
                let mut msg = Vec::with_capacity(HEADER_LEN + sk_len);
                header(length, &mut msg);
                write_sk_header(&mut msg, sk_len)?;
                msg.extend_from_slice(&iv);
                let body_start = msg.len();
                msg.extend_from_slice(inner);
                msg.resize(msg.len() + pad, 0);
                msg.push(u8::try_from(pad).ok()?);
                cbc.encrypt(&iv, msg.get_mut(body_start..)?)?;
                let icv = cbc.mac(&msg);
                msg.extend_from_slice(&icv);
                Some(msg)
            }
        }
    }

    /// Decrypts the SK payload of `msg` and returns the inner chain's first type and bytes.
    ///
    /// # Errors
    ///
    /// [`Reject`] for anything that is not an authentic SK message of this SA.
    pub fn open(&self, msg: &[u8], header: &Header) -> Result<(u8, Vec<u8>), Reject> {
        if header.next_payload != payload::SK {
            return Err(Reject::Malformed);
        }
        self.open_payload(msg, 4)
    }

    /// Decrypts one SKF fragment (RFC 7383) of `msg`.
    ///
    /// # Errors
    ///
    /// [`Reject`] for anything that is not an authentic fragment of this SA.
    pub fn open_fragment(&self, msg: &[u8], header: &Header) -> Result<Fragment, Reject> {
        if header.next_payload != payload::SKF {
            return Err(Reject::Malformed);
        }
        let field = |at: usize| -> Result<u16, Reject> {
            let bytes = msg.get(at..at + 2).ok_or(Reject::Malformed)?;
            Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
        };
        let number = field(HEADER_LEN + 4)?;
        let total = field(HEADER_LEN + 6)?;
        if number == 0 || total == 0 || number > total {
            return Err(Reject::Malformed);
        }
        let (first, plain) = self.open_payload(msg, SKF_HEADER_LEN)?;
        Ok(Fragment {
            number,
            total,
            first,
            plain,
        })
    }

    /// Decrypts the SK or SKF payload that follows the header; its own header is
    /// `sk_header` bytes long and part of the authenticated data.
    fn open_payload(&self, msg: &[u8], sk_header: usize) -> Result<(u8, Vec<u8>), Reject> {
        let key = self.receiving_key().ok_or(Reject::Malformed)?;
        let sk = msg.get(HEADER_LEN..).ok_or(Reject::Malformed)?;
        let first = wire::next_payload_of(sk);
        let sk_len = u16::from_be_bytes([
            sk.get(2).copied().unwrap_or(0),
            sk.get(3).copied().unwrap_or(0),
        ]) as usize;
        if sk_len != sk.len() {
            return Err(Reject::Malformed);
        }
        let mut body = match key {
            SkCipher::Aead(aead) => {
                if sk_len < sk_header + IV_LEN + 1 + TAG_LEN {
                    return Err(Reject::Malformed);
                }
                let aad = msg.get(..HEADER_LEN + sk_header).ok_or(Reject::Malformed)?;
                let iv: [u8; IV_LEN] = sk
                    .get(sk_header..sk_header + IV_LEN)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(Reject::Malformed)?;
                let tag_at = sk.len() - TAG_LEN;
                let mut body = sk
                    .get(sk_header + IV_LEN..tag_at)
                    .ok_or(Reject::Malformed)?
                    .to_vec();
                let tag = sk.get(tag_at..).ok_or(Reject::Malformed)?;
                if !aead.open(&iv, aad, &mut body, tag) {
                    return Err(Reject::Unauthentic);
                }
                body
            }
            SkCipher::CbcHmac(cbc) => {
                let icv = cbc.icv_len();
                let ct_len = sk_len
                    .checked_sub(sk_header + CBC_BLOCK + icv)
                    .ok_or(Reject::Malformed)?;
                if ct_len == 0 || ct_len % CBC_BLOCK != 0 {
                    return Err(Reject::Malformed);
                }
                let icv_at = msg.len() - icv;
                let expected = cbc.mac(msg.get(..icv_at).ok_or(Reject::Malformed)?);
                let got = msg.get(icv_at..).ok_or(Reject::Malformed)?;
                if !bool::from(expected.as_slice().ct_eq(got)) {
                    return Err(Reject::Unauthentic);
                }
                let iv: [u8; CBC_BLOCK] = sk
                    .get(sk_header..sk_header + CBC_BLOCK)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(Reject::Malformed)?;
                let mut body = sk
                    .get(sk_header + CBC_BLOCK..sk_header + CBC_BLOCK + ct_len)
                    .ok_or(Reject::Malformed)?
                    .to_vec();
                cbc.decrypt(&iv, &mut body).ok_or(Reject::Malformed)?;
                body
            }
        };
        let pad = *body.last().ok_or(Reject::Malformed)? as usize;
        let len = body.len().checked_sub(pad + 1).ok_or(Reject::Malformed)?;
        body.truncate(len);
        Ok((first, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(encr: Encr, integ: Option<Integ>) -> (IkeSa, IkeSa) {
        let make = |we_initiated: bool| {
            let keys = IkeKeys::derive_suite(
                Prf::HmacSha256,
                encr,
                integ,
                &[7; 32],
                &[1; 32],
                &[2; 32],
                0x1111,
                0x2222,
            )
            .unwrap();
            let mut sa = IkeSa::new(0x1111, Prf::HmacSha256, encr);
            sa.spi_r = 0x2222;
            sa.we_initiated = we_initiated;
            sa.keys = Some(keys);
            sa
        };
        (make(true), make(false))
    }

    #[test]
    fn both_sk_layouts_round_trip_and_refuse_tampering() {
        for (encr, integ) in [
            (Encr::AesGcm16 { bits: 256 }, None),
            (Encr::ChaCha20Poly1305, None),
            (Encr::AesCbc { bits: 256 }, Some(Integ::HmacSha256_128)),
            (Encr::AesCbc { bits: 128 }, Some(Integ::HmacSha512_256)),
        ] {
            let (mut client, server) = pair(encr, integ);
            for len in [0usize, 1, 15, 16, 17, 300] {
                let inner = vec![0x5a; len];
                let msg = client
                    .seal(
                        wire::exchange::INFORMATIONAL,
                        false,
                        3,
                        payload::NOTIFY,
                        &inner,
                    )
                    .unwrap();
                let header = Header::parse(&msg).unwrap();
                assert_eq!(header.flags, flags::INITIATOR);
                let (first, plain) = server.open(&msg, &header).unwrap();
                assert_eq!((first, plain), (payload::NOTIFY, inner.clone()), "{encr}");
                // Our own direction's key does not open it.
                assert_eq!(client.open(&msg, &header), Err(Reject::Unauthentic));
                let mut bad = msg.clone();
                let at = bad.len() - 20;
                bad[at] ^= 1;
                assert_eq!(server.open(&bad, &header), Err(Reject::Unauthentic));
                for cut in HEADER_LEN..msg.len() {
                    let mut short = msg[..cut].to_vec();
                    short[24..28].copy_from_slice(&(cut as u32).to_be_bytes());
                    if let Ok(h) = Header::parse(&short) {
                        assert!(server.open(&short, &h).is_err());
                    }
                }
            }
        }
    }

    #[test]
    fn fragments_reassemble_to_the_message() {
        for (encr, integ) in [
            (Encr::AesGcm16 { bits: 128 }, None),
            (Encr::AesCbc { bits: 256 }, Some(Integ::HmacSha256_128)),
        ] {
            let (mut client, server) = pair(encr, integ);
            let inner: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            let parts = client
                .seal_fragments(
                    wire::exchange::IKE_AUTH,
                    false,
                    1,
                    payload::IDI,
                    &inner,
                    1248,
                )
                .unwrap();
            assert_eq!(parts.len(), 3);
            let mut joined = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                assert!(part.len() <= 1248);
                let header = Header::parse(part).unwrap();
                assert_eq!(header.next_payload, payload::SKF);
                let fragment = server.open_fragment(part, &header).unwrap();
                assert_eq!((fragment.number, fragment.total), (i as u16 + 1, 3));
                assert_eq!(fragment.first, if i == 0 { payload::IDI } else { 0 });
                joined.extend_from_slice(&fragment.plain);
                // The fragment header is authenticated: another number does not verify.
                let mut renumbered = part.clone();
                renumbered[HEADER_LEN + 5] ^= 3;
                assert!(server.open_fragment(&renumbered, &header).is_err());
            }
            assert_eq!(joined, inner);
            // A message that fits stays whole.
            let whole = client
                .seal_fragments(
                    wire::exchange::IKE_AUTH,
                    false,
                    2,
                    payload::IDI,
                    &inner[..100],
                    1248,
                )
                .unwrap();
            assert_eq!(whole.len(), 1);
            assert_eq!(Header::parse(&whole[0]).unwrap().next_payload, payload::SK);
        }
    }

    #[test]
    fn cbc_needs_an_integrity_algorithm() {
        let keys = IkeKeys::derive_suite(
            Prf::HmacSha256,
            Encr::AesCbc { bits: 256 },
            None,
            &[7; 32],
            &[1; 32],
            &[2; 32],
            1,
            2,
        );
        assert!(keys.is_none());
    }
}
