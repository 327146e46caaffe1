//! The key-method-2 messages: the first TLS application data of each side, after the TLS
//! handshake.
//!
//! The client sends ([`encode_client_message`]):
//!
//! ```text
//! 00000000 · 02 · pre_master (48) · random1 (32) · random2 (32)
//!   · string(options) · string(username) · string(password) · string(peer-info)
//! ```
//!
//! where `string` is a u16 length that counts a terminating NUL, the text and that NUL, and an
//! absent string is a bare `0000`. The server answers with the same shape without the
//! pre-master ([`parse_server_message`]). The randoms feed the legacy PRF
//! (`super::prf`); they are sent even when the keys come from the TLS exporter.
//!
//! The options string ([`options_string`]) and the peer-info text ([`peer_info`]) are built
//! from the profile exactly as OpenVPN 2.6 builds them for a TLS client.

use core::fmt;

use erebus_sansio::SeededRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::config::{Compression, DataCipher, Digest, Profile, TlsWrap, Transport};

/// The key method byte (`KEY_METHOD_2`).
pub const KEY_METHOD_2: u8 = 2;
/// The largest options string OpenVPN accepts, its NUL included (`TLS_OPTIONS_LEN`).
pub const MAX_OPTIONS_LEN: usize = 512;
/// The largest key-method message the server reads in one piece (`TLS_CHANNEL_BUF_SIZE`).
/// It reads one TLS record into a buffer of this size and drops what does not fit.
pub const MAX_MESSAGE_LEN: usize = 2048;

/// The client's key material of one key id: what the legacy PRF mixes.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ClientKeySource {
    /// 48 random bytes, the PRF's secret.
    pub pre_master: [u8; 48],
    /// Random for the master secret.
    pub random1: [u8; 32],
    /// Random for the key expansion.
    pub random2: [u8; 32],
}

impl ClientKeySource {
    /// Fresh key material drawn from `rng` (the session's seeded generator).
    pub fn generate(rng: &mut SeededRng) -> Self {
        Self {
            pre_master: rng.array(),
            random1: rng.array(),
            random2: rng.array(),
        }
    }
}

impl fmt::Debug for ClientKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientKeySource(<secret>)")
    }
}

/// The server's randoms of one key id.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ServerKeySource {
    /// Random for the master secret.
    pub random1: [u8; 32],
    /// Random for the key expansion.
    pub random2: [u8; 32],
}

impl fmt::Debug for ServerKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKeySource(<secret>)")
    }
}

/// Why a key-method message could not be built or parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyMethodError {
    /// A string to send is too long for its field.
    #[error("the {field} is {len} bytes, more than the {max} OpenVPN accepts")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length with the NUL.
        len: usize,
        /// The limit with the NUL.
        max: usize,
    },
    /// A string to send contains a NUL byte, which would cut it short.
    #[error("the {0} contains a NUL byte")]
    ContainsNul(&'static str),
    /// The whole message would not fit the server's buffer.
    #[error("the key-method message is {0} bytes; the server reads at most 2048")]
    MessageTooLong(usize),
    /// The server's message does not start with `00000000`.
    #[error("the server's key-method message does not start with four zero bytes")]
    BadPrefix,
    /// The server uses another key method.
    #[error("the server uses key method {0}; only key method 2 exists in OpenVPN 2.6")]
    UnsupportedKeyMethod(u8),
    /// A length field runs past the end of the message or a string lacks its NUL.
    #[error("the server's key-method message has a malformed {0} field")]
    BadString(&'static str),
}

/// Appends `text` as an OpenVPN string: u16 length counting the NUL, the text, the NUL.
fn write_string(
    out: &mut Vec<u8>,
    field: &'static str,
    text: &str,
    max: usize,
) -> Result<(), KeyMethodError> {
    if text.as_bytes().contains(&0) {
        return Err(KeyMethodError::ContainsNul(field));
    }
    let len = text.len() + 1;
    let wire_len = u16::try_from(len)
        .ok()
        .filter(|_| len <= max)
        .ok_or(KeyMethodError::TooLong { field, len, max })?;
    out.extend_from_slice(&wire_len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    Ok(())
}

/// A username and password (or session token) for the key-method message.
#[derive(Clone, Copy)]
pub struct UserPass<'a> {
    /// The username.
    pub username: &'a str,
    /// The password, or the pushed `auth-token` after the first authentication.
    pub password: &'a str,
}

impl fmt::Debug for UserPass<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserPass")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Writes the client's key-method-2 message into `out` (cleared first). Send it with one
/// `send_plaintext` call so that it is one TLS record with nothing else in it.
///
/// # Errors
///
/// A field that OpenVPN would refuse (too long, or containing NUL), or a message over
/// [`MAX_MESSAGE_LEN`].
pub fn encode_client_message(
    key_source: &ClientKeySource,
    options: &str,
    credentials: Option<UserPass<'_>>,
    peer_info: &str,
    out: &mut Vec<u8>,
) -> Result<(), KeyMethodError> {
    out.clear();
    out.extend_from_slice(&[0, 0, 0, 0, KEY_METHOD_2]);
    out.extend_from_slice(&key_source.pre_master);
    out.extend_from_slice(&key_source.random1);
    out.extend_from_slice(&key_source.random2);
    write_string(out, "options string", options, MAX_OPTIONS_LEN)?;
    match credentials {
        Some(creds) => {
            // The server's own limit is 128 or 4096 bytes depending on its build; the message
            // limit below is the one that matters on our side.
            write_string(out, "username", creds.username, MAX_MESSAGE_LEN)?;
            write_string(out, "password", creds.password, MAX_MESSAGE_LEN)?;
        }
        None => out.extend_from_slice(&[0, 0, 0, 0]),
    }
    write_string(out, "peer-info", peer_info, MAX_MESSAGE_LEN)?;
    if out.len() > MAX_MESSAGE_LEN {
        let len = out.len();
        out.zeroize();
        return Err(KeyMethodError::MessageTooLong(len));
    }
    Ok(())
}

/// The server's key-method-2 message.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerKeyMessage {
    /// Its randoms.
    pub key_source: ServerKeySource,
    /// Its options string, without the NUL (compared only for warnings, as OpenVPN does).
    pub options: String,
    /// Its peer-info text, usually empty.
    pub peer_info: String,
}

impl fmt::Debug for ServerKeyMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKeyMessage")
            .field("options", &self.options)
            .field("peer_info", &self.peer_info)
            .finish_non_exhaustive()
    }
}

/// Reads a u16-prefixed string at `*pos`. `Ok(None)`: the buffer ends inside the field.
fn read_string(
    buf: &[u8],
    pos: &mut usize,
    field: &'static str,
) -> Result<Option<String>, KeyMethodError> {
    let Some(len_bytes) = buf.get(*pos..*pos + 2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    let Some(bytes) = buf.get(*pos + 2..*pos + 2 + len) else {
        return Ok(None);
    };
    *pos += 2 + len;
    if len == 0 {
        return Ok(Some(String::new()));
    }
    // OpenVPN stops at the first NUL; a string without one is malformed.
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(KeyMethodError::BadString(field))?;
    Ok(Some(String::from_utf8_lossy(&bytes[..end]).into_owned()))
}

/// Parses the server's key-method-2 message at the start of `buf` (the plaintext received so
/// far). Returns the message and how many bytes it used; what follows are NUL-terminated
/// control messages (`PUSH_REPLY,...`). `Ok(None)` means the message is not complete yet.
///
/// # Errors
///
/// A message that is not key method 2 or whose fields are malformed.
pub fn parse_server_message(
    buf: &[u8],
) -> Result<Option<(ServerKeyMessage, usize)>, KeyMethodError> {
    let Some(head) = buf.get(..5) else {
        // Check what is there already, so garbage fails early.
        if buf.iter().take(4).any(|&b| b != 0) {
            return Err(KeyMethodError::BadPrefix);
        }
        return Ok(None);
    };
    if head[..4] != [0, 0, 0, 0] {
        return Err(KeyMethodError::BadPrefix);
    }
    // The low four bits are the method; the high bits were flags of older versions.
    if head[4] & 0x0f != KEY_METHOD_2 {
        return Err(KeyMethodError::UnsupportedKeyMethod(head[4] & 0x0f));
    }
    let Some(randoms) = buf.get(5..69) else {
        return Ok(None);
    };
    let mut key_source = ServerKeySource {
        random1: [0; 32],
        random2: [0; 32],
    };
    key_source.random1.copy_from_slice(&randoms[..32]);
    key_source.random2.copy_from_slice(&randoms[32..]);
    let mut pos = 69;
    let Some(options) = read_string(buf, &mut pos, "options string")? else {
        return Ok(None);
    };
    if options.is_empty() {
        return Err(KeyMethodError::BadString("options string"));
    }
    // 2.x servers always send username, password and peer-info, empty as `0000`.
    let Some(_username) = read_string(buf, &mut pos, "username")? else {
        return Ok(None);
    };
    let Some(_password) = read_string(buf, &mut pos, "password")? else {
        return Ok(None);
    };
    let Some(peer_info) = read_string(buf, &mut pos, "peer-info")? else {
        return Ok(None);
    };
    Ok(Some((
        ServerKeyMessage {
            key_source,
            options,
            peer_info,
        },
        pos,
    )))
}

/// The cipher OpenVPN puts in the options string: `data-ciphers-fallback` or `cipher`, or
/// `None` for its placeholder BF-CBC.
fn occ_cipher(profile: &Profile) -> Option<DataCipher> {
    profile.data_ciphers_fallback.or(profile.cipher)
}

/// Whether a compression setting adds OpenVPN's one-byte v1 compression header.
fn compression_header(compression: Option<Compression>) -> usize {
    match compression {
        Some(
            Compression::LzoStub
            | Compression::Lzo { .. }
            | Compression::Stub
            | Compression::Lz4
            | Compression::Migrate,
        ) => 1,
        Some(Compression::StubV2 | Compression::Lz4V2) | None => 0,
    }
}

/// The `link-mtu` of the options string, computed as OpenVPN 2.6 does for the string (with
/// the overheads of pre-2.4 peers), although it describes nothing real with negotiated
/// ciphers.
fn occ_link_mtu(profile: &Profile, tun_mtu: u32, transport: Transport) -> u32 {
    let digest_len = |d: Digest| u32::try_from(d.len()).unwrap_or(0);
    let cipher = occ_cipher(profile);
    let cbc = matches!(
        cipher,
        Some(DataCipher::Aes128Cbc | DataCipher::Aes192Cbc | DataCipher::Aes256Cbc)
    );
    let aead = cipher.is_some_and(DataCipher::is_aead);
    // Short-form packet id in TLS mode.
    let packet_id = 4;
    let mut total = tun_mtu + u32::try_from(compression_header(profile.compression)).unwrap_or(0);
    if cipher.is_none() {
        // BF-CBC: a 64-bit block and a 64-bit IV, counted by hand.
        total += 16;
    }
    if cbc {
        total += packet_id;
    }
    if transport == Transport::Tcp {
        total += 2;
    }
    total += 1; // opcode
    if !cbc {
        total += packet_id;
    }
    if aead {
        // Tag, then IV and block size as old peers counted them (GCM and ChaCha20-Poly1305
        // have a 12-byte IV and a block size of 1).
        total += 16 + 12 + 1;
    } else {
        if cbc {
            total += 16 + 16;
        }
        total += digest_len(profile.digest());
    }
    total
}

/// The options ("OCC") string of a TLS client, as OpenVPN 2.6 writes it, for the connection
/// `connection_index` of the profile:
///
/// `V4,dev-type tun,link-mtu N,tun-mtu N,proto UDPv4|TCPv4_CLIENT[,comp-lzo][,keydir D]
/// [,cipher X],auth D,keysize N[,tls-auth],key-method 2,tls-client`
///
/// The server only compares it to print warnings, except for the `cipher` token (its fallback
/// for peers that cannot negotiate) and `comp-lzo` (looked at by `compress migrate`).
/// A `key-direction` given globally with tls-crypt would add `keydir` in OpenVPN's string; the
/// profile does not keep it, so it is omitted here (a warning on the server at most).
pub fn options_string(profile: &Profile, connection_index: usize) -> String {
    let connection = profile.connections.get(connection_index);
    let transport = connection.map_or(Transport::Udp, |c| c.transport);
    let tun_mtu = connection.and_then(|c| c.tun_mtu).unwrap_or(1500);
    let wrap = connection.and_then(|c| c.tls_wrap.as_ref());

    let mut out = String::from("V4,dev-type tun");
    out.push_str(&format!(
        ",link-mtu {}",
        occ_link_mtu(profile, tun_mtu, transport)
    ));
    out.push_str(&format!(",tun-mtu {tun_mtu}"));
    out.push_str(match transport {
        Transport::Udp => ",proto UDPv4",
        Transport::Tcp => ",proto TCPv4_CLIENT",
    });
    if profile.compression.is_some() {
        out.push_str(",comp-lzo");
    }
    if let Some(TlsWrap::Auth {
        direction: Some(direction),
        ..
    }) = wrap
    {
        out.push_str(match direction {
            crate::config::KeyDirection::Normal => ",keydir 0",
            crate::config::KeyDirection::Inverse => ",keydir 1",
        });
    }
    match occ_cipher(profile) {
        // BF-CBC: no cipher token unless it is negotiable, which it cannot be here.
        None => {
            out.push_str(&format!(",auth {}", digest_name(profile.digest())));
            out.push_str(",keysize 128");
        }
        Some(cipher) => {
            if profile.negotiable_ciphers().contains(&cipher) {
                out.push_str(&format!(",cipher {}", cipher_name(cipher)));
            }
            let auth = if cipher.is_aead() {
                "[null-digest]".to_owned()
            } else {
                digest_name(profile.digest())
            };
            out.push_str(&format!(",auth {auth}"));
            out.push_str(&format!(",keysize {}", cipher.key_len() * 8));
        }
    }
    if matches!(wrap, Some(TlsWrap::Auth { .. })) {
        out.push_str(",tls-auth");
    }
    out.push_str(",key-method 2,tls-client");
    out
}

fn digest_name(digest: Digest) -> String {
    match digest {
        Digest::None => "[null-digest]".to_owned(),
        other => other.name().to_owned(),
    }
}

fn cipher_name(cipher: DataCipher) -> &'static str {
    match cipher {
        DataCipher::None => "[null-cipher]",
        other => other.name(),
    }
}

/// The `IV_PROTO` bits this client can announce (`ssl.h`).
pub mod iv_proto {
    /// Bit 1: P_DATA_V2 and peer-id.
    pub const DATA_V2: u32 = 1 << 1;
    /// Bit 2: the client sends PUSH_REQUEST and accepts an unprompted PUSH_REPLY.
    pub const REQUEST_PUSH: u32 = 1 << 2;
    /// Bit 3: data-channel keys from the TLS exporter.
    pub const TLS_KEY_EXPORT: u32 = 1 << 3;
    /// Bit 4: `AUTH_PENDING,timeout N` keywords.
    pub const AUTH_PENDING_KW: u32 = 1 << 4;
    /// Bit 7: `EXIT` over the control channel; the server pushes `protocol-flags`.
    pub const CC_EXIT_NOTIFY: u32 = 1 << 7;
    /// Bit 8: `AUTH_FAILED,TEMP`.
    pub const AUTH_FAIL_TEMP: u32 = 1 << 8;
}

/// What goes into the peer-info text besides what the profile says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfoParams {
    /// `IV_VER`: the OpenVPN version whose behaviour this client follows. Servers compare it
    /// as a version number, so it must look like one.
    pub version: String,
    /// `IV_PLAT`.
    pub platform: &'static str,
    /// `IV_PROTO` bits; see [`iv_proto`].
    pub proto: u32,
}

impl Default for PeerInfoParams {
    /// `IV_VER=2.6.14`, the platform erebus was built for, and `IV_PROTO=142`: DATA_V2,
    /// REQUEST_PUSH, TLS_KEY_EXPORT and CC_EXIT_NOTIFY.
    ///
    /// CC_EXIT_NOTIFY is announced because the client can send `EXIT` and understands both
    /// `EXIT` and the `protocol-flags` push that the bit asks for. AUTH_PENDING keywords,
    /// AUTH_FAILED,TEMP (they need retry timers), the `dns` option, dynamic tls-crypt and P2P
    /// NCP are not announced.
    fn default() -> Self {
        Self {
            version: "2.6.14".to_owned(),
            platform: platform_name(),
            proto: iv_proto::DATA_V2
                | iv_proto::REQUEST_PUSH
                | iv_proto::TLS_KEY_EXPORT
                | iv_proto::CC_EXIT_NOTIFY,
        }
    }
}

/// `IV_PLAT` for the platform erebus was compiled for.
fn platform_name() -> &'static str {
    match std::env::consts::OS {
        "macos" | "ios" => "mac",
        "windows" => "win",
        "freebsd" => "freebsd",
        "openbsd" => "openbsd",
        "netbsd" => "netbsd",
        "solaris" | "illumos" => "solaris",
        "android" => "android",
        _ => "linux",
    }
}

/// The peer-info text of a pull client, in the order OpenVPN 2.6 writes it, each line ending
/// in `\n`:
///
/// `IV_VER`, `IV_PLAT`, `IV_TCPNL=1`, `IV_MTU=1600`, `IV_NCP=2` (only when AES-128-GCM and
/// AES-256-GCM are both offered), `IV_CIPHERS` (the profile's data ciphers), `IV_PROTO`, and
/// the compression stubs `IV_LZO_STUB=1`, `IV_COMP_STUB=1`, `IV_COMP_STUBv2=1` (erebus frames
/// but never compresses).
pub fn peer_info(profile: &Profile, params: &PeerInfoParams) -> String {
    let ciphers = profile.negotiable_ciphers();
    let mut out = String::new();
    out.push_str(&format!("IV_VER={}\n", params.version));
    out.push_str(&format!("IV_PLAT={}\n", params.platform));
    out.push_str("IV_TCPNL=1\n");
    // The largest tun-mtu we accept from a push; OpenVPN's floor for this value.
    out.push_str("IV_MTU=1600\n");
    if ciphers.contains(&DataCipher::Aes128Gcm) && ciphers.contains(&DataCipher::Aes256Gcm) {
        out.push_str("IV_NCP=2\n");
    }
    let names: Vec<&str> = ciphers.iter().map(|c| c.name()).collect();
    out.push_str(&format!("IV_CIPHERS={}\n", names.join(":")));
    out.push_str(&format!("IV_PROTO={}\n", params.proto));
    out.push_str("IV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unhex(text: &str) -> Vec<u8> {
        let text = text.trim();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    const UDP_C2S: &str =
        include_str!("../../../../testvectors/captures/tls-udp/plaintext-c2s.hex");
    const UDP_S2C: &str =
        include_str!("../../../../testvectors/captures/tls-udp/plaintext-s2c.hex");
    const AUTH_C2S: &str =
        include_str!("../../../../testvectors/captures/tls-auth/plaintext-c2s.hex");
    const AUTH_S2C: &str =
        include_str!("../../../../testvectors/captures/tls-auth/plaintext-s2c.hex");
    const UDP_PROFILE: &str = include_str!("../../../../testvectors/captures/tls-udp/client.ovpn");
    const AUTH_PROFILE: &str =
        include_str!("../../../../testvectors/captures/tls-auth/client.ovpn");

    const STOCK_PEER_INFO: &str = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\n\
        IV_NCP=2\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\n\
        IV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n";

    fn profile(text: &str) -> Profile {
        Profile::parse(text.as_bytes()).unwrap().0
    }

    /// The client's randoms as the stock client sent them.
    fn captured_client_source(message: &[u8]) -> ClientKeySource {
        ClientKeySource {
            pre_master: message[5..53].try_into().unwrap(),
            random1: message[53..85].try_into().unwrap(),
            random2: message[85..117].try_into().unwrap(),
        }
    }

    #[test]
    fn control_keymethod_client_message_matches_stock_client_byte_for_byte() {
        let captured = unhex(UDP_C2S);
        let profile = profile(UDP_PROFILE);
        let options = options_string(&profile, 0);
        let params = PeerInfoParams {
            version: "2.6.14".into(),
            platform: "linux",
            proto: 990,
        };
        assert_eq!(peer_info(&profile, &params), STOCK_PEER_INFO);
        let mut out = Vec::new();
        encode_client_message(
            &captured_client_source(&captured),
            &options,
            None,
            &peer_info(&profile, &params),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 399);
        // The capture continues with the client's `EXIT\0`.
        assert_eq!(&captured[..399], &out[..]);
        assert_eq!(&captured[399..], b"EXIT\0");
    }

    #[test]
    fn control_keymethod_client_message_with_credentials_matches_capture() {
        let captured = unhex(AUTH_C2S);
        let profile = profile(AUTH_PROFILE);
        let params = PeerInfoParams {
            version: "2.6.14".into(),
            platform: "linux",
            proto: 990,
        };
        let mut out = Vec::new();
        encode_client_message(
            &captured_client_source(&captured),
            &options_string(&profile, 0),
            Some(UserPass {
                username: "erebus",
                password: "hunter2-erebus",
            }),
            &peer_info(&profile, &params),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 441);
        assert_eq!(&captured[..441], &out[..]);
    }

    #[test]
    fn control_keymethod_options_strings_of_the_captures() {
        assert_eq!(
            options_string(&profile(UDP_PROFILE), 0),
            "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,\
             key-method 2,tls-client"
        );
        assert_eq!(
            options_string(&profile(AUTH_PROFILE), 0),
            "V4,dev-type tun,link-mtu 1585,tun-mtu 1500,proto UDPv4,keydir 1,auth SHA512,\
             keysize 128,tls-auth,key-method 2,tls-client"
        );
    }

    #[test]
    fn control_keymethod_options_string_variants() {
        let base = "client\nremote vpn.example.net\nca ca.crt\nauth-user-pass\n";
        let with = |extra: &str| options_string(&profile(&format!("{base}{extra}")), 0);
        // A negotiable AEAD fallback cipher is announced; AEAD prints no digest.
        assert_eq!(
            with("data-ciphers-fallback AES-256-GCM\n"),
            "V4,dev-type tun,link-mtu 1534,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,\
             auth [null-digest],keysize 256,key-method 2,tls-client"
        );
        // A CBC cipher outside data-ciphers is not announced; TCP adds 2 to link-mtu; stub
        // compression adds `comp-lzo` and one byte.
        assert_eq!(
            with("proto tcp\ncipher AES-256-CBC\nauth SHA256\ncomp-lzo no\n"),
            "V4,dev-type tun,link-mtu 1572,tun-mtu 1500,proto TCPv4_CLIENT,comp-lzo,\
             auth SHA256,keysize 256,key-method 2,tls-client"
        );
        assert_eq!(
            with("tun-mtu 1400\ncompress stub-v2\n"),
            "V4,dev-type tun,link-mtu 1441,tun-mtu 1400,proto UDPv4,comp-lzo,auth SHA1,\
             keysize 128,key-method 2,tls-client"
        );
    }

    #[test]
    fn control_keymethod_default_peer_info_announces_what_is_implemented() {
        let profile = profile(
            "client\nremote vpn.example.net\nca ca.crt\nauth-user-pass\n\
             data-ciphers CHACHA20-POLY1305:AES-256-GCM\n",
        );
        let text = peer_info(&profile, &PeerInfoParams::default());
        assert!(text.contains("\nIV_PROTO=142\n"), "{text}");
        // IV_NCP=2 needs both AES-GCM sizes.
        assert!(!text.contains("IV_NCP"), "{text}");
        assert!(text.contains("\nIV_CIPHERS=CHACHA20-POLY1305:AES-256-GCM\n"));
        assert!(text.ends_with("IV_COMP_STUBv2=1\n"));
    }

    #[test]
    fn control_keymethod_parses_server_message_and_finds_push_reply() {
        let captured = unhex(UDP_S2C);
        let (message, used) = parse_server_message(&captured).unwrap().unwrap();
        assert_eq!(used, 178);
        assert_eq!(
            message.options,
            "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,\
             key-method 2,tls-server"
        );
        assert_eq!(message.key_source.random1[..], captured[5..37]);
        assert_eq!(message.key_source.random2[..], captured[37..69]);
        assert!(message.peer_info.is_empty());
        let rest = &captured[used..];
        assert!(rest.starts_with(b"PUSH_REPLY,dhcp-option DNS 10.8.0.1,"));
        assert_eq!(rest.last(), Some(&0));

        let captured = unhex(AUTH_S2C);
        let (message, _) = parse_server_message(&captured).unwrap().unwrap();
        assert!(message.options.contains(",comp-lzo,keydir 0,auth SHA512,"));
    }

    #[test]
    fn control_keymethod_server_message_incomplete_and_bad() {
        let captured = unhex(UDP_S2C);
        for cut in 0..178 {
            assert_eq!(
                parse_server_message(&captured[..cut]),
                Ok(None),
                "cut {cut}"
            );
        }
        let mut bad = captured.clone();
        bad[4] = 1;
        assert_eq!(
            parse_server_message(&bad),
            Err(KeyMethodError::UnsupportedKeyMethod(1))
        );
        bad[0] = 1;
        assert_eq!(parse_server_message(&bad), Err(KeyMethodError::BadPrefix));
        assert_eq!(
            parse_server_message(b"PUSH"),
            Err(KeyMethodError::BadPrefix)
        );
        // An options string without its NUL.
        let mut no_nul = captured[..69].to_vec();
        no_nul.extend_from_slice(&[0, 2, b'V', b'4', 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse_server_message(&no_nul),
            Err(KeyMethodError::BadString("options string"))
        );
    }

    #[test]
    fn control_keymethod_refuses_what_openvpn_refuses() {
        let source = ClientKeySource::generate(&mut erebus_sansio::Seed::from_byte(1).rng());
        let mut out = Vec::new();
        let long = "x".repeat(MAX_OPTIONS_LEN);
        assert!(matches!(
            encode_client_message(&source, &long, None, "", &mut out),
            Err(KeyMethodError::TooLong { len: 513, .. })
        ));
        assert_eq!(
            encode_client_message(&source, "V4", None, "a\0b", &mut out),
            Err(KeyMethodError::ContainsNul("peer-info"))
        );
        // 117 bytes of header and randoms, 5 of options, 4 of empty credentials, 1933 of
        // peer-info.
        let huge = "y".repeat(1930);
        assert_eq!(
            encode_client_message(&source, "V4", None, &huge, &mut out),
            Err(KeyMethodError::MessageTooLong(2059))
        );
    }

    proptest! {
        #[test]
        fn control_keymethod_server_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_server_message(&bytes);
        }

        #[test]
        fn control_keymethod_server_message_roundtrip(
            r1 in any::<[u8; 32]>(), r2 in any::<[u8; 32]>(),
            options in "[ -~]{1,100}", peer in "[ -~\n]{0,100}",
        ) {
            // A server message is a client message without the pre-master.
            let mut msg = vec![0, 0, 0, 0, 2];
            msg.extend_from_slice(&r1);
            msg.extend_from_slice(&r2);
            write_string(&mut msg, "o", &options, 600).unwrap();
            msg.extend_from_slice(&[0, 0, 0, 0]);
            write_string(&mut msg, "p", &peer, 600).unwrap();
            let (parsed, used) = parse_server_message(&msg).unwrap().unwrap();
            prop_assert_eq!(used, msg.len());
            prop_assert_eq!(parsed.key_source.random1, r1);
            prop_assert_eq!(parsed.key_source.random2, r2);
            prop_assert_eq!(parsed.options, options);
            prop_assert_eq!(parsed.peer_info, peer);
        }
    }
}
