//! The server's side of the key-method-2 exchange: parsing the client's message, writing the
//! server's, and reading the client's peer-info text.
//!
//! The client's message ([`parse_client_message`]):
//!
//! ```text
//! 00000000 · 02 · pre_master (48) · random1 (32) · random2 (32)
//!   · string(options) · string(username) · string(password) · string(peer-info)
//! ```
//!
//! The server answers ([`encode_server_message`]) with the same shape without the pre-master,
//! and empty username, password and peer-info, as a 2.6 server does.

use core::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::control::keymethod::{
    ClientKeySource, KEY_METHOD_2, MAX_MESSAGE_LEN, MAX_OPTIONS_LEN, ServerKeySource,
};

/// The fixed part of the client's message: prefix, method, pre-master and randoms.
const CLIENT_FIXED_LEN: usize = 5 + 48 + 32 + 32;

/// Why the client's key-method message is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientMessageError {
    /// The message does not start with `00000000`.
    #[error("the client's key-method message does not start with four zero bytes")]
    BadPrefix,
    /// Another key method than 2.
    #[error("the client uses key method {0}; only key method 2 exists in OpenVPN 2.6")]
    UnsupportedKeyMethod(u8),
    /// A length field runs past the limit or a string lacks its NUL.
    #[error("the client's key-method message has a malformed {0} field")]
    BadString(&'static str),
    /// The message is longer than OpenVPN reads.
    #[error("the client's key-method message is longer than {MAX_MESSAGE_LEN} bytes")]
    TooLong,
}

/// What the client said in its key-method message.
#[derive(Clone)]
pub struct ClientKeyMessage {
    /// Its key material (for the legacy PRF).
    pub key_source: ClientKeySource,
    /// Its options string (compared only for logs, as OpenVPN does).
    pub options: String,
    /// The username, empty when none was sent.
    pub username: String,
    /// The password (or auth-token), empty when none was sent.
    pub password: Zeroizing<String>,
    /// The peer-info text (`IV_VER=...\nIV_PROTO=...\n...`).
    pub peer_info: String,
}

impl fmt::Debug for ClientKeyMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeyMessage")
            .field("options", &self.options)
            .field("username", &self.username)
            .field("peer_info", &self.peer_info)
            .finish_non_exhaustive()
    }
}

/// Reads a u16-prefixed string at `*pos` as raw bytes (up to its NUL). `Ok(None)`: the
/// buffer ends inside the field.
fn read_string<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    field: &'static str,
    max: usize,
) -> Result<Option<&'a [u8]>, ClientMessageError> {
    let Some(len_bytes) = buf.get(*pos..pos.saturating_add(2)) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([
        len_bytes.first().copied().unwrap_or(0),
        len_bytes.get(1).copied().unwrap_or(0),
    ]));
    if len > max {
        return Err(ClientMessageError::BadString(field));
    }
    let start = pos.saturating_add(2);
    let Some(bytes) = buf.get(start..start.saturating_add(len)) else {
        return Ok(None);
    };
    *pos = start + len;
    if len == 0 {
        return Ok(Some(&[]));
    }
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(ClientMessageError::BadString(field))?;
    Ok(Some(bytes.get(..end).unwrap_or_default()))
}

/// Parses the client's key-method-2 message at the start of `buf` (the plaintext received so
/// far). Returns the message and how many bytes it used; `Ok(None)` means it is not complete
/// yet. What follows it are NUL-terminated control messages.
///
/// # Errors
///
/// A message that is not key method 2, has malformed fields, or runs past
/// [`MAX_MESSAGE_LEN`] without completing.
pub fn parse_client_message(
    buf: &[u8],
) -> Result<Option<(ClientKeyMessage, usize)>, ClientMessageError> {
    if buf.iter().take(4).any(|&b| b != 0) {
        return Err(ClientMessageError::BadPrefix);
    }
    let Some(&method) = buf.get(4) else {
        return Ok(None);
    };
    if method & 0x0f != KEY_METHOD_2 {
        return Err(ClientMessageError::UnsupportedKeyMethod(method & 0x0f));
    }
    let result = parse_fields(buf);
    if let Ok(None) = result
        && buf.len() > MAX_MESSAGE_LEN
    {
        return Err(ClientMessageError::TooLong);
    }
    result
}

fn parse_fields(buf: &[u8]) -> Result<Option<(ClientKeyMessage, usize)>, ClientMessageError> {
    let Some(fixed) = buf.get(5..CLIENT_FIXED_LEN) else {
        return Ok(None);
    };
    let mut key_source = ClientKeySource {
        pre_master: [0; 48],
        random1: [0; 32],
        random2: [0; 32],
    };
    let (pre_master, randoms) = fixed.split_at(48);
    let (random1, random2) = randoms.split_at(32);
    key_source.pre_master.copy_from_slice(pre_master);
    key_source.random1.copy_from_slice(random1);
    key_source.random2.copy_from_slice(random2);
    let mut pos = CLIENT_FIXED_LEN;
    let Some(options) = read_string(buf, &mut pos, "options string", MAX_OPTIONS_LEN)? else {
        return Ok(None);
    };
    let options = String::from_utf8_lossy(options).into_owned();
    let Some(username) = read_string(buf, &mut pos, "username", MAX_MESSAGE_LEN)? else {
        return Ok(None);
    };
    let username = String::from_utf8_lossy(username).into_owned();
    let Some(password) = read_string(buf, &mut pos, "password", MAX_MESSAGE_LEN)? else {
        return Ok(None);
    };
    let password = Zeroizing::new(String::from_utf8_lossy(password).into_owned());
    let Some(peer_info) = read_string(buf, &mut pos, "peer-info", MAX_MESSAGE_LEN)? else {
        return Ok(None);
    };
    let peer_info = String::from_utf8_lossy(peer_info).into_owned();
    Ok(Some((
        ClientKeyMessage {
            key_source,
            options,
            username,
            password,
            peer_info,
        },
        pos,
    )))
}

/// Appends `text` as an OpenVPN string (u16 length counting the NUL, the text, the NUL); an
/// empty text is a bare `0000`.
fn write_string(out: &mut Vec<u8>, text: &str) {
    if text.is_empty() {
        out.extend_from_slice(&[0, 0]);
        return;
    }
    let len = u16::try_from(text.len() + 1).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(
        text.as_bytes()
            .get(..usize::from(len) - 1)
            .unwrap_or_default(),
    );
    out.push(0);
}

/// Writes the server's key-method-2 message into `out` (cleared first): its randoms, its
/// options string, and empty username, password and peer-info.
pub fn encode_server_message(key_source: &ServerKeySource, options: &str, out: &mut Vec<u8>) {
    out.zeroize();
    out.clear();
    out.extend_from_slice(&[0, 0, 0, 0, KEY_METHOD_2]);
    out.extend_from_slice(&key_source.random1);
    out.extend_from_slice(&key_source.random2);
    write_string(out, options);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
}

/// What the server reads from the client's peer-info text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// `IV_PROTO` bits ([`crate::control::keymethod::iv_proto`]); 0 when absent.
    pub proto: u32,
    /// `IV_CIPHERS`, split at `:`; `None` when absent.
    pub ciphers: Option<Vec<String>>,
    /// `IV_NCP`; 0 when absent.
    pub ncp: u32,
    /// `IV_MTU`, when present and a number.
    pub mtu: Option<u32>,
    /// `IV_VER`, when present.
    pub version: Option<String>,
}

impl PeerInfo {
    /// Parses a peer-info text (`KEY=value` lines). Unknown keys and malformed values are
    /// ignored, as OpenVPN does.
    pub fn parse(text: &str) -> Self {
        let mut info = Self::default();
        for line in text.split('\n') {
            let line = line.trim_end_matches('\r');
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "IV_PROTO" => info.proto = value.trim().parse().unwrap_or(0),
                "IV_CIPHERS" => {
                    info.ciphers = Some(
                        value
                            .split(':')
                            .filter(|c| !c.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    );
                }
                "IV_NCP" => info.ncp = value.trim().parse().unwrap_or(0),
                "IV_MTU" => info.mtu = value.trim().parse().ok(),
                "IV_VER" => info.version = Some(value.to_owned()),
                _ => {}
            }
        }
        info
    }

    /// Whether the client negotiates ciphers (OpenVPN's `tls_peer_supports_ncp`): it lists
    /// `IV_CIPHERS` or announces `IV_NCP` 2 or more. Only such clients get `cipher` pushed.
    pub fn supports_ncp(&self) -> bool {
        self.ciphers.is_some() || self.ncp >= 2
    }

    /// The ciphers the client accepts by name, as OpenVPN 2.6's `tls_peer_ncp_list` reads
    /// them: `IV_CIPHERS`, else AES-256-GCM and AES-128-GCM for `IV_NCP>=2`, else none.
    pub fn ncp_list(&self) -> Vec<String> {
        match &self.ciphers {
            Some(list) => list.clone(),
            None if self.ncp >= 2 => vec!["AES-256-GCM".to_owned(), "AES-128-GCM".to_owned()],
            None => Vec::new(),
        }
    }
}

/// The `cipher` token of an options string, when there is one.
pub(super) fn options_cipher(options: &str) -> Option<&str> {
    options
        .split(',')
        .find_map(|item| item.strip_prefix("cipher "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::keymethod::{UserPass, encode_client_message};
    use erebus_sansio::Seed;
    use proptest::prelude::*;

    #[test]
    fn server_keymethod_parses_what_the_client_encodes() {
        let source = ClientKeySource::generate(&mut Seed::from_byte(1).rng());
        let mut message = Vec::new();
        encode_client_message(
            &source,
            "V4,dev-type tun",
            Some(UserPass {
                username: "alice",
                password: "secret",
            }),
            "IV_VER=2.6.14\nIV_PROTO=990\nIV_CIPHERS=AES-256-GCM:CHACHA20-POLY1305\n",
            &mut message,
        )
        .unwrap();
        message.extend_from_slice(b"PUSH_REQUEST\0");
        for cut in 0..message.len() - 13 {
            assert!(parse_client_message(&message[..cut]).unwrap().is_none());
        }
        let (parsed, used) = parse_client_message(&message).unwrap().unwrap();
        assert_eq!(used, message.len() - 13);
        assert_eq!(parsed.key_source, source);
        assert_eq!(parsed.options, "V4,dev-type tun");
        assert_eq!(parsed.username, "alice");
        assert_eq!(parsed.password.as_str(), "secret");
        let info = PeerInfo::parse(&parsed.peer_info);
        assert_eq!(info.proto, 990);
        assert_eq!(
            info.ciphers.as_deref(),
            Some(&["AES-256-GCM".to_owned(), "CHACHA20-POLY1305".to_owned()][..])
        );
        assert!(info.supports_ncp());
    }

    #[test]
    fn server_keymethod_server_message_parses_on_the_client_side() {
        let keys = ServerKeySource {
            random1: [1; 32],
            random2: [2; 32],
        };
        let mut out = Vec::new();
        encode_server_message(&keys, "V4,tls-server", &mut out);
        let (parsed, used) = crate::control::keymethod::parse_server_message(&out)
            .unwrap()
            .unwrap();
        assert_eq!(used, out.len());
        assert_eq!(parsed.key_source, keys);
        assert_eq!(parsed.options, "V4,tls-server");
    }

    #[test]
    fn server_keymethod_refuses_garbage() {
        assert_eq!(
            parse_client_message(&[0, 0, 1]).unwrap_err(),
            ClientMessageError::BadPrefix
        );
        assert_eq!(
            parse_client_message(&[0, 0, 0, 0, 1]).unwrap_err(),
            ClientMessageError::UnsupportedKeyMethod(1)
        );
        let mut long = vec![0, 0, 0, 0, 2];
        long.resize(CLIENT_FIXED_LEN, 7);
        long.extend_from_slice(&[0x03, 0x00]);
        assert!(parse_client_message(&long).is_err());
    }

    proptest! {
        #[test]
        fn server_keymethod_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let _ = parse_client_message(&bytes);
            let mut prefixed = vec![0, 0, 0, 0, 2];
            prefixed.extend_from_slice(&bytes);
            let _ = parse_client_message(&prefixed);
            let _ = PeerInfo::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
