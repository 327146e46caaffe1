//! Reading request and response heads (parsed by `httparse`) into what the proxy needs to know,
//! and writing them back out without their hop-by-hop fields.

use std::collections::VecDeque;
use std::io::Write as _;

use super::Status;
use super::chunked::Chunked;
use crate::host::{Host, HostError, parse_authority};

/// How many header fields a head may have.
pub(crate) const MAX_HEADERS: usize = 100;

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Clone, Debug)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many more bytes.
    Length(u64),
    /// Chunked: forwarded verbatim while the reader finds the end.
    Chunked(Chunked),
    /// Everything until the sender closes (responses only).
    UntilClose,
}

impl Framing {
    /// Takes the part of `input` that belongs to the body; returns how many bytes that was and
    /// whether the body is now complete.
    pub(crate) fn take(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, bool), super::chunked::ChunkError> {
        match self {
            Self::Empty => Ok((0, true)),
            Self::Length(left) => {
                let take = usize::try_from(*left).map_or(input.len(), |left| left.min(input.len()));
                *left -= take as u64;
                Ok((take, *left == 0))
            }
            Self::Chunked(reader) => {
                let used = reader.advance(input)?;
                Ok((used, reader.is_done()))
            }
            Self::UntilClose => Ok((input.len(), false)),
        }
    }

    pub(crate) fn is_until_close(&self) -> bool {
        matches!(self, Self::UntilClose)
    }
}

/// Why a head cannot be forwarded: the status to answer with and a line saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: Status,
    pub(crate) detail: String,
}

impl Refusal {
    pub(crate) fn new(status: Status, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
}

/// Iterates the comma-separated tokens of a list-valued field, trimmed.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

pub(crate) fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Whether any field called `name` lists `token`.
pub(crate) fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
}

/// Whether the Connection field (or the legacy Proxy-Connection) lists `token`.
fn connection_has(headers: &[httparse::Header<'_>], token: &str) -> bool {
    has_token(headers, "connection", token) || has_token(headers, "proxy-connection", token)
}

/// Fields that describe this connection only and are never forwarded (RFC 9110 §7.6.1), plus
/// the ones addressed to the proxy itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-authentication-info",
];

/// Fields that decide where a message ends or where it goes. A Connection field naming them is
/// ignored for them: dropping one would change the framing the next hop sees.
const PROTECTED: &[&str] = &["host", "content-length", "transfer-encoding"];

/// Whether a field is hop-by-hop, either by its name or because a Connection field names it.
fn is_hop_by_hop(headers: &[httparse::Header<'_>], name: &str) -> bool {
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return true;
    }
    if PROTECTED.iter().any(|p| name.eq_ignore_ascii_case(p)) {
        return false;
    }
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

/// The transfer codings listed by every Transfer-Encoding field, in order; `None` when there is
/// no such field.
fn transfer_codings<'h>(
    headers: &'h [httparse::Header<'_>],
) -> Option<impl Iterator<Item = &'h [u8]>> {
    let present = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    present.then(|| {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
            .flat_map(|h| tokens(h.value))
    })
}

/// The value of every Content-Length field; `Ok(None)` without one, an error when a value is
/// not a number or two disagree.
fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, &'static str> {
    let mut found = None;
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        // "5, 5" is a list of equal values, which RFC 9110 §8.6 lets a recipient accept.
        for value in header.value.split(|&b| b == b',').map(trim) {
            let length = parse_decimal(value).ok_or("invalid Content-Length")?;
            match found {
                Some(previous) if previous != length => {
                    return Err("conflicting Content-Length values");
                }
                _ => found = Some(length),
            }
        }
    }
    Ok(found)
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// What a request head asks of the proxy.
#[derive(Debug)]
pub(crate) struct RequestPlan {
    /// The method is CONNECT.
    pub(crate) connect: bool,
    /// The method is HEAD: the response has no body whatever it says.
    pub(crate) head_method: bool,
    /// The request is HTTP/1.0.
    pub(crate) http10: bool,
    /// The client wants the connection kept open after the response.
    pub(crate) keep_alive: bool,
    /// A WebSocket upgrade: Upgrade and Connection are forwarded and a 101 switches to relaying.
    pub(crate) websocket: bool,
    /// Where the request body ends.
    pub(crate) body: Framing,
    /// The request's Content-Length, forwarded as one normalised field (also when 0: some
    /// servers want it on every POST).
    pub(crate) content_length: Option<u64>,
}

/// Works out framing and connection handling of a request, refusing what cannot be forwarded
/// safely.
pub(crate) fn plan_request(req: &httparse::Request<'_, '_>) -> Result<RequestPlan, Refusal> {
    let method = req.method.unwrap_or_default();
    let http10 = req.version == Some(0);
    let headers = &*req.headers;
    let connect = method == "CONNECT";
    let close = connection_has(headers, "close");
    let keep_alive = if http10 {
        connection_has(headers, "keep-alive") && !close
    } else {
        !close
    };
    let websocket = !http10
        && method == "GET"
        && has_token(headers, "upgrade", "websocket")
        && has_token(headers, "connection", "upgrade");
    let length = content_length(headers).map_err(|e| Refusal::new(Status::BadRequest, e))?;
    let body = match transfer_codings(headers) {
        _ if connect => Framing::Empty,
        Some(_) if http10 => {
            return Err(Refusal::new(
                Status::BadRequest,
                "Transfer-Encoding is not allowed in an HTTP/1.0 request",
            ));
        }
        Some(_) if length.is_some() => {
            return Err(Refusal::new(
                Status::BadRequest,
                "both Transfer-Encoding and Content-Length are present",
            ));
        }
        Some(mut codings) => {
            let mut count = 0usize;
            let mut last_chunked = false;
            for coding in codings.by_ref() {
                count += 1;
                last_chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
            if !last_chunked {
                return Err(Refusal::new(
                    Status::BadRequest,
                    "the final transfer coding of a request must be chunked",
                ));
            }
            if count != 1 {
                return Err(Refusal::new(
                    Status::NotImplemented,
                    "transfer codings other than chunked are not supported",
                ));
            }
            Framing::Chunked(Chunked::new())
        }
        None => match length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        },
    };
    Ok(RequestPlan {
        connect,
        head_method: method == "HEAD",
        http10,
        keep_alive,
        websocket,
        content_length: if matches!(body, Framing::Chunked(_)) || connect {
            None
        } else {
            length
        },
        body,
    })
}

/// The destination of a CONNECT request: `host:port`, port required.
pub(crate) fn connect_target(target: &str) -> Result<(Host, u16), Refusal> {
    parse_authority(target.as_bytes(), None)
        .map_err(|e| Refusal::new(Status::BadRequest, format!("invalid CONNECT target: {e}")))
}

/// An absolute-form request target split for forwarding.
#[derive(Debug)]
pub(crate) struct Target<'a> {
    pub(crate) host: Host,
    pub(crate) port: u16,
    /// `host[:port]` exactly as written: the new Host field.
    pub(crate) authority: &'a str,
    /// The origin-form target to send (`/path?query`; empty means `/` or `*`).
    pub(crate) path: &'a str,
}

/// Splits `http://authority/path?query` (RFC 9112 §3.2.2); other forms and schemes are refused.
pub(crate) fn absolute_target(target: &str) -> Result<Target<'_>, Refusal> {
    let Some(scheme_end) = target.find("://") else {
        let detail = if target.starts_with('/') || target == "*" {
            "a proxy request needs an absolute URI such as http://host/path"
        } else {
            "invalid request target"
        };
        return Err(Refusal::new(Status::BadRequest, detail));
    };
    let (scheme, rest) = target.split_at(scheme_end);
    let rest = rest.get(3..).unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("http") {
        let valid_scheme = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !valid_scheme {
            return Err(Refusal::new(Status::BadRequest, "invalid request target"));
        }
        let detail = if scheme.eq_ignore_ascii_case("https") {
            "https:// targets are not forwarded; use CONNECT".to_owned()
        } else {
            format!("the {scheme} scheme is not supported")
        };
        return Err(Refusal::new(Status::NotImplemented, detail));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // A fragment is for the user agent alone.
    let path = path.split('#').next().unwrap_or_default();
    let (host, port) = parse_authority(authority.as_bytes(), Some(80)).map_err(|e| {
        let detail = match e {
            HostError::UserInfo => {
                "user information in the request target is not allowed".to_owned()
            }
            other => format!("invalid host in the request target: {other}"),
        };
        Refusal::new(Status::BadRequest, detail)
    })?;
    Ok(Target {
        host,
        port,
        authority,
        path,
    })
}

/// Writes the request head for the upstream: origin-form target, a Host field from the target,
/// hop-by-hop fields removed, framing fields normalised.
pub(crate) fn write_request_head(
    out: &mut VecDeque<u8>,
    req: &httparse::Request<'_, '_>,
    target: &Target<'_>,
    plan: &RequestPlan,
) {
    let method = req.method.unwrap_or_default();
    let path = if target.path.is_empty() {
        // RFC 9112 §3.2.4: an OPTIONS for the whole server goes out as "*".
        if method == "OPTIONS" { "*" } else { "/" }
    } else {
        target.path
    };
    let slash = if path.starts_with('?') { "/" } else { "" };
    let minor = if plan.http10 { 0 } else { 1 };
    let _ = write!(
        out,
        "{method} {slash}{path} HTTP/1.{minor}\r\nHost: {}\r\n",
        target.authority
    );
    let headers = &*req.headers;
    for header in headers {
        let name = header.name;
        let keep_upgrade = plan.websocket && name.eq_ignore_ascii_case("upgrade");
        if name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("content-length")
            || (is_hop_by_hop(headers, name) && !keep_upgrade)
        {
            continue;
        }
        put_field(out, name, header.value);
    }
    if let Some(length) = plan.content_length {
        let _ = write!(out, "Content-Length: {length}\r\n");
    }
    if plan.websocket {
        out.extend(b"Connection: Upgrade\r\n");
    }
    out.extend(b"\r\n");
}

fn put_field(out: &mut VecDeque<u8>, name: &str, value: &[u8]) {
    out.extend(name.as_bytes());
    out.extend(b": ");
    out.extend(value);
    out.extend(b"\r\n");
}

/// What a response head means for the exchange.
#[derive(Debug)]
pub(crate) struct ResponsePlan {
    pub(crate) code: u16,
    /// Where the response body ends.
    pub(crate) body: Framing,
    /// The upstream may be reused after this response.
    pub(crate) persistent: bool,
    /// Transfer-Encoding overrides Content-Length, which must then not be forwarded.
    pub(crate) drop_content_length: bool,
}

/// Works out how a response to `head_method` is delimited (RFC 9112 §6.3).
pub(crate) fn plan_response(
    resp: &httparse::Response<'_, '_>,
    head_method: bool,
) -> Result<ResponsePlan, &'static str> {
    let code = resp.code.unwrap_or_default();
    let headers = &*resp.headers;
    let persistent = if resp.version == Some(0) {
        has_token(headers, "connection", "keep-alive") && !has_token(headers, "connection", "close")
    } else {
        !has_token(headers, "connection", "close")
    };
    let length = content_length(headers);
    let codings = transfer_codings(headers).map(|codings| {
        codings
            .last()
            .is_some_and(|last| last.eq_ignore_ascii_case(b"chunked"))
    });
    let no_body = head_method || (100..200).contains(&code) || code == 204 || code == 304;
    let (body, drop_content_length, persistent) = match codings {
        _ if no_body => (Framing::Empty, false, persistent),
        // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length, which is dropped; such a
        // message is suspect, so the upstream is not reused after it.
        Some(true) => (
            Framing::Chunked(Chunked::new()),
            true,
            persistent && !matches!(length, Ok(Some(_))),
        ),
        Some(false) => (Framing::UntilClose, true, false),
        None => match length? {
            Some(0) => (Framing::Empty, false, persistent),
            Some(n) => (Framing::Length(n), false, persistent),
            None => (Framing::UntilClose, false, false),
        },
    };
    Ok(ResponsePlan {
        code,
        body,
        persistent,
        drop_content_length,
    })
}

/// How the client connection continues after a response, as told to the client.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ClientConnection {
    /// Kept open; an HTTP/1.0 client is told so explicitly.
    KeepAlive { http10: bool },
    /// Closed after this response.
    Close,
    /// Switching to WebSocket.
    Upgrade,
    /// An interim (1xx) response: no connection field.
    Interim,
}

/// Writes a response head for the client: our HTTP version, hop-by-hop fields removed, and a
/// Connection field that says what this proxy will do.
pub(crate) fn write_response_head(
    out: &mut VecDeque<u8>,
    resp: &httparse::Response<'_, '_>,
    drop_content_length: bool,
    connection: ClientConnection,
) {
    let code = resp.code.unwrap_or_default();
    let reason = resp.reason.unwrap_or_default();
    let _ = write!(out, "HTTP/1.1 {code} {reason}\r\n");
    let headers = &*resp.headers;
    for header in headers {
        let name = header.name;
        let keep_upgrade =
            connection == ClientConnection::Upgrade && name.eq_ignore_ascii_case("upgrade");
        if (is_hop_by_hop(headers, name) && !keep_upgrade)
            || (drop_content_length && name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        put_field(out, name, header.value);
    }
    match connection {
        ClientConnection::KeepAlive { http10: true } => out.extend(b"Connection: keep-alive\r\n"),
        ClientConnection::KeepAlive { http10: false } | ClientConnection::Interim => {}
        ClientConnection::Close => out.extend(b"Connection: close\r\n"),
        ClientConnection::Upgrade => out.extend(b"Connection: Upgrade\r\n"),
    }
    out.extend(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_targets_split_into_host_and_path() {
        let t = absolute_target("http://Intra.Corp:8080/a/b?c=d#frag").unwrap();
        assert_eq!(t.host, Host::Name("Intra.Corp".into()));
        assert_eq!(t.port, 8080);
        assert_eq!(t.authority, "Intra.Corp:8080");
        assert_eq!(t.path, "/a/b?c=d");
        let t = absolute_target("HTTP://[fd00::1]?q").unwrap();
        assert_eq!(t.port, 80);
        assert_eq!(t.authority, "[fd00::1]");
        assert_eq!(t.path, "?q");
        let t = absolute_target("http://10.0.0.1").unwrap();
        assert_eq!(t.path, "");
    }

    #[test]
    fn other_targets_are_refused_with_the_right_status() {
        let status = |t: &str| absolute_target(t).unwrap_err().status;
        assert_eq!(status("/index.html"), Status::BadRequest);
        assert_eq!(status("*"), Status::BadRequest);
        assert_eq!(status("https://a.corp/"), Status::NotImplemented);
        assert_eq!(status("ftp://a.corp/"), Status::NotImplemented);
        assert_eq!(status("http://u:p@a.corp/"), Status::BadRequest);
        assert_eq!(status("http://a.corp:0/"), Status::BadRequest);
        assert_eq!(status("http:///x"), Status::BadRequest);
        assert_eq!(status("a b://x"), Status::BadRequest);
    }

    #[test]
    fn decimal_lengths_are_strict() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), None);
        assert_eq!(
            parse_decimal(b"1844674407370955161"),
            Some(1_844_674_407_370_955_161)
        );
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b""), None);
    }
}
