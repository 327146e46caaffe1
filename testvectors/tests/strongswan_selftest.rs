//! Proves the strongSwan harness without erebus: the stock strongSwan initiator
//! (charon-systemd, as root in the client namespace) connects to the harness's responder with
//! a PSK, with EAP-MSCHAPv2 and with a client certificate; the inner network is unreachable
//! before; afterwards the page, a 1 MiB pattern download (SHA-256 checked) and DNS go through
//! the tunnel; the tunnel survives a CHILD_SA rekey and an IKE_SA rekey started by the
//! responder; the responder deletes the IKE_SA on request; charon is stopped and started
//! again and takes new clients; and dropping the server leaves no namespace, process or
//! directory behind.
//!
//! Needs root and strongSwan (see `erebus_testvectors::strongswan::require_strongswan`);
//! without them the test prints a banner and fails, unless `EREBUS_SKIP_INTEROP=1` is set
//! outside CI.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use erebus_testvectors::netns::{self, CommandOutput, RunAs, ServerStop};
use erebus_testvectors::strongswan::{
    self, CERT_CLIENT_ID, CONN_CERT, CONN_EAP, CONN_PSK, DNS_ADDR, DNS_NAME, FIRST_VIRTUAL_IP,
    HTTP_ADDR, HTTP_MARKER, HTTP_PORT, INNER_NET, IkeSa, PSK_CLIENT_ID, STOCK_CERT, STOCK_EAP,
    STOCK_PSK, ServerKeyType, StockInitiator, StrongSwanOptions, StrongSwanServer,
};

const ONE_MIB: u64 = 1 << 20;

fn namespace_exists(name: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name))
}

/// What a dropped server must have removed.
struct Footprint {
    namespaces: [String; 2],
    pids: Vec<u32>,
    dir: PathBuf,
}

impl Footprint {
    fn of(server: &StrongSwanServer) -> Self {
        Self {
            namespaces: [
                server.server_netns().to_owned(),
                server.client_netns().to_owned(),
            ],
            pids: server.pids(),
            dir: server.dir().to_owned(),
        }
    }

    fn assert_gone(&self) {
        for namespace in &self.namespaces {
            assert!(
                !namespace_exists(namespace),
                "namespace {namespace} still exists"
            );
        }
        for pid in &self.pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} still exists"
            );
        }
        assert!(!self.dir.exists(), "{} still exists", self.dir.display());
    }
}

/// curl as nobody in the client namespace.
fn curl(server: &StrongSwanServer, max_time: u32, args: &[&str]) -> CommandOutput {
    let curl = netns::find_program("curl").expect("curl is installed");
    let curl = curl.to_string_lossy();
    let max_time = max_time.to_string();
    let mut argv = vec![&*curl, "-sS", "--max-time", &max_time];
    argv.extend_from_slice(args);
    server
        .run_in_client(RunAs::Nobody, &argv, Duration::from_secs(30))
        .expect("curl runs")
}

/// The page through the tunnel.
fn assert_page(server: &StrongSwanServer, when: &str) {
    let page = curl(server, 10, &[&server.http_url()]);
    assert!(
        page.success() && page.stdout_text().contains(HTTP_MARKER),
        "GET {} {when}: {page}\n--- responder SAs ---\n{}",
        server.http_url(),
        server.list_sas()
    );
}

/// The one IKE_SA of the responder, which must be `conn` with one installed CHILD_SA, the
/// only one left in `children` (a rekeyed one, still listed as `DELETED`, is dropped).
fn single_sa(server: &StrongSwanServer, conn: &str) -> IkeSa {
    let sas = server.ike_sas().expect("swanctl --list-sas works");
    assert_eq!(sas.len(), 1, "{}", server.list_sas());
    let mut sa = sas.into_iter().next().expect("one IKE_SA");
    assert_eq!(sa.name, conn, "{sa}");
    assert_eq!(sa.state, "ESTABLISHED", "{sa}");
    assert_eq!(sa.installed_children().len(), 1, "{sa}");
    sa.children.retain(|child| child.state == "INSTALLED");
    let child = &sa.children[0];
    assert_eq!(child.name, conn, "{sa}");
    assert_eq!(child.state, "INSTALLED", "{sa}");
    assert_eq!(child.encap, "yes", "ESP must be in UDP: {sa}");
    assert_eq!(child.local_ts, vec![INNER_NET.to_owned()], "{sa}");
    sa
}

/// Waits until the initiator has no IKE_SA left.
fn wait_initiator_idle(initiator: &StockInitiator<'_>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if initiator.ike_sas().is_ok_and(|sas| sas.is_empty()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn step(started: Instant, what: &str) {
    eprintln!("[{:>6.2}s] {what}", started.elapsed().as_secs_f64());
}

#[test]
fn stock_initiator_proves_the_responder() {
    if !strongswan::should_run_interop("strongswan_selftest stock_initiator_proves_the_responder") {
        return;
    }
    let started = Instant::now();
    let server = StrongSwanServer::start(StrongSwanOptions::default()).expect("harness starts");
    let footprint = Footprint::of(&server);
    step(
        started,
        &format!("responder up in {}", server.server_netns()),
    );
    assert_eq!(server.server_addr(), Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(server.http_url(), "http://10.98.0.1:8080/");
    assert_eq!(server.http_name_url(), "http://web.erebus.test:8080/");
    assert_eq!(server.dns_server(), DNS_ADDR);
    assert!(server.charon_running());
    let loaded = server
        .swanctl(&["--list-conns"])
        .expect("swanctl --list-conns runs");
    for conn in [CONN_PSK, CONN_EAP, CONN_CERT] {
        assert!(
            loaded.stdout_text().contains(&format!("{conn}: IKEv2")),
            "{conn} not loaded: {loaded}"
        );
    }

    // Client files for nobody.
    let ca = server
        .write_client_file("x509ca/ca.crt", &server.ca_cert_pem())
        .expect("client file written");
    let read_back = server
        .run_in_client(
            RunAs::Nobody,
            &["/bin/cat", &ca.to_string_lossy()],
            Duration::from_secs(5),
        )
        .expect("cat runs");
    assert!(
        read_back.success(),
        "nobody reads {}: {read_back}",
        ca.display()
    );
    assert_eq!(read_back.stdout, server.ca_cert_pem());
    assert!(server.write_client_file("../escape", b"x").is_err());
    assert_ne!(server.ca_cert_pem(), server.other_ca_cert_pem());
    assert!(
        String::from_utf8_lossy(&server.client_cert_pem()).contains("BEGIN CERTIFICATE")
            && String::from_utf8_lossy(&server.client_key_pem()).contains("PRIVATE KEY")
    );

    // Without a tunnel the inner network is unreachable.
    let before = curl(&server, 2, &[&server.http_url()]);
    assert!(!before.success(), "reached {HTTP_ADDR} without a tunnel");

    // --- PSK ---------------------------------------------------------------------------------
    let initiator = server
        .start_stock_initiator(STOCK_PSK)
        .expect("the stock initiator connects with the PSK");
    step(started, "PSK connected");
    let sa = single_sa(&server, CONN_PSK);
    assert_eq!(sa.remote_id, PSK_CLIENT_ID, "{sa}");
    assert_eq!(sa.remote_vips, vec![FIRST_VIRTUAL_IP.to_string()], "{sa}");
    assert_eq!(sa.encryption, "AES_GCM_16", "{sa}");
    assert_eq!(sa.dh_group, "CURVE_25519", "{sa}");
    assert_eq!(sa.local_port, "4500", "the client floated to NAT-T: {sa}");
    assert_eq!(initiator.virtual_ip(), Some(FIRST_VIRTUAL_IP));
    let resolv = initiator.resolv_conf();
    if netns::find_program("resolvconf").is_none() {
        assert!(
            resolv.contains(&format!("nameserver {DNS_ADDR}")),
            "the DNS server from CP: {resolv:?}"
        );
    }
    assert_page(&server, "over the PSK tunnel");

    let download = curl(
        &server,
        20,
        &[&format!("{}bytes/{ONE_MIB}", server.http_url())],
    );
    assert!(download.success(), "1 MiB download: {download}");
    assert_eq!(download.stdout.len() as u64, ONE_MIB);
    assert_eq!(
        netns::hex(&netns::sha256(&download.stdout)),
        netns::hex(&netns::pattern_sha256(ONE_MIB)),
        "the 1 MiB pattern stream through the tunnel"
    );
    step(started, "page and 1 MiB download through the tunnel");

    let resolved = server
        .resolve_from_client(RunAs::Nobody, DNS_NAME, Duration::from_secs(3))
        .expect("probe.py runs");
    assert_eq!(
        resolved,
        vec![HTTP_ADDR],
        "{DNS_NAME} through the tunnel DNS"
    );
    let by_name = curl(
        &server,
        10,
        &[
            "--resolve",
            &format!("{DNS_NAME}:{HTTP_PORT}:{}", resolved[0]),
            &server.http_name_url(),
        ],
    );
    assert!(
        by_name.success() && by_name.stdout_text().contains(HTTP_MARKER),
        "GET {}: {by_name}",
        server.http_name_url()
    );

    // --- rekeys started by the responder -----------------------------------------------------
    let child_before = sa.children[0].clone();
    server
        .rekey_child()
        .expect("the responder rekeys the CHILD_SA");
    let after_child = single_sa(&server, CONN_PSK);
    assert_eq!(after_child.unique_id, sa.unique_id, "same IKE_SA");
    let child_after = &after_child.children[0];
    assert_ne!(child_after.unique_id, child_before.unique_id);
    assert_ne!(child_after.spi_in, child_before.spi_in);
    assert_ne!(child_after.spi_out, child_before.spi_out);
    assert_page(&server, "after the CHILD_SA rekey");
    step(started, "CHILD_SA rekeyed by the responder");

    server.rekey_ike().expect("the responder rekeys the IKE_SA");
    let after_ike = single_sa(&server, CONN_PSK);
    assert_ne!(after_ike.unique_id, sa.unique_id, "a new IKE_SA");
    assert_ne!(after_ike.responder_spi, sa.responder_spi);
    assert_eq!(after_ike.children[0].unique_id, child_after.unique_id);
    assert_page(&server, "after the IKE_SA rekey");
    let initiator_sas = initiator.ike_sas().expect("initiator SAs");
    assert_eq!(initiator_sas.len(), 1, "{}", initiator.list_sas());
    assert_eq!(
        initiator_sas[0].responder_spi, after_ike.responder_spi,
        "both ends moved to the new IKE_SA"
    );
    step(started, "IKE_SA rekeyed by the responder");

    let log = server.charon_log();
    assert!(log.contains("CREATE_CHILD_SA request"), "{log}");
    let keys = server.charon_keys_log();
    assert!(
        keys.contains("SKEYSEED") && keys.contains("Sk_ei secret"),
        "the key log has the keys"
    );

    // --- DELETE started by the responder ------------------------------------------------------
    server
        .terminate_ike()
        .expect("the responder deletes the IKE_SA");
    assert!(server.ike_sas().expect("SAs").is_empty());
    assert!(
        wait_initiator_idle(&initiator, Duration::from_secs(5)),
        "the initiator kept its SA: {}",
        initiator.list_sas()
    );
    let gone = curl(&server, 2, &[&server.http_url()]);
    assert!(!gone.success(), "reached {HTTP_ADDR} after the DELETE");
    initiator.stop().expect("the initiator stops");
    step(started, "IKE_SA deleted by the responder");

    // --- EAP-MSCHAPv2 ------------------------------------------------------------------------
    let initiator = server
        .start_stock_initiator(STOCK_EAP)
        .expect("the stock initiator connects with EAP-MSCHAPv2");
    let sa = single_sa(&server, CONN_EAP);
    assert_eq!(sa.encryption, "CHACHA20_POLY1305", "{sa}");
    assert_eq!(sa.children[0].encryption, "CHACHA20_POLY1305", "{sa}");
    assert_page(&server, "over the EAP tunnel");
    let log = server.charon_log();
    assert!(
        log.contains("EAP method EAP_MSCHAPV2 succeeded"),
        "EAP in the responder's log"
    );
    step(started, "EAP-MSCHAPv2 connected");

    // --- charon stopped and started again ------------------------------------------------------
    server
        .stop_charon(ServerStop::Terminate)
        .expect("charon stops");
    assert!(!server.charon_running());
    let down = curl(&server, 2, &[&server.http_url()]);
    assert!(!down.success(), "reached {HTTP_ADDR} with charon stopped");
    let deleted = wait_initiator_idle(&initiator, Duration::from_secs(5));
    step(
        started,
        &format!("charon stopped (the initiator got its DELETE: {deleted})"),
    );
    initiator.stop().expect("the initiator stops");

    server.start_charon_again().expect("charon starts again");
    assert!(server.charon_running());
    assert_eq!(server.charon_starts(), 2);
    assert!(server.ike_sas().expect("SAs").is_empty());
    assert!(server.dir().join("responder/charon-run1.log").is_file());

    // --- a client certificate, against the restarted responder ---------------------------------
    let initiator = server
        .start_stock_initiator(STOCK_CERT)
        .expect("the stock initiator connects with its certificate");
    let sa = single_sa(&server, CONN_CERT);
    assert_eq!(sa.remote_id, CERT_CLIENT_ID, "{sa}");
    assert_eq!(sa.dh_group, "ECP_256", "{sa}");
    assert_eq!(sa.children[0].encryption, "AES_GCM_16", "{sa}");
    assert_page(&server, "over the certificate tunnel, after the restart");
    step(started, "charon restarted; certificate connected");

    // The same again after a SIGKILL.
    drop(initiator);
    server.stop_charon(ServerStop::Kill).expect("charon killed");
    server.start_charon_again().expect("charon starts again");
    assert_eq!(server.charon_starts(), 3);
    let initiator = server
        .start_stock_initiator(STOCK_PSK)
        .expect("the stock initiator connects after a SIGKILL");
    single_sa(&server, CONN_PSK);
    assert_page(&server, "after SIGKILL and restart");
    step(started, "charon killed, restarted; PSK connected");

    drop(initiator);
    let footprint = Footprint {
        pids: server.pids().into_iter().chain(footprint.pids).collect(),
        ..footprint
    };
    drop(server);
    footprint.assert_gone();
    step(started, "everything removed");
}

/// `(source port, destination port)` of every UDP-in-IPv4 packet of an Ethernet pcap file.
fn udp_ports_in_pcap(pcap: &[u8]) -> Vec<(u16, u16)> {
    let mut ports = Vec::new();
    let Some(mut rest) = pcap.get(24..) else {
        return ports;
    };
    while rest.len() >= 16 {
        let captured = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        let Some(frame) = rest.get(16..16 + captured) else {
            break;
        };
        // Ethernet, IPv4 (0x0800), protocol UDP (17).
        if frame.len() >= 14 + 20 + 8 && frame[12..14] == [0x08, 0x00] && frame[14 + 9] == 17 {
            let header_len = usize::from(frame[14] & 0x0f) * 4;
            if let Some(udp) = frame.get(14 + header_len..14 + header_len + 4) {
                ports.push((
                    u16::from_be_bytes([udp[0], udp[1]]),
                    u16::from_be_bytes([udp[2], udp[3]]),
                ));
            }
        }
        rest = &rest[16 + captured..];
    }
    ports
}

#[test]
fn options_capture_and_fragmented_rsa_certificate() {
    if !strongswan::should_run_interop(
        "strongswan_selftest options_capture_and_fragmented_rsa_certificate",
    ) {
        return;
    }
    let started = Instant::now();
    let options = StrongSwanOptions {
        dpd_delay_secs: 1,
        ike_rekey_secs: 4,
        child_rekey_secs: 3,
        retransmit_tries: 2,
        retransmit_timeout: Duration::from_secs(1),
        server_key: ServerKeyType::Rsa3072,
        ..StrongSwanOptions::default()
    };
    let server = StrongSwanServer::start(options).expect("harness starts");
    step(started, "responder up (RSA certificate)");
    let capture = server.start_capture().expect("tcpdump starts");
    assert_eq!(capture, server.capture_path());
    assert!(
        String::from_utf8_lossy(&server.server_cert_pem()).contains("BEGIN CERTIFICATE"),
        "the server certificate"
    );

    let initiator = server
        .start_stock_initiator(STOCK_EAP)
        .expect("the stock initiator connects with EAP-MSCHAPv2");
    let sa = single_sa(&server, CONN_EAP);
    assert_page(
        &server,
        "over the EAP tunnel with an RSA server certificate",
    );
    assert!(
        server.charon_log().contains("into 2 fragments"),
        "the IKE_AUTH response with the RSA certificate is fragmented:\n{}",
        server.charon_log()
    );
    step(started, "EAP connected, IKE_AUTH response fragmented");

    // The responder rekeys both SAs by itself (rekey_time 3 s and 4 s), and sends DPDs.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (child_rekeyed, ike_rekeyed) = loop {
        let sas = server.ike_sas().expect("SAs");
        let child_rekeyed = sas
            .iter()
            .flat_map(|sa| sa.installed_children())
            .any(|child| child.unique_id != sa.children[0].unique_id);
        let ike_rekeyed = sas
            .iter()
            .any(|new| new.state == "ESTABLISHED" && new.unique_id != sa.unique_id);
        if (child_rekeyed && ike_rekeyed) || Instant::now() > deadline {
            break (child_rekeyed, ike_rekeyed);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(child_rekeyed, "no CHILD_SA rekey: {}", server.list_sas());
    assert!(ike_rekeyed, "no IKE_SA rekey: {}", server.list_sas());
    let log = server.charon_log();
    assert!(
        log.contains("sending DPD request"),
        "no DPD from the responder"
    );
    assert!(
        log.lines().any(|line| {
            line.contains("generating CREATE_CHILD_SA request") && line.contains("N(REKEY_SA)")
        }),
        "the CHILD_SA was rekeyed (not recreated):\n{log}"
    );
    assert!(
        !log.contains("closing expired CHILD_SA") && !log.contains("maximum IKE_SA lifetime 4s"),
        "an SA expired instead of being rekeyed:\n{log}"
    );
    assert_page(&server, "after the responder's own rekeys");
    step(
        started,
        "the responder rekeyed both SAs and sent DPDs by itself",
    );

    drop(initiator);
    let pcap = std::fs::read(server.stop_capture()).expect("the capture is readable");
    let ports = udp_ports_in_pcap(&pcap);
    let to_500 = ports.iter().filter(|(_, dst)| *dst == 500).count();
    let nat_t = ports
        .iter()
        .filter(|(src, dst)| *src == 4500 || *dst == 4500)
        .count();
    assert!(to_500 >= 1, "IKE_SA_INIT to port 500 captured: {ports:?}");
    assert!(nat_t >= 10, "IKE and ESP on port 4500 captured: {ports:?}");
    step(
        started,
        &format!(
            "capture: {} UDP packets, {to_500} to port 500, {nat_t} on port 4500",
            ports.len()
        ),
    );
}
