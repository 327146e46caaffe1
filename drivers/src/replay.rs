//! Replaying a recorded session (`--record DIR`) byte for byte.
//!
//! [`replay_dir`] reads a recording (see [`crate::record`] for the layout), rebuilds the
//! client exactly as the `erebus` command built it ([`crate::session::build_client`], from the
//! recorded seed, profile and settings), and runs it the way a driver does, without a socket
//! or a clock: one drain before the first input, then each journal input in order, each
//! followed by a drain until [`Output::Timeout`] (but a held one: the datagrams of a batch
//! are drained once, after the last). Every [`Output::Transmit`] is compared, in
//! order and byte for byte, with the outbound packets of `transport.pcap`, and every inbound
//! packet of the pcap with the journal's `Transport Data` inputs. The first difference is an
//! error that says where and shows both packets.
//!
//! Because the core is deterministic, a recording that does not replay shows one of three
//! things: a state machine that reads something it was not given (a clock, OS randomness, a
//! hash map's order), a driver that fed an input it did not record, or a client built
//! differently from the recorded one.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use erebus_proxy::ProxyAuth;
use erebus_sansio::io::{Event, Input, TransportEvent};
use erebus_sansio::journal::{JournalError, JournalReader};
use erebus_sansio::tunnel::{Failure, TunnelConfig};
use erebus_sansio::{Driven, Output, Seed};
use zeroize::Zeroizing;

use crate::record::{parse_synthesised, pcap_packets};
use crate::session::{ConfigFile, Settings, SettingsError, SetupError, build_client};

/// The secrets a recording does not keep, for sessions that had them.
#[derive(Default)]
pub struct ReplayOptions {
    /// The `--auth-user-pass` file's bytes (username line, password line), for a session
    /// recorded with that option.
    pub auth_user_pass: Option<Zeroizing<Vec<u8>>>,
    /// The `--proxy-auth` credentials, for a session recorded with that option.
    pub proxy_auth: Option<ProxyAuth>,
}

impl std::fmt::Debug for ReplayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayOptions")
            .field(
                "auth_user_pass",
                &self.auth_user_pass.as_ref().map(|_| "<secret>"),
            )
            .field("proxy_auth", &self.proxy_auth.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// What a replay that matched the recording went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    /// Journal inputs fed to the client.
    pub inputs: usize,
    /// Transmits the client produced, each equal to the recorded packet at the same index
    /// (those past the end of a pcap cut short, see `complete`, had nothing to compare with).
    pub transmits: usize,
    /// The bytes of those transmits.
    pub transmitted_bytes: u64,
    /// Inbound packets of the pcap (over TCP: stream chunks as read), each equal to the
    /// journal's transport data at its index.
    pub received: usize,
    /// The bytes of those inbound packets.
    pub received_bytes: u64,
    /// The configuration of the last [`Event::Connected`], if the tunnel came up.
    pub connected: Option<TunnelConfig>,
    /// Why the client stopped ([`Event::Down`]), if it did within the journal.
    pub down: Option<Failure>,
    /// Whether the journal and the pcap both end on a record boundary. When one was cut short
    /// (the process died before flushing), only the part both cover was compared.
    pub complete: bool,
}

/// Why a recording could not be replayed, or where the replay left it.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file of the recording cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The `seed` file is not 32 bytes.
    #[error("seed: expected 32 bytes, found {0}")]
    Seed(usize),
    /// The `settings` file does not parse.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The session needs a secret the recording does not keep.
    #[error("the session was recorded with {0}: give it in ReplayOptions")]
    SecretNeeded(&'static str),
    /// The client cannot be rebuilt from the recording.
    #[error("rebuilding the client: {0}")]
    Setup(#[from] SetupError),
    /// The journal is damaged (other than cut short at its end).
    #[error("journal: {0}")]
    Journal(JournalError),
    /// The pcap is not the recorder's, or holds a packet it cannot have written.
    #[error("transport.pcap: {0}")]
    Pcap(String),
    /// A transmit differs from the recorded packet at the same index.
    #[error(
        "transmit {index} (drained after journal input {after_input}) differs from the \
         recording at byte {offset}: recorded {} bytes {}, replayed {} bytes {}",
        recorded.len(), short_hex(recorded), replayed.len(), short_hex(replayed)
    )]
    Diverged {
        /// Index of the transmit, from 0.
        index: usize,
        /// How many journal inputs had been fed when it was produced (0: the first drain).
        after_input: usize,
        /// The first byte that differs.
        offset: usize,
        /// The recorded packet.
        recorded: Vec<u8>,
        /// The replayed packet.
        replayed: Vec<u8>,
    },
    /// The replay produced a transmit after the recording's last one.
    #[error(
        "transmit {index} (drained after journal input {after_input}) is not in the \
         recording, which has {index} transmits: {} bytes {}",
        replayed.len(), short_hex(replayed)
    )]
    Extra {
        /// Index of the transmit, from 0.
        index: usize,
        /// How many journal inputs had been fed when it was produced.
        after_input: usize,
        /// The replayed packet.
        replayed: Vec<u8>,
    },
    /// The recording has transmits the replay never produced.
    #[error(
        "the recording has {recorded} transmits, the replay produced {replayed}; the next \
         recorded one: {} bytes {}",
        next.len(), short_hex(next)
    )]
    Missing {
        /// Transmits in the recording.
        recorded: usize,
        /// Transmits replayed.
        replayed: usize,
        /// The first recorded transmit the replay did not produce.
        next: Vec<u8>,
    },
    /// The pcap's inbound packets and the journal's transport data disagree.
    #[error(
        "inbound packet {index}: the pcap has {}, the journal {}",
        describe(pcap.as_deref()), describe(journal.as_deref())
    )]
    Inbound {
        /// Index of the inbound packet, from 0.
        index: usize,
        /// The packet in the pcap, if any.
        pcap: Option<Vec<u8>>,
        /// The data in the journal, if any.
        journal: Option<Vec<u8>>,
    },
}

fn describe(packet: Option<&[u8]>) -> String {
    match packet {
        Some(bytes) => format!("{} bytes {}", bytes.len(), short_hex(bytes)),
        None => "nothing".into(),
    }
}

/// Up to 32 bytes of `bytes` in hex, with an ellipsis when there are more.
pub fn short_hex(bytes: &[u8]) -> String {
    let mut text = String::new();
    for byte in bytes.iter().take(32) {
        let _ = write!(text, "{byte:02x}");
    }
    if bytes.len() > 32 {
        text.push('…');
    }
    text
}

/// Replays the recording in `dir`, which needs no secret beyond its own files.
///
/// # Errors
///
/// See [`replay_dir_with`].
pub fn replay_dir(dir: &Path) -> Result<ReplayReport, ReplayError> {
    replay_dir_with(dir, ReplayOptions::default())
}

/// Replays the recording in `dir` with the secrets it does not keep, and checks every
/// transmit against the recorded packets.
///
/// # Errors
///
/// Unreadable or damaged files, a missing secret, a client that cannot be rebuilt, and the
/// first difference between the replay and the recording.
pub fn replay_dir_with(dir: &Path, options: ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path)
            .map(Zeroizing::new)
            .map_err(|source| ReplayError::Read { path, source })
    };
    let seed_bytes = read("seed")?;
    let seed: [u8; Seed::LEN] = seed_bytes
        .as_slice()
        .try_into()
        .map_err(|_| ReplayError::Seed(seed_bytes.len()))?;
    let seed = Seed::from_bytes(seed);
    let settings_bytes = read("settings")?;
    let settings = Settings::parse(&String::from_utf8_lossy(&settings_bytes))?;
    let mut config = ConfigFile::recorded(
        read("config")?,
        // Files the profile names are found where they were, if they are still there.
        settings.profile_dir.clone().unwrap_or_else(|| dir.into()),
        dir.join("config"),
    );
    config.connection.clone_from(&settings.connection);
    let auth_user_pass = if settings.auth_user_pass {
        Some(
            options
                .auth_user_pass
                .ok_or(ReplayError::SecretNeeded("--auth-user-pass"))?,
        )
    } else {
        None
    };
    if settings.proxy_auth && options.proxy_auth.is_none() {
        return Err(ReplayError::SecretNeeded("--proxy-auth"));
    }
    let plan = config.plan(auth_user_pass, settings.wall_clock())?;
    let mut client = build_client(plan, &settings, &seed, options.proxy_auth)?;

    let journal = read("journal")?;
    let pcap = read("transport.pcap")?;
    let (packets, pcap_complete) = pcap_packets(&pcap).map_err(ReplayError::Pcap)?;
    // The servers the session talked to: every attempt's address is a journal input.
    let servers: Vec<std::net::SocketAddr> = JournalReader::new(&journal)
        .map_err(ReplayError::Journal)?
        .filter_map(Result::ok)
        .filter_map(|input| match input {
            Input::Transport {
                event: TransportEvent::Connected { remote },
                ..
            } => Some(normalise(remote)),
            _ => None,
        })
        .collect();
    let mut outbound = Vec::new();
    let mut inbound = Vec::new();
    for (index, packet) in packets.iter().enumerate() {
        let parsed = parse_synthesised(packet).ok_or_else(|| {
            ReplayError::Pcap(format!(
                "packet {index} is not one the recorder writes: {}",
                short_hex(packet)
            ))
        })?;
        if servers.contains(&normalise(parsed.dst)) {
            outbound.push(parsed.payload);
        } else if servers.contains(&normalise(parsed.src)) {
            inbound.push(parsed.payload);
        } else {
            return Err(ReplayError::Pcap(format!(
                "packet {index} goes from {} to {}, neither of them a server the journal \
                 connected to",
                parsed.src, parsed.dst
            )));
        }
    }

    let mut run = Run {
        recorded: &outbound,
        recorded_complete: pcap_complete,
        buf: vec![0; 65_536],
        report: ReplayReport {
            inputs: 0,
            transmits: 0,
            transmitted_bytes: 0,
            received: 0,
            received_bytes: 0,
            connected: None,
            down: None,
            complete: pcap_complete,
        },
    };
    // A driver drains once before its first input: the client's first packets come from it.
    run.drain(&mut client)?;
    let mut journal_complete = true;
    let mut reader = JournalReader::new(&journal).map_err(ReplayError::Journal)?;
    while let Some(input) = reader.next() {
        let input = match input {
            Ok(input) => input,
            Err(JournalError::Truncated { .. }) => {
                // A process that died mid-write leaves its last record cut short.
                journal_complete = false;
                break;
            }
            Err(error) => return Err(ReplayError::Journal(error)),
        };
        if let Input::Transport {
            event: TransportEvent::Data { bytes, .. },
            ..
        } = input
        {
            let index = run.report.received;
            match inbound.get(index) {
                Some(packet) if *packet == bytes => {
                    run.report.received += 1;
                    run.report.received_bytes += bytes.len() as u64;
                }
                // A pcap cut short may lack the last packets; a complete one may not.
                None if !pcap_complete => {}
                other => {
                    return Err(ReplayError::Inbound {
                        index,
                        pcap: other.map(|p| p.to_vec()),
                        journal: Some(bytes.to_vec()),
                    });
                }
            }
        }
        // A refused input changes nothing; the driver only logged it.
        let _ = client.handle_input(input);
        run.report.inputs += 1;
        // The datagrams of a batch were handled before one drain, after the last of them.
        if !reader.held() {
            run.drain(&mut client)?;
        }
    }
    if journal_complete && run.report.received < inbound.len() {
        return Err(ReplayError::Inbound {
            index: run.report.received,
            pcap: inbound.get(run.report.received).map(|p| p.to_vec()),
            journal: None,
        });
    }
    if journal_complete && run.report.transmits < outbound.len() {
        return Err(ReplayError::Missing {
            recorded: outbound.len(),
            replayed: run.report.transmits,
            next: outbound
                .get(run.report.transmits)
                .map(|p| p.to_vec())
                .unwrap_or_default(),
        });
    }
    run.report.complete = journal_complete && pcap_complete;
    Ok(run.report)
}

/// IPv4-mapped IPv6 addresses as IPv4: the pcap maps the IPv4 side of a mixed-family link.
fn normalise(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr {
        std::net::SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => (v4, v6.port()).into(),
            None => addr,
        },
        v4 => v4,
    }
}

/// The replay in progress: the recorded transmits and what was matched so far.
struct Run<'a> {
    recorded: &'a [&'a [u8]],
    recorded_complete: bool,
    buf: Vec<u8>,
    report: ReplayReport,
}

impl Run<'_> {
    /// Drains the client until [`Output::Timeout`], as a driver does, checking each transmit.
    fn drain(&mut self, client: &mut impl Driven) -> Result<(), ReplayError> {
        loop {
            match client.poll_output(&mut self.buf) {
                Output::Transmit { bytes, .. } => {
                    let index = self.report.transmits;
                    match self.recorded.get(index) {
                        Some(recorded) if *recorded == bytes => {}
                        Some(recorded) => {
                            let offset = recorded
                                .iter()
                                .zip(bytes)
                                .position(|(a, b)| a != b)
                                .unwrap_or(recorded.len().min(bytes.len()));
                            return Err(ReplayError::Diverged {
                                index,
                                after_input: self.report.inputs,
                                offset,
                                recorded: recorded.to_vec(),
                                replayed: bytes.to_vec(),
                            });
                        }
                        // The pcap was cut short: nothing left to compare with.
                        None if !self.recorded_complete => {}
                        None => {
                            return Err(ReplayError::Extra {
                                index,
                                after_input: self.report.inputs,
                                replayed: bytes.to_vec(),
                            });
                        }
                    }
                    self.report.transmits += 1;
                    self.report.transmitted_bytes += bytes.len() as u64;
                }
                Output::Event(Event::Connected(config)) => self.report.connected = Some(config),
                Output::Event(Event::Down(failure)) => self.report.down = Some(failure),
                Output::Event(_) | Output::Local { .. } => {}
                Output::BufferTooSmall { needed } => {
                    let needed = needed.max(self.buf.len() * 2);
                    self.buf.resize(needed, 0);
                }
                Output::Timeout(_) => return Ok(()),
            }
        }
    }
}
