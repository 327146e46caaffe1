//! A network namespace with one TUN device: the kernel's own IP stack on one side, whatever
//! attaches to the device (erebus's user-space stack) on the other.
//!
//! ```text
//!  netns ebtun<pid>n<counter>
//!  kernel: etun0 10.77.0.1/24, up  <== TUN (IFF_TUN | IFF_NO_PI) ==>  erebus Stack 10.77.0.2
//! ```
//!
//! [`TunNamespace::create`] makes a fresh namespace for every instance (loopback up, IPv6 off
//! so the kernel sends no router solicitations down the device), creates the persistent TUN
//! device with `ip tuntap add` and gives the kernel its address. Code runs inside it on
//! threads that entered it with `setns` ([`TunNamespace::spawn`]): sockets they create, and
//! the TUN device they attach to, belong to the namespace. Nothing touches the host's.
//!
//! Dropping it kills any process still inside (by PID; never this process) and deletes the
//! namespace, which destroys the device. A thread still inside, or a socket or TUN descriptor
//! made there, keeps the namespace alive until it ends: join the threads and drop their
//! descriptors first. The names carry the PID of the test process, so the next
//! [`TunNamespace::create`] in any process removes what a killed process left behind.
//!
//! [`TunNamespace::start_dnsmasq`] runs a DNS server on the kernel's side of the device, for
//! the stack's UDP and resolver.
//!
//! Needs root; interop tests start with [`crate::netns::should_run_interop`].

use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use erebus_sansio::TunnelConfig;
use erebus_sansio::tunnel::IpNet;

use crate::netns::{HarnessError, find_program};

/// The kernel's address on the TUN device.
pub const KERNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The address of the stack attached to the device.
pub const STACK_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// Prefix length of the TUN network.
pub const PREFIX_LEN: u8 = 24;
/// Name of the TUN device inside the namespace.
pub const TUN_NAME: &str = "etun0";
/// MTU of the device (the kernel's default for TUN) and of the stack.
pub const TUN_MTU: u16 = 1500;
/// Prefix of the namespaces made here: `ebtun<pid>n<counter>`.
pub const NAME_PREFIX: &str = "ebtun";

/// `ip netns add/del` race on the first mount of /run/netns; one at a time per process.
static NETNS_LOCK: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// The tunnel configuration the stack gets: [`STACK_ADDR`] in the /24, MTU [`TUN_MTU`].
pub fn stack_tunnel_config() -> TunnelConfig {
    TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(STACK_ADDR), PREFIX_LEN),
        mtu: TUN_MTU,
        ..TunnelConfig::default()
    }
}

/// A namespace with a TUN device, deleted on drop.
pub struct TunNamespace {
    name: String,
    ip: PathBuf,
    kill: PathBuf,
    /// Whether `ip netns add` succeeded, so `Drop` has something to delete.
    created: bool,
}

impl fmt::Debug for TunNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn missing(program: &str) -> HarnessError {
    HarnessError::Unsupported(format!("  - `{program}` not found"))
}

fn run_checked(command: &mut Command) -> Result<String, HarnessError> {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Io {
            context: format!("running `{line}`"),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(HarnessError::Command {
            command: line,
            status: out.status.to_string(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        })
    }
}

impl TunNamespace {
    /// Creates the namespace and its TUN device ([`TUN_NAME`], [`KERNEL_ADDR`]/[`PREFIX_LEN`],
    /// up, nobody attached yet). On error, whatever was created is removed again.
    pub fn create() -> Result<Self, HarnessError> {
        crate::netns::require_netns().map_err(HarnessError::Unsupported)?;
        let ip = find_program("ip").ok_or_else(|| missing("ip"))?;
        let kill = find_program("kill").ok_or_else(|| missing("kill"))?;
        let sysctl = find_program("sysctl").ok_or_else(|| missing("sysctl"))?;
        SWEEP.call_once(|| sweep_leftovers(&ip, &kill));

        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut namespace = Self {
            name: format!("{NAME_PREFIX}{}n{counter}", std::process::id()),
            ip,
            kill,
            created: false,
        };
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            run_checked(namespace.ip().args(["netns", "add", &namespace.name]))?;
        }
        namespace.created = true;
        // IPv4 only; done before the device exists so it never gets an IPv6 address.
        run_checked(namespace.exec(&sysctl).args([
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]))?;
        let name = namespace.name.clone();
        let cidr = format!("{KERNEL_ADDR}/{PREFIX_LEN}");
        let mtu = TUN_MTU.to_string();
        for args in [
            &["link", "set", "lo", "up"][..],
            &["tuntap", "add", "dev", TUN_NAME, "mode", "tun"],
            &["link", "set", TUN_NAME, "mtu", &mtu],
            &["addr", "add", &cidr, "dev", TUN_NAME],
            &["link", "set", TUN_NAME, "up"],
        ] {
            run_checked(namespace.ip().args(["-n", &name]).args(args))?;
        }
        Ok(namespace)
    }

    fn ip(&self) -> Command {
        let mut command = Command::new(&self.ip);
        command.stdin(Stdio::null());
        command
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: impl AsRef<Path>) -> Command {
        let mut command = self.ip();
        command
            .args(["netns", "exec", &self.name])
            .arg(program.as_ref());
        command
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, for `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Moves the calling thread into the namespace, for good: sockets and TUN devices it
    /// opens afterwards belong there. Use it only on threads made for that
    /// ([`spawn`](Self::spawn) does).
    ///
    /// # Errors
    ///
    /// When the namespace file cannot be opened or `setns` fails.
    pub fn enter_current_thread(&self) -> Result<(), HarnessError> {
        enter(&self.path())
    }

    /// Runs `work` on a new thread inside the namespace. The thread's result is `Err` when it
    /// could not enter the namespace.
    ///
    /// # Errors
    ///
    /// When the thread cannot be spawned.
    pub fn spawn<T, F>(
        &self,
        what: &str,
        work: F,
    ) -> Result<JoinHandle<Result<T, HarnessError>>, HarnessError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let path = self.path();
        std::thread::Builder::new()
            .name(what.to_owned())
            .spawn(move || {
                enter(&path)?;
                Ok(work())
            })
            .map_err(|source| HarnessError::Io {
                context: format!("spawning thread {what}"),
                source,
            })
    }

    /// `ip -s -s link show` of the TUN device: the kernel's packet and drop counters for it.
    pub fn tun_link_stats(&self) -> String {
        run_checked(
            self.ip()
                .args(["-n", &self.name, "-s", "-s", "link", "show", TUN_NAME]),
        )
        .unwrap_or_else(|error| error.to_string())
    }

    /// Waits until something is attached to the TUN device and the kernel has activated it
    /// ([`wait_for_carrier`]).
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotReady`] when that does not happen within `timeout`.
    pub fn wait_for_carrier(&self, timeout: Duration) -> Result<(), HarnessError> {
        wait_for_carrier(&self.name, timeout)
    }

    /// Whether a namespace of this name is listed by `ip netns list`.
    pub fn exists(&self) -> bool {
        namespace_names(&self.ip).contains(&self.name)
    }

    /// Starts dnsmasq in the namespace, bound to [`KERNEL_ADDR`]`:53` only, and waits until
    /// it has started. It answers every name under `domain` (and `domain` itself) with
    /// `answer`, says that any other name under `local_zone` does not exist (NXDOMAIN), and
    /// refuses the rest: it has no upstream server, no configuration file and no hosts file.
    /// Every query is logged ([`TunDnsmasq::log`]).
    ///
    /// # Errors
    ///
    /// When dnsmasq is missing, cannot be started, exits, or does not start within `timeout`.
    pub fn start_dnsmasq(
        &self,
        domain: &str,
        answer: Ipv4Addr,
        local_zone: &str,
        timeout: Duration,
    ) -> Result<TunDnsmasq, HarnessError> {
        let dnsmasq = find_program("dnsmasq").ok_or_else(|| missing("dnsmasq"))?;
        let dir = std::env::temp_dir().join(format!("{}-dnsmasq", self.name));
        let io_error = |context: String| {
            move |source| HarnessError::Io {
                context: context.clone(),
                source,
            }
        };
        fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        let log = dir.join("dnsmasq.log");
        let output =
            fs::File::create(&log).map_err(io_error(format!("creating {}", log.display())))?;
        let mut command = self.ip();
        command.args(["netns", "exec", &self.name]);
        // With setpriv, dnsmasq dies with the thread that started it even when the test
        // process is killed; `ip netns exec` and setpriv both exec, so the child's PID is
        // dnsmasq's own.
        if let Some(setpriv) = find_program("setpriv") {
            command.arg(setpriv).args(["--pdeathsig", "KILL", "--"]);
        }
        command
            .arg(&dnsmasq)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--port=53",
                "--user=root",
                "--group=root",
                "--log-queries",
                // To stderr, which is the log file.
                "--log-facility=-",
            ])
            .arg(format!("--listen-address={KERNEL_ADDR}"))
            .arg(format!("--address=/{domain}/{answer}"))
            .arg(format!("--local=/{local_zone}/"))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .stdout(Stdio::null())
            .stderr(output);
        let child = command
            .spawn()
            .map_err(io_error(format!("starting {}", dnsmasq.display())))?;
        let mut server = TunDnsmasq { child, log, dir };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(HarnessError::Exited {
                    what: "dnsmasq".into(),
                    status: status.to_string(),
                    detail: server.log(),
                });
            }
            if server.log().contains("started, version") {
                return Ok(server);
            }
            if std::time::Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    what: format!("dnsmasq in {}", self.name),
                    waited: timeout,
                    detail: server.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// dnsmasq running in a [`TunNamespace`] ([`TunNamespace::start_dnsmasq`]). Dropping it kills
/// it, by the PID of the child (which cannot be reused before it is reaped), and removes its
/// directory. Drop it before the namespace.
#[derive(Debug)]
pub struct TunDnsmasq {
    child: Child,
    log: PathBuf,
    dir: PathBuf,
}

impl TunDnsmasq {
    /// The address it answers on.
    pub const ADDRESS: Ipv4Addr = KERNEL_ADDR;

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far: startup, then one `query[A] <name> from <address>` line
    /// and one answer line per query.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|error| format!("(cannot read {}: {error})", self.log.display()))
    }
}

impl Drop for TunDnsmasq {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for TunNamespace {
    fn drop(&mut self) {
        if self.created {
            for problem in delete_namespace(&self.ip, &self.kill, &self.name) {
                eprintln!("tun namespace: {problem}");
            }
        }
    }
}

/// Waits until the TUN device of `namespace` has a carrier and its operational state is up,
/// polling `ip link show` every 5 ms. Usable from any thread, inside the namespace or not.
///
/// Attaching to a TUN device turns its carrier on at once, but the kernel activates the
/// device's queue only later, from its link-watch work: a packet the kernel sends down the
/// device before that is dropped. Wait for this after attaching and before the kernel sends
/// anything that must not be lost (a datagram, a SYN-ACK the test would otherwise wait a
/// second for).
///
/// # Errors
///
/// [`HarnessError::NotReady`] when that does not happen within `timeout`.
pub fn wait_for_carrier(namespace: &str, timeout: Duration) -> Result<(), HarnessError> {
    let ip = find_program("ip").ok_or_else(|| missing("ip"))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let shown =
            run_checked(Command::new(&ip).args(["-n", namespace, "-o", "link", "show", TUN_NAME]))?;
        if link_is_running(&shown) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(HarnessError::NotReady {
                what: format!("the carrier of {TUN_NAME} in {namespace}"),
                waited: timeout,
                detail: shown,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether one line of `ip -o link show` says the link is up with a carrier.
fn link_is_running(line: &str) -> bool {
    let flags = line
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(flags, _)| flags);
    let has_flag = |name: &str| flags.is_some_and(|flags| flags.split(',').any(|f| f == name));
    has_flag("UP") && has_flag("LOWER_UP") && !has_flag("NO-CARRIER") && line.contains(" state UP ")
}

fn enter(path: &Path) -> Result<(), HarnessError> {
    let file = fs::File::open(path).map_err(|source| HarnessError::Io {
        context: format!("opening {}", path.display()),
        source,
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
        HarnessError::Io {
            context: format!("setns into {}", path.display()),
            source: errno.into(),
        }
    })
}

fn namespace_names(ip: &Path) -> Vec<String> {
    let listed = Command::new(ip)
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = listed else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Kills the processes still in `namespace` (never this one: its threads that entered the
/// namespace are not listed, as `ip netns pids` looks at each process's main thread), then
/// deletes it. Returns what went wrong; never panics.
fn delete_namespace(ip: &Path, kill: &Path, namespace: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let own_pid = std::process::id().to_string();
    let pids = Command::new(ip)
        .args(["netns", "pids", namespace])
        .stdin(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    for pid in pids.split_whitespace().filter(|pid| *pid != own_pid) {
        problems.push(format!("killed leftover process {pid} in {namespace}"));
        let _ = Command::new(kill)
            .args(["-KILL", pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _guard = NETNS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    match Command::new(ip)
        .args(["netns", "del", namespace])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => problems.push(format!(
            "`ip netns del {namespace}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(error) => problems.push(format!("`ip netns del {namespace}` failed: {error}")),
    }
    problems
}

/// The PID in a name made here (`ebtun<pid>n<counter>`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let (pid, counter) = name.strip_prefix(NAME_PREFIX)?.split_once('n')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(pid) && digits(counter) {
        pid.parse().ok()
    } else {
        None
    }
}

/// Removes the namespaces of test processes that died without unwinding.
fn sweep_leftovers(ip: &Path, kill: &Path) {
    let own_pid = std::process::id();
    for namespace in namespace_names(ip) {
        let dead = owner_pid(&namespace)
            .is_some_and(|pid| pid != own_pid && !Path::new(&format!("/proc/{pid}")).exists());
        if dead {
            for problem in delete_namespace(ip, kill, &namespace) {
                eprintln!("tun namespace sweep: {problem}");
            }
            eprintln!("tun namespace sweep: removed {namespace} of a dead test process");
        }
    }
}

/// Selected counters of the kernel's TCP in the namespace, from `/proc/net/snmp` and
/// `/proc/net/netstat` as seen by a thread inside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelTcpCounters {
    /// `(name, value)` pairs in the order of [`KernelTcpCounters::NAMES`].
    pub values: Vec<(&'static str, u64)>,
}

impl KernelTcpCounters {
    /// The counters read: `Tcp:` from snmp, `TcpExt:` from netstat.
    pub const NAMES: [&'static str; 12] = [
        "InSegs",
        "OutSegs",
        "RetransSegs",
        "InErrs",
        "OutRsts",
        "TCPTimeouts",
        "TCPLossProbes",
        "TCPFastRetrans",
        "TCPSackRecovery",
        "TCPLostRetransmit",
        "TCPOFOQueue",
        "TCPDSACKRecv",
    ];

    /// Reads the counters of the calling thread's network namespace.
    ///
    /// # Errors
    ///
    /// When the proc files cannot be read.
    pub fn read_current_thread() -> Result<Self, HarnessError> {
        let read = |file: &str| {
            let path = format!("/proc/thread-self/net/{file}");
            fs::read_to_string(&path).map_err(|source| HarnessError::Io {
                context: format!("reading {path}"),
                source,
            })
        };
        let tables = [read("snmp")?, read("netstat")?];
        let values = Self::NAMES
            .iter()
            .map(|name| {
                let value = tables
                    .iter()
                    .find_map(|table| proc_counter(table, name))
                    .unwrap_or(0);
                (*name, value)
            })
            .collect();
        Ok(Self { values })
    }

    /// The value of `name`, zero when absent.
    pub fn get(&self, name: &str) -> u64 {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// `after - before` for every counter.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            values: self
                .values
                .iter()
                .map(|(name, value)| (*name, value.saturating_sub(before.get(name))))
                .collect(),
        }
    }
}

impl fmt::Display for KernelTcpCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// One counter of a `/proc/net/snmp`-style table: pairs of lines `Prefix: names...` and
/// `Prefix: values...`, for the `Tcp:` and `TcpExt:` prefixes only.
fn proc_counter(table: &str, name: &str) -> Option<u64> {
    let lines: Vec<&str> = table.lines().collect();
    lines.windows(2).find_map(|pair| {
        let (names, values) = (pair[0], pair[1]);
        let (prefix, names) = names.split_once(':')?;
        if !matches!(prefix, "Tcp" | "TcpExt") {
            return None;
        }
        let (value_prefix, values) = values.split_once(':')?;
        if value_prefix != prefix || names.split_whitespace().next()?.parse::<i64>().is_ok() {
            return None;
        }
        let index = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(index)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_names_made_here() {
        assert_eq!(owner_pid("ebtun1234n0"), Some(1234));
        assert_eq!(owner_pid("ebtun1234n17"), Some(1234));
        assert_eq!(owner_pid("ebtun1234n"), None);
        assert_eq!(owner_pid("ebtunn3"), None);
        assert_eq!(owner_pid("ebtun12a4n1"), None);
        assert_eq!(owner_pid("ebtun1234n1s"), None);
        assert_eq!(owner_pid("ebt1234n0s"), None);
        assert_eq!(owner_pid("other"), None);
    }

    #[test]
    fn proc_counters_are_read_by_prefix_and_name() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm InSegs OutSegs RetransSegs\nTcp: 1 100 90 7\n\
                    Udp: InDatagrams\nUdp: 5\n";
        let netstat = "TcpExt: SyncookiesSent TCPTimeouts\nTcpExt: 0 3\n\
                       IpExt: InNoRoutes\nIpExt: 2\n";
        assert_eq!(proc_counter(snmp, "InSegs"), Some(100));
        assert_eq!(proc_counter(snmp, "RetransSegs"), Some(7));
        assert_eq!(proc_counter(snmp, "InDatagrams"), None);
        assert_eq!(proc_counter(snmp, "Forwarding"), None);
        assert_eq!(proc_counter(netstat, "TCPTimeouts"), Some(3));
        assert_eq!(proc_counter(netstat, "InNoRoutes"), None);
        assert_eq!(proc_counter("", "InSegs"), None);
    }

    #[test]
    fn link_lines_are_read_for_carrier_and_state() {
        let down = "2: etun0: <NO-CARRIER,POINTOPOINT,MULTICAST,NOARP,UP> mtu 1500 qdisc \
                    pfifo_fast state DOWN mode DEFAULT group default qlen 500";
        let pending = "2: etun0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1500 qdisc \
                       pfifo_fast state DOWN mode DEFAULT group default qlen 500";
        let running = "2: etun0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1500 qdisc \
                       pfifo_fast state UP mode DEFAULT group default qlen 500";
        let admin_down = "2: etun0: <POINTOPOINT,MULTICAST,NOARP> mtu 1500 state UP";
        assert!(!link_is_running(down));
        assert!(!link_is_running(pending));
        assert!(link_is_running(running));
        assert!(!link_is_running(admin_down));
        assert!(!link_is_running(""));
    }

    #[test]
    fn counter_differences_saturate() {
        let before = KernelTcpCounters {
            values: vec![("InSegs", 10), ("OutSegs", 5)],
        };
        let after = KernelTcpCounters {
            values: vec![("InSegs", 25), ("OutSegs", 4)],
        };
        let delta = after.since(&before);
        assert_eq!(delta.get("InSegs"), 15);
        assert_eq!(delta.get("OutSegs"), 0);
        assert_eq!(delta.to_string(), "InSegs=15 OutSegs=0");
    }

    #[test]
    fn the_stack_gets_its_address_and_mtu() {
        let config = stack_tunnel_config();
        assert_eq!(config.local_ipv4(), Some(STACK_ADDR));
        assert!(config.routes_to(IpAddr::V4(KERNEL_ADDR)));
        assert!(!config.routes_to(IpAddr::V4(Ipv4Addr::new(10, 78, 0, 1))));
        assert_eq!(config.mtu, TUN_MTU);
    }
}
