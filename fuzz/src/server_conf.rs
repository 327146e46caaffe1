//! `server_conf`: the bytes are an OpenVPN server.conf, then optionally a NUL and the bytes
//! of "any other file". [`ServerProfile::parse`] reads it through a file reader that serves
//! the test PKI and the tls-auth/tls-crypt keys by file name (`ca.crt`, `server.crt`,
//! `server.key`, `ta.key`, `tc.key`, in any directory), the bytes after the NUL for any other
//! name, and an error when there is no NUL or the name contains `missing`. What parses is
//! then loaded by [`erebus_server::load`] (without and with a users file, which builds the
//! OpenVPN [`ServerSetup`](erebus_openvpn::server::ServerSetup)); a configuration that loads
//! must make a [`Server`] that runs a first timeout. Errors and warnings must name a line
//! of the file (from 1) and read as sentences.

use std::net::SocketAddr;
use std::path::Path;

use erebus_openvpn::config::server::ServerProfile;
use erebus_sansio::serve::{ServeDriven, ServeInput, ServeOutput};
use erebus_sansio::{Instant, Seed};
use erebus_server::{AllowList, Server, ServeOptions, UserTable};
use zeroize::Zeroizing;

use crate::ovpn_common::{CA, SERVER_CERT, SERVER_KEY, TA_KEY, TC_KEY, wall_clock};

/// The files served by name.
pub const FILES: &[(&str, &[u8])] = &[
    ("ca.crt", CA),
    ("server.crt", SERVER_CERT),
    ("server.key", SERVER_KEY),
    ("ta.key", TA_KEY),
    ("tc.key", TC_KEY),
];

/// A reader of [`FILES`], with `other` for any other name (`None`: no such file).
pub fn reader(other: Option<&[u8]>) -> impl FnMut(&Path) -> Result<Zeroizing<Vec<u8>>, String> {
    move |path: &Path| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if name.contains("missing") {
            return Err(format!("{}: no such file", path.display()));
        }
        if let Some((_, bytes)) = FILES.iter().find(|(n, _)| *n == name) {
            return Ok(Zeroizing::new(bytes.to_vec()));
        }
        other
            .map(|bytes| Zeroizing::new(bytes.to_vec()))
            .ok_or_else(|| format!("{}: no such file", path.display()))
    }
}

/// The harness.
pub fn run(data: &[u8]) {
    let (conf, other) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let lines = conf.split(|&b| b == b'\n').count();
    let mut read = reader(other);
    let parsed = ServerProfile::parse(conf, &mut read);
    match &parsed {
        Ok((profile, warnings)) => {
            for warning in warnings {
                assert!(
                    (1..=lines).contains(&warning.line),
                    "warning on line {} of {lines}: {warning}",
                    warning.line
                );
                assert!(!warning.to_string().is_empty());
            }
            assert!(profile.pool.prefix() <= 30, "pool {}", profile.pool);
            assert!(profile.pool.capacity() >= 1);
            if let Some(error) = profile.missing_client_auth() {
                assert!(!error.to_string().is_empty());
            }
        }
        Err(error) => {
            if let Some(line) = error.line {
                assert!((1..=lines).contains(&line), "error on line {line} of {lines}: {error}");
            }
            assert!(!error.message.is_empty());
        }
    }
    let users = UserTable::default().with_user("alice", "wonderland");
    for users in [None, Some(users)] {
        let options = ServeOptions {
            listen: None,
            allow: AllowList::loopback(),
            users,
            wall_clock: wall_clock(),
        };
        let mut read = reader(other);
        match erebus_server::load(conf, "server.conf", &mut read, options) {
            Ok(loaded) => {
                assert!(parsed.is_ok(), "loaded what does not parse");
                for warning in &loaded.warnings {
                    assert!(!warning.is_empty());
                }
                start(loaded.config);
            }
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }
}

/// A loaded configuration makes a server that answers a timeout and a stray datagram.
fn start(config: erebus_server::ServerConfig) {
    let mut server = Server::new(config, &Seed::from_byte(1), Instant::ZERO);
    let _ = server.listen();
    let mut buf = vec![0u8; 65_536];
    let from = SocketAddr::from(([192, 0, 2, 1], 40_000));
    server.handle_input(ServeInput::Timeout { now: Instant::ZERO });
    drain(&mut server, &mut buf);
    server.handle_input(ServeInput::Datagram {
        now: Instant::ZERO,
        from,
        bytes: &[0x38, 1, 2, 3],
    });
    drain(&mut server, &mut buf);
}

fn drain(server: &mut Server, buf: &mut [u8]) {
    for _ in 0..64 {
        if let ServeOutput::Timeout(_) = server.poll_output(buf) {
            return;
        }
    }
    panic!("the server does not settle after a timeout");
}
