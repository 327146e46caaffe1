//! The HTTP/1.1 proxy front end, driven with byte strings.

mod common;

use std::time::Duration;

use common::{Harness, connect};
use erebus_proxy::{Action, FrontEnd, ProxyAuth, ProxyConfig, UpstreamFailure};

/// The exact response the proxy writes for its own errors.
fn status(code_reason: &str, detail: &str) -> String {
    // A 503 (the tunnel is down) says when to try again.
    let retry = if code_reason.starts_with("503") {
        "Retry-After: 5\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {code_reason}\r\n{retry}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{detail}\n",
        detail.len() + 1
    )
}

/// Asserts the connection is closing after an error: shutdown sent, upstream released, and
/// the client's close ends it.
fn assert_closes_gracefully(h: &mut Harness) {
    let actions = h.take_actions();
    assert_eq!(actions.last(), Some(&Action::ShutdownClient), "{actions:?}");
    assert!(!h.conn.is_closed());
    h.client_closes();
    assert_eq!(h.take_actions(), vec![Action::CloseClient]);
    assert!(h.conn.is_closed());
}

const GET_A: &[u8] =
    b"GET http://a.corp/index.html HTTP/1.1\r\nHost: a.corp\r\nUser-Agent: t\r\n\r\n";
const GET_A_OUT: &str = "GET /index.html HTTP/1.1\r\nHost: a.corp\r\nUser-Agent: t\r\n\r\n";

#[test]
fn connect_tunnels_and_forwards_early_data() {
    let mut h = Harness::http();
    h.client_sends(b"CONNECT db.corp:5432 HTTP/1.1\r\nHost: db.corp:5432\r\n\r\nEARLY");
    assert_eq!(h.take_actions(), vec![connect("db.corp", 5432)]);
    assert!(h.take_client().is_empty());
    assert!(
        h.take_upstream().is_empty(),
        "nothing leaves before the stream is open"
    );
    h.client_sends(b" MORE");
    h.connected();
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 Connection established\r\n\r\n"
    );
    assert_eq!(h.upstream_text(), "EARLY MORE");
    h.upstream_sends(b"\x00binary\xff");
    assert_eq!(h.take_client(), b"\x00binary\xff");
    h.client_sends(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        h.upstream_text(),
        "GET / HTTP/1.1\r\n\r\n",
        "tunnel bytes are not parsed"
    );
    assert_eq!(
        h.conn.poll_timeout(),
        None,
        "an idle tunnel waits for its peers by default"
    );
    h.client_closes();
    assert_eq!(h.take_actions(), vec![Action::ShutdownUpstream]);
    h.upstream_sends(b"late");
    assert_eq!(
        h.take_client(),
        b"late",
        "half-closed tunnels still carry the other way"
    );
    h.upstream_closes();
    assert_eq!(
        h.take_actions(),
        vec![
            Action::ShutdownClient,
            Action::CloseUpstream,
            Action::CloseClient
        ]
    );
    assert!(h.conn.is_closed());
}

#[test]
fn connect_to_ipv6_and_ipv4_targets() {
    let mut h = Harness::http();
    h.client_sends(b"CONNECT [fd00::5]:443 HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), vec![connect("fd00::5", 443)]);
    let mut h = Harness::http();
    h.client_sends(b"CONNECT 10.0.0.7:22 HTTP/1.0\r\n\r\n");
    assert_eq!(h.take_actions(), vec![connect("10.0.0.7", 22)]);
}

#[test]
fn connect_without_port_is_a_bad_request() {
    let mut h = Harness::http();
    h.client_sends(b"CONNECT db.corp HTTP/1.1\r\n\r\n");
    assert_eq!(
        h.client_text(),
        status("400 Bad Request", "invalid CONNECT target: missing port")
    );
    assert_closes_gracefully(&mut h);
}

#[test]
fn get_is_rewritten_to_origin_form() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    assert_eq!(h.take_actions(), vec![connect("a.corp", 80)]);
    h.connected();
    assert_eq!(h.upstream_text(), GET_A_OUT);
}

#[test]
fn every_method_is_forwarded() {
    for method in [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "TRACE",
    ] {
        let mut h = Harness::http();
        h.client_sends(
            format!("{method} http://a.corp:8080/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert_eq!(h.take_actions(), vec![connect("a.corp", 8080)], "{method}");
        h.connected();
        assert_eq!(
            h.upstream_text(),
            format!("{method} /p?q=1 HTTP/1.1\r\nHost: a.corp:8080\r\n\r\n")
        );
    }
}

#[test]
fn options_for_the_whole_server_becomes_asterisk() {
    let mut h = Harness::http();
    h.client_sends(b"OPTIONS http://a.corp HTTP/1.1\r\n\r\n");
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "OPTIONS * HTTP/1.1\r\nHost: a.corp\r\n\r\n"
    );
    let mut h = Harness::http();
    h.client_sends(b"GET http://a.corp?x=1 HTTP/1.1\r\n\r\n");
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "GET /?x=1 HTTP/1.1\r\nHost: a.corp\r\n\r\n"
    );
}

#[test]
fn host_field_is_replaced_by_the_target() {
    let mut h = Harness::http();
    h.client_sends(
        b"GET http://[fd00::1]:81/ HTTP/1.1\r\nHost: evil.example\r\nHost: twice\r\n\r\n",
    );
    assert_eq!(h.take_actions(), vec![connect("fd00::1", 81)]);
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "GET / HTTP/1.1\r\nHost: [fd00::1]:81\r\n\r\n"
    );
}

#[test]
fn http10_request_without_host_gets_one() {
    let mut h = Harness::http();
    h.client_sends(b"GET http://a.corp/ HTTP/1.0\r\n\r\n");
    h.connected();
    assert_eq!(h.upstream_text(), "GET / HTTP/1.0\r\nHost: a.corp\r\n\r\n");
    h.upstream_sends(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
}

#[test]
fn hop_by_hop_fields_are_removed() {
    let mut h = Harness::http();
    h.client_sends(
        b"GET http://a.corp/ HTTP/1.1\r\n\
          Connection: keep-alive, X-Secret, Content-Length\r\n\
          Proxy-Connection: keep-alive\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Authorization: Basic dTpw\r\n\
          TE: trailers\r\n\
          Trailer: X-Sum\r\n\
          Upgrade: h2c\r\n\
          X-Secret: 1\r\n\
          Accept: */*\r\n\r\n",
    );
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "GET / HTTP/1.1\r\nHost: a.corp\r\nTrailer: X-Sum\r\nAccept: */*\r\n\r\n"
    );
    h.upstream_sends(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\
          Proxy-Authenticate: Basic\r\nUpgrade: h2c\r\nContent-Length: 2\r\nX-End: 2\r\n\r\nok",
    );
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-End: 2\r\n\r\nok"
    );
}

#[test]
fn post_with_content_length_is_forwarded_at_every_split() {
    let request = b"POST http://a.corp/form HTTP/1.1\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world";
    let expected = "POST /form HTTP/1.1\r\nHost: a.corp\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world";
    for split in 0..=request.len() {
        let mut h = Harness::http();
        h.client_sends(&request[..split]);
        h.client_sends(&request[split..]);
        h.connected();
        assert_eq!(h.upstream_text(), expected, "split at {split}");
    }
    // One byte at a time.
    let mut h = Harness::http();
    h.connected();
    for byte in request.chunks(1) {
        h.client_sends(byte);
        if h.conn.upstream_backlog() > 0 || !h.actions.is_empty() {
            h.connected();
        }
    }
    assert_eq!(h.upstream_text(), expected);
}

#[test]
fn zero_content_length_is_kept() {
    let mut h = Harness::http();
    h.client_sends(b"POST http://a.corp/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "POST / HTTP/1.1\r\nHost: a.corp\r\nContent-Length: 0\r\n\r\n"
    );
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    h.client_sends(GET_A);
    assert_eq!(
        h.upstream_text(),
        GET_A_OUT,
        "the empty body was complete at once"
    );
}

#[test]
fn duplicate_equal_content_lengths_are_normalised() {
    let mut h = Harness::http();
    h.client_sends(
        b"PUT http://a.corp/ HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nab",
    );
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "PUT / HTTP/1.1\r\nHost: a.corp\r\nContent-Length: 2\r\n\r\nab"
    );
}

#[test]
fn chunked_request_with_extensions_and_trailers_is_forwarded_verbatim() {
    let body = "4;ext=\"v\"\r\nWiki\r\n5 ; x\r\npedia\r\n0;last\r\nX-Checksum: 42\r\n\r\n";
    let request = format!(
        "POST http://a.corp/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n{body}"
    );
    let expected = format!(
        "POST /up HTTP/1.1\r\nHost: a.corp\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n{body}"
    );
    let bytes = request.as_bytes();
    for split in [1, 40, 70, 80, 90, bytes.len() - 3, bytes.len() - 1] {
        let mut h = Harness::http();
        h.client_sends(&bytes[..split]);
        h.client_sends(&bytes[split..]);
        h.connected();
        assert_eq!(h.upstream_text(), expected, "split at {split}");
        // The body ended exactly where the trailers did: a response completes the exchange.
        h.upstream_sends(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(h.client_text(), "HTTP/1.1 204 No Content\r\n\r\n");
        h.client_sends(GET_A);
        assert_eq!(h.upstream_text(), GET_A_OUT, "the connection was reused");
    }
}

#[test]
fn malformed_chunked_request_body_is_a_bad_request() {
    let mut h = Harness::http();
    h.client_sends(
        b"POST http://a.corp/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
    );
    assert_eq!(
        h.client_text(),
        status(
            "400 Bad Request",
            "malformed chunked request body: chunk framing is not terminated by CRLF"
        )
    );
    assert_eq!(
        h.take_actions(),
        vec![
            connect("a.corp", 80),
            Action::CloseUpstream,
            Action::ShutdownClient
        ]
    );
}

#[test]
fn content_length_and_transfer_encoding_together_are_refused() {
    let mut h = Harness::http();
    h.client_sends(
        b"POST http://a.corp/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(
        h.client_text(),
        status(
            "400 Bad Request",
            "both Transfer-Encoding and Content-Length are present"
        )
    );
    assert_eq!(
        h.take_actions(),
        vec![Action::ShutdownClient],
        "no stream was opened"
    );
}

#[test]
fn framing_errors_get_the_right_status() {
    let cases: &[(&[u8], &str, &str)] = &[
        (
            b"POST http://a.corp/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "400 Bad Request",
            "conflicting Content-Length values",
        ),
        (
            b"POST http://a.corp/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "400 Bad Request",
            "invalid Content-Length",
        ),
        (
            b"POST http://a.corp/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "400 Bad Request",
            "the final transfer coding of a request must be chunked",
        ),
        (
            b"POST http://a.corp/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400 Bad Request",
            "Transfer-Encoding is not allowed in an HTTP/1.0 request",
        ),
        (
            b"POST http://a.corp/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "501 Not Implemented",
            "transfer codings other than chunked are not supported",
        ),
    ];
    for (request, code, detail) in cases {
        let mut h = Harness::http();
        h.client_sends(request);
        assert_eq!(h.client_text(), status(code, detail));
        assert_closes_gracefully(&mut h);
    }
}

#[test]
fn targets_the_proxy_cannot_serve_are_refused() {
    let cases: &[(&[u8], &str, &str)] = &[
        (
            b"GET /index.html HTTP/1.1\r\nHost: a.corp\r\n\r\n",
            "400 Bad Request",
            "a proxy request needs an absolute URI such as http://host/path",
        ),
        (
            b"GET https://a.corp/ HTTP/1.1\r\n\r\n",
            "501 Not Implemented",
            "https:// targets are not forwarded; use CONNECT",
        ),
        (
            b"GET ftp://a.corp/ HTTP/1.1\r\n\r\n",
            "501 Not Implemented",
            "the ftp scheme is not supported",
        ),
        (
            b"GET http://user:pw@a.corp/ HTTP/1.1\r\n\r\n",
            "400 Bad Request",
            "user information in the request target is not allowed",
        ),
        (
            b"GET http://a.corp:99999/ HTTP/1.1\r\n\r\n",
            "400 Bad Request",
            "invalid host in the request target: invalid port",
        ),
        (
            b"GET http://bad_host!/ HTTP/1.1\r\n\r\n",
            "400 Bad Request",
            "invalid host in the request target: invalid host name",
        ),
    ];
    for (request, code, detail) in cases {
        let mut h = Harness::http();
        h.client_sends(request);
        assert_eq!(h.client_text(), status(code, detail));
        assert!(
            !h.take_actions()
                .iter()
                .any(|a| matches!(a, Action::Connect { .. }))
        );
    }
}

#[test]
fn malformed_heads_are_bad_requests_naming_the_problem() {
    let cases: &[(&[u8], &str, &str)] = &[
        (
            b"GET http://a.corp/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "400 Bad Request",
            "malformed request head: invalid header name",
        ),
        (
            b"G\x01T http://a.corp/ HTTP/1.1\r\n\r\n",
            "400 Bad Request",
            "malformed request head: invalid token",
        ),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            "400 Bad Request",
            "malformed request head: invalid token",
        ),
        (
            b"GET http://a.corp/ HTTP/2.0\r\n\r\n",
            "505 HTTP Version Not Supported",
            "only HTTP/1.0 and HTTP/1.1 are supported",
        ),
    ];
    for (request, code, detail) in cases {
        let mut h = Harness::http();
        h.client_sends(request);
        assert_eq!(h.client_text(), status(code, detail), "{request:?}");
        assert_closes_gracefully(&mut h);
    }
}

#[test]
fn oversized_heads_get_431_and_long_lines_414() {
    let config = || ProxyConfig {
        max_request_head: 200,
        max_request_line: 100,
        ..ProxyConfig::default()
    };
    // A long request line, still incomplete.
    let mut h = Harness::new(FrontEnd::Http, config());
    h.client_sends(format!("GET http://a.corp/{}", "a".repeat(120)).as_bytes());
    assert_eq!(
        h.client_text(),
        status(
            "414 URI Too Long",
            "the request line is longer than 100 bytes"
        )
    );
    // A long request line in a complete head.
    let mut h = Harness::new(FrontEnd::Http, config());
    h.client_sends(format!("GET http://a.corp/{} HTTP/1.1\r\n\r\n", "a".repeat(90)).as_bytes());
    assert_eq!(
        h.client_text(),
        status(
            "414 URI Too Long",
            "the request line is longer than 100 bytes"
        )
    );
    // Many header bytes, never ending.
    let mut h = Harness::new(FrontEnd::Http, config());
    h.client_sends(b"GET http://a.corp/ HTTP/1.1\r\n");
    for _ in 0..20 {
        h.client_sends(b"X-Filler: 0123456789\r\n");
    }
    assert_eq!(
        h.client_text(),
        status(
            "431 Request Header Fields Too Large",
            "the request head is larger than 200 bytes"
        )
    );
    assert_closes_gracefully(&mut h);
    // Too many fields, within the byte limit.
    let mut h = Harness::http();
    let mut request = b"GET http://a.corp/ HTTP/1.1\r\n".to_vec();
    for i in 0..101 {
        request.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    h.client_sends(&request);
    assert_eq!(
        h.client_text(),
        status(
            "431 Request Header Fields Too Large",
            "more than 100 header fields"
        )
    );
}

#[test]
fn proxy_auth_missing_or_wrong_gets_407_and_keeps_the_connection() {
    let config = ProxyConfig {
        auth: Some(ProxyAuth::new("alice", "s3cret").unwrap()),
        ..ProxyConfig::default()
    };
    let challenge = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"erebus\"\r\n\
                     Content-Type: text/plain; charset=utf-8\r\nContent-Length: 39\r\n\r\n\
                     proxy credentials are missing or wrong\n";
    let mut h = Harness::new(FrontEnd::Http, config.clone());
    h.client_sends(GET_A);
    assert_eq!(h.client_text(), challenge);
    assert!(h.take_actions().is_empty(), "no stream, connection kept");
    // "alice:wrong"
    h.client_sends(
        b"GET http://a.corp/ HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6d3Jvbmc=\r\n\r\n",
    );
    assert_eq!(h.client_text(), challenge);
    // "alice:s3cret", on the same connection; the credentials are not forwarded.
    h.client_sends(
        b"GET http://a.corp/ HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n",
    );
    assert_eq!(h.take_actions(), vec![connect("a.corp", 80)]);
    h.connected();
    assert_eq!(h.upstream_text(), "GET / HTTP/1.1\r\nHost: a.corp\r\n\r\n");

    // CONNECT needs them too.
    let mut h = Harness::new(FrontEnd::Http, config.clone());
    h.client_sends(b"CONNECT db.corp:5432 HTTP/1.1\r\n\r\n");
    assert_eq!(h.client_text(), challenge);
    h.client_sends(
        b"CONNECT db.corp:5432 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n",
    );
    assert_eq!(h.take_actions(), vec![connect("db.corp", 5432)]);

    // A refused request with a body cannot be followed by another: the connection closes.
    let mut h = Harness::new(FrontEnd::Http, config);
    h.client_sends(b"POST http://a.corp/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    let text = h.client_text();
    assert!(text.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"erebus\"\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert_closes_gracefully(&mut h);
}

#[test]
fn upstream_failures_get_truthful_statuses() {
    let cases = [
        (
            UpstreamFailure::Refused,
            "502 Bad Gateway",
            "the destination refused the connection",
        ),
        (
            UpstreamFailure::Unreachable,
            "502 Bad Gateway",
            "the destination is unreachable",
        ),
        (
            UpstreamFailure::NameNotFound,
            "502 Bad Gateway",
            "the destination name does not resolve",
        ),
        (
            UpstreamFailure::Timeout,
            "504 Gateway Timeout",
            "the connection to the destination timed out",
        ),
        (
            UpstreamFailure::TunnelDown,
            "503 Service Unavailable",
            "the VPN tunnel is down",
        ),
        (
            UpstreamFailure::NotAllowed,
            "403 Forbidden",
            "connections to this destination are not allowed",
        ),
    ];
    for (failure, code, detail) in cases {
        for request in [GET_A, b"CONNECT a.corp:443 HTTP/1.1\r\n\r\n"] {
            let mut h = Harness::http();
            h.client_sends(request);
            h.take_actions();
            h.failed(failure);
            assert_eq!(h.client_text(), status(code, detail), "{failure:?}");
            assert_eq!(
                h.take_actions(),
                vec![Action::CloseUpstream, Action::ShutdownClient]
            );
            h.client_closes();
            assert_eq!(h.take_actions(), vec![Action::CloseClient]);
        }
    }
}

#[test]
fn connect_timeout_is_504_after_the_configured_time() {
    let config = ProxyConfig {
        connect_timeout: Duration::from_secs(3),
        ..ProxyConfig::default()
    };
    for request in [GET_A, b"CONNECT a.corp:443 HTTP/1.1\r\n\r\n"] {
        let mut h = Harness::new(FrontEnd::Http, config.clone());
        let start = h.now;
        h.client_sends(request);
        assert_eq!(h.conn.poll_timeout(), Some(start + Duration::from_secs(3)));
        h.advance(Duration::from_millis(2999));
        assert!(h.take_client().is_empty());
        h.advance(Duration::from_millis(1));
        assert_eq!(
            h.client_text(),
            status(
                "504 Gateway Timeout",
                "the destination did not accept the connection within 3 s"
            )
        );
        assert_eq!(
            h.take_actions(),
            vec![
                connect("a.corp", if request == GET_A { 80 } else { 443 }),
                Action::CloseUpstream,
                Action::ShutdownClient
            ]
        );
        // The client never closes: the linger deadline ends it.
        h.fire_deadline();
        assert_eq!(h.take_actions(), vec![Action::CloseClient]);
        assert!(h.conn.is_closed());
        assert_eq!(h.conn.poll_timeout(), None);
    }
}

#[test]
fn default_connect_timeout_is_ten_seconds() {
    let mut h = Harness::http();
    let start = h.now;
    h.client_sends(GET_A);
    assert_eq!(h.conn.poll_timeout(), Some(start + Duration::from_secs(10)));
}

#[test]
fn slow_response_is_504() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.take_upstream();
    let deadline = h.conn.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + Duration::from_secs(120));
    h.fire_deadline();
    assert_eq!(
        h.client_text(),
        status(
            "504 Gateway Timeout",
            "the destination did not respond within 120 s"
        )
    );
}

#[test]
fn incomplete_head_times_out_with_408_and_idle_connections_close_quietly() {
    let mut h = Harness::http();
    h.client_sends(b"GET http://a.corp/ HTTP/1.1\r\n");
    assert_eq!(h.conn.poll_timeout(), Some(h.now + Duration::from_secs(30)));
    h.fire_deadline();
    assert_eq!(
        h.client_text(),
        status(
            "408 Request Timeout",
            "the request head did not arrive within 30 s"
        )
    );
    assert_closes_gracefully(&mut h);

    let mut h = Harness::http();
    h.fire_deadline();
    assert!(h.take_client().is_empty());
    assert_eq!(h.take_actions(), vec![Action::ShutdownClient]);
    h.fire_deadline();
    assert_eq!(h.take_actions(), vec![Action::CloseClient]);
}

#[test]
fn upstream_closing_without_a_response_is_502() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_closes();
    assert_eq!(
        h.client_text(),
        status(
            "502 Bad Gateway",
            "the destination closed the connection without responding"
        )
    );
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nConte");
    h.upstream_closes();
    assert_eq!(
        h.client_text(),
        status(
            "502 Bad Gateway",
            "the destination closed the connection in the middle of the response head"
        )
    );
}

#[test]
fn malformed_responses_are_502() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"garbage\r\n\r\n",
            "the destination sent a malformed response head: invalid HTTP version",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "the destination sent a bad response head: invalid Content-Length",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "the destination switched protocols without being asked to",
        ),
    ];
    for (response, detail) in cases {
        let mut h = Harness::http();
        h.client_sends(GET_A);
        h.connected();
        h.upstream_sends(response);
        assert_eq!(h.client_text(), status("502 Bad Gateway", detail));
    }
}

#[test]
fn keep_alive_reuses_the_upstream_for_the_same_host() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel");
    h.upstream_sends(b"lo");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    );
    assert_eq!(h.take_actions(), vec![connect("a.corp", 80)]);
    h.client_sends(b"GET http://A.CORP:80/two HTTP/1.1\r\n\r\n");
    assert!(
        h.take_actions().is_empty(),
        "same host and port: no new stream"
    );
    assert!(
        h.upstream_text()
            .ends_with("GET /two HTTP/1.1\r\nHost: A.CORP:80\r\n\r\n")
    );
}

#[test]
fn keep_alive_to_a_second_host_closes_the_first_upstream() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n"
    );
    h.take_upstream();
    h.client_sends(b"GET http://b.corp:8080/two HTTP/1.1\r\n\r\n");
    assert_eq!(
        h.take_actions(),
        vec![
            connect("a.corp", 80),
            Action::CloseUpstream,
            connect("b.corp", 8080)
        ]
    );
    assert!(h.take_upstream().is_empty());
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "GET /two HTTP/1.1\r\nHost: b.corp:8080\r\n\r\n"
    );
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo"
    );
    assert!(!h.conn.is_closed());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut h = Harness::http();
    let mut both = GET_A.to_vec();
    both.extend_from_slice(b"GET http://a.corp/second HTTP/1.1\r\n\r\n");
    h.client_sends(&both);
    h.connected();
    assert_eq!(
        h.upstream_text(),
        GET_A_OUT,
        "the second request waits for the first response"
    );
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1");
    assert_eq!(
        h.upstream_text(),
        "GET /second HTTP/1.1\r\nHost: a.corp\r\n\r\n"
    );
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2"
    );
    assert_eq!(h.take_actions(), vec![connect("a.corp", 80)]);
}

#[test]
fn pipelined_requests_to_two_hosts_in_one_read() {
    let mut h = Harness::http();
    h.client_sends(b"GET http://a.corp/ HTTP/1.1\r\n\r\nGET http://b.corp/ HTTP/1.1\r\nConnection: close\r\n\r\n");
    h.connected();
    h.upstream_sends(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n");
    assert_eq!(
        h.take_actions(),
        vec![
            connect("a.corp", 80),
            Action::CloseUpstream,
            connect("b.corp", 80)
        ]
    );
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "GET / HTTP/1.1\r\nHost: a.corp\r\n\r\nGET / HTTP/1.1\r\nHost: b.corp\r\n\r\n"
    );
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        h.take_actions(),
        vec![Action::CloseUpstream, Action::ShutdownClient]
    );
}

#[test]
fn response_heads_and_bodies_split_at_every_byte() {
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
    for split in 0..=response.len() {
        let mut h = Harness::http();
        h.client_sends(GET_A);
        h.connected();
        h.upstream_sends(&response[..split]);
        h.upstream_sends(&response[split..]);
        assert_eq!(h.take_client(), response.to_vec(), "split at {split}");
        h.client_sends(GET_A);
        assert_eq!(
            h.take_actions(),
            vec![connect("a.corp", 80)],
            "reused after split {split}"
        );
    }
}

#[test]
fn head_and_bodiless_statuses_have_no_body() {
    let mut h = Harness::http();
    h.client_sends(b"HEAD http://a.corp/big HTTP/1.1\r\n\r\n");
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    );
    h.client_sends(GET_A);
    h.upstream_sends(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(h.client_text(), "HTTP/1.1 204 No Content\r\n\r\n");
    h.client_sends(GET_A);
    h.upstream_sends(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"
    );
    assert_eq!(
        h.take_actions(),
        vec![connect("a.corp", 80)],
        "one stream for all three"
    );
}

#[test]
fn interim_responses_are_relayed_before_the_final_one() {
    let mut h = Harness::http();
    h.client_sends(
        b"PUT http://a.corp/f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "PUT /f HTTP/1.1\r\nHost: a.corp\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    );
    h.upstream_sends(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
    );
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
    );
    h.client_sends(b"data");
    assert_eq!(h.upstream_text(), "data");
    h.upstream_sends(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn interim_responses_are_not_sent_to_http10_clients() {
    let mut h = Harness::http();
    h.client_sends(b"GET http://a.corp/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    h.connected();
    h.upstream_sends(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
    );
}

#[test]
fn close_delimited_response_ends_with_the_connection() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one ");
    h.upstream_sends(b"part two");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npart one part two"
    );
    h.take_actions();
    h.upstream_closes();
    assert_eq!(
        h.take_actions(),
        vec![Action::CloseUpstream, Action::ShutdownClient]
    );
    h.client_closes();
    assert_eq!(h.take_actions(), vec![Action::CloseClient]);
}

#[test]
fn transfer_encoding_overrides_content_length_in_responses() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    );
    h.client_sends(GET_A);
    assert_eq!(
        h.take_actions(),
        vec![
            connect("a.corp", 80),
            Action::CloseUpstream,
            connect("a.corp", 80)
        ],
        "a suspect upstream is not reused"
    );
}

#[test]
fn client_connection_close_is_honoured() {
    let mut h = Harness::http();
    h.client_sends(b"GET http://a.corp/ HTTP/1.1\r\nConnection: close\r\n\r\n");
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
    assert_eq!(
        h.take_actions(),
        vec![
            connect("a.corp", 80),
            Action::CloseUpstream,
            Action::ShutdownClient
        ]
    );
    h.client_closes();
    assert_eq!(h.take_actions(), vec![Action::CloseClient]);
}

#[test]
fn half_closed_client_still_gets_its_response() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.client_closes();
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
    assert_eq!(
        h.take_actions(),
        vec![
            connect("a.corp", 80),
            Action::CloseUpstream,
            Action::ShutdownClient,
            Action::CloseClient
        ]
    );
}

#[test]
fn truncated_response_body_closes_the_client() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    h.take_client();
    h.upstream_closes();
    assert!(
        h.take_client().is_empty(),
        "no error text can follow a started response"
    );
    assert_eq!(
        h.take_actions(),
        vec![
            connect("a.corp", 80),
            Action::CloseUpstream,
            Action::ShutdownClient
        ]
    );
}

#[test]
fn upstream_failure_after_the_response_started_aborts() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    h.take_client();
    h.take_actions();
    h.failed(UpstreamFailure::Reset);
    assert!(h.take_client().is_empty());
    assert_eq!(
        h.take_actions(),
        vec![Action::CloseUpstream, Action::CloseClient]
    );
}

#[test]
fn websocket_upgrade_switches_to_relaying() {
    let mut h = Harness::http();
    h.client_sends(
        b"GET http://ws.corp/chat HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    h.connected();
    assert_eq!(
        h.upstream_text(),
        "GET /chat HTTP/1.1\r\nHost: ws.corp\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nConnection: Upgrade\r\n\r\n"
    );
    h.upstream_sends(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi",
    );
    assert_eq!(
        h.take_client(),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nConnection: Upgrade\r\n\r\n\x81\x02hi"
            .to_vec()
    );
    h.client_sends(b"\x81\x82abcd\x01\x02");
    assert_eq!(h.take_upstream(), b"\x81\x82abcd\x01\x02".to_vec());
}

#[test]
fn websocket_upgrade_refused_by_the_server_stays_http() {
    let mut h = Harness::http();
    h.client_sends(
        b"GET http://ws.corp/ HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    h.connected();
    h.take_upstream();
    h.upstream_sends(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 1\r\n\r\nx"
    );
    h.client_sends(GET_A);
    assert_eq!(
        h.take_actions(),
        vec![
            connect("ws.corp", 80),
            Action::CloseUpstream,
            connect("a.corp", 80)
        ]
    );
}

#[test]
fn idle_upstream_closing_is_not_reused() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    h.upstream_closes();
    h.client_sends(GET_A);
    assert_eq!(
        h.take_actions(),
        vec![
            connect("a.corp", 80),
            Action::CloseUpstream,
            connect("a.corp", 80)
        ]
    );
}

#[test]
fn unsolicited_upstream_bytes_discard_the_upstream() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\nspoof");
    assert_eq!(
        h.client_text(),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(
        h.take_actions(),
        vec![connect("a.corp", 80), Action::CloseUpstream]
    );
}

#[test]
fn keep_alive_idle_timeout_closes_quietly() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.connected();
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    h.take_actions();
    assert_eq!(h.conn.poll_timeout(), Some(h.now + Duration::from_secs(60)));
    h.fire_deadline();
    assert_eq!(
        h.take_actions(),
        vec![Action::CloseUpstream, Action::ShutdownClient]
    );
    h.client_closes();
    assert_eq!(h.take_actions(), vec![Action::CloseClient]);
}

#[test]
fn slow_client_pauses_the_upstream() {
    let config = ProxyConfig {
        buffer_size: 1000,
        ..ProxyConfig::default()
    };
    let mut h = Harness::new(FrontEnd::Http, config);
    h.client_sends(GET_A);
    h.connected();
    h.take_actions();
    h.client_reads = false;
    h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n");
    h.upstream_sends(&[b'x'; 1500]);
    assert_eq!(h.take_actions(), vec![Action::PauseUpstream]);
    // The client reads a little: still above half the buffer.
    let head = h.conn.client_output().len().min(400);
    h.conn.advance_client(h.now, head);
    h.drain();
    assert!(h.take_actions().is_empty());
    h.client_reads = true;
    h.drain();
    assert_eq!(h.take_actions(), vec![Action::ResumeUpstream]);
}

#[test]
fn slow_upstream_pauses_the_client() {
    let config = ProxyConfig {
        buffer_size: 1000,
        ..ProxyConfig::default()
    };
    let mut h = Harness::new(FrontEnd::Http, config);
    h.client_sends(b"POST http://a.corp/ HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
    h.upstream_reads = false;
    h.connected();
    h.take_actions();
    h.client_sends(&[b'y'; 1200]);
    assert_eq!(h.take_actions(), vec![Action::PauseClient]);
    h.upstream_reads = true;
    h.drain();
    assert_eq!(h.take_actions(), vec![Action::ResumeClient]);
    let head = "POST / HTTP/1.1\r\nHost: a.corp\r\nContent-Length: 5000\r\n\r\n";
    let sent = h.take_upstream();
    assert_eq!(&sent[..head.len()], head.as_bytes());
    assert_eq!(&sent[head.len()..], &[b'y'; 1200][..]);
}

#[test]
fn pipelined_backlog_pauses_the_client() {
    let config = ProxyConfig {
        max_request_head: 500,
        ..ProxyConfig::default()
    };
    let mut h = Harness::new(FrontEnd::Http, config);
    h.client_sends(GET_A);
    h.connected();
    h.take_actions();
    let next = b"GET http://a.corp/more HTTP/1.1\r\n\r\n";
    assert_eq!(next.len(), 35);
    for _ in 0..14 {
        h.client_sends(next);
    }
    assert!(
        h.take_actions().is_empty(),
        "14 * 35 bytes are within the limit"
    );
    h.client_sends(next);
    assert_eq!(h.take_actions(), vec![Action::PauseClient]);
    // Each response lets one waiting request through; reading resumes at half the limit.
    let mut responses = 0;
    while h.take_actions().is_empty() {
        h.upstream_sends(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        responses += 1;
        assert!(responses < 15);
    }
    assert_eq!(responses, 8, "15 * 35 - 8 * 35 = 245 <= 250");
    let forwarded = h.upstream_text();
    assert_eq!(forwarded.matches("GET /more HTTP/1.1").count(), 8);
}

#[test]
fn connect_early_data_is_bounded_too() {
    let config = ProxyConfig {
        max_request_head: 100,
        ..ProxyConfig::default()
    };
    let mut h = Harness::new(FrontEnd::Http, config);
    h.client_sends(b"CONNECT a.corp:443 HTTP/1.1\r\n\r\n");
    h.client_sends(&[0x16; 150]);
    assert_eq!(
        h.take_actions(),
        vec![connect("a.corp", 443), Action::PauseClient]
    );
    h.connected();
    assert_eq!(h.take_actions(), vec![Action::ResumeClient]);
    assert_eq!(h.take_upstream(), vec![0x16; 150]);
}

#[test]
fn client_reset_releases_everything() {
    let mut h = Harness::http();
    h.client_sends(GET_A);
    h.take_actions();
    h.conn.on_client_reset(h.now);
    h.drain();
    assert_eq!(
        h.take_actions(),
        vec![Action::CloseUpstream, Action::CloseClient]
    );
    h.client_sends(GET_A);
    h.upstream_sends(b"x");
    h.connected();
    assert!(h.take_actions().is_empty());
    assert!(h.take_client().is_empty());
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn lingering_close_discards_client_bytes_and_ends_at_the_deadline() {
    let mut h = Harness::http();
    h.client_sends(b"BROKEN\r\n\r\n");
    h.take_client();
    assert_eq!(h.take_actions(), vec![Action::ShutdownClient]);
    h.client_sends(b"more junk");
    assert!(h.take_client().is_empty());
    assert!(h.take_actions().is_empty());
    let deadline = h.conn.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + Duration::from_secs(5));
    h.fire_deadline();
    assert_eq!(h.take_actions(), vec![Action::CloseClient]);
}

#[test]
fn stray_line_ends_between_requests_are_ignored() {
    let mut h = Harness::http();
    h.client_sends(b"\r\n\r\n");
    h.client_sends(GET_A);
    assert_eq!(h.take_actions(), vec![connect("a.corp", 80)]);
}
