//! Drivers for machines in the server role ([`ServeDriven`]): the part that does not depend on
//! the runtime ([`ServePump`]), and the mio event loop around it ([`MioServeDriver`]).
//!
//! A server machine listens on one socket ([`ServeDriven::listen`]), talks to many clients
//! through it, and asks the driver for ordinary host sockets towards the destinations of the
//! flows its clients send ([`ServeOutput::OpenFlow`]). A runtime supplies a [`ServeIo`]: those
//! sockets, and nothing else. It tells the pump what happened ([`ServePump::datagram`],
//! [`ServePump::peer_data`], [`ServePump::flow_connected`], ...) and the pump stamps it with
//! the [`Clock`], feeds it to the machine, drains the machine to its deadline and turns every
//! [`ServeOutput`] into a call on the `ServeIo`. The blocking requests (name resolution,
//! credential checks) run on small bounded pools of threads the pump owns; the runtime only
//! gives it a function that wakes its loop, and calls [`ServePump::take_answers`] when woken.
//!
//! # Writes
//!
//! Flows and the clients' streams (*peers*) keep, in order, what their socket does not take at
//! once, like the client role's local connections. A flow is reported
//! [`LocalEvent::WriteBlocked`] when more than [`LOCAL_WRITE_HIGH_WATER`] bytes wait behind its
//! socket after a drain, and [`LocalEvent::Writable`] once the runtime says all of them were
//! written ([`ServePump::flow_flushed`]). A peer has no such events: a client that reads
//! nothing while more than [`PEER_WRITE_LIMIT`] bytes wait for it is dropped and reported
//! [`PeerEvent::Closed`].
//!
//! # Stopping
//!
//! [`ServePump::stop`] feeds [`ServeInput::Close`] once; the machine tells its clients and
//! reports [`ServeEvent::Stopped`] ([`ServePump::is_stopped`]). A runtime keeps serving until
//! then, for at most [`STOP_GRACE`].

mod mio;
mod workers;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use erebus_sansio::Instant;
use erebus_sansio::io::{ConnId, LocalAction, LocalEvent, TransportError};
use erebus_sansio::serve::{
    FlowEvent, FlowId, FlowKind, PeerEvent, ServeDriven, ServeEvent, ServeInput, ServeOutput,
};
use zeroize::Zeroizing;

pub use self::mio::{MioServeDriver, ServeStopHandle};
use self::workers::{Answer, Wake, Workers};
use crate::clock::Clock;
pub use crate::pump::LOCAL_WRITE_HIGH_WATER;

/// Bytes that may wait behind a client's stream before the client is dropped.
pub const PEER_WRITE_LIMIT: usize = 4 * 1024 * 1024;
/// How long a server may take to stop after [`ServeInput::Close`] before its driver returns
/// anyway.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a TCP flow may take to connect before it fails with
/// [`TransportError::TimedOut`].
pub const FLOW_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closed stream may take to receive what was written to it before it is dropped
/// anyway.
pub const CLOSE_LINGER: Duration = Duration::from_secs(10);
/// Names resolved at the same time; further queries wait their turn.
pub const RESOLVER_THREADS: usize = 4;
/// Credential checks run at the same time; further requests wait their turn.
pub const CHECKER_THREADS: usize = 2;

/// Checks a username and password (for example by running a configured command); `true`
/// accepts them. It runs on a worker thread, never on the event loop, and must not log the
/// password.
pub type CredentialsChecker = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// The sockets of one runtime, as the [`ServePump`] drives them. Calls about streams or flows
/// the runtime no longer has are ignored.
///
/// What happens to a socket later (a flow connects or fails, a write fails, kept bytes are
/// flushed) is reported to the pump once the call has returned, never from inside it.
pub trait ServeIo {
    /// Sends a datagram from the listening UDP socket; one the socket refuses is dropped.
    fn send_datagram(&mut self, to: SocketAddr, bytes: &[u8]);

    /// Writes to a client's stream, keeping in order what the socket does not take now, and
    /// returns how many bytes now wait behind it.
    fn write_peer(&mut self, conn: ConnId, bytes: &[u8]) -> usize;

    /// Stops (`true`) or resumes (`false`) reading a client's stream.
    fn pause_peer(&mut self, conn: ConnId, paused: bool);

    /// Closes a client stream's sending side once everything kept is written.
    fn shutdown_peer(&mut self, conn: ConnId);

    /// Reads nothing more from a client's stream, writes what is kept (for at most
    /// [`CLOSE_LINGER`]), then closes it.
    fn close_peer(&mut self, conn: ConnId);

    /// Drops a client's stream now, with whatever is kept.
    fn drop_peer(&mut self, conn: ConnId);

    /// Opens a host socket for `flow` towards `to`, and reports it connected or failed.
    fn open_flow(&mut self, flow: FlowId, kind: FlowKind, to: SocketAddr);

    /// Writes to a flow: over TCP, keeps in order what the socket does not take now, and
    /// returns how many bytes now wait; over UDP, sends one datagram (dropped if refused) and
    /// returns 0.
    fn write_flow(&mut self, flow: FlowId, bytes: &[u8]) -> usize;

    /// Stops (`true`) or resumes (`false`) reading a flow's socket.
    fn pause_flow(&mut self, flow: FlowId, paused: bool);

    /// Closes a TCP flow's sending side once everything kept is written.
    fn shutdown_flow(&mut self, flow: FlowId);

    /// Reads nothing more from a flow, writes what is kept (for at most [`CLOSE_LINGER`]),
    /// then closes it.
    fn close_flow(&mut self, flow: FlowId);
}

/// An input owed to the machine once the current drain ends.
enum Owed {
    FlowBlocked(FlowId),
    PeerDropped(ConnId),
}

/// Feeds and drains one [`ServeDriven`] machine for a runtime. See the [module
/// documentation](self).
pub struct ServePump<M> {
    machine: M,
    clock: Clock,
    out_buf: Vec<u8>,
    deadline: Option<Instant>,
    /// Flows told [`LocalEvent::WriteBlocked`] and not yet [`LocalEvent::Writable`].
    blocked: BTreeSet<FlowId>,
    owed: VecDeque<Owed>,
    on_event: Box<dyn FnMut(&ServeEvent) + Send>,
    checker: Option<CredentialsChecker>,
    resolvers: Workers,
    checkers: Workers,
    answers: mpsc::Receiver<Answer>,
    answers_tx: mpsc::Sender<Answer>,
    wake: Wake,
    stop_sent: bool,
    stopped: bool,
}

impl<M: ServeDriven> ServePump<M> {
    /// A pump for `machine`, reading `clock`. `wake` wakes the runtime's loop (from any
    /// thread) when an answer to a blocking request is ready for
    /// [`take_answers`](Self::take_answers).
    pub fn new(machine: M, clock: Clock, wake: impl Fn() + Send + Sync + 'static) -> Self {
        let wake: Wake = Arc::new(wake);
        let (answers_tx, answers) = mpsc::channel();
        Self {
            machine,
            clock,
            out_buf: vec![0; 65_536],
            deadline: None,
            blocked: BTreeSet::new(),
            owed: VecDeque::new(),
            on_event: Box::new(|_| {}),
            checker: None,
            resolvers: Workers::new(
                "erebus-resolve",
                RESOLVER_THREADS,
                answers_tx.clone(),
                wake.clone(),
            ),
            checkers: Workers::new(
                "erebus-auth",
                CHECKER_THREADS,
                answers_tx.clone(),
                wake.clone(),
            ),
            answers,
            answers_tx,
            wake,
            stop_sent: false,
            stopped: false,
        }
    }

    /// The machine.
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The clock inputs are stamped with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Calls `on_event` for every [`ServeEvent`] the machine reports.
    pub fn on_event(&mut self, on_event: impl FnMut(&ServeEvent) + Send + 'static) {
        self.on_event = Box::new(on_event);
    }

    /// Answers [`ServeOutput::CheckCredentials`] with `checker`, on a worker thread. Without
    /// one, every check is refused.
    pub fn set_credentials_checker(&mut self, checker: CredentialsChecker) {
        self.checker = Some(checker);
    }

    /// The deadline of the last drain.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the machine reported [`ServeEvent::Stopped`].
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.stop_sent
    }

    /// The first drain, before any input.
    pub fn start(&mut self, io: &mut impl ServeIo) {
        self.drain(io);
    }

    /// Feeds [`ServeInput::Timeout`] when the deadline has passed, by the clock (never trust
    /// a timer to have fired on time).
    pub fn check_deadline(&mut self, io: &mut impl ServeIo) {
        let now = self.clock.now();
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            self.feed(io, ServeInput::Timeout { now });
        }
    }

    /// Asks the machine to stop gracefully (once).
    pub fn stop(&mut self, io: &mut impl ServeIo) {
        if !self.stop_sent {
            self.stop_sent = true;
            let now = self.clock.now();
            self.feed(io, ServeInput::Close { now });
        }
    }

    /// A datagram arrived on the listening UDP socket.
    pub fn datagram(&mut self, io: &mut impl ServeIo, from: SocketAddr, bytes: &[u8]) {
        let now = self.clock.now();
        self.feed(io, ServeInput::Datagram { now, from, bytes });
    }

    /// The TCP listener accepted a client's stream from `from`; `conn` is a number the runtime
    /// chose, unique while the stream lives.
    pub fn peer_accepted(&mut self, io: &mut impl ServeIo, conn: ConnId, from: SocketAddr) {
        self.peer(io, conn, PeerEvent::Accepted { from });
    }

    /// Bytes from a client's stream.
    pub fn peer_data(&mut self, io: &mut impl ServeIo, conn: ConnId, bytes: &[u8]) {
        self.peer(io, conn, PeerEvent::Data(bytes));
    }

    /// A client's stream ended or failed; the runtime closes it.
    pub fn peer_closed(&mut self, io: &mut impl ServeIo, conn: ConnId) {
        self.peer(io, conn, PeerEvent::Closed);
    }

    /// A flow's socket is open.
    pub fn flow_connected(&mut self, io: &mut impl ServeIo, flow: FlowId) {
        self.flow(io, flow, FlowEvent::Connected);
    }

    /// A flow's socket could not be opened; the runtime has dropped it.
    pub fn flow_failed(&mut self, io: &mut impl ServeIo, flow: FlowId, error: TransportError) {
        tracing::debug!(flow = flow.0, "flow failed: {error}");
        self.blocked.remove(&flow);
        self.flow(io, flow, FlowEvent::Failed(error));
    }

    /// Bytes (one datagram over UDP) from a flow's socket.
    pub fn flow_data(&mut self, io: &mut impl ServeIo, flow: FlowId, bytes: &[u8]) {
        self.flow(io, flow, FlowEvent::Socket(LocalEvent::Data(bytes)));
    }

    /// A TCP flow's destination closed its sending side.
    pub fn flow_eof(&mut self, io: &mut impl ServeIo, flow: FlowId) {
        self.flow(io, flow, FlowEvent::Socket(LocalEvent::ReadClosed));
    }

    /// A flow's socket failed or was reset; the runtime has dropped it.
    pub fn flow_reset(&mut self, io: &mut impl ServeIo, flow: FlowId) {
        self.blocked.remove(&flow);
        self.flow(io, flow, FlowEvent::Socket(LocalEvent::Reset));
    }

    /// Everything kept for a flow was written.
    pub fn flow_flushed(&mut self, io: &mut impl ServeIo, flow: FlowId) {
        if self.blocked.remove(&flow) {
            self.flow(io, flow, FlowEvent::Socket(LocalEvent::Writable));
        }
    }

    /// Feeds the answers of the blocking requests that are ready.
    pub fn take_answers(&mut self, io: &mut impl ServeIo) {
        while let Ok(answer) = self.answers.try_recv() {
            let now = self.clock.now();
            match answer {
                Answer::Resolved { query, addrs } => {
                    let input = ServeInput::Resolved {
                        now,
                        query,
                        addrs: &addrs,
                    };
                    self.feed(io, input);
                }
                Answer::Checked { request, accepted } => {
                    let input = ServeInput::CredentialsChecked {
                        now,
                        request,
                        accepted,
                    };
                    self.feed(io, input);
                }
            }
        }
    }

    fn peer(&mut self, io: &mut impl ServeIo, conn: ConnId, event: PeerEvent<'_>) {
        let now = self.clock.now();
        self.feed(io, ServeInput::Peer { now, conn, event });
    }

    fn flow(&mut self, io: &mut impl ServeIo, flow: FlowId, event: FlowEvent<'_>) {
        let now = self.clock.now();
        self.feed(io, ServeInput::Flow { now, flow, event });
    }

    /// Applies one input, then drains the machine (the sans-IO rule).
    fn feed(&mut self, io: &mut impl ServeIo, input: ServeInput<'_>) {
        self.machine.handle_input(input);
        self.drain(io);
    }

    fn drain(&mut self, io: &mut impl ServeIo) {
        loop {
            self.deadline = loop {
                match self.machine.poll_output(&mut self.out_buf) {
                    ServeOutput::Datagram { to, bytes } => io.send_datagram(to, bytes),
                    ServeOutput::Peer { conn, action } => match action {
                        LocalAction::Write(bytes) => {
                            let waiting = io.write_peer(conn, bytes);
                            if waiting > PEER_WRITE_LIMIT {
                                tracing::debug!(
                                    conn = conn.0,
                                    waiting,
                                    "a client reads too slowly; dropped"
                                );
                                io.drop_peer(conn);
                                self.owed.push_back(Owed::PeerDropped(conn));
                            }
                        }
                        LocalAction::PauseReading => io.pause_peer(conn, true),
                        LocalAction::ResumeReading => io.pause_peer(conn, false),
                        LocalAction::Shutdown => io.shutdown_peer(conn),
                        LocalAction::Close => io.close_peer(conn),
                    },
                    ServeOutput::OpenFlow { flow, kind, to } => {
                        self.blocked.remove(&flow);
                        io.open_flow(flow, kind, to);
                    }
                    ServeOutput::Flow { flow, action } => match action {
                        LocalAction::Write(bytes) => {
                            let waiting = io.write_flow(flow, bytes);
                            if waiting > LOCAL_WRITE_HIGH_WATER && self.blocked.insert(flow) {
                                self.owed.push_back(Owed::FlowBlocked(flow));
                            }
                        }
                        LocalAction::PauseReading => io.pause_flow(flow, true),
                        LocalAction::ResumeReading => io.pause_flow(flow, false),
                        LocalAction::Shutdown => io.shutdown_flow(flow),
                        LocalAction::Close => {
                            self.blocked.remove(&flow);
                            io.close_flow(flow);
                        }
                    },
                    ServeOutput::Resolve { query, name } => {
                        let name = name.to_owned();
                        self.resolvers.run(
                            Answer::Resolved {
                                query,
                                addrs: Vec::new(),
                            },
                            move || Answer::Resolved {
                                query,
                                addrs: workers::resolve_name(&name),
                            },
                        );
                    }
                    ServeOutput::CheckCredentials {
                        request,
                        username,
                        password,
                    } => {
                        let refused = Answer::Checked {
                            request,
                            accepted: false,
                        };
                        let Some(checker) = self.checker.clone() else {
                            tracing::warn!(
                                user = username,
                                "no credentials checker is configured; login refused"
                            );
                            if self.answers_tx.send(refused).is_ok() {
                                (self.wake)();
                            }
                            continue;
                        };
                        let username = username.to_owned();
                        let password = Zeroizing::new(password.to_owned());
                        self.checkers.run(refused, move || Answer::Checked {
                            request,
                            accepted: checker(&username, &password),
                        });
                    }
                    ServeOutput::Event(event) => {
                        if matches!(event, ServeEvent::Stopped) {
                            self.stopped = true;
                        }
                        (self.on_event)(&event);
                    }
                    ServeOutput::BufferTooSmall { needed } => {
                        let needed = needed.max(self.out_buf.len() * 2);
                        self.out_buf.resize(needed, 0);
                    }
                    ServeOutput::Timeout(deadline) => break deadline,
                }
            };
            // What the drain's actions owe the machine is fed now, one input each, each
            // drained.
            let Some(owed) = self.owed.pop_front() else {
                return;
            };
            let now = self.clock.now();
            let input = match owed {
                Owed::FlowBlocked(flow) => ServeInput::Flow {
                    now,
                    flow,
                    event: FlowEvent::Socket(LocalEvent::WriteBlocked),
                },
                Owed::PeerDropped(conn) => ServeInput::Peer {
                    now,
                    conn,
                    event: PeerEvent::Closed,
                },
            };
            self.machine.handle_input(input);
        }
    }
}

/// Runs an `auth-user-pass-verify` command as OpenVPN does and returns whether it accepted
/// the credentials (exit status 0). `via_file`: the username and password go on two lines
/// of a private temporary file whose path is the last argument, removed afterwards;
/// otherwise they are in the `username` and `password` environment variables. Either way
/// `username` and `script_type=user-pass-verify` are in the environment. Runs on a worker
/// thread; a command that cannot be started refuses.
pub fn run_auth_command(argv: &[String], via_file: bool, username: &str, password: &str) -> bool {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);

    let Some((program, args)) = argv.split_first() else {
        return false;
    };
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .env("username", username)
        .env("script_type", "user-pass-verify")
        .stdin(std::process::Stdio::null());
    let mut file = None;
    if via_file {
        let path = std::env::temp_dir().join(format!(
            "erebus-auth-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{username}\n{password}\n").as_bytes()));
        if written.is_err() {
            let _ = std::fs::remove_file(&path);
            tracing::warn!(path = %path.display(), "cannot write the credentials file for auth-user-pass-verify");
            return false;
        }
        command.arg(&path);
        file = Some(path);
    } else {
        command.env("password", password);
    }
    let status = command.status();
    if let Some(path) = file {
        let _ = std::fs::remove_file(path);
    }
    match status {
        Ok(status) => status.success(),
        Err(error) => {
            tracing::warn!(program, %error, "cannot run the auth-user-pass-verify command");
            false
        }
    }
}
