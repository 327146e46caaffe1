//! The OpenVPN packet codec: the opcode byte, data-packet headers, unwrapped control packets,
//! and the 16-bit length framing of OpenVPN over TCP.
//!
//! Every parser takes untrusted bytes and returns a [`PacketError`] instead of panicking. Every
//! emitter writes into a caller's buffer and says how many bytes it wrote.
//!
//! Point-to-point modes (static key, plaintext) have no opcode at all: their packets are the bare
//! data-channel payload. The opcode byte, the data headers and the control packets belong to TLS
//! mode.

use core::fmt;

/// Why bytes are not a valid OpenVPN packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// The packet ends before a field it must contain.
    #[error("packet truncated")]
    Truncated,
    /// The opcode in the first byte is not one OpenVPN 2.6 defines.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u8),
    /// A control packet claims more acknowledgements than OpenVPN accepts.
    #[error("{0} acknowledgements in one packet (at most 8)")]
    TooManyAcks(u8),
    /// A packet of this opcode cannot be handled by this parser (a data packet given to the
    /// control parser, or the other way round).
    #[error("wrong kind of packet for this parser: {0:?}")]
    WrongKind(Opcode),
    /// The caller's buffer is too small for what is to be emitted.
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall {
        /// Bytes the emitter needs.
        needed: usize,
    },
}

/// The opcodes of OpenVPN 2.6 (high five bits of the first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Opcode {
    /// Client's first packet, key method 1 (rejected by 2.6 peers).
    ControlHardResetClientV1 = 1,
    /// Server's first packet, key method 1 (rejected by 2.6 peers).
    ControlHardResetServerV1 = 2,
    /// Starts a renegotiation under a new key id.
    ControlSoftResetV1 = 3,
    /// Carries TLS records.
    ControlV1 = 4,
    /// Acknowledgements only.
    AckV1 = 5,
    /// Data packet with a one-byte header.
    DataV1 = 6,
    /// Client's first packet, key method 2.
    ControlHardResetClientV2 = 7,
    /// Server's first packet, key method 2.
    ControlHardResetServerV2 = 8,
    /// Data packet with a four-byte header carrying a peer id.
    DataV2 = 9,
    /// Client's first packet with tls-crypt-v2 (a wrapped client key follows).
    ControlHardResetClientV3 = 10,
    /// A control packet with a wrapped client key appended (tls-crypt-v2 cookie mode).
    ControlWkcV1 = 11,
}

impl Opcode {
    /// The opcode numbered `value`, if OpenVPN 2.6 defines one.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::ControlHardResetClientV1,
            2 => Self::ControlHardResetServerV1,
            3 => Self::ControlSoftResetV1,
            4 => Self::ControlV1,
            5 => Self::AckV1,
            6 => Self::DataV1,
            7 => Self::ControlHardResetClientV2,
            8 => Self::ControlHardResetServerV2,
            9 => Self::DataV2,
            10 => Self::ControlHardResetClientV3,
            11 => Self::ControlWkcV1,
            _ => return None,
        })
    }

    /// The opcode's number.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Whether packets of this opcode carry data-channel payload.
    pub const fn is_data(self) -> bool {
        matches!(self, Self::DataV1 | Self::DataV2)
    }

    /// Whether packets of this opcode belong to the control channel (everything but data).
    pub const fn is_control(self) -> bool {
        !self.is_data()
    }

    /// Whether control packets of this opcode carry a message packet id (all but `P_ACK_V1`).
    pub const fn has_message_id(self) -> bool {
        self.is_control() && !matches!(self, Self::AckV1)
    }

    /// Whether this opcode starts a session (any hard reset).
    pub const fn is_hard_reset(self) -> bool {
        matches!(
            self,
            Self::ControlHardResetClientV1
                | Self::ControlHardResetServerV1
                | Self::ControlHardResetClientV2
                | Self::ControlHardResetServerV2
                | Self::ControlHardResetClientV3
        )
    }
}

/// A key id: which of up to eight TLS-mode key states a packet belongs to (low three bits of the
/// first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct KeyId(u8);

impl KeyId {
    /// The key id of a session's first key.
    pub const ZERO: Self = Self(0);

    /// The key id `value`, or `None` above 7.
    pub const fn new(value: u8) -> Option<Self> {
        if value <= 7 { Some(Self(value)) } else { None }
    }

    /// The key id as a number in `0..=7`.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The key id a renegotiation moves to: 1, 2, ..., 7, then back to 1, never 0.
    pub const fn next(self) -> Self {
        if self.0 >= 7 {
            Self(1)
        } else {
            Self(self.0 + 1)
        }
    }
}

/// The first byte of a TLS-mode packet: opcode and key id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpcodeByte {
    /// What kind of packet this is.
    pub opcode: Opcode,
    /// Which key state it belongs to.
    pub key_id: KeyId,
}

impl OpcodeByte {
    /// Splits a first byte into opcode and key id.
    ///
    /// # Errors
    ///
    /// [`PacketError::UnknownOpcode`] for an opcode OpenVPN 2.6 does not define.
    pub const fn parse(byte: u8) -> Result<Self, PacketError> {
        match Opcode::from_u8(byte >> 3) {
            Some(opcode) => Ok(Self {
                opcode,
                key_id: KeyId(byte & 0x07),
            }),
            None => Err(PacketError::UnknownOpcode(byte >> 3)),
        }
    }

    /// The byte on the wire.
    pub const fn to_byte(self) -> u8 {
        (self.opcode.as_u8() << 3) | self.key_id.0
    }
}

/// A 24-bit peer id of `P_DATA_V2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(u32);

impl PeerId {
    /// `0xFFFFFF`: "no peer id assigned".
    pub const UNDEFINED: Self = Self(0x00FF_FFFF);

    /// The peer id `value`, or `None` when it does not fit 24 bits.
    pub const fn new(value: u32) -> Option<Self> {
        if value <= 0x00FF_FFFF {
            Some(Self(value))
        } else {
            None
        }
    }

    /// The peer id as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// The header in front of a TLS-mode data packet's crypto payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataHeader {
    /// `P_DATA_V1`: one byte.
    V1 {
        /// The key the payload is encrypted with.
        key_id: KeyId,
    },
    /// `P_DATA_V2`: four bytes, the opcode byte then the 24-bit peer id.
    V2 {
        /// The key the payload is encrypted with.
        key_id: KeyId,
        /// The peer id the server assigned.
        peer_id: PeerId,
    },
}

impl DataHeader {
    /// Length of a `P_DATA_V1` header.
    pub const V1_LEN: usize = 1;
    /// Length of a `P_DATA_V2` header.
    pub const V2_LEN: usize = 4;

    /// Bytes this header takes on the wire.
    pub const fn len(&self) -> usize {
        match self {
            Self::V1 { .. } => Self::V1_LEN,
            Self::V2 { .. } => Self::V2_LEN,
        }
    }

    /// Always false: a header is never empty. Present for symmetry with [`DataHeader::len`].
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The key id the header names.
    pub const fn key_id(&self) -> KeyId {
        match self {
            Self::V1 { key_id } | Self::V2 { key_id, .. } => *key_id,
        }
    }

    /// Parses the header at the start of `packet`; the crypto payload follows at
    /// `header.len()`.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`] for an empty packet or a `P_DATA_V2` shorter than four bytes,
    /// [`PacketError::UnknownOpcode`], or [`PacketError::WrongKind`] for a control packet.
    pub fn parse(packet: &[u8]) -> Result<Self, PacketError> {
        let first = *packet.first().ok_or(PacketError::Truncated)?;
        let op = OpcodeByte::parse(first)?;
        match op.opcode {
            Opcode::DataV1 => Ok(Self::V1 { key_id: op.key_id }),
            Opcode::DataV2 => {
                let [_, a, b, c] = *packet.get(..4).ok_or(PacketError::Truncated)? else {
                    return Err(PacketError::Truncated);
                };
                let peer_id = PeerId(u32::from_be_bytes([0, a, b, c]));
                Ok(Self::V2 {
                    key_id: op.key_id,
                    peer_id,
                })
            }
            other => Err(PacketError::WrongKind(other)),
        }
    }

    /// Writes the header at the start of `buf` and returns its length.
    ///
    /// # Errors
    ///
    /// [`PacketError::BufferTooSmall`] when `buf` is shorter than the header.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, PacketError> {
        let len = self.len();
        let out = buf
            .get_mut(..len)
            .ok_or(PacketError::BufferTooSmall { needed: len })?;
        match *self {
            Self::V1 { key_id } => {
                out[0] = OpcodeByte {
                    opcode: Opcode::DataV1,
                    key_id,
                }
                .to_byte();
            }
            Self::V2 { key_id, peer_id } => {
                let word = (u32::from(
                    OpcodeByte {
                        opcode: Opcode::DataV2,
                        key_id,
                    }
                    .to_byte(),
                ) << 24)
                    | peer_id.0;
                out.copy_from_slice(&word.to_be_bytes());
            }
        }
        Ok(len)
    }
}

/// An 8-byte control-channel session id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SessionId(pub [u8; 8]);

impl SessionId {
    /// Length on the wire.
    pub const LEN: usize = 8;

    /// Whether the id is usable: OpenVPN treats all-zero as "no session".
    pub fn is_defined(&self) -> bool {
        self.0 != [0; 8]
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

/// Up to [`AckList::MAX`] acknowledged message packet ids, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct AckList {
    ids: [u32; Self::MAX],
    len: u8,
}

impl AckList {
    /// The most acknowledgements one control packet may carry (`RELIABLE_ACK_SIZE`).
    pub const MAX: usize = 8;

    /// An empty list.
    pub const fn new() -> Self {
        Self {
            ids: [0; Self::MAX],
            len: 0,
        }
    }

    /// Appends `id`; returns false (and changes nothing) when the list is full.
    pub fn push(&mut self, id: u32) -> bool {
        let Some(slot) = self.ids.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = id;
        self.len += 1;
        true
    }

    /// The acknowledged ids in wire order.
    pub fn as_slice(&self) -> &[u32] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// How many ids the list holds.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the list holds no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for AckList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// The part of a control packet after the opcode byte and session id, as it appears unwrapped
/// (inside tls-auth or tls-crypt, or bare): acknowledgements, the remote session id when there
/// are any, the message packet id (absent in `P_ACK_V1`) and the TLS payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlBody<'a> {
    /// Message packet ids of the peer's packets this packet acknowledges.
    pub acks: AckList,
    /// The peer's session id; present exactly when `acks` is not empty.
    pub remote_session_id: Option<SessionId>,
    /// This packet's message packet id; `None` for `P_ACK_V1`.
    pub message_id: Option<u32>,
    /// The TLS bytes (empty for resets and acknowledgements).
    pub payload: &'a [u8],
}

impl<'a> ControlBody<'a> {
    /// Parses a control body; `opcode` decides whether a message packet id is present.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`], [`PacketError::TooManyAcks`], or [`PacketError::WrongKind`]
    /// for a data opcode.
    pub fn parse(opcode: Opcode, bytes: &'a [u8]) -> Result<Self, PacketError> {
        if opcode.is_data() {
            return Err(PacketError::WrongKind(opcode));
        }
        let mut reader = Reader::new(bytes);
        let count = reader.u8()?;
        if usize::from(count) > AckList::MAX {
            return Err(PacketError::TooManyAcks(count));
        }
        let mut acks = AckList::new();
        for _ in 0..count {
            acks.push(reader.u32()?);
        }
        let remote_session_id = if count > 0 {
            Some(SessionId(reader.array()?))
        } else {
            None
        };
        let message_id = if opcode.has_message_id() {
            Some(reader.u32()?)
        } else {
            None
        };
        Ok(Self {
            acks,
            remote_session_id,
            message_id,
            payload: reader.rest(),
        })
    }

    /// Bytes [`ControlBody::emit`] writes.
    pub fn encoded_len(&self) -> usize {
        1 + 4 * self.acks.len()
            + if self.acks.is_empty() {
                0
            } else {
                SessionId::LEN
            }
            + if self.message_id.is_some() { 4 } else { 0 }
            + self.payload.len()
    }

    /// Writes the body at the start of `buf` and returns its length. A missing remote session id
    /// with acknowledgements present is written as all zeros.
    ///
    /// # Errors
    ///
    /// [`PacketError::BufferTooSmall`] when `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, PacketError> {
        let needed = self.encoded_len();
        let out = buf
            .get_mut(..needed)
            .ok_or(PacketError::BufferTooSmall { needed })?;
        let mut writer = Writer::new(out);
        // `acks.len()` never exceeds AckList::MAX, so it fits a byte.
        writer.put(&[self.acks.len() as u8]);
        for id in self.acks.as_slice() {
            writer.put(&id.to_be_bytes());
        }
        if !self.acks.is_empty() {
            writer.put(&self.remote_session_id.unwrap_or_default().0);
        }
        if let Some(id) = self.message_id {
            writer.put(&id.to_be_bytes());
        }
        writer.put(self.payload);
        Ok(writer.pos)
    }
}

/// An unwrapped control packet (no tls-auth or tls-crypt): opcode byte, own session id, body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPacket<'a> {
    /// Opcode (a control opcode) and key id.
    pub op: OpcodeByte,
    /// The sender's session id.
    pub session_id: SessionId,
    /// Acknowledgements, message id and payload.
    pub body: ControlBody<'a>,
}

impl<'a> ControlPacket<'a> {
    /// Bytes before the body: opcode byte and session id.
    pub const HEADER_LEN: usize = 1 + SessionId::LEN;

    /// Parses an unwrapped control packet.
    ///
    /// # Errors
    ///
    /// [`PacketError::Truncated`], [`PacketError::UnknownOpcode`],
    /// [`PacketError::WrongKind`] for a data packet, or [`PacketError::TooManyAcks`].
    pub fn parse(packet: &'a [u8]) -> Result<Self, PacketError> {
        let mut reader = Reader::new(packet);
        let op = OpcodeByte::parse(reader.u8()?)?;
        if op.opcode.is_data() {
            return Err(PacketError::WrongKind(op.opcode));
        }
        let session_id = SessionId(reader.array()?);
        let body = ControlBody::parse(op.opcode, reader.rest())?;
        Ok(Self {
            op,
            session_id,
            body,
        })
    }

    /// Bytes [`ControlPacket::emit`] writes.
    pub fn encoded_len(&self) -> usize {
        Self::HEADER_LEN + self.body.encoded_len()
    }

    /// Writes the packet at the start of `buf` and returns its length.
    ///
    /// # Errors
    ///
    /// [`PacketError::BufferTooSmall`] when `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, PacketError> {
        let needed = self.encoded_len();
        let out = buf
            .get_mut(..needed)
            .ok_or(PacketError::BufferTooSmall { needed })?;
        let (head, body) = out.split_at_mut(Self::HEADER_LEN);
        head[0] = self.op.to_byte();
        head[1..].copy_from_slice(&self.session_id.0);
        Ok(Self::HEADER_LEN + self.body.emit(body)?)
    }
}

/// A bounds-checked reader over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PacketError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or(PacketError::Truncated)?;
        self.bytes = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, PacketError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, PacketError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// A writer into a buffer already checked to be exactly large enough.
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Self { out, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        if let Some(dst) = self.out.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn opcode_bytes_match_openvpn() {
        let expected = [
            (0x08, Opcode::ControlHardResetClientV1),
            (0x10, Opcode::ControlHardResetServerV1),
            (0x18, Opcode::ControlSoftResetV1),
            (0x20, Opcode::ControlV1),
            (0x28, Opcode::AckV1),
            (0x30, Opcode::DataV1),
            (0x38, Opcode::ControlHardResetClientV2),
            (0x40, Opcode::ControlHardResetServerV2),
            (0x48, Opcode::DataV2),
            (0x50, Opcode::ControlHardResetClientV3),
            (0x58, Opcode::ControlWkcV1),
        ];
        for (byte, opcode) in expected {
            let parsed = OpcodeByte::parse(byte).unwrap();
            assert_eq!(parsed.opcode, opcode);
            assert_eq!(parsed.key_id, KeyId::ZERO);
            assert_eq!(parsed.to_byte(), byte);
            let with_key = OpcodeByte::parse(byte | 5).unwrap();
            assert_eq!(with_key.key_id.get(), 5);
        }
        assert_eq!(OpcodeByte::parse(0x00), Err(PacketError::UnknownOpcode(0)));
        assert_eq!(OpcodeByte::parse(0x60), Err(PacketError::UnknownOpcode(12)));
        assert!(!Opcode::AckV1.has_message_id());
        assert!(Opcode::ControlSoftResetV1.has_message_id());
        assert!(Opcode::DataV2.is_data() && !Opcode::DataV2.is_control());
        assert!(Opcode::ControlHardResetClientV3.is_hard_reset());
        assert!(!Opcode::ControlSoftResetV1.is_hard_reset());
    }

    #[test]
    fn key_id_wraps_to_one() {
        assert_eq!(KeyId::ZERO.next().get(), 1);
        assert_eq!(KeyId::new(7).unwrap().next().get(), 1);
        assert!(KeyId::new(8).is_none());
    }

    #[test]
    fn data_v2_header_from_capture() {
        // First four bytes of a captured P_DATA_V2 packet with peer-id 0.
        let header = DataHeader::parse(&hex("48000000 00000003")).unwrap();
        assert_eq!(
            header,
            DataHeader::V2 {
                key_id: KeyId::ZERO,
                peer_id: PeerId::new(0).unwrap()
            }
        );
        let mut out = [0u8; 4];
        assert_eq!(header.emit(&mut out), Ok(4));
        assert_eq!(out, [0x48, 0, 0, 0]);

        let header = DataHeader::V2 {
            key_id: KeyId::new(3).unwrap(),
            peer_id: PeerId::UNDEFINED,
        };
        header.emit(&mut out).unwrap();
        assert_eq!(out, [0x4b, 0xff, 0xff, 0xff]);
        assert_eq!(DataHeader::parse(&out), Ok(header));

        assert_eq!(
            DataHeader::parse(&[0x31]),
            Ok(DataHeader::V1 {
                key_id: KeyId::new(1).unwrap()
            })
        );
        assert_eq!(
            DataHeader::parse(&[0x48, 0, 0]),
            Err(PacketError::Truncated)
        );
        assert_eq!(DataHeader::parse(&[]), Err(PacketError::Truncated));
        assert_eq!(
            DataHeader::parse(&[0x20]),
            Err(PacketError::WrongKind(Opcode::ControlV1))
        );
        assert!(PeerId::new(0x0100_0000).is_none());
        assert_eq!(
            header.emit(&mut [0u8; 3]),
            Err(PacketError::BufferTooSmall { needed: 4 })
        );
    }

    #[test]
    fn smallest_client_reset() {
        // `38 | sid | 00 | 00000000`: 14 bytes, no ACKs, message id 0.
        let bytes = hex("38 7dd15da8f1a0effd 00 00000000");
        let packet = ControlPacket::parse(&bytes).unwrap();
        assert_eq!(packet.op.opcode, Opcode::ControlHardResetClientV2);
        assert_eq!(packet.session_id.0, hex("7dd15da8f1a0effd")[..]);
        assert!(packet.body.acks.is_empty());
        assert_eq!(packet.body.remote_session_id, None);
        assert_eq!(packet.body.message_id, Some(0));
        assert!(packet.body.payload.is_empty());
        let mut out = [0u8; 32];
        assert_eq!(packet.emit(&mut out), Ok(14));
        assert_eq!(&out[..14], &bytes[..]);
    }

    #[test]
    fn server_reset_body_from_capture() {
        // The decrypted body of the captured tls-crypt server reset: one ACK of id 0, the
        // client's session id, message id 0.
        let body_bytes = hex("01 00000000 7dd15da8f1a0effd 00000000");
        let body = ControlBody::parse(Opcode::ControlHardResetServerV2, &body_bytes).unwrap();
        assert_eq!(body.acks.as_slice(), &[0]);
        assert_eq!(
            body.remote_session_id.unwrap().0,
            hex("7dd15da8f1a0effd")[..]
        );
        assert_eq!(body.message_id, Some(0));
        let mut out = vec![0u8; body.encoded_len()];
        body.emit(&mut out).unwrap();
        assert_eq!(out, body_bytes);
    }

    #[test]
    fn ack_packet_has_no_message_id() {
        let bytes = hex("28 0102030405060708 02 00000001 00000002 1112131415161718");
        let packet = ControlPacket::parse(&bytes).unwrap();
        assert_eq!(packet.op.opcode, Opcode::AckV1);
        assert_eq!(packet.body.acks.as_slice(), &[1, 2]);
        assert_eq!(packet.body.message_id, None);
        assert!(packet.body.payload.is_empty());
        let mut out = vec![0u8; bytes.len()];
        assert_eq!(packet.emit(&mut out), Ok(bytes.len()));
        assert_eq!(out, bytes);
    }

    #[test]
    fn control_parse_rejects_bad_input() {
        assert_eq!(ControlPacket::parse(&[]), Err(PacketError::Truncated));
        assert_eq!(
            ControlPacket::parse(&hex("38 0102")),
            Err(PacketError::Truncated)
        );
        let mut nine_acks = hex("20 0102030405060708 09");
        nine_acks.extend([0u8; 9 * 4 + 8 + 4]);
        assert_eq!(
            ControlPacket::parse(&nine_acks),
            Err(PacketError::TooManyAcks(9))
        );
        assert_eq!(
            ControlPacket::parse(&hex("48000000 00000001")),
            Err(PacketError::WrongKind(Opcode::DataV2))
        );
        // One ACK promised, remote session id missing.
        assert_eq!(
            ControlPacket::parse(&hex("20 0102030405060708 01 00000005")),
            Err(PacketError::Truncated)
        );
        let reset = hex("38 7dd15da8f1a0effd 00 00000000");
        let packet = ControlPacket::parse(&reset).unwrap();
        assert_eq!(
            packet.emit(&mut [0u8; 13]),
            Err(PacketError::BufferTooSmall { needed: 14 })
        );
    }

    proptest! {
        #[test]
        fn control_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = ControlPacket::parse(&bytes);
            let _ = DataHeader::parse(&bytes);
            for opcode in 1..=11 {
                let _ = ControlBody::parse(Opcode::from_u8(opcode).unwrap(), &bytes);
            }
        }

        #[test]
        fn control_emit_then_parse_is_identity(
            op in 1u8..=11,
            key_id in 0u8..8,
            session in any::<[u8; 8]>(),
            remote in any::<[u8; 8]>(),
            acks in proptest::collection::vec(any::<u32>(), 0..=8),
            message_id in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let opcode = Opcode::from_u8(op).unwrap();
            prop_assume!(opcode.is_control());
            let mut list = AckList::new();
            for id in &acks {
                prop_assert!(list.push(*id));
            }
            let packet = ControlPacket {
                op: OpcodeByte { opcode, key_id: KeyId::new(key_id).unwrap() },
                session_id: SessionId(session),
                body: ControlBody {
                    acks: list,
                    remote_session_id: (!acks.is_empty()).then_some(SessionId(remote)),
                    message_id: opcode.has_message_id().then_some(message_id),
                    payload: &payload,
                },
            };
            let mut buf = vec![0u8; packet.encoded_len()];
            prop_assert_eq!(packet.emit(&mut buf), Ok(buf.len()));
            prop_assert_eq!(ControlPacket::parse(&buf), Ok(packet));
        }
    }
}
