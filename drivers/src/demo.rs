//! `erebus demo`: the whole path on one machine, in one process, with nothing installed.
//!
//! It makes a throwaway PKI in memory, writes an OpenVPN server configuration and a client
//! profile for it (both read by the same parsers a user's files go through), starts the exit
//! server on a loopback UDP port, the client with its proxies, and a small HTTP origin on
//! loopback; then fetches one page through everything:
//!
//! ```text
//! HTTP proxy -> user-space TCP -> OpenVPN client -> UDP -> OpenVPN server -> exit -> origin
//! ```
//!
//! and stays up so the user can do the same with curl.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, bail};
use erebus_sansio::Instant;
use erebus_sansio::io::Event;
use erebus_sansio::serve::{ServeDriven, ServeEvent};
use zeroize::Zeroizing;

use crate::clock::{Clock, os_seed};
use crate::serve::MioServeDriver;
use crate::session::{Capacity, ConfigFile, Settings, build_client};

/// What `erebus demo` is told.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the HTTP proxy listens.
    pub http: SocketAddr,
    /// Where the SOCKS5 proxy listens.
    pub socks: SocketAddr,
    /// Stop after the first page instead of staying up.
    pub once: bool,
}

/// A throwaway PKI: a CA, a server and a client certificate, and a tls-crypt key.
pub struct DemoPki {
    /// The CA certificate, PEM.
    pub ca: String,
    /// The server's certificate, PEM.
    pub server_cert: String,
    /// The server's private key, PEM.
    pub server_key: Zeroizing<String>,
    /// The client's certificate, PEM.
    pub client_cert: String,
    /// The client's private key, PEM.
    pub client_key: Zeroizing<String>,
    /// The tls-crypt key, in OpenVPN's static key format.
    pub tls_crypt: Zeroizing<String>,
}

impl DemoPki {
    /// Makes new keys and certificates (ECDSA P-256), valid for a day either side of now.
    ///
    /// # Errors
    ///
    /// When the system's randomness is unavailable.
    pub fn generate() -> anyhow::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let today = unix_days();
        let validity = |params: &mut CertificateParams| {
            let (year, month, day) = civil_date(today - 1);
            params.not_before = rcgen::date_time_ymd(year, month, day);
            let (year, month, day) = civil_date(today + 30);
            params.not_after = rcgen::date_time_ymd(year, month, day);
        };
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "erebus demo CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca_params);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| -> anyhow::Result<_> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(vec![name.to_owned()])?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyAgreement,
            ];
            params.extended_key_usages = vec![purpose];
            validity(&mut params);
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), Zeroizing::new(key.serialize_pem())))
        };
        let (server_cert, server_key) =
            leaf("erebus-demo-server", ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_cert, client_key) =
            leaf("erebus-demo-client", ExtendedKeyUsagePurpose::ClientAuth)?;

        let mut key = Zeroizing::new([0u8; 256]);
        getrandom::fill(key.as_mut_slice())
            .map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
        Ok(Self {
            ca: ca_cert.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
            tls_crypt: static_key_text(&key),
        })
    }

    /// An OpenVPN server configuration for this PKI: UDP, `server 10.8.0.0/24`, tls-crypt,
    /// the loopback network routed to clients and the server's own address as their DNS.
    pub fn server_conf(&self) -> Zeroizing<String> {
        let mut text = String::from(
            "# erebus demo server (generated)\n\
             mode server\n\
             tls-server\n\
             proto udp\n\
             port 1194\n\
             dev tun\n\
             topology subnet\n\
             server 10.8.0.0 255.255.255.0\n\
             dh none\n\
             data-ciphers AES-256-GCM:CHACHA20-POLY1305:AES-128-GCM\n\
             keepalive 10 60\n\
             push \"route 127.0.0.0 255.0.0.0\"\n\
             push \"dhcp-option DNS 10.8.0.1\"\n",
        );
        inline(&mut text, "ca", &self.ca);
        inline(&mut text, "cert", &self.server_cert);
        inline(&mut text, "key", &self.server_key);
        inline(&mut text, "tls-crypt", &self.tls_crypt);
        Zeroizing::new(text)
    }

    /// A client profile for this PKI, to the server at `server`.
    pub fn client_ovpn(&self, server: SocketAddr) -> Zeroizing<String> {
        let mut text = format!(
            "# erebus demo client (generated)\n\
             client\n\
             dev tun\n\
             proto udp\n\
             remote {} {}\n\
             nobind\n\
             remote-cert-tls server\n\
             verify-x509-name erebus-demo-server name\n\
             data-ciphers AES-256-GCM:CHACHA20-POLY1305\n",
            server.ip(),
            server.port()
        );
        inline(&mut text, "ca", &self.ca);
        inline(&mut text, "cert", &self.client_cert);
        inline(&mut text, "key", &self.client_key);
        inline(&mut text, "tls-crypt", &self.tls_crypt);
        Zeroizing::new(text)
    }
}

fn inline(text: &mut String, tag: &str, body: &str) {
    let _ = write!(text, "<{tag}>\n{}\n</{tag}>\n", body.trim_end());
}

/// `key` in OpenVPN's static key file format: 16 lines of 32 hex digits between markers.
fn static_key_text(key: &[u8; 256]) -> Zeroizing<String> {
    let mut text = String::from("-----BEGIN OpenVPN Static key V1-----\n");
    for line in key.chunks(16) {
        for byte in line {
            let _ = write!(text, "{byte:02x}");
        }
        text.push('\n');
    }
    text.push_str("-----END OpenVPN Static key V1-----\n");
    Zeroizing::new(text)
}

/// Days since 1970-01-01 today.
fn unix_days() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs / 86_400).unwrap_or(0)
}

/// The year, month and day of day `days` since 1970-01-01 (the civil-from-days conversion of
/// the proleptic Gregorian calendar).
fn civil_date(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(1970),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

/// The demo's HTTP origin: answers every request with a small page naming the path.
pub struct Origin {
    addr: SocketAddr,
}

impl Origin {
    /// Starts on a free loopback port, serving from a thread.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("cannot bind the demo origin on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        thread::Builder::new()
            .name("demo-origin".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let _ = thread::Builder::new()
                        .name("demo-origin-conn".into())
                        .spawn(move || serve_page(stream));
                }
            })?;
        Ok(Self { addr })
    }

    /// Where it listens.
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Answers the requests on one connection until the client closes it.
fn serve_page(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Some(end) = find(&request, b"\r\n\r\n") else {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
            if request.len() > 64 * 1024 {
                return;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&request[..end]).into_owned();
        request.drain(..end + 4);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let close = head.to_ascii_lowercase().contains("connection: close");
        let body = format!(
            "<!doctype html>\n<title>erebus demo</title>\n<p>Hello from the erebus demo \
             origin: you asked for {path} and it came to you through the HTTP proxy, \
             erebus's own TCP/IP stack, an OpenVPN tunnel over UDP, the erebus exit server \
             and an ordinary socket.</p>\n"
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if stream.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Fetches `http://{origin}/` through the HTTP proxy at `proxy`; returns the status line and
/// the body.
///
/// # Errors
///
/// A proxy that cannot be reached or answers with something other than HTTP.
pub fn fetch_through(proxy: SocketAddr, origin: SocketAddr) -> anyhow::Result<(String, String)> {
    let mut stream = TcpStream::connect(proxy)
        .with_context(|| format!("cannot reach the HTTP proxy at {proxy}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "GET http://{origin}/ HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .context("reading the answer through the proxy")?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("the proxy's answer is not HTTP: {text:?}");
    };
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

/// Runs the demo: everything started, one page fetched and printed, then (unless
/// `options.once`) up until Ctrl-C.
///
/// # Errors
///
/// Anything that stops the demo from working, with what and why.
pub fn run(options: &DemoOptions) -> anyhow::Result<()> {
    let clock = Clock::start();
    let seed = os_seed()?;
    let pki = DemoPki::generate().context("cannot make the demo's keys")?;
    let origin = Origin::start()?;

    // The exit server, on a free loopback UDP port.
    let server_conf = pki.server_conf();
    let mut no_files = |path: &std::path::Path| -> Result<Zeroizing<Vec<u8>>, String> {
        Err(format!(
            "{} (the demo configuration names no files)",
            path.display()
        ))
    };
    let loaded = erebus_server::load(
        server_conf.as_bytes(),
        "demo-server.conf",
        &mut no_files,
        erebus_server::ServeOptions {
            listen: Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))),
            allow: erebus_server::AllowList::loopback(),
            users: None,
            wall_clock: clock.wall_clock(),
        },
    )
    .map_err(|e| anyhow::anyhow!("the demo's server configuration: {e}"))?;
    let server = erebus_server::Server::new(loaded.config, &seed.child("demo.server"), clock.now());
    let listen = server.listen();
    let mut server_driver = MioServeDriver::new(server, clock)
        .with_context(|| format!("cannot listen on {}", listen.addr))?;
    let server_addr = server_driver.local_addr();
    server_driver.on_event(log_server_event);
    let server_stop = server_driver.stop_handle();
    let server_thread = thread::Builder::new()
        .name("demo-server".into())
        .spawn(move || server_driver.run())?;

    // The client, with its proxies.
    let profile = pki.client_ovpn(server_addr);
    let config = ConfigFile::recorded(
        Zeroizing::new(profile.as_bytes().to_vec()),
        PathBuf::from("."),
        PathBuf::from("demo-client.ovpn"),
    );
    let plan = config
        .plan(None, clock.wall_clock())
        .map_err(|e| anyhow::anyhow!("the demo's client profile: {e}"))?;
    let settings = Settings {
        wall_clock_at_epoch: clock.wall_clock().at(Instant::ZERO),
        built_at: clock.now(),
        listeners: vec![erebus_proxy::FrontEnd::Http, erebus_proxy::FrontEnd::Socks5],
        dns_servers: Vec::new(),
        proxy_auth: false,
        auth_user_pass: false,
        tunnel_wait: Duration::from_secs(10),
        profile_dir: None,
        connection: None,
        capacity: Capacity::default(),
    };
    let client = build_client(plan, &settings, &seed.child("demo.client"), None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let http = TcpListener::bind(options.http)
        .with_context(|| format!("cannot listen for the HTTP proxy on {}", options.http))?;
    let socks = TcpListener::bind(options.socks)
        .with_context(|| format!("cannot listen for the SOCKS5 proxy on {}", options.socks))?;
    let (http_addr, socks_addr) = (http.local_addr()?, socks.local_addr()?);
    let mut client_driver = crate::mio_driver::MioDriver::new(client, clock, vec![http, socks])?;
    let (up_tx, up_rx) = mpsc::channel();
    client_driver.on_event(move |event| match event {
        Event::Connected(config) => {
            eprintln!(
                "erebus demo: client up: {} via {server_addr}",
                config
                    .ipv4
                    .map_or_else(|| "no address".to_owned(), |net| net.to_string())
            );
            let _ = up_tx.send(Ok(()));
        }
        Event::Reconnecting { reason, .. } => eprintln!("erebus demo: client: {reason}"),
        Event::Down(failure) => {
            let _ = up_tx.send(Err(failure.to_string()));
        }
        _ => {}
    });
    let client_stop = client_driver.stop_handle();
    let client_thread = thread::Builder::new()
        .name("demo-client".into())
        .spawn(move || client_driver.run())?;

    let stop_all = {
        let server_stop = server_stop.clone();
        move || {
            client_stop.stop();
            server_stop.stop();
        }
    };
    match up_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            stop_all();
            bail!("the demo client could not connect: {reason}");
        }
        Err(_) => {
            stop_all();
            bail!("the demo client did not connect within 30 s");
        }
    }

    let (status, body) = match fetch_through(http_addr, origin.addr()) {
        Ok(page) => page,
        Err(error) => {
            stop_all();
            return Err(error.context("fetching the demo page"));
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{status}")?;
    writeln!(out, "{}", body.trim_end())?;
    writeln!(out)?;
    writeln!(
        out,
        "erebus demo: the exit server listens on udp {server_addr}"
    )?;
    writeln!(
        out,
        "erebus demo: HTTP proxy {http_addr}, SOCKS5 proxy {socks_addr}"
    )?;
    writeln!(out, "erebus demo: try it yourself:")?;
    writeln!(
        out,
        "  curl -x http://{http_addr} http://{}/",
        origin.addr()
    )?;
    writeln!(
        out,
        "  curl --socks5-hostname {socks_addr} http://{}/",
        origin.addr()
    )?;
    out.flush()?;
    drop(out);

    if options.once {
        stop_all();
    } else {
        eprintln!("erebus demo: up; Ctrl-C to stop");
        ctrlc::set_handler(stop_all).context("cannot install the Ctrl-C handler")?;
    }
    let client_result = client_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the demo client's thread panicked"))?;
    server_stop.stop();
    let server_result = server_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the demo server's thread panicked"))?;
    client_result.context("the demo client")?;
    server_result.context("the demo server")?;
    Ok(())
}

/// One line per server event on stderr.
pub fn log_server_event(event: &ServeEvent) {
    match event {
        ServeEvent::ClientUp {
            peer,
            name,
            address,
        } => eprintln!("erebus serve: {name} up from {peer} as {address}"),
        ServeEvent::ClientDown { peer, name, reason } => eprintln!(
            "erebus serve: {} from {peer} down: {reason}",
            name.as_deref().unwrap_or("client")
        ),
        ServeEvent::ClientFloated { from, to } => {
            eprintln!("erebus serve: client {from} now at {to}");
        }
        ServeEvent::FlowRefused { client, to, reason } => {
            eprintln!("erebus serve: refused {client} -> {to}: {reason}");
        }
        ServeEvent::Stopped => eprintln!("erebus serve: stopped"),
        _ => {}
    }
}
