//! What the end-to-end tests against a real server share: reading erebus's log and starting
//! it as nobody in the client namespace; [`compare`] for the comparisons with the stock client.

#![allow(dead_code)] // Each test binary uses a different part.

pub(crate) mod compare;

use std::path::Path;
use std::time::Duration;

use erebus_testvectors::netns::{self, NsProcess, OpenVpnServer, RunAs};

/// The `erebus` binary under test.
pub(crate) const EREBUS: &str = env!("CARGO_BIN_EXE_erebus");
/// The uid of nobody, which erebus runs as.
pub(crate) const NOBODY_UID: u32 = 65534;

/// `text` without ANSI colour sequences (in case erebus colours its log).
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A log file as text, without colours; empty when it cannot be read.
pub(crate) fn read_log(path: &Path) -> String {
    strip_ansi(&String::from_utf8_lossy(
        &std::fs::read(path).unwrap_or_default(),
    ))
}

/// Starts erebus as nobody in the client namespace with `args` (after the binary), logging to
/// `erebus.log`, and waits until its HTTP proxy listens on 8080 and its tunnel is up. Checks
/// that it runs as nobody.
pub(crate) fn start_erebus<'s>(server: &'s OpenVpnServer, args: &[&str]) -> NsProcess<'s> {
    let mut argv = vec![EREBUS];
    argv.extend_from_slice(args);
    let mut erebus = server
        .spawn_in_client(RunAs::Nobody, &argv, "erebus.log")
        .unwrap();
    erebus
        .wait_until_listening(8080, Duration::from_secs(10))
        .unwrap();
    let up = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        read_log(erebus.log_path()).contains("erebus: up:")
    });
    assert!(
        up,
        "erebus did not come up:\n{}",
        read_log(erebus.log_path())
    );
    assert_eq!(netns::uid_of(erebus.pid()), Some(NOBODY_UID));
    erebus
}

/// Starts erebus (see [`start_erebus`]) on `server`'s client profile under the `runtime`
/// driver, with the HTTP proxy only.
pub(crate) fn start_erebus_with_runtime<'s>(
    server: &'s OpenVpnServer,
    runtime: &str,
) -> NsProcess<'s> {
    let config = server.client_profile_path();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--runtime",
        runtime,
        "--no-socks",
    ];
    start_erebus(server, &args)
}
