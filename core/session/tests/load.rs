//! From a configuration's bytes to a plan: the servers and retry rules a profile sets, the
//! files it names read through the caller, and clear errors for what cannot work.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::path::Path;
use std::time::Duration;

use erebus_sansio::tunnel::{TransportKind, Tunnel};
use erebus_sansio::{Instant, Seed, UnixTime, WallClock};
use erebus_session::{AnyProtocol, LoadError, Overrides, Plan, load};
use zeroize::Zeroizing;

const CA: &str = include_str!("../../../testvectors/tls-pki/ca.crt");
const CLIENT_CERT: &str = include_str!("../../../testvectors/tls-pki/client.crt");
const CLIENT_KEY: &str = include_str!("../../../testvectors/tls-pki/client.pkcs8.key");

fn wall() -> WallClock {
    WallClock::new(Instant::ZERO, UnixTime::from_secs(1_800_000_000))
}

/// Loads `profile` with `files` as the only files there are.
fn plan(profile: &str, files: &[(&str, &str)], overrides: Overrides) -> Result<Plan, LoadError> {
    let mut read = |path: &Path| {
        files
            .iter()
            .find(|(name, _)| Path::new(name) == path)
            .map(|(_, text)| Zeroizing::new(text.as_bytes().to_vec()))
            .ok_or_else(|| format!("{}: no such file", path.display()))
    };
    load(
        profile.as_bytes(),
        "test.ovpn",
        &mut read,
        overrides,
        wall(),
    )
}

const PROFILE: &str = "client\n\
    dev tun\n\
    proto udp\n\
    remote vpn1.example 1194\n\
    remote 10.99.0.9 443 tcp\n\
    remote-random\n\
    connect-retry 2 30\n\
    connect-retry-max 3\n\
    resolv-retry 60\n\
    server-poll-timeout 7\n\
    nobind\n\
    ca ca.crt\n\
    auth-user-pass creds.txt\n";

#[test]
fn the_plan_holds_every_server_and_the_retry_rules() {
    let plan = plan(
        PROFILE,
        &[("ca.crt", CA), ("creds.txt", "alice\nsecret\n")],
        Overrides::default(),
    )
    .unwrap();
    let servers: Vec<(&str, u16, TransportKind)> = plan
        .remotes
        .iter()
        .map(|r| (r.host.as_str(), r.port, r.kind))
        .collect();
    assert_eq!(
        servers,
        [
            ("vpn1.example", 1194, TransportKind::Udp),
            ("10.99.0.9", 443, TransportKind::TcpLengthPrefixed)
        ]
    );
    for remote in &plan.remotes {
        assert_eq!(remote.retry_delay, Duration::from_secs(2));
        assert_eq!(remote.max_retry_delay, Duration::from_secs(30));
        assert_eq!(remote.poll_timeout, Duration::from_secs(7));
    }
    assert_eq!(plan.policy.max_tries_per_remote, Some(3));
    assert_eq!(plan.policy.resolve_for, Some(Duration::from_secs(60)));
    assert!(plan.policy.random_order);
    // The supervised tunnel asks for the first server in its (shuffled) order.
    let tunnel = plan.start(&Seed::from_byte(1), wall(), Instant::ZERO);
    let spec = tunnel.transport().unwrap();
    assert_eq!(spec.attempt, 1);
    assert!(["vpn1.example", "10.99.0.9"].contains(&spec.host.as_str()));
}

#[test]
fn openvpn_defaults_apply_when_the_profile_is_silent() {
    let profile = "client\ndev tun\nremote 10.99.0.1\nca ca.crt\ncert c.crt\nkey c.key\n";
    let files = [
        ("ca.crt", CA),
        ("c.crt", CLIENT_CERT),
        ("c.key", CLIENT_KEY),
    ];
    let plan = plan(profile, &files, Overrides::default()).unwrap();
    let remote = &plan.remotes[0];
    assert_eq!((remote.port, remote.kind), (1194, TransportKind::Udp));
    assert_eq!(remote.retry_delay, Duration::from_secs(1));
    assert_eq!(remote.max_retry_delay, Duration::from_secs(300));
    assert_eq!(remote.poll_timeout, Duration::from_secs(120));
    assert_eq!(plan.policy.max_tries_per_remote, None);
    assert_eq!(plan.policy.resolve_for, None, "resolv-retry infinite");
    assert!(!plan.policy.random_order);
}

#[test]
fn a_missing_file_is_named() {
    let error = plan(PROFILE, &[("ca.crt", CA)], Overrides::default()).unwrap_err();
    assert!(
        matches!(&error, LoadError::File { path, .. } if path == Path::new("creds.txt")),
        "{error}"
    );
    assert!(error.to_string().contains("creds.txt"), "{error}");
}

#[test]
fn credentials_on_the_command_line_replace_the_profiles() {
    let prompt = PROFILE.replace("auth-user-pass creds.txt", "auth-user-pass");
    let error = plan(&prompt, &[("ca.crt", CA)], Overrides::default()).unwrap_err();
    assert!(
        error.to_string().contains("--auth-user-pass FILE"),
        "{error}"
    );
    let given = Overrides {
        auth_user_pass: Some(Zeroizing::new(b"bob\npassword\n".to_vec())),
        ..Overrides::default()
    };
    assert!(plan(&prompt, &[("ca.crt", CA)], given).is_ok());
}

#[test]
fn a_broken_profile_is_refused_with_its_line() {
    let error = plan(
        "client\ndev tap\nremote 10.99.0.1\n",
        &[],
        Overrides::default(),
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("test.ovpn: "), "{text}");
    assert!(text.contains("line 2"), "{text}");
    // A CA that is not a certificate is a configuration error before anything is sent.
    let error = plan(
        "client\ndev tun\nremote 10.99.0.1\nca ca.crt\n",
        &[("ca.crt", "not a certificate")],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(matches!(error, LoadError::Config(_)), "{error}");
}

const SWANCTL: &str = "connections {
    home {
        remote_addrs = vpn.example.test
        vips = 0.0.0.0
        local {
            auth = psk
            id = client@example.test
        }
        remote {
            auth = psk
            id = vpn.example.test
        }
        children {
            net {
                remote_ts = 10.98.0.0/24
            }
        }
    }
}
secrets {
    ike-home {
        id = client@example.test
        secret = not-a-real-secret
    }
}
";

#[test]
fn a_swanctl_conf_is_recognised_and_becomes_an_ipsec_plan() {
    let plan = plan(SWANCTL, &[], Overrides::default()).unwrap();
    assert!(matches!(plan.protocol, AnyProtocol::Ipsec(_)), "{plan:?}");
    assert_eq!(plan.remotes.len(), 1);
    assert_eq!(plan.remotes[0].host, "vpn.example.test");
    assert_eq!(plan.remotes[0].port, 500);
    assert_eq!(plan.remotes[0].kind.name(), "udp");
    // A connection without children names the line of its block.
    let broken = SWANCTL.replace("children {\n            net {\n                remote_ts = 10.98.0.0/24\n            }\n        }\n", "");
    let error = plan_of(&broken).unwrap_err().to_string();
    assert!(error.contains("line 2"), "{error}");
    // Several connections and none chosen: the error lists them.
    let two = SWANCTL.replace(
        "connections {\n",
        "connections {\n    other {\n        remote_addrs = 192.0.2.1\n    }\n",
    );
    let error = plan_of(&two).unwrap_err().to_string();
    assert!(error.contains("home") && error.contains("other"), "{error}");
}

fn plan_of(text: &str) -> Result<Plan, LoadError> {
    plan(text, &[], Overrides::default())
}
