//! The seeds of the OpenVPN-server and exit targets (`server_conf`, `ovpn_keymethod`,
//! `ovpn_server_session`, `exit_dns`, `serve_rules`, `serve`), built from the project's test
//! material: the captures' server.conf files, messages written by erebus's own client
//! encoder, and sessions recorded from an erebus client talking to the harness.

use std::time::Duration;

use erebus_openvpn::control::keymethod::{ClientKeySource, UserPass, encode_client_message};
use erebus_sansio::tunnel::{Decapsulated, Tunnel, TunnelEvent};
use erebus_sansio::{Instant, Seed as RngSeed};
use erebus_wire::dns::{RecordType, emit_query, query_len};

use crate::Records;
use crate::ovpn_common::{SESSION_CONFIGS, client};
use crate::ovpn_server_session::{self as session, Driver};
use crate::seeds::Seed;
use crate::serve;

const CAPTURE_CONFS: [(&str, &str); 5] = [
    (
        "tls-udp",
        include_str!("../../testvectors/captures/tls-udp/server.conf"),
    ),
    (
        "tls-auth",
        include_str!("../../testvectors/captures/tls-auth/server.conf"),
    ),
    (
        "tls-legacy-prf",
        include_str!("../../testvectors/captures/tls-legacy-prf/server.conf"),
    ),
    (
        "static-key",
        include_str!("../../testvectors/captures/static-key/server.conf"),
    ),
    (
        "plaintext",
        include_str!("../../testvectors/captures/plaintext/server.conf"),
    ),
];

/// Seeds of `server_conf`.
pub fn server_conf() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = CAPTURE_CONFS
        .iter()
        .map(|(name, text)| (format!("capture-{name}.conf"), text.as_bytes().to_vec()))
        .collect();
    for (i, (text, _, _)) in serve::CONFS.iter().enumerate() {
        seeds.push((format!("serve-{i}.conf"), text.as_bytes().to_vec()));
    }
    let ca = String::from_utf8_lossy(crate::ovpn_common::CA).into_owned();
    seeds.push((
        "inline-and-odd.conf".to_owned(),
        format!(
            "\u{feff}# inline blocks, CRLF, -- prefixes, quoting, ignored directives\r\n\
             --port 1195\r\nproto tcp-server\r\ndev tun\r\nserver 10.77.0.0 255.255.255.0\r\n\
             <ca>\r\n{ca}</ca>\r\ncert pki/server.crt\r\nkey 'pki/server.key'\r\n\
             tls-version-min 1.2\r\nremote-cert-tls client\r\n\
             data-ciphers AES-128-GCM:AES-256-CBC\r\ndata-ciphers-fallback AES-256-CBC\r\n\
             auth SHA256\r\ntls-auth ta.key\r\nkey-direction 0\r\n\
             push \"route 192.168.1.0 255.255.255.0\"\r\npush \"dhcp-option DNS 10.77.0.1\"\r\n\
             keepalive 10 120\r\nreneg-sec 3600\r\nhand-window 30\r\ntun-mtu 1400\r\n\
             max-clients 10\r\nduplicate-cn\r\npersist-key\r\npersist-tun\r\nuser nobody\r\n\
             group nogroup\r\nstatus /tmp/status.log\r\nverb 3\r\nmute 20\r\n"
        )
        .into_bytes(),
    ));
    // A `tls-crypt` file the fuzzer writes (after the NUL).
    let mut other = b"port 1194\ndev tun\nserver 10.8.0.0 255.255.255.0\nca ca.crt\n\
                      cert server.crt\nkey server.key\ntls-crypt fuzzed.key\n\
                      cipher AES-256-CBC\n"
        .to_vec();
    other.push(0);
    other.extend_from_slice(crate::ovpn_common::TC_KEY);
    seeds.push(("fuzzed-file.conf".to_owned(), other));
    seeds
}

/// A client key-method message.
fn client_message(credentials: Option<UserPass<'_>>, peer_info: &str) -> Vec<u8> {
    let source = ClientKeySource::generate(&mut RngSeed::from_byte(1).rng());
    let mut out = Vec::new();
    encode_client_message(
        &source,
        "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,\
         auth [null-digest],keysize 256,key-method 2,tls-client",
        credentials,
        peer_info,
        &mut out,
    )
    .expect("the client message");
    out
}

/// Seeds of `ovpn_keymethod`.
pub fn ovpn_keymethod() -> Vec<Seed> {
    let info = "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\n\
                IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\n\
                IV_LZO_STUB=1\nIV_COMP_STUB=1\nIV_SSO=webauth,openurl\n";
    let mut with_push = client_message(None, info);
    with_push.extend_from_slice(b"PUSH_REQUEST\0");
    vec![
        ("cert-client.km".to_owned(), client_message(None, info)),
        (
            "user-pass.km".to_owned(),
            client_message(
                Some(UserPass {
                    username: "alice",
                    password: "wonderland",
                }),
                "IV_VER=2.5.0\r\nIV_NCP=2\r\nIV_PROTO=2\r\n",
            ),
        ),
        ("no-peer-info.km".to_owned(), client_message(None, "")),
        ("with-push-request.km".to_owned(), with_push),
    ]
}

/// Records a session of configuration `config` driven by an erebus client, with `extra`
/// steps once it is up (each applied to the driver and recorded).
pub fn recorded_session(config: u8, extra: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let session_config = SESSION_CONFIGS[usize::from(config) % SESSION_CONFIGS.len()];
    let remote = "10.99.0.1:1194".parse().expect("an address");
    let mut client = client(&session_config, remote, false, 3);
    client.transport_connected(Instant::ZERO, remote);
    let mut driver = Driver::new(config);
    let mut out = vec![config];
    let mut delivered = 0;
    let mut buf = vec![0u8; 2048];
    let mut up = false;
    let step = |driver: &mut Driver, out: &mut Vec<u8>, tag: u8, body: &[u8]| {
        Records::encode(out, tag, body);
        driver.step(tag, body);
    };
    for round in 0..200 {
        let mut progress = false;
        while let Some(Ok(n)) = client.poll_transmit(driver.now, &mut buf) {
            let packet = buf[..n].to_vec();
            step(&mut driver, &mut out, session::RECEIVE, &packet);
            progress = true;
        }
        while let Some(event) = client.poll_event() {
            up |= matches!(event, TunnelEvent::Up(_));
        }
        while delivered < driver.sent.len() {
            let mut packet = driver.sent[delivered].clone();
            delivered += 1;
            let _ = client.decapsulate(driver.now, &mut packet);
            progress = true;
        }
        if up && driver.ups == 1 {
            break;
        }
        if !progress {
            step(&mut driver, &mut out, session::ADVANCE, &500u32.to_be_bytes());
            if client.poll_timeout().is_some_and(|(at, _)| at <= driver.now) {
                client.handle_timeout(driver.now);
            }
        }
        assert!(round < 199, "the recorded session does not come up");
    }
    // Inner packets both ways, then the extra steps.
    for index in 0..2u8 {
        let inner = [0x45, 0, 0, 28, index, 0, 0, 0, 64, 17, 0, 0, 10, 8, 0, 2, 10, 8, 0, 1];
        let overhead = client.overhead();
        let mut packet = vec![0u8; overhead.headroom + inner.len() + overhead.tailroom];
        let range = overhead.headroom..overhead.headroom + inner.len();
        packet[range.clone()].copy_from_slice(&inner);
        if let Ok(outer) = client.encapsulate(driver.now, &mut packet, range) {
            let outer = packet[outer].to_vec();
            step(&mut driver, &mut out, session::RECEIVE, &outer);
        }
        step(&mut driver, &mut out, session::ENCAPSULATE, &inner);
    }
    for (tag, body) in extra {
        step(&mut driver, &mut out, *tag, body);
        // Follow what the server sent, answer what the client sends.
        for _ in 0..16 {
            let mut progress = false;
            while delivered < driver.sent.len() {
                let mut packet = driver.sent[delivered].clone();
                delivered += 1;
                if let Ok(Decapsulated::Inner(_)) = client.decapsulate(driver.now, &mut packet) {}
                progress = true;
            }
            while let Some(Ok(n)) = client.poll_transmit(driver.now, &mut buf) {
                let packet = buf[..n].to_vec();
                step(&mut driver, &mut out, session::RECEIVE, &packet);
                progress = true;
            }
            while client.poll_event().is_some() {}
            if !progress {
                break;
            }
        }
    }
    out
}

/// Seeds of `ovpn_server_session`.
pub fn ovpn_server_session() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for config in 0..SESSION_CONFIGS.len() as u8 {
        seeds.push((
            format!("up-{config}.session"),
            recorded_session(config, &[]),
        ));
    }
    seeds.push((
        "renegotiate-close.session".to_owned(),
        recorded_session(
            0,
            &[
                (session::RENEGOTIATE, Vec::new()),
                (session::ADVANCE, 1000u32.to_be_bytes().to_vec()),
                (session::CLOSE, vec![1]),
                (session::DEADLINE, Vec::new()),
            ],
        ),
    ));
    seeds.push((
        "refused.session".to_owned(),
        {
            // The first steps of a user-pass session with a refusal set beforehand.
            let mut bytes = vec![2u8];
            Records::encode(&mut bytes, session::VERDICT, &[1]);
            let recorded = recorded_session(2, &[]);
            bytes.extend_from_slice(&recorded[1..]);
            bytes
        },
    ));
    seeds.push((
        "timeouts.session".to_owned(),
        recorded_session(
            3,
            &[
                (session::DEADLINE, Vec::new()),
                (session::ADVANCE, 25_000u32.to_be_bytes().to_vec()),
                (session::DEADLINE, Vec::new()),
                (session::ADVANCE, 130_000u32.to_be_bytes().to_vec()),
            ],
        ),
    ));
    seeds
}

/// A DNS query.
fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut buf = vec![0; query_len(name).expect("a name")];
    emit_query(&mut buf, id, name, qtype, true).expect("a query");
    buf
}

/// Seeds of `exit_dns`.
pub fn exit_dns() -> Vec<Seed> {
    let mut edns = query(0x4242, "www.example.org", RecordType::Aaaa);
    // An EDNS OPT record in the additional section, as glibc and systemd-resolved send.
    edns[11] = 1;
    edns.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    let mut formerr = query(7, "example.org", RecordType::A);
    formerr.truncate(15);
    vec![
        ("a.dns".to_owned(), query(0x1234, "intranet.example", RecordType::A)),
        ("aaaa-edns.dns".to_owned(), edns),
        ("txt.dns".to_owned(), query(9, "example.org", RecordType::Other(16))),
        (
            "root.dns".to_owned(),
            vec![0, 10, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1],
        ),
        ("truncated.dns".to_owned(), formerr),
    ]
}

/// Seeds of `serve_rules`.
pub fn serve_rules() -> Vec<Seed> {
    vec![
        (
            "allow.rules".to_owned(),
            b"127.0.0.0/8\n10.1.2.3:443\n192.0.2.0/24:8000-8099\n0.0.0.0/0:80\n\
              [2001:db8::]/32:443\n::1\nfe80::/10\n"
                .to_vec(),
        ),
        (
            "users.rules".to_owned(),
            b"# users\nalice wonderland\nbob  two words \n\n\tcarol\tsecret\n".to_vec(),
        ),
    ]
}

/// A `serve` input: configuration byte and steps.
fn serve_input(config: u8, steps: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![config];
    for (tag, body) in steps {
        Records::encode(&mut out, *tag, body);
    }
    out
}

/// The body of a [`serve::BUILT`] step.
fn built(tcp: bool, dst: [u8; 4], dport: u16, sport: u16, tcp_flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![u8::from(tcp)];
    body.extend_from_slice(&dst);
    body.extend_from_slice(&dport.to_be_bytes());
    body.extend_from_slice(&sport.to_be_bytes());
    if tcp {
        body.push(tcp_flags);
        body.extend_from_slice(&1000u32.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
    }
    body.extend_from_slice(payload);
    body
}

/// Seeds of `serve`.
pub fn serve() -> Vec<Seed> {
    let dns = query(0x5151, "localhost", RecordType::A);
    let syn = 0x02;
    let ack = 0x10;
    let mut seeds = Vec::new();
    for config in [0x80u8, 0x81, 0x82, 0x83] {
        seeds.push((
            format!("client-{}.serve", config & 3),
            serve_input(
                config,
                &[
                    (serve::BUILT, built(false, [10, 8, 0, 1], 53, 5353, 0, &dns)),
                    (serve::RESOLVED, vec![127, 0, 0, 1]),
                    (serve::BUILT, built(true, [127, 0, 0, 1], 80, 40_000, syn, &[])),
                    (serve::FLOW, vec![0, 0]),
                    (serve::BUILT, built(true, [127, 0, 0, 1], 80, 40_000, ack, b"GET / HTTP/1.0\r\n\r\n")),
                    (serve::FLOW, vec![0, 6, b'H', b'T', b'T', b'P']),
                    (serve::FLOW, vec![0, 2]),
                    (serve::BUILT, built(false, [192, 0, 2, 1], 443, 5000, 0, b"quic")),
                    (serve::FLOW, vec![1, 1, 0]),
                    (serve::BUILT, built(true, [8, 8, 8, 8], 22, 40_001, syn, &[])),
                    (serve::CHECKED, vec![1]),
                    (serve::ADVANCE, 61_000u32.to_be_bytes().to_vec()),
                    (serve::DEADLINE, Vec::new()),
                    (serve::STOP, Vec::new()),
                    (serve::ADVANCE, 3_000u32.to_be_bytes().to_vec()),
                ],
            ),
        ));
    }
    // Without the harness client: a hard reset as an erebus client sends it, from two
    // addresses, and junk.
    for config in [0u8, 2] {
        let (_, session_config, tcp) = serve::CONFS[usize::from(config)];
        let remote = "203.0.113.1:1194".parse().expect("an address");
        let mut c = client(&session_config, remote, tcp, 5);
        c.transport_connected(Instant::ZERO, remote);
        let mut buf = vec![0u8; 2048];
        let mut reset = match c.poll_transmit(Instant::ZERO, &mut buf) {
            Some(Ok(n)) => buf[..n].to_vec(),
            _ => panic!("no hard reset"),
        };
        if tcp {
            let mut framed = u16::try_from(reset.len()).expect("short").to_be_bytes().to_vec();
            framed.extend_from_slice(&reset);
            reset = framed;
        }
        seeds.push((
            format!("hard-reset-{config}.serve"),
            serve_input(
                config,
                &[
                    (serve::ACCEPT, Vec::new()),
                    (serve::DATA, reset.clone()),
                    (serve::DATA | 0x10, reset),
                    (serve::ADVANCE, 2_000u32.to_be_bytes().to_vec()),
                    (serve::DATA | 0x20, vec![0x48, 0, 0, 5, 1, 2, 3, 4]),
                    (serve::CLOSE_CONN, Vec::new()),
                    (serve::DEADLINE, Vec::new()),
                ],
            ),
        ));
    }
    let _ = Duration::ZERO;
    seeds
}

/// Every new target with its seeds.
pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("server_conf", server_conf()),
        ("ovpn_keymethod", ovpn_keymethod()),
        ("ovpn_server_session", ovpn_server_session()),
        ("exit_dns", exit_dns()),
        ("serve_rules", serve_rules()),
        ("serve", serve()),
    ]
}
