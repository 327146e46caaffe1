#!/usr/bin/env python3
"""HTTP/1.1 test server of the erebus interop harness (Python 3 standard library only).

It listens on the server's tunnel address, so it can only be reached through a VPN tunnel.

  GET  /               small HTML page containing the marker  erebus-harness-ok
  GET  /echo           request line and request headers, as text
  GET  /bytes/N        N bytes of the harness pattern stream (see below)
  GET  /bytes/N?chunked=1   the same bytes, sent with Transfer-Encoding: chunked
  POST /upload         reads the body (Content-Length or chunked) and answers
                       "bytes=<n> sha256=<hex>\\n"   (PUT is accepted too)
  HEAD                 every GET path, headers only

Every answer says who connected in the header X-Erebus-Peer (address:port). Connections are
kept alive (HTTP/1.1) and each one is served by its own thread.

With --tls-port, --tls-cert and --tls-key it also serves the same paths over HTTPS on a second
port of the same address. The TLS handshake runs in the connection's own thread, so a client
that connects and never speaks does not hold up the others.

The pattern stream (erebus_testvectors::netns::PatternStream is the same generator in Rust):
  base      = SHA256("erebus-harness-bytes" || u32be(i)) for i in 0..2048     (64 KiB)
  chunk j   = base XOR (SHA256("erebus-harness-chunk" || u64be(j)) repeated 2048 times)
  stream    = chunk 0 || chunk 1 || chunk 2 || ...,  cut to the requested length
It never repeats within 2^64 chunks, and it is cheap to make in Python (one big-integer XOR per
64 KiB), so multi-GiB downloads are not limited by this server.

usage: httpd.py --bind ADDRESS --port PORT [--tls-port PORT --tls-cert PEM --tls-key PEM]
The line "httpd: listening on ADDRESS:PORT" on stderr means that socket is bound and listening;
the HTTPS one is announced last, as "httpd: listening on ADDRESS:PORT (https)".
"""
import argparse
import functools
import hashlib
import http.server
import ssl
import sys
import threading
import urllib.parse

MARKER = "erebus-harness-ok"
CHUNK_LEN = 65536
MAX_PATTERN_LEN = 1 << 40  # refuse absurd sizes instead of streaming forever

BASE_BLOCK = b"".join(
    hashlib.sha256(b"erebus-harness-bytes" + i.to_bytes(4, "big")).digest()
    for i in range(CHUNK_LEN // 32)
)
BASE_INT = int.from_bytes(BASE_BLOCK, "big")


@functools.lru_cache(maxsize=64)
def pattern_chunk(index):
    """Chunk number `index` (64 KiB) of the pattern stream. The first few MiB are kept, so that
    many concurrent downloads do not each compute them again."""
    pad = hashlib.sha256(b"erebus-harness-chunk" + index.to_bytes(8, "big")).digest()
    pad_int = int.from_bytes(pad * (CHUNK_LEN // 32), "big")
    return (BASE_INT ^ pad_int).to_bytes(CHUNK_LEN, "big")


def pattern_pieces(length):
    """Yields the first `length` bytes of the pattern stream, at most 64 KiB at a time."""
    index = 0
    remaining = length
    while remaining > 0:
        chunk = pattern_chunk(index)
        if remaining < CHUNK_LEN:
            chunk = chunk[:remaining]
        yield chunk
        remaining -= len(chunk)
        index += 1


INDEX_PAGE = (
    "<!doctype html>\n<html><head><title>erebus interop harness</title></head>\n"
    "<body><p>%s</p></body></html>\n" % MARKER
).encode()


class BadRequest(Exception):
    """The request body could not be read (malformed chunked encoding, bad length)."""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "erebus-harness-httpd/1"
    sys_version = ""

    def log_message(self, fmt, *args):
        scheme = "https " if isinstance(self.connection, ssl.SSLSocket) else ""
        sys.stderr.write("httpd: %s%s:%d %s\n" % (scheme, self.client_address[0], self.client_address[1], fmt % args))
        sys.stderr.flush()

    def _peer_header(self):
        self.send_header("X-Erebus-Peer", "%s:%d" % self.client_address[:2])

    def _answer(self, code, body, content_type="text/plain; charset=utf-8"):
        self.send_response(code)
        self._peer_header()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route_get(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path in ("/", "/index.html"):
            return self._answer(200, INDEX_PAGE, "text/html; charset=utf-8")
        if url.path == "/echo":
            return self._answer(200, (self.requestline + "\r\n" + str(self.headers)).encode())
        if url.path.startswith("/bytes/"):
            text = url.path[len("/bytes/"):]
            if not text.isdigit() or int(text) > MAX_PATTERN_LEN:
                return self._answer(400, b"bad length\n")
            return self._send_pattern(int(text), query.get("chunked", ["0"])[0] == "1")
        return self._answer(404, b"not found\n")

    def _send_pattern(self, length, chunked):
        self.send_response(200)
        self._peer_header()
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        for piece in pattern_pieces(length):
            if chunked:
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                self.wfile.write(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        self._route_get()

    def do_HEAD(self):
        self._route_get()

    def _read_line(self):
        line = self.rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise BadRequest("line too long or connection closed")
        return line

    def _body_pieces(self):
        """Yields the request body, whether it is sent with Content-Length or chunked."""
        encoding = self.headers.get("Transfer-Encoding", "").lower()
        if encoding:
            if encoding != "chunked":
                raise BadRequest("unsupported transfer encoding %r" % encoding)
            while True:
                size_text = self._read_line().split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadRequest("bad chunk size %r" % size_text)
                if size == 0:
                    while self._read_line() not in (b"\r\n", b"\n"):  # trailer fields
                        pass
                    return
                while size > 0:
                    data = self.rfile.read(min(size, 1 << 20))
                    if not data:
                        raise BadRequest("connection closed inside a chunk")
                    size -= len(data)
                    yield data
                if self._read_line() not in (b"\r\n", b"\n"):
                    raise BadRequest("chunk not followed by CRLF")
        else:
            length_text = self.headers.get("Content-Length")
            if length_text is None or not length_text.strip().isdigit():
                raise BadRequest("missing or bad Content-Length")
            remaining = int(length_text)
            while remaining > 0:
                data = self.rfile.read(min(remaining, 1 << 20))
                if not data:
                    raise BadRequest("connection closed inside the body")
                remaining -= len(data)
                yield data

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/upload":
            self.close_connection = True  # the unread body would be parsed as the next request
            return self._answer(404, b"not found\n")
        digest = hashlib.sha256()
        total = 0
        try:
            for piece in self._body_pieces():
                digest.update(piece)
                total += len(piece)
        except BadRequest as error:
            self.close_connection = True
            return self._answer(400, ("bad request body: %s\n" % error).encode())
        self._answer(200, ("bytes=%d sha256=%s\n" % (total, digest.hexdigest())).encode())

    do_PUT = do_POST


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


class TlsServer(Server):
    """The same server behind TLS. Each accepted connection is wrapped in its own thread."""

    HANDSHAKE_TIMEOUT = 30.0

    def __init__(self, address, handler, context):
        self.tls_context = context
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        request.settimeout(self.HANDSHAKE_TIMEOUT)
        try:
            tls = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            sys.stderr.write("httpd: https %s:%d TLS handshake failed: %s\n" % (client_address[0], client_address[1], error))
            sys.stderr.flush()
            return
        tls.settimeout(None)
        try:
            super().finish_request(tls, client_address)
        finally:
            # wrap_socket took over the accepted socket, so closing it is up to us. Send
            # close_notify, but do not wait long for the client's.
            try:
                tls.settimeout(2.0)
                tls.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
            tls.close()


def main():
    parser = argparse.ArgumentParser(description="erebus interop harness HTTP server")
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-port", type=int, help="also serve HTTPS on this port")
    parser.add_argument("--tls-cert", help="PEM certificate chain for HTTPS")
    parser.add_argument("--tls-key", help="PEM private key for HTTPS")
    args = parser.parse_args()
    if args.tls_port is not None and not (args.tls_cert and args.tls_key):
        parser.error("--tls-port needs --tls-cert and --tls-key")
    server = Server((args.bind, args.port), Handler)
    print("httpd: listening on %s:%d" % (args.bind, args.port), file=sys.stderr, flush=True)
    if args.tls_port is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.tls_cert, args.tls_key)
        tls_server = TlsServer((args.bind, args.tls_port), Handler, context)
        threading.Thread(target=tls_server.serve_forever, daemon=True).start()
        print("httpd: listening on %s:%d (https)" % (args.bind, args.tls_port), file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
