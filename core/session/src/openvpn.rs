//! OpenVPN behind the supervisor: a profile and the bytes of the files it names, turned into
//! one session per attempt.

use core::ops::Range;
use core::time::Duration;
use std::net::SocketAddr;

use erebus_openvpn::config::{
    AuthUserPass, ConnectRetry, Credentials, Material, Mode, Profile, ResolvRetry, SecretString,
    TlsWrap,
};
use erebus_openvpn::setup::{TlsMaterials, p2p_config, tls_config};
use erebus_openvpn::{P2pSession, TlsSession};
use erebus_sansio::io::TransportError;
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Failure, Fault, Overhead, TransportSpec, Tunnel, TunnelEvent,
};
use erebus_sansio::{Instant, Seed, WallClock};
use zeroize::Zeroizing;

use crate::retry::{Remote, RetryPolicy};
use crate::supervisor::Protocol;
use crate::{FileReader, LoadError, Overrides};

/// An OpenVPN session of either kind.
#[derive(Debug)]
pub enum OpenVpnTunnel {
    /// TLS client mode.
    Tls(Box<TlsSession>),
    /// Static-key or plaintext point-to-point mode.
    P2p(Box<P2pSession>),
}

macro_rules! delegate {
    ($self:ident, $session:ident => $call:expr) => {
        match $self {
            OpenVpnTunnel::Tls($session) => $call,
            OpenVpnTunnel::P2p($session) => $call,
        }
    };
}

impl Tunnel for OpenVpnTunnel {
    fn transport(&self) -> Option<&TransportSpec> {
        delegate!(self, s => s.transport())
    }

    fn overhead(&self) -> Overhead {
        delegate!(self, s => s.overhead())
    }

    fn transport_connected(&mut self, now: Instant, remote: SocketAddr) {
        delegate!(self, s => s.transport_connected(now, remote));
    }

    fn transport_closed(&mut self, now: Instant, error: TransportError) {
        delegate!(self, s => s.transport_closed(now, error));
    }

    fn decapsulate(&mut self, now: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        delegate!(self, s => s.decapsulate(now, packet))
    }

    fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        delegate!(self, s => s.encapsulate(now, buf, inner))
    }

    fn handle_timeout(&mut self, now: Instant) {
        delegate!(self, s => s.handle_timeout(now));
    }

    fn close(&mut self, now: Instant) {
        delegate!(self, s => s.close(now));
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Result<usize, usize>> {
        delegate!(self, s => s.poll_transmit(now, buf))
    }

    fn poll_event(&mut self) -> Option<TunnelEvent> {
        delegate!(self, s => s.poll_event())
    }

    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        delegate!(self, s => s.poll_timeout())
    }
}

type Bytes = Zeroizing<Vec<u8>>;

/// An OpenVPN profile with every file it names already read: builds a session for any of its
/// connections, and carries the pushed `auth-token` from one session to the next.
pub struct OpenVpnProtocol {
    profile: Profile,
    ca: Option<Bytes>,
    cert: Option<Bytes>,
    key: Option<Bytes>,
    extra_certs: Option<Bytes>,
    secret: Option<Bytes>,
    /// The tls-auth/tls-crypt key of each connection (a `<connection>` block may have its own).
    wrap_keys: Vec<Option<Bytes>>,
    credentials: Option<Credentials>,
    auth_token: Option<SecretString>,
}

impl core::fmt::Debug for OpenVpnProtocol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenVpnProtocol")
            .field("mode", &self.profile.mode())
            .field("connections", &self.profile.connections.len())
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<secret>"))
            .finish_non_exhaustive()
    }
}

impl OpenVpnProtocol {
    /// Reads what `profile` names through `files`, with `overrides` taking the place of the
    /// profile's own choices.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, or credentials that are missing or malformed.
    pub(crate) fn load(
        mut profile: Profile,
        name: &str,
        files: &mut FileReader<'_>,
        overrides: Overrides,
    ) -> Result<Self, LoadError> {
        let mut read = |material: Option<&Material>| -> Result<Option<Bytes>, LoadError> {
            match material {
                None => Ok(None),
                Some(Material::Inline(bytes)) => Ok(Some(Zeroizing::new(bytes.expose().to_vec()))),
                Some(Material::File(path)) => {
                    files(path).map(Some).map_err(|reason| LoadError::File {
                        path: path.clone(),
                        reason,
                    })
                }
            }
        };
        let ca = read(profile.ca.as_ref())?;
        let cert = read(profile.cert.as_ref())?;
        let key = read(profile.key.as_ref())?;
        let extra_certs = read(profile.extra_certs.as_ref())?;
        let secret = read(profile.secret.as_ref().map(|secret| &secret.key))?;
        let wrap_keys = profile
            .connections
            .iter()
            .map(|connection| {
                read(connection.tls_wrap.as_ref().map(|wrap| match wrap {
                    TlsWrap::Auth { key, .. }
                    | TlsWrap::Crypt { key }
                    | TlsWrap::CryptV2 { key } => key,
                }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let credentials_bytes = match (&profile.auth_user_pass, overrides.auth_user_pass) {
            // Given on the command line: used whatever the profile says, as the stock client
            // does with `--auth-user-pass FILE`.
            (_, Some(bytes)) => Some(bytes),
            (None, None) => None,
            (Some(AuthUserPass::From(material)), None) => read(Some(material))?,
            (Some(AuthUserPass::Prompt), None) => {
                return Err(LoadError::Config(format!(
                    "{name}: the profile asks for a username and password ('auth-user-pass'): \
                     pass them with --auth-user-pass FILE (username on the first line, \
                     password on the second)"
                )));
            }
        };
        let credentials = match credentials_bytes {
            Some(bytes) => Some(
                Credentials::parse(&bytes)
                    .map_err(|e| LoadError::Config(format!("{name}: auth-user-pass: {e}")))?,
            ),
            None => None,
        };
        if credentials.is_some() && profile.auth_user_pass.is_none() {
            profile.auth_user_pass = Some(AuthUserPass::Prompt);
        }
        Ok(Self {
            profile,
            ca,
            cert,
            key,
            extra_certs,
            secret,
            wrap_keys,
            credentials,
            auth_token: None,
        })
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The `auth-token` the last session was given, if any.
    pub fn auth_token(&self) -> Option<&SecretString> {
        self.auth_token.as_ref()
    }

    /// The servers the profile names, in its order, with their retry settings.
    pub(crate) fn remotes(&self) -> Vec<Remote> {
        self.profile
            .connections
            .iter()
            .enumerate()
            .map(|(index, connection)| {
                let (retry_delay, max_retry_delay) = match connection.connect_retry {
                    Some(ConnectRetry { initial, max }) => (
                        Duration::from_secs(u64::from(initial)),
                        max.map_or(Remote::DEFAULT_MAX_RETRY_DELAY, |m| {
                            Duration::from_secs(u64::from(m))
                        }),
                    ),
                    None => (Remote::DEFAULT_RETRY_DELAY, Remote::DEFAULT_MAX_RETRY_DELAY),
                };
                Remote {
                    index,
                    host: connection.host.clone(),
                    port: connection.port,
                    kind: connection.transport.kind(),
                    retry_delay,
                    max_retry_delay,
                    poll_timeout: connection
                        .server_poll_timeout
                        .filter(|s| *s > 0)
                        .map_or(Remote::DEFAULT_POLL_TIMEOUT, |s| {
                            Duration::from_secs(u64::from(s))
                        }),
                }
            })
            .collect()
    }

    /// The rules across servers.
    pub(crate) fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_tries_per_remote: self.profile.connect_retry_max.filter(|n| *n > 0),
            resolve_for: match self.profile.resolv_retry {
                None | Some(ResolvRetry::Infinite) => None,
                Some(ResolvRetry::Seconds(seconds)) => {
                    Some(Duration::from_secs(u64::from(seconds)))
                }
            },
            random_order: self.profile.remote_random,
        }
    }

    fn build_session(
        &self,
        index: usize,
        remote: SocketAddr,
        seed: &Seed,
        wall_clock: WallClock,
        now: Instant,
    ) -> Result<OpenVpnTunnel, String> {
        let profile = &self.profile;
        let connection = profile
            .connections
            .get(index)
            .ok_or_else(|| format!("the profile has no connection number {index}"))?;
        fn bytes(b: &Option<Bytes>) -> Option<&[u8]> {
            b.as_ref().map(|b| b.as_slice())
        }
        match profile.mode() {
            Mode::Plaintext | Mode::StaticKey => {
                let config =
                    p2p_config(profile, connection, remote, bytes(&self.secret), wall_clock)
                        .map_err(|e| e.to_string())?;
                let session = P2pSession::new(config, &seed.child("openvpn.session"), now)
                    .map_err(|e| e.to_string())?;
                Ok(OpenVpnTunnel::P2p(Box::new(session)))
            }
            Mode::Tls => {
                let materials = TlsMaterials {
                    ca: bytes(&self.ca),
                    cert: bytes(&self.cert),
                    key: bytes(&self.key),
                    extra_certs: bytes(&self.extra_certs),
                    tls_wrap_key: self.wrap_keys.get(index).and_then(bytes),
                    user_pass: self.credentials.as_ref(),
                };
                let mut config = tls_config(profile, index, remote, &materials, wall_clock)
                    .map_err(|e| e.to_string())?;
                config.auth_token.clone_from(&self.auth_token);
                let session = TlsSession::new(config, &seed.child("openvpn.session"), now)
                    .map_err(|e| e.to_string())?;
                Ok(OpenVpnTunnel::Tls(Box::new(session)))
            }
        }
    }

    /// Checks that a session can be built from the profile and its files, so that a broken
    /// profile is refused before anything is sent.
    pub(crate) fn check(&self, wall_clock: WallClock) -> Result<(), String> {
        let probe: SocketAddr = ([192, 0, 2, 1], 1194).into();
        (0..self.profile.connections.len()).try_for_each(|index| {
            self.build_session(index, probe, &Seed::from_byte(0), wall_clock, Instant::ZERO)
                .map(drop)
        })
    }
}

impl Protocol for OpenVpnProtocol {
    type Tunnel = OpenVpnTunnel;

    fn build(
        &mut self,
        index: usize,
        remote: SocketAddr,
        seed: &Seed,
        wall_clock: WallClock,
        now: Instant,
    ) -> Result<OpenVpnTunnel, Failure> {
        self.build_session(index, remote, seed, wall_clock, now)
            .map_err(|message| Failure::new(Fault::Config, message))
    }

    fn retire(&mut self, tunnel: &OpenVpnTunnel) {
        // The session started with this protocol's token and holds it, a newer one the server
        // pushed, or none after the server refused it; keeping a refused token would send it
        // again and again.
        if let OpenVpnTunnel::Tls(session) = tunnel {
            self.auth_token = session.auth_token().cloned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("../../../testvectors/tls-pki/ca.crt");

    fn protocol() -> OpenVpnProtocol {
        let profile = "client\ndev tun\nremote 10.99.0.1\nca ca.crt\nauth-user-pass creds.txt\n";
        let (profile, _) = Profile::parse(profile.as_bytes()).unwrap();
        let mut files = |path: &std::path::Path| {
            let text = match path.to_str() {
                Some("ca.crt") => CA,
                Some("creds.txt") => "alice\nsecret\n",
                _ => return Err(format!("{}: no such file", path.display())),
            };
            Ok(Zeroizing::new(text.as_bytes().to_vec()))
        };
        OpenVpnProtocol::load(profile, "test.ovpn", &mut files, Overrides::default()).unwrap()
    }

    fn build(protocol: &mut OpenVpnProtocol) -> OpenVpnTunnel {
        let wall = WallClock::new(
            Instant::ZERO,
            erebus_sansio::UnixTime::from_secs(1_800_000_000),
        );
        protocol
            .build(
                0,
                "10.99.0.1:1194".parse().unwrap(),
                &Seed::from_byte(1),
                wall,
                Instant::ZERO,
            )
            .unwrap()
    }

    fn token_of(tunnel: &OpenVpnTunnel) -> Option<String> {
        match tunnel {
            OpenVpnTunnel::Tls(session) => session.auth_token().map(|t| t.expose().to_owned()),
            OpenVpnTunnel::P2p(_) => None,
        }
    }

    #[test]
    fn a_pushed_auth_token_is_given_to_the_next_session() {
        let mut protocol = protocol();
        let first = build(&mut protocol);
        assert_eq!(
            token_of(&first),
            None,
            "no token before the server pushed one"
        );
        protocol.retire(&first);
        assert!(protocol.auth_token().is_none());
        // The server pushed `auth-token` to a session; when that session is lost, the next
        // one sends the token instead of the password.
        protocol.auth_token = Some(SecretString::new("pushed-token".into()));
        let second = build(&mut protocol);
        assert_eq!(token_of(&second).as_deref(), Some("pushed-token"));
        protocol.retire(&second);
        let third = build(&mut protocol);
        assert_eq!(token_of(&third).as_deref(), Some("pushed-token"));
    }

    #[test]
    fn a_refused_auth_token_is_not_given_to_the_next_session() {
        let mut protocol = protocol();
        // A session that ends holding no token (it forgets one the server refused with
        // AUTH_FAILED) takes the protocol's token with it: the next session sends the password.
        let session = build(&mut protocol);
        protocol.auth_token = Some(SecretString::new("refused-token".into()));
        protocol.retire(&session);
        assert!(protocol.auth_token().is_none());
        let next = build(&mut protocol);
        assert_eq!(token_of(&next), None, "the next session sends the password");
    }
}
