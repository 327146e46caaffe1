//! What the comparisons of erebus with the stock OpenVPN client share: which client a download
//! goes through, curl's command line for it, and the figures read around a download.

use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use erebus_testvectors::netns::{NsProcess, OpenVpnServer, RunAs};

/// erebus's HTTP proxy, the one [`super::start_erebus`] waits for.
pub(crate) const PROXY: &str = "http://127.0.0.1:8080";

/// The VPN client a download goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Client {
    /// openvpn with a kernel TUN device, as root; curl goes straight through the tunnel.
    Stock,
    /// erebus as nobody with the given `--runtime`; curl goes through its HTTP proxy.
    Erebus(&'static str),
    /// Another erebus binary to compare with (the benchmark's `EREBUS_BENCH_BASELINE`, by
    /// index from 0), the same way.
    Baseline(usize, &'static str),
}

impl Client {
    /// The client as tables and messages name it.
    pub(crate) fn name(self) -> String {
        match self {
            Self::Stock => "openvpn (kernel tun)".into(),
            Self::Erebus(runtime) => format!("erebus {runtime}"),
            Self::Baseline(index, runtime) => format!("baseline {} {runtime}", index + 1),
        }
    }

    /// Who curl runs as: root with the stock client, nobody with erebus (whose proxy needs
    /// no privilege on either side).
    pub(crate) fn run_as(self) -> RunAs {
        match self {
            Self::Stock => RunAs::Root,
            Self::Erebus(_) | Self::Baseline(..) => RunAs::Nobody,
        }
    }

    /// The proxy curl goes through, if any.
    pub(crate) fn proxy(self) -> Option<&'static str> {
        match self {
            Self::Stock => None,
            Self::Erebus(_) | Self::Baseline(..) => Some(PROXY),
        }
    }

    /// curl (the program at `curl`) with `args` for this client: silent but for errors,
    /// failing on an HTTP error status, and through the client's proxy if it has one.
    pub(crate) fn curl_argv<'a>(self, curl: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec![curl, "-sS", "--fail"];
        if let Some(proxy) = self.proxy() {
            argv.extend_from_slice(&["-x", proxy]);
        }
        argv.extend_from_slice(args);
        argv
    }
}

/// Starts `client` on `server` and waits until it carries traffic: the stock client's tunnel
/// answers a ping; erebus runs as nobody, its tunnel is up and its proxy listens (see
/// [`super::start_erebus_with_runtime`]).
pub(crate) fn start_client<'s>(server: &'s OpenVpnServer, client: Client) -> NsProcess<'s> {
    match client {
        Client::Stock => {
            let stock = server.start_stock_client("stock.log").unwrap();
            server.wait_for_client_tun(Duration::from_secs(20)).unwrap();
            assert!(
                server
                    .ping_from_client(server.server_tunnel_addr(), 30, Duration::from_millis(500))
                    .unwrap(),
                "the stock client's tunnel does not answer"
            );
            stock
        }
        Client::Erebus(runtime) => super::start_erebus_with_runtime(server, runtime),
        Client::Baseline(..) => {
            panic!("a baseline binary is started by the benchmark that was given it")
        }
    }
}

/// The URL of `bytes` bytes of the test pattern from the server's origin.
pub(crate) fn download_url(server: &OpenVpnServer, bytes: u64) -> String {
    format!("{}bytes/{bytes}", server.http_url())
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 if that fails).
pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) the process has used so far, from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: u32, ticks_per_second: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces; the fields after it do not. utime and stime are
    // fields 14 and 15, the 12th and 13th after the name.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no ')' in stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / ticks_per_second)
}

/// The median of `values` (the upper of the middle two for an even count); `values` must not
/// be empty.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
