//! Session recording (`--record DIR`): everything needed to replay a session in a test.
//!
//! A recording directory holds:
//! - `seed`: the 32-byte seed the machine was built with (secret: mode 0600);
//! - `config`: the configuration bytes the machine was built from (mode 0600: it may hold
//!   keys);
//! - `journal`: every input with its `now` ([`erebus_sansio::journal`] format);
//! - `transport.pcap`: the outer packets both ways, with synthesised IP/UDP or IP/TCP headers
//!   so Wireshark's OpenVPN and ISAKMP dissectors can read them.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use erebus_sansio::io::{Input, TransportEvent};
use erebus_sansio::journal;
use erebus_sansio::tunnel::{TransportKind, TransportSpec};
use erebus_sansio::{Instant, Seed, WallClock};

/// Receives what a driver feeds to and takes from its machine, in order.
pub trait Tap {
    /// The driver opened the transport socket, bound to `local`.
    fn transport_opened(&mut self, spec: TransportSpec, local: SocketAddr);
    /// An input, just before the machine handles it.
    fn input(&mut self, input: &Input<'_>);
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
    packet: Vec<u8>,
}

/// The synthesised addresses and TCP sequence numbers of the transport in the pcap.
struct Link {
    spec: TransportSpec,
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
            packet: Vec::new(),
        })
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
            (link.local, link.spec.remote, link.seq_out, link.seq_in)
        } else {
            (link.spec.remote, link.local, link.seq_in, link.seq_out)
        };
        synthesise(
            &mut self.packet,
            link.spec.kind,
            (src, dst),
            (seq, ack),
            payload,
        );
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
    fn transport_opened(&mut self, spec: TransportSpec, local: SocketAddr) {
        self.link = Some(Link {
            spec,
            local,
            seq_out: 1,
            seq_in: 1,
        });
    }

    fn input(&mut self, input: &Input<'_>) {
        self.journal_buf.clear();
        journal::encode(input, &mut self.journal_buf);
        if let Err(e) = self.journal.write_all(&self.journal_buf) {
            tracing::warn!("recording: journal write failed: {e}");
        }
        if let Input::Transport {
            now,
            event: TransportEvent::Data(bytes),
        } = *input
        {
            self.capture(now, false, bytes);
        }
    }

    fn transmit(&mut self, now: Instant, bytes: &[u8]) {
        self.capture(now, true, bytes);
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
