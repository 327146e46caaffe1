//! Messages that travel inside the data channel instead of IP packets: the keepalive ping and
//! the OCC (options consistency check) messages.
//!
//! Both are recognised after decryption by fixed 16-byte magic values: a payload that is exactly
//! the ping magic is a ping; a payload that starts with the OCC magic is an OCC message, whose
//! next byte is its opcode. Neither ever reaches the IP stack.

/// The keepalive ping: the entire payload, exactly these 16 bytes.
pub const PING_MAGIC: [u8; 16] = [
    0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48,
];

/// The prefix of every OCC message.
pub const OCC_MAGIC: [u8; 16] = [
    0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c,
];

/// The OCC opcodes of OpenVPN 2.6 (`occ.h`).
pub mod occ_opcode {
    /// Asks the peer for its options string.
    pub const REQUEST: u8 = 0;
    /// Carries the sender's options string, NUL-terminated.
    pub const REPLY: u8 = 1;
    /// Asks the peer to send a packet of the given size (`--mtu-test`).
    pub const MTU_LOAD_REQUEST: u8 = 2;
    /// A filler packet of the requested size (`--mtu-test`).
    pub const MTU_LOAD: u8 = 3;
    /// Asks the peer for the largest packet sizes it saw (`--mtu-test`).
    pub const MTU_REQUEST: u8 = 4;
    /// The largest packet sizes received and sent (`--mtu-test`).
    pub const MTU_REPLY: u8 = 5;
    /// The sender is going away (explicit-exit-notify).
    pub const EXIT: u8 = 6;
}

/// The longest options string OpenVPN sends, without its NUL (`TLS_OPTIONS_LEN` is 512 with it).
pub const MAX_OPTIONS_STRING_LEN: usize = 511;

/// An OCC message, borrowed from the decrypted payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OccMessage<'a> {
    /// The peer asks for our options string.
    Request,
    /// The peer's options string, up to (not including) its NUL.
    Reply(&'a [u8]),
    /// The peer asks for an MTU test packet of this size.
    MtuLoadRequest(Option<u16>),
    /// An MTU test filler packet.
    MtuLoad,
    /// The peer asks for our largest packet sizes.
    MtuRequest,
    /// The peer's largest received and sent packet sizes, when present.
    MtuReply(Option<(u16, u16)>),
    /// The peer is leaving.
    Exit,
    /// The OCC magic with no opcode byte, or an opcode OpenVPN 2.6 does not define.
    Unknown(Option<u8>),
}

/// What a decrypted data-channel payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A keepalive ping.
    Ping,
    /// An OCC message.
    Occ(OccMessage<'a>),
    /// Anything else: an inner IP packet for the stack.
    Packet,
}

/// Classifies a decrypted payload as OpenVPN does: exact match for the ping, prefix match for
/// OCC, everything else is a packet.
pub fn classify(payload: &[u8]) -> Payload<'_> {
    if payload == PING_MAGIC {
        return Payload::Ping;
    }
    let Some(rest) = payload.strip_prefix(&OCC_MAGIC) else {
        return Payload::Packet;
    };
    let Some((&opcode, args)) = rest.split_first() else {
        return Payload::Occ(OccMessage::Unknown(None));
    };
    let u16_at = |at: usize| {
        args.get(at..at + 2)
            .and_then(|b| b.first_chunk::<2>())
            .map(|b| u16::from_be_bytes(*b))
    };
    Payload::Occ(match opcode {
        occ_opcode::REQUEST => OccMessage::Request,
        occ_opcode::REPLY => {
            let end = args.iter().position(|&b| b == 0).unwrap_or(args.len());
            OccMessage::Reply(args.get(..end).unwrap_or(&[]))
        }
        occ_opcode::MTU_LOAD_REQUEST => OccMessage::MtuLoadRequest(u16_at(0)),
        occ_opcode::MTU_LOAD => OccMessage::MtuLoad,
        occ_opcode::MTU_REQUEST => OccMessage::MtuRequest,
        occ_opcode::MTU_REPLY => OccMessage::MtuReply(u16_at(0).zip(u16_at(2))),
        occ_opcode::EXIT => OccMessage::Exit,
        other => OccMessage::Unknown(Some(other)),
    })
}

/// Writes the ping payload at the start of `out` and returns its length, or `None` when `out`
/// is shorter than 16 bytes.
pub fn write_ping(out: &mut [u8]) -> Option<usize> {
    out.get_mut(..PING_MAGIC.len())?
        .copy_from_slice(&PING_MAGIC);
    Some(PING_MAGIC.len())
}

/// Writes an OCC message with no arguments (`REQUEST`, `MTU_REQUEST`, `EXIT`) and returns its
/// length, or `None` when `out` is too short.
pub fn write_occ(out: &mut [u8], opcode: u8) -> Option<usize> {
    let dst = out.get_mut(..OCC_MAGIC.len() + 1)?;
    dst[..OCC_MAGIC.len()].copy_from_slice(&OCC_MAGIC);
    dst[OCC_MAGIC.len()] = opcode;
    Some(dst.len())
}

/// Writes an `OCC_REPLY` carrying `options` and its NUL, and returns its length, or `None` when
/// `out` is too short.
pub fn write_occ_reply(out: &mut [u8], options: &[u8]) -> Option<usize> {
    let len = OCC_MAGIC.len() + 1 + options.len() + 1;
    let dst = out.get_mut(..len)?;
    write_occ(dst, occ_opcode::REPLY)?;
    dst.get_mut(OCC_MAGIC.len() + 1..len - 1)?
        .copy_from_slice(options);
    *dst.last_mut()? = 0;
    Some(len)
}

/// The length of an `OCC_REPLY` carrying `options`.
pub const fn occ_reply_len(options: &[u8]) -> usize {
    OCC_MAGIC.len() + 1 + options.len() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ping_is_an_exact_match() {
        assert_eq!(classify(&PING_MAGIC), Payload::Ping);
        let mut longer = PING_MAGIC.to_vec();
        longer.push(0);
        assert_eq!(classify(&longer), Payload::Packet);
        assert_eq!(classify(&PING_MAGIC[..15]), Payload::Packet);
        let mut out = [0u8; 20];
        assert_eq!(write_ping(&mut out), Some(16));
        assert_eq!(out[..16], PING_MAGIC);
        assert_eq!(write_ping(&mut out[..15]), None);
    }

    #[test]
    fn occ_messages_as_captured() {
        // The plaintext capture carries these UDP payloads verbatim.
        let mut request = OCC_MAGIC.to_vec();
        request.push(0);
        assert_eq!(classify(&request), Payload::Occ(OccMessage::Request));
        let mut exit = OCC_MAGIC.to_vec();
        exit.push(6);
        assert_eq!(classify(&exit), Payload::Occ(OccMessage::Exit));
        let options =
            b"V4,dev-type tun,link-mtu 1500,tun-mtu 1500,proto UDPv4,ifconfig 10.8.0.2 10.8.0.1";
        let mut out = [0u8; 128];
        let len = write_occ_reply(&mut out, options).unwrap();
        assert_eq!(len, 99, "the captured OCC_REPLY is 99 bytes");
        assert_eq!(len, occ_reply_len(options));
        assert_eq!(out[len - 1], 0);
        assert_eq!(
            classify(&out[..len]),
            Payload::Occ(OccMessage::Reply(options))
        );
        let mut built = [0u8; 17];
        assert_eq!(write_occ(&mut built, occ_opcode::EXIT), Some(17));
        assert_eq!(built[..], exit[..]);
        assert_eq!(write_occ_reply(&mut out[..98], options), None);
    }

    #[test]
    fn occ_edge_cases() {
        assert_eq!(
            classify(&OCC_MAGIC),
            Payload::Occ(OccMessage::Unknown(None))
        );
        let mut msg = OCC_MAGIC.to_vec();
        msg.push(9);
        assert_eq!(classify(&msg), Payload::Occ(OccMessage::Unknown(Some(9))));
        msg[16] = occ_opcode::MTU_REPLY;
        msg.extend([0x05, 0xdc, 0x05]);
        assert_eq!(classify(&msg), Payload::Occ(OccMessage::MtuReply(None)));
        msg.push(0xa0);
        assert_eq!(
            classify(&msg),
            Payload::Occ(OccMessage::MtuReply(Some((1500, 1440))))
        );
        // A reply without NUL is taken whole.
        let mut reply = OCC_MAGIC.to_vec();
        reply.extend(b"\x01V4");
        assert_eq!(classify(&reply), Payload::Occ(OccMessage::Reply(b"V4")));
        // An IPv4 packet is a packet.
        assert_eq!(classify(&[0x45, 0, 0, 20]), Payload::Packet);
    }

    proptest! {
        #[test]
        fn classify_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..40), occ in any::<bool>()) {
            let mut payload = if occ { OCC_MAGIC.to_vec() } else { Vec::new() };
            payload.extend(tail);
            let _ = classify(&payload);
        }
    }
}
