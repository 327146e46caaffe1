//! strongSwan's `swanctl.conf`: the road-warrior subset, read into a [`Connection`].
//!
//! The text is strongSwan's settings syntax: sections `name { ... }` (reopening a section
//! merges into it), `key = value` to the end of the line (later keys override earlier ones),
//! double-quoted values with `\"`, `\\`, `\n`, `\r`, `\t` escapes that may span lines, `#`
//! comments, and `include PATH` lines at any level. Glob patterns in `include` are refused.
//!
//! The parser reads no files itself: an `include`, a certificate or a key file named by the
//! configuration is read through a [`FileReader`] callback, by its path as written (certificates
//! and keys first under swanctl's directories, `x509/`, `x509ca/`, `private/`, ...). An option
//! erebus accepts but does not use yields one [`Warning`]; an option erebus cannot honour, an
//! unknown option or a bad value is a [`SwanctlError`] naming the file, the line and the option.
//!
//! Secrets come from the file's `secrets` section as swanctl loads them: the PSK is the
//! `ike-*` secret whose ids best match the remote and then the local identity (strongSwan's
//! ranking; a secret without ids matches anyone, weakly), the EAP password the `eap-*` (or
//! `xauth-*`) secret for the EAP identity, the private key a `private-*` (`rsa-*`, `ecdsa-*`,
//! `pkcs8-*`) file or, failing that, `private/<certificate name>.pem` and its siblings. swanctl
//! also trusts every certificate in its `x509ca/` directory; the parser cannot list a directory,
//! so a caller that wants this passes them in [`LoadOptions`]. The server's certificate is
//! always verified: a connection whose server authenticates by certificate needs
//! `remote.cacerts` or those.
//!
//! ```
//! use erebus_ipsec::config::AuthMethod;
//! use erebus_ipsec::swanctl;
//!
//! let text = br#"
//! connections {
//!     home {
//!         remote_addrs = vpn.example.net
//!         vips = 0.0.0.0
//!         local { auth = psk
//!                 id = me@example.net }
//!         remote { auth = psk
//!                  id = vpn.example.net }
//!         children { net { remote_ts = 10.0.0.0/8 } }
//!     }
//! }
//! secrets { ike-home { id = me@example.net
//!                      secret = "not so secret" } }
//! "#;
//! let mut no_files = |path: &std::path::Path| Err(format!("no file {}", path.display()));
//! let (conn, warnings) = swanctl::load(text, "swanctl.conf", None, &mut no_files).unwrap();
//! assert_eq!(conn.name, "home");
//! assert_eq!(conn.local.auth, AuthMethod::Psk);
//! assert_eq!(conn.psk.unwrap().expose(), b"not so secret");
//! assert!(warnings.is_empty());
//! ```

use crate::esp::MAX_REPLAY_WINDOW;
use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use erebus_sansio::tunnel::IpNet;
use zeroize::Zeroizing;

use crate::config::{
    AuthMethod, ChildConfig, Connection, DEFAULT_REPLAY_WINDOW, LocalSide, RemoteSide, Secret,
    Warning,
};
use crate::proposal::{DhGroup, Encr, Integ, Prf, Proposal};

/// Reads a file the configuration names, by path as written (relative paths: the caller
/// resolves them against the configuration's directory). Error: a sentence.
pub type FileReader<'a> = dyn FnMut(&Path) -> Result<Zeroizing<Vec<u8>>, String> + 'a;

/// Why a swanctl.conf cannot be used. `Display` gives the whole sentence, with the file and
/// the line where there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SwanctlError {
    /// The text is not in the settings syntax, or an `include` cannot be followed.
    #[error("{file}: line {line}: {message}")]
    Syntax {
        /// The file (the configuration or an included file).
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An option is unknown, has a bad value, or asks for something erebus does not do.
    #[error("{file}: line {line}: {key}: {message}")]
    Option {
        /// The file the option is in.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The option's dotted path, such as `connections.home.proposals`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The connection asked for is not in the file, or the file has none, or several and none
    /// was named.
    #[error("{file}: {message}")]
    Connection {
        /// The configuration file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

impl SwanctlError {
    /// The line the error is on, when it is about one line.
    pub const fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { line, .. } | Self::Option { line, .. } => Some(*line),
            Self::Connection { .. } => None,
        }
    }
}

/// Which kind of proposal a string is: for the IKE_SA (`proposals`) or for ESP
/// (`esp_proposals`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalKind {
    /// An IKE proposal: encryption, PRF (or an integrity keyword implying it), key exchange.
    Ike,
    /// An ESP proposal: encryption, integrity for non-AEAD ciphers, optional PFS group and ESN.
    Esp,
}

/// What `swanctl --load-all` loads besides swanctl.conf and that only the caller can list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The certificates in swanctl's `x509ca/` directory, PEM or DER. swanctl trusts them for
    /// every connection; erebus uses them when the selected connection authenticates the
    /// server by certificate and sets no `remote.cacerts`.
    pub x509ca: Vec<Secret>,
}

/// The names of the connections in the file (after includes), in order.
pub fn connection_names(
    bytes: &[u8],
    name: &str,
    files: &mut FileReader<'_>,
) -> Result<Vec<String>, SwanctlError> {
    let tree = parse_tree(bytes, name, files)?;
    Ok(tree
        .root
        .section("connections")
        .map(|conns| conns.sections.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default())
}

/// Parses `bytes` (the file called `name` in messages), picks `connection` (None: the file must
/// have exactly one connection, else an error listing the names), reads the files it names
/// through `files`, and returns the connection with its secrets plus one warning per
/// accepted-but-ignored option.
pub fn load(
    bytes: &[u8],
    name: &str,
    connection: Option<&str>,
    files: &mut FileReader<'_>,
) -> Result<(Connection, Vec<Warning>), SwanctlError> {
    load_with_options(bytes, name, connection, files, &LoadOptions::default())
}

/// [`load`], with what the caller found in swanctl's directories (see [`LoadOptions`]).
pub fn load_with_options(
    bytes: &[u8],
    name: &str,
    connection: Option<&str>,
    files: &mut FileReader<'_>,
    options: &LoadOptions,
) -> Result<(Connection, Vec<Warning>), SwanctlError> {
    let tree = parse_tree(bytes, name, files)?;
    let mut ctx = Ctx {
        names: &tree.names,
        files,
        warnings: Vec::new(),
    };
    let root = &tree.root;
    if let Some(e) = root.entries.first() {
        return Err(ctx.err(e.at, &e.key, "unknown option"));
    }
    let mut conns = None;
    let mut secrets = None;
    for s in &root.sections {
        match s.name.as_str() {
            "connections" => conns = Some(s),
            "secrets" => secrets = Some(s),
            "pools" => ctx.warn(
                s.at,
                &s.name,
                "ignored: address pools are for a server handing out addresses",
            ),
            "authorities" => ctx.warn(
                s.at,
                &s.name,
                "ignored: erebus does not fetch CRLs or use OCSP; put CA certificates in \
                 remote.cacerts",
            ),
            _ => return Err(ctx.err(s.at, &s.name, "unknown section")),
        }
    }
    let empty = Section::new(String::new(), At { file: 0, line: 1 });
    let conns = conns.unwrap_or(&empty);
    if let Some(e) = conns.entries.first() {
        return Err(ctx.err(e.at, &format!("connections.{}", e.key), "unknown option"));
    }
    let all: Vec<&str> = conns.sections.iter().map(|s| s.name.as_str()).collect();
    let conn = match connection {
        Some(wanted) => conns
            .sections
            .iter()
            .find(|s| s.name == wanted)
            .ok_or_else(|| SwanctlError::Connection {
                file: name.to_owned(),
                message: if all.is_empty() {
                    format!("no connection '{wanted}': the file defines no connections")
                } else {
                    format!(
                        "no connection '{wanted}' (the file has: {})",
                        all.join(", ")
                    )
                },
            })?,
        None => match conns.sections.as_slice() {
            [only] => only,
            [] => {
                return Err(SwanctlError::Connection {
                    file: name.to_owned(),
                    message: "no connections defined (connections { ... } is missing or empty)"
                        .to_owned(),
                });
            }
            _ => {
                return Err(SwanctlError::Connection {
                    file: name.to_owned(),
                    message: format!(
                        "the file has several connections ({}): name the one to use",
                        all.join(", ")
                    ),
                });
            }
        },
    };
    let connection = build_connection(&mut ctx, conn, secrets, options)?;
    Ok((connection, ctx.warnings))
}

// ---------------------------------------------------------------------------------------------
// Proposals
// ---------------------------------------------------------------------------------------------

/// Parses one proposal string as swanctl writes it: IKE (`aes256gcm16-prfsha256-x25519`,
/// `aes256-sha256-modp2048`, `chacha20poly1305-prfsha256-x25519`) or ESP (`aes256gcm16`,
/// `aes128gcm16-x25519`, `chacha20poly1305`, `aes256-sha256`, `...-esn`/`-noesn`).
///
/// `default` expands to strongSwan's default for that kind limited to what erebus supports.
/// That default is two proposals (AEAD ciphers, and AES-CBC with HMAC, which cannot share a
/// proposal): this function returns the first, the AEAD one; [`default_proposals`] gives both,
/// and a `proposals`/`esp_proposals` list in a file expands `default` to both.
///
/// In an IKE proposal an integrity keyword (`sha256`) also names the PRF when no `prf...`
/// keyword is given, as in strongSwan; next to an AEAD cipher it only names the PRF
/// (`aes256gcm16-sha256-x25519` is `aes256gcm16-prfsha256-x25519`). In an ESP proposal an
/// integrity algorithm next to an AEAD cipher is an error.
pub fn parse_proposal(text: &str, kind: ProposalKind) -> Result<Proposal, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("default") {
        return default_proposals(kind)
            .into_iter()
            .next()
            .ok_or_else(|| "no default proposal".to_owned());
    }
    if text.is_empty() {
        return Err("empty proposal".to_owned());
    }
    let mut p = Proposal::default();
    for word in text.split('-') {
        let lower = word.to_ascii_lowercase();
        if lower.is_empty() {
            return Err(format!("empty algorithm name in '{text}'"));
        }
        match keyword(&lower) {
            Some(Keyword::Encr(e)) => push_unique(&mut p.encr, e),
            Some(Keyword::Integ(i)) => push_unique(&mut p.integ, i),
            Some(Keyword::Prf(f)) => push_unique(&mut p.prf, f),
            Some(Keyword::Dh(d)) => push_unique(&mut p.dh, d),
            Some(Keyword::Esn(e)) => push_unique(&mut p.esn, e),
            None if UNSUPPORTED_ALGORITHMS.contains(&lower.as_str()) => {
                return Err(format!("algorithm '{word}' is not supported by erebus"));
            }
            None if lower == "default" => {
                return Err("'default' must stand alone, not inside a proposal".to_owned());
            }
            None => return Err(format!("unknown algorithm '{word}'")),
        }
    }
    let Some(&first) = p.encr.first() else {
        return Err(format!(
            "'{text}' has no encryption algorithm (such as aes256gcm16)"
        ));
    };
    let aead = first.is_aead();
    if p.encr.iter().any(|e| e.is_aead() != aead) {
        return Err(format!(
            "'{text}' mixes AEAD and non-AEAD (CBC) encryption in one proposal"
        ));
    }
    match kind {
        ProposalKind::Ike => {
            if let Some(esn) = p.esn.first() {
                let word = if *esn { "esn" } else { "noesn" };
                return Err(format!("'{word}' belongs in ESP proposals, not IKE"));
            }
            if p.prf.is_empty() {
                let implied: Vec<Prf> = p.integ.iter().map(|i| i.matching_prf()).collect();
                for prf in implied {
                    push_unique(&mut p.prf, prf);
                }
            }
            if aead {
                p.integ.clear();
            } else if p.integ.is_empty() {
                return Err(format!(
                    "'{text}': CBC encryption needs an integrity algorithm (such as sha256)"
                ));
            }
            if p.prf.is_empty() {
                return Err(format!("'{text}' has no PRF (such as prfsha256)"));
            }
            if p.dh.is_empty() {
                return Err(format!(
                    "'{text}' has no key exchange method (such as x25519)"
                ));
            }
        }
        ProposalKind::Esp => {
            if let Some(prf) = p.prf.first() {
                return Err(format!("'{prf}' belongs in IKE proposals, not ESP"));
            }
            if aead {
                if let Some(integ) = p.integ.first() {
                    return Err(format!(
                        "'{text}': the AEAD cipher {first} takes no integrity algorithm \
                         ('{integ}')"
                    ));
                }
            } else if p.integ.is_empty() {
                return Err(format!(
                    "'{text}': CBC encryption needs an integrity algorithm (such as sha256)"
                ));
            }
        }
    }
    Ok(p)
}

/// strongSwan's default proposals for `kind`, limited to what erebus supports: an AEAD
/// proposal (AES-GCM-256, AES-GCM-128, ChaCha20-Poly1305) and an AES-CBC with HMAC-SHA2 one;
/// IKE proposals offer PRFs HMAC-SHA2-256/384/512 and the groups x25519, ecp256 and modp2048.
pub fn default_proposals(kind: ProposalKind) -> Vec<Proposal> {
    let aead = vec![
        Encr::AesGcm16 { bits: 256 },
        Encr::AesGcm16 { bits: 128 },
        Encr::ChaCha20Poly1305,
    ];
    let cbc = vec![Encr::AesCbc { bits: 256 }, Encr::AesCbc { bits: 128 }];
    let integ = vec![
        Integ::HmacSha256_128,
        Integ::HmacSha384_192,
        Integ::HmacSha512_256,
    ];
    match kind {
        ProposalKind::Ike => {
            let prf = vec![Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512];
            let dh = vec![DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Modp2048];
            vec![
                Proposal {
                    encr: aead,
                    prf: prf.clone(),
                    dh: dh.clone(),
                    ..Proposal::default()
                },
                Proposal {
                    encr: cbc,
                    integ,
                    prf,
                    dh,
                    ..Proposal::default()
                },
            ]
        }
        ProposalKind::Esp => vec![
            Proposal {
                encr: aead,
                ..Proposal::default()
            },
            Proposal {
                encr: cbc,
                integ,
                ..Proposal::default()
            },
        ],
    }
}

/// A comma (or space) separated list of proposals; `default` expands to both defaults; an
/// empty list is `default`.
fn parse_proposal_list(value: &str, kind: ProposalKind) -> Result<Vec<Proposal>, String> {
    let mut out = Vec::new();
    for item in list(value) {
        if item.eq_ignore_ascii_case("default") {
            out.extend(default_proposals(kind));
        } else {
            out.push(parse_proposal(item, kind)?);
        }
    }
    if out.is_empty() {
        out = default_proposals(kind);
    }
    Ok(out)
}

enum Keyword {
    Encr(Encr),
    Integ(Integ),
    Prf(Prf),
    Dh(DhGroup),
    Esn(bool),
}

fn keyword(word: &str) -> Option<Keyword> {
    Some(match word {
        "aes128gcm16" | "aes128gcm" | "aes128gcm128" => Keyword::Encr(Encr::AesGcm16 { bits: 128 }),
        "aes256gcm16" | "aes256gcm" | "aes256gcm128" => Keyword::Encr(Encr::AesGcm16 { bits: 256 }),
        "chacha20poly1305" => Keyword::Encr(Encr::ChaCha20Poly1305),
        "aes128" | "aes" => Keyword::Encr(Encr::AesCbc { bits: 128 }),
        "aes256" => Keyword::Encr(Encr::AesCbc { bits: 256 }),
        "sha256" | "sha2_256" => Keyword::Integ(Integ::HmacSha256_128),
        "sha384" | "sha2_384" => Keyword::Integ(Integ::HmacSha384_192),
        "sha512" | "sha2_512" => Keyword::Integ(Integ::HmacSha512_256),
        "prfsha256" => Keyword::Prf(Prf::HmacSha256),
        "prfsha384" => Keyword::Prf(Prf::HmacSha384),
        "prfsha512" => Keyword::Prf(Prf::HmacSha512),
        "x25519" | "curve25519" => Keyword::Dh(DhGroup::Curve25519),
        "ecp256" => Keyword::Dh(DhGroup::Ecp256),
        "modp2048" => Keyword::Dh(DhGroup::Modp2048),
        "esn" => Keyword::Esn(true),
        "noesn" => Keyword::Esn(false),
        _ => return None,
    })
}

/// strongSwan keywords erebus knows but does not implement, for a clearer message.
const UNSUPPORTED_ALGORITHMS: &[&str] = &[
    "aes192",
    "aes192gcm16",
    "aes192gcm",
    "aes192gcm128",
    "aes128gcm8",
    "aes128gcm64",
    "aes128gcm12",
    "aes128gcm96",
    "aes256gcm8",
    "aes256gcm64",
    "aes256gcm12",
    "aes256gcm96",
    "aes128ccm8",
    "aes128ccm12",
    "aes128ccm16",
    "aes256ccm8",
    "aes256ccm12",
    "aes256ccm16",
    "aes128ctr",
    "aes192ctr",
    "aes256ctr",
    "aes128gmac",
    "aes256gmac",
    "3des",
    "des",
    "blowfish",
    "cast128",
    "camellia",
    "camellia128",
    "camellia192",
    "camellia256",
    "serpent",
    "twofish",
    "null",
    "md5",
    "md5_128",
    "sha",
    "sha1",
    "sha1_160",
    "sha256_96",
    "sha2_256_96",
    "aesxcbc",
    "aescmac",
    "prfmd5",
    "prfsha1",
    "prfaesxcbc",
    "prfaescmac",
    "modp768",
    "modp1024",
    "modp1536",
    "modp3072",
    "modp4096",
    "modp6144",
    "modp8192",
    "modp1024s160",
    "modp2048s224",
    "modp2048s256",
    "ecp192",
    "ecp224",
    "ecp384",
    "ecp521",
    "ecp224bp",
    "ecp256bp",
    "ecp384bp",
    "ecp512bp",
    "x448",
    "curve448",
];

fn push_unique<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax: lexer
// ---------------------------------------------------------------------------------------------

/// How deep `include` may nest (a file including itself stops here).
const MAX_INCLUDE_DEPTH: usize = 16;
/// How deep sections may nest.
const MAX_SECTION_DEPTH: usize = 32;

enum Tok {
    /// A key or section name.
    Name(String),
    /// `=` and the value after it (`None`: nothing before the end of the line).
    Eq(Option<Zeroizing<String>>),
    Open,
    Close,
    Newline,
    /// `include` and its path.
    Include(String),
}

struct Token {
    tok: Tok,
    line: usize,
}

struct LexError {
    line: usize,
    message: String,
}

struct Lexer<'t> {
    b: &'t [u8],
    i: usize,
    line: usize,
}

const fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t')
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn error(&self, line: usize, message: impl Into<String>) -> LexError {
        LexError {
            line,
            message: message.into(),
        }
    }

    /// The bytes from here while `keep` holds.
    fn word(&mut self, keep: impl Fn(u8) -> bool) -> String {
        let start = self.i;
        while self.peek().is_some_and(&keep) {
            self.i += 1;
        }
        String::from_utf8_lossy(self.b.get(start..self.i).unwrap_or_default()).into_owned()
    }

    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| c != b'\n') {
            self.i += 1;
        }
    }

    fn run(mut self) -> Result<Vec<Token>, LexError> {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            let line = self.line;
            match c {
                b'#' => self.skip_comment(),
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'\n' => {
                    out.push(Token {
                        tok: Tok::Newline,
                        line,
                    });
                    self.line += 1;
                    self.i += 1;
                }
                b'{' => {
                    self.i += 1;
                    out.push(Token {
                        tok: Tok::Open,
                        line,
                    });
                }
                b'}' => {
                    self.i += 1;
                    out.push(Token {
                        tok: Tok::Close,
                        line,
                    });
                }
                b'=' => {
                    self.i += 1;
                    let value = self.value()?;
                    out.push(Token {
                        tok: Tok::Eq(value),
                        line,
                    });
                }
                b'"' => {
                    return Err(self.error(
                        line,
                        "unexpected quoted string: quotes are only allowed in values, after '='",
                    ));
                }
                _ => {
                    let word = self.word(|c| {
                        !matches!(
                            c,
                            b'#' | b'{' | b'}' | b'=' | b'"' | b'\r' | b'\n' | b'\t' | b' '
                        )
                    });
                    if word == "include" && self.include_follows() {
                        let path = self.include_path()?;
                        out.push(Token {
                            tok: Tok::Include(path),
                            line,
                        });
                    } else {
                        out.push(Token {
                            tok: Tok::Name(word),
                            line,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// After the word `include`: whitespace and then anything but `=` (else it is a key).
    fn include_follows(&self) -> bool {
        if !self.peek().is_some_and(is_space) {
            return false;
        }
        let mut j = self.i;
        while self.b.get(j).copied().is_some_and(is_space) {
            j += 1;
        }
        self.b.get(j) != Some(&b'=')
    }

    fn include_path(&mut self) -> Result<String, LexError> {
        let line = self.line;
        while self.peek().is_some_and(is_space) {
            self.i += 1;
        }
        let mut path = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'#' | b'}' | b'\n' | b'\t' | b' ') => break,
                Some(b'\r') => self.i += 1,
                Some(b'"') => {
                    self.i += 1;
                    path.extend_from_slice(self.string()?.as_bytes());
                    break;
                }
                Some(b'\\') => {
                    match self.b.get(self.i + 1).copied() {
                        Some(c @ (b'"' | b'#' | b'}' | b' ')) => {
                            path.push(c);
                            self.i += 2;
                        }
                        _ => {
                            path.push(b'\\');
                            self.i += 1;
                        }
                    };
                }
                Some(c) => {
                    path.push(c);
                    self.i += 1;
                }
            }
        }
        if path.is_empty() {
            return Err(self.error(line, "include needs a file name"));
        }
        String::from_utf8(path).map_err(|_| self.error(line, "include: the path is not UTF-8"))
    }

    /// The value after `=`: words and quoted strings up to the end of the line, a `#` or a
    /// `}`, joined by single spaces.
    fn value(&mut self) -> Result<Option<Zeroizing<String>>, LexError> {
        let mut out = Zeroizing::new(String::new());
        let mut any = false;
        loop {
            match self.peek() {
                None | Some(b'#' | b'}' | b'\n') => break,
                Some(b' ' | b'\t' | b'\r') => self.i += 1,
                Some(b'"') => {
                    self.i += 1;
                    let s = self.string()?;
                    if any {
                        out.push(' ');
                    }
                    out.push_str(&s);
                    any = true;
                }
                Some(_) => {
                    let w =
                        Zeroizing::new(self.word(|c| {
                            !matches!(c, b'#' | b'}' | b'"' | b'\r' | b'\n' | b'\t' | b' ')
                        }));
                    if any {
                        out.push(' ');
                    }
                    out.push_str(&w);
                    any = true;
                }
            }
        }
        Ok(any.then_some(out))
    }

    /// A quoted string, after its opening quote.
    fn string(&mut self) -> Result<Zeroizing<String>, LexError> {
        let start = self.line;
        let mut buf = Zeroizing::new(Vec::new());
        loop {
            match self.peek() {
                None => return Err(self.error(start, "unterminated quoted string")),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        None => return Err(self.error(start, "unterminated quoted string")),
                        Some(b'n') => buf.push(b'\n'),
                        Some(b'r') => buf.push(b'\r'),
                        Some(b't') => buf.push(b'\t'),
                        Some(b'\n') => self.line += 1,
                        Some(b'\r') if self.b.get(self.i + 1) == Some(&b'\n') => {
                            self.i += 1;
                            self.line += 1;
                        }
                        Some(c) => buf.push(c),
                    }
                    self.i += 1;
                }
                Some(b'\r') => self.i += 1,
                Some(c) => {
                    if c == b'\n' {
                        self.line += 1;
                    }
                    buf.push(c);
                    self.i += 1;
                }
            }
        }
        let bytes = core::mem::take(&mut *buf);
        String::from_utf8(bytes)
            .map(Zeroizing::new)
            .map_err(|_| self.error(start, "the quoted string is not UTF-8"))
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax: sections
// ---------------------------------------------------------------------------------------------

/// Where something is: an index into the file names, and a 1-based line.
#[derive(Clone, Copy, Debug)]
struct At {
    file: usize,
    line: usize,
}

struct Entry {
    key: String,
    value: Zeroizing<String>,
    at: At,
}

struct Section {
    name: String,
    at: At,
    entries: Vec<Entry>,
    sections: Vec<Self>,
}

impl Section {
    const fn new(name: String, at: At) -> Self {
        Self {
            name,
            at,
            entries: Vec::new(),
            sections: Vec::new(),
        }
    }

    /// Sets a key; a later one overrides an earlier one, keeping its place.
    fn set(&mut self, key: &str, value: Zeroizing<String>, at: At) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            e.value = value;
            e.at = at;
        } else {
            self.entries.push(Entry {
                key: key.to_owned(),
                value,
                at,
            });
        }
    }

    /// The subsection called `name`, created if new (reopening a section merges into it).
    fn child_mut(&mut self, name: &str, at: At) -> &mut Self {
        let pos = match self.sections.iter().position(|s| s.name == name) {
            Some(pos) => pos,
            None => {
                self.sections.push(Self::new(name.to_owned(), at));
                self.sections.len() - 1
            }
        };
        &mut self.sections[pos]
    }

    fn section(&self, name: &str) -> Option<&Self> {
        self.sections.iter().find(|s| s.name == name)
    }
}

struct Tree {
    /// File names for messages; 0 is the configuration itself.
    names: Vec<String>,
    root: Section,
}

struct TreeParser<'f, 'r> {
    files: &'f mut FileReader<'r>,
    names: Vec<String>,
}

fn parse_tree(bytes: &[u8], name: &str, files: &mut FileReader<'_>) -> Result<Tree, SwanctlError> {
    let mut parser = TreeParser {
        files,
        names: Vec::new(),
    };
    let mut root = Section::new(String::new(), At { file: 0, line: 1 });
    parser.parse_file(bytes, name.to_owned(), &mut root, 0, 0)?;
    Ok(Tree {
        names: parser.names,
        root,
    })
}

impl TreeParser<'_, '_> {
    fn syntax(&self, file: usize, line: usize, message: impl Into<String>) -> SwanctlError {
        SwanctlError::Syntax {
            file: self.names.get(file).cloned().unwrap_or_default(),
            line,
            message: message.into(),
        }
    }

    fn parse_file(
        &mut self,
        bytes: &[u8],
        display: String,
        into: &mut Section,
        includes: usize,
        depth: usize,
    ) -> Result<(), SwanctlError> {
        let file = self.names.len();
        self.names.push(display);
        let text = core::str::from_utf8(bytes).map_err(|e| {
            let before = bytes.get(..e.valid_up_to()).unwrap_or_default();
            let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
            self.syntax(file, line, "not UTF-8 text")
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let tokens = Lexer {
            b: text.as_bytes(),
            i: 0,
            line: 1,
        }
        .run()
        .map_err(|e| self.syntax(file, e.line, e.message))?;
        let mut pos = 0;
        self.block(&tokens, &mut pos, into, file, None, includes, depth)
    }

    /// Statements until the `}` closing `open` (or the end of the file at the top).
    fn block(
        &mut self,
        tokens: &[Token],
        pos: &mut usize,
        section: &mut Section,
        file: usize,
        open: Option<(&str, usize)>,
        includes: usize,
        depth: usize,
    ) -> Result<(), SwanctlError> {
        loop {
            let Some(token) = tokens.get(*pos) else {
                return match open {
                    None => Ok(()),
                    Some((name, line)) => Err(self.syntax(
                        file,
                        line,
                        format!("section '{name}' is not closed: '}}' missing"),
                    )),
                };
            };
            *pos += 1;
            let line = token.line;
            match &token.tok {
                Tok::Newline => {}
                Tok::Close => {
                    return if open.is_some() {
                        Ok(())
                    } else {
                        Err(self.syntax(file, line, "unexpected '}': no section is open"))
                    };
                }
                Tok::Open => {
                    return Err(self.syntax(
                        file,
                        line,
                        "unexpected '{': a section needs a name before it",
                    ));
                }
                Tok::Eq(_) => {
                    return Err(self.syntax(
                        file,
                        line,
                        "unexpected '=': an option needs a name before it",
                    ));
                }
                Tok::Include(path) => self.include(path, line, file, section, includes, depth)?,
                Tok::Name(name) => {
                    let mut next = *pos;
                    while matches!(tokens.get(next).map(|t| &t.tok), Some(Tok::Newline)) {
                        next += 1;
                    }
                    match tokens.get(*pos).map(|t| &t.tok) {
                        Some(Tok::Eq(value)) => {
                            *pos += 1;
                            let value = value.clone().unwrap_or_default();
                            section.set(name, value, At { file, line });
                        }
                        _ if matches!(tokens.get(next).map(|t| &t.tok), Some(Tok::Open)) => {
                            *pos = next + 1;
                            if depth >= MAX_SECTION_DEPTH {
                                return Err(self.syntax(file, line, "sections nested too deeply"));
                            }
                            let child = section.child_mut(name, At { file, line });
                            self.block(
                                tokens,
                                pos,
                                child,
                                file,
                                Some((name, line)),
                                includes,
                                depth + 1,
                            )?;
                        }
                        _ => {
                            return Err(self.syntax(
                                file,
                                line,
                                format!("expected '=' or '{{' after '{name}'"),
                            ));
                        }
                    }
                }
            }
        }
    }

    fn include(
        &mut self,
        path: &str,
        line: usize,
        file: usize,
        section: &mut Section,
        includes: usize,
        depth: usize,
    ) -> Result<(), SwanctlError> {
        if path.contains(['*', '?', '[']) {
            return Err(self.syntax(
                file,
                line,
                format!("include {path}: globs are not supported in include; name one file"),
            ));
        }
        if includes >= MAX_INCLUDE_DEPTH {
            return Err(self.syntax(
                file,
                line,
                format!("include {path}: includes nested too deeply (does a file include itself?)"),
            ));
        }
        // Relative includes in the configuration go to the caller as written; in an included
        // file they are relative to that file's directory, as strongSwan resolves them.
        let written = Path::new(path);
        let resolved: PathBuf = match self.names.get(file) {
            Some(parent) if file != 0 && written.is_relative() => Path::new(parent)
                .parent()
                .map_or_else(|| written.to_path_buf(), |dir| dir.join(written)),
            _ => written.to_path_buf(),
        };
        let bytes = (self.files)(&resolved)
            .map_err(|e| self.syntax(file, line, format!("include {path}: {e}")))?;
        let display = resolved.to_string_lossy().into_owned();
        self.parse_file(&bytes, display, section, includes + 1, depth)
    }
}

// ---------------------------------------------------------------------------------------------
// Semantics
// ---------------------------------------------------------------------------------------------

struct Ctx<'a, 'r> {
    names: &'a [String],
    files: &'a mut FileReader<'r>,
    warnings: Vec<Warning>,
}

impl Ctx<'_, '_> {
    fn file(&self, at: At) -> String {
        self.names.get(at.file).cloned().unwrap_or_default()
    }

    fn err(&self, at: At, key: &str, message: impl Into<String>) -> SwanctlError {
        SwanctlError::Option {
            file: self.file(at),
            line: at.line,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn warn(&mut self, at: At, key: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: PathBuf::from(self.file(at)),
            line: at.line,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// Reads the first of `candidates` that can be read.
    fn read(&mut self, what: &str, candidates: &[PathBuf]) -> Result<Secret, String> {
        let mut last = String::new();
        for path in candidates {
            match (self.files)(path) {
                Ok(bytes) => return Ok(Secret::new(bytes.to_vec())),
                Err(e) => last = e,
            }
        }
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Err(format!(
            "cannot read {what} (tried {}): {last}",
            tried.join(", ")
        ))
    }

    /// Reads a file swanctl looks up in one of its directories: `dirs/<name>` then `<name>`;
    /// an absolute path as given.
    fn read_in(&mut self, what: &str, name: &str, dirs: &[&str]) -> Result<Secret, String> {
        let path = Path::new(name);
        let candidates: Vec<PathBuf> = if path.is_absolute() {
            vec![path.to_path_buf()]
        } else {
            dirs.iter()
                .map(|d| Path::new(d).join(path))
                .chain(core::iter::once(path.to_path_buf()))
                .collect()
        };
        self.read(&format!("{what} '{name}'"), &candidates)
    }
}

const GENERIC_IGNORED: &str = "ignored: erebus does not use this option";

/// A value, or `None` when it is empty (`key =`): strongSwan then uses the default.
fn val(e: &Entry) -> Option<&str> {
    let v = e.value.trim();
    (!v.is_empty()).then_some(v)
}

/// A list: comma or whitespace separated.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "enabled" | "1" => Ok(true),
        "no" | "false" | "disabled" | "0" => Ok(false),
        _ => Err(format!("expected yes or no, not '{v}'")),
    }
}

fn one_of(v: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(v)) {
        Ok(())
    } else {
        Err(format!("expected one of {}, not '{v}'", allowed.join(", ")))
    }
}

/// A duration as strongSwan reads one: an integer with an optional `s`, `m`, `h` or `d`.
fn parse_duration(v: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 30s, 10m, 4h or 1d, not '{v}'");
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let digits = v.get(..digits_end).unwrap_or_default();
    let rest = v.get(digits_end..).unwrap_or_default();
    if digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit = match rest.trim_start() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n
        .checked_mul(unit)
        .filter(|&s| s <= u64::from(u32::MAX))
        .ok_or_else(|| format!("the duration '{v}' is too long"))?;
    Ok(Duration::from_secs(secs))
}

fn parse_u32(v: &str) -> Result<u32, String> {
    v.parse()
        .map_err(|_| format!("expected a whole number, not '{v}'"))
}

/// An authentication method. `local`: the client's side (EAP allowed).
fn parse_auth(v: &str, local: bool) -> Result<(AuthMethod, bool), String> {
    let lower = v.to_ascii_lowercase();
    let pubkey_family = ["pubkey", "rsa", "ecdsa", "ed25519"];
    if lower == "psk" {
        return Ok((AuthMethod::Psk, false));
    }
    if pubkey_family.contains(&lower.as_str()) {
        return Ok((AuthMethod::Pubkey, false));
    }
    // `rsa-sha256`, `pubkey-sha384`, `rsa/pss-sha256`: a signature scheme constraint.
    if pubkey_family.iter().any(|f| {
        lower
            .strip_prefix(f)
            .is_some_and(|rest| rest.starts_with(['-', '/']))
    }) {
        return Ok((AuthMethod::Pubkey, true));
    }
    if lower.starts_with("xauth") {
        return Err(format!(
            "'{v}': XAuth is IKEv1 only; erebus speaks IKEv2 (use eap-mschapv2)"
        ));
    }
    if lower == "eap" || lower.starts_with("eap-") {
        if !local {
            return Err(format!(
                "'{v}': the server side must authenticate with psk or a certificate (pubkey)"
            ));
        }
        if lower == "eap-mschapv2" {
            return Ok((AuthMethod::EapMschapv2, false));
        }
        if lower == "eap" {
            return Err(
                "'eap' lets the server pick the EAP method; erebus supports only \
                 eap-mschapv2: write auth = eap-mschapv2"
                    .to_owned(),
            );
        }
        return Err(format!(
            "EAP method '{v}' is not supported (erebus supports eap-mschapv2)"
        ));
    }
    Err(format!(
        "unknown authentication method '{v}' (erebus supports psk, pubkey and eap-mschapv2)"
    ))
}

/// An identity; `%any` (and `%any6`) is none.
fn identity(v: &str) -> Option<String> {
    (!v.eq_ignore_ascii_case("%any") && !v.eq_ignore_ascii_case("%any6")).then(|| v.to_owned())
}

const CERT_DIRS: &[&str] = &["x509"];
const CA_DIRS: &[&str] = &["x509ca"];
const KEY_DIRS: &[&str] = &["private", "rsa", "ecdsa", "pkcs8"];

struct LocalParsed {
    side: LocalSide,
    /// Where `auth` is (or the section, or the connection).
    auth_at: At,
    /// Certificate file names as written, for finding the key.
    cert_names: Vec<String>,
}

struct RemoteParsed {
    side: RemoteSide,
    auth_at: At,
}

fn build_connection(
    ctx: &mut Ctx<'_, '_>,
    conn: &Section,
    secrets: Option<&Section>,
    options: &LoadOptions,
) -> Result<Connection, SwanctlError> {
    let p = format!("connections.{}", conn.name);
    let mut remote_addrs = Vec::new();
    let mut remote_port = 500u16;
    let mut vips = Vec::new();
    let mut proposals = None;
    let mut dpd_delay = Duration::ZERO;
    let mut rekey_time = Duration::from_secs(4 * 3600);
    let mut keyingtries = 1u32;

    for e in &conn.entries {
        let key = format!("{p}.{}", e.key);
        let err = |ctx: &Ctx<'_, '_>, m: String| ctx.err(e.at, &key, m);
        match e.key.as_str() {
            "version" => {
                let Some(v) = val(e) else { continue };
                match v {
                    "0" | "2" => {}
                    "1" => return Err(err(ctx, "IKEv1 is not supported".to_owned())),
                    _ => return Err(err(ctx, format!("expected 0 or 2, not '{v}'"))),
                }
            }
            "remote_addrs" => {
                remote_addrs.clear();
                for addr in list(&e.value) {
                    check_remote_addr(addr).map_err(|m| err(ctx, m))?;
                    remote_addrs.push(addr.to_owned());
                }
            }
            "remote_port" => {
                let Some(v) = val(e) else { continue };
                remote_port = v
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| err(ctx, format!("expected a port 1-65535, not '{v}'")))?;
            }
            "local_addrs" => {
                let Some(v) = val(e) else { continue };
                if !list(v).all(|a| a.eq_ignore_ascii_case("%any")) {
                    ctx.warn(
                        e.at,
                        &key,
                        "ignored: erebus picks its own local address and port",
                    );
                }
            }
            "local_port" => {
                if val(e).is_some() {
                    ctx.warn(
                        e.at,
                        &key,
                        "ignored: erebus picks its own local address and port",
                    );
                }
            }
            "vips" => {
                vips.clear();
                for vip in list(&e.value) {
                    match parse_vip(vip).map_err(|m| err(ctx, m))? {
                        Some(v4) => vips.push(v4),
                        None => ctx.warn(
                            e.at,
                            &key,
                            format!("'{vip}' ignored: erebus asks for IPv4 virtual IPs only"),
                        ),
                    }
                }
            }
            "proposals" => {
                proposals = Some(
                    parse_proposal_list(&e.value, ProposalKind::Ike).map_err(|m| err(ctx, m))?,
                );
            }
            "encap" => {
                let Some(v) = val(e) else { continue };
                if !parse_bool(v).map_err(|m| err(ctx, m))? {
                    ctx.warn(
                        e.at,
                        &key,
                        "ignored: erebus always uses UDP encapsulation (port 4500) for ESP",
                    );
                }
            }
            "dpd_delay" => {
                let Some(v) = val(e) else { continue };
                dpd_delay = parse_duration(v).map_err(|m| err(ctx, m))?;
            }
            "dpd_timeout" => {
                let Some(v) = val(e) else { continue };
                parse_duration(v).map_err(|m| err(ctx, m))?;
                ctx.warn(
                    e.at,
                    &key,
                    "ignored: it applies to IKEv1; an IKEv2 liveness check ends when its \
                     retransmissions run out",
                );
            }
            "rekey_time" => {
                let Some(v) = val(e) else { continue };
                rekey_time = parse_duration(v).map_err(|m| err(ctx, m))?;
            }
            "reauth_time" => {
                let Some(v) = val(e) else { continue };
                if !parse_duration(v).map_err(|m| err(ctx, m))?.is_zero() {
                    ctx.warn(
                        e.at,
                        &key,
                        "ignored: erebus rekeys the IKE_SA (rekey_time) instead of \
                         reauthenticating",
                    );
                }
            }
            "over_time" | "rand_time" => {
                let Some(v) = val(e) else { continue };
                parse_duration(v).map_err(|m| err(ctx, m))?;
            }
            "keyingtries" => {
                let Some(v) = val(e) else { continue };
                keyingtries = parse_u32(v).map_err(|m| err(ctx, m))?;
            }
            "fragmentation" => {
                let Some(v) = val(e) else { continue };
                one_of(v, &["yes", "accept", "force", "no"]).map_err(|m| err(ctx, m))?;
            }
            "mobike" => {
                let Some(v) = val(e) else { continue };
                if parse_bool(v).map_err(|m| err(ctx, m))? {
                    ctx.warn(
                        e.at,
                        &key,
                        "ignored: erebus does not move an IKE_SA between addresses (MOBIKE); \
                         it reconnects instead",
                    );
                }
            }
            "unique" => {
                let Some(v) = val(e) else { continue };
                one_of(v, &["no", "never", "keep", "replace"]).map_err(|m| err(ctx, m))?;
            }
            "send_certreq" => {
                let Some(v) = val(e) else { continue };
                parse_bool(v).map_err(|m| err(ctx, m))?;
            }
            "send_cert" => {
                let Some(v) = val(e) else { continue };
                one_of(v, &["always", "never", "ifasked"]).map_err(|m| err(ctx, m))?;
            }
            "pools" => {
                if val(e).is_some() {
                    ctx.warn(
                        e.at,
                        &key,
                        "ignored: pools are for a server handing out addresses; the client \
                         asks with vips",
                    );
                }
            }
            "aggressive" | "pull" | "dscp" | "if_id_in" | "if_id_out" | "mediation"
            | "mediated_by" | "mediation_peer" | "childless" | "ppk_id" | "ppk_required"
            | "close_action" | "ocsp" | "ocsp_require" | "cert_policy" => {
                if val(e).is_some() {
                    ctx.warn(e.at, &key, GENERIC_IGNORED);
                }
            }
            _ => return Err(err(ctx, "unknown option".to_owned())),
        }
    }

    let mut local_sec = None;
    let mut remote_sec = None;
    let mut children_sec = None;
    for s in &conn.sections {
        let sp = format!("{p}.{}", s.name);
        let round = |ctx: &Ctx<'_, '_>, first: &Section| {
            ctx.err(
                s.at,
                &sp,
                format!(
                    "multiple authentication rounds are not supported (this section and '{}' \
                     on line {})",
                    first.name, first.at.line
                ),
            )
        };
        if starts_with_ci(&s.name, "local") {
            if let Some(first) = local_sec {
                return Err(round(ctx, first));
            }
            local_sec = Some(s);
        } else if starts_with_ci(&s.name, "remote") {
            if let Some(first) = remote_sec {
                return Err(round(ctx, first));
            }
            remote_sec = Some(s);
        } else if s.name == "children" {
            children_sec = Some(s);
        } else {
            return Err(ctx.err(s.at, &sp, "unknown section"));
        }
    }

    if remote_addrs.is_empty() {
        return Err(ctx.err(
            conn.at,
            &format!("{p}.remote_addrs"),
            "missing: the server's address is required",
        ));
    }

    let local = parse_local(ctx, local_sec, &p, conn.at)?;
    let remote = parse_remote(ctx, remote_sec, &p, conn.at)?;

    let mut children = Vec::new();
    if let Some(cs) = children_sec {
        if let Some(e) = cs.entries.first() {
            return Err(ctx.err(e.at, &format!("{p}.children.{}", e.key), "unknown option"));
        }
        for child in &cs.sections {
            children.push(parse_child(ctx, child, &format!("{p}.children"))?);
        }
    }
    if children.is_empty() {
        return Err(ctx.err(
            children_sec.map_or(conn.at, |s| s.at),
            &format!("{p}.children"),
            "at least one child (children { name { remote_ts = ... } }) is required",
        ));
    }

    let secrets = parse_secrets(ctx, secrets)?;

    let LocalParsed {
        side: mut local,
        auth_at: local_auth_at,
        cert_names,
    } = local;
    let RemoteParsed {
        side: mut remote,
        auth_at: remote_auth_at,
    } = remote;

    // The PSK for our pair of identities.
    let mut psk = None;
    if local.auth == AuthMethod::Psk || remote.auth == AuthMethod::Psk {
        let (at, key) = if local.auth == AuthMethod::Psk {
            (local_auth_at, format!("{p}.local.auth"))
        } else {
            (remote_auth_at, format!("{p}.remote.auth"))
        };
        let found = best_shared(
            secrets.shared.iter().filter(|s| s.kind == SharedKind::Ike),
            local.id.as_deref(),
            remote.id.as_deref(),
        );
        match found {
            Some(s) => psk = Some(s.secret.clone()),
            None => {
                return Err(ctx.err(
                    at,
                    &key,
                    format!(
                        "no PSK in secrets for ids {} and {} (add secrets {{ ike-... {{ id = ... \
                         secret = ... }} }})",
                        local.id.as_deref().unwrap_or("(our address)"),
                        remote.id.as_deref().unwrap_or("%any"),
                    ),
                ));
            }
        }
    }

    // The EAP password for our EAP identity.
    let mut eap_password = None;
    if local.auth == AuthMethod::EapMschapv2 {
        let key = format!("{p}.local.auth");
        let Some(identity) = local.eap_id.as_deref().or(local.id.as_deref()) else {
            return Err(ctx.err(
                local_auth_at,
                &key,
                "eap-mschapv2 needs an identity: set local.eap_id (or local.id)",
            ));
        };
        let found = best_shared(
            secrets.shared.iter().filter(|s| s.kind == SharedKind::Eap),
            Some(identity),
            remote.id.as_deref(),
        );
        match found {
            Some(s) => eap_password = Some(s.secret.clone()),
            None => {
                return Err(ctx.err(
                    local_auth_at,
                    &key,
                    format!(
                        "no EAP password in secrets for the EAP identity '{identity}' (add \
                         secrets {{ eap-... {{ id = {identity} secret = ... }} }})"
                    ),
                ));
            }
        }
    }

    // Our certificate and its private key.
    if local.auth == AuthMethod::Pubkey {
        let key = format!("{p}.local.certs");
        let Some(first_cert) = cert_names.first() else {
            return Err(ctx.err(
                local_auth_at,
                &key,
                "pubkey authentication needs our certificate: set local.certs",
            ));
        };
        local.private_key = Some(find_private_key(
            ctx,
            &secrets.private,
            first_cert,
            local_auth_at,
            &key,
        )?);
    }

    // The server's certificate is always verified.
    if remote.auth == AuthMethod::Pubkey && remote.cacerts.is_empty() {
        if options.x509ca.is_empty() {
            return Err(ctx.err(
                remote_auth_at,
                &format!("{p}.remote.auth"),
                "the server's certificate cannot be verified: set remote.cacerts",
            ));
        }
        remote.cacerts.clone_from(&options.x509ca);
    }

    Ok(Connection {
        name: conn.name.clone(),
        remote_addrs,
        remote_port,
        vips,
        proposals: proposals.unwrap_or_else(|| default_proposals(ProposalKind::Ike)),
        local,
        remote,
        children,
        dpd_delay,
        rekey_time,
        keyingtries,
        psk,
        eap_password,
    })
}

fn check_remote_addr(addr: &str) -> Result<(), String> {
    if addr.starts_with('%') {
        return Err(format!(
            "'{addr}' cannot be used by an initiator: name the server's address"
        ));
    }
    if addr.contains('/') {
        return Err(format!(
            "'{addr}' is a subnet: an initiator needs the server's address"
        ));
    }
    if let Some((a, b)) = addr.split_once('-')
        && a.parse::<IpAddr>().is_ok()
        && b.parse::<IpAddr>().is_ok()
    {
        return Err(format!(
            "'{addr}' is an address range: an initiator needs the server's address"
        ));
    }
    Ok(())
}

/// A virtual IP to ask for; `None` for an IPv6 one (ignored).
fn parse_vip(v: &str) -> Result<Option<Ipv4Addr>, String> {
    if v.eq_ignore_ascii_case("%any") || v.eq_ignore_ascii_case("%any4") {
        return Ok(Some(Ipv4Addr::UNSPECIFIED));
    }
    if v.eq_ignore_ascii_case("%any6") {
        return Ok(None);
    }
    match v.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok(Some(a)),
        Ok(IpAddr::V6(_)) => Ok(None),
        Err(_) => Err(format!("'{v}' is not an IP address")),
    }
}

fn parse_local(
    ctx: &mut Ctx<'_, '_>,
    sec: Option<&Section>,
    p: &str,
    conn_at: At,
) -> Result<LocalParsed, SwanctlError> {
    let mut side = LocalSide {
        auth: AuthMethod::Pubkey,
        id: None,
        eap_id: None,
        certs: Vec::new(),
        private_key: None,
    };
    let mut cert_names = Vec::new();
    let Some(sec) = sec else {
        return Ok(LocalParsed {
            side,
            auth_at: conn_at,
            cert_names,
        });
    };
    let sp = format!("{p}.{}", sec.name);
    let mut auth_at = sec.at;
    for e in &sec.entries {
        let key = format!("{sp}.{}", e.key);
        let err = |ctx: &Ctx<'_, '_>, m: String| ctx.err(e.at, &key, m);
        match e.key.as_str() {
            "auth" => {
                let Some(v) = val(e) else { continue };
                let (auth, constrained) = parse_auth(v, true).map_err(|m| err(ctx, m))?;
                if constrained {
                    ctx.warn(e.at, &key, "the signature scheme constraint is ignored");
                }
                side.auth = auth;
                auth_at = e.at;
            }
            "id" => side.id = val(e).and_then(identity),
            "eap_id" => {
                side.eap_id = val(e)
                    .filter(|v| !v.eq_ignore_ascii_case("%identity"))
                    .and_then(identity);
            }
            "certs" => {
                side.certs.clear();
                cert_names.clear();
                for name in list(&e.value) {
                    let cert = ctx
                        .read_in("certificate", name, CERT_DIRS)
                        .map_err(|m| err(ctx, m))?;
                    side.certs.push(cert);
                    cert_names.push(name.to_owned());
                }
            }
            "pubkeys" => {
                if val(e).is_some() {
                    return Err(err(
                        ctx,
                        "raw public keys are not supported: use certs".to_owned(),
                    ));
                }
            }
            "xauth_id" => {
                if val(e).is_some() {
                    return Err(err(
                        ctx,
                        "XAuth is IKEv1 only; erebus speaks IKEv2".to_owned(),
                    ));
                }
            }
            "aaa_id" | "ca_id" => {
                if val(e).is_some() {
                    ctx.warn(e.at, &key, GENERIC_IGNORED);
                }
            }
            "round" => {
                let Some(v) = val(e) else { continue };
                parse_u32(v).map_err(|m| err(ctx, m))?;
            }
            _ => return Err(err(ctx, "unknown option".to_owned())),
        }
    }
    for s in &sec.sections {
        let key = format!("{sp}.{}", s.name);
        if starts_with_ci(&s.name, "cert") {
            let (cert, name) = cert_file_section(ctx, s, &key, "certificate", CERT_DIRS)?;
            side.certs.push(cert);
            cert_names.push(name);
        } else {
            return Err(ctx.err(s.at, &key, "unknown section"));
        }
    }
    Ok(LocalParsed {
        side,
        auth_at,
        cert_names,
    })
}

/// A `cert-<suffix>` / `cacert-<suffix>` section: `file` only (no tokens).
fn cert_file_section(
    ctx: &mut Ctx<'_, '_>,
    s: &Section,
    key: &str,
    what: &str,
    dirs: &[&str],
) -> Result<(Secret, String), SwanctlError> {
    if let Some(sub) = s.sections.first() {
        return Err(ctx.err(sub.at, &format!("{key}.{}", sub.name), "unknown section"));
    }
    let mut file = None;
    for e in &s.entries {
        let ekey = format!("{key}.{}", e.key);
        match e.key.as_str() {
            "file" => file = val(e).map(|v| (v.to_owned(), e.at, ekey)),
            "handle" | "slot" | "module" => {
                if val(e).is_some() {
                    return Err(ctx.err(e.at, &ekey, "certificates on tokens are not supported"));
                }
            }
            _ => return Err(ctx.err(e.at, &ekey, "unknown option")),
        }
    }
    let Some((name, at, ekey)) = file else {
        return Err(ctx.err(s.at, key, "missing: file"));
    };
    let cert = ctx
        .read_in(what, &name, dirs)
        .map_err(|m| ctx.err(at, &ekey, m))?;
    Ok((cert, name))
}

fn parse_remote(
    ctx: &mut Ctx<'_, '_>,
    sec: Option<&Section>,
    p: &str,
    conn_at: At,
) -> Result<RemoteParsed, SwanctlError> {
    let mut side = RemoteSide {
        auth: AuthMethod::Pubkey,
        id: None,
        cacerts: Vec::new(),
    };
    let Some(sec) = sec else {
        return Ok(RemoteParsed {
            side,
            auth_at: conn_at,
        });
    };
    let sp = format!("{p}.{}", sec.name);
    let mut auth_at = sec.at;
    for e in &sec.entries {
        let key = format!("{sp}.{}", e.key);
        let err = |ctx: &Ctx<'_, '_>, m: String| ctx.err(e.at, &key, m);
        match e.key.as_str() {
            "auth" => {
                let Some(v) = val(e) else { continue };
                let (auth, constrained) = parse_auth(v, false).map_err(|m| err(ctx, m))?;
                if constrained {
                    ctx.warn(e.at, &key, "the signature scheme constraint is ignored");
                }
                side.auth = auth;
                auth_at = e.at;
            }
            "id" => side.id = val(e).and_then(identity),
            "cacerts" => {
                side.cacerts.clear();
                for name in list(&e.value) {
                    let cert = ctx
                        .read_in("CA certificate", name, CA_DIRS)
                        .map_err(|m| err(ctx, m))?;
                    side.cacerts.push(cert);
                }
            }
            "certs" => {
                if val(e).is_some() {
                    ctx.warn(
                        e.at,
                        &key,
                        "ignored: erebus verifies the server's certificate against \
                         remote.cacerts instead of pinning it",
                    );
                }
            }
            "revocation" => {
                if val(e).is_some() {
                    ctx.warn(e.at, &key, "ignored: erebus does not check CRLs or OCSP");
                }
            }
            "pubkeys" => {
                if val(e).is_some() {
                    return Err(err(
                        ctx,
                        "raw public keys are not supported: use cacerts".to_owned(),
                    ));
                }
            }
            "eap_id" | "ca_id" | "group" | "groups" | "cert_policy" | "aaa_id" => {
                if val(e).is_some() {
                    ctx.warn(e.at, &key, GENERIC_IGNORED);
                }
            }
            "round" => {
                let Some(v) = val(e) else { continue };
                parse_u32(v).map_err(|m| err(ctx, m))?;
            }
            _ => return Err(err(ctx, "unknown option".to_owned())),
        }
    }
    for s in &sec.sections {
        let key = format!("{sp}.{}", s.name);
        if starts_with_ci(&s.name, "cacert") {
            let (cert, _) = cert_file_section(ctx, s, &key, "CA certificate", CA_DIRS)?;
            side.cacerts.push(cert);
        } else if starts_with_ci(&s.name, "cert") {
            ctx.warn(
                s.at,
                &key,
                "ignored: erebus verifies the server's certificate against remote.cacerts \
                 instead of pinning it",
            );
        } else {
            return Err(ctx.err(s.at, &key, "unknown section"));
        }
    }
    Ok(RemoteParsed { side, auth_at })
}

fn parse_child(ctx: &mut Ctx<'_, '_>, sec: &Section, p: &str) -> Result<ChildConfig, SwanctlError> {
    let cp = format!("{p}.{}", sec.name);
    if let Some(s) = sec.sections.first() {
        return Err(ctx.err(s.at, &format!("{cp}.{}", s.name), "unknown section"));
    }
    let mut remote_ts = Vec::new();
    let mut esp_proposals = None;
    let mut rekey_time = Duration::from_secs(3600);
    let mut life_time = None;
    let mut replay_window = None;
    // Where a remote_ts that listed only IPv6 networks is.
    let mut only_v6_at = None;
    for e in &sec.entries {
        let key = format!("{cp}.{}", e.key);
        let err = |ctx: &Ctx<'_, '_>, m: String| ctx.err(e.at, &key, m);
        match e.key.as_str() {
            "remote_ts" => {
                remote_ts.clear();
                let (mut v4, mut v6) = (false, false);
                for ts in list(&e.value) {
                    match parse_ts(ts).map_err(|m| err(ctx, m))? {
                        Ts::Net(net) => {
                            remote_ts.push(net);
                            v4 = true;
                        }
                        Ts::Dynamic => v4 = true,
                        Ts::V6 => {
                            v6 = true;
                            ctx.warn(
                                e.at,
                                &key,
                                format!("'{ts}' ignored: erebus tunnels IPv4 only"),
                            );
                        }
                    }
                }
                only_v6_at = (v6 && !v4).then_some(e.at);
            }
            "local_ts" => {
                let Some(v) = val(e) else { continue };
                if !list(v).all(|t| t.eq_ignore_ascii_case("dynamic")) {
                    ctx.warn(
                        e.at,
                        &key,
                        "ignored: the client's traffic selector is its virtual IP",
                    );
                }
            }
            "esp_proposals" => {
                esp_proposals = Some(
                    parse_proposal_list(&e.value, ProposalKind::Esp).map_err(|m| err(ctx, m))?,
                );
            }
            "ah_proposals" => {
                if val(e).is_some() {
                    return Err(err(
                        ctx,
                        "AH is not supported: use esp_proposals".to_owned(),
                    ));
                }
            }
            "rekey_time" => {
                let Some(v) = val(e) else { continue };
                rekey_time = parse_duration(v).map_err(|m| err(ctx, m))?;
            }
            "life_time" => {
                let Some(v) = val(e) else { continue };
                life_time = Some(parse_duration(v).map_err(|m| err(ctx, m))?);
            }
            "rand_time" => {
                let Some(v) = val(e) else { continue };
                parse_duration(v).map_err(|m| err(ctx, m))?;
            }
            "replay_window" => {
                let Some(v) = val(e) else { continue };
                let window: u32 = v
                    .parse()
                    .map_err(|_| err(ctx, format!("'{v}' is not a number of packets")))?;
                if !(32..=MAX_REPLAY_WINDOW).contains(&window) {
                    return Err(err(
                        ctx,
                        format!("{window} is out of range: erebus keeps 32 to {MAX_REPLAY_WINDOW}"),
                    ));
                }
                replay_window = Some(window);
            }
            "start_action" | "close_action" | "dpd_action" => {}
            "mode" => {
                let Some(v) = val(e) else { continue };
                if !v.eq_ignore_ascii_case("tunnel") {
                    return Err(err(
                        ctx,
                        format!("mode '{v}' is not supported: erebus uses tunnel mode only"),
                    ));
                }
            }
            "ipcomp" => {
                let Some(v) = val(e) else { continue };
                if parse_bool(v).map_err(|m| err(ctx, m))? {
                    ctx.warn(e.at, &key, "ignored: erebus does not compress (IPComp)");
                }
            }
            "updown" | "hostaccess" | "policies" | "policies_fwd_out" | "inactivity"
            | "priority" | "interface" | "hw_offload" | "per_cpu_sas" | "sha256_96"
            | "tfc_padding" | "reqid" | "label" | "label_mode" | "rekey_bytes" | "life_bytes"
            | "rand_bytes" | "rekey_packets" | "life_packets" | "rand_packets" => {
                if val(e).is_some() {
                    ctx.warn(e.at, &key, GENERIC_IGNORED);
                }
            }
            k if k.starts_with("mark_")
                || k.starts_with("set_mark_")
                || k.starts_with("if_id_")
                || k.starts_with("copy_") =>
            {
                if val(e).is_some() {
                    ctx.warn(e.at, &key, GENERIC_IGNORED);
                }
            }
            _ => return Err(err(ctx, "unknown option".to_owned())),
        }
    }
    if let Some(at) = only_v6_at {
        return Err(ctx.err(
            at,
            &format!("{cp}.remote_ts"),
            "no IPv4 network left to reach (IPv6 selectors are ignored)",
        ));
    }
    let life_time = life_time
        .unwrap_or_else(|| Duration::from_secs(rekey_time.as_secs().saturating_mul(110) / 100));
    Ok(ChildConfig {
        name: sec.name.clone(),
        remote_ts,
        esp_proposals: esp_proposals.unwrap_or_else(|| default_proposals(ProposalKind::Esp)),
        rekey_time,
        life_time,
        replay_window: replay_window.unwrap_or(DEFAULT_REPLAY_WINDOW),
    })
}

enum Ts {
    Net(IpNet),
    Dynamic,
    V6,
}

/// A traffic selector: `a.b.c.d/n`, a single address, or `dynamic`.
fn parse_ts(ts: &str) -> Result<Ts, String> {
    if ts.eq_ignore_ascii_case("dynamic") {
        return Ok(Ts::Dynamic);
    }
    if ts.contains('[') {
        return Err(format!(
            "'{ts}': protocol and port selectors are not supported"
        ));
    }
    let (addr, prefix) = match ts.split_once('/') {
        Some((a, n)) => (a, Some(n)),
        None => (ts, None),
    };
    if prefix.is_none() && addr.contains('-') {
        return Err(format!(
            "'{ts}': address ranges are not supported; use a subnet"
        ));
    }
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("'{ts}' is not a subnet (a.b.c.d/n) or an address"))?;
    if ip.is_ipv6() {
        return Ok(Ts::V6);
    }
    let net = match prefix {
        None => IpNet::host(ip),
        Some(n) => n
            .parse::<u8>()
            .ok()
            .and_then(|n| IpNet::new(ip, n))
            .ok_or_else(|| format!("'{ts}': the prefix length must be 0 to 32"))?,
    };
    Ok(Ts::Net(net))
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum SharedKind {
    Ike,
    Eap,
}

struct Shared {
    kind: SharedKind,
    ids: Vec<String>,
    secret: Secret,
}

struct PrivateKey {
    /// The directory swanctl reads this type from (`private`, `rsa`, ...).
    dir: &'static str,
    file: String,
    /// Where `file` is, and its dotted path.
    at: At,
    key: String,
    /// Where the passphrase is, if one is given.
    passphrase: Option<(At, String)>,
}

#[derive(Default)]
struct Secrets {
    shared: Vec<Shared>,
    private: Vec<PrivateKey>,
}

fn parse_secrets(ctx: &mut Ctx<'_, '_>, sec: Option<&Section>) -> Result<Secrets, SwanctlError> {
    let mut out = Secrets::default();
    let Some(sec) = sec else { return Ok(out) };
    if let Some(e) = sec.entries.first() {
        return Err(ctx.err(e.at, &format!("secrets.{}", e.key), "unknown option"));
    }
    for s in &sec.sections {
        let sp = format!("secrets.{}", s.name);
        if let Some(sub) = s.sections.first() {
            return Err(ctx.err(sub.at, &format!("{sp}.{}", sub.name), "unknown section"));
        }
        let shared = if starts_with_ci(&s.name, "ike") {
            Some(SharedKind::Ike)
        } else if starts_with_ci(&s.name, "eap") || starts_with_ci(&s.name, "xauth") {
            Some(SharedKind::Eap)
        } else {
            None
        };
        if let Some(kind) = shared {
            out.shared.push(parse_shared(ctx, s, &sp, kind)?);
            continue;
        }
        let dir = ["private", "rsa", "ecdsa", "pkcs8"]
            .into_iter()
            .find(|d| starts_with_ci(&s.name, d));
        if let Some(dir) = dir {
            out.private.push(parse_private(ctx, s, &sp, dir)?);
            continue;
        }
        if ["pkcs12", "token", "ntlm", "ppk"]
            .iter()
            .any(|t| starts_with_ci(&s.name, t))
        {
            ctx.warn(
                s.at,
                &sp,
                "ignored: erebus uses ike-, eap- and private- secrets only",
            );
            continue;
        }
        return Err(ctx.err(s.at, &sp, "unknown secret type"));
    }
    Ok(out)
}

fn parse_shared(
    ctx: &Ctx<'_, '_>,
    s: &Section,
    sp: &str,
    kind: SharedKind,
) -> Result<Shared, SwanctlError> {
    let mut ids = Vec::new();
    let mut secret = None;
    for e in &s.entries {
        let key = format!("{sp}.{}", e.key);
        if e.key == "secret" {
            if e.value.is_empty() {
                secret = None;
            } else {
                secret = Some(decode_secret(&e.value).map_err(|m| ctx.err(e.at, &key, m))?);
            }
        } else if e.key.starts_with("id") {
            if let Some(v) = val(e) {
                ids.push(v.to_owned());
            }
        } else {
            return Err(ctx.err(e.at, &key, "unknown option"));
        }
    }
    let secret = secret.ok_or_else(|| ctx.err(s.at, sp, "missing: secret"))?;
    Ok(Shared { kind, ids, secret })
}

fn parse_private(
    ctx: &Ctx<'_, '_>,
    s: &Section,
    sp: &str,
    dir: &'static str,
) -> Result<PrivateKey, SwanctlError> {
    let mut file = None;
    let mut passphrase = None;
    for e in &s.entries {
        let key = format!("{sp}.{}", e.key);
        match e.key.as_str() {
            "file" => file = val(e).map(|v| (v.to_owned(), e.at, key)),
            "secret" => passphrase = (!e.value.is_empty()).then_some((e.at, key)),
            _ => return Err(ctx.err(e.at, &key, "unknown option")),
        }
    }
    let (file, at, key) = file.ok_or_else(|| ctx.err(s.at, sp, "missing: file"))?;
    Ok(PrivateKey {
        dir,
        file,
        at,
        key,
        passphrase,
    })
}

/// A secret as swanctl writes one: `0x` hex, `0s` base64, or the text itself.
fn decode_secret(v: &str) -> Result<Secret, String> {
    if starts_with_ci(v, "0x") {
        return hex_decode(v.get(2..).unwrap_or_default()).map(Secret::new);
    }
    if starts_with_ci(v, "0s") {
        return base64_decode(v.get(2..).unwrap_or_default()).map(Secret::new);
    }
    Ok(Secret::new(v.as_bytes().to_vec()))
}

fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    let digits = Zeroizing::new(
        s.chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .map(|c| {
                c.to_digit(16)
                    .ok_or_else(|| "the 0x secret has a character that is not hex".to_owned())
            })
            .collect::<Result<Vec<u32>, String>>()?,
    );
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err("the 0x secret needs an even, non-zero number of hex digits".to_owned());
    }
    Ok(digits
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => ((hi << 4) | lo) as u8,
            _ => 0,
        })
        .collect())
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let bad = || "the 0s secret is not valid base64".to_owned();
    let mut out = Vec::new();
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut padding = 0usize;
    let mut count = 0usize;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            padding += 1;
            count += 1;
            continue;
        }
        if padding > 0 {
            return Err(bad());
        }
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(bad()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        count += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if count == 0 || !count.is_multiple_of(4) || padding > 2 {
        return Err(bad());
    }
    Ok(out)
}

/// How well an identity matches a secret's owner, as strongSwan ranks it.
fn id_match(id: Option<&str>, owner: &str) -> u8 {
    if owner.eq_ignore_ascii_case("%any") {
        return 1;
    }
    let Some(id) = id else { return 0 };
    if id.eq_ignore_ascii_case(owner) {
        return 3;
    }
    if let Some(suffix) = owner.strip_prefix('*') {
        let matches = id.len() >= suffix.len()
            && id
                .get(id.len() - suffix.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix));
        if matches {
            return 2;
        }
    }
    0
}

/// strongSwan's choice of a shared secret: the best match for the peer's identity, then for
/// ours; the first on a tie; a secret with no ids matches anyone, weakly.
fn best_shared<'s>(
    candidates: impl Iterator<Item = &'s Shared>,
    me: Option<&str>,
    other: Option<&str>,
) -> Option<&'s Shared> {
    let mut best: Option<(&Shared, u8, u8)> = None;
    for s in candidates {
        let score = |id: Option<&str>| {
            if s.ids.is_empty() {
                id_match(id, "%any")
            } else {
                s.ids.iter().map(|o| id_match(id, o)).max().unwrap_or(0)
            }
        };
        let (m, o) = (score(me), score(other));
        if m == 0 && o == 0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, bm, bo)) => o > bo || (o == bo && m > bm),
        };
        if better {
            best = Some((s, m, o));
        }
    }
    best.map(|(s, _, _)| s)
}

/// The private key for our certificate: from a `private-*` (`rsa-*`, `ecdsa-*`, `pkcs8-*`)
/// secret, else from swanctl's key directories by the certificate's file name.
fn find_private_key(
    ctx: &mut Ctx<'_, '_>,
    keys: &[PrivateKey],
    cert_name: &str,
    auth_at: At,
    key: &str,
) -> Result<Secret, SwanctlError> {
    let stem = Path::new(cert_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let chosen = keys
        .iter()
        .find(|k| {
            Path::new(&k.file)
                .file_stem()
                .is_some_and(|s| s.to_string_lossy() == stem)
        })
        .or_else(|| keys.first());
    if let Some(k) = chosen {
        if let Some((at, pkey)) = &k.passphrase {
            return Err(ctx.err(
                *at,
                pkey,
                "encrypted private keys are not supported: decrypt the key file",
            ));
        }
        if keys.len() > 1 {
            ctx.warn(
                k.at,
                &k.key,
                format!(
                    "several private keys in secrets: erebus uses '{}' with the certificate \
                     '{cert_name}'",
                    k.file
                ),
            );
        }
        let mut dirs = vec![k.dir];
        dirs.extend(KEY_DIRS.iter().filter(|d| **d != k.dir));
        return ctx
            .read_in("private key", &k.file, &dirs)
            .map_err(|m| ctx.err(k.at, &k.key, m));
    }
    let mut candidates = Vec::new();
    for dir in ["private", "ecdsa", "rsa", "pkcs8"] {
        for ext in ["pem", "key", "der"] {
            candidates.push(Path::new(dir).join(format!("{stem}.{ext}")));
        }
    }
    ctx.read(&format!("a private key for '{cert_name}'"), &candidates)
        .map_err(|m| {
            ctx.err(
                auth_at,
                key,
                format!("{m}; name it in secrets {{ private-... {{ file = ... }} }}"),
            )
        })
}
