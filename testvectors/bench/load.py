#!/usr/bin/env python3
"""Many concurrent downloads through an HTTP proxy, every one checked.

Opens COUNT TCP connections to the proxy first (all of them, before any request), then sends
one GET for URL on each and reads every response to its end, checking its status, its length
and the SHA-256 of its body. Prints one summary line:

    load: ok=N failed=M open_s=S total_s=T
    load: K x KIND (e.g. ...)         (up to five kinds, only when something failed)

and exits with status 0 only when all COUNT downloads arrived intact.

Usage: load.py --proxy 127.0.0.1:8080 --url http://10.8.0.1:8080/bytes/1048576 \
               --count 1000 --size 1048576 --sha256 HEX [--timeout 300]
"""

import argparse
import asyncio
import collections
import hashlib
import resource
import sys
import time


async def open_all(host, port, count):
    """Opens `count` connections to host:port, all at once; returns (reader, writer) pairs
    or the exception of each one that failed."""
    return await asyncio.gather(
        *(asyncio.open_connection(host, port) for _ in range(count)), return_exceptions=True
    )


async def fetch(conn, url, size, sha256):
    """Sends the request on an open proxy connection and checks the response; returns None
    when it is intact, else what was wrong."""
    reader, writer = conn
    try:
        writer.write(("GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" % url).encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            return "status line %r" % status
        digest = hashlib.sha256()
        received = 0
        while received < size:
            piece = await reader.read(min(65536, size - received))
            if not piece:
                break
            digest.update(piece)
            received += len(piece)
        if received != size:
            return "got %d of %d bytes" % (received, size)
        if digest.hexdigest() != sha256:
            return "sha256 %s, expected %s" % (digest.hexdigest(), sha256)
        return None
    except Exception as error:  # Reported, not raised: one bad download must not hide the rest.
        return "%s: %s" % (type(error).__name__, error)
    finally:
        writer.close()


async def main(args):
    host, port = args.proxy.rsplit(":", 1)
    started = time.monotonic()
    conns = await open_all(host, int(port), args.count)
    opened = time.monotonic()
    failures = ["connect: %s" % c for c in conns if isinstance(c, BaseException)]
    good = [c for c in conns if not isinstance(c, BaseException)]
    tasks = [asyncio.ensure_future(fetch(c, args.url, args.size, args.sha256)) for c in good]
    done, pending = await asyncio.wait(tasks, timeout=args.timeout) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    failures += [t.result() for t in done if t.result() is not None]
    failures += ["no complete response after %ss" % args.timeout] * len(pending)
    ok = args.count - len(failures)
    print("load: ok=%d failed=%d open_s=%.3f total_s=%.3f"
          % (ok, len(failures), opened - started, time.monotonic() - started), flush=True)
    # What went wrong, grouped by the start of the message (the numbers vary).
    kinds = collections.Counter(f.split(":")[0][:60] for f in failures)
    for kind, count in kinds.most_common(5):
        example = next(f for f in failures if f.startswith(kind))
        print("load: %d x %s (e.g. %s)" % (count, kind, example[:160]), flush=True)
    return 0 if not failures else 1


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", required=True, help="HOST:PORT of the HTTP proxy")
    parser.add_argument("--url", required=True, help="absolute URL to GET through the proxy")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, required=True, help="expected body length")
    parser.add_argument("--sha256", required=True, help="expected body SHA-256 (hex)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for all of it")
    return parser.parse_args()


if __name__ == "__main__":
    # A thousand sockets need more than the usual soft limit of 1024 descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.exit(asyncio.run(main(parse_args())))
