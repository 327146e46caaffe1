//! What the replay tests share: the recording directory erebus (as nobody) writes into, the
//! files of a recording, and the pcap walks that count and tamper with its packets.

#![allow(dead_code)] // Each test binary uses part of it.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use erebus_testvectors::netns::OpenVpnServer;

/// The files `--record DIR` writes.
pub(crate) const RECORDING_FILES: [&str; 5] =
    ["seed", "config", "settings", "journal", "transport.pcap"];

/// The uid of `nobody` and the gid of `nogroup`, the identity the harness runs erebus as.
pub(crate) fn nobody_ids() -> (u32, u32) {
    let field = |file: &str, name: &str, index: usize| -> u32 {
        let text = std::fs::read_to_string(file).unwrap();
        let line = text
            .lines()
            .find(|line| line.split(':').next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {file}"));
        line.split(':').nth(index).unwrap().parse().unwrap()
    };
    (
        field("/etc/passwd", "nobody", 2),
        field("/etc/group", "nogroup", 2),
    )
}

/// A directory only nobody can write (the instance directory is root's), for the recording.
pub(crate) fn recording_dir(server: &OpenVpnServer) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = server.instance_dir().join("recording");
    std::fs::create_dir(&dir).unwrap();
    let (uid, gid) = nobody_ids();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// Copies the recording files (and `extra` names, when `from` has them) into a fresh `to`.
pub(crate) fn copy_recording(from: &Path, to: &Path, extra: &[&str]) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    for name in RECORDING_FILES.iter().chain(extra) {
        let source = from.join(name);
        if source.exists() || RECORDING_FILES.contains(name) {
            std::fs::copy(&source, to.join(name))
                .unwrap_or_else(|e| panic!("copying {}: {e}", source.display()));
        }
    }
}

/// One record of the recorder's pcap: where its IPv4 packet starts and ends, and whether it
/// went to `remote`.
struct PcapRecord {
    packet: std::ops::Range<usize>,
    outbound: bool,
}

/// The records of a recorder's pcap (16-byte record headers with the captured length at
/// 8..12, then an IPv4 packet whose destination address (16..20) says which way it went).
fn pcap_records(pcap: &[u8], remote: SocketAddrV4) -> Vec<PcapRecord> {
    let mut records = Vec::new();
    let mut offset = 24;
    while offset + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[offset + 8..offset + 12].try_into().unwrap()) as usize;
        let packet = offset + 16..offset + 16 + len;
        let bytes = &pcap[packet.clone()];
        // By address only: an IPsec session talks to ports 500 and 4500 of the same server.
        let outbound = bytes[16..20] == remote.ip().octets();
        records.push(PcapRecord { packet, outbound });
        offset += 16 + len;
    }
    records
}

/// The server of a recording: where its first packet went (a client always speaks first).
/// IPv4 only, as the rest of this module.
pub(crate) fn recorded_server(pcap: &[u8]) -> SocketAddrV4 {
    let packet = &pcap[24 + 16..];
    assert_eq!(packet[0] >> 4, 4, "the first packet is not IPv4");
    let ip: [u8; 4] = packet[16..20].try_into().unwrap();
    SocketAddrV4::new(ip.into(), u16::from_be_bytes([packet[22], packet[23]]))
}

/// How many packets of the pcap went to `remote` and how many came from it.
pub(crate) fn count_packets(pcap: &[u8], remote: SocketAddrV4) -> (usize, usize) {
    let records = pcap_records(pcap, remote);
    let outbound = records.iter().filter(|record| record.outbound).count();
    (outbound, records.len() - outbound)
}

/// The payloads of the pcap's packets to `remote` (`true`) or from it (`false`).
pub(crate) fn payloads(pcap: &[u8], remote: SocketAddrV4, outbound: bool) -> Vec<&[u8]> {
    pcap_records(pcap, remote)
        .into_iter()
        .filter(|record| record.outbound == outbound)
        .map(|record| {
            let packet = &pcap[record.packet];
            let header = if packet[9] == 17 { 28 } else { 40 };
            &packet[header..]
        })
        .collect()
}

/// A copy of the recording `dir` in `copy` with the last byte of outbound packet `target`
/// flipped; returns that packet's payload length. `extra` files are copied too.
pub(crate) fn tampered_copy(
    dir: &Path,
    copy: &Path,
    extra: &[&str],
    remote: SocketAddrV4,
    target: usize,
) -> usize {
    copy_recording(dir, copy, extra);
    let mut pcap = std::fs::read(copy.join("transport.pcap")).unwrap();
    let record = pcap_records(&pcap, remote)
        .into_iter()
        .filter(|record| record.outbound)
        .nth(target)
        .expect("the pcap has enough outbound packets");
    let packet = &pcap[record.packet.clone()];
    // IPv4 (20) and UDP (8) or TCP (20) headers before the payload.
    let header = if packet[9] == 17 { 28 } else { 40 };
    let payload_len = packet.len() - header;
    pcap[record.packet.end - 1] ^= 0x01;
    std::fs::write(copy.join("transport.pcap"), pcap).unwrap();
    payload_len
}
