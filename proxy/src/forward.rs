//! Port forwards (`-L [bind:]port:host:hostport`): the spec parser and the relay front end.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use erebus_sansio::Instant;

use crate::host::{Host, HostError, parse_port};
use crate::pipes::Pipes;

/// One local port forward: connections accepted on `bind` are relayed to `host:host_port`
/// through the tunnel.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ForwardSpec {
    /// Where the driver listens. Defaults to 127.0.0.1.
    pub bind: SocketAddr,
    /// The destination, resolved through the tunnel when it is a name.
    pub host: Host,
    /// The destination port.
    pub host_port: u16,
}

/// Why a forward spec was refused.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ForwardSpecError {
    /// Not 3 or 4 colon-separated fields.
    #[error("expected [bind:]port:host:hostport, got {fields} field(s)")]
    FieldCount {
        /// How many fields were found.
        fields: usize,
    },
    /// A `[` without a matching `]`.
    #[error("unbalanced brackets")]
    Brackets,
    /// The bind address is not an IP address (or `localhost`, `*`).
    #[error("invalid bind address {0:?}: give an IP address, IPv6 in brackets")]
    Bind(String),
    /// The listening port is not 1 to 65535.
    #[error("invalid listening port {0:?}")]
    ListenPort(String),
    /// The destination host is not valid.
    #[error("invalid destination host {text:?}: {error}")]
    Host {
        /// The text given.
        text: String,
        /// What is wrong with it.
        error: HostError,
    },
    /// The destination port is not 1 to 65535.
    #[error("invalid destination port {0:?}")]
    HostPort(String),
}

impl ForwardSpec {
    /// Parses `[bind:]port:host:hostport` as ssh's `-L` does: IPv6 addresses in brackets
    /// (`[::1]:8080:[fd00::5]:22`), `localhost` and `*` accepted as bind addresses.
    ///
    /// # Errors
    ///
    /// [`ForwardSpecError`] naming the field that is wrong.
    pub fn parse(spec: &str) -> Result<Self, ForwardSpecError> {
        let fields = split_fields(spec)?;
        let (bind, port, host, host_port) = match fields.as_slice() {
            [port, host, host_port] => (None, *port, *host, *host_port),
            [bind, port, host, host_port] => (Some(*bind), *port, *host, *host_port),
            other => {
                return Err(ForwardSpecError::FieldCount {
                    fields: other.len(),
                });
            }
        };
        let bind_ip = match bind {
            None | Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some("*") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(text) => {
                let inner = text
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .unwrap_or(text);
                let ip: IpAddr = inner
                    .parse()
                    .map_err(|_| ForwardSpecError::Bind(text.to_owned()))?;
                // An IPv6 bind address must come in brackets; an IPv4 one must not.
                if ip.is_ipv6() != text.starts_with('[') {
                    return Err(ForwardSpecError::Bind(text.to_owned()));
                }
                ip
            }
        };
        let listen_port = parse_port(port.as_bytes())
            .map_err(|_| ForwardSpecError::ListenPort(port.to_owned()))?;
        let host = Host::parse(host).map_err(|error| ForwardSpecError::Host {
            text: host.to_owned(),
            error,
        })?;
        let host_port = parse_port(host_port.as_bytes())
            .map_err(|_| ForwardSpecError::HostPort(host_port.to_owned()))?;
        Ok(Self {
            bind: SocketAddr::new(bind_ip, listen_port),
            host,
            host_port,
        })
    }
}

impl fmt::Display for ForwardSpec {
    /// The spec in the form [`ForwardSpec::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.bind,
            self.host.authority(),
            self.host_port
        )
    }
}

/// Splits on colons outside brackets.
fn split_fields(spec: &str) -> Result<Vec<&str>, ForwardSpecError> {
    let mut fields = Vec::with_capacity(4);
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in spec.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return Err(ForwardSpecError::Brackets),
            ':' if depth == 0 => {
                fields.push(spec.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(ForwardSpecError::Brackets);
    }
    fields.push(spec.get(start..).unwrap_or_default());
    Ok(fields)
}

/// The port-forward front end: connect at once, then relay.
#[derive(Debug)]
pub(crate) struct Forward {
    connecting: bool,
}

impl Forward {
    pub(crate) fn new(now: Instant, pipes: &mut Pipes, host: Host, port: u16) -> Self {
        pipes.connect(now, host, port);
        Self { connecting: true }
    }

    pub(crate) fn deadline(&self, pipes: &Pipes) -> Option<Instant> {
        if self.connecting {
            pipes.connect_deadline()
        } else {
            None
        }
    }

    pub(crate) fn on_client_data(&mut self, now: Instant, pipes: &mut Pipes, data: &[u8]) {
        // Held until the stream opens; the client is paused if it sends too much.
        pipes.relay_client_data(now, data);
    }

    pub(crate) fn on_client_eof(&mut self, _now: Instant, pipes: &mut Pipes) {
        pipes.shutdown_upstream_after_flush();
    }

    pub(crate) fn on_upstream_connected(&mut self, _now: Instant, pipes: &mut Pipes) {
        if self.connecting {
            self.connecting = false;
            pipes.relaying = true;
        }
    }

    /// A forward has no way to say why; the client just sees its connection closed.
    pub(crate) fn on_upstream_failed(&mut self, pipes: &mut Pipes) {
        self.connecting = false;
        pipes.close();
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, pipes: &mut Pipes) {
        if self.connecting && pipes.connect_expired(now) {
            self.connecting = false;
            pipes.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_three_field_form_with_loopback_bind() {
        let spec = ForwardSpec::parse("8080:intranet.corp:80").unwrap();
        assert_eq!(spec.bind, SocketAddr::new(ip("127.0.0.1"), 8080));
        assert_eq!(spec.host, Host::Name("intranet.corp".into()));
        assert_eq!(spec.host_port, 80);
    }

    #[test]
    fn parses_bind_addresses() {
        let spec = ForwardSpec::parse("0.0.0.0:2222:10.0.0.5:22").unwrap();
        assert_eq!(spec.bind, SocketAddr::new(ip("0.0.0.0"), 2222));
        assert_eq!(spec.host, Host::Ip(ip("10.0.0.5")));
        let spec = ForwardSpec::parse("[::1]:8080:[fd00::5]:22").unwrap();
        assert_eq!(spec.bind, SocketAddr::new(ip("::1"), 8080));
        assert_eq!(spec.host, Host::Ip(ip("fd00::5")));
        assert_eq!(spec.host_port, 22);
        let spec = ForwardSpec::parse("localhost:1:h:2").unwrap();
        assert_eq!(spec.bind, SocketAddr::new(ip("127.0.0.1"), 1));
        let spec = ForwardSpec::parse("*:1:h:2").unwrap();
        assert_eq!(spec.bind, SocketAddr::new(ip("0.0.0.0"), 1));
    }

    #[test]
    fn display_round_trips() {
        for text in ["127.0.0.1:8080:intranet.corp:80", "[::1]:8080:[fd00::5]:22"] {
            let spec = ForwardSpec::parse(text).unwrap();
            assert_eq!(spec.to_string(), text);
            assert_eq!(ForwardSpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }

    #[test]
    fn errors_name_the_bad_field() {
        let err = |s: &str| ForwardSpec::parse(s).unwrap_err();
        assert_eq!(err("8080:host"), ForwardSpecError::FieldCount { fields: 2 });
        assert_eq!(err("a:b:c:d:e"), ForwardSpecError::FieldCount { fields: 5 });
        assert_eq!(
            err("::1:8080:h:80"),
            ForwardSpecError::FieldCount { fields: 6 }
        );
        assert_eq!(err("[::1:8080:h:80"), ForwardSpecError::Brackets);
        assert_eq!(err("::1]:8080:h:80"), ForwardSpecError::Brackets);
        assert_eq!(
            err("nothost:8080:h:80"),
            ForwardSpecError::Bind("nothost".into())
        );
        assert_eq!(
            err("[10.0.0.1]:8080:h:80"),
            ForwardSpecError::Bind("[10.0.0.1]".into())
        );
        assert_eq!(err("0:h:80"), ForwardSpecError::ListenPort("0".into()));
        assert_eq!(
            err("http:h:80"),
            ForwardSpecError::ListenPort("http".into())
        );
        assert_eq!(
            err("80:h:65536"),
            ForwardSpecError::HostPort("65536".into())
        );
        assert_eq!(err("80:h:"), ForwardSpecError::HostPort(String::new()));
        assert_eq!(
            err("80:bad host:22"),
            ForwardSpecError::Host {
                text: "bad host".into(),
                error: HostError::InvalidName
            }
        );
        assert_eq!(
            err("80::22"),
            ForwardSpecError::Host {
                text: String::new(),
                error: HostError::Empty
            }
        );
        let message = err("80:h:65536").to_string();
        assert!(message.contains("destination port"), "{message}");
    }
}
