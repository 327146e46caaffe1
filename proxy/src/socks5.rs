//! The SOCKS5 front end (RFC 1928) with username/password authentication (RFC 1929).
//!
//! Only CONNECT is offered. Domain names are passed down unresolved, so they are resolved by
//! the tunnel's DNS servers (what clients call `socks5h`). Clients that send their request,
//! or even their first data, before the replies arrive are served: everything after the
//! request is queued for the upstream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use erebus_sansio::Instant;

use crate::UpstreamFailure;
use crate::host::Host;
use crate::pipes::Pipes;

const VERSION: u8 = 5;
const AUTH_VERSION: u8 = 1;
const METHOD_NONE: u8 = 0x00;
const METHOD_USER_PASS: u8 = 0x02;
const METHOD_UNACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_IPV4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_IPV6: u8 = 4;
/// The largest handshake message: an authentication request of 1 + 1 + 255 + 1 + 255 bytes.
const MAX_MESSAGE: usize = 513;

/// SOCKS5 reply codes (RFC 1928 §6).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    // 0x03, network unreachable, is never sent: a tunnel that is down is our failure, not
    // the destination network's, and gets a general failure.
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    fn for_failure(failure: UpstreamFailure) -> Self {
        match failure {
            UpstreamFailure::Refused => Self::ConnectionRefused,
            UpstreamFailure::Unreachable | UpstreamFailure::NameNotFound => Self::HostUnreachable,
            // Timeouts are reported as "TTL expired", as other SOCKS servers do: it is the
            // only code that says the attempt ran out of time.
            UpstreamFailure::Timeout => Self::TtlExpired,
            UpstreamFailure::NotAllowed => Self::NotAllowed,
            // The tunnel being down or a limit of ours reached is our own failure, not the
            // destination network's.
            UpstreamFailure::Reset
            | UpstreamFailure::Other
            | UpstreamFailure::TunnelDown
            | UpstreamFailure::TooManyConnections
            | UpstreamFailure::TooManyLookups => Self::GeneralFailure,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Waiting for the version/methods greeting.
    Greeting,
    /// Username/password sub-negotiation.
    Auth,
    /// Waiting for the request.
    Request,
    /// CONNECT sent down; waiting for the upstream.
    Connecting,
    /// Relaying or closing: `Pipes` handles everything.
    Done,
}

/// The per-connection SOCKS5 state.
#[derive(Debug)]
pub(crate) struct Socks5 {
    state: State,
    /// Handshake bytes not yet consumed.
    inbuf: Vec<u8>,
    /// The handshake must be complete by then.
    deadline: Instant,
}

impl Socks5 {
    pub(crate) fn new(now: Instant, pipes: &Pipes) -> Self {
        Self {
            state: State::Greeting,
            inbuf: Vec::new(),
            deadline: now + pipes.config.handshake_timeout,
        }
    }

    pub(crate) fn backlog(&self) -> usize {
        self.inbuf.len()
    }

    pub(crate) fn deadline(&self, pipes: &Pipes) -> Option<Instant> {
        match self.state {
            State::Greeting | State::Auth | State::Request => Some(self.deadline),
            State::Connecting => pipes.connect_deadline(),
            State::Done => None,
        }
    }

    pub(crate) fn on_client_data(&mut self, now: Instant, pipes: &mut Pipes, data: &[u8]) {
        if self.state == State::Connecting {
            pipes.relay_client_data(now, data);
            return;
        }
        self.inbuf.extend_from_slice(data);
        let mut used = 0;
        loop {
            let rest = self.inbuf.get(used..).unwrap_or_default();
            let step = match self.state {
                State::Greeting => greeting(rest, pipes),
                State::Auth => auth(rest, pipes),
                State::Request => request(rest),
                State::Connecting | State::Done => break,
            };
            match step {
                Step::NeedMore => {
                    // A message can never be longer than this; a client that claims otherwise
                    // is not speaking SOCKS5.
                    if rest.len() > MAX_MESSAGE {
                        self.fail(now, pipes, None);
                    }
                    break;
                }
                Step::Reply {
                    bytes,
                    used: n,
                    next,
                } => {
                    pipes.send_client(bytes.as_slice());
                    used += n;
                    match next {
                        Some(state) => self.state = state,
                        None => {
                            self.state = State::Done;
                            pipes.begin_linger(now);
                            break;
                        }
                    }
                }
                Step::Refuse { reply, used: n } => {
                    used += n;
                    self.fail(now, pipes, Some(reply));
                    break;
                }
                Step::Close => {
                    self.state = State::Done;
                    pipes.close();
                    break;
                }
                Step::Connect {
                    host,
                    port,
                    used: n,
                } => {
                    used += n;
                    pipes.connect(now, host, port);
                    self.state = State::Connecting;
                    // Anything after the request is the client's first data.
                    let early = self.inbuf.get(used..).unwrap_or_default();
                    pipes.relay_client_data(now, early);
                    used = self.inbuf.len();
                    break;
                }
            }
        }
        if matches!(self.state, State::Done | State::Connecting) {
            self.inbuf.clear();
        } else {
            self.inbuf.drain(..used.min(self.inbuf.len()));
        }
    }

    /// Sends a failure reply (or none, when no request was read) and closes.
    fn fail(&mut self, now: Instant, pipes: &mut Pipes, reply: Option<Reply>) {
        if let Some(reply) = reply {
            pipes.send_client(&reply_bytes(reply, None));
        }
        self.state = State::Done;
        self.inbuf.clear();
        pipes.begin_linger(now);
    }

    pub(crate) fn on_client_eof(&mut self, _now: Instant, pipes: &mut Pipes) {
        match self.state {
            // The handshake can never finish now.
            State::Greeting | State::Auth | State::Request => {
                self.state = State::Done;
                pipes.close();
            }
            // The request is complete: connect anyway and half-close the stream once open.
            State::Connecting => pipes.shutdown_upstream_after_flush(),
            State::Done => {}
        }
    }

    pub(crate) fn on_upstream_connected(
        &mut self,
        _now: Instant,
        pipes: &mut Pipes,
        local: Option<SocketAddr>,
    ) {
        if self.state == State::Connecting {
            pipes.send_client(&reply_bytes(Reply::Succeeded, local));
            self.state = State::Done;
            pipes.relaying = true;
        }
    }

    pub(crate) fn on_upstream_failed(
        &mut self,
        now: Instant,
        pipes: &mut Pipes,
        failure: UpstreamFailure,
    ) {
        if self.state == State::Connecting {
            self.fail(now, pipes, Some(Reply::for_failure(failure)));
        }
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, pipes: &mut Pipes) {
        match self.state {
            State::Greeting | State::Auth | State::Request if now >= self.deadline => {
                self.state = State::Done;
                pipes.close();
            }
            State::Connecting if pipes.connect_expired(now) => {
                self.fail(now, pipes, Some(Reply::TtlExpired));
            }
            _ => {}
        }
    }
}

/// A reply of up to 22 bytes, built without allocating.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bytes {
    buf: [u8; 22],
    len: usize,
}

impl Bytes {
    fn new(bytes: &[u8]) -> Self {
        let mut out = Self {
            buf: [0; 22],
            len: 0,
        };
        out.extend(bytes);
        out
    }

    fn extend(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl core::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// A request reply: `VER REP RSV ATYP BND.ADDR BND.PORT`. Failures carry 0.0.0.0:0.
pub(crate) fn reply_bytes(reply: Reply, bound: Option<SocketAddr>) -> Bytes {
    let bound = bound.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    let mut out = Bytes::new(&[VERSION, reply as u8, 0]);
    match bound.ip() {
        IpAddr::V4(ip) => {
            out.extend(&[ATYP_IPV4]);
            out.extend(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.extend(&[ATYP_IPV6]);
            out.extend(&ip.octets());
        }
    }
    out.extend(&bound.port().to_be_bytes());
    out
}

/// What one handshake message leads to.
enum Step {
    /// The message is not complete yet.
    NeedMore,
    /// Reply with these bytes; go on in `next`, or close when `None`.
    Reply {
        bytes: Bytes,
        used: usize,
        next: Option<State>,
    },
    /// Refuse the request with this code, then close.
    Refuse { reply: Reply, used: usize },
    /// Not SOCKS5 at all: close without a word.
    Close,
    /// Open a stream to this destination.
    Connect { host: Host, port: u16, used: usize },
}

/// `VER NMETHODS METHODS...`
fn greeting(buf: &[u8], pipes: &Pipes) -> Step {
    let [version, count, ..] = *buf else {
        return Step::NeedMore;
    };
    if version != VERSION {
        return Step::Close;
    }
    let used = 2 + usize::from(count);
    let Some(methods) = buf.get(2..used) else {
        return Step::NeedMore;
    };
    let offers = |m: u8| methods.contains(&m);
    // With credentials configured only username/password will do. Without, "no
    // authentication" is preferred, and a client that insists on sending credentials may:
    // they are accepted unchecked, as nothing is protected.
    let method = match pipes.config.auth {
        Some(_) if offers(METHOD_USER_PASS) => METHOD_USER_PASS,
        Some(_) => METHOD_UNACCEPTABLE,
        None if offers(METHOD_NONE) => METHOD_NONE,
        None if offers(METHOD_USER_PASS) => METHOD_USER_PASS,
        None => METHOD_UNACCEPTABLE,
    };
    let next = match method {
        METHOD_NONE => Some(State::Request),
        METHOD_USER_PASS => Some(State::Auth),
        _ => None,
    };
    Step::Reply {
        bytes: Bytes::new(&[VERSION, method]),
        used,
        next,
    }
}

/// `VER ULEN UNAME PLEN PASSWD` (RFC 1929).
fn auth(buf: &[u8], pipes: &Pipes) -> Step {
    let [version, user_len, ..] = *buf else {
        return Step::NeedMore;
    };
    if version != AUTH_VERSION {
        return Step::Reply {
            bytes: Bytes::new(&[AUTH_VERSION, 0x01]),
            used: buf.len(),
            next: None,
        };
    }
    let user_end = 2 + usize::from(user_len);
    let Some(&pass_len) = buf.get(user_end) else {
        return Step::NeedMore;
    };
    let used = user_end + 1 + usize::from(pass_len);
    let (Some(user), Some(pass)) = (buf.get(2..user_end), buf.get(user_end + 1..used)) else {
        return Step::NeedMore;
    };
    let ok = pipes
        .config
        .auth
        .as_ref()
        .is_none_or(|auth| auth.check_pair(user, pass));
    Step::Reply {
        bytes: Bytes::new(&[AUTH_VERSION, if ok { 0x00 } else { 0x01 }]),
        used,
        next: ok.then_some(State::Request),
    }
}

/// `VER CMD RSV ATYP DST.ADDR DST.PORT`
fn request(buf: &[u8]) -> Step {
    let [version, command, _reserved, address_type, ..] = *buf else {
        return Step::NeedMore;
    };
    if version != VERSION {
        return Step::Refuse {
            reply: Reply::GeneralFailure,
            used: buf.len(),
        };
    }
    let address_len = match address_type {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_NAME => match buf.get(4) {
            Some(&len) => 1 + usize::from(len),
            None => return Step::NeedMore,
        },
        // Without knowing the address type the request's length is unknown: refuse and close.
        _ => {
            return Step::Refuse {
                reply: Reply::AddressTypeNotSupported,
                used: buf.len(),
            };
        }
    };
    let used = 4 + address_len + 2;
    let (Some(address), Some(&[port_hi, port_lo])) =
        (buf.get(4..4 + address_len), buf.get(4 + address_len..used))
    else {
        return Step::NeedMore;
    };
    if command != CMD_CONNECT {
        // BIND and UDP ASSOCIATE are not offered.
        return Step::Refuse {
            reply: Reply::CommandNotSupported,
            used,
        };
    }
    let host = match address_type {
        ATYP_IPV4 => <[u8; 4]>::try_from(address)
            .ok()
            .map(|a| Host::from(Ipv4Addr::from(a))),
        ATYP_IPV6 => <[u8; 16]>::try_from(address)
            .ok()
            .map(|a| Host::from(Ipv6Addr::from(a))),
        _ => address
            .get(1..)
            .and_then(|name| Host::from_name_bytes(name).ok()),
    };
    let Some(host) = host else {
        // A name that is empty or not a host name can never be reached.
        return Step::Refuse {
            reply: Reply::HostUnreachable,
            used,
        };
    };
    let port = u16::from_be_bytes([port_hi, port_lo]);
    if port == 0 {
        return Step::Refuse {
            reply: Reply::NotAllowed,
            used,
        };
    }
    Step::Connect { host, port, used }
}
