//! `ovpn_push`: a profile byte (one of [`PROFILES`]), then the plaintext a server sends on the
//! control channel after the key exchange: NUL-terminated messages (`PUSH_REPLY,...`,
//! `AUTH_FAILED,...`, `RESTART`, `AUTH_PENDING`, `INFO_PRE`, ...).
//!
//! [`split_messages`] cuts the text into messages, once whole and once in two reads (split
//! where the profile byte's upper bits say): both must give the same messages. Each message
//! goes through [`ServerMessage::parse`]; every `PUSH_REPLY` is fed to one
//! [`PushAccumulator`] as the client does (continuations joined, `pull-filter` and
//! `route-nopull` applied), and the options of a complete reply through
//! [`PushedOptions::tunnel_config`](erebus_openvpn::control::push::PushedOptions::tunnel_config).
//! A reply that fails starts a fresh accumulator, as a client's next PUSH_REQUEST would.

use erebus_openvpn::config::Profile;
use erebus_openvpn::control::push::{PushAccumulator, ServerMessage, split_messages};

/// The client profiles the options are pushed to: a plain one, one with `pull-filter`
/// rules, one with `route-nopull` and IPv6.
pub const PROFILES: [&str; 3] = [
    "client\ndev tun\nremote 192.0.2.1 1194\nca ca.crt\nauth-user-pass\n",
    "client\ndev tun\nremote 192.0.2.1 1194\nca ca.crt\nauth-user-pass\npull-filter ignore \"route 10.\"\n\
     pull-filter reject \"dhcp-option DOMAIN bad\"\npull-filter accept \"ifconfig\"\n\
     pull-filter ignore \"redirect-gateway\"\n",
    "client\ndev tun\nremote 192.0.2.1 1194\nca ca.crt\nauth-user-pass\nroute-nopull\ntopology subnet\n",
];

thread_local! {
    static PARSED: Vec<Profile> = PROFILES
        .iter()
        .map(|text| Profile::parse(text.as_bytes()).expect("a push-target profile").0)
        .collect();
}

/// The harness.
pub fn run(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let mut whole = text.to_vec();
    let messages = split_messages(&mut whole);
    assert!(!whole.contains(&0), "a NUL left after splitting");
    let at = (usize::from(selector >> 2) * text.len() / 64).min(text.len());
    let mut parts = text[..at].to_vec();
    let mut in_two = split_messages(&mut parts);
    parts.extend_from_slice(&text[at..]);
    in_two.extend(split_messages(&mut parts));
    assert_eq!(messages, in_two, "split at {at}");
    assert_eq!(whole, parts, "the unterminated tail");

    PARSED.with(|profiles| {
        let profile = &profiles[usize::from(selector & 3) % profiles.len()];
        let mut accumulator = PushAccumulator::new();
        for message in &messages {
            match ServerMessage::parse(message) {
                ServerMessage::PushReply(rest) => match accumulator.feed(profile, &rest) {
                    Ok(Some(options)) => {
                        let _ = options.uses_tls_ekm();
                        if let Ok(config) = options.tunnel_config(profile) {
                            let _ = format!("{config:?}");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = e.to_string();
                        accumulator = PushAccumulator::new();
                    }
                },
                other => {
                    let _ = format!("{other:?}");
                }
            }
        }
    });
}
