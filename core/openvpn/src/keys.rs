//! OpenVPN static keys: the `OpenVPN Static key V1` file format shared by `--secret`,
//! `--tls-auth` and `--tls-crypt`, its slicing into two key slots, and key directions.
//!
//! A static key is 256 bytes, read as two [`KeySlot`]s of 128 bytes: a 64-byte cipher key and a
//! 64-byte HMAC key each. An algorithm uses the first bytes of a slot it needs (32 for AES-256,
//! 20 for HMAC-SHA1, ...). The key direction decides which slot encrypts and which decrypts.
//!
//! Every key type here zeroizes itself on drop and prints no key bytes in `Debug`.

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Bytes in one half (cipher or HMAC) of a key slot.
pub const KEY_HALF_LEN: usize = 64;

/// One direction's keys: a 64-byte cipher key slot and a 64-byte HMAC key slot (OpenVPN's
/// `struct key`).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct KeySlot {
    cipher: [u8; KEY_HALF_LEN],
    hmac: [u8; KEY_HALF_LEN],
}

impl KeySlot {
    /// A slot from its two halves.
    pub const fn new(cipher: [u8; KEY_HALF_LEN], hmac: [u8; KEY_HALF_LEN]) -> Self {
        Self { cipher, hmac }
    }

    /// The cipher key slot; a cipher uses its first key-length bytes.
    pub const fn cipher_key(&self) -> &[u8; KEY_HALF_LEN] {
        &self.cipher
    }

    /// The HMAC key slot; an HMAC uses its first digest-length bytes.
    pub const fn hmac_key(&self) -> &[u8; KEY_HALF_LEN] {
        &self.hmac
    }
}

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySlot(<secret>)")
    }
}

/// A 2048-bit OpenVPN static key: two key slots (OpenVPN's `struct key2`).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct StaticKey {
    slots: [KeySlot; 2],
}

/// Why text is not an OpenVPN static key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// No line starts with `-----BEGIN OpenVPN Static key V1-----`.
    #[error("no line starts with \"{}\"", StaticKey::HEADER)]
    MissingHeader,
    /// A character other than a hex digit or white space inside the key.
    #[error("line {line}: {} inside the key", describe_byte(*.byte))]
    NonHex {
        /// 1-based line number.
        line: usize,
        /// The offending byte.
        byte: u8,
    },
    /// The key never ends with a `-----END OpenVPN Static key V1-----` line.
    #[error(
        "the key that starts after line {header_line} has no \"{}\" line",
        StaticKey::FOOTER
    )]
    MissingFooter {
        /// 1-based line number of the header line.
        header_line: usize,
    },
    /// Fewer than 256 bytes of key. OpenVPN 2.6 accepts nothing else, even in bidirectional mode.
    #[error("line {footer_line}: the key has {found} bytes, an OpenVPN static key has 256")]
    TooShort {
        /// Bytes found.
        found: usize,
        /// 1-based line number of the footer line.
        footer_line: usize,
    },
}

fn describe_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("non-hex character '{}'", char::from(byte))
    } else {
        format!("non-hex, unprintable character 0x{byte:02x}")
    }
}

impl StaticKey {
    /// Bytes in a static key.
    pub const LEN: usize = 2 * 2 * KEY_HALF_LEN;
    /// The line that opens a key.
    pub const HEADER: &'static str = "-----BEGIN OpenVPN Static key V1-----";
    /// The line that closes a key.
    pub const FOOTER: &'static str = "-----END OpenVPN Static key V1-----";

    /// A key from its 256 raw bytes: cipher 0, HMAC 0, cipher 1, HMAC 1, 64 bytes each.
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Self {
        let mut halves = [[0u8; KEY_HALF_LEN]; 4];
        for (half, chunk) in halves.iter_mut().zip(bytes.chunks_exact(KEY_HALF_LEN)) {
            half.copy_from_slice(chunk);
        }
        let [c0, h0, c1, h1] = halves;
        // The array above is moved into the slots; the copies left behind are plain arrays the
        // compiler may keep on the stack, so clear them explicitly.
        let key = Self {
            slots: [KeySlot::new(c0, h0), KeySlot::new(c1, h1)],
        };
        halves.zeroize();
        key
    }

    /// The 256 bytes of the key file, in its order: cipher 0, HMAC 0, cipher 1, HMAC 1.
    pub fn to_bytes(&self) -> Zeroizing<[u8; Self::LEN]> {
        let mut out = Zeroizing::new([0u8; Self::LEN]);
        let halves = [
            self.slots[0].cipher_key(),
            self.slots[0].hmac_key(),
            self.slots[1].cipher_key(),
            self.slots[1].hmac_key(),
        ];
        for (chunk, half) in out.chunks_exact_mut(KEY_HALF_LEN).zip(halves) {
            chunk.copy_from_slice(half);
        }
        out
    }

    /// Parses a static key file (or the body of an inline `<secret>`, `<tls-auth>` or
    /// `<tls-crypt>` block) the way OpenVPN 2.6 reads it:
    ///
    /// - everything before a line starting with the header is ignored (`#` comments, blank
    ///   lines, anything);
    /// - after it, hex digits are key bytes and white space (including `\r`) is ignored; two
    ///   digits make a byte even when white space separates them;
    /// - a line starting with `-` ends the key and must start with the footer;
    /// - after 256 bytes everything up to the footer is ignored;
    /// - fewer than 256 bytes is an error, as OpenVPN 2.6 accepts only full two-slot keys.
    ///
    /// # Errors
    ///
    /// A [`KeyFileError`] naming the line where the problem is.
    pub fn parse(text: &[u8]) -> Result<Self, KeyFileError> {
        let header = Self::HEADER.as_bytes();
        let footer = Self::FOOTER.as_bytes();

        #[derive(PartialEq)]
        enum State {
            BeforeHeader,
            HeaderLine,
            Data,
            DataComplete,
            Footer,
            Finished,
        }

        let mut state = State::BeforeHeader;
        let mut out = Zeroizing::new([0u8; Self::LEN]);
        let mut count = 0usize;
        let mut high_nibble: Option<u8> = None;
        let mut line = 1usize;
        let mut column = 0usize;
        let mut matched = 0usize;
        let mut header_line = 0usize;
        let mut footer_line = 0usize;

        for &byte in text {
            if state == State::Finished {
                break;
            }
            if byte == b'\n' {
                line += 1;
                column = 0;
                matched = 0;
                continue;
            }
            if column == 0 {
                if state == State::HeaderLine {
                    state = State::Data;
                }
                if matches!(state, State::Data | State::DataComplete) && byte == b'-' {
                    state = State::Footer;
                    footer_line = line;
                }
            }
            match state {
                State::BeforeHeader => {
                    if header.get(column) == Some(&byte) {
                        matched += 1;
                        if matched == header.len() {
                            state = State::HeaderLine;
                            header_line = line;
                        }
                    }
                }
                State::Footer => {
                    if footer.get(column) == Some(&byte) {
                        matched += 1;
                        if matched == footer.len() {
                            state = State::Finished;
                        }
                    }
                }
                State::Data => {
                    if let Some(nibble) = hex_value(byte) {
                        match high_nibble.take() {
                            None => high_nibble = Some(nibble),
                            Some(high) => {
                                if let Some(slot) = out.get_mut(count) {
                                    *slot = (high << 4) | nibble;
                                }
                                count += 1;
                                if count == Self::LEN {
                                    state = State::DataComplete;
                                }
                            }
                        }
                    } else if !byte.is_ascii_whitespace() && byte != 0x0b {
                        return Err(KeyFileError::NonHex { line, byte });
                    }
                }
                State::HeaderLine | State::DataComplete | State::Finished => {}
            }
            column += 1;
        }
        high_nibble.zeroize();

        match state {
            State::BeforeHeader => Err(KeyFileError::MissingHeader),
            State::Finished if count == Self::LEN => Ok(Self::from_bytes(&out)),
            State::Finished => Err(KeyFileError::TooShort {
                found: count,
                footer_line,
            }),
            _ => Err(KeyFileError::MissingFooter { header_line }),
        }
    }

    /// Key slot 0 or 1.
    pub fn slot(&self, index: KeySlotIndex) -> &KeySlot {
        match index {
            KeySlotIndex::Zero => &self.slots[0],
            KeySlotIndex::One => &self.slots[1],
        }
    }

    /// The slots that send and receive under `direction`.
    pub fn directional(&self, direction: KeyDirection) -> DirectionalKeys {
        DirectionalKeys {
            send: self.slot(direction.send_slot()).clone(),
            recv: self.slot(direction.recv_slot()).clone(),
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticKey(<secret>)")
    }
}

/// Which of the two slots of a [`StaticKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySlotIndex {
    /// Bytes 0..128.
    Zero,
    /// Bytes 128..256.
    One,
}

/// How the two slots of a static key are used (`--secret file [dir]`, `--key-direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum KeyDirection {
    /// No direction given: slot 0 both ways.
    #[default]
    Bidirectional,
    /// Direction `0` (conventionally the server): send with slot 0, receive with slot 1.
    Normal,
    /// Direction `1` (conventionally the client): send with slot 1, receive with slot 0.
    Inverse,
}

/// A key direction argument that is neither `0` nor `1`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown key direction '{0}': must be '0' or '1'")]
pub struct KeyDirectionError(pub String);

impl KeyDirection {
    /// Parses the optional direction argument as OpenVPN does: absent is bidirectional, `"0"`
    /// normal, `"1"` inverse.
    ///
    /// # Errors
    ///
    /// [`KeyDirectionError`] for anything else.
    pub fn from_arg(arg: Option<&str>) -> Result<Self, KeyDirectionError> {
        match arg {
            None => Ok(Self::Bidirectional),
            Some("0") => Ok(Self::Normal),
            Some("1") => Ok(Self::Inverse),
            Some(other) => Err(KeyDirectionError(other.to_owned())),
        }
    }

    /// The argument that selects this direction (`None` for bidirectional).
    pub const fn as_arg(self) -> Option<&'static str> {
        match self {
            Self::Bidirectional => None,
            Self::Normal => Some("0"),
            Self::Inverse => Some("1"),
        }
    }

    /// The direction the other end must use for the keys to match.
    pub const fn peer(self) -> Self {
        match self {
            Self::Bidirectional => Self::Bidirectional,
            Self::Normal => Self::Inverse,
            Self::Inverse => Self::Normal,
        }
    }

    /// The slot this end encrypts and signs with.
    pub const fn send_slot(self) -> KeySlotIndex {
        match self {
            Self::Bidirectional | Self::Normal => KeySlotIndex::Zero,
            Self::Inverse => KeySlotIndex::One,
        }
    }

    /// The slot this end decrypts and verifies with.
    pub const fn recv_slot(self) -> KeySlotIndex {
        match self {
            Self::Bidirectional | Self::Inverse => KeySlotIndex::Zero,
            Self::Normal => KeySlotIndex::One,
        }
    }
}

/// The two key slots one end uses: one to send, one to receive.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct DirectionalKeys {
    /// Encrypts and signs outgoing packets.
    pub send: KeySlot,
    /// Decrypts and verifies incoming packets.
    pub recv: KeySlot,
}

impl fmt::Debug for DirectionalKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectionalKeys(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CAPTURE_KEY: &str = include_str!("../../../testvectors/captures/static-key/static.key");

    fn key_text(bytes: &[u8]) -> String {
        let mut text = String::from("#\n# 2048 bit OpenVPN static key\n#\n");
        text.push_str(StaticKey::HEADER);
        text.push('\n');
        for chunk in bytes.chunks(16) {
            for byte in chunk {
                text.push_str(&format!("{byte:02x}"));
            }
            text.push('\n');
        }
        text.push_str(StaticKey::FOOTER);
        text.push('\n');
        text
    }

    fn counting_bytes() -> [u8; 256] {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn capture_key_slices() {
        let key = StaticKey::parse(CAPTURE_KEY.as_bytes()).unwrap();
        // First line of the file is cipher slot 0; line 9 (bytes 128..144) starts cipher slot 1.
        let lines: Vec<&str> = CAPTURE_KEY
            .lines()
            .skip_while(|l| !l.starts_with("-----BEGIN"))
            .skip(1)
            .take(16)
            .collect();
        let first = hex_line(lines[0]);
        assert_eq!(&key.slot(KeySlotIndex::Zero).cipher_key()[..16], &first[..]);
        assert_eq!(
            &key.slot(KeySlotIndex::Zero).hmac_key()[..16],
            &hex_line(lines[4])[..]
        );
        assert_eq!(
            &key.slot(KeySlotIndex::One).cipher_key()[..16],
            &hex_line(lines[8])[..]
        );
        assert_eq!(
            &key.slot(KeySlotIndex::One).hmac_key()[48..],
            &hex_line(lines[15])[..]
        );
    }

    fn hex_line(line: &str) -> Vec<u8> {
        (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn parse_roundtrips_generated_text() {
        let bytes = counting_bytes();
        let key = StaticKey::parse(key_text(&bytes).as_bytes()).unwrap();
        assert_eq!(key, StaticKey::from_bytes(&bytes));
        assert_eq!(key.slot(KeySlotIndex::Zero).cipher_key()[0], 0);
        assert_eq!(key.slot(KeySlotIndex::Zero).hmac_key()[0], 64);
        assert_eq!(key.slot(KeySlotIndex::One).cipher_key()[0], 128);
        assert_eq!(key.slot(KeySlotIndex::One).hmac_key()[63], 255);
    }

    #[test]
    fn parse_is_tolerant_like_openvpn() {
        let bytes = counting_bytes();
        let text = key_text(&bytes);
        // CRLF line ends, upper-case hex, digits split by white space, text after the header
        // and footer on their lines, junk after the footer.
        let mut messy = text.replace('\n', "\r\n").to_uppercase();
        messy = messy.replace(
            "-----BEGIN OPENVPN STATIC KEY V1-----",
            "-----BEGIN OpenVPN Static key V1----- trailing words",
        );
        messy = messy.replace(
            "-----END OPENVPN STATIC KEY V1-----",
            "-----END OpenVPN Static key V1-----\nanything at all",
        );
        messy = messy.replacen("0001", "0 0\t01", 1);
        messy = messy.replace("# 2048 BIT", "# 2048 bit");
        assert_eq!(
            StaticKey::parse(messy.as_bytes()).unwrap(),
            StaticKey::from_bytes(&bytes)
        );
        // Extra key material beyond 256 bytes is ignored, whatever it is.
        let longer = text.replace(
            StaticKey::FOOTER,
            &format!("ffff not even hex\n{}", StaticKey::FOOTER),
        );
        assert_eq!(
            StaticKey::parse(longer.as_bytes()).unwrap(),
            StaticKey::from_bytes(&bytes)
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let text = key_text(&counting_bytes());
        assert_eq!(
            StaticKey::parse(b"# nothing here\n"),
            Err(KeyFileError::MissingHeader)
        );
        // Header with a typo on the line: not a header.
        assert_eq!(
            StaticKey::parse(text.replace("BEGIN", "BEGlN").as_bytes()),
            Err(KeyFileError::MissingHeader)
        );
        // A `#` comment inside the key is not allowed (line 6: 3 comment lines, header, 1 data).
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(5, "# comment");
        let commented = lines.join("\n");
        assert_eq!(
            StaticKey::parse(commented.as_bytes()),
            Err(KeyFileError::NonHex {
                line: 6,
                byte: b'#'
            })
        );
        let err = StaticKey::parse(commented.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 6: non-hex character '#' inside the key"
        );
        let unprintable = text.replacen("00010203", "0001\x7f0203", 1);
        assert_eq!(
            StaticKey::parse(unprintable.as_bytes())
                .unwrap_err()
                .to_string(),
            "line 5: non-hex, unprintable character 0x7f inside the key"
        );
        assert_eq!(
            StaticKey::parse(text.replace(StaticKey::FOOTER, "").as_bytes()),
            Err(KeyFileError::MissingFooter { header_line: 4 })
        );
        // A bad footer line does not end the key either.
        assert_eq!(
            StaticKey::parse(text.replace("-----END", "-----ENX").as_bytes()),
            Err(KeyFileError::MissingFooter { header_line: 4 })
        );
        // One key (128 bytes) is not enough for OpenVPN 2.6.
        let one_key = key_text(&counting_bytes()[..128]);
        assert_eq!(
            StaticKey::parse(one_key.as_bytes()),
            Err(KeyFileError::TooShort {
                found: 128,
                footer_line: 13
            })
        );
    }

    #[test]
    fn directions_pick_slots_as_openvpn() {
        let key = StaticKey::from_bytes(&counting_bytes());
        let slot0 = key.slot(KeySlotIndex::Zero).clone();
        let slot1 = key.slot(KeySlotIndex::One).clone();
        let bidi = key.directional(KeyDirection::Bidirectional);
        assert_eq!((&bidi.send, &bidi.recv), (&slot0, &slot0));
        let normal = key.directional(KeyDirection::Normal);
        assert_eq!((&normal.send, &normal.recv), (&slot0, &slot1));
        let inverse = key.directional(KeyDirection::Inverse);
        assert_eq!((&inverse.send, &inverse.recv), (&slot1, &slot0));
        // The two ends of a matched pair send what the other receives.
        for dir in [
            KeyDirection::Bidirectional,
            KeyDirection::Normal,
            KeyDirection::Inverse,
        ] {
            let mine = key.directional(dir);
            let theirs = key.directional(dir.peer());
            assert_eq!(mine.send, theirs.recv);
            assert_eq!(mine.recv, theirs.send);
        }
        assert_eq!(
            KeyDirection::from_arg(None),
            Ok(KeyDirection::Bidirectional)
        );
        assert_eq!(KeyDirection::from_arg(Some("0")), Ok(KeyDirection::Normal));
        assert_eq!(KeyDirection::from_arg(Some("1")), Ok(KeyDirection::Inverse));
        assert!(KeyDirection::from_arg(Some("2")).is_err());
        assert_eq!(KeyDirection::Inverse.as_arg(), Some("1"));
    }

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = StaticKey::parse(CAPTURE_KEY.as_bytes()).unwrap();
        let dirs = key.directional(KeyDirection::Inverse);
        for text in [
            format!("{key:?}"),
            format!("{dirs:?}"),
            format!("{:?}", dirs.send),
        ] {
            assert!(text.contains("<secret>"), "{text}");
            assert!(!text.contains("e2"), "{text}");
        }
    }

    #[test]
    fn zeroize_clears_key() {
        let mut key = StaticKey::from_bytes(&[0xa5; 256]);
        key.zeroize();
        assert_eq!(key, StaticKey::from_bytes(&[0; 256]));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = StaticKey::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_after_header(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let mut text = StaticKey::HEADER.as_bytes().to_vec();
            text.push(b'\n');
            text.extend_from_slice(&bytes);
            let _ = StaticKey::parse(&text);
        }

        #[test]
        fn parse_reads_any_key(bytes in proptest::collection::vec(any::<u8>(), 256)) {
            let array: [u8; 256] = bytes.as_slice().try_into().unwrap();
            prop_assert_eq!(
                StaticKey::parse(key_text(&array).as_bytes()).unwrap(),
                StaticKey::from_bytes(&array)
            );
        }
    }
}
