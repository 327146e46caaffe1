//! The seeds reach what they are built for, and every file under `corpus/` (the seeds and
//! whatever the fuzzer kept) runs through its harness without a panic: `cargo test` here
//! replays the corpus without libFuzzer.

use std::path::Path;

use erebus_fuzz::ipsec_session::Driver;
use erebus_fuzz::{
    Records, eap, esp_open, exit_dns, ike_payloads, ipsec_session, net_dns, net_stack, net_tcp,
    ovpn_client_session, ovpn_keymethod, ovpn_profile, ovpn_push, ovpn_server_session, proxy,
    seeds, serve, serve_rules, server_conf, swanctl,
};

#[test]
fn the_seeds_run() {
    for (target, seeds) in seeds::all() {
        for (name, bytes) in seeds {
            eprintln!("{target}/{name}");
            run(target, &bytes);
        }
    }
}

#[test]
fn the_corpus_on_disk_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, _) in seeds::all() {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).expect("a corpus file");
            run(target, &bytes);
        }
    }
}

fn run(target: &str, bytes: &[u8]) {
    match target {
        "swanctl" => swanctl::run(bytes),
        "ike_payloads" => ike_payloads::run(bytes),
        "eap" => eap::run(bytes),
        "esp_open" => esp_open::run(bytes),
        "ipsec_session" => ipsec_session::run(bytes),
        "server_conf" => server_conf::run(bytes),
        "ovpn_keymethod" => ovpn_keymethod::run(bytes),
        "ovpn_server_session" => ovpn_server_session::run(bytes),
        "exit_dns" => exit_dns::run(bytes),
        "serve_rules" => serve_rules::run(bytes),
        "serve" => serve::run(bytes),
        "ovpn_client_session" => ovpn_client_session::run(bytes),
        "ovpn_push" => ovpn_push::run(bytes),
        "ovpn_profile" => ovpn_profile::run(bytes),
        "net_stack" => net_stack::run(bytes),
        "net_dns" => net_dns::run(bytes),
        "net_tcp" => net_tcp::run(bytes),
        "proxy" => proxy::run(bytes),
        other => panic!("no target {other}"),
    }
}

/// Runs a session seed and returns the driver.
fn drive(bytes: &[u8]) -> Driver {
    let (&config, records) = bytes.split_first().expect("a config byte");
    let mut driver = Driver::new(config);
    for (tag, body) in Records::new(records) {
        driver.step(tag, body);
    }
    driver
}

#[test]
fn the_handshake_seeds_bring_the_session_up_and_carry_packets() {
    for config in 0..3 {
        let driver = drive(&seeds::handshake(config, false));
        assert_eq!(driver.ups, 1, "config {config}");
        assert_eq!(driver.inner_packets, 1, "config {config}");
        assert!(!driver.down, "config {config}");
    }
    let driver = drive(&seeds::handshake(0, true));
    assert_eq!((driver.ups, driver.inner_packets), (1, 1), "with fragments");
}

#[test]
fn the_delete_seed_ends_the_session() {
    let seeds = seeds::ipsec_session();
    let (_, bytes) = seeds
        .iter()
        .find(|(name, _)| name == "dpd-delete.session")
        .expect("the seed");
    let driver = drive(bytes);
    assert_eq!(driver.ups, 1);
    assert!(driver.down);
}

#[test]
fn the_swanctl_seeds_load() {
    let mut reader = swanctl::read_fixed;
    for (name, bytes) in seeds::swanctl() {
        let names = erebus_ipsec::swanctl::connection_names(&bytes, "s.conf", &mut reader)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for conn in names {
            let loaded = erebus_ipsec::swanctl::load(&bytes, "s.conf", Some(&conn), &mut reader);
            eprintln!("{name} {conn}: {:?}", loaded.as_ref().map(|_| ()));
        }
    }
}

#[test]
fn the_captured_init_response_is_accepted() {
    let seeds = seeds::ipsec_session();
    let (_, bytes) = seeds
        .iter()
        .find(|(name, _)| name == "capture-0.session")
        .expect("the seed");
    let driver = drive(bytes);
    assert!(
        driver.auth_requests >= 1,
        "no IKE_AUTH after the captured IKE_SA_INIT response"
    );
}

fn seed(name: &str) -> Vec<u8> {
    seeds::ipsec_session()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no seed {name}"))
        .1
}

/// Runs a session seed but its last `keep` records; returns the driver and those records.
fn drive_but_last(bytes: &[u8], keep: usize) -> (Driver, Vec<(u8, Vec<u8>)>) {
    let (&config, records) = bytes.split_first().expect("a config byte");
    let records: Vec<(u8, Vec<u8>)> = Records::new(records)
        .map(|(t, b)| (t, b.to_vec()))
        .collect();
    let (run, rest) = records.split_at(records.len() - keep);
    let mut driver = Driver::new(config);
    for (tag, body) in run {
        driver.step(*tag, body);
    }
    (driver, rest.to_vec())
}

#[test]
fn the_harness_follows_the_servers_rekeys() {
    // The last three records: a liveness check on the new IKE SA, the old one's DELETE, ESP.
    let (mut driver, rest) = drive_but_last(&seed("server-rekeys.session"), 3);
    assert_eq!(
        driver.inner_packets, 2,
        "ESP on the CHILD_SA the server rekeyed"
    );
    let before = driver.responses();
    driver.step(rest[0].0, &rest[0].1);
    assert_eq!(
        driver.responses(),
        before + 1,
        "no answer on the new IKE SA"
    );
    for (tag, body) in &rest[1..] {
        driver.step(*tag, body);
    }
    assert_eq!(driver.inner_packets, 3);
    assert!(!driver.down);
}

#[test]
fn the_harness_follows_the_sessions_rekeys() {
    let driver = drive(&seed("own-rekey-close.session"));
    assert_eq!(
        driver.inner_packets, 2,
        "ESP on the CHILD_SA the session rekeyed"
    );
    let (mut driver, rest) = drive_but_last(&seed("own-ike-rekey.session"), 2);
    let before = driver.responses();
    driver.step(rest[0].0, &rest[0].1);
    assert_eq!(
        driver.responses(),
        before + 1,
        "no answer on the new IKE SA"
    );
    driver.step(rest[1].0, &rest[1].1);
    assert_eq!(driver.inner_packets, 2);
    assert!(!driver.down);
}

#[test]
fn the_openvpn_server_seeds_bring_the_session_up() {
    for (name, bytes) in erebus_fuzz::ovpn_seeds::ovpn_server_session() {
        let (&config, records) = bytes.split_first().expect("a config byte");
        let mut driver = ovpn_server_session::Driver::new(config);
        for (tag, body) in Records::new(records) {
            driver.step(tag, body);
        }
        eprintln!(
            "{name}: ups {} inner {} down {}",
            driver.ups, driver.inner, driver.down
        );
        if name == "refused.session" {
            assert_eq!(driver.ups, 0, "{name}");
            assert!(driver.down, "{name}");
        } else {
            assert_eq!(driver.ups, 1, "{name}");
            assert_eq!(driver.inner, 2, "{name}");
        }
    }
}

#[test]
fn the_serve_seeds_bring_the_harness_client_up_and_open_flows() {
    for config in [0x80u8, 0x81, 0x82, 0x83] {
        let driver = serve::Driver::new(config);
        let client = driver.client.as_ref().expect("a client");
        assert!(
            client.up,
            "config {config:#x}: the harness client is not up"
        );
        assert_eq!(driver.clients_up, 1, "config {config:#x}");
    }
    for (name, bytes) in erebus_fuzz::ovpn_seeds::serve() {
        let (&config, records) = bytes.split_first().expect("a config byte");
        let mut driver = serve::Driver::new(config);
        for (tag, body) in Records::new(records) {
            driver.step(tag, body);
        }
        eprintln!(
            "{name}: opened {} clients up {}",
            driver.opened, driver.clients_up
        );
        if config & 0x80 != 0 {
            assert!(driver.opened >= 1, "{name}: no flow opened");
        }
    }
}

/// An IPv6 rule with ports is written with the brackets the parser needs, so it reads back
/// (it used to be written bare, `2001:db8::/32:443`, which parses as a network without ports).
#[test]
fn an_ipv6_allow_rule_with_ports_reads_back_from_its_display() {
    use std::str::FromStr;
    let rule = erebus_server::AllowRule::from_str("[2001:db8::]/32:443").expect("a rule");
    let written = rule.to_string();
    assert_eq!(written, "[2001:db8::]/32:443");
    assert_eq!(erebus_server::AllowRule::from_str(&written), Ok(rule));
}

#[test]
fn the_openvpn_client_seeds_bring_the_client_up() {
    for (name, bytes) in erebus_fuzz::client_seeds::ovpn_client_session() {
        let (&config, records) = bytes.split_first().expect("a config byte");
        let mut driver = ovpn_client_session::Driver::new(config);
        for (tag, body) in Records::new(records) {
            driver.step(tag, body);
        }
        eprintln!(
            "{name}: ups {} inner {} down {}",
            driver.ups, driver.inner, driver.down
        );
        if name.starts_with("up-") || name == "renegotiate.client" {
            assert_eq!((driver.ups, driver.inner), (1, 2), "{name}");
            assert!(!driver.down, "{name}");
        } else if name == "hand-reset.client" {
            assert_eq!(driver.ups, 0, "{name}");
        } else {
            assert_eq!(driver.ups, 1, "{name}");
            assert!(driver.down, "{name}");
        }
    }
}

#[test]
fn the_client_side_seeds_reach_what_they_are_built_for() {
    for (name, bytes) in erebus_fuzz::client_seeds::net_tcp() {
        let mut driver = net_tcp::Driver::new(bytes[0]);
        for (tag, body) in Records::new(&bytes[1..]) {
            driver.step(tag, body);
        }
        eprintln!(
            "{name}: received {} sent {}",
            driver.received,
            driver.sent.len()
        );
        if name == "active.tcp" || name == "passive-small.tcp" {
            assert!(
                driver.received >= 1000,
                "{name}: received {}",
                driver.received
            );
            assert!(driver.sent.iter().any(|s| s.3 > 0), "{name}: no data sent");
        }
    }
    for (name, bytes) in erebus_fuzz::client_seeds::net_dns() {
        let mut driver = net_dns::Driver::new(bytes[0]);
        for (tag, body) in Records::new(&bytes[1..]) {
            driver.step(tag, body);
        }
        eprintln!(
            "{name}: resolved {} failed {}",
            driver.resolved, driver.failed
        );
        if name == "a.dns" || name == "truncated-tcp.dns" || name == "both-cname.dns" {
            assert!(driver.resolved >= 1, "{name}");
        }
    }
    for (name, bytes) in erebus_fuzz::client_seeds::net_stack() {
        let mut driver = net_stack::Driver::new(bytes[0]);
        for (tag, body) in Records::new(&bytes[1..]) {
            driver.step(tag, body);
        }
        eprintln!("{name}: sent {} flows {}", driver.sent.len(), driver.flows);
        if name == "exit-accept.stack" {
            assert_eq!(driver.flows, 1, "{name}");
        }
    }
    for (name, bytes) in erebus_fuzz::client_seeds::proxy() {
        let mut driver = proxy::Driver::new(bytes[0]);
        for (tag, body) in Records::new(&bytes[1..]) {
            driver.step(tag, body);
        }
        eprintln!(
            "{name}: connects {} to upstream {} to client {}",
            driver.connects,
            driver.to_upstream.len(),
            driver.to_client.len()
        );
        if name.starts_with("connect") || name.starts_with("absolute") {
            assert!(
                driver.connects >= 1 && !driver.to_upstream.is_empty(),
                "{name}"
            );
        }
    }
}

#[test]
fn the_profile_and_push_seeds_parse() {
    for (name, bytes) in erebus_fuzz::client_seeds::ovpn_profile() {
        let parsed = erebus_openvpn::config::Profile::parse(&bytes);
        eprintln!("{name}: {:?}", parsed.as_ref().map(|_| ()));
        if name.starts_with("inline-") {
            assert!(parsed.is_ok(), "{name}");
        }
    }
    let profile = erebus_openvpn::config::Profile::parse(ovpn_push::PROFILES[0].as_bytes())
        .expect("a profile")
        .0;
    let seeds = erebus_fuzz::client_seeds::ovpn_push();
    let (_, bytes) = seeds
        .iter()
        .find(|(n, _)| n == "subnet.push")
        .expect("a seed");
    let mut text = bytes[1..].to_vec();
    let messages = erebus_openvpn::control::push::split_messages(&mut text);
    let reply = messages[0].strip_prefix("PUSH_REPLY").expect("a reply");
    let options = erebus_openvpn::control::push::PushAccumulator::new()
        .feed(&profile, reply)
        .expect("options")
        .expect("complete");
    let config = options.tunnel_config(&profile).expect("a tunnel");
    assert!(config.ipv4.is_some());
}
