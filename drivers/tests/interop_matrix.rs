//! The interop matrix: erebus against real OpenVPN 2.6 servers in network namespaces the test
//! creates, every scenario under every driver (`mio`, `smol`, `threads`), erebus running as
//! nobody.
//!
//! A working scenario runs the same checks each time: the tunnel comes up; a page over HTTP and
//! one over HTTPS (CONNECT) arrive through the HTTP proxy; a name is resolved by the DNS server
//! the tunnel offers and its page arrives; a 16 MiB download arrives with the right SHA-256; the
//! server's log names the data cipher the scenario asked for and the key derivation (TLS-EKM or
//! the OpenVPN PRF) it expects, and erebus's log says the same; erebus exits with status 0 on
//! SIGTERM (and a UDP TLS server hears the exit notification). A refused scenario requires
//! erebus's documented exit status and a last line naming the cause.
//!
//! The scenarios: UDP and TCP x {tls-crypt, tls-auth, neither} x {AES-256-GCM, AES-128-GCM,
//! CHACHA20-POLY1305, AES-256-CBC + SHA256} x {TLS-EKM, the OpenVPN PRF}; static key and
//! plaintext point-to-point; username and password with and without a client certificate;
//! every compression framing a server can push with data crossing it; topology subnet, net30
//! and p2p; `tun-mtu` with `mssfix`; a pushed route beyond the tunnel subnet; and the refusals
//! (wrong CA, wrong tls-auth and tls-crypt keys, wrong password, no server, a server
//! certificate failing `verify-x509-name`, a server pushing a route no route can be).
//!
//! Scenarios that share a server configuration share one server start. Groups run two at a
//! time. The table (scenario, driver, result, seconds) is printed at the end and written to
//! `target/interop-matrix.txt`. `EREBUS_MATRIX_FILTER=text` runs only the scenarios whose name
//! contains `text`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod e2e;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use e2e::{EREBUS, NOBODY_UID, read_log};

use erebus_testvectors::netns::{
    self, ClientAuth, ControlWrap, HTTP_MARKER, OpenVpnServer, RunAs, ServerOptions, ServerProfile,
    TlsSetup, Transport,
};

/// Every driver a scenario runs under.
const DRIVERS: [&str; 3] = ["mio", "smol", "threads"];
/// The size of the checksummed download.
const DOWNLOAD: usize = 16 << 20;
/// Groups (server starts) that run at the same time.
const PARALLEL_GROUPS: usize = 2;
/// The address beyond the tunnel subnet that the route scenario's server pushes a route to.
const ROUTED_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A data cipher the client asks for, and how the server's log names it.
#[derive(Clone, Copy, Debug)]
struct Cipher {
    /// The client profile's `data-ciphers` value and the server log's name.
    name: &'static str,
}

const CIPHERS: [Cipher; 4] = [
    Cipher {
        name: "AES-256-GCM",
    },
    Cipher {
        name: "AES-128-GCM",
    },
    Cipher {
        name: "CHACHA20-POLY1305",
    },
    Cipher {
        name: "AES-256-CBC",
    },
];

/// What a scenario's server is.
#[derive(Clone, Debug)]
enum ServerKind {
    /// An assembled TLS server.
    Setup(TlsSetup),
    /// One of the harness's fixed profiles (the point-to-point ones here).
    Profile(ServerProfile),
}

/// Which credentials erebus is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credentials {
    /// `--auth-user-pass` with the right pair, when the server asks for one.
    Right,
    /// `--auth-user-pass` with a wrong password.
    Wrong,
}

/// How the scenario's client profile differs from the server's.
#[derive(Clone, Debug)]
enum ProfileEdit {
    /// The server's profile with these lines appended.
    Append(Vec<String>),
    /// The profile with a CA that did not issue the server's certificate.
    WrongCa,
    /// The profile with a control-channel key that is not the server's, and these lines.
    WrongKey(Vec<String>),
    /// The server's profile with `from` replaced by `to`, then these lines appended.
    Replace {
        from: String,
        to: String,
        append: Vec<String>,
    },
}

/// What the scenario must do.
#[derive(Clone, Debug)]
enum Expect {
    /// Come up and pass every check.
    Works(Checks),
    /// Exit by itself with `code` and a last line containing `reason`.
    Refused { code: i32, reason: &'static str },
}

/// The expectations of a working scenario beyond the common checks.
#[derive(Clone, Debug, Default)]
struct Checks {
    /// The data cipher the server must have installed.
    cipher: &'static str,
    /// TLS sessions: whether the keys come from TLS-EKM (`false`: the OpenVPN PRF). `None` for
    /// point-to-point.
    ekm: Option<bool>,
    /// The framing erebus must report in its `tunnel up` line, e.g. `StubV2`.
    compression: Option<&'static str>,
    /// The option the server must have pushed with it, e.g. `compress stub-v2`.
    pushed: &'static str,
    /// A text that must be in erebus's `up:` line (an address, a route).
    up_line: Vec<String>,
    /// A page that must arrive from this address through a pushed route.
    routed: Option<Ipv4Addr>,
    /// Extra erebus arguments (e.g. `--dns` for point-to-point, which pushes nothing).
    args: Vec<&'static str>,
}

#[derive(Clone, Debug)]
struct Scenario {
    name: String,
    profile: ProfileEdit,
    credentials: Credentials,
    expect: Expect,
}

#[derive(Clone, Debug)]
struct Group {
    server: ServerKind,
    transport: Transport,
    scenarios: Vec<Scenario>,
}

/// One line of the table.
#[derive(Clone, Debug)]
struct Row {
    scenario: String,
    driver: &'static str,
    result: Result<(), String>,
    seconds: f64,
}

fn works(name: impl Into<String>, lines: Vec<String>, checks: Checks) -> Scenario {
    Scenario {
        name: name.into(),
        profile: ProfileEdit::Append(lines),
        credentials: Credentials::Right,
        expect: Expect::Works(checks),
    }
}

fn refused(
    name: impl Into<String>,
    profile: ProfileEdit,
    code: i32,
    reason: &'static str,
) -> Scenario {
    Scenario {
        name: name.into(),
        profile,
        credentials: Credentials::Right,
        expect: Expect::Refused { code, reason },
    }
}

/// A silent server is retried for ever, as the stock client does: these make a refused run
/// give up after its one attempt, 8 s in.
fn give_up_lines() -> Vec<String> {
    vec!["hand-window 8".into(), "connect-retry-max 1".into()]
}

/// Every group of the matrix.
fn groups() -> Vec<Group> {
    let mut groups = Vec::new();
    for transport in Transport::ALL {
        for control in ControlWrap::ALL {
            for legacy_prf in [false, true] {
                let mut setup = TlsSetup::new(control);
                setup.legacy_prf = legacy_prf;
                let derivation = if legacy_prf { "prf" } else { "ekm" };
                let mut scenarios: Vec<Scenario> = CIPHERS
                    .iter()
                    .map(|cipher| {
                        works(
                            format!(
                                "{}/{}/{}/{derivation}",
                                transport.name(),
                                control.name(),
                                cipher.name
                            ),
                            vec![format!("data-ciphers {}", cipher.name)],
                            Checks {
                                cipher: cipher.name,
                                ekm: Some(!legacy_prf),
                                ..Checks::default()
                            },
                        )
                    })
                    .collect();
                if control == ControlWrap::TlsCrypt && !legacy_prf {
                    // UDP hears nothing back; TCP is refused at once.
                    let reason = match transport {
                        Transport::Udp => "hand-window",
                        Transport::Tcp => "refused",
                    };
                    scenarios.push(refused(
                        format!("{}/tls-crypt/no server listening", transport.name()),
                        ProfileEdit::Replace {
                            from: format!(
                                "remote {} {}",
                                netns::SERVER_OUTER_ADDR,
                                netns::OPENVPN_PORT
                            ),
                            to: format!(
                                "remote {} {}",
                                netns::SERVER_OUTER_ADDR,
                                netns::DEAD_REMOTE_PORT
                            ),
                            append: give_up_lines(),
                        },
                        4,
                        reason,
                    ));
                }
                // The refusals that need this server, once each.
                if transport == Transport::Udp && !legacy_prf {
                    let prefix = format!("udp/{}", control.name());
                    match control {
                        ControlWrap::TlsCrypt => {
                            scenarios.push(refused(
                                format!("{prefix}/wrong CA"),
                                ProfileEdit::WrongCa,
                                3,
                                "not issued by the CA",
                            ));
                            scenarios.push(refused(
                                format!("{prefix}/wrong tls-crypt key"),
                                ProfileEdit::WrongKey(give_up_lines()),
                                4,
                                "hand-window",
                            ));
                            scenarios.push(refused(
                                format!("{prefix}/server name fails verify-x509-name"),
                                ProfileEdit::Replace {
                                    from: format!(
                                        "verify-x509-name {} name",
                                        netns::SERVER_CERT_NAME
                                    ),
                                    to: "verify-x509-name other.erebus.test name".into(),
                                    append: Vec::new(),
                                },
                                3,
                                "other.erebus.test",
                            ));
                        }
                        ControlWrap::TlsAuth => scenarios.push(refused(
                            format!("{prefix}/wrong tls-auth key"),
                            ProfileEdit::WrongKey(give_up_lines()),
                            4,
                            "hand-window",
                        )),
                        ControlWrap::Neither => {}
                    }
                }
                groups.push(Group {
                    server: ServerKind::Setup(setup),
                    transport,
                    scenarios,
                });
            }
        }
    }

    // Point-to-point: no TLS, nothing pushed; the DNS server is given on the command line.
    for profile in ServerProfile::POINT_TO_POINT {
        for transport in Transport::ALL {
            let cipher = if profile == ServerProfile::StaticKey {
                "AES-256-CBC"
            } else {
                ""
            };
            groups.push(Group {
                server: ServerKind::Profile(profile),
                transport,
                scenarios: vec![works(
                    format!("{}/{}", transport.name(), profile.name()),
                    Vec::new(),
                    Checks {
                        cipher,
                        args: vec!["--dns", "10.8.0.1"],
                        ..Checks::default()
                    },
                )],
            });
        }
    }

    // Username and password, without and with a client certificate.
    for (client_auth, label) in [
        (ClientAuth::Password, "password only"),
        (
            ClientAuth::CertificateAndPassword,
            "certificate and password",
        ),
    ] {
        let mut setup = TlsSetup::new(ControlWrap::TlsCrypt);
        setup.client_auth = client_auth;
        let mut scenarios = vec![works(
            format!("udp/tls-crypt/{label}"),
            Vec::new(),
            Checks {
                cipher: "AES-256-GCM",
                ekm: Some(true),
                ..Checks::default()
            },
        )];
        if client_auth == ClientAuth::Password {
            scenarios.push(Scenario {
                name: format!("udp/tls-crypt/{label}/wrong password"),
                profile: ProfileEdit::Append(Vec::new()),
                credentials: Credentials::Wrong,
                expect: Expect::Refused {
                    code: 3,
                    reason: "AUTH_FAILED",
                },
            });
        }
        groups.push(Group {
            server: ServerKind::Setup(setup),
            transport: Transport::Udp,
            scenarios,
        });
    }

    // Every compression framing a server can push; the download crosses it.
    for (option, framing) in [
        ("compress stub", "Stub"),
        ("compress stub-v2", "StubV2"),
        ("compress lz4-v2", "Lz4V2"),
        ("comp-lzo no", "LzoStub"),
    ] {
        let mut setup = TlsSetup::new(ControlWrap::TlsCrypt);
        setup.server_lines = vec![option.to_owned(), format!("push \"{option}\"")];
        if option.starts_with("compress lz4") {
            // Framing only: the server sends nothing compressed.
            setup.server_lines.push("allow-compression asym".into());
        }
        groups.push(Group {
            server: ServerKind::Setup(setup),
            transport: Transport::Udp,
            scenarios: vec![works(
                format!("udp/tls-crypt/{option}"),
                Vec::new(),
                Checks {
                    cipher: "AES-256-GCM",
                    ekm: Some(true),
                    compression: Some(framing),
                    pushed: option,
                    ..Checks::default()
                },
            )],
        });
    }

    // Topologies (subnet is every other group's), the MTU, and a pushed route.
    // The first client's address and its peer: net30 gives it a /30 of its own, p2p the next
    // free address with the server's as the peer.
    for (topology, address, peer) in [
        ("net30", "10.8.0.6/30", "10.8.0.5"),
        ("p2p", "10.8.0.4/32", "10.8.0.1"),
    ] {
        let mut setup = TlsSetup::new(ControlWrap::TlsCrypt);
        setup.server_lines = vec![format!("topology {topology}")];
        groups.push(Group {
            server: ServerKind::Setup(setup),
            transport: Transport::Udp,
            scenarios: vec![works(
                format!("udp/tls-crypt/topology {topology}"),
                Vec::new(),
                Checks {
                    cipher: "AES-256-GCM",
                    ekm: Some(true),
                    up_line: vec![format!("address {address}, peer {peer}")],
                    ..Checks::default()
                },
            )],
        });
    }
    let mut setup = TlsSetup::new(ControlWrap::TlsCrypt);
    setup.server_lines = vec!["tun-mtu 1400".into(), "mssfix 1200".into()];
    groups.push(Group {
        server: ServerKind::Setup(setup),
        transport: Transport::Udp,
        scenarios: vec![works(
            "udp/tls-crypt/tun-mtu 1400 mssfix 1200",
            vec!["tun-mtu 1400".into(), "mssfix 1200".into()],
            Checks {
                cipher: "AES-256-GCM",
                ekm: Some(true),
                ..Checks::default()
            },
        )],
    });
    // A server pushing a route with a netmask no route can have: erebus names the option and
    // gives up after the profile's one retry, as a misconfigured server deserves.
    let mut setup = TlsSetup::new(ControlWrap::TlsCrypt);
    setup.server_lines = vec!["push \"route 10.77.0.0 255.0.255.0\"".into()];
    groups.push(Group {
        server: ServerKind::Setup(setup),
        transport: Transport::Udp,
        scenarios: vec![refused(
            "udp/tls-crypt/garbage pushed",
            ProfileEdit::Append(vec!["connect-retry-max 1".into()]),
            4,
            "pushed option `route`",
        )],
    });
    let mut setup = TlsSetup::new(ControlWrap::TlsCrypt);
    setup.server_lines = vec!["push \"route 10.77.0.0 255.255.255.0\"".into()];
    setup.routed_http = Some(ROUTED_ADDR);
    groups.push(Group {
        server: ServerKind::Setup(setup),
        transport: Transport::Udp,
        scenarios: vec![works(
            "udp/tls-crypt/pushed route 10.77.0.0/24",
            Vec::new(),
            Checks {
                cipher: "AES-256-GCM",
                ekm: Some(true),
                up_line: vec!["routes 10.77.0.0/24".into()],
                routed: Some(ROUTED_ADDR),
                ..Checks::default()
            },
        )],
    });
    groups
}

/// The scenario's client profile, written into the instance directory.
fn write_profile(server: &OpenVpnServer, scenario: &Scenario, driver: &str) -> String {
    let base = server.client_profile().to_owned();
    let (text, append) = match &scenario.profile {
        ProfileEdit::Append(lines) => (base, lines.clone()),
        ProfileEdit::WrongCa => (server.client_profile_with_wrong_ca().unwrap(), Vec::new()),
        ProfileEdit::WrongKey(lines) => (
            server.client_profile_with_wrong_key().unwrap(),
            lines.clone(),
        ),
        ProfileEdit::Replace { from, to, append } => {
            assert!(base.contains(from.as_str()), "`{from}` not in the profile");
            (base.replace(from.as_str(), to), append.clone())
        }
    };
    let mut text = text;
    for line in append {
        text.push_str(&line);
        text.push('\n');
    }
    let name = format!("matrix-{}-{driver}.ovpn", file_safe(&scenario.name));
    let path = server.write_client_file(&name, &text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `name` with every character but letters, digits and `-` replaced by `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// erebus's command line for a scenario.
fn erebus_argv<'a>(
    server: &'a OpenVpnServer,
    config: &'a str,
    credentials: &'a str,
    scenario: &Scenario,
    driver: &'a str,
) -> Vec<String> {
    let mut argv: Vec<String> = [
        EREBUS,
        "--config",
        config,
        "--runtime",
        driver,
        "--http",
        "127.0.0.1:8080",
        "--no-socks",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if server.uses_username_password() {
        argv.push("--auth-user-pass".into());
        argv.push(credentials.to_owned());
    }
    if let Expect::Works(checks) = &scenario.expect {
        argv.extend(checks.args.iter().map(|s| (*s).to_owned()));
    }
    argv
}

/// The server log from byte `from` on: what this scenario's session wrote.
fn server_log_since(server: &OpenVpnServer, from: usize) -> String {
    let log = read_log(&server.server_log());
    log.get(from..).unwrap_or_default().to_owned()
}

/// Runs curl as nobody in the client namespace through erebus's HTTP proxy.
fn curl(server: &OpenVpnServer, args: &[&str]) -> Result<Vec<u8>, String> {
    let curl = netns::find_program("curl").expect("curl is installed");
    let mut argv = vec![
        curl.to_str().unwrap(),
        "-sS",
        "--fail",
        "--max-time",
        "60",
        "-x",
        "http://127.0.0.1:8080",
    ];
    argv.extend_from_slice(args);
    let output = server
        .run_in_client(RunAs::Nobody, &argv, Duration::from_secs(75))
        .map_err(|e| e.to_string())?;
    if output.success() {
        Ok(output.stdout)
    } else {
        Err(format!("curl {args:?}: {}", output.stderr_text().trim()))
    }
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what()) }
}

/// A working scenario under `driver`: everything in the module comment.
fn run_working(
    server: &OpenVpnServer,
    scenario: &Scenario,
    checks: &Checks,
    driver: &'static str,
) -> Result<(), String> {
    let config = write_profile(server, scenario, driver);
    let credentials = server.credentials_path();
    let argv = erebus_argv(
        server,
        &config,
        credentials.to_str().unwrap(),
        scenario,
        driver,
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let log_from = read_log(&server.server_log()).len();
    let dns_before = read_log(&server.dnsmasq_log())
        .matches(&format!("query[A] {}", netns::DNS_NAME))
        .count();
    let log_name = format!("erebus-{}-{driver}.log", file_safe(&scenario.name));
    let mut erebus = server
        .spawn_in_client(RunAs::Nobody, &argv, &log_name)
        .map_err(|e| e.to_string())?;
    let erebus_log = || read_log(erebus_log_path(server, &log_name).as_path());
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .map_err(|e| format!("{e}\n{}", erebus_log()))?;
    check(netns::uid_of(erebus.pid()) == Some(NOBODY_UID), || {
        "erebus is not running as nobody".into()
    })?;
    let deadline = Instant::now() + Duration::from_secs(40);
    while !erebus_log().contains("erebus: up:") {
        if Instant::now() > deadline || erebus.exit_status().is_some() {
            return Err(format!(
                "not up:\n{}\n--- server ---\n{}",
                erebus_log(),
                server.server_log_tail(30)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let page = curl(server, &[&server.http_url()])?;
    check(String::from_utf8_lossy(&page).contains(HTTP_MARKER), || {
        "the HTTP page lacks the marker".into()
    })?;
    let ca = server.ca_cert_path();
    let page = curl(
        server,
        &["--cacert", ca.to_str().unwrap(), &server.https_url()],
    )?;
    check(String::from_utf8_lossy(&page).contains(HTTP_MARKER), || {
        "the HTTPS page lacks the marker".into()
    })?;
    let page = curl(server, &[&server.http_name_url()])?;
    check(String::from_utf8_lossy(&page).contains(HTTP_MARKER), || {
        "the page by name lacks the marker".into()
    })?;
    let dns_after = read_log(&server.dnsmasq_log())
        .matches(&format!("query[A] {}", netns::DNS_NAME))
        .count();
    check(dns_after > dns_before, || {
        format!(
            "the tunnel's DNS server saw no query for {}",
            netns::DNS_NAME
        )
    })?;
    let body = curl(server, &[&format!("{}bytes/{DOWNLOAD}", server.http_url())])?;
    check(
        body.len() == DOWNLOAD && netns::sha256(&body) == netns::pattern_sha256(DOWNLOAD as u64),
        || format!("the 16 MiB download is corrupt ({} bytes)", body.len()),
    )?;
    if let Some(addr) = checks.routed {
        let page = curl(server, &[&format!("http://{addr}:{}/", netns::HTTP_PORT)])?;
        check(String::from_utf8_lossy(&page).contains(HTTP_MARKER), || {
            format!("the page from {addr} lacks the marker")
        })?;
    }

    // What was negotiated, from both ends.
    let log = erebus_log();
    // A point-to-point server installs its keys when it (re)starts, before the session.
    let server_text = if server.profile().is_point_to_point() {
        read_log(&server.server_log())
    } else {
        server_log_since(server, log_from)
    };
    let up_line = log
        .lines()
        .find(|line| line.starts_with("erebus: up:"))
        .unwrap_or_default()
        .to_owned();
    for needle in &checks.up_line {
        check(up_line.contains(needle.as_str()), || {
            format!("`{needle}` not in `{up_line}`")
        })?;
    }
    if !checks.cipher.is_empty() {
        // "Outgoing Data Channel: Cipher 'X' initialized" (TLS) or "Outgoing Static Key
        // Encryption: Cipher 'X' initialized" (static key); not the control channel's.
        let installed: Vec<&str> = server_text
            .lines()
            .filter(|line| {
                line.contains("Outgoing ")
                    && line.contains(": Cipher '")
                    && !line.contains("Control Channel")
            })
            .collect();
        check(
            !installed.is_empty()
                && installed
                    .iter()
                    .all(|line| line.contains(&format!("Cipher '{}' initialized", checks.cipher))),
            || {
                format!(
                    "expected {} in the server log: {installed:?}",
                    checks.cipher
                )
            },
        )?;
        check(
            up_line.contains(&format!("cipher {}", checks.cipher)),
            || {
                format!(
                    "erebus's up line does not name {}: {up_line}",
                    checks.cipher
                )
            },
        )?;
    }
    if let Some(ekm) = checks.ekm {
        // The address the server gave is the one erebus took.
        let push = server.last_push_reply().unwrap_or_default();
        let address = push
            .split(',')
            .find_map(|option| option.strip_prefix("ifconfig "))
            .and_then(|value| value.split(' ').next())
            .unwrap_or("(none pushed)");
        check(up_line.contains(&format!("address {address}/")), || {
            format!("erebus's up line lacks the pushed address {address}: {up_line}")
        })?;
        check(log.contains(&format!("ekm={ekm}")), || {
            format!("erebus's log lacks ekm={ekm}")
        })?;
        let push = server.last_push_reply().unwrap_or_default();
        check(push.contains("tls-ekm") == ekm, || {
            format!("the server's push disagrees with ekm={ekm}: {push}")
        })?;
    }
    if let Some(framing) = checks.compression {
        check(log.contains(&format!("compression={framing}")), || {
            format!("erebus's log lacks compression={framing}")
        })?;
        let push = server.last_push_reply().unwrap_or_default();
        check(push.contains(&format!(",{},", checks.pushed)), || {
            format!("the server did not push `{}`: {push}", checks.pushed)
        })?;
    }

    let status = erebus
        .stop(Duration::from_secs(10))
        .ok_or("erebus did not exit on SIGTERM")?;
    check(status.success(), || {
        format!("erebus exited with {status}:\n{}", erebus_log())
    })?;
    if server.profile().is_tls() && server.transport() == Transport::Udp {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server_log_since(server, log_from).contains("exit message received") {
            if Instant::now() > deadline {
                return Err("the server did not hear the exit notification".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn erebus_log_path(server: &OpenVpnServer, name: &str) -> std::path::PathBuf {
    server.instance_dir().join(name)
}

/// A refused scenario under `driver`: erebus exits by itself with `code`, its last line
/// starting `erebus: down:` and containing `reason`.
fn run_refused(
    server: &OpenVpnServer,
    scenario: &Scenario,
    code: i32,
    reason: &str,
    driver: &'static str,
) -> Result<(), String> {
    let config = write_profile(server, scenario, driver);
    let credentials = match scenario.credentials {
        Credentials::Right => server.credentials_path(),
        Credentials::Wrong => server.wrong_credentials_path(),
    };
    let argv = erebus_argv(
        server,
        &config,
        credentials.to_str().unwrap(),
        scenario,
        driver,
    );
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let stderr_path = server.instance_dir().join(format!(
        "erebus-{}-{driver}.stderr",
        file_safe(&scenario.name)
    ));
    let mut child = server
        .client_command(RunAs::Nobody, &argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(40) {
            // By PID: the child is ours and not yet reaped.
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "erebus did not give up within 40 s:\n{}",
                read_log(&stderr_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = read_log(&stderr_path);
    let last = stderr.lines().last().unwrap_or_default();
    check(status.code() == Some(code), || {
        format!("exit status {status}, expected {code}:\n{stderr}")
    })?;
    check(
        last.starts_with("erebus: down: ") && last.contains(reason),
        || format!("`{reason}` not in the last line `{last}`"),
    )?;
    check(!stderr.contains("erebus: up:"), || {
        format!("it came up:\n{stderr}")
    })?;
    check(!stderr.contains(netns::WRONG_AUTH_PASSWORD), || {
        "the password leaked into the log".into()
    })?;
    Ok(())
}

/// Starts the group's server and runs its scenarios under every driver, one after another.
fn run_group(group: &Group) -> Vec<Row> {
    let options = ServerOptions::default();
    let started = Instant::now();
    let server = match &group.server {
        ServerKind::Setup(setup) => {
            OpenVpnServer::start_setup(setup.clone(), group.transport, &options)
        }
        ServerKind::Profile(profile) => {
            OpenVpnServer::start_with(*profile, group.transport, &options)
        }
    };
    let server = match server {
        Ok(server) => server,
        Err(error) => {
            let error = format!("the server did not start: {error}");
            return group
                .scenarios
                .iter()
                .flat_map(|scenario| {
                    DRIVERS.iter().map(|driver| Row {
                        scenario: scenario.name.clone(),
                        driver,
                        result: Err(error.clone()),
                        seconds: started.elapsed().as_secs_f64(),
                    })
                })
                .collect();
        }
    };
    let mut rows = Vec::new();
    for scenario in &group.scenarios {
        for driver in DRIVERS {
            let started = Instant::now();
            let result = match &scenario.expect {
                Expect::Works(checks) => run_working(&server, scenario, checks, driver),
                Expect::Refused { code, reason } => {
                    run_refused(&server, scenario, *code, reason, driver)
                }
            };
            rows.push(Row {
                scenario: scenario.name.clone(),
                driver,
                result,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    }
    rows
}

/// The table: scenario, driver, result, seconds.
fn table(rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|row| row.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut text = format!(
        "{:width$}  {:7}  {:6}  {:>7}\n",
        "scenario", "driver", "result", "seconds"
    );
    for row in rows {
        let result = if row.result.is_ok() { "pass" } else { "FAIL" };
        let _ = writeln!(
            text,
            "{:width$}  {:7}  {:6}  {:>7.1}",
            row.scenario, row.driver, result, row.seconds
        );
    }
    let passed = rows.iter().filter(|row| row.result.is_ok()).count();
    let _ = writeln!(text, "{passed} of {} runs passed", rows.len());
    text
}

#[test]
fn interop_matrix() {
    if !netns::should_run_interop("interop_matrix") {
        return;
    }
    let started = Instant::now();
    // EREBUS_MATRIX_FILTER=text runs only the scenarios whose name contains it.
    let filter = std::env::var("EREBUS_MATRIX_FILTER").unwrap_or_default();
    let selected: VecDeque<Group> = groups()
        .into_iter()
        .filter_map(|mut group| {
            group.scenarios.retain(|s| s.name.contains(filter.as_str()));
            (!group.scenarios.is_empty()).then_some(group)
        })
        .collect();
    let queue = Mutex::new(selected);
    let rows = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_GROUPS {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap().pop_front();
                    let Some(group) = next else { break };
                    let done = run_group(&group);
                    rows.lock().unwrap().extend(done);
                }
            });
        }
    });
    let mut rows = rows.into_inner().unwrap();
    // The table in the groups' order, whatever order they finished in.
    let order: Vec<String> = groups()
        .iter()
        .flat_map(|group| group.scenarios.iter().map(|s| s.name.clone()))
        .collect();
    rows.sort_by_key(|row| {
        (
            order.iter().position(|name| *name == row.scenario),
            DRIVERS.iter().position(|driver| *driver == row.driver),
        )
    });
    let mut text = table(&rows);
    let _ = writeln!(
        text,
        "matrix run in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let target =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/interop-matrix.txt");
    let _ = std::fs::write(&target, &text);
    {
        use std::io::Write as _;
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            row.result
                .as_ref()
                .err()
                .map(|error| format!("--- {} under {} ---\n{error}", row.scenario, row.driver))
        })
        .collect();
    assert!(failures.is_empty(), "{}\n{}", text, failures.join("\n"));
}
