//! IKEv2 message and payload encoding (RFC 7296 §3). Parsing never panics: every length is
//! checked and a bad one is a [`WireError`].

use core::fmt;
use std::net::Ipv4Addr;

/// The IKE header's length.
pub const HEADER_LEN: usize = 28;
/// The IKE version byte: major 2, minor 0.
pub const VERSION: u8 = 0x20;

/// Exchange types (RFC 7296 §3.1).
pub mod exchange {
    /// IKE_SA_INIT.
    pub const IKE_SA_INIT: u8 = 34;
    /// IKE_AUTH.
    pub const IKE_AUTH: u8 = 35;
    /// CREATE_CHILD_SA.
    pub const CREATE_CHILD_SA: u8 = 36;
    /// INFORMATIONAL.
    pub const INFORMATIONAL: u8 = 37;
}

/// Header flags.
pub mod flags {
    /// The sender is the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// This message is a response.
    pub const RESPONSE: u8 = 0x20;
}

/// Payload types (RFC 7296 §3.2, RFC 7383).
pub mod payload {
    /// Security Association.
    pub const SA: u8 = 33;
    /// Key Exchange.
    pub const KE: u8 = 34;
    /// Identification of the initiator.
    pub const IDI: u8 = 35;
    /// Identification of the responder.
    pub const IDR: u8 = 36;
    /// Certificate.
    pub const CERT: u8 = 37;
    /// Certificate Request.
    pub const CERTREQ: u8 = 38;
    /// Authentication.
    pub const AUTH: u8 = 39;
    /// Nonce.
    pub const NONCE: u8 = 40;
    /// Notify.
    pub const NOTIFY: u8 = 41;
    /// Delete.
    pub const DELETE: u8 = 42;
    /// Vendor ID.
    pub const VENDOR: u8 = 43;
    /// Traffic Selector of the initiator.
    pub const TSI: u8 = 44;
    /// Traffic Selector of the responder.
    pub const TSR: u8 = 45;
    /// Encrypted and Authenticated.
    pub const SK: u8 = 46;
    /// Configuration.
    pub const CP: u8 = 47;
    /// Extensible Authentication.
    pub const EAP: u8 = 48;
    /// Encrypted Fragment (RFC 7383).
    pub const SKF: u8 = 53;
}

/// Notify message types used here (RFC 7296 §3.10.1 and later RFCs).
pub mod notify {
    /// Error: a critical payload we do not know.
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    /// Error: bad syntax.
    pub const INVALID_SYNTAX: u16 = 7;
    /// Error: no acceptable proposal.
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    /// Error: wrong key exchange group; data is the group wanted.
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    /// Error: authentication failed.
    pub const AUTHENTICATION_FAILED: u16 = 24;
    /// Error: no more CHILD_SAs on this IKE SA.
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    /// Error: no virtual address available.
    pub const INTERNAL_ADDRESS_FAILURE: u16 = 36;
    /// Error: a virtual address is required.
    pub const FAILED_CP_REQUIRED: u16 = 37;
    /// Error: traffic selectors not acceptable.
    pub const TS_UNACCEPTABLE: u16 = 38;
    /// Error: try again later.
    pub const TEMPORARY_FAILURE: u16 = 43;
    /// Error: no such CHILD_SA.
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    /// Status: the first IKE_AUTH of this identity since start.
    pub const INITIAL_CONTACT: u16 = 16384;
    /// Status: NAT detection, source.
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    /// Status: NAT detection, destination.
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    /// Status: a cookie to echo.
    pub const COOKIE: u16 = 16390;
    /// Status: the CHILD_SA this exchange rekeys.
    pub const REKEY_SA: u16 = 16393;
    /// Status: IKE fragmentation supported (RFC 7383).
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    /// Status: signature hash algorithms (RFC 7427).
    pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;

    /// A name for messages, or the number.
    pub fn name(kind: u16) -> String {
        match kind {
            UNSUPPORTED_CRITICAL_PAYLOAD => "UNSUPPORTED_CRITICAL_PAYLOAD".into(),
            4 => "INVALID_IKE_SPI".into(),
            5 => "INVALID_MAJOR_VERSION".into(),
            INVALID_SYNTAX => "INVALID_SYNTAX".into(),
            9 => "INVALID_MESSAGE_ID".into(),
            11 => "INVALID_SPI".into(),
            NO_PROPOSAL_CHOSEN => "NO_PROPOSAL_CHOSEN".into(),
            INVALID_KE_PAYLOAD => "INVALID_KE_PAYLOAD".into(),
            AUTHENTICATION_FAILED => "AUTHENTICATION_FAILED".into(),
            34 => "SINGLE_PAIR_REQUIRED".into(),
            NO_ADDITIONAL_SAS => "NO_ADDITIONAL_SAS".into(),
            INTERNAL_ADDRESS_FAILURE => "INTERNAL_ADDRESS_FAILURE".into(),
            FAILED_CP_REQUIRED => "FAILED_CP_REQUIRED".into(),
            TS_UNACCEPTABLE => "TS_UNACCEPTABLE".into(),
            39 => "INVALID_SELECTORS".into(),
            TEMPORARY_FAILURE => "TEMPORARY_FAILURE".into(),
            CHILD_SA_NOT_FOUND => "CHILD_SA_NOT_FOUND".into(),
            other => format!("notify {other}"),
        }
    }
}

/// Why bytes are not a valid IKE message or payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

fn be16(b: &[u8], at: usize) -> Result<u16, WireError> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or(WireError("truncated"))
}

fn be32(b: &[u8], at: usize) -> Result<u32, WireError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(WireError("truncated"))
}

fn be64(b: &[u8], at: usize) -> Result<u64, WireError> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(WireError("truncated"))
}

/// The IKE header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The original initiator's SPI.
    pub spi_i: u64,
    /// The original responder's SPI (0 in the first request).
    pub spi_r: u64,
    /// The first payload's type.
    pub next_payload: u8,
    /// The exchange type.
    pub exchange: u8,
    /// [`flags`].
    pub flags: u8,
    /// The message ID.
    pub message_id: u32,
    /// The whole message's length.
    pub length: u32,
}

impl Header {
    /// Parses the header of `msg` and checks its length field against `msg`.
    pub fn parse(msg: &[u8]) -> Result<Self, WireError> {
        if msg.len() < HEADER_LEN {
            return Err(WireError("shorter than an IKE header"));
        }
        let version = msg.get(17).copied().unwrap_or(0);
        if version >> 4 != 2 {
            return Err(WireError("not IKE version 2"));
        }
        let header = Self {
            spi_i: be64(msg, 0)?,
            spi_r: be64(msg, 8)?,
            next_payload: msg.get(16).copied().unwrap_or(0),
            exchange: msg.get(18).copied().unwrap_or(0),
            flags: msg.get(19).copied().unwrap_or(0),
            message_id: be32(msg, 20)?,
            length: be32(msg, 24)?,
        };
        if header.length as usize != msg.len() {
            return Err(WireError("length field does not match the datagram"));
        }
        Ok(header)
    }

    /// Whether this is a response.
    pub const fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }

    /// Appends the 28 header bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(self.next_payload);
        out.push(VERSION);
        out.push(self.exchange);
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}

/// One payload of a chain, its body borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPayload<'a> {
    /// Its type.
    pub kind: u8,
    /// The critical bit.
    pub critical: bool,
    /// Its body, after the 4-byte generic header.
    pub body: &'a [u8],
}

/// Splits a payload chain whose first payload has type `first`. The last element of the
/// result is the SK or SKF payload if there is one (its body runs to the end).
pub fn split_chain(first: u8, mut bytes: &[u8]) -> Result<Vec<RawPayload<'_>>, WireError> {
    let mut out = Vec::new();
    let mut kind = first;
    while kind != 0 {
        if bytes.len() < 4 {
            return Err(WireError("truncated payload header"));
        }
        let next = bytes.first().copied().unwrap_or(0);
        let critical = bytes.get(1).copied().unwrap_or(0) & 0x80 != 0;
        let len = be16(bytes, 2)? as usize;
        if len < 4 || len > bytes.len() {
            return Err(WireError("payload length out of range"));
        }
        let (this, rest) = bytes.split_at(len);
        out.push(RawPayload {
            kind,
            critical,
            body: this.get(4..).unwrap_or_default(),
        });
        if kind == payload::SK || kind == payload::SKF {
            // The inner payloads' type is in `next`; the caller decrypts the body.
            if !rest.is_empty() {
                return Err(WireError("bytes after the encrypted payload"));
            }
            return Ok(out);
        }
        bytes = rest;
        kind = next;
    }
    if !bytes.is_empty() {
        return Err(WireError("bytes after the last payload"));
    }
    Ok(out)
}

/// The generic header's Next Payload byte of the payload starting at `bytes` (for SK: the
/// first inner payload's type).
pub fn next_payload_of(bytes: &[u8]) -> u8 {
    bytes.first().copied().unwrap_or(0)
}

/// Appends a chain of `(type, body)` payloads to `out`, returning nothing: the caller has put
/// the first type in the enclosing header.
pub fn write_chain(out: &mut Vec<u8>, payloads: &[(u8, Vec<u8>)]) {
    for (i, (_, body)) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(0, |(kind, _)| *kind);
        out.push(next);
        out.push(0);
        let len = u16::try_from(body.len() + 4).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
    }
}

/// A transform of a proposal (RFC 7296 §3.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transform {
    /// 1 ENCR, 2 PRF, 3 INTEG, 4 KE, 5 ESN.
    pub kind: u8,
    /// The transform ID.
    pub id: u16,
    /// The Key Length attribute.
    pub key_bits: Option<u16>,
}

/// Transform types.
pub mod transform {
    /// Encryption.
    pub const ENCR: u8 = 1;
    /// Pseudo-random function.
    pub const PRF: u8 = 2;
    /// Integrity.
    pub const INTEG: u8 = 3;
    /// Key exchange.
    pub const KE: u8 = 4;
    /// Extended sequence numbers.
    pub const ESN: u8 = 5;
}

/// Protocol IDs.
pub mod protocol {
    /// IKE.
    pub const IKE: u8 = 1;
    /// ESP.
    pub const ESP: u8 = 3;
}

/// A proposal as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireProposal {
    /// Its number.
    pub number: u8,
    /// [`protocol`].
    pub protocol: u8,
    /// The SPI (empty, 4 or 8 bytes).
    pub spi: Vec<u8>,
    /// The transforms.
    pub transforms: Vec<Transform>,
}

/// Encodes an SA payload body.
pub fn encode_sa(proposals: &[WireProposal]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in proposals.iter().enumerate() {
        let mut body = Vec::new();
        for (j, t) in p.transforms.iter().enumerate() {
            let last = j + 1 == p.transforms.len();
            let len: u16 = if t.key_bits.is_some() { 12 } else { 8 };
            body.push(if last { 0 } else { 3 });
            body.push(0);
            body.extend_from_slice(&len.to_be_bytes());
            body.push(t.kind);
            body.push(0);
            body.extend_from_slice(&t.id.to_be_bytes());
            if let Some(bits) = t.key_bits {
                body.extend_from_slice(&(0x800e_u16).to_be_bytes());
                body.extend_from_slice(&bits.to_be_bytes());
            }
        }
        let last = i + 1 == proposals.len();
        let len = u16::try_from(8 + p.spi.len() + body.len()).unwrap_or(u16::MAX);
        out.push(if last { 0 } else { 2 });
        out.push(0);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(p.number);
        out.push(p.protocol);
        out.push(u8::try_from(p.spi.len()).unwrap_or(0));
        out.push(u8::try_from(p.transforms.len()).unwrap_or(0));
        out.extend_from_slice(&p.spi);
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes an SA payload body.
pub fn decode_sa(mut b: &[u8]) -> Result<Vec<WireProposal>, WireError> {
    let mut out = Vec::new();
    loop {
        let more = *b.first().ok_or(WireError("empty SA payload"))?;
        let len = be16(b, 2)? as usize;
        if len < 8 || len > b.len() {
            return Err(WireError("proposal length out of range"));
        }
        let (this, rest) = b.split_at(len);
        let spi_len = this.get(6).copied().unwrap_or(0) as usize;
        let count = this.get(7).copied().unwrap_or(0) as usize;
        let spi = this
            .get(8..8 + spi_len)
            .ok_or(WireError("truncated SPI"))?
            .to_vec();
        let mut t = this.get(8 + spi_len..).unwrap_or_default();
        let mut transforms = Vec::new();
        for _ in 0..count {
            let tlen = be16(t, 2)? as usize;
            if tlen < 8 || tlen > t.len() {
                return Err(WireError("transform length out of range"));
            }
            let (tr, trest) = t.split_at(tlen);
            let mut key_bits = None;
            let mut attrs = tr.get(8..).unwrap_or_default();
            while attrs.len() >= 4 {
                let kind = be16(attrs, 0)?;
                if kind & 0x8000 != 0 {
                    if kind & 0x7fff == 14 {
                        key_bits = Some(be16(attrs, 2)?);
                    }
                    attrs = attrs.get(4..).unwrap_or_default();
                } else {
                    let alen = be16(attrs, 2)? as usize;
                    attrs = attrs.get(4 + alen..).ok_or(WireError("attribute length"))?;
                }
            }
            transforms.push(Transform {
                kind: tr.get(4).copied().unwrap_or(0),
                id: be16(tr, 6)?,
                key_bits,
            });
            t = trest;
        }
        out.push(WireProposal {
            number: this.get(4).copied().unwrap_or(0),
            protocol: this.get(5).copied().unwrap_or(0),
            spi,
            transforms,
        });
        b = rest;
        if more == 0 {
            break;
        }
        if b.is_empty() {
            return Err(WireError("proposal list ends early"));
        }
    }
    Ok(out)
}

/// A notify payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify<'a> {
    /// Protocol ID (0, 1 IKE, 3 ESP).
    pub protocol: u8,
    /// The SPI, if any.
    pub spi: &'a [u8],
    /// The message type.
    pub kind: u16,
    /// The data.
    pub data: &'a [u8],
}

impl<'a> Notify<'a> {
    /// Parses a notify body.
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let spi_len = body.get(1).copied().ok_or(WireError("truncated notify"))? as usize;
        Ok(Self {
            protocol: body.first().copied().unwrap_or(0),
            kind: be16(body, 2)?,
            spi: body
                .get(4..4 + spi_len)
                .ok_or(WireError("truncated notify SPI"))?,
            data: body.get(4 + spi_len..).unwrap_or_default(),
        })
    }

    /// Encodes a notify body.
    pub fn encode(protocol: u8, spi: &[u8], kind: u16, data: &[u8]) -> Vec<u8> {
        let mut out = vec![protocol, u8::try_from(spi.len()).unwrap_or(0)];
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(spi);
        out.extend_from_slice(data);
        out
    }
}

/// One IPv4 traffic selector (TS_IPV4_ADDR_RANGE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficSelector {
    /// IP protocol, 0 for any.
    pub protocol: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: Ipv4Addr,
    /// Last address.
    pub end: Ipv4Addr,
}

impl TrafficSelector {
    /// Every address, every port.
    pub const ANY: Self = Self {
        protocol: 0,
        start_port: 0,
        end_port: 0xffff,
        start: Ipv4Addr::UNSPECIFIED,
        end: Ipv4Addr::BROADCAST,
    };

    /// Whether `addr` is in the range.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.start <= addr && addr <= self.end
    }
}

/// Encodes a TS payload body of IPv4 selectors.
pub fn encode_ts(selectors: &[TrafficSelector]) -> Vec<u8> {
    let mut out = vec![u8::try_from(selectors.len()).unwrap_or(0), 0, 0, 0];
    for ts in selectors {
        out.push(7);
        out.push(ts.protocol);
        out.extend_from_slice(&16u16.to_be_bytes());
        out.extend_from_slice(&ts.start_port.to_be_bytes());
        out.extend_from_slice(&ts.end_port.to_be_bytes());
        out.extend_from_slice(&ts.start.octets());
        out.extend_from_slice(&ts.end.octets());
    }
    out
}

/// Decodes a TS payload body, keeping the IPv4 selectors (IPv6 ones are skipped).
pub fn decode_ts(body: &[u8]) -> Result<Vec<TrafficSelector>, WireError> {
    let count = body.first().copied().ok_or(WireError("empty TS payload"))?;
    let mut rest = body.get(4..).unwrap_or_default();
    let mut out = Vec::new();
    for _ in 0..count {
        let kind = rest.first().copied().ok_or(WireError("truncated TS"))?;
        let len = be16(rest, 2)? as usize;
        if len < 8 || len > rest.len() {
            return Err(WireError("selector length out of range"));
        }
        if kind == 7 && len == 16 {
            let addr =
                |at: usize| -> Result<Ipv4Addr, WireError> { Ok(Ipv4Addr::from(be32(rest, at)?)) };
            out.push(TrafficSelector {
                protocol: rest.get(1).copied().unwrap_or(0),
                start_port: be16(rest, 4)?,
                end_port: be16(rest, 6)?,
                start: addr(8)?,
                end: addr(12)?,
            });
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    Ok(out)
}

/// Configuration attribute types (RFC 7296 §3.15.1).
pub mod cp {
    /// CFG_REQUEST.
    pub const REQUEST: u8 = 1;
    /// CFG_REPLY.
    pub const REPLY: u8 = 2;
    /// INTERNAL_IP4_ADDRESS.
    pub const IP4_ADDRESS: u16 = 1;
    /// INTERNAL_IP4_NETMASK.
    pub const IP4_NETMASK: u16 = 2;
    /// INTERNAL_IP4_DNS.
    pub const IP4_DNS: u16 = 3;
    /// INTERNAL_IP4_SUBNET.
    pub const IP4_SUBNET: u16 = 13;
}

/// A configuration attribute: its type and value.
pub type Attribute<'a> = (u16, &'a [u8]);

/// Encodes a CP payload body.
pub fn encode_cp(cfg_type: u8, attributes: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![cfg_type, 0, 0, 0];
    for (kind, value) in attributes {
        out.extend_from_slice(&(kind & 0x7fff).to_be_bytes());
        out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Decodes a CP payload body: its type and attributes.
pub fn decode_cp(body: &[u8]) -> Result<(u8, Vec<Attribute<'_>>), WireError> {
    let cfg_type = body.first().copied().ok_or(WireError("empty CP payload"))?;
    let mut rest = body.get(4..).unwrap_or_default();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let kind = be16(rest, 0)? & 0x7fff;
        let len = be16(rest, 2)? as usize;
        let value = rest
            .get(4..4 + len)
            .ok_or(WireError("truncated attribute"))?;
        out.push((kind, value));
        rest = rest.get(4 + len..).unwrap_or_default();
    }
    Ok((cfg_type, out))
}

/// A Delete payload: protocol and SPIs.
pub fn decode_delete(body: &[u8]) -> Result<(u8, Vec<Vec<u8>>), WireError> {
    let protocol = body.first().copied().ok_or(WireError("empty Delete"))?;
    let spi_len = body.get(1).copied().unwrap_or(0) as usize;
    let count = be16(body, 2)? as usize;
    // An IKE SA is named by the header, not by SPIs here (RFC 7296 §3.11): a count with no
    // SPI bytes names nothing, however large it claims to be.
    if spi_len == 0 {
        return Ok((protocol, Vec::new()));
    }
    if count.saturating_mul(spi_len) > body.len().saturating_sub(4) {
        return Err(WireError("truncated Delete"));
    }
    let mut spis = Vec::with_capacity(count);
    for i in 0..count {
        let at = 4 + i * spi_len;
        spis.push(
            body.get(at..at + spi_len)
                .ok_or(WireError("truncated Delete"))?
                .to_vec(),
        );
    }
    Ok((protocol, spis))
}

/// Encodes a Delete payload body.
pub fn encode_delete(protocol: u8, spis: &[&[u8]]) -> Vec<u8> {
    let spi_len = spis.first().map_or(0, |s| s.len());
    let mut out = vec![protocol, u8::try_from(spi_len).unwrap_or(0)];
    out.extend_from_slice(&u16::try_from(spis.len()).unwrap_or(0).to_be_bytes());
    for spi in spis {
        out.extend_from_slice(spi);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sa_payload_round_trips_and_matches_the_capture() {
        // (capture) aes256gcm16-prfsha256-x25519 as strongSwan sends it.
        let proposal = WireProposal {
            number: 1,
            protocol: protocol::IKE,
            spi: vec![],
            transforms: vec![
                Transform {
                    kind: 1,
                    id: 20,
                    key_bits: Some(256),
                },
                Transform {
                    kind: 2,
                    id: 5,
                    key_bits: None,
                },
                Transform {
                    kind: 4,
                    id: 31,
                    key_bits: None,
                },
            ],
        };
        let body = encode_sa(core::slice::from_ref(&proposal));
        let expected = [
            0x00, 0x00, 0x00, 0x24, 0x01, 0x01, 0x00, 0x03, 0x03, 0x00, 0x00, 0x0c, 0x01, 0x00,
            0x00, 0x14, 0x80, 0x0e, 0x01, 0x00, 0x03, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x05,
            0x00, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00, 0x1f,
        ];
        assert_eq!(body, expected);
        assert_eq!(decode_sa(&body).unwrap(), vec![proposal]);
    }

    #[test]
    fn parsers_refuse_truncations_without_panicking() {
        let body = encode_sa(&[WireProposal {
            number: 1,
            protocol: 3,
            spi: vec![1, 2, 3, 4],
            transforms: vec![Transform {
                kind: 1,
                id: 20,
                key_bits: Some(128),
            }],
        }]);
        for cut in 0..body.len() {
            let _ = decode_sa(&body[..cut]);
        }
        let ts = encode_ts(&[TrafficSelector::ANY]);
        assert_eq!(decode_ts(&ts).unwrap(), vec![TrafficSelector::ANY]);
        for cut in 0..ts.len() {
            let _ = decode_ts(&ts[..cut]);
        }
        let cp = encode_cp(cp::REPLY, &[(cp::IP4_ADDRESS, vec![10, 10, 10, 1])]);
        assert_eq!(decode_cp(&cp).unwrap().1, vec![(1, &[10u8, 10, 10, 1][..])]);
        for cut in 0..cp.len() {
            let _ = decode_cp(&cp[..cut]);
            let _ = split_chain(payload::NONCE, &cp[..cut]);
            let _ = Header::parse(&cp[..cut]);
            let _ = decode_delete(&cp[..cut]);
            // A huge count without SPI bytes is no list of empty SPIs.
            assert_eq!(decode_delete(&[1, 0, 0xff, 0xff]), Ok((1, Vec::new())));
            assert!(decode_delete(&[3, 4, 0xff, 0xff, 1, 2, 3, 4]).is_err());
            let _ = Notify::parse(&cp[..cut]);
        }
    }
}
