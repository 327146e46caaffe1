//! Settings shared by every connection of a listener, and proxy authentication.

use core::fmt;
use core::time::Duration;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Settings for the front ends of one listener. Shared (behind an `Arc`) by every connection it
/// accepts.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Credentials clients must present (HTTP `Proxy-Authorization: Basic`, SOCKS5
    /// username/password). `None`: no authentication.
    pub auth: Option<ProxyAuth>,
    /// How long the layer below may take to open a stream before the client is told it timed
    /// out (HTTP 504, SOCKS5 reply 0x06).
    pub connect_timeout: Duration,
    /// How long a client has to finish an HTTP request head, or the whole SOCKS5 handshake, once
    /// it has started.
    pub handshake_timeout: Duration,
    /// How long an HTTP connection may sit idle between requests before it is closed.
    pub keep_alive_timeout: Duration,
    /// How long an HTTP exchange may go without any byte moving before the response head
    /// arrives (HTTP 504 when it passes).
    pub response_timeout: Duration,
    /// How long a relay (CONNECT tunnel, SOCKS5, port forward, an HTTP body in flight) may go
    /// without any byte moving before it is closed. `None`: relays may idle for ever, as SSH
    /// sessions do; they still end when either side closes or the stream fails.
    pub idle_timeout: Option<Duration>,
    /// How long a connection that is being closed waits for the client to read what it was sent
    /// and close its side, before it is dropped. Restarted whenever the client reads.
    pub linger_timeout: Duration,
    /// Bytes buffered in each direction before reading from the sending side pauses. Small by
    /// default: behind it sit the tunnel connection's own buffers, whose windows are what slow
    /// a sender down, so bytes here are only a second copy on the way (a thousand slow
    /// readers would otherwise hold a thousand full buffers).
    pub buffer_size: usize,
    /// Largest HTTP request head accepted (431 beyond it).
    pub max_request_head: usize,
    /// Largest HTTP request line accepted (414 beyond it).
    pub max_request_line: usize,
    /// Largest HTTP response head accepted from the upstream (502 beyond it).
    pub max_response_head: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            auth: None,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(120),
            idle_timeout: None,
            linger_timeout: Duration::from_secs(5),
            buffer_size: 8 * 1024,
            max_request_head: 32 * 1024,
            max_request_line: 8 * 1024,
            max_response_head: 64 * 1024,
        }
    }
}

/// Why proxy credentials were refused at configuration time.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// SOCKS5 (RFC 1929) needs a username of 1 to 255 bytes.
    #[error("the proxy username must be 1 to 255 bytes long")]
    UsernameLength,
    /// SOCKS5 (RFC 1929) carries at most 255 bytes of password.
    #[error("the proxy password must be at most 255 bytes long")]
    PasswordLength,
    /// HTTP Basic separates username and password with a colon, so a username cannot hold one.
    #[error("the proxy username must not contain ':'")]
    ColonInUsername,
}

/// Proxy credentials: one username and password, accepted as HTTP Basic and as SOCKS5
/// username/password.
///
/// Comparisons take the same time whatever the guess, and the secrets are wiped on drop and
/// never printed: `Debug` shows `ProxyAuth(<redacted>)`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ProxyAuth {
    username: Vec<u8>,
    password: Vec<u8>,
    /// `username:password`, what a Basic credential decodes to.
    basic: Vec<u8>,
}

impl ProxyAuth {
    /// Credentials for the proxies.
    ///
    /// # Errors
    ///
    /// [`AuthConfigError`] when the pair cannot be expressed in both HTTP Basic and SOCKS5.
    pub fn new(username: &str, password: &str) -> Result<Self, AuthConfigError> {
        if username.is_empty() || username.len() > 255 {
            return Err(AuthConfigError::UsernameLength);
        }
        if password.len() > 255 {
            return Err(AuthConfigError::PasswordLength);
        }
        if username.contains(':') {
            return Err(AuthConfigError::ColonInUsername);
        }
        let mut basic = Vec::with_capacity(username.len() + 1 + password.len());
        basic.extend_from_slice(username.as_bytes());
        basic.push(b':');
        basic.extend_from_slice(password.as_bytes());
        Ok(Self {
            username: username.as_bytes().to_vec(),
            password: password.as_bytes().to_vec(),
            basic,
        })
    }

    /// Whether a `Proxy-Authorization` field value carries these credentials as `Basic`.
    pub fn check_basic(&self, field_value: &[u8]) -> bool {
        let value = trim(field_value);
        let Some((scheme, rest)) = split_once(value, b' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return false;
        }
        // 255 + 1 + 255 bytes of credentials take 684 base64 characters; anything longer cannot
        // match, and decoding into a fixed buffer keeps a hostile header from costing memory.
        let mut decoded = [0u8; 520];
        let ok = match base64_decode(trim(rest), &mut decoded) {
            Some(len) => constant_time_eq(decoded.get(..len).unwrap_or_default(), &self.basic),
            None => false,
        };
        decoded.zeroize();
        ok
    }

    /// Whether a SOCKS5 username/password pair (RFC 1929) matches.
    pub fn check_pair(&self, username: &[u8], password: &[u8]) -> bool {
        // Both comparisons always run, so the time taken does not say which one failed.
        let user_ok = constant_time_eq(username, &self.username);
        let pass_ok = constant_time_eq(password, &self.password);
        user_ok & pass_ok
    }
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyAuth(<redacted>)")
    }
}

/// Compares `given` with `expected` in a time that depends only on `expected`'s length.
pub(crate) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &want) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ want;
    }
    core::hint::black_box(diff) == 0
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == separator)?;
    Some((bytes.get(..at)?, bytes.get(at + 1..)?))
}

/// Decodes standard base64 (padding optional) into `out`; `None` on bad input or when it does
/// not fit.
fn base64_decode(text: &[u8], out: &mut [u8]) -> Option<usize> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let unpadded = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"="));
    let data = match unpadded {
        Some(data) if text.len().is_multiple_of(4) => data,
        Some(_) => return None,
        None => text,
    };
    if data.len() % 4 == 1 {
        return None;
    }
    let mut written = 0;
    for group in data.chunks(4) {
        let mut acc = 0u32;
        for &c in group {
            acc = (acc << 6) | value(c)?;
        }
        let bytes = match group.len() {
            4 => [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8],
            3 => {
                acc <<= 6;
                [(acc >> 16) as u8, (acc >> 8) as u8, 0]
            }
            _ => {
                acc <<= 12;
                [(acc >> 16) as u8, 0, 0]
            }
        };
        let count = group.len() - 1;
        let slot = out.get_mut(written..written + count)?;
        slot.copy_from_slice(bytes.get(..count)?);
        written += count;
    }
    Some(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        let mut out = [0u8; 16];
        assert_eq!(base64_decode(b"dTpw", &mut out), Some(3));
        assert_eq!(&out[..3], b"u:p");
        assert_eq!(base64_decode(b"dTpwMQ==", &mut out), Some(4));
        assert_eq!(&out[..4], b"u:p1");
        assert_eq!(base64_decode(b"dTpwMQ", &mut out), Some(4));
        assert_eq!(base64_decode(b"dTpwMTI=", &mut out), Some(5));
        assert_eq!(&out[..5], b"u:p12");
        assert_eq!(base64_decode(b"dTp*", &mut out), None);
        assert_eq!(base64_decode(b"dTpwM", &mut out), None);
        assert_eq!(base64_decode(b"dTpwMQ=", &mut out), None);
        let mut tiny = [0u8; 2];
        assert_eq!(base64_decode(b"dTpw", &mut tiny), None);
    }

    #[test]
    fn basic_credentials_are_checked() {
        let auth = ProxyAuth::new("alice", "s3cret").unwrap();
        // "alice:s3cret"
        assert!(auth.check_basic(b"Basic YWxpY2U6czNjcmV0"));
        assert!(auth.check_basic(b"basic   YWxpY2U6czNjcmV0 "));
        // "alice:s3cres"
        assert!(!auth.check_basic(b"Basic YWxpY2U6czNjcmVz"));
        assert!(!auth.check_basic(b"Bearer YWxpY2U6czNjcmV0"));
        assert!(!auth.check_basic(b"Basic"));
        assert!(!auth.check_basic(b"Basic !!!!"));
    }

    #[test]
    fn socks_pairs_are_checked() {
        let auth = ProxyAuth::new("alice", "s3cret").unwrap();
        assert!(auth.check_pair(b"alice", b"s3cret"));
        assert!(!auth.check_pair(b"alice", b"s3cre"));
        assert!(!auth.check_pair(b"alicf", b"s3cret"));
        assert!(!auth.check_pair(b"", b""));
    }

    #[test]
    fn invalid_credentials_are_refused_at_configuration() {
        assert_eq!(
            ProxyAuth::new("", "x").err(),
            Some(AuthConfigError::UsernameLength)
        );
        assert_eq!(
            ProxyAuth::new("a:b", "x").err(),
            Some(AuthConfigError::ColonInUsername)
        );
        let long = "x".repeat(256);
        assert_eq!(
            ProxyAuth::new("a", &long).err(),
            Some(AuthConfigError::PasswordLength)
        );
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let config = ProxyConfig {
            auth: Some(ProxyAuth::new("alice", "s3cret").unwrap()),
            ..ProxyConfig::default()
        };
        let text = format!("{config:?}");
        assert!(!text.contains("alice"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn constant_time_eq_compares_lengths_too() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(constant_time_eq(b"", b""));
    }
}
