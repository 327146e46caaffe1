//! `ovpn_keymethod`: the bytes are the client's key-method-2 message as the server receives
//! it (the TLS plaintext so far), read by [`parse_client_message`], and once more after the
//! `00000000 02` prefix so the fuzzer spends its time on the fields. A message that parses
//! must say how many bytes it used (no more than given), keep parsing to the same message
//! when more bytes follow, and be written again by the client's encoder into bytes that
//! parse to the same fields. Its peer-info text, and the input as text, go through
//! [`PeerInfo::parse`].

use erebus_openvpn::control::keymethod::{UserPass, encode_client_message};
use erebus_openvpn::server::{ClientKeyMessage, PeerInfo, parse_client_message};

/// The harness.
pub fn run(data: &[u8]) {
    check(data);
    let mut prefixed = vec![0, 0, 0, 0, 2];
    prefixed.extend_from_slice(data);
    check(&prefixed);
    peer_info(&String::from_utf8_lossy(data));
}

fn check(buf: &[u8]) {
    let Ok(Some((message, used))) = parse_client_message(buf) else {
        return;
    };
    assert!(used <= buf.len(), "used {used} of {}", buf.len());
    // What follows the message (control messages) does not change it.
    let mut longer = buf[..used].to_vec();
    longer.extend_from_slice(b"PUSH_REQUEST\0");
    let (again, used_again) = parse_client_message(&longer)
        .expect("the same message with a control message after it")
        .expect("complete");
    assert_eq!(used_again, used);
    assert_same(&message, &again);
    // The prefix alone is incomplete, never an error.
    for cut in [0, 4, 5, used / 2, used.saturating_sub(1)] {
        if cut < used {
            assert!(
                !matches!(parse_client_message(&buf[..cut]), Ok(Some(_))),
                "complete after {cut} of {used} bytes"
            );
        }
    }
    // The client's encoder writes what was read; it parses back to the same fields.
    let credentials = (!message.username.is_empty() || !message.password.is_empty()).then(|| {
        UserPass {
            username: &message.username,
            password: &message.password,
        }
    });
    let mut encoded = Vec::new();
    if encode_client_message(
        &message.key_source,
        &message.options,
        credentials,
        &message.peer_info,
        &mut encoded,
    )
    .is_ok()
        && let Ok(Some((round, round_used))) = parse_client_message(&encoded)
    {
        assert_eq!(round_used, encoded.len());
        assert_same(&message, &round);
    }
    peer_info(&message.peer_info);
}

fn assert_same(a: &ClientKeyMessage, b: &ClientKeyMessage) {
    assert!(a.key_source == b.key_source, "key source differs");
    assert_eq!(a.options, b.options);
    assert_eq!(a.username, b.username);
    assert_eq!(a.password.as_str(), b.password.as_str());
    assert_eq!(a.peer_info, b.peer_info);
}

fn peer_info(text: &str) {
    let info = PeerInfo::parse(text);
    let list = info.ncp_list();
    if info.supports_ncp() {
        assert!(info.ciphers.is_some() || list.len() == 2);
    } else {
        assert!(list.is_empty());
    }
    assert_eq!(PeerInfo::parse(text), info, "parsing is a function of the text");
}
