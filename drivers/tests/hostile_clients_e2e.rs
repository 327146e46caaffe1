//! Hostile and heavy proxy clients: slowloris, garbage, and ten thousand requests in a row.
//!
//! Against a real OpenVPN 2.6 server, erebus runs as nobody in the client namespace with its
//! HTTP proxy (127.0.0.1:8080) and its SOCKS5 proxy (127.0.0.1:1080); load generators written
//! in Python run there too. Every scenario runs under the mio and the smol driver:
//!
//! - **Slowloris.** 300 connections to the HTTP proxy and 50 to the SOCKS5 proxy each send
//!   the start of a request (a head without its blank line, one byte of a greeting) and
//!   hold the socket. While they are held, a request through each proxy is answered within
//!   [`ANSWER_BOUND`], and erebus closes none of them early; once the clients let go,
//!   erebus's descriptors drop back to what it held before. The handshake timeout itself
//!   (30 s, not settable from the command line) is checked by the ignored tests.
//! - **Garbage.** Random bytes, oversized heads, bad targets and a line that is not HTTP go
//!   to the HTTP proxy; greetings of other SOCKS versions, an empty method list, a truncated
//!   request, an unknown command and an unknown address type go to the SOCKS5 proxy. Each
//!   gets exactly the answer `erebus-proxy` is designed to give (the status codes of
//!   `proxy/src/http/mod.rs`, the replies of `proxy/src/socks5.rs`); afterwards the same
//!   erebus process is still serving and has logged no panic.
//! - **Ten thousand requests.** One generator makes 10,000 requests in a row, each on a
//!   fresh connection, through the HTTP proxy and (in its own test) through SOCKS5; every
//!   response must be a 200 with the harness page. erebus's RSS and descriptor count after
//!   request 1,000 and after request 10,000 must be the same within [`FD_MARGIN`] and
//!   [`RSS_FACTOR_PERCENT`] + [`RSS_MARGIN`].
//!
//! ```text
//! cargo test --release -p erebus --test hostile_clients_e2e -- --nocapture --test-threads 1
//! cargo test --release -p erebus --test hostile_clients_e2e -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout)] // Test code that reports figures.

mod e2e;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use erebus_testvectors::netns::{
    self, HTTP_MARKER, HTTP_PORT, NsProcess, OpenVpnServer, RunAs, SERVER_TUNNEL_ADDR,
    ServerProfile, Transport,
};

/// erebus's SOCKS5 proxy port (its default listener).
const SOCKS_PORT: u16 = 1080;
/// erebus's HTTP proxy port (its default listener).
const PROXY_PORT: u16 = 8080;
/// Slowloris connections to the HTTP proxy, and to the SOCKS5 proxy.
const SLOW_HTTP: usize = 300;
const SLOW_SOCKS: usize = 50;
/// How long a request through a proxy may take while the slowloris connections are held.
const ANSWER_BOUND: Duration = Duration::from_secs(5);
/// How long the slowloris connections are held at least (erebus must close none of them
/// within its handshake timeout).
const HOLD: Duration = Duration::from_secs(5);
/// Requests in a row in the flat-memory tests, and the one after which the warm-up is over.
const REQUESTS: usize = 10_000;
const WARM_UP: usize = 1_000;
/// How many more descriptors erebus may hold after the last request than after the warm-up.
const FD_MARGIN: usize = 4;
/// How much more resident memory erebus may hold after the last request than after the
/// warm-up: this percentage of it plus [`RSS_MARGIN`]. A leak of 1 KiB per connection
/// (9 MiB over the 9,000 requests between the samples) is well beyond it.
const RSS_FACTOR_PERCENT: u64 = 110;
const RSS_MARGIN: u64 = 1 << 20;
/// How long the generator lets erebus settle before each sample: closed connections linger
/// until the client's close is seen, and freed memory goes back to the system at most once
/// a second.
const SETTLE_SECONDS: &str = "1.5";
/// erebus's handshake timeout (`ProxyConfig::handshake_timeout`'s default).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The generators, run with python3 in the client namespace. `slowloris` holds partial
/// requests until a file appears (or, with `server`, until erebus closes them); `garbage`
/// sends each hostile input on its own connection and prints what came back; `sequential`
/// makes one request after another and samples erebus's memory and descriptors.
const CLIENTS_PY: &str = r#"
import os, random, resource, selectors, socket, sys, time

def raise_nofile(count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))

def read_to_end(s, timeout):
    """Everything the peer sends until it closes; and how it ended: eof, reset or timeout."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, "timeout"
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return data, "timeout"
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk

def read_exactly(s, count, timeout):
    data = b""
    s.settimeout(timeout)
    while len(data) < count:
        chunk = s.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data

def open_slow(host, http_port, socks_port, http_count, socks_count):
    raise_nofile(http_count + socks_count)
    held = []
    for i in range(http_count):
        s = socket.create_connection((host, http_port), timeout=10)
        s.sendall(b"GET http://10.8.0.1:8080/ HTTP/1.1\r\nHost: 10.8.0.1:8080")
        held.append(("http", s))
    for i in range(socks_count):
        s = socket.create_connection((host, socks_port), timeout=10)
        s.sendall(b"\x05")
        held.append(("socks", s))
    for _, s in held:
        s.setblocking(False)
    return held

def slowloris(host, http_port, socks_port, http_count, socks_count, until, limit):
    held = open_slow(host, http_port, socks_port, http_count, socks_count)
    print("held http=%d socks=%d" % (http_count, socks_count), flush=True)
    sel = selectors.DefaultSelector()
    for i, (kind, s) in enumerate(held):
        sel.register(s, selectors.EVENT_READ, i)
    got = {}
    ended = {}
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and len(ended) < len(held):
        if until != "server" and os.path.exists(until):
            break
        for key, _ in sel.select(timeout=0.2):
            i = key.data
            try:
                chunk = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = None
            if chunk:
                got[i] = got.get(i, b"") + chunk
                continue
            ended[i] = "eof" if chunk is not None else "reset"
            sel.unregister(key.fileobj)
    counts = {}
    for i, (kind, s) in enumerate(held):
        head = got.get(i, b"")[:12].decode("latin-1")
        outcome = "%s %s %s" % (kind, ended.get(i, "open"), head.replace(" ", "_") or "-")
        counts[outcome] = counts.get(outcome, 0) + 1
        s.close()
    for outcome, n in sorted(counts.items()):
        print("outcome %s count=%d" % (outcome, n), flush=True)
    print("released", flush=True)

def one_case(name, port, parts, half_close=False):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    for part in parts:
        s.sendall(part)
        time.sleep(0.05)
    if half_close:
        s.shutdown(socket.SHUT_WR)
    data, how = read_to_end(s, 10)
    s.close()
    print("case %s %s %s" % (name, how, data.hex() or "-"), flush=True)

def garbage(http_port, socks_port, target_ip, target_port):
    rng = random.Random(14)
    noise = bytes(rng.randrange(256) for _ in range(2000))
    # The head ends at the first blank line, so random bytes need no terminator of their
    # own but get one, to be parsed at once rather than at the end of the connection.
    noise = noise.lstrip(b"\r\n")
    url = "http://%s:%d/" % (target_ip, target_port)
    one_case("random-bytes", http_port, [noise + b"\r\n\r\n"])
    one_case("random-bytes-then-eof", http_port, [noise.replace(b"\n", b"")], half_close=True)
    pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40))
    one_case("head-over-32k", http_port, [b"GET " + url.encode() + b" HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n"])
    one_case("line-over-8k", http_port, [b"GET " + url.encode() + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"])
    one_case("bad-port", http_port, [b"GET http://10.8.0.1:99999/ HTTP/1.1\r\nHost: x\r\n\r\n"])
    one_case("bad-host", http_port, [b"GET http://exa$mple!/ HTTP/1.1\r\nHost: x\r\n\r\n"])
    one_case("origin-form", http_port, [b"GET / HTTP/1.1\r\nHost: 10.8.0.1:8080\r\n\r\n"])
    one_case("not-http", http_port, [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"])
    one_case("http-2", http_port, [b"GET " + url.encode() + b" HTTP/2.0\r\nHost: x\r\n\r\n"])
    connect = b"\x05\x01\x00\x01" + socket.inet_aton(target_ip) + target_port.to_bytes(2, "big")
    one_case("socks4-greeting", socks_port, [b"\x04\x01" + target_port.to_bytes(2, "big") + socket.inet_aton(target_ip) + b"\x00"])
    one_case("socks6-greeting", socks_port, [b"\x06\x01\x00"])
    one_case("zero-methods", socks_port, [b"\x05\x00"])
    one_case("truncated-request", socks_port, [b"\x05\x01\x00", connect[:6]], half_close=True)
    one_case("bind-command", socks_port, [b"\x05\x01\x00", b"\x05\x02" + connect[2:]])
    one_case("udp-associate", socks_port, [b"\x05\x01\x00", b"\x05\x03" + connect[2:]])
    one_case("address-type-8", socks_port, [b"\x05\x01\x00", b"\x05\x01\x00\x08" + os.urandom(8)])
    one_case("request-version-4", socks_port, [b"\x05\x01\x00", b"\x04" + connect[1:]])
    one_case("port-zero", socks_port, [b"\x05\x01\x00", connect[:-2] + b"\x00\x00"])
    one_case("random-socks", socks_port, [b"\x05\x01\x00" + noise[:300]])
    print("garbage done", flush=True)

def sample(pid):
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir("/proc/%d/fd" % pid))

def sequential(kind, port, target_ip, target_port, count, warm_up, pid, settle, marker):
    request = ("GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (target_ip, target_port)).encode()
    if kind == "http":
        request = request.replace(b"GET / ", b"GET http://%s:%d/ " % (target_ip.encode(), target_port), 1)
    connect = b"\x05\x01\x00\x01" + socket.inet_aton(target_ip) + target_port.to_bytes(2, "big")
    ok = failed = 0
    busy = 0.0
    started = time.monotonic()
    for n in range(1, count + 1):
        error = None
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if kind == "socks":
                s.sendall(b"\x05\x01\x00")
                if read_exactly(s, 2, 10) != b"\x05\x00":
                    raise OSError("greeting refused")
                s.sendall(connect)
                reply = read_exactly(s, 10, 10)
                if reply[:2] != b"\x05\x00":
                    raise OSError("connect refused: %s" % reply.hex())
            s.sendall(request)
            data, how = read_to_end(s, 10)
            s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            length = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if how != "eof":
                error = "ended by %s" % how
            elif not head.startswith(b"HTTP/1.1 200 ") and not head.startswith(b"HTTP/1.0 200 "):
                error = "head %r" % head[:40]
            elif marker.encode() not in body or length != [str(len(body)).encode()]:
                error = "body of %d bytes, Content-Length %r" % (len(body), length)
        except OSError as e:
            error = str(e)
        if error is None:
            ok += 1
        else:
            failed += 1
            if failed <= 10:
                print("request %d: %s" % (n, error), flush=True)
        if n == warm_up or n == count:
            busy += time.monotonic() - started
            time.sleep(settle)
            rss, fds = sample(pid)
            print("sample %d rss=%d fds=%d" % (n, rss, fds), flush=True)
            started = time.monotonic()
    print("done ok=%d failed=%d rate=%.1f" % (ok, failed, count / busy), flush=True)

mode = sys.argv[1]
if mode == "slowloris":
    slowloris(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], float(sys.argv[8]))
elif mode == "garbage":
    garbage(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
elif mode == "sequential":
    sequential(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), float(sys.argv[9]), sys.argv[10])
"#;

/// erebus's resident memory in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    kib * 1024
}

/// How many descriptors erebus has open.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// erebus's figures at one moment, for the report.
fn figures(pid: u32) -> String {
    format!("{} fds, RSS {:.1} MiB", fds(pid), mib(rss(pid)))
}

/// Starts erebus with both proxies under `runtime` and waits for the SOCKS5 listener too.
fn start<'s>(server: &'s OpenVpnServer, runtime: &str) -> NsProcess<'s> {
    let config = server.client_profile_path();
    let mut erebus = e2e::start_erebus(
        server,
        &["--config", config.to_str().unwrap(), "--runtime", runtime],
    );
    erebus
        .wait_until_listening(SOCKS_PORT, Duration::from_secs(10))
        .unwrap();
    erebus
}

/// Writes the generators into the instance directory; returns python3 and the script.
fn generator(server: &OpenVpnServer) -> (String, String) {
    let script = server.instance_dir().join("clients.py");
    std::fs::write(&script, CLIENTS_PY).unwrap();
    let python = netns::find_program("python3").unwrap();
    (
        python.to_str().unwrap().to_owned(),
        script.to_str().unwrap().to_owned(),
    )
}

/// Fetches the harness page through `proxy` (curl's `-x` form) as nobody and checks it;
/// returns how long it took.
fn fetch_page(server: &OpenVpnServer, proxy: &str) -> Duration {
    let curl = netns::find_program("curl").unwrap();
    let started = Instant::now();
    let out = server
        .run_in_client(
            RunAs::Nobody,
            &[
                curl.to_str().unwrap(),
                "-sS",
                "--fail",
                "-m",
                "20",
                "-x",
                proxy,
                &server.http_url(),
            ],
            Duration::from_secs(30),
        )
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.success() && out.stdout_text().contains(HTTP_MARKER),
        "no page through {proxy}: {out}"
    );
    took
}

/// Polls `check` every 100 ms for up to `limit`; whether it came true.
fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of the generator's log that start with `prefix`, without it.
fn lines_with(log: &Path, prefix: &str) -> Vec<String> {
    e2e::read_log(log)
        .lines()
        .filter_map(|line| line.strip_prefix(prefix).map(str::to_owned))
        .collect()
}

/// Asserts that erebus logged no panic and still runs, as the same process.
fn assert_alive(erebus: &mut NsProcess<'_>, pid: u32) {
    assert_eq!(erebus.pid(), pid);
    assert!(
        erebus.exit_status().is_none(),
        "erebus exited:\n{}",
        erebus.log_tail(40)
    );
    assert_eq!(netns::uid_of(pid), Some(e2e::NOBODY_UID));
    let log = e2e::read_log(erebus.log_path());
    assert!(!log.contains("panicked"), "erebus panicked:\n{log}");
}

/// Holds the slowloris connections; checks that the proxies still answer and that erebus
/// neither closes the held connections early nor keeps their descriptors after the clients
/// let go.
fn slowloris(runtime: &str) {
    let name = format!("slowloris_clients_do_not_starve_others_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let mut erebus = start(&server, runtime);
    let pid = erebus.pid();
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = fds(pid);
    let before = figures(pid);

    let (python, script) = generator(&server);
    let release = server.instance_dir().join("release");
    let release_arg = release.to_str().unwrap();
    let (http_count, socks_count) = (SLOW_HTTP.to_string(), SLOW_SOCKS.to_string());
    let mut slow = server
        .spawn_in_client(
            RunAs::Root,
            &[
                &python,
                &script,
                "slowloris",
                "127.0.0.1",
                &PROXY_PORT.to_string(),
                &SOCKS_PORT.to_string(),
                &http_count,
                &socks_count,
                release_arg,
                "60",
            ],
            "slowloris.log",
        )
        .unwrap();
    let held = wait_for(Duration::from_secs(30), || {
        !lines_with(slow.log_path(), "held ").is_empty()
    });
    assert!(
        held,
        "the slowloris clients did not connect:\n{}",
        slow.log_tail(20)
    );
    let held_since = Instant::now();
    // erebus has accepted every held connection: one descriptor each.
    let all_accepted = wait_for(Duration::from_secs(10), || {
        fds(pid) >= fds_before + SLOW_HTTP + SLOW_SOCKS
    });
    let during = figures(pid);
    assert!(
        all_accepted,
        "erebus did not accept every held connection: {during}"
    );

    let via_http = fetch_page(&server, &format!("http://127.0.0.1:{PROXY_PORT}"));
    let via_socks = fetch_page(&server, &format!("socks5h://127.0.0.1:{SOCKS_PORT}"));
    println!(
        "{name}: with {SLOW_HTTP} + {SLOW_SOCKS} held: a page through HTTP in {via_http:.1?}, \
         through SOCKS5 in {via_socks:.1?}"
    );
    assert!(
        via_http <= ANSWER_BOUND && via_socks <= ANSWER_BOUND,
        "requests beside the held connections took {via_http:?} and {via_socks:?}"
    );

    std::thread::sleep(HOLD.saturating_sub(held_since.elapsed()));
    std::fs::write(&release, b"").unwrap();
    let released = wait_for(Duration::from_secs(10), || slow.exit_status().is_some());
    assert!(released, "the slowloris clients did not finish");
    let outcomes = lines_with(slow.log_path(), "outcome ");
    // Within the handshake timeout erebus answers none of the partial requests and closes
    // none of them.
    assert_eq!(
        outcomes,
        [
            format!("http open - count={SLOW_HTTP}"),
            format!("socks open - count={SLOW_SOCKS}")
        ],
        "held connections were answered or closed early:\n{}",
        slow.log_tail(20)
    );
    let dropped = wait_for(Duration::from_secs(15), || fds(pid) <= fds_before + 2);
    let after = figures(pid);
    println!("{name}: erebus before: {before}; while held: {during}; after: {after}");
    assert!(
        dropped,
        "erebus kept the closed connections' descriptors: {after}, {fds_before} fds before"
    );
    assert_alive(&mut erebus, pid);
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
}

/// Holds the slowloris connections past the handshake timeout: erebus answers every partial
/// HTTP head with 408 and closes every unfinished SOCKS5 greeting without a word.
fn slowloris_timeout(runtime: &str) {
    let name = format!("slowloris_clients_are_closed_after_the_handshake_timeout_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let mut erebus = start(&server, runtime);
    let pid = erebus.pid();
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = fds(pid);
    let (python, script) = generator(&server);
    let limit = (HANDSHAKE_TIMEOUT + Duration::from_secs(15))
        .as_secs()
        .to_string();
    let started = Instant::now();
    let out = server
        .run_in_client(
            RunAs::Root,
            &[
                &python,
                &script,
                "slowloris",
                "127.0.0.1",
                &PROXY_PORT.to_string(),
                &SOCKS_PORT.to_string(),
                &SLOW_HTTP.to_string(),
                &SLOW_SOCKS.to_string(),
                "server",
                &limit,
            ],
            HANDSHAKE_TIMEOUT + Duration::from_secs(60),
        )
        .unwrap();
    let took = started.elapsed();
    let outcomes: Vec<String> = out
        .stdout_text()
        .lines()
        .filter_map(|line| line.strip_prefix("outcome ").map(str::to_owned))
        .collect();
    println!(
        "{name}: all closed after {took:.1?}: {outcomes:?}; erebus {}",
        figures(pid)
    );
    assert_eq!(
        outcomes,
        [
            format!("http eof HTTP/1.1_408 count={SLOW_HTTP}"),
            format!("socks eof - count={SLOW_SOCKS}")
        ],
        "{out}"
    );
    assert!(
        took >= HANDSHAKE_TIMEOUT,
        "closed before the handshake timeout"
    );
    assert!(wait_for(Duration::from_secs(10), || fds(pid) <= fds_before + 2));
    assert_alive(&mut erebus, pid);
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
}

/// What the proxies must answer to each hostile input: the bytes of the answer (as the
/// generator prints them: hex, or `-` for none) and how the connection ended. HTTP answers
/// are matched on their status line.
fn expected_garbage() -> Vec<(&'static str, &'static str, String)> {
    let http = |code: &str| format!("HTTP/1.1 {code} ");
    // A SOCKS5 failure reply: VER REP RSV, then 0.0.0.0:0 as an IPv4 address.
    let socks_failure = |reply: u8| format!("0500{}", hex(&[5, reply, 0, 1, 0, 0, 0, 0, 0, 0]));
    vec![
        // Random bytes up to a blank line are a malformed head; random bytes ended by the
        // client's close are an unfinished one: both 400.
        ("random-bytes", "eof", http("400")),
        ("random-bytes-then-eof", "eof", http("400")),
        ("head-over-32k", "eof", http("431")),
        ("line-over-8k", "eof", http("414")),
        ("bad-port", "eof", http("400")),
        ("bad-host", "eof", http("400")),
        // A proxy needs the absolute form.
        ("origin-form", "eof", http("400")),
        ("not-http", "eof", http("400")),
        ("http-2", "eof", http("505")),
        // Not SOCKS5: closed without a word.
        ("socks4-greeting", "eof", "-".to_owned()),
        ("socks6-greeting", "eof", "-".to_owned()),
        // No method offered is acceptable: 0xff, then closed.
        ("zero-methods", "eof", "05ff".to_owned()),
        // The handshake can never finish: closed after the method reply.
        ("truncated-request", "eof", "0500".to_owned()),
        ("bind-command", "eof", socks_failure(0x07)),
        ("udp-associate", "eof", socks_failure(0x07)),
        ("address-type-8", "eof", socks_failure(0x08)),
        ("request-version-4", "eof", socks_failure(0x01)),
        ("port-zero", "eof", socks_failure(0x02)),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends every hostile input, checks each answer, then checks that erebus still serves.
fn garbage(runtime: &str) {
    let name = format!("garbage_is_refused_and_erebus_keeps_serving_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let mut erebus = start(&server, runtime);
    let pid = erebus.pid();
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = fds(pid);
    let (python, script) = generator(&server);
    let out = server
        .run_in_client(
            RunAs::Root,
            &[
                &python,
                &script,
                "garbage",
                &PROXY_PORT.to_string(),
                &SOCKS_PORT.to_string(),
                &SERVER_TUNNEL_ADDR.to_string(),
                &HTTP_PORT.to_string(),
            ],
            Duration::from_secs(120),
        )
        .unwrap();
    let text = out.stdout_text();
    assert!(out.success() && text.contains("garbage done"), "{out}");
    let cases: HashMap<&str, (&str, &str)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("case "))
        .filter_map(|line| {
            let mut fields = line.split(' ');
            Some((fields.next()?, (fields.next()?, fields.next()?)))
        })
        .collect();
    for (case, ended, answer) in expected_garbage() {
        let &(got_end, got) = cases
            .get(case)
            .unwrap_or_else(|| panic!("case {case} did not run:\n{text}"));
        let got_text = String::from_utf8_lossy(&decode_hex(got)).into_owned();
        let is_http = answer.starts_with("HTTP/");
        let shown = if is_http {
            got_text.lines().next().unwrap_or("-")
        } else {
            got
        };
        println!("{name}: {case}: {shown}, then {got_end}");
        let matches = if is_http {
            got_text.starts_with(&answer)
        } else {
            got == answer
        };
        assert!(
            matches && got_end == ended,
            "{case}: expected {answer:?} then {ended}, got {got_text:?} ({got}) then {got_end}"
        );
    }
    // An unparsable request is refused and closed one way or another; nothing more is
    // promised for random bytes after a valid greeting than that erebus survives them.
    assert!(cases.contains_key("random-socks"), "{text}");

    assert_alive(&mut erebus, pid);
    fetch_page(&server, &format!("http://127.0.0.1:{PROXY_PORT}"));
    fetch_page(&server, &format!("socks5h://127.0.0.1:{SOCKS_PORT}"));
    let settled = wait_for(Duration::from_secs(15), || fds(pid) <= fds_before + 2);
    assert!(
        settled,
        "erebus kept descriptors of refused connections: {}, {fds_before} fds before",
        figures(pid)
    );
    assert_alive(&mut erebus, pid);
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
}

fn decode_hex(text: &str) -> Vec<u8> {
    if text == "-" {
        return Vec::new();
    }
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// One sample the generator took: after which request, RSS in bytes, descriptors.
fn parse_sample(line: &str) -> (usize, u64, usize) {
    let mut fields = line.split(' ');
    let n = fields.next().unwrap().parse().unwrap();
    let value = |field: Option<&str>, key: &str| -> u64 {
        field
            .and_then(|f| f.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad sample line {line:?}"))
    };
    let rss = value(fields.next(), "rss=");
    let fds = value(fields.next(), "fds=");
    (n, rss, usize::try_from(fds).unwrap())
}

/// Makes [`REQUESTS`] requests in a row through the `kind` proxy (`http` or `socks`), each on
/// a fresh connection, and checks that erebus's memory and descriptors stay flat.
fn sequential(runtime: &str, kind: &str) {
    let label = if kind == "http" { "http" } else { "socks5" };
    let name = format!("ten_thousand_{label}_requests_stay_flat_with_{runtime}");
    if !netns::should_run_interop(&name) {
        return;
    }
    let server = OpenVpnServer::start(ServerProfile::TlsCrypt, Transport::Udp).unwrap();
    let mut erebus = start(&server, runtime);
    let pid = erebus.pid();
    let idle = figures(pid);
    let (python, script) = generator(&server);
    let port = if kind == "http" {
        PROXY_PORT
    } else {
        SOCKS_PORT
    };
    let started = Instant::now();
    let out = server
        .run_in_client(
            RunAs::Root,
            &[
                &python,
                &script,
                "sequential",
                kind,
                &port.to_string(),
                &SERVER_TUNNEL_ADDR.to_string(),
                &HTTP_PORT.to_string(),
                &REQUESTS.to_string(),
                &WARM_UP.to_string(),
                &pid.to_string(),
                SETTLE_SECONDS,
                HTTP_MARKER,
            ],
            Duration::from_secs(300),
        )
        .unwrap();
    let took = started.elapsed();
    let text = out.stdout_text();
    let samples: Vec<_> = text
        .lines()
        .filter_map(|line| line.strip_prefix("sample "))
        .map(parse_sample)
        .collect();
    let summary = text
        .lines()
        .find(|line| line.starts_with("done "))
        .unwrap_or_default();
    let [(warm_n, warm_rss, warm_fds), (last_n, last_rss, last_fds)] = samples[..] else {
        panic!("the generator did not take both samples: {out}");
    };
    println!(
        "{name}: {summary} in {took:.1?}; erebus idle {idle}; after request {warm_n}: \
         {warm_fds} fds, RSS {:.2} MiB; after request {last_n}: {last_fds} fds, RSS {:.2} MiB \
         ({:.3}x)",
        mib(warm_rss),
        mib(last_rss),
        last_rss as f64 / warm_rss as f64
    );
    assert!(
        out.success() && summary.starts_with(&format!("done ok={REQUESTS} failed=0 ")),
        "not every request got its page:\n{out}\nerebus:\n{}",
        erebus.log_tail(30)
    );
    assert!(
        last_fds <= warm_fds + FD_MARGIN,
        "descriptors grew from {warm_fds} to {last_fds}"
    );
    let rss_limit = warm_rss * RSS_FACTOR_PERCENT / 100 + RSS_MARGIN;
    assert!(
        last_rss <= rss_limit,
        "RSS grew from {:.2} MiB to {:.2} MiB (limit {:.2} MiB)",
        mib(warm_rss),
        mib(last_rss),
        mib(rss_limit)
    );
    assert_alive(&mut erebus, pid);
    assert!(erebus.stop(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn slowloris_clients_do_not_starve_others_with_mio() {
    slowloris("mio");
}

#[test]
fn slowloris_clients_do_not_starve_others_with_smol() {
    slowloris("smol");
}

#[test]
#[ignore = "waits out the 30 s handshake timeout: run with --ignored"]
fn slowloris_clients_are_closed_after_the_handshake_timeout_with_mio() {
    slowloris_timeout("mio");
}

#[test]
#[ignore = "waits out the 30 s handshake timeout: run with --ignored"]
fn slowloris_clients_are_closed_after_the_handshake_timeout_with_smol() {
    slowloris_timeout("smol");
}

#[test]
fn garbage_is_refused_and_erebus_keeps_serving_with_mio() {
    garbage("mio");
}

#[test]
fn garbage_is_refused_and_erebus_keeps_serving_with_smol() {
    garbage("smol");
}

#[test]
fn ten_thousand_http_requests_stay_flat_with_mio() {
    sequential("mio", "http");
}

#[test]
fn ten_thousand_http_requests_stay_flat_with_smol() {
    sequential("smol", "http");
}

#[test]
fn ten_thousand_socks5_requests_stay_flat_with_mio() {
    sequential("mio", "socks");
}

#[test]
fn ten_thousand_socks5_requests_stay_flat_with_smol() {
    sequential("smol", "socks");
}
