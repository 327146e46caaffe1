//! ESP tunnel-mode SAs with AEAD ciphers (RFC 4303, RFC 4106, RFC 7634), encrypting and
//! decrypting in place in the caller's buffer, and the anti-replay window (RFC 4303 §3.4.3).

use core::ops::Range;

use erebus_sansio::tunnel::DropReason;

use crate::crypto::{Aead, IV_LEN, TAG_LEN};

/// SPI and sequence number.
const ESP_HEADER_LEN: usize = 8;
/// Bytes before the inner packet: SPI, sequence number, IV.
pub const HEADROOM: usize = ESP_HEADER_LEN + IV_LEN;
/// Bytes after the inner packet at most: padding to 4 bytes, pad length, next header, ICV.
pub const TAILROOM: usize = 3 + 2 + TAG_LEN;
/// Next header for an IPv4 inner packet (IP-in-IP).
pub const NEXT_IPV4: u8 = 4;
/// Next header for an IPv6 inner packet.
pub const NEXT_IPV6: u8 = 41;
/// Next header of a dummy packet, dropped silently (RFC 4303 §2.6).
pub const NEXT_DUMMY: u8 = 59;

/// The largest anti-replay window this implementation keeps, in packets.
pub const MAX_REPLAY_WINDOW: u32 = 1024;

/// The sending half of a CHILD_SA.
#[derive(Debug)]
pub struct Outbound {
    spi: u32,
    seq: u32,
    aead: Aead,
}

impl Outbound {
    /// Packets go out with `spi` (the peer's inbound SPI), keyed with `aead`.
    pub fn new(spi: u32, aead: Aead) -> Self {
        Self { spi, seq: 0, aead }
    }

    /// The SPI packets carry.
    pub const fn spi(&self) -> u32 {
        self.spi
    }

    /// Packets sent so far.
    pub const fn sequence(&self) -> u32 {
        self.seq
    }

    /// Encrypts the inner packet at `buf[inner]` in place into an ESP packet and returns its
    /// range. Needs [`HEADROOM`] bytes before and [`TAILROOM`] after.
    ///
    /// # Errors
    ///
    /// [`DropReason::Malformed`] for too little room or an empty packet,
    /// [`DropReason::NotReady`] when the sequence numbers ran out (the SA must be rekeyed).
    pub fn seal(
        &mut self,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        if inner.start < HEADROOM || inner.is_empty() || inner.end > buf.len() {
            return Err(DropReason::Malformed);
        }
        let next_header = match buf.get(inner.start).map(|b| b >> 4) {
            Some(6) => NEXT_IPV6,
            _ => NEXT_IPV4,
        };
        let len = inner.len();
        let pad = (4 - (len + 2) % 4) % 4;
        let trailer_end = inner.end + pad + 2;
        if trailer_end + TAG_LEN > buf.len() {
            return Err(DropReason::Malformed);
        }
        let seq = self.seq.checked_add(1).ok_or(DropReason::NotReady)?;
        self.seq = seq;
        for (i, byte) in buf[inner.end..inner.end + pad].iter_mut().enumerate() {
            *byte = (i + 1) as u8;
        }
        buf[inner.end + pad] = pad as u8;
        buf[inner.end + pad + 1] = next_header;
        let start = inner.start - HEADROOM;
        buf[start..start + 4].copy_from_slice(&self.spi.to_be_bytes());
        buf[start + 4..start + 8].copy_from_slice(&seq.to_be_bytes());
        // The IV only has to be unique per key, and the sequence number is.
        let iv = u64::from(seq).to_be_bytes();
        buf[start + 8..start + 16].copy_from_slice(&iv);
        let (head, body) = buf.split_at_mut(inner.start);
        let aad = &head[start..start + ESP_HEADER_LEN];
        let payload = &mut body[..trailer_end - inner.start];
        let tag = self
            .aead
            .seal(&iv, aad, payload)
            .ok_or(DropReason::Malformed)?;
        buf[trailer_end..trailer_end + TAG_LEN].copy_from_slice(&tag);
        Ok(start..trailer_end + TAG_LEN)
    }
}

/// The anti-replay window: the highest authentic sequence number and a bitmap of the ones
/// below it.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    size: u32,
    top: u32,
    bits: [u64; (MAX_REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// A window of `size` packets (at least 32, at most [`MAX_REPLAY_WINDOW`]).
    pub fn new(size: u32) -> Self {
        Self {
            size: size.clamp(32, MAX_REPLAY_WINDOW),
            top: 0,
            bits: [0; (MAX_REPLAY_WINDOW / 64) as usize],
        }
    }

    fn bit(&self, seq: u32) -> (usize, u64) {
        let index = (seq % MAX_REPLAY_WINDOW) as usize;
        (index / 64, 1u64 << (index % 64))
    }

    /// Whether `seq` may be accepted (before authentication).
    pub fn check(&self, seq: u32) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        if self.top - seq >= self.size {
            return false;
        }
        let (word, mask) = self.bit(seq);
        self.bits[word] & mask == 0
    }

    /// Records `seq` as received (after authentication).
    pub fn update(&mut self, seq: u32) {
        if seq > self.top {
            let advance = seq - self.top;
            if advance >= MAX_REPLAY_WINDOW {
                self.bits = [0; (MAX_REPLAY_WINDOW / 64) as usize];
            } else {
                for s in self.top + 1..=seq {
                    let (word, mask) = self.bit(s);
                    self.bits[word] &= !mask;
                }
            }
            self.top = seq;
        }
        let (word, mask) = self.bit(seq);
        self.bits[word] |= mask;
    }
}

/// The receiving half of a CHILD_SA.
#[derive(Debug)]
pub struct Inbound {
    spi: u32,
    aead: Aead,
    window: ReplayWindow,
}

impl Inbound {
    /// Packets arrive with our `spi`, keyed with `aead`, checked against a window of
    /// `window` packets.
    pub fn new(spi: u32, aead: Aead, window: u32) -> Self {
        Self {
            spi,
            aead,
            window: ReplayWindow::new(window),
        }
    }

    /// Our SPI.
    pub const fn spi(&self) -> u32 {
        self.spi
    }

    /// Decrypts the ESP packet in `packet` in place and returns where the inner packet is,
    /// or `Ok(None)` for a dummy packet.
    ///
    /// # Errors
    ///
    /// Why it was dropped. A packet that is not authentic changes nothing; an authentic one
    /// with bad padding or an unknown next header is refused after it took its place in the
    /// replay window (as libipsec does: the window follows the ICV check, RFC 4303 §3.4.3).
    pub fn open(&mut self, packet: &mut [u8]) -> Result<Option<Range<usize>>, DropReason> {
        if packet.len() < HEADROOM + 2 + TAG_LEN {
            return Err(DropReason::Malformed);
        }
        let seq = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        if !self.window.check(seq) {
            return Err(DropReason::Replayed);
        }
        let mut iv = [0; IV_LEN];
        iv.copy_from_slice(&packet[ESP_HEADER_LEN..HEADROOM]);
        let tag_at = packet.len() - TAG_LEN;
        let (front, tag) = packet.split_at_mut(tag_at);
        let (head, payload) = front.split_at_mut(HEADROOM);
        if !self.aead.open(&iv, &head[..ESP_HEADER_LEN], payload, tag) {
            return Err(DropReason::Unauthentic);
        }
        self.window.update(seq);
        let next_header = payload[payload.len() - 1];
        let pad = payload[payload.len() - 2] as usize;
        let inner_len = payload
            .len()
            .checked_sub(pad + 2)
            .ok_or(DropReason::Malformed)?;
        let padding_ok = payload[inner_len..inner_len + pad]
            .iter()
            .enumerate()
            .all(|(i, b)| usize::from(*b) == i + 1);
        if !padding_ok {
            return Err(DropReason::Malformed);
        }
        match next_header {
            NEXT_DUMMY => Ok(None),
            NEXT_IPV4 | NEXT_IPV6 => Ok(Some(HEADROOM..HEADROOM + inner_len)),
            _ => Err(DropReason::Unsupported),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposal::Encr;

    fn pair() -> (Outbound, Inbound) {
        let material = [0x11; 36];
        let encr = Encr::AesGcm16 { bits: 256 };
        (
            Outbound::new(0x0102_0304, Aead::new(encr, &material).unwrap()),
            Inbound::new(0x0102_0304, Aead::new(encr, &material).unwrap(), 64),
        )
    }

    #[test]
    fn seal_then_open_gives_the_inner_packet_back() {
        let (mut out, mut inb) = pair();
        for len in [20usize, 21, 22, 23, 1400] {
            let mut buf = vec![0u8; HEADROOM + len + TAILROOM];
            buf[HEADROOM] = 0x45;
            for (i, b) in buf[HEADROOM + 1..HEADROOM + len].iter_mut().enumerate() {
                *b = i as u8;
            }
            let original = buf[HEADROOM..HEADROOM + len].to_vec();
            let outer = out.seal(&mut buf, HEADROOM..HEADROOM + len).unwrap();
            assert_eq!((outer.len() - HEADROOM - TAG_LEN) % 4, 0, "ICV aligned");
            let mut packet = buf[outer].to_vec();
            let inner = inb.open(&mut packet).unwrap().unwrap();
            assert_eq!(&packet[inner], &original[..]);
            assert_eq!(inb.open(&mut packet.clone()), Err(DropReason::Replayed));
        }
    }

    #[test]
    fn tampered_packets_are_dropped_and_change_nothing() {
        let (mut out, mut inb) = pair();
        let mut buf = vec![0x45u8; HEADROOM + 40 + TAILROOM];
        let outer = out.seal(&mut buf, HEADROOM..HEADROOM + 40).unwrap();
        let mut packet = buf[outer].to_vec();
        let mut bad = packet.clone();
        bad[20] ^= 1;
        assert_eq!(inb.open(&mut bad), Err(DropReason::Unauthentic));
        assert!(inb.open(&mut packet).unwrap().is_some());
        for cut in 0..packet.len() {
            let _ = inb.open(&mut packet[..cut].to_vec());
        }
    }

    #[test]
    fn replay_window_accepts_reordering_within_it_and_refuses_older() {
        let mut w = ReplayWindow::new(64);
        assert!(!w.check(0));
        w.update(100);
        assert!(w.check(99) && w.check(37) && !w.check(36) && !w.check(100));
        w.update(99);
        assert!(!w.check(99));
        w.update(2000);
        assert!(!w.check(100) && w.check(1999) && !w.check(2000));
    }
}
