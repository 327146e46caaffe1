//! Destination hosts and `host[:port]` authorities, as clients write them.
//!
//! Names are kept as names: they are resolved by the tunnel's DNS servers below the proxy, never
//! by the host's resolver, so a name must reach the layer below exactly as the client gave it.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where a front end wants a stream opened: a DNS name (resolved through the tunnel) or an
/// address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Host {
    /// A DNS name, not yet resolved. Letters, digits, `-`, `_` and `.`, at most 253 bytes.
    Name(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
}

/// Why a host or an authority (`host:port`) was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum HostError {
    /// Nothing where a host was expected.
    #[error("empty host")]
    Empty,
    /// The host is neither an address nor a valid DNS name.
    #[error("invalid host name")]
    InvalidName,
    /// A `[` without its `]`, or brackets around something that is not an IPv6 address.
    #[error("invalid bracketed IPv6 address")]
    InvalidIpv6,
    /// An IPv6 address written without brackets, so its colons cannot be told from the port's.
    #[error("IPv6 addresses must be written in brackets")]
    UnbracketedIpv6,
    /// The port is missing and there is no default.
    #[error("missing port")]
    MissingPort,
    /// The port is not a number from 1 to 65535.
    #[error("invalid port")]
    InvalidPort,
    /// `user@` before the host: credentials in a URI are refused.
    #[error("user information in the authority is not allowed")]
    UserInfo,
}

impl Host {
    /// Parses a host as written in a URI or on a command line: an IPv4 address, an IPv6 address
    /// with or without brackets, or a DNS name.
    ///
    /// # Errors
    ///
    /// [`HostError`] when the text is none of these.
    pub fn parse(text: &str) -> Result<Self, HostError> {
        if text.is_empty() {
            return Err(HostError::Empty);
        }
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(HostError::InvalidIpv6)?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Self::Ip(IpAddr::V6(ip)))
                .map_err(|_| HostError::InvalidIpv6);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        if text.contains(':') {
            return Err(HostError::UnbracketedIpv6);
        }
        if is_valid_name(text.as_bytes()) {
            Ok(Self::Name(text.to_owned()))
        } else {
            Err(HostError::InvalidName)
        }
    }

    /// Builds a host from the raw bytes of a SOCKS5 domain-name address. A name that is an
    /// address literal becomes [`Host::Ip`].
    pub(crate) fn from_name_bytes(bytes: &[u8]) -> Result<Self, HostError> {
        let text = core::str::from_utf8(bytes).map_err(|_| HostError::InvalidName)?;
        if text.is_empty() {
            return Err(HostError::Empty);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        if is_valid_name(bytes) {
            Ok(Self::Name(text.to_owned()))
        } else {
            Err(HostError::InvalidName)
        }
    }

    /// The host as it appears in an authority: IPv6 addresses in brackets.
    pub fn authority(&self) -> AuthorityHost<'_> {
        AuthorityHost(self)
    }

    /// Whether two hosts name the same destination (DNS names compare case-insensitively).
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Name(a), Self::Name(b)) => a.eq_ignore_ascii_case(b),
            (Self::Ip(a), Self::Ip(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Host {
    /// Names as given, addresses in their usual text form (IPv6 without brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}

impl From<Ipv4Addr> for Host {
    fn from(ip: Ipv4Addr) -> Self {
        Self::Ip(IpAddr::V4(ip))
    }
}

impl From<Ipv6Addr> for Host {
    fn from(ip: Ipv6Addr) -> Self {
        Self::Ip(IpAddr::V6(ip))
    }
}

/// Displays a [`Host`] the way an authority writes it: IPv6 addresses in brackets.
#[derive(Clone, Copy, Debug)]
pub struct AuthorityHost<'a>(&'a Host);

impl fmt::Display for AuthorityHost<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            other => fmt::Display::fmt(other, f),
        }
    }
}

/// Whether `bytes` is a DNS name we are willing to pass down: 1 to 253 bytes (a trailing dot
/// aside) of letters, digits, `-`, `_` and `.`, with no empty label and no label over 63 bytes.
///
/// Underscores are allowed because private networks use them in host names even though RFC 952
/// does not; anything else (spaces, slashes, control bytes, percent-escapes) is refused so
/// that no caller can smuggle syntax into the layer below.
pub(crate) fn is_valid_name(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_suffix(b".").unwrap_or(bytes);
    if bytes.is_empty() || bytes.len() > 253 {
        return false;
    }
    bytes.split(|&b| b == b'.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Parses a decimal port from 1 to 65535.
pub(crate) fn parse_port(text: &[u8]) -> Result<u16, HostError> {
    if text.is_empty() {
        return Err(HostError::MissingPort);
    }
    if text.len() > 5 || !text.iter().all(u8::is_ascii_digit) {
        return Err(HostError::InvalidPort);
    }
    let value = text
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(HostError::InvalidPort),
    }
}

/// Parses an authority `host[:port]` (IPv6 in brackets). With `default_port`, the port may be
/// left out (also as an empty `host:`); without, it is required.
pub(crate) fn parse_authority(
    text: &[u8],
    default_port: Option<u16>,
) -> Result<(Host, u16), HostError> {
    if text.contains(&b'@') {
        return Err(HostError::UserInfo);
    }
    let (host_text, port_text) = if text.first() == Some(&b'[') {
        let close = text
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::InvalidIpv6)?;
        let (host, rest) = text.split_at(close + 1);
        match rest {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return Err(HostError::InvalidIpv6),
        }
    } else {
        let mut parts = text.splitn(2, |&b| b == b':');
        let host = parts.next().unwrap_or_default();
        let port = parts.next();
        if port.is_some_and(|p| p.contains(&b':')) {
            return Err(HostError::UnbracketedIpv6);
        }
        (host, port)
    };
    let host_text = core::str::from_utf8(host_text).map_err(|_| HostError::InvalidName)?;
    let host = Host::parse(host_text)?;
    let port = match (port_text, default_port) {
        (Some([]), Some(default)) => default,
        (Some(p), _) => parse_port(p)?,
        (None, Some(default)) => default,
        (None, None) => return Err(HostError::MissingPort),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_of_host() {
        assert_eq!(
            Host::parse("intranet.corp"),
            Ok(Host::Name("intranet.corp".into()))
        );
        assert_eq!(
            Host::parse("10.1.2.3"),
            Ok(Host::Ip("10.1.2.3".parse().unwrap()))
        );
        assert_eq!(
            Host::parse("[fd00::1]"),
            Ok(Host::Ip("fd00::1".parse().unwrap()))
        );
        assert_eq!(
            Host::parse("fd00::1"),
            Ok(Host::Ip("fd00::1".parse().unwrap()))
        );
        assert_eq!(Host::parse(""), Err(HostError::Empty));
        assert_eq!(Host::parse("a b"), Err(HostError::InvalidName));
        assert_eq!(Host::parse("a..b"), Err(HostError::InvalidName));
        assert_eq!(Host::parse("[zz]"), Err(HostError::InvalidIpv6));
        assert_eq!(Host::parse("host:1"), Err(HostError::UnbracketedIpv6));
        assert_eq!(
            Host::parse("trailing.dot."),
            Ok(Host::Name("trailing.dot.".into()))
        );
    }

    #[test]
    fn authority_display_brackets_ipv6_only() {
        let v6 = Host::parse("fd00::2").unwrap();
        assert_eq!(v6.to_string(), "fd00::2");
        assert_eq!(v6.authority().to_string(), "[fd00::2]");
        let name = Host::parse("db.corp").unwrap();
        assert_eq!(name.authority().to_string(), "db.corp");
    }

    #[test]
    fn parses_authorities() {
        let host = |s: &str| Host::parse(s).unwrap();
        assert_eq!(
            parse_authority(b"a.corp:8080", None),
            Ok((host("a.corp"), 8080))
        );
        assert_eq!(
            parse_authority(b"a.corp", Some(80)),
            Ok((host("a.corp"), 80))
        );
        assert_eq!(
            parse_authority(b"a.corp:", Some(80)),
            Ok((host("a.corp"), 80))
        );
        assert_eq!(parse_authority(b"[::1]:443", None), Ok((host("::1"), 443)));
        assert_eq!(parse_authority(b"[::1]", Some(80)), Ok((host("::1"), 80)));
        assert_eq!(
            parse_authority(b"a.corp", None),
            Err(HostError::MissingPort)
        );
        assert_eq!(
            parse_authority(b"a.corp:0", None),
            Err(HostError::InvalidPort)
        );
        assert_eq!(
            parse_authority(b"a.corp:65536", None),
            Err(HostError::InvalidPort)
        );
        assert_eq!(
            parse_authority(b"a.corp:+80", None),
            Err(HostError::InvalidPort)
        );
        assert_eq!(
            parse_authority(b"::1:80", None),
            Err(HostError::UnbracketedIpv6)
        );
        assert_eq!(
            parse_authority(b"[::1]x", None),
            Err(HostError::InvalidIpv6)
        );
        assert_eq!(
            parse_authority(b"u:p@a.corp", Some(80)),
            Err(HostError::UserInfo)
        );
    }

    #[test]
    fn names_compare_case_insensitively() {
        assert!(
            Host::parse("A.Corp")
                .unwrap()
                .same_as(&Host::parse("a.corp").unwrap())
        );
        assert!(
            !Host::parse("a.corp")
                .unwrap()
                .same_as(&Host::parse("b.corp").unwrap())
        );
    }
}
