//! Memory under load: a thousand concurrent proxied downloads stay within a bounded footprint.
//!
//! Against a real OpenVPN 2.6 server, erebus runs as nobody in the client namespace. A load
//! generator there opens 1,000 connections to erebus's HTTP proxy, all of them before any
//! request is sent, then has each GET a body of the harness pattern stream and checks every
//! body's length and SHA-256. erebus's peak RSS (`VmHWM`) must stay within [`PEAK_RSS_LIMIT`],
//! and a few seconds after the load its RSS must be back within [`SETTLED_RSS_FACTOR`] times
//! what it was idle: per-connection buffers grow only as far as unread data needs, the
//! connections share a bounded receive memory, and closed connections give their memory back
//! to the system. Runs under the mio and smol drivers.
//!
//! Each connection fetches 1 MiB (1 GiB in all). The server's TUN device gets a transmit
//! queue of [`SERVER_TXQUEUELEN`] packets: at its usual 500, a thousand origin connections
//! starting at once overrun the single-threaded server's queue, the origin's TCP backs off
//! for minutes (see the README's known limits), and the test would measure that, not erebus.
//! The ignored tests run the same load against the usual queue:
//!
//! ```text
//! cargo test --release -p erebus --test load_e2e -- --nocapture
//! cargo test --release -p erebus --test load_e2e -- --ignored --nocapture
//! ```
//!
//! `EREBUS_LOAD_BINARY` runs another erebus binary instead (to compare builds); the limits are
//! then reported, not asserted.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // Test code that reports figures.

mod e2e;

use std::time::{Duration, Instant};

use erebus_testvectors::netns::{
    self, OpenVpnServer, RunAs, ServerOptions, ServerProfile, Transport,
};

/// Concurrent connections.
const CONNECTIONS: usize = 1000;
/// Bytes each connection downloads.
const BODY: u64 = 1 << 20;
/// The server's TUN transmit queue (`--txqueuelen`) for the load, in packets.
const SERVER_TXQUEUELEN: u32 = 10_000;
/// The most erebus's resident memory may reach during the load.
const PEAK_RSS_LIMIT: u64 = 64 << 20;
/// How far above its idle RSS erebus may stay a few seconds after the load ended. Idle it
/// holds about 7 MiB, and after a thousand 1 MiB downloads about 9 under mio; before the
/// freed memory was handed back it kept most of its peak.
const SETTLED_RSS_FACTOR: u64 = 2;
/// How long after the load the settled RSS is measured: the memory of closed connections is
/// given back at most once a second.
const SETTLE_TIME: Duration = Duration::from_secs(5);
/// How long the load may take, with the raised TUN queue and with the usual one.
const LOAD_TIMEOUT: Duration = Duration::from_secs(180);
const USUAL_QUEUE_LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// The load generator, run with python3 in the client namespace: it opens every connection
/// (non-blocking connects, then waits until all are established), then sends every request,
/// then reads every response to the end, hashing the bodies as they come. It prints one line
/// per failure and a final `done ok=<n> failed=<n>`.
const LOAD_PY: &str = r#"
import hashlib, resource, selectors, socket, sys, time

host, port, url, count, length, digest = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = count + 64
if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))

sel = selectors.DefaultSelector()
conns = []
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, port))
    conns.append(s)
    sel.register(s, selectors.EVENT_WRITE, len(conns) - 1)
pending = count
deadline = time.monotonic() + 30
failed = 0
while pending and time.monotonic() < deadline:
    for key, _ in sel.select(timeout=1):
        i = key.data
        sel.unregister(key.fileobj)
        pending -= 1
        err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            print("connect %d failed: %d" % (i, err), flush=True)
            conns[i] = None
            failed += 1
if pending:
    print("%d connects did not complete" % pending, flush=True)
    sys.exit(1)
t_open = time.monotonic()

request = ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (url, url.split("/")[2])).encode()
state = {}
for i, s in enumerate(conns):
    if s is None:
        continue
    s.setblocking(True)
    s.sendall(request)
    s.setblocking(False)
    state[i] = [b"", None, 0]  # head bytes so far, body hash once the head is parsed, body length
    sel.register(s, selectors.EVENT_READ, i)
print("opened %d, requests sent" % len(state), flush=True)

ok = 0
deadline = time.monotonic() + float(sys.argv[7])
while state and time.monotonic() < deadline:
    for key, _ in sel.select(timeout=1):
        i = key.data
        s = key.fileobj
        st = state[i]
        try:
            data = s.recv(262144)
        except BlockingIOError:
            continue
        except OSError as e:
            data = None
            print("conn %d: %s" % (i, e), flush=True)
        if data:
            if st[1] is None:
                st[0] += data
                end = st[0].find(b"\r\n\r\n")
                if end < 0:
                    continue
                head, body = st[0][:end], st[0][end + 4:]
                if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
                    print("conn %d: bad head %r" % (i, head[:80]), flush=True)
                st[1] = hashlib.sha256()
                st[0] = head
                data = body
            st[1].update(data)
            st[2] += len(data)
            continue
        sel.unregister(s)
        s.close()
        del state[i]
        good = st[1] is not None and st[2] == length and st[1].hexdigest() == digest and b" 200" in st[0][:16]
        if good:
            ok += 1
        else:
            failed += 1
            print("conn %d: got %d body bytes, intact=%s" % (i, st[2], st[1] is not None and st[1].hexdigest() == digest), flush=True)
for i in state:
    print("conn %d: unfinished after %d body bytes" % (i, state[i][2]), flush=True)
failed += len(state)
print("done ok=%d failed=%d load_seconds=%.1f" % (ok, failed, time.monotonic() - t_open), flush=True)
"#;

/// One field (in kB) of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn thousand_downloads(runtime: &str, txqueuelen: Option<u32>, load_timeout: Duration) {
    let body_len = BODY;
    let queue = txqueuelen.map_or("the usual TUN queue".to_owned(), |q| {
        format!("txqueuelen {q}")
    });
    let name = match txqueuelen {
        Some(_) => format!("thousand_concurrent_1_mib_downloads_with_{runtime}"),
        None => {
            format!("thousand_concurrent_1_mib_downloads_at_the_usual_tun_queue_with_{runtime}")
        }
    };
    if !netns::should_run_interop(&name) {
        return;
    }
    let other_binary = std::env::var("EREBUS_LOAD_BINARY").ok();
    let binary = other_binary.as_deref().unwrap_or(e2e::EREBUS);
    let mut options = ServerOptions::default();
    if let Some(q) = txqueuelen {
        options
            .extra_openvpn_args
            .extend(["--txqueuelen".to_owned(), q.to_string()]);
    }
    let server =
        OpenVpnServer::start_with(ServerProfile::TlsCrypt, Transport::Udp, &options).unwrap();
    let config = server.client_profile_path();
    let mut erebus = server
        .spawn_in_client(
            RunAs::Nobody,
            &[
                binary,
                "--config",
                config.to_str().unwrap(),
                "--runtime",
                runtime,
                "--no-socks",
            ],
            "erebus.log",
        )
        .unwrap();
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .unwrap();
    let up = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        e2e::read_log(erebus.log_path()).contains("erebus: up:")
    });
    assert!(up, "erebus did not come up:\n{}", erebus.log_tail(30));
    let pid = erebus.pid();
    assert_eq!(netns::uid_of(pid), Some(e2e::NOBODY_UID));
    std::thread::sleep(Duration::from_millis(500));
    let idle = status_bytes(pid, "VmRSS:");

    let script = server.instance_dir().join("load.py");
    std::fs::write(&script, LOAD_PY).unwrap();
    let python = netns::find_program("python3").unwrap();
    let url = format!("{}bytes/{body_len}", server.http_url());
    let digest = netns::hex(&netns::pattern_sha256(body_len));
    let started = Instant::now();
    let out = server
        .run_in_client(
            RunAs::Root,
            &[
                python.to_str().unwrap(),
                script.to_str().unwrap(),
                "127.0.0.1",
                "8080",
                &url,
                &CONNECTIONS.to_string(),
                &body_len.to_string(),
                &digest,
                &load_timeout.as_secs().to_string(),
            ],
            load_timeout + Duration::from_secs(40),
        )
        .unwrap();
    let elapsed = started.elapsed();
    let peak = status_bytes(pid, "VmHWM:");
    let report = out.stdout_text();
    std::thread::sleep(SETTLE_TIME);
    let settled = status_bytes(pid, "VmRSS:");
    println!(
        "{name}: {queue}: binary {binary}: {CONNECTIONS} x {body_len} bytes in {elapsed:.1?}: idle RSS \
         {:.1} MiB, peak {:.1} MiB, {SETTLE_TIME:?} after the load {:.1} MiB",
        mib(idle),
        mib(peak),
        mib(settled)
    );
    let summary = report.lines().last().unwrap_or_default().to_owned();
    println!("{name}: load generator: {summary}");
    assert!(
        out.success() && summary.starts_with(&format!("done ok={CONNECTIONS} failed=0")),
        "not every download arrived intact:\n{}\n{}\nerebus log:\n{}",
        tail(&report, 40),
        out.stderr_text(),
        erebus.log_tail(40)
    );
    assert!(erebus.exit_status().is_none(), "erebus exited under load");
    if other_binary.is_none() {
        assert!(
            peak <= PEAK_RSS_LIMIT,
            "peak RSS {:.1} MiB exceeds {:.0} MiB",
            mib(peak),
            mib(PEAK_RSS_LIMIT)
        );
        assert!(
            settled <= SETTLED_RSS_FACTOR * idle,
            "RSS {:.1} MiB after the load is more than {SETTLED_RSS_FACTOR} times the {:.1} MiB \
             it held idle",
            mib(settled),
            mib(idle)
        );
    }
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn thousand_concurrent_downloads_stay_bounded_with_mio() {
    thousand_downloads("mio", Some(SERVER_TXQUEUELEN), LOAD_TIMEOUT);
}

#[test]
fn thousand_concurrent_downloads_stay_bounded_with_smol() {
    thousand_downloads("smol", Some(SERVER_TXQUEUELEN), LOAD_TIMEOUT);
}

#[test]
#[ignore = "against the server's usual TUN queue the load takes minutes: run with --ignored"]
fn thousand_concurrent_downloads_against_the_usual_tun_queue_with_mio() {
    thousand_downloads("mio", None, USUAL_QUEUE_LOAD_TIMEOUT);
}

#[test]
#[ignore = "against the server's usual TUN queue the load takes minutes: run with --ignored"]
fn thousand_concurrent_downloads_against_the_usual_tun_queue_with_smol() {
    thousand_downloads("smol", None, USUAL_QUEUE_LOAD_TIMEOUT);
}
