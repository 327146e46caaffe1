//! EAP packets (RFC 3748 §4) and the client side of EAP-MSCHAPv2
//! (draft-kamath-pppext-eap-mschapv2), sans-IO.
//!
//! IKEv2 carries each EAP packet whole in an EAP payload (RFC 7296 §3.16). The server sends
//! requests; [`EapMschapv2Peer::handle`] takes each one and says what to answer:
//!
//! | server sends | [`EapMschapv2Peer::handle`] returns |
//! | --- | --- |
//! | Request/Identity | [`EapStep::Respond`] with Response/Identity (our identity) |
//! | Request/Notification | [`EapStep::Respond`] with an empty Response/Notification |
//! | Request/MS-CHAPv2 Challenge | [`EapStep::Respond`] with the MS-CHAPv2 Response |
//! | Request/MS-CHAPv2 Success | the `S=` value is checked, then [`EapStep::Respond`] with a Success response |
//! | Request/MS-CHAPv2 Failure | [`EapError::Failure`] with the server's code and text |
//! | Request of another type | [`EapStep::Respond`] with a Nak proposing MS-CHAPv2 |
//! | EAP-Success | [`EapStep::Success`], once the server proved it knows the password |
//! | EAP-Failure | [`EapError::Failure`] |
//!
//! The server proves it knows the password with the authenticator response (`S=`) of its
//! MS-CHAPv2 Success request; EAP-Success before that is refused, so the MSK never comes from
//! an unauthenticated server.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::mschapv2;

/// EAP Code 1: Request.
pub const CODE_REQUEST: u8 = 1;
/// EAP Code 2: Response.
pub const CODE_RESPONSE: u8 = 2;
/// EAP Code 3: Success.
pub const CODE_SUCCESS: u8 = 3;
/// EAP Code 4: Failure.
pub const CODE_FAILURE: u8 = 4;

/// EAP Type 1: Identity.
pub const TYPE_IDENTITY: u8 = 1;
/// EAP Type 2: Notification.
pub const TYPE_NOTIFICATION: u8 = 2;
/// EAP Type 3: Nak (legacy; responses only).
pub const TYPE_NAK: u8 = 3;
/// EAP Type 26: MS-CHAPv2.
pub const TYPE_MSCHAPV2: u8 = 26;
/// EAP Type 254: expanded types.
pub const TYPE_EXPANDED: u8 = 254;

/// MS-CHAPv2 OpCode 1: Challenge.
const OP_CHALLENGE: u8 = 1;
/// MS-CHAPv2 OpCode 2: Response.
const OP_RESPONSE: u8 = 2;
/// MS-CHAPv2 OpCode 3: Success.
const OP_SUCCESS: u8 = 3;
/// MS-CHAPv2 OpCode 4: Failure.
const OP_FAILURE: u8 = 4;
/// MS-CHAPv2 OpCode 7: Change-Password.
const OP_CHANGE_PASSWORD: u8 = 7;

/// Value-Size of an MS-CHAPv2 Response: peer challenge, 8 reserved bytes, NT-Response, flags.
const RESPONSE_VALUE_SIZE: u8 = 49;

/// One EAP packet, borrowed from the bytes it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EapPacket<'a> {
    /// The Code: [`CODE_REQUEST`], [`CODE_RESPONSE`], [`CODE_SUCCESS`] or [`CODE_FAILURE`]
    /// (other values are refused by [`EapPacket::parse`]).
    pub code: u8,
    /// The Identifier; a response echoes the request's.
    pub identifier: u8,
    /// The Type of a Request or Response; `None` for Success and Failure.
    pub eap_type: Option<u8>,
    /// The Type-Data after the Type (empty for Success and Failure).
    pub type_data: &'a [u8],
}

impl<'a> EapPacket<'a> {
    /// Parses one EAP packet. Bytes after the packet's Length are ignored (RFC 3748 §4.1 calls
    /// them padding).
    ///
    /// # Errors
    ///
    /// [`EapError::Malformed`] when the packet is shorter than its header or its Length, has a
    /// Request or Response without a Type, or has an unknown Code.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EapError> {
        let (&[code, identifier, len_hi, len_lo], rest) = split_array::<4>(bytes)
            .ok_or_else(|| malformed("the EAP packet is shorter than its 4-byte header"))?;
        let length = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        if length < 4 {
            return Err(malformed(format!(
                "the EAP packet's Length ({length}) is shorter than its header"
            )));
        }
        let body = rest.get(..length - 4).ok_or_else(|| {
            malformed(format!(
                "the EAP packet's Length ({length}) exceeds its {} bytes",
                bytes.len()
            ))
        })?;
        match code {
            CODE_REQUEST | CODE_RESPONSE => {
                let (&eap_type, type_data) = body.split_first().ok_or_else(|| {
                    malformed("an EAP Request or Response without a Type".to_owned())
                })?;
                Ok(Self {
                    code,
                    identifier,
                    eap_type: Some(eap_type),
                    type_data,
                })
            }
            CODE_SUCCESS | CODE_FAILURE => Ok(Self {
                code,
                identifier,
                eap_type: None,
                type_data: &[],
            }),
            other => Err(malformed(format!("unknown EAP Code {other}"))),
        }
    }

    /// Encodes a Request or Response of `eap_type` with `type_data`.
    ///
    /// # Errors
    ///
    /// [`EapError::Malformed`] when the packet would be longer than 65535 bytes.
    pub fn encode(
        code: u8,
        identifier: u8,
        eap_type: u8,
        type_data: &[u8],
    ) -> Result<Vec<u8>, EapError> {
        let length = u16::try_from(5 + type_data.len())
            .map_err(|_| malformed("the EAP packet would be longer than 65535 bytes"))?;
        let mut out = Vec::with_capacity(usize::from(length));
        out.push(code);
        out.push(identifier);
        out.extend_from_slice(&length.to_be_bytes());
        out.push(eap_type);
        out.extend_from_slice(type_data);
        Ok(out)
    }
}

/// What to do after an EAP packet from the server.
#[derive(Clone, PartialEq, Eq)]
pub enum EapStep {
    /// Send this EAP Response packet (in an EAP payload of the next IKE_AUTH request).
    Respond(Vec<u8>),
    /// The server sent EAP-Success after proving it knows the password:
    /// [`EapMschapv2Peer::msk`] is set; both sides now send AUTH with it.
    Success,
}

impl fmt::Debug for EapStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Respond(bytes) => write!(f, "Respond({} bytes)", bytes.len()),
            Self::Success => f.write_str("Success"),
        }
    }
}

/// Why EAP stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EapError {
    /// The server's packet cannot be parsed.
    #[error("the server sent a malformed EAP packet: {0}")]
    Malformed(String),
    /// The server refused the login (EAP-Failure, or an MS-CHAPv2 Failure with its code).
    #[error("{0}")]
    Failure(String),
    /// The server's MS-CHAPv2 Success did not prove that it knows the password: it is not the
    /// server it claims to be.
    #[error(
        "the server's EAP-MSCHAPv2 success message does not prove it knows the password \
         (authenticator response mismatch): refusing to continue, this may be an attack"
    )]
    AuthenticatorMismatch,
    /// Something we do not do (MS-CHAPv2 password change, ...).
    #[error("unsupported EAP request: {0}")]
    Unsupported(String),
    /// A packet that is valid but makes no sense at this point of the exchange.
    #[error("unexpected EAP packet: {0}")]
    Unexpected(String),
}

fn malformed(reason: impl Into<String>) -> EapError {
    EapError::Malformed(reason.into())
}

/// Splits the first `N` bytes off `bytes`.
fn split_array<const N: usize>(bytes: &[u8]) -> Option<(&[u8; N], &[u8])> {
    let (head, rest) = bytes.split_at_checked(N)?;
    Some((head.try_into().ok()?, rest))
}

/// Where the exchange is.
enum State {
    /// Before an MS-CHAPv2 Challenge.
    Start,
    /// We answered a Challenge and wait for the server's Success or Failure.
    Challenged {
        /// The MS-CHAPv2-ID of the Challenge.
        ms_id: u8,
        /// What the server's `S=` must be.
        expected: Zeroizing<[u8; 20]>,
        /// The MSK this exchange yields.
        msk: Zeroizing<[u8; 64]>,
    },
    /// The server proved it knows the password; we wait for EAP-Success.
    Verified {
        /// The MSK.
        msk: Zeroizing<[u8; 64]>,
    },
    /// EAP-Success arrived.
    Done {
        /// The MSK.
        msk: Zeroizing<[u8; 64]>,
    },
    /// The exchange failed; every further packet is refused.
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::Start => "before the MS-CHAPv2 challenge",
            Self::Challenged { .. } => "while waiting for the MS-CHAPv2 result",
            Self::Verified { .. } => "after the MS-CHAPv2 success",
            Self::Done { .. } => "after EAP-Success",
            Self::Failed => "after the exchange failed",
        }
    }
}

/// The client (peer) side of EAP-MSCHAPv2.
pub struct EapMschapv2Peer {
    identity: Vec<u8>,
    password: Zeroizing<Vec<u8>>,
    state: State,
    failure_response: Option<Vec<u8>>,
}

impl fmt::Debug for EapMschapv2Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EapMschapv2Peer")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl EapMschapv2Peer {
    /// A peer logging in as `identity` (the EAP identity, also the MS-CHAPv2 user name; a
    /// `DOMAIN\` prefix is sent but left out of the challenge hash) with `password` (UTF-8).
    pub fn new(identity: &[u8], password: &[u8]) -> Self {
        Self {
            identity: identity.to_vec(),
            password: Zeroizing::new(password.to_vec()),
            state: State::Start,
            failure_response: None,
        }
    }

    /// Handles one EAP packet from the server (the body of an IKEv2 EAP payload) and returns
    /// what to do. `peer_challenge` is 16 fresh random bytes from the caller, used only when a
    /// Challenge arrives.
    ///
    /// # Errors
    ///
    /// [`EapError`] when the packet is malformed or out of place, or the server refused the
    /// login or failed to prove it knows the password. After an error other than
    /// [`EapError::Malformed`] the exchange is over and every further packet is refused.
    pub fn handle(&mut self, packet: &[u8], peer_challenge: [u8; 16]) -> Result<EapStep, EapError> {
        if matches!(self.state, State::Failed | State::Done { .. }) {
            return Err(EapError::Unexpected(format!(
                "an EAP packet {}",
                self.state.name()
            )));
        }
        let packet = EapPacket::parse(packet)?;
        let result = match (packet.code, packet.eap_type) {
            (CODE_REQUEST, Some(eap_type)) => self.request(&packet, eap_type, peer_challenge),
            (CODE_SUCCESS, _) => self.eap_success(),
            (CODE_FAILURE, _) => Err(EapError::Failure(
                "the server refused the EAP login (EAP-Failure)".to_owned(),
            )),
            _ => Err(malformed("the server sent an EAP Response")),
        };
        if let Err(error) = &result
            && !matches!(error, EapError::Malformed(_))
        {
            self.state = State::Failed;
        }
        result
    }

    /// The 64-byte MSK, once EAP-Success arrived after a verified MS-CHAPv2 success.
    pub fn msk(&self) -> Option<&[u8]> {
        match &self.state {
            State::Done { msk } => Some(msk.as_slice()),
            _ => None,
        }
    }

    /// The one-byte MS-CHAPv2 Failure response (`02 <id> 0006 1a 04`) to an MS-CHAPv2 Failure
    /// request, after [`EapMschapv2Peer::handle`] returned [`EapError::Failure`] for one. The
    /// draft asks the peer to send it; strongSwan then answers with EAP-Failure.
    pub fn failure_response(&self) -> Option<&[u8]> {
        self.failure_response.as_deref()
    }

    fn request(
        &mut self,
        packet: &EapPacket<'_>,
        eap_type: u8,
        peer_challenge: [u8; 16],
    ) -> Result<EapStep, EapError> {
        let id = packet.identifier;
        match eap_type {
            TYPE_IDENTITY => Ok(EapStep::Respond(EapPacket::encode(
                CODE_RESPONSE,
                id,
                TYPE_IDENTITY,
                &self.identity,
            )?)),
            TYPE_NOTIFICATION => Ok(EapStep::Respond(EapPacket::encode(
                CODE_RESPONSE,
                id,
                TYPE_NOTIFICATION,
                &[],
            )?)),
            TYPE_NAK => Err(malformed("a Nak in an EAP Request")),
            TYPE_MSCHAPV2 => self.mschapv2(id, packet.type_data, peer_challenge),
            // RFC 3748 §5.3.2: an Expanded Nak answers an expanded request.
            TYPE_EXPANDED => {
                let mut data = Vec::with_capacity(15);
                // Vendor-Id 0, Vendor-Type 3 (Nak), then the type we propose.
                data.extend_from_slice(&[0, 0, 0]);
                data.extend_from_slice(&u32::from(TYPE_NAK).to_be_bytes());
                data.push(TYPE_EXPANDED);
                data.extend_from_slice(&[0, 0, 0]);
                data.extend_from_slice(&u32::from(TYPE_MSCHAPV2).to_be_bytes());
                Ok(EapStep::Respond(EapPacket::encode(
                    CODE_RESPONSE,
                    id,
                    TYPE_EXPANDED,
                    &data,
                )?))
            }
            // RFC 3748 §5.3.1: a legacy Nak proposing MS-CHAPv2.
            _ => {
                tracing::debug!(
                    eap_type,
                    "EAP: answering a request for another method with Nak"
                );
                Ok(EapStep::Respond(EapPacket::encode(
                    CODE_RESPONSE,
                    id,
                    TYPE_NAK,
                    &[TYPE_MSCHAPV2],
                )?))
            }
        }
    }

    fn mschapv2(
        &mut self,
        id: u8,
        data: &[u8],
        peer_challenge: [u8; 16],
    ) -> Result<EapStep, EapError> {
        let (&opcode, rest) = data
            .split_first()
            .ok_or_else(|| malformed("an MS-CHAPv2 request without an OpCode"))?;
        match opcode {
            OP_CHALLENGE => self.challenge(id, rest, peer_challenge),
            OP_SUCCESS => self.success(id, rest),
            OP_FAILURE => {
                let message = mschapv2_message(rest)?;
                self.failure_response = Some(EapPacket::encode(
                    CODE_RESPONSE,
                    id,
                    TYPE_MSCHAPV2,
                    &[OP_FAILURE],
                )?);
                Err(EapError::Failure(failure_text(message)))
            }
            OP_CHANGE_PASSWORD => Err(EapError::Unsupported(
                "the server asks for an MS-CHAPv2 password change".to_owned(),
            )),
            other => Err(malformed(format!("unknown MS-CHAPv2 OpCode {other}"))),
        }
    }

    /// An MS-CHAPv2 Challenge: `MS-CHAPv2-ID | MS-Length(2) | Value-Size (16) | challenge |
    /// name`.
    fn challenge(
        &mut self,
        id: u8,
        data: &[u8],
        peer_challenge: [u8; 16],
    ) -> Result<EapStep, EapError> {
        if !matches!(self.state, State::Start | State::Challenged { .. }) {
            return Err(EapError::Unexpected(format!(
                "an MS-CHAPv2 Challenge {}",
                self.state.name()
            )));
        }
        let (&[ms_id, _, _, value_size], rest) =
            split_array::<4>(data).ok_or_else(|| malformed("a truncated MS-CHAPv2 Challenge"))?;
        if value_size != 16 {
            return Err(malformed(format!(
                "an MS-CHAPv2 Challenge of {value_size} bytes (expected 16)"
            )));
        }
        let (auth_challenge, _server_name) =
            split_array::<16>(rest).ok_or_else(|| malformed("a truncated MS-CHAPv2 Challenge"))?;

        let nt_response = mschapv2::nt_response(
            auth_challenge,
            &peer_challenge,
            &self.identity,
            &self.password,
        );
        let expected = Zeroizing::new(mschapv2::authenticator_response_bytes(
            &self.password,
            &nt_response,
            &peer_challenge,
            auth_challenge,
            &self.identity,
        ));
        let msk = mschapv2::msk(&self.password, &nt_response);

        // OpCode | MS-CHAPv2-ID | MS-Length | Value-Size | value (49) | Name; MS-Length counts
        // from the OpCode.
        let ms_length = u16::try_from(5 + 49 + self.identity.len())
            .map_err(|_| malformed("our EAP identity is too long for an MS-CHAPv2 Response"))?;
        let mut response = Vec::with_capacity(usize::from(ms_length));
        response.push(OP_RESPONSE);
        response.push(ms_id);
        response.extend_from_slice(&ms_length.to_be_bytes());
        response.push(RESPONSE_VALUE_SIZE);
        response.extend_from_slice(&peer_challenge);
        response.extend_from_slice(&[0; 8]);
        response.extend_from_slice(&nt_response);
        response.push(0); // Flags
        response.extend_from_slice(&self.identity);
        let packet = EapPacket::encode(CODE_RESPONSE, id, TYPE_MSCHAPV2, &response)?;

        self.state = State::Challenged {
            ms_id,
            expected,
            msk,
        };
        Ok(EapStep::Respond(packet))
    }

    /// An MS-CHAPv2 Success request: `MS-CHAPv2-ID | MS-Length(2) | "S=<40 hex> M=<text>"`.
    fn success(&mut self, id: u8, data: &[u8]) -> Result<EapStep, EapError> {
        let State::Challenged {
            ms_id, expected, ..
        } = &self.state
        else {
            return Err(EapError::Unexpected(format!(
                "an MS-CHAPv2 Success {}",
                self.state.name()
            )));
        };
        let (&[got_id, _, _], rest) =
            split_array::<3>(data).ok_or_else(|| malformed("a truncated MS-CHAPv2 Success"))?;
        if got_id != *ms_id {
            return Err(malformed(format!(
                "an MS-CHAPv2 Success for MS-CHAPv2-ID {got_id}, not {ms_id}"
            )));
        }
        let text = trim_nul(rest);
        let received = text
            .strip_prefix(b"S=")
            .and_then(|hex| hex.get(..40))
            .and_then(decode_hex::<20>)
            .ok_or(EapError::AuthenticatorMismatch)?;
        if !bool::from(received.ct_eq(expected.as_slice())) {
            return Err(EapError::AuthenticatorMismatch);
        }
        if let Some(message) = text.windows(2).position(|w| w == b"M=") {
            let message = text.get(message + 2..).unwrap_or_default();
            tracing::debug!(
                message = %String::from_utf8_lossy(message),
                "EAP-MSCHAPv2: the server accepted the password"
            );
        }
        let State::Challenged { msk, .. } = core::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(EapError::Unexpected("state changed".to_owned()));
        };
        self.state = State::Verified { msk };
        Ok(EapStep::Respond(EapPacket::encode(
            CODE_RESPONSE,
            id,
            TYPE_MSCHAPV2,
            &[OP_SUCCESS],
        )?))
    }

    fn eap_success(&mut self) -> Result<EapStep, EapError> {
        match core::mem::replace(&mut self.state, State::Failed) {
            State::Verified { msk } => {
                self.state = State::Done { msk };
                Ok(EapStep::Success)
            }
            State::Challenged { .. } => Err(EapError::AuthenticatorMismatch),
            other => {
                let error = EapError::Unexpected(format!("EAP-Success {}", other.name()));
                self.state = other;
                Err(error)
            }
        }
    }
}

/// The message of an MS-CHAPv2 Success or Failure request: after `MS-CHAPv2-ID | MS-Length`.
fn mschapv2_message(data: &[u8]) -> Result<&[u8], EapError> {
    let (_, rest) =
        split_array::<3>(data).ok_or_else(|| malformed("a truncated MS-CHAPv2 Failure"))?;
    Ok(trim_nul(rest))
}

/// `text` up to its first NUL, if any.
fn trim_nul(text: &[u8]) -> &[u8] {
    match text.iter().position(|&b| b == 0) {
        Some(end) => text.get(..end).unwrap_or_default(),
        None => text,
    }
}

/// `N` bytes from `2 * N` hex digits of either case.
fn decode_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (digit(*hi)? << 4) | digit(*lo)?;
    }
    Some(out)
}

/// A sentence for an MS-CHAPv2 Failure message `E=691 R=0 C=<hex> V=3 M=<text>`.
fn failure_text(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let code = text
        .split(' ')
        .find_map(|field| field.strip_prefix("E="))
        .and_then(|code| code.parse::<u32>().ok());
    let server_text = text.find("M=").and_then(|at| text.get(at + 2..));
    let reason = match code {
        Some(646) => "logins are not allowed at this time (E=646)".to_owned(),
        Some(647) => "the account is disabled (E=647)".to_owned(),
        Some(648) => "the password has expired (E=648)".to_owned(),
        Some(649) => "the account may not log in remotely (E=649)".to_owned(),
        Some(691) => "wrong user name or password (E=691)".to_owned(),
        Some(709) => "the password must be changed (E=709)".to_owned(),
        Some(other) => format!("error E={other}"),
        None => "no error code".to_owned(),
    };
    match server_text {
        Some(m) if !m.is_empty() => {
            format!("the server refused the EAP password: {reason}, server says \"{m}\"")
        }
        _ => format!("the server refused the EAP password: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decodes_both_cases_and_rejects_junk() {
        assert_eq!(decode_hex::<2>(b"aB0f"), Some([0xab, 0x0f]));
        assert_eq!(decode_hex::<2>(b"aB0g"), None);
        assert_eq!(decode_hex::<2>(b"aB0"), None);
        assert_eq!(decode_hex::<1>(b"+1"), None);
    }

    #[test]
    fn failure_messages_name_the_code_and_text() {
        assert_eq!(
            failure_text(
                b"E=691 R=0 C=00112233445566778899AABBCCDDEEFF V=3 M=Authentication failed"
            ),
            "the server refused the EAP password: wrong user name or password (E=691), server \
             says \"Authentication failed\""
        );
        assert_eq!(
            failure_text(b"E=648 R=0 V=3"),
            "the server refused the EAP password: the password has expired (E=648)"
        );
        assert_eq!(
            failure_text(b"garbage"),
            "the server refused the EAP password: no error code"
        );
    }

    #[test]
    fn parse_ignores_padding_and_refuses_short_lengths() {
        let packet = EapPacket::parse(&[1, 7, 0, 5, 1, 0xff, 0xff]).unwrap();
        assert_eq!(packet.code, CODE_REQUEST);
        assert_eq!(packet.identifier, 7);
        assert_eq!(packet.eap_type, Some(TYPE_IDENTITY));
        assert!(packet.type_data.is_empty());
        assert!(EapPacket::parse(&[1, 7, 0, 3, 1]).is_err());
        assert!(EapPacket::parse(&[1, 7, 0, 6, 1]).is_err());
        assert!(EapPacket::parse(&[1, 7, 0, 4]).is_err());
        assert!(EapPacket::parse(&[9, 7, 0, 4]).is_err());
    }
}
