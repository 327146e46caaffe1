//! Compression framing: the marker bytes OpenVPN puts around a data-channel payload, inside the
//! encryption, when compression is configured or pushed.
//!
//! erebus never compresses. It still has to speak every framing a server may have configured,
//! because the framing changes the payload even when nothing is compressed, and no framing byte
//! may reach the IP stack:
//!
//! | option | uncompressed payload on the wire | compressed marker (dropped here) |
//! |---|---|---|
//! | none | the payload | none |
//! | `comp-lzo no` | `0xFA` + payload | none |
//! | `comp-lzo [yes\|adaptive]`, `compress lzo` | `0xFA` + payload | `0x66` + LZO |
//! | `compress`, `compress stub` | first byte replaced by `0xFB`, moved to the end | none |
//! | `compress lz4` | `0xFB` swap as above | `0x69` swap + LZ4 |
//! | `compress stub-v2` | the payload; `0x50 0x00` + payload when it starts with `0x50` | none |
//! | `compress lz4-v2` | as stub-v2 | `0x50 0x01` + LZ4 |
//!
//! The swap forms keep the payload where it was (the marker takes the first byte's place and the
//! first byte goes to the end) so that inner packets stay aligned. Sending is always uncompressed;
//! a received compressed payload is dropped as [`FramingError::Compressed`], which the channel
//! counts as [`DropReason::Unsupported`]. Ping and OCC messages are framed like any payload.

use core::fmt;
use core::ops::Range;

use erebus_sansio::tunnel::DropReason;

/// `NO_COMPRESS_BYTE`: an uncompressed payload follows (LZO-style framing).
pub const NO_COMPRESS: u8 = 0xFA;
/// `NO_COMPRESS_BYTE_SWAP`: uncompressed, the payload's first byte is at the end (swap framing).
pub const NO_COMPRESS_SWAP: u8 = 0xFB;
/// `LZO_COMPRESS_BYTE`: an LZO-compressed payload follows.
pub const LZO_COMPRESSED: u8 = 0x66;
/// `LZ4_COMPRESS_BYTE`: an LZ4-compressed payload (swap framing).
pub const LZ4_COMPRESSED: u8 = 0x69;
/// `SNAPPY_COMPRESS_BYTE`: a Snappy-compressed payload (pre-2.5 peers).
pub const SNAPPY_COMPRESSED: u8 = 0x68;
/// `COMP_ALGV2_INDICATOR_BYTE`: the first byte of every v2 framing header.
pub const V2_INDICATOR: u8 = 0x50;
/// v2 second byte: the payload is not compressed (the escape of a payload starting with 0x50).
pub const V2_UNCOMPRESSED: u8 = 0x00;
/// v2 second byte: LZ4.
pub const V2_LZ4: u8 = 0x01;
/// v2 second byte: LZO.
pub const V2_LZO: u8 = 0x02;
/// v2 second byte: Snappy.
pub const V2_SNAPPY: u8 = 0x03;

/// The compression framing in force, chosen from the profile or the server's push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// No compression configured: the payload is sent and received as it is.
    #[default]
    None,
    /// `comp-lzo no`: every payload carries the `0xFA` prefix.
    LzoStub,
    /// `comp-lzo`, `comp-lzo yes|adaptive`, `compress lzo`: `0xFA` prefix on what we send; the
    /// peer may send `0x66` LZO payloads, which are dropped.
    Lzo,
    /// `compress` or `compress stub`: the `0xFB` swap on every payload.
    Stub,
    /// `compress lz4`: the `0xFB` swap on what we send; the peer may send `0x69` LZ4 payloads,
    /// which are dropped.
    Lz4,
    /// `compress stub-v2`: no framing, except the `0x50 0x00` escape of a payload that starts
    /// with `0x50` (which no IPv4 or IPv6 packet does).
    StubV2,
    /// `compress lz4-v2`: as stub-v2 on what we send; the peer may send `0x50 0x01` LZ4
    /// payloads, which are dropped.
    Lz4V2,
}

/// A compression algorithm named by a received marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompressionAlg {
    /// LZO (`0x66`, or v2 `0x50 0x02`).
    Lzo,
    /// LZ4 (`0x69`, or v2 `0x50 0x01`).
    Lz4,
    /// Snappy (`0x68`, or v2 `0x50 0x03`).
    Snappy,
}

impl fmt::Display for CompressionAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lzo => "LZO",
            Self::Lz4 => "LZ4",
            Self::Snappy => "Snappy",
        })
    }
}

/// Why a decrypted payload's framing was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The peer really compressed the payload; erebus does not decompress.
    #[error("the peer sent an {0}-compressed payload; erebus does not decompress")]
    Compressed(CompressionAlg),
    /// A marker byte that the configured framing does not define.
    #[error("unexpected compression framing byte 0x{0:02x}")]
    BadMarker(u8),
    /// A v2 indicator byte with nothing after it.
    #[error("truncated compression framing header")]
    Truncated,
}

impl From<FramingError> for DropReason {
    fn from(error: FramingError) -> Self {
        match error {
            FramingError::Compressed(_) => Self::Unsupported,
            FramingError::BadMarker(_) | FramingError::Truncated => Self::Malformed,
        }
    }
}

/// The shape of a framing, shared by the options that differ only in what they may receive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Raw,
    Prefix,
    Swap,
    V2,
}

impl Compression {
    /// The framing `comp-lzo [arg]` selects: `no` is the stub; no argument, `yes` and `adaptive`
    /// are LZO. `None` for any other argument.
    pub fn from_comp_lzo(arg: Option<&str>) -> Option<Self> {
        match arg {
            None | Some("yes" | "adaptive") => Some(Self::Lzo),
            Some("no") => Some(Self::LzoStub),
            Some(_) => None,
        }
    }

    /// The framing `compress [arg]` selects (no argument is the swap stub). `None` for an
    /// algorithm erebus does not frame (`snappy`, the server-side `migrate`, anything else).
    pub fn from_compress(arg: Option<&str>) -> Option<Self> {
        match arg {
            None | Some("stub") => Some(Self::Stub),
            Some("stub-v2") => Some(Self::StubV2),
            Some("lzo") => Some(Self::Lzo),
            Some("lz4") => Some(Self::Lz4),
            Some("lz4-v2") => Some(Self::Lz4V2),
            Some(_) => None,
        }
    }

    const fn shape(self) -> Shape {
        match self {
            Self::None => Shape::Raw,
            Self::LzoStub | Self::Lzo => Shape::Prefix,
            Self::Stub | Self::Lz4 => Shape::Swap,
            Self::StubV2 | Self::Lz4V2 => Shape::V2,
        }
    }

    /// Bytes the framing may add before the payload.
    pub const fn headroom(self) -> usize {
        match self.shape() {
            Shape::Raw | Shape::Swap => 0,
            Shape::Prefix => 1,
            Shape::V2 => 2,
        }
    }

    /// Bytes the framing may add after the payload.
    pub const fn tailroom(self) -> usize {
        match self.shape() {
            Shape::Swap => 1,
            Shape::Raw | Shape::Prefix | Shape::V2 => 0,
        }
    }

    /// Frames the non-empty payload at `buf[payload]` in place for sending and returns where the
    /// framed payload lies, or `None` when `buf` lacks the room ([`Compression::headroom`] before,
    /// [`Compression::tailroom`] after) or the payload is empty.
    pub fn frame(self, buf: &mut [u8], payload: Range<usize>) -> Option<Range<usize>> {
        let first = *buf.get(payload.start)?;
        if payload.start >= payload.end || payload.end > buf.len() {
            return None;
        }
        match self.shape() {
            Shape::Raw => Some(payload),
            Shape::Prefix => {
                let start = payload.start.checked_sub(1)?;
                *buf.get_mut(start)? = NO_COMPRESS;
                Some(start..payload.end)
            }
            Shape::Swap => {
                *buf.get_mut(payload.end)? = first;
                *buf.get_mut(payload.start)? = NO_COMPRESS_SWAP;
                Some(payload.start..payload.end + 1)
            }
            Shape::V2 if first == V2_INDICATOR => {
                let start = payload.start.checked_sub(2)?;
                buf.get_mut(start..payload.start)?
                    .copy_from_slice(&[V2_INDICATOR, V2_UNCOMPRESSED]);
                Some(start..payload.end)
            }
            Shape::V2 => Some(payload),
        }
    }

    /// Removes the framing from the received payload at `buf[payload]` in place and returns
    /// where the inner payload lies (possibly empty, which the caller refuses).
    ///
    /// # Errors
    ///
    /// A [`FramingError`]: a compressed payload, or a marker this framing does not define.
    pub fn unframe(
        self,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Result<Range<usize>, FramingError> {
        if payload.start >= payload.end {
            return Ok(payload);
        }
        if payload.end > buf.len() {
            return Err(FramingError::Truncated);
        }
        let Some(&marker) = buf.get(payload.start) else {
            return Err(FramingError::Truncated);
        };
        match self.shape() {
            Shape::Raw => Ok(payload),
            Shape::Prefix => match marker {
                NO_COMPRESS => Ok(payload.start + 1..payload.end),
                LZO_COMPRESSED => Err(FramingError::Compressed(CompressionAlg::Lzo)),
                other => Err(FramingError::BadMarker(other)),
            },
            Shape::Swap => match marker {
                NO_COMPRESS_SWAP => {
                    let last = payload.end - 1;
                    let moved = *buf.get(last).ok_or(FramingError::Truncated)?;
                    *buf.get_mut(payload.start).ok_or(FramingError::Truncated)? = moved;
                    Ok(payload.start..last)
                }
                LZ4_COMPRESSED => Err(FramingError::Compressed(CompressionAlg::Lz4)),
                SNAPPY_COMPRESSED => Err(FramingError::Compressed(CompressionAlg::Snappy)),
                other => Err(FramingError::BadMarker(other)),
            },
            Shape::V2 if marker != V2_INDICATOR => Ok(payload),
            Shape::V2 => {
                let Some(&method) = buf.get(payload.start + 1).filter(|_| payload.len() >= 2)
                else {
                    return Err(FramingError::Truncated);
                };
                match method {
                    V2_UNCOMPRESSED => Ok(payload.start + 2..payload.end),
                    V2_LZ4 => Err(FramingError::Compressed(CompressionAlg::Lz4)),
                    V2_LZO => Err(FramingError::Compressed(CompressionAlg::Lzo)),
                    V2_SNAPPY => Err(FramingError::Compressed(CompressionAlg::Snappy)),
                    other => Err(FramingError::BadMarker(other)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Compression; 7] = [
        Compression::None,
        Compression::LzoStub,
        Compression::Lzo,
        Compression::Stub,
        Compression::Lz4,
        Compression::StubV2,
        Compression::Lz4V2,
    ];

    /// Frames `payload` with two bytes of room on each side; returns the framed bytes.
    fn framed(compression: Compression, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xEE; payload.len() + 4];
        buf[2..2 + payload.len()].copy_from_slice(payload);
        let range = compression
            .frame(&mut buf, 2..2 + payload.len())
            .expect("room");
        buf[range].to_vec()
    }

    fn unframed(compression: Compression, wire: &[u8]) -> Result<Vec<u8>, FramingError> {
        let mut buf = wire.to_vec();
        let range = compression.unframe(&mut buf, 0..wire.len())?;
        Ok(buf[range].to_vec())
    }

    #[test]
    fn wire_forms_as_openvpn_writes_them() {
        let ipv4 = [0x45, 0x00, 0x00, 0x14];
        assert_eq!(framed(Compression::None, &ipv4), ipv4);
        assert_eq!(
            framed(Compression::LzoStub, &ipv4),
            [0xFA, 0x45, 0, 0, 0x14]
        );
        assert_eq!(framed(Compression::Lzo, &ipv4), [0xFA, 0x45, 0, 0, 0x14]);
        assert_eq!(framed(Compression::Stub, &ipv4), [0xFB, 0, 0, 0x14, 0x45]);
        assert_eq!(framed(Compression::Lz4, &ipv4), [0xFB, 0, 0, 0x14, 0x45]);
        assert_eq!(framed(Compression::StubV2, &ipv4), ipv4);
        assert_eq!(framed(Compression::Lz4V2, &ipv4), ipv4);
        // Only a payload starting with 0x50 is escaped.
        assert_eq!(
            framed(Compression::StubV2, &[0x50, 1, 2]),
            [0x50, 0x00, 0x50, 1, 2]
        );
        assert_eq!(framed(Compression::StubV2, &[0x60, 0x50]), [0x60, 0x50]);
        // A one-byte payload under the swap: the marker, then the byte.
        assert_eq!(framed(Compression::Stub, &[0x2a]), [0xFB, 0x2a]);
    }

    #[test]
    fn frame_then_unframe_is_identity() {
        for compression in ALL {
            for payload in [
                &[0x45u8, 1, 2, 3][..],
                &[0x50],
                &[0x50, 0x00],
                &[0xFA, 0xFB],
            ] {
                let wire = framed(compression, payload);
                assert_eq!(
                    unframed(compression, &wire),
                    Ok(payload.to_vec()),
                    "{compression:?} {payload:02x?}"
                );
            }
        }
    }

    #[test]
    fn compressed_payloads_are_refused_by_name() {
        let lzo = FramingError::Compressed(CompressionAlg::Lzo);
        let lz4 = FramingError::Compressed(CompressionAlg::Lz4);
        assert_eq!(unframed(Compression::Lzo, &[0x66, 1, 2]), Err(lzo));
        assert_eq!(unframed(Compression::LzoStub, &[0x66, 1, 2]), Err(lzo));
        assert_eq!(unframed(Compression::Lz4, &[0x69, 1, 2]), Err(lz4));
        assert_eq!(unframed(Compression::Lz4V2, &[0x50, 0x01, 9]), Err(lz4));
        assert_eq!(unframed(Compression::StubV2, &[0x50, 0x02, 9]), Err(lzo));
        assert_eq!(
            unframed(Compression::StubV2, &[0x50, 0x03, 9]),
            Err(FramingError::Compressed(CompressionAlg::Snappy))
        );
        assert_eq!(DropReason::from(lz4), DropReason::Unsupported);
        assert_eq!(
            lz4.to_string(),
            "the peer sent an LZ4-compressed payload; erebus does not decompress"
        );
    }

    #[test]
    fn unknown_markers_are_malformed() {
        assert_eq!(
            unframed(Compression::LzoStub, &[0x45, 0]),
            Err(FramingError::BadMarker(0x45))
        );
        assert_eq!(
            unframed(Compression::Stub, &[0xFA, 0]),
            Err(FramingError::BadMarker(0xFA))
        );
        assert_eq!(
            unframed(Compression::StubV2, &[0x50, 0x07]),
            Err(FramingError::BadMarker(7))
        );
        assert_eq!(
            unframed(Compression::StubV2, &[0x50]),
            Err(FramingError::Truncated)
        );
        assert_eq!(
            DropReason::from(FramingError::BadMarker(1)),
            DropReason::Malformed
        );
        // The marker alone unframes to nothing, which the channel refuses as empty.
        assert_eq!(unframed(Compression::LzoStub, &[0xFA]), Ok(vec![]));
        assert_eq!(unframed(Compression::Stub, &[0xFB]), Ok(vec![]));
    }

    #[test]
    fn frame_checks_room() {
        let mut buf = [0x50u8, 1, 2];
        assert_eq!(Compression::LzoStub.frame(&mut buf, 0..3), None);
        assert_eq!(Compression::StubV2.frame(&mut buf, 0..3), None);
        assert_eq!(Compression::Stub.frame(&mut buf, 0..3), None);
        assert_eq!(Compression::Stub.frame(&mut buf, 0..2), Some(0..3));
        assert_eq!(Compression::None.frame(&mut buf, 1..1), None);
        assert_eq!(buf, [0xFB, 1, 0x50]);
    }

    #[test]
    fn option_names() {
        assert_eq!(
            Compression::from_comp_lzo(Some("no")),
            Some(Compression::LzoStub)
        );
        assert_eq!(Compression::from_comp_lzo(None), Some(Compression::Lzo));
        assert_eq!(
            Compression::from_comp_lzo(Some("adaptive")),
            Some(Compression::Lzo)
        );
        assert_eq!(Compression::from_comp_lzo(Some("maybe")), None);
        assert_eq!(Compression::from_compress(None), Some(Compression::Stub));
        assert_eq!(
            Compression::from_compress(Some("stub-v2")),
            Some(Compression::StubV2)
        );
        assert_eq!(
            Compression::from_compress(Some("lz4-v2")),
            Some(Compression::Lz4V2)
        );
        assert_eq!(
            Compression::from_compress(Some("lz4")),
            Some(Compression::Lz4)
        );
        assert_eq!(
            Compression::from_compress(Some("lzo")),
            Some(Compression::Lzo)
        );
        assert_eq!(Compression::from_compress(Some("snappy")), None);
        for compression in ALL {
            assert!(compression.headroom() <= 2 && compression.tailroom() <= 1);
        }
    }

    proptest! {
        #[test]
        fn unframe_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8), which in 0usize..7, start in 0usize..10, end in 0usize..10) {
            let mut buf = bytes;
            if let Ok(range) = ALL[which].unframe(&mut buf, start..end) {
                prop_assert!(range.start >= start.min(end) && range.end <= end.max(start));
            }
        }

        #[test]
        fn frame_then_unframe_any(payload in proptest::collection::vec(any::<u8>(), 1..40), which in 0usize..7) {
            let wire = framed(ALL[which], &payload);
            prop_assert_eq!(unframed(ALL[which], &wire), Ok(payload));
        }
    }
}
