//! The typed values of profile directives: ciphers, digests, transports and the small enums of
//! single options.

use core::fmt;
use core::str::FromStr;

use erebus_sansio::tunnel::TransportKind;

/// A data-channel cipher erebus implements.
///
/// OpenVPN takes cipher names from OpenSSL, which compares them without regard to case, so
/// `aes-256-gcm` and `AES-256-GCM` are the same cipher here too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataCipher {
    /// AES-128 in GCM mode (TLS mode only).
    Aes128Gcm,
    /// AES-192 in GCM mode (TLS mode only).
    Aes192Gcm,
    /// AES-256 in GCM mode (TLS mode only).
    Aes256Gcm,
    /// ChaCha20 with Poly1305 (TLS mode only).
    ChaCha20Poly1305,
    /// AES-128 in CBC mode with an HMAC.
    Aes128Cbc,
    /// AES-192 in CBC mode with an HMAC.
    Aes192Cbc,
    /// AES-256 in CBC mode with an HMAC.
    Aes256Cbc,
    /// No encryption (`cipher none`): packets are only authenticated, if `auth` is set.
    None,
}

impl DataCipher {
    /// Every supported cipher, in a stable order.
    pub const ALL: [Self; 8] = [
        Self::Aes128Gcm,
        Self::Aes192Gcm,
        Self::Aes256Gcm,
        Self::ChaCha20Poly1305,
        Self::Aes128Cbc,
        Self::Aes192Cbc,
        Self::Aes256Cbc,
        Self::None,
    ];

    /// The name OpenVPN uses on the wire and in option strings, such as `AES-256-GCM`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Aes128Gcm => "AES-128-GCM",
            Self::Aes192Gcm => "AES-192-GCM",
            Self::Aes256Gcm => "AES-256-GCM",
            Self::ChaCha20Poly1305 => "CHACHA20-POLY1305",
            Self::Aes128Cbc => "AES-128-CBC",
            Self::Aes192Cbc => "AES-192-CBC",
            Self::Aes256Cbc => "AES-256-CBC",
            Self::None => "none",
        }
    }

    /// Whether the cipher authenticates by itself (GCM, ChaCha20-Poly1305). OpenVPN allows
    /// these only in TLS mode, where keys are never reused across sessions.
    pub const fn is_aead(self) -> bool {
        matches!(
            self,
            Self::Aes128Gcm | Self::Aes192Gcm | Self::Aes256Gcm | Self::ChaCha20Poly1305
        )
    }

    /// The key length in bytes (0 for `none`).
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm | Self::Aes128Cbc => 16,
            Self::Aes192Gcm | Self::Aes192Cbc => 24,
            Self::Aes256Gcm | Self::Aes256Cbc | Self::ChaCha20Poly1305 => 32,
            Self::None => 0,
        }
    }
}

impl fmt::Display for DataCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cipher name erebus does not implement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedCipher(pub String);

impl FromStr for DataCipher {
    type Err = UnsupportedCipher;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|cipher| cipher.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnsupportedCipher(name.to_owned()))
    }
}

/// The HMAC digest of `auth`, used by CBC data channels, tls-auth and static keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Digest {
    /// HMAC-SHA1 (OpenVPN's default).
    Sha1,
    /// HMAC-SHA224.
    Sha224,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA512.
    Sha512,
    /// No HMAC (`auth none`).
    None,
}

impl Digest {
    /// The name OpenVPN prints, such as `SHA256`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA1",
            Self::Sha224 => "SHA224",
            Self::Sha256 => "SHA256",
            Self::Sha384 => "SHA384",
            Self::Sha512 => "SHA512",
            Self::None => "none",
        }
    }

    /// The digest (and HMAC key) length in bytes; 0 for `none`.
    pub const fn len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
            Self::None => 0,
        }
    }

    /// Whether this is `none`, the digest that authenticates nothing.
    pub const fn is_empty(self) -> bool {
        matches!(self, Self::None)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A digest name erebus does not implement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedDigest(pub String);

impl FromStr for Digest {
    type Err = UnsupportedDigest;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        // OpenSSL knows each SHA digest under several spellings; accept the usual ones.
        let digest = match name.to_ascii_uppercase().as_str() {
            "SHA1" | "SHA-1" => Self::Sha1,
            "SHA224" | "SHA-224" | "SHA2-224" => Self::Sha224,
            "SHA256" | "SHA-256" | "SHA2-256" => Self::Sha256,
            "SHA384" | "SHA-384" | "SHA2-384" => Self::Sha384,
            "SHA512" | "SHA-512" | "SHA2-512" => Self::Sha512,
            "NONE" => Self::None,
            _ => return Err(UnsupportedDigest(name.to_owned())),
        };
        Ok(digest)
    }
}

/// The outer transport of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP datagrams (`proto udp`, the default).
    Udp,
    /// A TCP connection made by the client (`proto tcp-client`, or `tcp` with `client`).
    Tcp,
}

impl Transport {
    /// The driver-facing kind of this transport.
    pub const fn kind(self) -> TransportKind {
        match self {
            Self::Udp => TransportKind::Udp,
            Self::Tcp => TransportKind::TcpLengthPrefixed,
        }
    }
}

/// Which address family the server's name may resolve to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AddressFamily {
    /// Either; IPv4 and IPv6 addresses are tried (`udp`, `tcp`).
    #[default]
    Any,
    /// IPv4 only (`udp4`, `tcp4-client`).
    Ipv4,
    /// IPv6 only (`udp6`, `tcp6-client`).
    Ipv6,
}

/// A `proto` value as written, before `client` decides what a bare `tcp` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProtoSpec {
    Udp,
    /// `tcp`: a client in client mode, ambiguous in point-to-point mode.
    Tcp,
    TcpClient,
    TcpServer,
}

/// Parses a protocol name from OpenVPN's table (`udp`, `tcp4-client`, ...).
pub(super) fn parse_proto(name: &str) -> Option<(ProtoSpec, AddressFamily)> {
    let (kind, rest) = if let Some(rest) = name.strip_prefix("udp") {
        ("udp", rest)
    } else if let Some(rest) = name.strip_prefix("tcp") {
        ("tcp", rest)
    } else {
        return None;
    };
    let (family, suffix) = if let Some(s) = rest.strip_prefix('4') {
        (AddressFamily::Ipv4, s)
    } else if let Some(s) = rest.strip_prefix('6') {
        (AddressFamily::Ipv6, s)
    } else {
        (AddressFamily::Any, rest)
    };
    let spec = match (kind, suffix) {
        ("udp", "") => ProtoSpec::Udp,
        ("tcp", "") => ProtoSpec::Tcp,
        ("tcp", "-client") => ProtoSpec::TcpClient,
        ("tcp", "-server") => ProtoSpec::TcpServer,
        _ => return None,
    };
    Some((spec, family))
}

/// The direction argument of `key-direction`, `tls-auth` and `secret`.
///
/// With a direction, the 2048-bit key is split in two halves, one per direction; without one
/// (bidirectional), both directions use the first half.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyDirection {
    /// `0`: send with the first half. Servers usually use 0.
    Normal,
    /// `1`: send with the second half. Clients of a `0` server use 1.
    Inverse,
}

impl KeyDirection {
    pub(super) fn parse(word: &str) -> Option<Self> {
        match word {
            "0" => Some(Self::Normal),
            "1" => Some(Self::Inverse),
            _ => None,
        }
    }
}

/// `remote-cert-tls` and `ns-cert-type`: the role the peer's certificate must be issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertRole {
    /// The peer must present a server certificate (the usual client setting).
    Server,
    /// The peer must present a client certificate.
    Client,
}

impl CertRole {
    pub(super) fn parse(word: &str) -> Option<Self> {
        match word {
            "server" => Some(Self::Server),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

/// How `verify-x509-name` compares the name with the server certificate's subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum X509NameKind {
    /// `subject` (the default): the whole subject distinguished name, such as
    /// `C=US, CN=server`.
    Subject,
    /// `name`: the common name exactly.
    Name,
    /// `name-prefix`: the common name starts with the given text.
    NamePrefix,
}

/// A TLS protocol version from `tls-version-min`/`tls-version-max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// TLS 1.0.
    V1_0,
    /// TLS 1.1.
    V1_1,
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

impl TlsVersion {
    pub(super) fn parse(word: &str) -> Option<Self> {
        match word {
            "1.0" => Some(Self::V1_0),
            "1.1" => Some(Self::V1_1),
            "1.2" => Some(Self::V1_2),
            "1.3" => Some(Self::V1_3),
            _ => None,
        }
    }
}

/// What to do after the server rejects the username and password (`auth-retry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthRetry {
    /// `none`: give up (the default).
    None,
    /// `nointeract`: try again with the same credentials.
    NoInteract,
    /// `interact`: ask for new credentials and try again.
    Interact,
}

/// The compression framing a profile asks for with `comp-lzo` or `compress` (the later of the
/// two wins, as in OpenVPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// `comp-lzo no`: the LZO framing byte, never compressing.
    LzoStub,
    /// `comp-lzo`, `comp-lzo yes`/`adaptive` or `compress lzo`: real LZO compression.
    Lzo {
        /// Whether OpenVPN would switch compression off for incompressible traffic.
        adaptive: bool,
    },
    /// `compress` or `compress stub`: the swapped framing byte, never compressing.
    Stub,
    /// `compress stub-v2`: the v2 framing, never compressing.
    StubV2,
    /// `compress lz4`: real LZ4 compression, v1 framing.
    Lz4,
    /// `compress lz4-v2`: real LZ4 compression, v2 framing.
    Lz4V2,
    /// `compress migrate`: a server-side setting that lets old clients keep compressing.
    Migrate,
}

impl Compression {
    /// Whether packets may actually be compressed (rather than only framed as uncompressed).
    pub const fn compresses(self) -> bool {
        matches!(self, Self::Lzo { .. } | Self::Lz4 | Self::Lz4V2)
    }
}

/// `allow-compression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllowCompression {
    /// `no`: only the uncompressed framings.
    No,
    /// `asym`: accept compressed packets, never send any.
    Asym,
    /// `yes`: compress in both directions.
    Yes,
}

/// An `ifconfig` topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topology {
    /// `net30`: a /30 per client (the old default).
    Net30,
    /// `p2p`: a point-to-point link.
    P2p,
    /// `subnet`: one shared subnet.
    Subnet,
}

/// The action of a `pull-filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PullFilterAction {
    /// Keep pushed options that start with the text.
    Accept,
    /// Drop pushed options that start with the text.
    Ignore,
    /// Drop the connection when a pushed option starts with the text.
    Reject,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_cipher_names_are_case_insensitive() {
        assert_eq!("aes-256-gcm".parse(), Ok(DataCipher::Aes256Gcm));
        assert_eq!(
            "CHACHA20-POLY1305".parse(),
            Ok(DataCipher::ChaCha20Poly1305)
        );
        assert_eq!("NONE".parse(), Ok(DataCipher::None));
        assert!("BF-CBC".parse::<DataCipher>().is_err());
        for cipher in DataCipher::ALL {
            assert_eq!(cipher.name().parse(), Ok(cipher));
        }
    }

    #[test]
    fn config_digest_names() {
        assert_eq!("sha256".parse(), Ok(Digest::Sha256));
        assert_eq!("SHA-512".parse(), Ok(Digest::Sha512));
        assert_eq!("none".parse(), Ok(Digest::None));
        assert!("MD5".parse::<Digest>().is_err());
        assert_eq!(Digest::Sha384.len(), 48);
    }

    #[test]
    fn config_proto_table() {
        assert_eq!(
            parse_proto("udp"),
            Some((ProtoSpec::Udp, AddressFamily::Any))
        );
        assert_eq!(
            parse_proto("udp6"),
            Some((ProtoSpec::Udp, AddressFamily::Ipv6))
        );
        assert_eq!(
            parse_proto("tcp"),
            Some((ProtoSpec::Tcp, AddressFamily::Any))
        );
        assert_eq!(
            parse_proto("tcp4-client"),
            Some((ProtoSpec::TcpClient, AddressFamily::Ipv4))
        );
        assert_eq!(
            parse_proto("tcp6-server"),
            Some((ProtoSpec::TcpServer, AddressFamily::Ipv6))
        );
        assert_eq!(parse_proto("udp-client"), None);
        assert_eq!(parse_proto("UDP"), None);
        assert_eq!(parse_proto("sctp"), None);
    }
}
