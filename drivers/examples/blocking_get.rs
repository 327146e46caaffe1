//! A plain HTTP/1.1 GET written by hand on a blocking `std` stream through an OpenVPN tunnel
//! run by the mio driver on a thread of this process: no listening socket, no root, names
//! resolved by the tunnel's DNS.
//!
//! ```text
//! cargo run --example blocking_get -- --config profile.ovpn --dns 10.8.0.1 http://web.erebus.test:8080/
//! ```
//!
//! The driver runs on its own thread; the connector it hands out works from any thread and
//! returns a `std::os::unix::net::UnixStream` whose bytes are the web server's.
//!
//! Exit status: 0 for a 2xx answer, 1 for any other HTTP status, 2 when the page could not be
//! fetched.

#[path = "support/session.rs"]
mod session;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use erebus::mio_driver::{Connector, MioDriver};

use crate::session::{Args, Session};

fn main() -> ExitCode {
    session::init_logging();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("blocking_get: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the session on a thread for as long as the fetch takes.
fn run(args: &Args) -> anyhow::Result<bool> {
    let url = HttpUrl::parse(&args.url)?;
    let session = Session::new(args)?;
    let (handles_tx, handles_rx) = mpsc::channel();
    let driver = std::thread::spawn(move || -> anyhow::Result<_> {
        // The driver stays on this thread; only its handles travel.
        let mut driver = MioDriver::new(session.client, session.clock, Vec::new())?;
        let _ = handles_tx.send((driver.connector(session.internal), driver.stop_handle()));
        Ok(driver.run()?)
    });
    let Ok((connector, stop)) = handles_rx.recv() else {
        let error = match driver.join() {
            Ok(Err(error)) => error,
            _ => anyhow::anyhow!("the driver thread ended early"),
        };
        return Err(error.context("cannot start the driver"));
    };
    let fetched = fetch(&connector, &url, Duration::from_secs(args.up_timeout));
    stop.stop();
    match driver.join() {
        Ok(Ok(failure)) => tracing::debug!("session ended: {failure}"),
        Ok(Err(error)) => tracing::warn!("the driver failed: {error:#}"),
        Err(_) => tracing::warn!("the driver thread panicked"),
    }
    fetched
}

/// Waits for the tunnel, sends one GET, and writes the body to stdout.
fn fetch(connector: &Connector, url: &HttpUrl, up_timeout: Duration) -> anyhow::Result<bool> {
    connector.wait_until_up(up_timeout)?;
    let mut stream = connector.connect(&url.host, url.port).with_context(|| {
        format!(
            "cannot connect to {}:{} through the tunnel",
            url.host, url.port
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: erebus-blocking-get\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the answer has no complete HTTP head")?;
    let (head, body) = response.split_at(head_end + 4);
    let head = String::from_utf8_lossy(head);
    let status_line = head.lines().next().unwrap_or_default();
    eprintln!("{status_line}");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("the answer has no status code")?;
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    std::io::stdout().write_all(&body)?;
    std::io::stdout().flush()?;
    Ok((200..300).contains(&status))
}

/// Decodes a chunked body (RFC 9112 §7.1); extensions and trailers are skipped.
fn dechunk(mut chunked: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let line = std::str::from_utf8(&chunked[..line_end])?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).context("bad chunk size")?;
        chunked = &chunked[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let data = chunked.get(..size).context("truncated chunk")?;
        body.extend_from_slice(data);
        chunked = chunked.get(size + 2..).context("truncated chunk")?;
    }
}

/// The parts of an `http://` URL a GET needs.
struct HttpUrl {
    /// Host name or address, as `connect` takes it (IPv6 without brackets).
    host: String,
    port: u16,
    /// `host[:port]` for the Host header.
    authority: String,
    /// Path and query, at least `/`.
    path: String,
}

impl HttpUrl {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .context("only http:// URLs: this example speaks no TLS")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse().context("bad port in the URL")?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        anyhow::ensure!(!host.is_empty(), "the URL names no host");
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}
