#!/usr/bin/env python3
"""Network probes of the erebus interop harness (Python 3 standard library only), so the
harness needs neither dig nor ping.

  probe.py dns SERVER NAME [--type A|AAAA] [--timeout S]
      one DNS query over UDP port 53; prints one address per line; exit 0 if there is an answer
  probe.py ping ADDRESS [--count N] [--timeout S]
      ICMP echo over a raw socket (needs root); exit 0 once one reply came back

Exit status 1 means "no answer", 2 means a usage or protocol error.
"""
import argparse
import os
import select
import socket
import struct
import sys
import time

QUERY_TYPES = {"A": 1, "AAAA": 28}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError("bad label %r" % label)
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def skip_name(message, offset):
    while True:
        if offset >= len(message):
            raise ValueError("name runs past the end of the message")
        length = message[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += length + 1


def dns_query(server, name, query_type, timeout):
    qtype = QUERY_TYPES[query_type]
    txid = int.from_bytes(os.urandom(2), "big")
    query = struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, 53))
        sock.send(query)
        while True:
            message = sock.recv(4096)
            if len(message) >= 12 and struct.unpack(">H", message[:2])[0] == txid:
                break
    _, flags, questions, answers, _, _ = struct.unpack(">HHHHHH", message[:12])
    offset = 12
    for _ in range(questions):
        offset = skip_name(message, offset) + 4
    addresses = []
    for _ in range(answers):
        offset = skip_name(message, offset)
        if offset + 10 > len(message):
            raise ValueError("truncated answer")
        rtype, _, _, rdlength = struct.unpack(">HHIH", message[offset:offset + 10])
        offset += 10
        rdata = message[offset:offset + rdlength]
        offset += rdlength
        if rtype == 1 and rdlength == 4:
            addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28 and rdlength == 16:
            addresses.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return flags & 0xF, addresses


def checksum(data):
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(address, count, timeout):
    ident = os.getpid() & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for sequence in range(1, count + 1):
            payload = b"erebus-harness-ping" + struct.pack(">d", time.monotonic())
            header = struct.pack(">BBHHH", 8, 0, 0, ident, sequence)
            packet = struct.pack(">BBHHH", 8, 0, checksum(header + payload), ident, sequence) + payload
            try:
                sock.sendto(packet, (address, 0))
            except OSError as error:  # e.g. "Network is unreachable" before the tunnel exists
                print("ping %s: %s" % (address, error), file=sys.stderr)
                time.sleep(timeout)
                continue
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([sock], [], [], left)[0]:
                    print("ping %s: no reply to seq %d" % (address, sequence), file=sys.stderr)
                    break
                reply, source = sock.recvfrom(2048)
                header_len = (reply[0] & 0x0F) * 4
                icmp = reply[header_len:header_len + 8]
                if len(icmp) < 8 or source[0] != address:
                    continue
                kind, _, _, reply_ident, reply_sequence = struct.unpack(">BBHHH", icmp)
                if kind == 0 and reply_ident == ident and reply_sequence == sequence:
                    print("reply from %s seq %d" % (address, sequence))
                    return True
    return False


def main():
    parser = argparse.ArgumentParser(description="erebus interop harness probes")
    commands = parser.add_subparsers(dest="command", required=True)
    dns = commands.add_parser("dns")
    dns.add_argument("server")
    dns.add_argument("name")
    dns.add_argument("--type", default="A", choices=sorted(QUERY_TYPES))
    dns.add_argument("--timeout", type=float, default=3.0)
    echo = commands.add_parser("ping")
    echo.add_argument("address")
    echo.add_argument("--count", type=int, default=3)
    echo.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    try:
        if args.command == "dns":
            rcode, addresses = dns_query(args.server, args.name, args.type, args.timeout)
            for address in addresses:
                print(address)
            if not addresses:
                print("no answer (rcode %d)" % rcode, file=sys.stderr)
            return 0 if addresses else 1
        return 0 if ping(args.address, args.count, args.timeout) else 1
    except socket.timeout:
        print("timed out", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:
        print("error: %s" % error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
