//! Applies directives to a [`Profile`], then checks the result as a whole.
//!
//! The rules follow OpenVPN 2.6's `add_option` and `options_postprocess_*`: the same argument
//! counts, the same last-one-wins behaviour, the same scoping of `<connection>` blocks (a
//! block starts from the top-level settings given before it), and the same escape hatches
//! for unknown options (`ignore-unknown-option`, `setenv opt`, `setenv FORWARD_COMPATIBLE 1`).

use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use erebus_sansio::tunnel::IpNet;

use super::lexer::{self, InlineBlock, RawDirective};
use super::values::{ProtoSpec, parse_proto};
use super::{
    AddressFamily, AllowCompression, Askpass, AuthRetry, AuthUserPass, CertRole, Compression,
    ConnectRetry, Connection, DEFAULT_PORT, DataCipher, DhcpOption, Digest, Fragment, Ifconfig,
    IfconfigIpv6, Inactive, Keepalive, KeyDirection, Material, Mode, Mssfix, MssfixMode, Profile,
    ProfileError, PullFilter, PullFilterAction, RedirectGateway, RenegSec, ReplayWindow,
    ResolvRetry, Route, RouteIpv6, SecretBytes, SecretString, SetEnv, SharedSecret,
    StaticChallenge, TlsVersion, TlsVersionMin, TlsWrap, Topology, Transport, VerifyX509Name,
    Warning, X509NameKind,
};

/// Parses a whole profile.
pub(super) fn parse(bytes: &[u8]) -> Result<(Profile, Vec<Warning>), ProfileError> {
    let mut parser = Parser::default();
    for directive in lexer::directives(bytes, 1)? {
        parser.apply(directive)?;
    }
    parser.finish()
}

/// How bad a problem with one directive is.
enum Kind {
    /// Always an error.
    Fatal,
    /// Missing or extra arguments: forgiven like an unknown option (OpenVPN reports both with
    /// one message, "Unrecognized option or missing or extra parameter(s)").
    ArgCount,
    /// An unknown directive.
    Unknown,
    /// An error inside a `<connection>` block, already located.
    Nested(Box<ProfileError>),
}

struct Problem {
    kind: Kind,
    message: String,
}

fn fatal(message: impl Into<String>) -> Problem {
    Problem {
        kind: Kind::Fatal,
        message: message.into(),
    }
}

type Outcome = Result<(), Problem>;

/// One directive being applied.
struct Dir {
    line: usize,
    name: String,
    args: Vec<String>,
    inline: Option<InlineBlock>,
}

impl Dir {
    /// Checks the number of arguments (words after the name).
    fn count(&self, min: usize, max: usize) -> Outcome {
        let n = self.args.len();
        let plural = |k: usize| if k == 1 { "argument" } else { "arguments" };
        let message = if n < min && min == max {
            format!("needs {min} {}, got {n}", plural(min))
        } else if n < min {
            format!("needs at least {min} {}, got {n}", plural(min))
        } else if n > max && max == 0 {
            "takes no arguments".to_owned()
        } else if n > max {
            format!("takes at most {max} {}, got {n}", plural(max))
        } else {
            return Ok(());
        };
        Err(Problem {
            kind: Kind::ArgCount,
            message,
        })
    }

    /// The argument at `index`, or "" past the end (callers check counts first).
    fn word(&self, index: usize) -> &str {
        self.args.get(index).map_or("", String::as_str)
    }

    fn opt(&self, index: usize) -> Option<&str> {
        self.args.get(index).map(String::as_str)
    }

    /// Moves the argument at `index` out, so a secret is never copied.
    fn take(&mut self, index: usize) -> String {
        self.args
            .get_mut(index)
            .map(core::mem::take)
            .unwrap_or_default()
    }

    /// A whole decimal number.
    fn number<T: FromStr>(&self, index: usize) -> Result<T, Problem> {
        let word = self.word(index);
        let digits = word.strip_prefix('+').unwrap_or(word);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fatal(format!("`{word}` is not a whole number")));
        }
        digits
            .parse()
            .map_err(|_| fatal(format!("the number `{word}` is too large")))
    }

    fn opt_number<T: FromStr>(&self, index: usize) -> Result<Option<T>, Problem> {
        if index < self.args.len() {
            self.number(index).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A port: 1 to 65535, or 0 too when `allow_zero` (a local port chosen by the system).
    fn port(&self, index: usize, allow_zero: bool) -> Result<u16, Problem> {
        let word = self.word(index);
        match word.parse::<u16>() {
            Ok(port) if port != 0 || allow_zero => Ok(port),
            _ => Err(fatal(format!("`{word}` is not a port number (1 to 65535)"))),
        }
    }

    /// Material from an inline block or a one-word file argument.
    fn material(&mut self) -> Result<Material, Problem> {
        if let Some(block) = self.inline.take() {
            return Ok(Material::Inline(SecretBytes(block.content)));
        }
        self.count(1, 1)?;
        Ok(Material::File(PathBuf::from(self.take(0))))
    }

    /// Material from an inline block or a file argument followed by up to `extra` words,
    /// which the caller reads with [`Dir::opt`] (inline blocks never have extra words).
    fn material_with(&mut self, extra: usize) -> Result<Material, Problem> {
        if let Some(block) = self.inline.take() {
            return Ok(Material::Inline(SecretBytes(block.content)));
        }
        self.count(1, 1 + extra)?;
        Ok(Material::File(PathBuf::from(self.word(0))))
    }
}

/// What `remote` said.
#[derive(Clone, Debug, Default)]
struct RemoteSpec {
    line: usize,
    host: String,
    port: Option<u16>,
    proto: Option<(ProtoSpec, AddressFamily)>,
}

/// The control-channel wrap settings of one scope (the profile, or a `<connection>` block).
#[derive(Clone, Debug, Default)]
struct Wrap {
    auth: Option<(usize, Material)>,
    crypt: Option<(usize, Material)>,
    crypt_v2: Option<(usize, Material)>,
    /// `key-direction`, or the direction argument of `tls-auth`/`secret`: one value per scope,
    /// last one wins, as in OpenVPN.
    key_direction: Option<KeyDirection>,
}

impl Wrap {
    fn is_set(&self) -> bool {
        self.auth.is_some() || self.crypt.is_some() || self.crypt_v2.is_some()
    }

    /// Refuses two wraps at once, naming the later of the two directives.
    fn check(&self) -> Result<(), ProfileError> {
        let given: Vec<(usize, &str)> = [
            self.auth.as_ref().map(|(line, _)| (*line, "tls-auth")),
            self.crypt.as_ref().map(|(line, _)| (*line, "tls-crypt")),
            self.crypt_v2
                .as_ref()
                .map(|(line, _)| (*line, "tls-crypt-v2")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let Some(&(line, name)) = given.iter().max_by_key(|(line, _)| *line) else {
            return Ok(());
        };
        if given.len() < 2 {
            return Ok(());
        }
        let others: Vec<&str> = given
            .iter()
            .filter(|(_, other)| *other != name)
            .map(|(_, other)| *other)
            .collect();
        Err(ProfileError::at(
            line,
            name,
            format!(
                "`{name}` cannot be combined with `{}`: a connection wraps its control channel \
                 one way only",
                others.join("` or `")
            ),
        ))
    }

    fn build(&self) -> Option<TlsWrap> {
        if let Some((_, key)) = &self.auth {
            Some(TlsWrap::Auth {
                key: key.clone(),
                direction: self.key_direction,
            })
        } else if let Some((_, key)) = &self.crypt {
            Some(TlsWrap::Crypt { key: key.clone() })
        } else {
            self.crypt_v2
                .as_ref()
                .map(|(_, key)| TlsWrap::CryptV2 { key: key.clone() })
        }
    }
}

/// The per-connection settings of one scope.
#[derive(Clone, Debug, Default)]
struct Settings {
    /// The block's `remote` (unused at the top level, which keeps a list).
    remote: Option<RemoteSpec>,
    proto: Option<(usize, ProtoSpec, AddressFamily)>,
    remote_port: Option<u16>,
    local_port: Option<u16>,
    local: Option<String>,
    nobind: bool,
    connect_retry: Option<ConnectRetry>,
    server_poll_timeout: Option<u32>,
    explicit_exit_notify: Option<u32>,
    float: bool,
    mssfix: Option<Mssfix>,
    fragment: Option<(usize, Fragment)>,
    tun_mtu: Option<u32>,
    link_mtu: Option<u32>,
    /// The block's own wrap (unused at the top level, where the wrap is profile-wide).
    wrap: Wrap,
}

#[derive(Debug)]
struct Block {
    line: usize,
    settings: Settings,
}

#[derive(Default)]
struct Parser {
    profile: Profile,
    warnings: Vec<Warning>,
    forward_compatible: bool,
    /// Top-level per-connection settings, as given so far.
    top: Settings,
    /// The profile-wide wrap, used by connections without their own.
    global_wrap: Wrap,
    /// The `<connection>` block being read.
    block: Option<Block>,
    blocks: Vec<Block>,
    remotes: Vec<RemoteSpec>,

    pull_line: Option<usize>,
    secret_line: Option<usize>,
    dev: Option<(usize, String)>,
    dev_type: Option<(usize, String)>,
    /// The first directive that only makes sense with TLS.
    tls_only: Option<(usize, String)>,
    auth_user_pass_line: Option<usize>,
    cert_line: Option<usize>,
    key_line: Option<usize>,
    cipher_line: Option<usize>,
    tls_version_max_line: Option<usize>,
}

/// The handler of one directive.
type Handler = fn(&mut Parser, &mut Dir) -> Outcome;

/// Directives allowed inside `<connection>` blocks (OpenVPN's `OPT_P_CONNECTION`).
const CONNECTION_DIRECTIVES: &[&str] = &[
    "remote",
    "proto",
    "port",
    "rport",
    "lport",
    "local",
    "bind",
    "nobind",
    "connect-retry",
    "connect-retry-max",
    "connect-timeout",
    "server-poll-timeout",
    "explicit-exit-notify",
    "float",
    "mssfix",
    "fragment",
    "tun-mtu",
    "tun-mtu-extra",
    "tun-mtu-max",
    "link-mtu",
    "mtu-disc",
    "key-direction",
    "tls-auth",
    "tls-crypt",
    "tls-crypt-v2",
    "http-proxy",
    "http-proxy-option",
    "http-proxy-retry",
    "http-proxy-timeout",
    "socks-proxy",
    "socks-proxy-retry",
];

/// Top-level directives that set a per-connection value: after a `<connection>` block they
/// only reach later blocks.
const PER_CONNECTION_SETTINGS: &[&str] = &[
    "proto",
    "port",
    "rport",
    "lport",
    "local",
    "bind",
    "nobind",
    "connect-retry",
    "connect-timeout",
    "server-poll-timeout",
    "explicit-exit-notify",
    "float",
    "mssfix",
    "fragment",
    "tun-mtu",
    "link-mtu",
];

/// Directives that may be given as an inline block.
const INLINE_DIRECTIVES: &[&str] = &[
    "ca",
    "cert",
    "key",
    "pkcs12",
    "extra-certs",
    "crl-verify",
    "tls-auth",
    "tls-crypt",
    "tls-crypt-v2",
    "secret",
    "auth-user-pass",
    "peer-fingerprint",
    "connection",
    "http-proxy-user-pass",
    "dh",
    "tls-crypt-v2-verify",
];

const SCRIPTS: &str = "ignored: erebus runs no scripts or plugins";
const PROCESS: &str =
    "ignored: it configures the OpenVPN daemon process, and erebus is not that process";
const SYSTEM: &str = "ignored: erebus installs no routes or interfaces and never changes the \
                      system's network or DNS settings";
const TIMERS: &str = "ignored: erebus uses OpenVPN's default for this timer";
const NO_EFFECT: &str = "ignored: it has no effect in an OpenVPN 2.6 client";

const SERVER: &str = "is a server option; erebus is a client and cannot act as an OpenVPN \
                      server";
const PROXY: &str = "is not supported yet: erebus cannot reach the server through an HTTP or \
                     SOCKS proxy; remove it if the server is reachable directly";
const TOKEN: &str = "is not supported: erebus cannot use keys held in a hardware token or a \
                     system certificate store; export the certificate and key to files";

fn handler(name: &str) -> Option<Handler> {
    let handler: Handler = match name {
        // Role.
        "client" => |p, d| {
            d.count(0, 0)?;
            p.profile.client = true;
            p.profile.pull = true;
            p.profile.tls_client = true;
            Ok(())
        },
        "pull" => |p, d| {
            d.count(0, 0)?;
            p.profile.pull = true;
            p.pull_line = Some(d.line);
            Ok(())
        },
        "tls-client" => |p, d| {
            d.count(0, 0)?;
            p.profile.tls_client = true;
            Ok(())
        },
        "mode" => |_, d| {
            d.count(1, 1)?;
            match d.word(0) {
                "p2p" => Ok(()),
                "server" => Err(fatal(format!("`mode server` {SERVER}"))),
                other => Err(fatal(format!("unknown mode `{other}`; only p2p applies"))),
            }
        },

        // Servers and transport.
        "remote" => Parser::remote,
        "proto" => |p, d| {
            d.count(1, 1)?;
            let (spec, family) = proto(d.word(0))?;
            p.settings().proto = Some((d.line, spec, family));
            Ok(())
        },
        "port" | "rport" => |p, d| {
            d.count(1, 1)?;
            p.settings().remote_port = Some(d.port(0, false)?);
            Ok(())
        },
        "lport" => |p, d| {
            d.count(1, 1)?;
            p.settings().local_port = Some(d.port(0, true)?);
            Ok(())
        },
        "local" => |p, d| {
            d.count(1, 1)?;
            p.settings().local = Some(d.take(0));
            Ok(())
        },
        "bind" => |p, d| {
            d.count(0, 1)?;
            p.settings().nobind = false;
            Ok(())
        },
        "nobind" => |p, d| {
            d.count(0, 0)?;
            p.settings().nobind = true;
            Ok(())
        },
        "float" => |p, d| {
            d.count(0, 0)?;
            p.settings().float = true;
            Ok(())
        },
        "remote-random" => |p, d| {
            d.count(0, 0)?;
            p.profile.remote_random = true;
            Ok(())
        },
        "remote-random-hostname" => |p, d| {
            d.count(0, 0)?;
            p.profile.remote_random_hostname = true;
            Ok(())
        },
        "resolv-retry" => |p, d| {
            d.count(1, 1)?;
            p.profile.resolv_retry = Some(if d.word(0) == "infinite" {
                ResolvRetry::Infinite
            } else {
                ResolvRetry::Seconds(d.number(0)?)
            });
            Ok(())
        },
        "connect-retry" => |p, d| {
            d.count(1, 2)?;
            // OpenVPN caps the base interval so that its exponential backoff cannot overflow.
            let initial = d.number::<u32>(0)?.min(0xFFFF);
            let max = d.opt_number::<u32>(1)?.map(|max| max.max(initial));
            p.settings().connect_retry = Some(ConnectRetry { initial, max });
            Ok(())
        },
        "connect-retry-max" => |p, d| {
            d.count(1, 1)?;
            p.profile.connect_retry_max = Some(d.number(0)?);
            Ok(())
        },
        "server-poll-timeout" | "connect-timeout" => |p, d| {
            d.count(1, 1)?;
            p.settings().server_poll_timeout = Some(d.number(0)?);
            Ok(())
        },
        "explicit-exit-notify" => |p, d| {
            d.count(0, 1)?;
            p.settings().explicit_exit_notify = Some(d.opt_number(0)?.unwrap_or(1));
            Ok(())
        },
        "mssfix" => |p, d| {
            d.count(0, 2)?;
            let size = d.opt_number(0)?;
            let mode = match d.opt(1) {
                None => MssfixMode::Payload,
                Some("mtu") => MssfixMode::Mtu,
                Some("fixed") => MssfixMode::Fixed,
                Some(other) => {
                    return Err(fatal(format!(
                        "unknown mssfix keyword `{other}`; use mtu or fixed"
                    )));
                }
            };
            // Without a size, OpenVPN uses its default and counts the whole packet.
            let mode = if size.is_none() {
                MssfixMode::Mtu
            } else {
                mode
            };
            p.settings().mssfix = Some(Mssfix { size, mode });
            Ok(())
        },
        "fragment" => |p, d| {
            d.count(1, 2)?;
            let size: u32 = d.number(0)?;
            if size < 68 {
                return Err(fatal("the fragment size must be at least 68 bytes"));
            }
            let mtu = match d.opt(1) {
                None => false,
                Some("mtu") => true,
                Some(other) => {
                    return Err(fatal(format!(
                        "unknown fragment keyword `{other}`; use mtu"
                    )));
                }
            };
            let line = d.line;
            p.settings().fragment = Some((line, Fragment { size, mtu }));
            Ok(())
        },
        "tun-mtu" => |p, d| {
            d.count(1, 2)?;
            let mtu = d.number(0)?;
            let _occ: Option<u32> = d.opt_number(1)?;
            p.settings().tun_mtu = Some(mtu);
            Ok(())
        },
        "link-mtu" => |p, d| {
            d.count(1, 1)?;
            p.settings().link_mtu = Some(d.number(0)?);
            Ok(())
        },
        "connection" => Parser::connection,

        // The device.
        "dev" => |p, d| {
            d.count(1, 1)?;
            p.dev = Some((d.line, d.word(0).to_owned()));
            p.profile.dev = Some(d.take(0));
            Ok(())
        },
        "dev-type" => |p, d| {
            d.count(1, 1)?;
            p.dev_type = Some((d.line, d.take(0)));
            Ok(())
        },
        "topology" => |p, d| {
            d.count(1, 1)?;
            p.profile.topology = Some(match d.word(0) {
                "net30" => Topology::Net30,
                "p2p" => Topology::P2p,
                "subnet" => Topology::Subnet,
                other => {
                    return Err(fatal(format!(
                        "unknown topology `{other}`; use net30, p2p or subnet"
                    )));
                }
            });
            Ok(())
        },
        "persist-key" => |p, d| {
            d.count(0, 0)?;
            p.profile.persist_key = true;
            Ok(())
        },
        "persist-tun" => |p, d| {
            d.count(0, 0)?;
            p.profile.persist_tun = true;
            Ok(())
        },

        // Data channel cryptography.
        "cipher" => |p, d| {
            d.count(1, 1)?;
            p.profile.cipher = Some(cipher(d.word(0))?);
            p.cipher_line = Some(d.line);
            Ok(())
        },
        "data-ciphers" | "ncp-ciphers" => Parser::data_ciphers,
        "data-ciphers-fallback" => |p, d| {
            d.count(1, 1)?;
            p.profile.data_ciphers_fallback = Some(cipher(d.word(0))?);
            Ok(())
        },
        "auth" => |p, d| {
            d.count(1, 1)?;
            let name = d.word(0);
            p.profile.auth = Some(name.parse::<Digest>().map_err(|_| {
                fatal(format!(
                    "erebus does not implement the HMAC digest `{name}`; use SHA1, SHA224, \
                     SHA256, SHA384, SHA512 or none"
                ))
            })?);
            Ok(())
        },
        "secret" => |p, d| {
            let key = d.material_with(1)?;
            if let Some(word) = d.opt(1) {
                p.global_wrap.key_direction = Some(key_direction(word)?);
            }
            p.secret_line = Some(d.line);
            p.profile.secret = Some(SharedSecret {
                key,
                direction: None,
            });
            Ok(())
        },
        "key-direction" => |p, d| {
            d.count(1, 1)?;
            p.wrap().key_direction = Some(key_direction(d.word(0))?);
            Ok(())
        },
        "tls-auth" => |p, d| {
            let key = d.material_with(1)?;
            if let Some(word) = d.opt(1) {
                p.wrap().key_direction = Some(key_direction(word)?);
            }
            p.tls_only(d);
            p.wrap().auth = Some((d.line, key));
            Ok(())
        },
        "tls-crypt" => |p, d| {
            let key = d.material()?;
            p.tls_only(d);
            p.wrap().crypt = Some((d.line, key));
            Ok(())
        },
        "tls-crypt-v2" => |p, d| {
            let key = d.material_with(1)?;
            match d.opt(1) {
                None => {}
                Some("force-cookie" | "allow-noncookie") => p.warn(
                    d,
                    "the cookie setting is ignored: it tells a server how to treat clients",
                ),
                Some(other) => {
                    return Err(fatal(format!(
                        "unknown tls-crypt-v2 keyword `{other}`; use force-cookie or \
                         allow-noncookie"
                    )));
                }
            }
            p.tls_only(d);
            p.wrap().crypt_v2 = Some((d.line, key));
            Ok(())
        },

        // TLS: certificates and their checks.
        "ca" => |p, d| {
            p.profile.ca = Some(d.material()?);
            p.tls_only(d);
            Ok(())
        },
        "cert" => |p, d| {
            p.profile.cert = Some(d.material()?);
            p.cert_line = Some(d.line);
            p.tls_only(d);
            Ok(())
        },
        "key" => |p, d| {
            p.profile.key = Some(d.material()?);
            p.key_line = Some(d.line);
            p.tls_only(d);
            Ok(())
        },
        "pkcs12" => |p, d| {
            p.profile.pkcs12 = Some(d.material()?);
            p.tls_only(d);
            Ok(())
        },
        "extra-certs" => |p, d| {
            p.profile.extra_certs = Some(d.material()?);
            p.tls_only(d);
            Ok(())
        },
        "crl-verify" => |p, d| {
            let crl = d.material_with(1)?;
            if let Some(word) = d.opt(1) {
                let message = if word == "dir" {
                    "a directory of revoked serial numbers is not supported; give the CRL \
                     file instead"
                        .to_owned()
                } else {
                    format!("unknown crl-verify keyword `{word}`")
                };
                return Err(fatal(message));
            }
            p.profile.crl_verify = Some(crl);
            p.tls_only(d);
            Ok(())
        },
        "askpass" => |p, d| {
            d.count(0, 1)?;
            p.profile.askpass = Some(match d.opt(0) {
                None => Askpass::Prompt,
                Some(_) => Askpass::File(PathBuf::from(d.take(0))),
            });
            Ok(())
        },
        "peer-fingerprint" => Parser::peer_fingerprint,
        "remote-cert-tls" => |p, d| {
            d.count(1, 1)?;
            p.profile.remote_cert_tls = Some(cert_role(d.word(0))?);
            p.tls_only(d);
            Ok(())
        },
        "ns-cert-type" => |p, d| {
            d.count(1, 1)?;
            p.profile.ns_cert_type = Some(cert_role(d.word(0))?);
            p.tls_only(d);
            Ok(())
        },
        "verify-x509-name" => |p, d| {
            d.count(1, 2)?;
            if d.word(0).is_empty() {
                return Err(fatal("the name to verify is empty"));
            }
            let kind = match d.opt(1) {
                None | Some("subject") => X509NameKind::Subject,
                Some("name") => X509NameKind::Name,
                Some("name-prefix") => X509NameKind::NamePrefix,
                Some(other) => {
                    return Err(fatal(format!(
                        "unknown X.509 name type `{other}`; use subject, name or name-prefix"
                    )));
                }
            };
            p.profile.verify_x509_name = Some(VerifyX509Name {
                name: d.take(0),
                kind,
            });
            p.tls_only(d);
            Ok(())
        },
        "tls-version-min" => |p, d| {
            d.count(1, 2)?;
            let or_highest = match d.opt(1) {
                None => false,
                Some("or-highest") => true,
                Some(other) => {
                    return Err(fatal(format!(
                        "unknown tls-version-min keyword `{other}`; use or-highest"
                    )));
                }
            };
            let version = TlsVersion::parse(d.word(0));
            if version.is_none() && !or_highest {
                return Err(fatal(format!(
                    "unknown TLS version `{}`; use 1.0, 1.1, 1.2 or 1.3",
                    d.word(0)
                )));
            }
            p.profile.tls_version_min = Some(TlsVersionMin {
                version,
                or_highest,
            });
            p.tls_only(d);
            Ok(())
        },
        "tls-version-max" => |p, d| {
            d.count(1, 1)?;
            p.profile.tls_version_max = Some(TlsVersion::parse(d.word(0)).ok_or_else(|| {
                fatal(format!(
                    "unknown TLS version `{}`; use 1.0, 1.1, 1.2 or 1.3",
                    d.word(0)
                ))
            })?);
            p.tls_version_max_line = Some(d.line);
            p.tls_only(d);
            Ok(())
        },
        "tls-cipher" => |p, d| {
            d.count(1, 1)?;
            p.profile.tls_cipher = Some(d.take(0));
            p.tls_only(d);
            Ok(())
        },
        "tls-ciphersuites" => |p, d| {
            d.count(1, 1)?;
            p.profile.tls_ciphersuites = Some(d.take(0));
            p.tls_only(d);
            Ok(())
        },
        "tls-groups" => |p, d| {
            d.count(1, 1)?;
            p.profile.tls_groups = Some(d.take(0));
            p.tls_only(d);
            Ok(())
        },
        "tls-cert-profile" => |p, d| {
            d.count(1, 1)?;
            p.profile.tls_cert_profile = Some(d.take(0));
            p.tls_only(d);
            Ok(())
        },
        "hand-window" => |p, d| {
            d.count(1, 1)?;
            p.profile.hand_window = Some(d.number(0)?);
            p.tls_only(d);
            Ok(())
        },
        "reneg-sec" => |p, d| {
            d.count(1, 2)?;
            p.profile.reneg_sec = Some(RenegSec {
                max: d.number(0)?,
                min: d.opt_number(1)?,
            });
            p.tls_only(d);
            Ok(())
        },
        "reneg-bytes" => |p, d| {
            d.count(1, 1)?;
            p.profile.reneg_bytes = Some(d.number(0)?);
            p.tls_only(d);
            Ok(())
        },
        "reneg-pkts" => |p, d| {
            d.count(1, 1)?;
            p.profile.reneg_pkts = Some(d.number(0)?);
            p.tls_only(d);
            Ok(())
        },
        "push-peer-info" => |p, d| {
            d.count(0, 0)?;
            p.profile.push_peer_info = true;
            p.tls_only(d);
            Ok(())
        },

        // Username and password.
        "auth-user-pass" => |p, d| {
            p.profile.auth_user_pass = Some(if d.inline.is_some() || !d.args.is_empty() {
                AuthUserPass::From(d.material()?)
            } else {
                AuthUserPass::Prompt
            });
            p.auth_user_pass_line = Some(d.line);
            Ok(())
        },
        "auth-nocache" => |p, d| {
            d.count(0, 0)?;
            p.profile.auth_nocache = true;
            Ok(())
        },
        "auth-retry" => |p, d| {
            d.count(1, 1)?;
            p.profile.auth_retry = Some(match d.word(0) {
                "none" => AuthRetry::None,
                "nointeract" => AuthRetry::NoInteract,
                "interact" => AuthRetry::Interact,
                other => {
                    return Err(fatal(format!(
                        "unknown auth-retry mode `{other}`; use none, nointeract or interact"
                    )));
                }
            });
            Ok(())
        },
        "auth-token" => |p, d| {
            d.count(1, 1)?;
            p.profile.auth_token = Some(SecretString::new(d.take(0)));
            Ok(())
        },
        "auth-token-user" => |p, d| {
            d.count(1, 1)?;
            p.profile.auth_token_user = Some(SecretString::new(d.take(0)));
            Ok(())
        },
        "static-challenge" => |p, d| {
            d.count(2, 3)?;
            let echo = d.number::<u32>(1)? != 0;
            let format = match d.opt(2) {
                None => None,
                Some(word @ ("scrv1" | "concat")) => Some(word.to_owned()),
                Some(other) => {
                    return Err(fatal(format!(
                        "unknown static-challenge format `{other}`; use scrv1 or concat"
                    )));
                }
            };
            p.profile.static_challenge = Some(StaticChallenge {
                text: d.take(0),
                echo,
                format,
            });
            Ok(())
        },

        // Compression.
        "comp-lzo" => |p, d| {
            d.count(0, 1)?;
            let compression = match d.opt(0) {
                None | Some("adaptive") => Compression::Lzo { adaptive: true },
                Some("yes") => Compression::Lzo { adaptive: false },
                Some("no") => Compression::LzoStub,
                Some(other) => {
                    return Err(fatal(format!(
                        "unknown comp-lzo mode `{other}`; use yes, no or adaptive"
                    )));
                }
            };
            p.compression(d, compression);
            Ok(())
        },
        "compress" => |p, d| {
            d.count(0, 1)?;
            let compression = match d.opt(0) {
                None | Some("stub") => Compression::Stub,
                Some("stub-v2") => Compression::StubV2,
                Some("migrate") => Compression::Migrate,
                Some("lzo") => Compression::Lzo { adaptive: false },
                Some("lz4") => Compression::Lz4,
                Some("lz4-v2") => Compression::Lz4V2,
                Some(other) => {
                    return Err(fatal(format!(
                        "unknown compression `{other}`; use stub, stub-v2, lzo, lz4, lz4-v2 \
                         or migrate (or no argument)"
                    )));
                }
            };
            p.compression(d, compression);
            Ok(())
        },
        "allow-compression" => |p, d| {
            d.count(1, 1)?;
            p.profile.allow_compression = Some(match d.word(0) {
                "no" => AllowCompression::No,
                "asym" => AllowCompression::Asym,
                "yes" => AllowCompression::Yes,
                other => {
                    return Err(fatal(format!(
                        "unknown allow-compression value `{other}`; use yes, no or asym"
                    )));
                }
            });
            Ok(())
        },

        // Timers.
        "keepalive" => |p, d| {
            d.count(2, 2)?;
            p.profile.keepalive = Some(Keepalive {
                interval: d.number(0)?,
                timeout: d.number(1)?,
            });
            Ok(())
        },
        "ping" => |p, d| {
            d.count(1, 1)?;
            p.profile.ping = Some(d.number(0)?);
            Ok(())
        },
        "ping-restart" => |p, d| {
            d.count(1, 1)?;
            p.profile.ping_restart = Some(d.number(0)?);
            Ok(())
        },
        "ping-exit" => |p, d| {
            d.count(1, 1)?;
            p.profile.ping_exit = Some(d.number(0)?);
            Ok(())
        },
        "inactive" => |p, d| {
            d.count(1, 2)?;
            p.profile.inactive = Some(Inactive {
                seconds: d.number(0)?,
                bytes: d.opt_number(1)?,
            });
            Ok(())
        },
        "session-timeout" => |p, d| {
            d.count(1, 1)?;
            p.profile.session_timeout = Some(d.number(0)?);
            Ok(())
        },

        // Routes, addresses and pushed options.
        "route-nopull" => |p, d| {
            d.count(0, 0)?;
            p.profile.route_nopull = true;
            Ok(())
        },
        "pull-filter" => |p, d| {
            d.count(2, 2)?;
            let action = match d.word(0) {
                "accept" => PullFilterAction::Accept,
                "ignore" => PullFilterAction::Ignore,
                "reject" => PullFilterAction::Reject,
                other => {
                    return Err(fatal(format!(
                        "unknown pull-filter action `{other}`; use accept, ignore or reject"
                    )));
                }
            };
            p.profile.pull_filters.push(PullFilter {
                action,
                text: d.take(1),
            });
            Ok(())
        },
        "redirect-gateway" => Parser::redirect_gateway,
        "route" => Parser::route,
        "route-ipv6" => |p, d| {
            d.count(1, 3)?;
            let network = ipv6_net(d.word(0), 0..=128)?;
            let gateway =
                match d.opt(1) {
                    None | Some("default") => None,
                    Some(word) => Some(word.parse::<Ipv6Addr>().map_err(|_| {
                        fatal(format!("the gateway `{word}` is not an IPv6 address"))
                    })?),
                };
            let metric = match d.opt(2) {
                None | Some("default") => None,
                Some(_) => Some(d.number(2)?),
            };
            p.profile.routes_ipv6.push(RouteIpv6 {
                network,
                gateway,
                metric,
            });
            Ok(())
        },
        "dhcp-option" => Parser::dhcp_option,
        "ifconfig" => |p, d| {
            d.count(2, 2)?;
            let parse = |word: &str| {
                word.parse::<Ipv4Addr>()
                    .map_err(|_| fatal(format!("`{word}` is not an IPv4 address")))
            };
            p.profile.ifconfig = Some(Ifconfig {
                local: parse(d.word(0))?,
                remote_or_netmask: parse(d.word(1))?,
            });
            Ok(())
        },
        "ifconfig-ipv6" => |p, d| {
            d.count(2, 2)?;
            let local = ipv6_net(d.word(0), 64..=124)?;
            let word = d.word(1);
            let remote = word
                .parse::<Ipv6Addr>()
                .map_err(|_| fatal(format!("`{word}` is not an IPv6 address")))?;
            p.profile.ifconfig_ipv6 = Some(IfconfigIpv6 { local, remote });
            Ok(())
        },

        // Environment and unknown options.
        "setenv" => Parser::setenv,
        "ignore-unknown-option" => |p, d| {
            d.count(1, usize::MAX)?;
            for word in &d.args {
                let name = word.strip_prefix("--").unwrap_or(word);
                p.profile.ignore_unknown_options.push(name.to_owned());
            }
            Ok(())
        },

        // Logging, replay protection, sockets.
        "verb" => |p, d| {
            d.count(1, 1)?;
            p.profile.verb = Some(d.number(0)?);
            Ok(())
        },
        "mute" => |p, d| {
            d.count(1, 1)?;
            p.profile.mute = Some(d.number(0)?);
            Ok(())
        },
        // OpenVPN 2.6 insists on it before it uses a static key; erebus needs no persuading.
        "allow-deprecated-insecure-static-crypto" => |_, d| d.count(0, 0),
        "mute-replay-warnings" => |p, d| {
            d.count(0, 0)?;
            p.profile.mute_replay_warnings = true;
            Ok(())
        },
        "replay-window" => |p, d| {
            d.count(1, 2)?;
            let size: u32 = d.number(0)?;
            if size > 65536 {
                return Err(fatal(
                    "the replay window must be between 0 and 65536 packets",
                ));
            }
            let seconds: Option<u32> = d.opt_number(1)?;
            if seconds.is_some_and(|s| s > 600) {
                return Err(fatal(
                    "the replay time window must be between 0 and 600 seconds",
                ));
            }
            p.profile.replay_window = Some(ReplayWindow { size, seconds });
            Ok(())
        },
        "sndbuf" => |p, d| {
            d.count(1, 1)?;
            p.profile.sndbuf = Some(d.number(0)?);
            Ok(())
        },
        "rcvbuf" => |p, d| {
            d.count(1, 1)?;
            p.profile.rcvbuf = Some(d.number(0)?);
            Ok(())
        },
        "txqueuelen" => |p, d| {
            d.count(1, 1)?;
            p.profile.txqueuelen = Some(d.number(0)?);
            Ok(())
        },
        "key-method" => |p, d| {
            d.count(1, 1)?;
            if d.word(0) == "2" {
                p.warn(d, "ignored: key method 2 is the only one OpenVPN 2.6 knows");
                Ok(())
            } else {
                Err(fatal("only key-method 2 exists in OpenVPN 2.6 and erebus"))
            }
        },

        // Accepted and ignored: scripts and plugins.
        "up"
        | "down"
        | "down-pre"
        | "up-restart"
        | "route-up"
        | "route-pre-down"
        | "ipchange"
        | "tls-verify"
        | "auth-user-pass-verify"
        | "script-security"
        | "plugin"
        | "tls-export-cert"
        | "dns-updown"
        | "setenv-safe"
        | "learn-address" => |p, d| {
            p.warn(d, SCRIPTS);
            Ok(())
        },
        // Accepted and ignored: the daemon process and its management interface.
        "user"
        | "group"
        | "daemon"
        | "log"
        | "log-append"
        | "status"
        | "status-version"
        | "chroot"
        | "writepid"
        | "cd"
        | "nice"
        | "mlock"
        | "syslog"
        | "suppress-timestamps"
        | "machine-readable-output"
        | "echo"
        | "service"
        | "management"
        | "management-client"
        | "management-query-passwords"
        | "management-hold"
        | "management-signal"
        | "management-forget-disconnect"
        | "management-up-down"
        | "management-client-auth"
        | "management-log-cache"
        | "management-client-user"
        | "management-client-group"
        | "management-query-proxy"
        | "management-query-remote"
        | "management-external-key-nopadding"
        | "errors-to-stderr"
        | "engine"
        | "providers"
        | "single-session"
        | "tls-exit"
        | "x509-track"
        | "auth-user-pass-optional"
        | "replay-persist"
        | "use-prediction-resistance"
        | "remap-usr1"
        | "show-net-up"
        | "tmp-dir" => |p, d| {
            p.warn(d, PROCESS);
            Ok(())
        },
        // Accepted and ignored: system routes, interfaces and DNS.
        "route-delay"
        | "route-method"
        | "route-metric"
        | "route-noexec"
        | "route-gateway"
        | "ifconfig-noexec"
        | "ifconfig-nowarn"
        | "block-outside-dns"
        | "register-dns"
        | "dhcp-release"
        | "dhcp-renew"
        | "dhcp-pre-release"
        | "win-sys"
        | "ip-win32"
        | "tap-sleep"
        | "dev-node"
        | "windows-driver"
        | "disable-dco"
        | "tun-ipv6"
        | "allow-recursive-routing"
        | "block-ipv6"
        | "allow-pull-fqdn"
        | "redirect-private"
        | "client-nat"
        | "persist-local-ip"
        | "persist-remote-ip"
        | "mtu-disc"
        | "mtu-test"
        | "fast-io"
        | "socket-flags"
        | "bind-dev"
        | "mark"
        | "iproute"
        | "tun-mtu-extra"
        | "tun-mtu-max"
        | "max-packet-size"
        | "dns"
        | "max-routes"
        | "lladdr"
        | "preresolve"
        | "ip-remote-hint" => |p, d| {
            p.warn(d, SYSTEM);
            Ok(())
        },
        // Accepted and ignored: timers erebus keeps at their defaults.
        "tls-timeout" | "tran-window" | "ping-timer-rem" => |p, d| {
            p.warn(d, TIMERS);
            Ok(())
        },
        "comp-noadapt" | "ncp-disable" | "compat-mode" | "prng" => |p, d| {
            p.warn(d, NO_EFFECT);
            Ok(())
        },

        // Refused: what erebus cannot honour.
        "http-proxy"
        | "http-proxy-option"
        | "http-proxy-user-pass"
        | "http-proxy-retry"
        | "http-proxy-timeout"
        | "http-proxy-override"
        | "socks-proxy"
        | "socks-proxy-retry" => |_, d| Err(fatal(format!("`{}` {PROXY}", d.name))),
        "server"
        | "server-bridge"
        | "server-ipv6"
        | "tls-server"
        | "push"
        | "push-reset"
        | "push-remove"
        | "dh"
        | "client-to-client"
        | "duplicate-cn"
        | "ifconfig-pool"
        | "ifconfig-pool-persist"
        | "ifconfig-ipv6-pool"
        | "client-config-dir"
        | "ccd-exclusive"
        | "client-connect"
        | "client-disconnect"
        | "auth-gen-token"
        | "verify-client-cert"
        | "username-as-common-name"
        | "port-share"
        | "max-clients"
        | "tls-crypt-v2-verify"
        | "iroute"
        | "iroute-ipv6"
        | "ifconfig-push"
        | "topology-push"
        | "connect-freq"
        | "hash-size"
        | "bcast-buffers"
        | "stale-routes-check" => |_, d| Err(fatal(format!("`{}` {SERVER}", d.name))),
        "pkcs11-providers"
        | "pkcs11-id"
        | "pkcs11-id-management"
        | "pkcs11-pin-cache"
        | "pkcs11-protected-authentication"
        | "pkcs11-private-mode"
        | "pkcs11-cert-private"
        | "cryptoapicert"
        | "management-external-key"
        | "management-external-cert" => |_, d| Err(fatal(format!("`{}` {TOKEN}", d.name))),
        "capath" => |_, _| {
            Err(fatal(
                "a directory of CA certificates is not supported; put the CA certificates in \
                 one file and name it with `ca`",
            ))
        },
        "verify-hash" => |_, _| {
            Err(fatal(
                "verify-hash is not supported; name the CA with `ca` or pin the server with \
                 `peer-fingerprint`",
            ))
        },
        "remote-cert-ku" | "remote-cert-eku" => |_, d| {
            Err(fatal(format!(
                "`{}` is not supported; use `remote-cert-tls server`, which checks the usual \
                 key usage and extended key usage of a server certificate",
                d.name
            )))
        },
        "no-replay" => |_, _| {
            Err(fatal(
                "erebus always protects the data channel against replayed packets; remove \
                 no-replay",
            ))
        },
        "config" => |_, _| {
            Err(fatal(
                "erebus reads a single profile; paste the included file into this one",
            ))
        },
        "key-derivation" | "protocol-flags" | "peer-id" | "route-gateway-dhcp" => |_, d| {
            Err(fatal(format!(
                "`{}` is only ever pushed by the server and cannot appear in a profile",
                d.name
            )))
        },
        _ => return None,
    };
    Some(handler)
}

impl Parser {
    /// Applies one directive, turning forgivable problems into warnings.
    fn apply(&mut self, raw: RawDirective) -> Result<(), ProfileError> {
        let RawDirective {
            line,
            mut name,
            mut args,
            inline,
        } = raw;
        // `setenv opt <directive>`: OpenVPN parses the directive but only warns when it does
        // not know it, so that a profile can carry options newer or other clients need.
        let mut marked_optional = false;
        if name == "setenv" && inline.is_none() && args.first().is_some_and(|a| a == "opt") {
            args.remove(0);
            if args.is_empty() {
                self.warnings.push(Warning {
                    line,
                    directive: name,
                    message: "`setenv opt` names no option; nothing to do".to_owned(),
                });
                return Ok(());
            }
            name = args.remove(0);
            marked_optional = true;
        }
        let mut directive = Dir {
            line,
            name,
            args,
            inline,
        };
        let Err(problem) = self.dispatch(&mut directive) else {
            return Ok(());
        };
        let Dir { name, .. } = directive;
        let listed = self.profile.ignore_unknown_options.contains(&name);
        let reason = match problem.kind {
            Kind::Nested(error) => return Err(*error),
            Kind::Fatal => None,
            Kind::ArgCount | Kind::Unknown => {
                if marked_optional {
                    Some("it is marked optional with `setenv opt`")
                } else if listed {
                    Some("it is listed in ignore-unknown-option")
                } else if self.forward_compatible {
                    Some("`setenv FORWARD_COMPATIBLE 1` is set")
                } else {
                    None
                }
            }
        };
        match reason {
            Some(reason) => {
                self.warnings.push(Warning {
                    line,
                    directive: name,
                    message: format!("{}; ignored because {reason}", problem.message),
                });
                Ok(())
            }
            None => Err(ProfileError {
                line: Some(line),
                directive: name,
                message: problem.message,
            }),
        }
    }

    fn dispatch(&mut self, d: &mut Dir) -> Outcome {
        let Some(handler) = handler(&d.name) else {
            return Err(Problem {
                kind: Kind::Unknown,
                message: "unknown option; if only another OpenVPN client needs it, list it in \
                          `ignore-unknown-option` or write it as `setenv opt <option> ...`"
                    .to_owned(),
            });
        };
        let name = d.name.as_str();
        if self.block.is_some() && !CONNECTION_DIRECTIVES.contains(&name) {
            return Err(fatal(format!(
                "`{name}` cannot be used inside a <connection> block; move it to the top level \
                 of the profile"
            )));
        }
        if d.inline.is_some() && !INLINE_DIRECTIVES.contains(&name) {
            return Err(fatal(format!(
                "`{name}` cannot be given as an inline <{name}> block"
            )));
        }
        if self.block.is_none()
            && !self.blocks.is_empty()
            && PER_CONNECTION_SETTINGS.contains(&name)
        {
            self.warn(
                d,
                "this comes after a <connection> block, so it only applies to the \
                 <connection> blocks that follow it",
            );
        }
        handler(self, d)
    }

    fn warn(&mut self, d: &Dir, message: &str) {
        self.warnings.push(Warning {
            line: d.line,
            directive: d.name.clone(),
            message: message.to_owned(),
        });
    }

    /// The per-connection settings of the current scope.
    fn settings(&mut self) -> &mut Settings {
        match &mut self.block {
            Some(block) => &mut block.settings,
            None => &mut self.top,
        }
    }

    /// The wrap settings of the current scope.
    fn wrap(&mut self) -> &mut Wrap {
        match &mut self.block {
            Some(block) => &mut block.settings.wrap,
            None => &mut self.global_wrap,
        }
    }

    /// Remembers the first directive that needs TLS, to refuse it in a non-TLS profile.
    fn tls_only(&mut self, d: &Dir) {
        if self.tls_only.is_none() {
            self.tls_only = Some((d.line, d.name.clone()));
        }
    }

    fn compression(&mut self, d: &Dir, compression: Compression) {
        if compression.compresses() {
            self.warn(
                d,
                "erebus never compresses: it sends packets uncompressed, which the server \
                 accepts, but cannot read packets the server compresses; ask for \
                 `compress stub-v2` or `comp-lzo no` on the server",
            );
        }
        self.profile.compression = Some(compression);
    }

    fn remote(&mut self, d: &mut Dir) -> Outcome {
        d.count(1, 3)?;
        if d.word(0).is_empty() {
            return Err(fatal("the server's name is empty"));
        }
        let port = match d.opt(1) {
            Some(_) => Some(d.port(1, false)?),
            None => None,
        };
        let proto = match d.opt(2) {
            Some(word) => Some(proto(word)?),
            None => None,
        };
        let spec = RemoteSpec {
            line: d.line,
            host: d.take(0),
            port,
            proto,
        };
        match &mut self.block {
            Some(block) => {
                if block.settings.remote.is_some() {
                    return Err(fatal("a <connection> block holds exactly one remote"));
                }
                block.settings.remote = Some(spec);
            }
            None => self.remotes.push(spec),
        }
        Ok(())
    }

    fn connection(&mut self, d: &mut Dir) -> Outcome {
        let Some(content) = d.inline.take() else {
            return Err(fatal(
                "connection must be given as an inline <connection> ... </connection> block",
            ));
        };
        // A block starts from the top-level settings given so far, but never from the
        // top-level wrap: that one is applied at the end to blocks without their own.
        let mut settings = self.top.clone();
        settings.remote = None;
        settings.wrap = Wrap::default();
        self.block = Some(Block {
            line: d.line,
            settings,
        });
        let result = lexer::directives(&content.content, content.first_line).and_then(|inner| {
            inner
                .into_iter()
                .try_for_each(|directive| self.apply(directive))
        });
        let block = self.block.take();
        if let Err(error) = result {
            return Err(Problem {
                kind: Kind::Nested(Box::new(error)),
                message: String::new(),
            });
        }
        let Some(block) = block else {
            return Err(fatal("internal error: the <connection> block was lost"));
        };
        if block.settings.remote.is_none() {
            return Err(fatal(
                "a <connection> block must contain exactly one remote, and this one has none",
            ));
        }
        self.blocks.push(block);
        Ok(())
    }

    fn data_ciphers(&mut self, d: &mut Dir) -> Outcome {
        d.count(1, 1)?;
        let mut ciphers = Vec::new();
        for name in d.word(0).split(':') {
            // OpenVPN 2.6 lets a `?` mark a cipher that may be skipped when unavailable.
            if let Some(optional) = name.strip_prefix('?') {
                match optional.parse::<DataCipher>() {
                    Ok(cipher) => ciphers.push(cipher),
                    Err(_) => self.warn(
                        d,
                        &format!(
                            "the optional cipher `{optional}` is skipped: erebus does not \
                             implement it"
                        ),
                    ),
                }
            } else {
                ciphers.push(cipher(name)?);
            }
        }
        if ciphers.is_empty() {
            return Err(fatal("the list names no cipher erebus implements"));
        }
        ciphers.dedup();
        self.profile.data_ciphers = Some(ciphers);
        Ok(())
    }

    fn peer_fingerprint(&mut self, d: &mut Dir) -> Outcome {
        if let Some(block) = d.inline.take() {
            let text = core::str::from_utf8(&block.content)
                .map_err(|_| fatal("the fingerprint block is not text"))?;
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                let fingerprint = sha256_fingerprint(line)?;
                self.profile.peer_fingerprints.push(fingerprint);
            }
        } else {
            d.count(1, 1)?;
            let fingerprint = sha256_fingerprint(d.word(0))?;
            self.profile.peer_fingerprints.push(fingerprint);
        }
        self.tls_only(d);
        Ok(())
    }

    fn redirect_gateway(&mut self, d: &mut Dir) -> Outcome {
        let mut flags = RedirectGateway {
            ipv4: true,
            ..RedirectGateway::default()
        };
        for word in &d.args {
            match word.as_str() {
                "local" => flags.local = true,
                "autolocal" => flags.autolocal = true,
                "def1" => flags.def1 = true,
                "bypass-dhcp" => flags.bypass_dhcp = true,
                "bypass-dns" => flags.bypass_dns = true,
                "block-local" => flags.block_local = true,
                "ipv6" => flags.ipv6 = true,
                "!ipv4" => flags.ipv4 = false,
                other => {
                    return Err(fatal(format!("unknown redirect-gateway flag `{other}`")));
                }
            }
        }
        self.profile.redirect_gateway = Some(flags);
        Ok(())
    }

    fn route(&mut self, d: &mut Dir) -> Outcome {
        d.count(1, 4)?;
        if d.word(0).is_empty() {
            return Err(fatal("the route's network is empty"));
        }
        let netmask = match d.opt(1) {
            None | Some("default") => None,
            Some(word) => Some(
                word.parse::<Ipv4Addr>()
                    .map_err(|_| fatal(format!("the netmask `{word}` is not an IPv4 address")))?,
            ),
        };
        if netmask.is_some_and(|mask| IpNet::from_netmask(Ipv4Addr::UNSPECIFIED, mask).is_none()) {
            return Err(fatal(format!(
                "the netmask `{}` is not a contiguous netmask",
                d.word(1)
            )));
        }
        let gateway = match d.opt(2) {
            None | Some("default") => None,
            Some(_) => Some(d.take(2)),
        };
        let metric = match d.opt(3) {
            None | Some("default") => None,
            Some(_) => Some(d.number(3)?),
        };
        self.profile.routes.push(Route {
            network: d.take(0),
            netmask,
            gateway,
            metric,
        });
        Ok(())
    }

    fn dhcp_option(&mut self, d: &mut Dir) -> Outcome {
        d.count(1, 2)?;
        let kind = d.word(0);
        let option = match (kind, d.opt(1)) {
            ("DNS" | "DNS6", Some(word)) => {
                let addr: IpAddr = word
                    .parse()
                    .map_err(|_| fatal(format!("`{word}` is not an IP address")))?;
                if kind == "DNS6" && addr.is_ipv4() {
                    return Err(fatal(format!("`{word}` is not an IPv6 address")));
                }
                DhcpOption::Dns(addr)
            }
            ("DOMAIN" | "ADAPTER_DOMAIN_SUFFIX", Some(_)) => DhcpOption::Domain(d.take(1)),
            ("DOMAIN-SEARCH", Some(_)) => DhcpOption::DomainSearch(d.take(1)),
            ("DNS" | "DNS6" | "DOMAIN" | "ADAPTER_DOMAIN_SUFFIX" | "DOMAIN-SEARCH", None) => {
                return Err(Problem {
                    kind: Kind::ArgCount,
                    message: format!("`dhcp-option {kind}` needs a value"),
                });
            }
            _ => DhcpOption::Other {
                kind: kind.to_owned(),
                value: d.opt(1).map(str::to_owned),
            },
        };
        self.profile.dhcp_options.push(option);
        Ok(())
    }

    fn setenv(&mut self, d: &mut Dir) -> Outcome {
        d.count(1, 2)?;
        let name = d.word(0);
        let value = d.opt(1);
        match (name, value) {
            ("GENERIC_CONFIG", _) => {
                return Err(fatal(
                    "this is a generic profile template that cannot be used directly",
                ));
            }
            ("REMOTE_RANDOM_HOSTNAME", None) => self.profile.remote_random_hostname = true,
            ("PUSH_PEER_INFO", None) => self.profile.push_peer_info = true,
            ("SERVER_POLL_TIMEOUT", Some(_)) => {
                self.settings().server_poll_timeout = Some(d.number(1)?);
            }
            ("FORWARD_COMPATIBLE", Some("1")) => self.forward_compatible = true,
            ("CLIENT_CERT", Some("0")) => self.profile.no_client_cert = true,
            _ => {}
        }
        self.profile.setenv.push(SetEnv {
            name: d.take(0),
            value: d.take(1),
        });
        Ok(())
    }

    /// Checks the profile as a whole and builds its connection list.
    fn finish(mut self) -> Result<(Profile, Vec<Warning>), ProfileError> {
        let tls = self.profile.tls_client;
        if let (true, Some(line)) = (tls, self.secret_line) {
            return Err(ProfileError::at(
                line,
                "secret",
                "a static key (`secret`) cannot be combined with TLS (`client` or \
                 `tls-client`): a profile is either static-key point-to-point or a TLS client",
            ));
        }
        if let (false, Some(line)) = (tls, self.pull_line) {
            return Err(ProfileError::at(
                line,
                "pull",
                "`pull` needs TLS: add `tls-client`, or use `client`, which means both",
            ));
        }
        if let (false, Some((line, name))) = (tls, &self.tls_only) {
            return Err(ProfileError::at(
                *line,
                name,
                format!(
                    "`{name}` only applies to TLS, and this profile has neither `client` nor \
                     `tls-client`"
                ),
            ));
        }
        if let (false, Some(line)) = (self.profile.pull, self.auth_user_pass_line) {
            return Err(ProfileError::at(
                line,
                "auth-user-pass",
                "`auth-user-pass` needs `pull` (or `client`): the credentials travel in the \
                 TLS handshake",
            ));
        }
        self.check_device()?;
        if let (Some(min), Some(max), Some(line)) = (
            self.profile.tls_version_min.and_then(|min| min.version),
            self.profile.tls_version_max,
            self.tls_version_max_line,
        ) && max < min
        {
            return Err(ProfileError::at(
                line,
                "tls-version-max",
                "tls-version-max is lower than tls-version-min",
            ));
        }
        self.check_cipher()?;
        if tls {
            self.check_client_authentication()?;
        }
        self.global_wrap.check()?;

        if let Some(secret) = &mut self.profile.secret {
            secret.direction = self.global_wrap.key_direction;
        }
        let global_wrap = self.global_wrap.build();
        let mut connections = Vec::new();
        if self.blocks.is_empty() {
            for remote in &self.remotes {
                connections.push(self.connection_for(remote, &self.top, global_wrap.clone())?);
            }
        } else {
            let ignored = self.remotes.iter().map(|remote| Warning {
                line: remote.line,
                directive: "remote".to_owned(),
                message: "ignored: the profile has <connection> blocks, and OpenVPN then uses \
                          only those"
                    .to_owned(),
            });
            let ignored: Vec<Warning> = ignored.collect();
            self.warnings.extend(ignored);
            for block in &self.blocks {
                let settings = &block.settings;
                settings.wrap.check()?;
                let wrap = if settings.wrap.is_set() {
                    settings.wrap.build()
                } else {
                    global_wrap.clone()
                };
                let Some(remote) = &settings.remote else {
                    return Err(ProfileError::at(
                        block.line,
                        "connection",
                        "a <connection> block must contain exactly one remote",
                    ));
                };
                connections.push(self.connection_for(remote, settings, wrap)?);
            }
        }
        if connections.is_empty() {
            return Err(ProfileError {
                line: None,
                directive: "remote".to_owned(),
                message: "the profile names no server: add a `remote <host> [port] [proto]` \
                          line"
                    .to_owned(),
            });
        }
        self.profile.connections = connections;
        Ok((self.profile, self.warnings))
    }

    fn connection_for(
        &self,
        remote: &RemoteSpec,
        settings: &Settings,
        tls_wrap: Option<TlsWrap>,
    ) -> Result<Connection, ProfileError> {
        let (line, spec, family) = match (remote.proto, settings.proto) {
            (Some((spec, family)), _) => (remote.line, spec, family),
            (None, Some((line, spec, family))) => (line, spec, family),
            (None, None) => (remote.line, ProtoSpec::Udp, AddressFamily::Any),
        };
        let directive = if remote.proto.is_some() || settings.proto.is_none() {
            "remote"
        } else {
            "proto"
        };
        let transport = match spec {
            ProtoSpec::Udp => Transport::Udp,
            ProtoSpec::TcpClient => Transport::Tcp,
            ProtoSpec::Tcp if self.profile.client => Transport::Tcp,
            ProtoSpec::Tcp => {
                return Err(ProfileError::at(
                    line,
                    directive,
                    "`tcp` is ambiguous without `client`: write `tcp-client` (erebus always \
                     connects to the server)",
                ));
            }
            ProtoSpec::TcpServer => {
                return Err(ProfileError::at(
                    line,
                    directive,
                    "erebus only connects to servers and cannot wait for one as a TCP server",
                ));
            }
        };
        if let (Transport::Tcp, Some((line, _))) = (transport, settings.fragment) {
            return Err(ProfileError::at(
                line,
                "fragment",
                "`fragment` only works over UDP, and this connection uses TCP",
            ));
        }
        Ok(Connection {
            line: remote.line,
            host: remote.host.clone(),
            port: remote.port.or(settings.remote_port).unwrap_or(DEFAULT_PORT),
            transport,
            family,
            local: settings.local.clone(),
            local_port: settings.local_port,
            nobind: settings.nobind,
            connect_retry: settings.connect_retry,
            server_poll_timeout: settings.server_poll_timeout,
            explicit_exit_notify: settings.explicit_exit_notify,
            float: settings.float,
            mssfix: settings.mssfix,
            fragment: settings.fragment.map(|(_, fragment)| fragment),
            tun_mtu: settings.tun_mtu,
            link_mtu: settings.link_mtu,
            tls_wrap,
        })
    }

    /// Only tun devices: erebus carries IP packets, not Ethernet frames.
    fn check_device(&self) -> Result<(), ProfileError> {
        let (line, directive, kind) = match (&self.dev_type, &self.dev) {
            (Some((line, kind)), _) => (*line, "dev-type", kind.as_str()),
            (None, Some((line, name))) => {
                let kind = ["tun", "tap", "null"]
                    .into_iter()
                    .find(|kind| name.starts_with(kind))
                    .unwrap_or(name);
                (*line, "dev", kind)
            }
            (None, None) => return Ok(()),
        };
        let message = match kind {
            "tun" => return Ok(()),
            "tap" => "erebus carries IP packets only (a tun device); tap devices, which bridge \
                 Ethernet frames, are not supported"
                .to_owned(),
            "null" => "a null device carries no traffic; erebus needs `dev tun`".to_owned(),
            other => format!(
                "cannot tell whether the device `{other}` is tun or tap; add `dev-type tun`"
            ),
        };
        Err(ProfileError::at(line, directive, message))
    }

    fn check_cipher(&mut self) -> Result<(), ProfileError> {
        match self.profile.mode() {
            Mode::StaticKey => {
                let line = self.secret_line.unwrap_or_default();
                match self.profile.cipher {
                    None => Err(ProfileError::at(
                        line,
                        "secret",
                        "a static-key profile must name its cipher: without `cipher`, OpenVPN \
                         uses BF-CBC, which erebus does not implement; add `cipher AES-256-CBC` \
                         (and the same on the server)",
                    )),
                    Some(cipher) if cipher.is_aead() => Err(ProfileError::at(
                        self.cipher_line.unwrap_or(line),
                        "cipher",
                        format!(
                            "{cipher} works only in TLS mode; a static-key profile needs a CBC \
                             cipher or none"
                        ),
                    )),
                    Some(_) => Ok(()),
                }
            }
            Mode::Tls => {
                if let (Some(cipher), Some(line), None) = (
                    self.profile.cipher,
                    self.cipher_line,
                    self.profile.data_ciphers_fallback,
                ) && !self.profile.negotiable_ciphers().contains(&cipher)
                {
                    self.warnings.push(Warning {
                        line,
                        directive: "cipher".to_owned(),
                        message: format!(
                            "{cipher} is not in the negotiated data ciphers, so it is ignored \
                             (as in OpenVPN 2.6); add it to `data-ciphers` or use \
                             `data-ciphers-fallback` for an old server"
                        ),
                    });
                }
                Ok(())
            }
            Mode::Plaintext => Ok(()),
        }
    }

    fn check_client_authentication(&self) -> Result<(), ProfileError> {
        let profile = &self.profile;
        if profile.ca.is_none() && profile.pkcs12.is_none() && profile.peer_fingerprints.is_empty()
        {
            return Err(ProfileError {
                line: None,
                directive: "ca".to_owned(),
                message: "a TLS profile needs `ca` (or `pkcs12` or `peer-fingerprint`) to \
                          verify the server"
                    .to_owned(),
            });
        }
        if profile.pkcs12.is_some() {
            if let Some((line, name)) = self
                .cert_line
                .map(|l| (l, "cert"))
                .or(self.key_line.map(|l| (l, "key")))
            {
                return Err(ProfileError::at(
                    line,
                    name,
                    format!("`{name}` cannot be combined with `pkcs12`, which holds both"),
                ));
            }
            return Ok(());
        }
        match (self.cert_line, self.key_line) {
            (Some(line), None) => Err(ProfileError::at(
                line,
                "cert",
                "`cert` needs its private key: add `key`",
            )),
            (None, Some(line)) => Err(ProfileError::at(
                line,
                "key",
                "`key` needs its certificate: add `cert`",
            )),
            (None, None) if profile.pull && profile.auth_user_pass.is_none() => Err(ProfileError {
                line: None,
                directive: "auth-user-pass".to_owned(),
                message: "the profile gives no way to authenticate the client: add `cert` \
                              and `key`, `pkcs12`, or `auth-user-pass`"
                    .to_owned(),
            }),
            (None, None) if !profile.pull => Err(ProfileError {
                line: None,
                directive: "cert".to_owned(),
                message: "`tls-client` without `pull` needs `cert` and `key` (or `pkcs12`)"
                    .to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// A `proto` word, refusing TCP server mode with a reason.
fn proto(word: &str) -> Result<(ProtoSpec, AddressFamily), Problem> {
    match parse_proto(word) {
        Some((ProtoSpec::TcpServer, _)) => Err(fatal(
            "erebus only connects to servers and cannot wait for one as a TCP server; use \
             tcp-client",
        )),
        Some(parsed) => Ok(parsed),
        None => Err(fatal(format!(
            "unknown protocol `{word}`; use udp, udp4, udp6, tcp, tcp-client, tcp4-client or \
             tcp6-client"
        ))),
    }
}

fn cipher(name: &str) -> Result<DataCipher, Problem> {
    name.parse::<DataCipher>().map_err(|_| {
        let supported: Vec<&str> = DataCipher::ALL.iter().map(|c| c.name()).collect();
        fatal(format!(
            "erebus does not implement the data cipher `{name}`; use one of {}",
            supported.join(", ")
        ))
    })
}

fn key_direction(word: &str) -> Result<KeyDirection, Problem> {
    KeyDirection::parse(word)
        .ok_or_else(|| fatal(format!("unknown key direction `{word}`; use 0 or 1")))
}

fn cert_role(word: &str) -> Result<CertRole, Problem> {
    CertRole::parse(word).ok_or_else(|| {
        fatal(format!(
            "unknown certificate role `{word}`; use server or client"
        ))
    })
}

/// An IPv6 network `addr[/bits]` whose prefix length lies in `bits`.
fn ipv6_net(word: &str, bits: core::ops::RangeInclusive<u8>) -> Result<IpNet, Problem> {
    let (addr, prefix) = match word.split_once('/') {
        Some((addr, prefix)) => (
            addr,
            prefix
                .parse::<u8>()
                .map_err(|_| fatal(format!("`{word}` has a bad prefix length")))?,
        ),
        None => (word, 128),
    };
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| fatal(format!("`{word}` is not an IPv6 address")))?;
    if !bits.contains(&prefix) {
        return Err(fatal(format!(
            "the prefix length of `{word}` must be between {} and {}",
            bits.start(),
            bits.end()
        )));
    }
    IpNet::new(IpAddr::V6(addr), prefix)
        .ok_or_else(|| fatal(format!("`{word}` has a bad prefix length")))
}

/// A SHA-256 fingerprint written as 32 colon-separated hex pairs.
fn sha256_fingerprint(text: &str) -> Result<[u8; 32], Problem> {
    let bad = || {
        fatal(format!(
            "`{text}` is not a SHA-256 fingerprint (32 hex byte pairs separated by colons)"
        ))
    };
    let mut out = [0u8; 32];
    let mut pairs = text.split(':');
    for byte in &mut out {
        let pair = pairs.next().ok_or_else(bad)?;
        if pair.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    if pairs.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}
