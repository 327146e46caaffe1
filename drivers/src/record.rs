//! Session recording (`--record DIR`): everything needed to replay a session in a test.
//!
//! # Layout
//!
//! A recording directory holds:
//! - `seed`: the 32-byte seed the machine was built with (secret: mode 0600);
//! - `config`: the configuration bytes the machine was built from; for the `erebus` command,
//!   the profile exactly as read (mode 0600: it may hold keys);
//! - `settings` (written by the `erebus` command, [`Recorder::create_session`]): what the
//!   command decided before running, as `key=value` lines ([`Settings::to_text`]): the wall
//!   clock's Unix time at the monotonic epoch, the monotonic time the client was built at, the
//!   server's resolved address, the front ends in listener order, the `--dns` servers, whether
//!   proxy authentication was on and whether `--auth-user-pass` was given (never a password),
//!   and the profile's directory for files it names;
//! - `journal`: every input with its `now`, in the order the machine handled them, the
//!   datagrams of a batch handled before one drain marked as held
//!   ([`erebus_sansio::journal`] format);
//! - `transport.pcap`: the outer packets both ways, with synthesised IP/UDP or IP/TCP headers
//!   so Wireshark's OpenVPN and ISAKMP dissectors can read them. Each outbound record is one
//!   `Output::Transmit`, as the machine produced it (over TCP: one stream chunk, already
//!   length-prefixed); each inbound record is one `Transport Data` input. Transmits made while
//!   no transport is open are not in it.
//!
//! # Replay
//!
//! [`crate::replay::replay_dir`] rebuilds the client from `seed`, `config` and `settings` with
//! [`crate::session::build_client`] (the function the command itself uses), feeds the journal
//! to it with a full drain after each input but a held one, as a driver does, and compares every transmit, in
//! order and byte for byte, with the outbound packets of `transport.pcap`. Sessions that used
//! `--auth-user-pass` or `--proxy-auth` need those credentials again
//! ([`crate::replay::ReplayOptions`]): the recording does not keep them. The
//! journal still holds what proxy clients sent, proxy credentials included, and the TLS
//! session's secrets can be derived from the seed: treat a recording as a secret.
//!
//! [`Settings::to_text`]: crate::session::Settings::to_text

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use erebus_sansio::io::{Input, TransportEvent};
use erebus_sansio::journal;
use erebus_sansio::tunnel::TransportKind;
use erebus_sansio::{Instant, Seed, WallClock};

use crate::session::Settings;

/// Receives what a driver feeds to and takes from its machine, in order.
pub trait Tap {
    /// The driver opened a transport socket of `kind` from `local` to `remote`.
    fn transport_opened(&mut self, kind: TransportKind, remote: SocketAddr, local: SocketAddr);
    /// An input, just before the machine handles it.
    fn input(&mut self, input: &Input<'_>);
    /// An input of a batch the machine handles before its next drain: another input follows
    /// before any output is taken. By default recorded as [`Tap::input`].
    fn held_input(&mut self, input: &Input<'_>) {
        self.input(input);
    }
    /// Bytes the machine sent on the transport, at `now`.
    fn transmit(&mut self, now: Instant, bytes: &[u8]);
}

/// The classic pcap file header: little-endian, version 2.4, microsecond timestamps, snap length
/// 65535, link type 101 (raw IP, no link-layer header).
const PCAP_HEADER: [u8; 24] = [
    0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0, 0, 0,
];

/// Writes a recording directory.
pub struct Recorder {
    journal: BufWriter<File>,
    journal_buf: Vec<u8>,
    pcap: BufWriter<File>,
    wall: WallClock,
    link: Option<Link>,
    /// Transmits made before the driver said where the transport goes (the smol driver learns
    /// its TCP socket's local address only once connected), written out when it does.
    early: Vec<(Instant, Vec<u8>)>,
    early_bytes: usize,
    packet: Vec<u8>,
}

/// How much a recorder keeps of transmits made before the transport is known; beyond that they
/// are left out of the pcap (a transport that never opens).
const EARLY_LIMIT: usize = 1 << 20;

/// The synthesised addresses and TCP sequence numbers of the transport in the pcap.
struct Link {
    kind: TransportKind,
    remote: SocketAddr,
    local: SocketAddr,
    seq_out: u32,
    seq_in: u32,
}

fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

impl Recorder {
    /// Creates `dir` (if needed) and starts a recording of a machine built from `seed` and
    /// `config`; `wall` maps the driver's instants to wall time for the pcap timestamps.
    ///
    /// # Errors
    ///
    /// Fails when the directory or a file cannot be created.
    pub fn create(dir: &Path, seed: &Seed, config: &[u8], wall: WallClock) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        create_private(&dir.join("seed"))?.write_all(seed.as_bytes())?;
        create_private(&dir.join("config"))?.write_all(config)?;
        let mut journal = BufWriter::new(create_private(&dir.join("journal"))?);
        journal.write_all(journal::MAGIC)?;
        let mut pcap = BufWriter::new(create_private(&dir.join("transport.pcap"))?);
        pcap.write_all(&PCAP_HEADER)?;
        Ok(Self {
            journal,
            journal_buf: Vec::new(),
            pcap,
            wall,
            link: None,
            early: Vec::new(),
            early_bytes: 0,
            packet: Vec::new(),
        })
    }

    /// [`Recorder::create`] for a session of the `erebus` command: also writes `settings`, and
    /// takes the wall clock from them.
    ///
    /// # Errors
    ///
    /// Fails when the directory or a file cannot be created.
    pub fn create_session(
        dir: &Path,
        seed: &Seed,
        config: &[u8],
        settings: &Settings,
    ) -> io::Result<Self> {
        let recorder = Self::create(dir, seed, config, settings.wall_clock())?;
        create_private(&dir.join("settings"))?.write_all(settings.to_text().as_bytes())?;
        Ok(recorder)
    }

    /// Flushes everything written so far.
    ///
    /// # Errors
    ///
    /// Fails when the disk does.
    pub fn flush(&mut self) -> io::Result<()> {
        self.journal.flush()?;
        self.pcap.flush()
    }

    fn capture(&mut self, now: Instant, outbound: bool, payload: &[u8]) {
        let Some(link) = &mut self.link else { return };
        let (src, dst, seq, ack) = if outbound {
            (link.local, link.remote, link.seq_out, link.seq_in)
        } else {
            (link.remote, link.local, link.seq_in, link.seq_out)
        };
        synthesise(&mut self.packet, link.kind, (src, dst), (seq, ack), payload);
        let advanced = seq.wrapping_add(payload.len() as u32);
        if outbound {
            link.seq_out = advanced;
        } else {
            link.seq_in = advanced;
        }
        let secs = self.wall.at(now).as_secs() as u32;
        let micros = (now.as_micros() % 1_000_000) as u32;
        let len = self.packet.len() as u32;
        let mut record = [0u8; 16];
        record[..4].copy_from_slice(&secs.to_le_bytes());
        record[4..8].copy_from_slice(&micros.to_le_bytes());
        record[8..12].copy_from_slice(&len.to_le_bytes());
        record[12..].copy_from_slice(&len.to_le_bytes());
        let written = self
            .pcap
            .write_all(&record)
            .and_then(|()| self.pcap.write_all(&self.packet));
        if let Err(e) = written {
            tracing::warn!("recording: pcap write failed: {e}");
        }
    }
}

impl Tap for Recorder {
    fn transport_opened(&mut self, kind: TransportKind, remote: SocketAddr, local: SocketAddr) {
        self.link = Some(Link {
            kind,
            remote,
            local,
            seq_out: 1,
            seq_in: 1,
        });
        self.early_bytes = 0;
        for (now, bytes) in std::mem::take(&mut self.early) {
            self.capture(now, true, &bytes);
        }
    }

    fn input(&mut self, input: &Input<'_>) {
        self.record_input(input, false);
    }

    fn held_input(&mut self, input: &Input<'_>) {
        self.record_input(input, true);
    }

    fn transmit(&mut self, now: Instant, bytes: &[u8]) {
        if self.link.is_some() {
            self.capture(now, true, bytes);
        } else if self.early_bytes + bytes.len() <= EARLY_LIMIT {
            self.early_bytes += bytes.len();
            self.early.push((now, bytes.to_vec()));
        } else {
            tracing::warn!("recording: a transmit before any transport opened is left out");
        }
    }
}

impl Recorder {
    /// Writes `input` to the journal (held: no drain follows it) and, for transport data, to
    /// the pcap.
    fn record_input(&mut self, input: &Input<'_>, held: bool) {
        self.journal_buf.clear();
        if held {
            journal::encode_held(input, &mut self.journal_buf);
        } else {
            journal::encode(input, &mut self.journal_buf);
        }
        if let Err(e) = self.journal.write_all(&self.journal_buf) {
            tracing::warn!("recording: journal write failed: {e}");
        }
        if let Input::Transport {
            now,
            event: TransportEvent::Data { bytes, .. },
        } = *input
        {
            self.capture(now, false, bytes);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Builds an IPv4 or IPv6 packet around `payload` with a UDP header, or a TCP header carrying
/// running sequence numbers for stream transports. Checksums are left zero: Wireshark does not
/// verify them by default, and the pcap is for reading, not for replay.
fn synthesise(
    out: &mut Vec<u8>,
    kind: TransportKind,
    (src, dst): (SocketAddr, SocketAddr),
    (seq, ack): (u32, u32),
    payload: &[u8],
) {
    out.clear();
    let l4_len = match kind {
        TransportKind::Udp => 8,
        TransportKind::TcpLengthPrefixed => 20,
    } + payload.len();
    let protocol = match kind {
        TransportKind::Udp => 17u8,
        TransportKind::TcpLengthPrefixed => 6u8,
    };
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + l4_len).min(usize::from(u16::MAX)) as u16;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let sum = erebus_wire::checksum::checksum(out);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        (s, d) => {
            let to_v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(l4_len.min(usize::from(u16::MAX)) as u16).to_be_bytes());
            out.extend_from_slice(&[protocol, 64]);
            out.extend_from_slice(&to_v6(s).octets());
            out.extend_from_slice(&to_v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    match kind {
        TransportKind::Udp => {
            out.extend_from_slice(&(l4_len.min(usize::from(u16::MAX)) as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        TransportKind::TcpLengthPrefixed => {
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&ack.to_be_bytes());
            // Data offset 5 words; flags PSH|ACK; a nominal window; no checksum.
            out.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        }
    }
    out.extend_from_slice(payload);
}

/// One packet of a recording's pcap, its synthesised headers taken off.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Synthesised<'a> {
    /// UDP or TCP.
    pub(crate) kind: TransportKind,
    /// The sender (IPv4 senders of mixed-family links appear IPv4-mapped).
    pub(crate) src: SocketAddr,
    /// The receiver.
    pub(crate) dst: SocketAddr,
    /// The transport payload: a datagram, or a stream chunk.
    pub(crate) payload: &'a [u8],
}

/// Takes apart what [`synthesise`] built. `None` for anything else (another IP version,
/// protocol or header length than the recorder writes, or too short).
pub(crate) fn parse_synthesised(packet: &[u8]) -> Option<Synthesised<'_>> {
    let (protocol, src_ip, dst_ip, l4): (u8, IpAddr, IpAddr, usize) = match packet.first()? >> 4 {
        4 => {
            let header = packet.get(..20)?;
            if header[0] != 0x45 {
                return None;
            }
            let src: [u8; 4] = header[12..16].try_into().ok()?;
            let dst: [u8; 4] = header[16..20].try_into().ok()?;
            (header[9], src.into(), dst.into(), 20)
        }
        6 => {
            let header = packet.get(..40)?;
            let src: [u8; 16] = header[8..24].try_into().ok()?;
            let dst: [u8; 16] = header[24..40].try_into().ok()?;
            (header[6], src.into(), dst.into(), 40)
        }
        _ => return None,
    };
    let (kind, header_len) = match protocol {
        17 => (TransportKind::Udp, 8),
        6 => (TransportKind::TcpLengthPrefixed, 20),
        _ => return None,
    };
    let ports = packet.get(l4..l4 + 4)?;
    let src_port = u16::from_be_bytes([ports[0], ports[1]]);
    let dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    if kind == TransportKind::TcpLengthPrefixed && packet.get(l4 + 12)? >> 4 != 5 {
        return None;
    }
    Some(Synthesised {
        kind,
        src: SocketAddr::new(src_ip, src_port),
        dst: SocketAddr::new(dst_ip, dst_port),
        payload: packet.get(l4 + header_len..)?,
    })
}

/// The packets of a pcap file in the classic format the recorder writes (microsecond,
/// little-endian): each record's bytes, and whether the file ends on a record boundary (a
/// recording cut short, by a crash, may end inside one).
///
/// # Errors
///
/// A header that is not the recorder's.
pub(crate) fn pcap_packets(bytes: &[u8]) -> Result<(Vec<&[u8]>, bool), String> {
    let header = bytes
        .get(..PCAP_HEADER.len())
        .ok_or("shorter than a pcap header")?;
    if header[..4] != PCAP_HEADER[..4] || header[20..] != PCAP_HEADER[20..] {
        return Err(format!(
            "not a little-endian microsecond raw-IP pcap (header {})",
            crate::replay::short_hex(header)
        ));
    }
    let mut packets = Vec::new();
    let mut offset = PCAP_HEADER.len();
    while offset < bytes.len() {
        let Some(record) = bytes.get(offset..offset + 16) else {
            return Ok((packets, false));
        };
        let mut len = [0; 4];
        len.copy_from_slice(&record[8..12]);
        let start = offset + 16;
        let Some(data) = usize::try_from(u32::from_le_bytes(len))
            .ok()
            .and_then(|len| bytes.get(start..start.checked_add(len)?))
        else {
            return Ok((packets, false));
        };
        packets.push(data);
        offset = start + data.len();
    }
    Ok((packets, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesised_packets_come_apart_again() {
        let cases: [(TransportKind, &str, &str); 4] = [
            (TransportKind::Udp, "10.0.0.2:40000", "192.0.2.1:1194"),
            (
                TransportKind::TcpLengthPrefixed,
                "10.0.0.2:40000",
                "192.0.2.1:443",
            ),
            (TransportKind::Udp, "[fd00::2]:40000", "[2001:db8::1]:1194"),
            (TransportKind::TcpLengthPrefixed, "[::]:5", "10.1.1.1:1194"),
        ];
        for (kind, src, dst) in cases {
            let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let mut packet = Vec::new();
            synthesise(&mut packet, kind, (src, dst), (7, 9), b"payload bytes");
            let parsed = parse_synthesised(&packet).unwrap();
            assert_eq!(parsed.kind, kind);
            assert_eq!(parsed.payload, b"payload bytes");
            assert_eq!(parsed.src.port(), src.port());
            assert_eq!(parsed.dst.port(), dst.port());
            if src.is_ipv4() && dst.is_ipv4() {
                assert_eq!((parsed.src, parsed.dst), (src, dst));
            }
            for cut in 0..packet.len() - 13 {
                assert!(parse_synthesised(&packet[..cut]).is_none(), "cut at {cut}");
            }
        }
        assert!(parse_synthesised(&[0x45; 60]).is_none());
    }

    #[test]
    fn recordings_list_their_transmits_even_before_the_transport_is_known() {
        let dir = std::env::temp_dir().join(format!("erebus-record-unit-{}", std::process::id()));
        let remote: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        {
            let mut recorder = Recorder::create(
                &dir,
                &Seed::from_byte(3),
                b"profile",
                WallClock::new(Instant::ZERO, erebus_sansio::UnixTime::from_secs(1)),
            )
            .unwrap();
            recorder.transmit(Instant::from_millis(1), b"first");
            recorder.transport_opened(
                TransportKind::TcpLengthPrefixed,
                remote,
                "10.0.0.2:40000".parse().unwrap(),
            );
            recorder.input(&Input::Transport {
                now: Instant::from_millis(2),
                event: TransportEvent::Data {
                    from: remote,
                    bytes: b"reply",
                },
            });
            recorder.transmit(Instant::from_millis(3), b"second");
        }
        let pcap = std::fs::read(dir.join("transport.pcap")).unwrap();
        let (packets, complete) = pcap_packets(&pcap).unwrap();
        assert!(complete);
        let parsed: Vec<_> = packets
            .iter()
            .map(|p| parse_synthesised(p).unwrap())
            .map(|p| (p.dst == remote, p.payload.to_vec()))
            .collect();
        assert_eq!(
            parsed,
            [
                (true, b"first".to_vec()),
                (false, b"reply".to_vec()),
                (true, b"second".to_vec())
            ]
        );
        let (cut, complete) = pcap_packets(&pcap[..pcap.len() - 2]).unwrap();
        assert_eq!((cut.len(), complete), (2, false));
        assert!(pcap_packets(b"not a pcap file at all, no").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
