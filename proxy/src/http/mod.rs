//! The HTTP/1.1 proxy front end: CONNECT tunnels, and absolute-form requests of every method
//! forwarded with keep-alive, across hosts, with WebSocket upgrades.
//!
//! Requests are handled one at a time: while a request is in flight, the bytes of any
//! pipelined request behind it wait in the input buffer and are parsed only after the response
//! is complete. That keeps responses in order and lets each request go to a different host
//! without a queue of upstreams.

mod chunked;
mod message;

use core::fmt;
use std::net::SocketAddr;

use erebus_sansio::Instant;

use self::message::{
    ClientConnection, Framing, MAX_HEADERS, Refusal, absolute_target, connect_target, plan_request,
    plan_response, write_request_head, write_response_head,
};
use crate::UpstreamFailure;
use crate::host::Host;
use crate::pipes::{Pipes, Upstream};

/// The status codes the proxy itself answers with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Status {
    BadRequest,
    Forbidden,
    ProxyAuthRequired,
    RequestTimeout,
    UriTooLong,
    HeaderFieldsTooLarge,
    NotImplemented,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
    VersionNotSupported,
}

impl Status {
    fn code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Forbidden => 403,
            Self::ProxyAuthRequired => 407,
            Self::RequestTimeout => 408,
            Self::UriTooLong => 414,
            Self::HeaderFieldsTooLarge => 431,
            Self::NotImplemented => 501,
            Self::BadGateway => 502,
            Self::ServiceUnavailable => 503,
            Self::GatewayTimeout => 504,
            Self::VersionNotSupported => 505,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::BadRequest => "Bad Request",
            Self::Forbidden => "Forbidden",
            Self::ProxyAuthRequired => "Proxy Authentication Required",
            Self::RequestTimeout => "Request Timeout",
            Self::UriTooLong => "URI Too Long",
            Self::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Self::NotImplemented => "Not Implemented",
            Self::BadGateway => "Bad Gateway",
            Self::ServiceUnavailable => "Service Unavailable",
            Self::GatewayTimeout => "Gateway Timeout",
            Self::VersionNotSupported => "HTTP Version Not Supported",
        }
    }

    /// The answer to a stream the layer below could not open.
    fn for_failure(failure: UpstreamFailure) -> (Self, &'static str) {
        match failure {
            UpstreamFailure::Refused => {
                (Self::BadGateway, "the destination refused the connection")
            }
            UpstreamFailure::Unreachable => (Self::BadGateway, "the destination is unreachable"),
            UpstreamFailure::NameNotFound => {
                (Self::BadGateway, "the destination name does not resolve")
            }
            UpstreamFailure::Reset => (Self::BadGateway, "the destination reset the connection"),
            UpstreamFailure::Other => {
                (Self::BadGateway, "the connection to the destination failed")
            }
            UpstreamFailure::Timeout => (
                Self::GatewayTimeout,
                "the connection to the destination timed out",
            ),
            UpstreamFailure::TunnelDown => (Self::ServiceUnavailable, "the VPN tunnel is down"),
            UpstreamFailure::TooManyConnections => (
                Self::ServiceUnavailable,
                "the proxy is serving as many connections as it may; try again later",
            ),
            UpstreamFailure::TooManyLookups => (
                Self::ServiceUnavailable,
                "the proxy is resolving as many names as it may; try again later",
            ),
            UpstreamFailure::NotAllowed => (
                Self::Forbidden,
                "connections to this destination are not allowed",
            ),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

/// A request being forwarded and its response being relayed.
#[derive(Debug)]
struct Exchange {
    head_method: bool,
    http10: bool,
    client_keep_alive: bool,
    websocket: bool,
    /// What is left of the request body.
    request_body: Framing,
    request_done: bool,
    /// `None` while the response head is awaited; then what is left of the response body.
    response_body: Option<Framing>,
    /// The upstream may carry another request after this response.
    upstream_persistent: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for a request head. An idle connection closes at `idle_deadline`; once a head
    /// has begun it must be complete by `head_deadline`.
    ReadHead {
        idle_deadline: Instant,
        head_deadline: Option<Instant>,
    },
    /// CONNECT accepted, waiting for the upstream.
    Tunnel,
    /// A request in flight.
    Exchange(Exchange),
    /// Relaying or closing: `Pipes` handles everything.
    Done,
}

/// How handling a request head ended.
enum Next {
    /// The head was consumed; go on with the bytes after it.
    Continue,
    /// The connection is closing; drop the rest.
    Stop,
}

/// The per-connection HTTP proxy state.
#[derive(Debug)]
pub(crate) struct Http {
    state: State,
    /// Client bytes not yet consumed: a partial head, or requests pipelined behind the current.
    inbuf: Vec<u8>,
    /// How much of `inbuf` was already searched for the end of a head.
    scanned: usize,
    /// Where the open upstream leads, if one is open for reuse.
    target: Option<(Host, u16)>,
    /// A response head being collected.
    response_buf: Vec<u8>,
    response_scanned: usize,
}

impl Http {
    pub(crate) fn new(now: Instant, pipes: &Pipes) -> Self {
        Self {
            state: State::ReadHead {
                idle_deadline: now + pipes.config.handshake_timeout,
                head_deadline: None,
            },
            inbuf: Vec::new(),
            scanned: 0,
            target: None,
            response_buf: Vec::new(),
            response_scanned: 0,
        }
    }

    /// Client bytes held without being consumed.
    pub(crate) fn backlog(&self) -> usize {
        self.inbuf.len()
    }

    /// Above this backlog the client is paused. While a head is being read the head limits
    /// apply instead (a 431 or 414 answers an oversized head).
    pub(crate) fn backlog_limit(&self, pipes: &Pipes) -> usize {
        match self.state {
            State::ReadHead { .. } => usize::MAX,
            _ => pipes.config.max_request_head,
        }
    }

    pub(crate) fn deadline(&self, pipes: &Pipes) -> Option<Instant> {
        let config = &pipes.config;
        match &self.state {
            State::ReadHead {
                idle_deadline,
                head_deadline,
            } => Some(head_deadline.unwrap_or(*idle_deadline)),
            State::Tunnel => pipes.connect_deadline(),
            State::Exchange(exchange) => {
                let activity = if exchange.response_body.is_none() {
                    Some(pipes.last_activity + config.response_timeout)
                } else {
                    config.idle_timeout.map(|idle| pipes.last_activity + idle)
                };
                match (pipes.connect_deadline(), activity) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Done => None,
        }
    }

    pub(crate) fn on_client_data(&mut self, now: Instant, pipes: &mut Pipes, data: &[u8]) {
        if self.inbuf.is_empty() {
            let used = self.consume(now, pipes, data);
            if let Some(rest) = data.get(used..) {
                self.inbuf.extend_from_slice(rest);
            }
        } else {
            self.inbuf.extend_from_slice(data);
            self.consume_buffered(now, pipes);
        }
    }

    fn consume_buffered(&mut self, now: Instant, pipes: &mut Pipes) {
        let mut buffered = core::mem::take(&mut self.inbuf);
        let used = self.consume(now, pipes, &buffered);
        buffered.drain(..used.min(buffered.len()));
        // `consume` never stores into `inbuf`, but it may have decided to drop everything.
        if matches!(self.state, State::Done) && !pipes.relaying {
            buffered.clear();
        }
        self.inbuf = buffered;
    }

    /// Consumes what it can of `input` in the current state; returns how many bytes. Never
    /// touches `self.inbuf`.
    fn consume(&mut self, now: Instant, pipes: &mut Pipes, input: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            match &mut self.state {
                State::ReadHead { head_deadline, .. } => {
                    let blank = rest
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    // Stray line ends between requests are allowed (RFC 9112 §2.2).
                    if blank > 0 {
                        used += blank;
                        self.scanned = 0;
                        continue;
                    }
                    if rest.is_empty() {
                        return used;
                    }
                    if head_deadline.is_none() {
                        *head_deadline = Some(now + pipes.config.handshake_timeout);
                    }
                    let Some(end) = find_head_end(rest, self.scanned) else {
                        if let Some(refusal) = oversized_head(rest, false, pipes) {
                            self.refuse(now, pipes, refusal);
                            return input.len();
                        }
                        self.scanned = rest.len();
                        return used;
                    };
                    self.scanned = 0;
                    let head = rest.get(..end).unwrap_or_default();
                    if let Some(refusal) = oversized_head(head, true, pipes) {
                        self.refuse(now, pipes, refusal);
                        return input.len();
                    }
                    match self.start_request(now, pipes, head) {
                        Next::Continue => used += end,
                        Next::Stop => return input.len(),
                    }
                }
                State::Exchange(exchange) if !exchange.request_done => {
                    match exchange.request_body.take(rest) {
                        Ok((taken, done)) => {
                            if taken > 0 {
                                pipes.send_upstream(rest.get(..taken).unwrap_or_default());
                                pipes.last_activity = now;
                            }
                            used += taken;
                            if !done {
                                return used;
                            }
                            exchange.request_done = true;
                        }
                        Err(error) => {
                            let refusal = Refusal::new(
                                Status::BadRequest,
                                format!("malformed chunked request body: {error}"),
                            );
                            self.refuse(now, pipes, refusal);
                            return input.len();
                        }
                    }
                }
                // Pipelined bytes wait for the response; early tunnel data for the upstream.
                State::Exchange(_) | State::Tunnel => return used,
                State::Done => return input.len(),
            }
        }
    }

    /// Handles one complete request head.
    fn start_request(&mut self, now: Instant, pipes: &mut Pipes, head: &[u8]) -> Next {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let refusal = match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => None,
            Ok(httparse::Status::Partial) => {
                Some(Refusal::new(Status::BadRequest, "incomplete request head"))
            }
            Err(httparse::Error::TooManyHeaders) => Some(Refusal::new(
                Status::HeaderFieldsTooLarge,
                format!("more than {MAX_HEADERS} header fields"),
            )),
            Err(httparse::Error::Version) => Some(Refusal::new(
                Status::VersionNotSupported,
                "only HTTP/1.0 and HTTP/1.1 are supported",
            )),
            Err(error) => Some(Refusal::new(
                Status::BadRequest,
                format!("malformed request head: {error}"),
            )),
        };
        if let Some(refusal) = refusal {
            self.refuse(now, pipes, refusal);
            return Next::Stop;
        }
        let plan = match plan_request(&req) {
            Ok(plan) => plan,
            Err(refusal) => {
                self.refuse(now, pipes, refusal);
                return Next::Stop;
            }
        };
        if let Some(auth) = &pipes.config.auth {
            let authorized = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
                .is_some_and(|h| auth.check_basic(h.value));
            if !authorized {
                let keep = plan.keep_alive && matches!(plan.body, Framing::Empty);
                let detail = "proxy credentials are missing or wrong";
                if keep {
                    write_status(pipes, Status::ProxyAuthRequired, detail, false);
                    self.state = State::ReadHead {
                        idle_deadline: now + pipes.config.keep_alive_timeout,
                        head_deadline: None,
                    };
                    return Next::Continue;
                }
                self.refuse(now, pipes, Refusal::new(Status::ProxyAuthRequired, detail));
                return Next::Stop;
            }
        }
        let path = req.path.unwrap_or_default();
        if plan.connect {
            let (host, port) = match connect_target(path) {
                Ok(target) => target,
                Err(refusal) => {
                    self.refuse(now, pipes, refusal);
                    return Next::Stop;
                }
            };
            self.target = None;
            pipes.connect(now, host, port);
            self.state = State::Tunnel;
            return Next::Continue;
        }
        let target = match absolute_target(path) {
            Ok(target) => target,
            Err(refusal) => {
                self.refuse(now, pipes, refusal);
                return Next::Stop;
            }
        };
        let reuse = pipes.upstream == Upstream::Connected
            && self
                .target
                .as_ref()
                .is_some_and(|(host, port)| *port == target.port && host.same_as(&target.host));
        if !reuse {
            pipes.connect(now, target.host.clone(), target.port);
            self.target = Some((target.host.clone(), target.port));
        }
        pipes.last_activity = now;
        write_request_head(pipes.upstream_queue(), &req, &target, &plan);
        let request_done = matches!(plan.body, Framing::Empty);
        self.state = State::Exchange(Exchange {
            head_method: plan.head_method,
            http10: plan.http10,
            client_keep_alive: plan.keep_alive,
            websocket: plan.websocket,
            request_body: plan.body,
            request_done,
            response_body: None,
            upstream_persistent: true,
        });
        self.response_buf.clear();
        self.response_scanned = 0;
        Next::Continue
    }

    /// Answers with an error status and closes, or aborts when a response is already under way.
    fn refuse(&mut self, now: Instant, pipes: &mut Pipes, refusal: Refusal) {
        if let State::Exchange(exchange) = &self.state
            && exchange.response_body.is_some()
        {
            // The client already has part of a response: the only honest signal left is to cut
            // the connection, which it sees as a truncated message.
            self.abort(pipes);
            return;
        }
        write_status(pipes, refusal.status, &refusal.detail, true);
        self.state = State::Done;
        self.inbuf.clear();
        self.target = None;
        pipes.begin_linger(now);
    }

    fn abort(&mut self, pipes: &mut Pipes) {
        self.state = State::Done;
        self.inbuf.clear();
        self.target = None;
        pipes.close();
    }

    pub(crate) fn on_client_eof(&mut self, now: Instant, pipes: &mut Pipes) {
        match &self.state {
            State::ReadHead { .. } if self.inbuf.is_empty() => {
                self.state = State::Done;
                self.target = None;
                pipes.begin_linger(now);
            }
            State::ReadHead { .. } => {
                let refusal = Refusal::new(
                    Status::BadRequest,
                    "the client closed the connection in the middle of a request head",
                );
                self.refuse(now, pipes, refusal);
            }
            // A half-closed client still gets its tunnel and its response.
            State::Tunnel | State::Done => {}
            State::Exchange(exchange) if exchange.request_done => {}
            State::Exchange(_) => self.abort(pipes),
        }
    }

    pub(crate) fn on_upstream_connected(
        &mut self,
        now: Instant,
        pipes: &mut Pipes,
        _local: Option<SocketAddr>,
    ) {
        if let State::Tunnel = self.state {
            pipes.send_client(b"HTTP/1.1 200 Connection established\r\n\r\n");
            // Bytes the client sent after the CONNECT head belong to the tunnel.
            let early = core::mem::take(&mut self.inbuf);
            pipes.relay_client_data(now, &early);
            self.state = State::Done;
            pipes.relaying = true;
            if pipes.client_eof {
                pipes.shutdown_upstream_after_flush();
            }
        }
    }

    pub(crate) fn on_upstream_failed(
        &mut self,
        now: Instant,
        pipes: &mut Pipes,
        failure: UpstreamFailure,
    ) {
        match self.state {
            State::Tunnel | State::Exchange(_) => {
                let (status, detail) = Status::for_failure(failure);
                self.refuse(now, pipes, Refusal::new(status, detail));
            }
            State::ReadHead { .. } | State::Done => {
                self.target = None;
                pipes.close_upstream();
            }
        }
    }

    pub(crate) fn on_upstream_eof(&mut self, now: Instant, pipes: &mut Pipes) {
        let State::Exchange(exchange) = &mut self.state else {
            // An idle upstream closed: it is simply not reused.
            self.target = None;
            pipes.close_upstream();
            return;
        };
        match &exchange.response_body {
            None => {
                let detail = if self.response_buf.is_empty() {
                    "the destination closed the connection without responding"
                } else {
                    "the destination closed the connection in the middle of the response head"
                };
                self.refuse(now, pipes, Refusal::new(Status::BadGateway, detail));
            }
            Some(body) if body.is_until_close() => {
                exchange.upstream_persistent = false;
                self.finish_exchange(now, pipes, false);
            }
            // The response is cut short; closing tells the client, whose framing is incomplete.
            Some(_) => {
                self.state = State::Done;
                self.inbuf.clear();
                self.target = None;
                pipes.begin_linger(now);
            }
        }
    }

    pub(crate) fn on_upstream_data(&mut self, now: Instant, pipes: &mut Pipes, data: &[u8]) {
        let State::Exchange(exchange) = &mut self.state else {
            // Bytes from an idle upstream answer nothing: it is broken, do not reuse it.
            self.target = None;
            pipes.close_upstream();
            return;
        };
        pipes.last_activity = now;
        if exchange.response_body.is_some() {
            self.relay_response_body(now, pipes, data);
            return;
        }
        self.response_buf.extend_from_slice(data);
        self.parse_response_heads(now, pipes);
    }

    /// Parses response heads from `response_buf`: interim ones are passed on, the final one
    /// starts the body, and what follows it is relayed as body.
    fn parse_response_heads(&mut self, now: Instant, pipes: &mut Pipes) {
        loop {
            let State::Exchange(exchange) = &mut self.state else {
                return;
            };
            let Some(end) = find_head_end(&self.response_buf, self.response_scanned) else {
                if self.response_buf.len() > pipes.config.max_response_head {
                    let refusal = Refusal::new(
                        Status::BadGateway,
                        "the response head from the destination is too large",
                    );
                    self.refuse(now, pipes, refusal);
                } else {
                    self.response_scanned = self.response_buf.len();
                }
                return;
            };
            self.response_scanned = 0;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            let head = self.response_buf.get(..end).unwrap_or_default();
            let parsed = match resp.parse(head) {
                Ok(httparse::Status::Complete(_)) => plan_response(&resp, exchange.head_method)
                    .map_err(|e| format!("the destination sent a bad response head: {e}")),
                Ok(httparse::Status::Partial) => {
                    Err("the destination sent an incomplete response head".to_owned())
                }
                Err(e) => Err(format!(
                    "the destination sent a malformed response head: {e}"
                )),
            };
            let plan = match parsed {
                Ok(plan) => plan,
                Err(detail) => {
                    self.refuse(now, pipes, Refusal::new(Status::BadGateway, detail));
                    return;
                }
            };
            if plan.code == 101 {
                if !exchange.websocket {
                    let refusal = Refusal::new(
                        Status::BadGateway,
                        "the destination switched protocols without being asked to",
                    );
                    self.refuse(now, pipes, refusal);
                    return;
                }
                write_response_head(
                    pipes.client_queue(),
                    &resp,
                    false,
                    ClientConnection::Upgrade,
                );
                // From here on both directions are opaque WebSocket frames.
                let rest = self.response_buf.get(end..).unwrap_or_default();
                pipes.relay_upstream_data(now, rest);
                let early = core::mem::take(&mut self.inbuf);
                pipes.relay_client_data(now, &early);
                self.response_buf.clear();
                self.state = State::Done;
                self.target = None;
                pipes.relaying = true;
                if pipes.client_eof {
                    pipes.shutdown_upstream_after_flush();
                }
                return;
            }
            if (100..200).contains(&plan.code) {
                // HTTP/1.0 clients do not expect interim responses (RFC 9110 §15.2).
                if !exchange.http10 {
                    write_response_head(
                        pipes.client_queue(),
                        &resp,
                        false,
                        ClientConnection::Interim,
                    );
                }
                self.response_buf.drain(..end);
                continue;
            }
            let client_keeps = exchange.client_keep_alive
                && !plan.body.is_until_close()
                && exchange.request_done
                && !pipes.client_eof;
            let connection = if client_keeps {
                ClientConnection::KeepAlive {
                    http10: exchange.http10,
                }
            } else {
                ClientConnection::Close
            };
            write_response_head(
                pipes.client_queue(),
                &resp,
                plan.drop_content_length,
                connection,
            );
            exchange.client_keep_alive = client_keeps;
            exchange.upstream_persistent = plan.persistent;
            exchange.response_body = Some(plan.body);
            let body = core::mem::take(&mut self.response_buf);
            self.relay_response_body(now, pipes, body.get(end..).unwrap_or_default());
            // Keep the allocation for the next response head.
            self.response_buf = body;
            self.response_buf.clear();
            return;
        }
    }

    fn relay_response_body(&mut self, now: Instant, pipes: &mut Pipes, data: &[u8]) {
        let State::Exchange(exchange) = &mut self.state else {
            return;
        };
        let Some(body) = &mut exchange.response_body else {
            return;
        };
        match body.take(data) {
            Ok((taken, done)) => {
                pipes.send_client(data.get(..taken).unwrap_or_default());
                if done {
                    // Bytes after the end of a response answer no request: do not reuse.
                    let extra = taken < data.len();
                    self.finish_exchange(now, pipes, extra);
                }
            }
            Err(_) => {
                // Forward what was valid; the client sees an incomplete chunked body.
                self.state = State::Done;
                self.inbuf.clear();
                self.target = None;
                pipes.begin_linger(now);
            }
        }
    }

    /// The response is complete: keep or release the upstream, then read the next request or
    /// close.
    fn finish_exchange(&mut self, now: Instant, pipes: &mut Pipes, extra_upstream_bytes: bool) {
        let State::Exchange(exchange) = core::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        // A response that arrived before the request was fully sent leaves the upstream in an
        // unknown place in the request, so neither side is reused.
        let clean = exchange.request_done && pipes.upstream_backlog() == 0;
        let upstream_keeps = exchange.upstream_persistent
            && clean
            && !extra_upstream_bytes
            && pipes.upstream == Upstream::Connected
            && !pipes.upstream_eof;
        if !upstream_keeps {
            self.target = None;
            pipes.close_upstream();
        }
        if exchange.client_keep_alive && clean && !pipes.client_eof {
            self.state = State::ReadHead {
                idle_deadline: now + pipes.config.keep_alive_timeout,
                head_deadline: None,
            };
            self.scanned = 0;
            if !self.inbuf.is_empty() {
                self.consume_buffered(now, pipes);
            }
        } else {
            self.inbuf.clear();
            self.target = None;
            pipes.begin_linger(now);
        }
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, pipes: &mut Pipes) {
        let config = pipes.config.clone();
        match &self.state {
            State::ReadHead {
                head_deadline: Some(deadline),
                ..
            } if now >= *deadline => {
                let refusal = Refusal::new(
                    Status::RequestTimeout,
                    format!(
                        "the request head did not arrive within {} s",
                        config.handshake_timeout.as_secs()
                    ),
                );
                self.refuse(now, pipes, refusal);
            }
            State::ReadHead {
                head_deadline: None,
                idle_deadline,
            } if now >= *idle_deadline => {
                self.state = State::Done;
                self.target = None;
                pipes.begin_linger(now);
            }
            State::Tunnel | State::Exchange(_) if pipes.connect_expired(now) => {
                let refusal = Refusal::new(
                    Status::GatewayTimeout,
                    format!(
                        "the destination did not accept the connection within {} s",
                        config.connect_timeout.as_secs()
                    ),
                );
                self.refuse(now, pipes, refusal);
            }
            State::Exchange(exchange)
                if exchange.response_body.is_none()
                    && now >= pipes.last_activity + config.response_timeout =>
            {
                let refusal = Refusal::new(
                    Status::GatewayTimeout,
                    format!(
                        "the destination did not respond within {} s",
                        config.response_timeout.as_secs()
                    ),
                );
                self.refuse(now, pipes, refusal);
            }
            State::Exchange(exchange)
                if exchange.response_body.is_some()
                    && config
                        .idle_timeout
                        .is_some_and(|idle| now >= pipes.last_activity + idle) =>
            {
                self.abort(pipes);
            }
            _ => {}
        }
    }
}

/// Writes a complete response of the proxy's own: a status, a short plain-text body saying
/// what was wrong, and whether the connection stays open.
fn write_status(pipes: &mut Pipes, status: Status, detail: &str, close: bool) {
    let body_len = detail.len() + 1;
    let challenge = if status == Status::ProxyAuthRequired {
        "Proxy-Authenticate: Basic realm=\"erebus\"\r\n"
    } else {
        ""
    };
    // A 503 is temporary (the tunnel reconnects by itself, connections and lookups end): say
    // when to retry.
    let retry = if status == Status::ServiceUnavailable {
        "Retry-After: 5\r\n"
    } else {
        ""
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    let text = format!(
        "HTTP/1.1 {status}\r\n{challenge}{retry}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {body_len}\r\n{connection}\r\n{detail}\n"
    );
    pipes.send_client(text.as_bytes());
}

/// Finds the end of a head (the byte after its blank line), searching from `from` (less the
/// three bytes a split CRLF CRLF may straddle).
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let tail = buf.get(start..)?;
    tail.iter().enumerate().find_map(|(i, &b)| {
        if b != b'\n' {
            return None;
        }
        match (tail.get(i + 1), tail.get(i + 2)) {
            (Some(b'\n'), _) => Some(start + i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(start + i + 3),
            _ => None,
        }
    })
}

/// Whether a (possibly partial) head is over the limits: 414 for a long request line, 431
/// for the head as a whole.
fn oversized_head(head: &[u8], complete: bool, pipes: &Pipes) -> Option<Refusal> {
    let config = &pipes.config;
    let line_limit = config.max_request_line;
    if complete || head.len() > line_limit {
        let line_end = head
            .iter()
            .take(line_limit.saturating_add(1))
            .position(|&b| b == b'\n');
        let line_len = line_end.unwrap_or(head.len());
        if line_len > line_limit {
            return Some(Refusal::new(
                Status::UriTooLong,
                format!("the request line is longer than {line_limit} bytes"),
            ));
        }
    }
    if head.len() > config.max_request_head {
        return Some(Refusal::new(
            Status::HeaderFieldsTooLarge,
            format!(
                "the request head is larger than {} bytes",
                config.max_request_head
            ),
        ));
    }
    None
}
