//! `swanctl`: the bytes are a swanctl.conf, loaded by [`swanctl::load`] (every connection it
//! names, and once with a CA from `x509ca/`) through a file reader that serves a few fixed
//! files (an include file, a certificate, a key, a CA) and refuses every other path. A
//! connection that loads is then made into an [`IpsecSession`] that sends its IKE_SA_INIT, so
//! whatever the parser accepts must also be something the session can start from (or refuse
//! with an error, not a panic).

use std::net::SocketAddr;
use std::path::Path;

use erebus_ipsec::config::{Connection, Secret};
use erebus_ipsec::swanctl::{self, LoadOptions, SwanctlError};
use erebus_ipsec::{IpsecSession, SessionConfig};
use erebus_sansio::tunnel::Tunnel;
use erebus_sansio::{Instant, Seed, UnixTime, WallClock};
use zeroize::Zeroizing;

/// The file a test `include inc.conf` finds: a fragment that is valid at the top level.
pub const INCLUDE: &str = "# included by the fuzzed file\n\
secrets {\n\
\tike-included {\n\
\t\tid = included@example.test\n\
\t\tsecret = 0x696e636c75646564\n\
\t}\n\
}\n\
include nested.conf\n";

/// What `inc.conf` includes in turn (resolved next to it).
pub const NESTED: &str =
    "# nested include\nsecrets { eap-nested { id = nested\nsecret = \"n\" } }\n";

/// A fragment valid inside a `local` or `remote` section.
pub const SIDE: &str = "auth = psk\nid = side@example.test\n";

const CA: &[u8] = include_bytes!("../../testvectors/ipsec/strongswan-ecdsa-ca.crt");
const CLIENT_CERT: &[u8] = include_bytes!("../../testvectors/ipsec/test-only-client-p256.crt");
const CLIENT_KEY: &[u8] = include_bytes!("../../testvectors/ipsec/test-only-client-p256.key");

/// The fixed directory: path as the parser asks for it, and its bytes.
pub const FILES: &[(&str, &[u8])] = &[
    ("inc.conf", INCLUDE.as_bytes()),
    ("nested.conf", NESTED.as_bytes()),
    ("side.conf", SIDE.as_bytes()),
    ("x509/client.crt", CLIENT_CERT),
    ("x509ca/ca.crt", CA),
    ("private/client.key", CLIENT_KEY),
    ("private/client.pem", CLIENT_KEY),
];

/// Serves [`FILES`] and refuses everything else, as a real reader refuses a missing file.
pub fn read_fixed(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let wanted = path.to_string_lossy();
    FILES
        .iter()
        .find(|(name, _)| *name == wanted)
        .map(|(_, bytes)| Zeroizing::new(bytes.to_vec()))
        .ok_or_else(|| format!("{wanted}: no such file"))
}

/// The most connections of one file that are each loaded by name.
const MAX_NAMED: usize = 4;

/// The harness.
pub fn run(data: &[u8]) {
    let mut reader = read_fixed;
    let options = LoadOptions {
        x509ca: vec![Secret::new(CA.to_vec())],
    };
    check(swanctl::load(data, "swanctl.conf", None, &mut reader));
    check(swanctl::load_with_options(
        data,
        "swanctl.conf",
        None,
        &mut reader,
        &options,
    ));
    if let Ok(names) = swanctl::connection_names(data, "swanctl.conf", &mut reader) {
        for name in names.iter().take(MAX_NAMED) {
            check(swanctl::load(data, "swanctl.conf", Some(name), &mut reader));
        }
        // A name the file does not have is an error, never a panic.
        let missing = swanctl::load(data, "swanctl.conf", Some("\u{0}absent"), &mut reader);
        assert!(missing.is_err(), "a connection named NUL absent was found");
    }
}

fn check(result: Result<(Connection, Vec<erebus_ipsec::config::Warning>), SwanctlError>) {
    match result {
        Ok((connection, warnings)) => {
            for warning in &warnings {
                let _ = warning.to_string();
            }
            start_session(connection);
        }
        Err(error) => {
            let text = error.to_string();
            assert!(!text.is_empty());
            if let Some(line) = error.line() {
                assert!(line >= 1, "error on line 0: {text}");
            }
        }
    }
}

/// A loaded connection must make a session or be refused with a sentence.
fn start_session(connection: Connection) {
    let _ = format!("{connection:?}");
    let server = SocketAddr::from(([198, 51, 100, 1], connection.remote_port));
    let wall_clock = WallClock::new(Instant::ZERO, UnixTime::from_secs(1_800_000_000));
    let config = SessionConfig {
        connection,
        server,
        wall_clock,
    };
    let Ok(mut session) = IpsecSession::new(config, &Seed::from_byte(3), Instant::ZERO) else {
        return;
    };
    session.transport_connected(Instant::ZERO, server);
    let mut buf = vec![0u8; 2048];
    for _ in 0..8 {
        match session.poll_transmit(Instant::ZERO, &mut buf) {
            Some(Ok(_)) => {}
            Some(Err(needed)) => buf.resize(needed, 0),
            None => break,
        }
    }
    while session.poll_event().is_some() {}
}
