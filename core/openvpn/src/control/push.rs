//! The text control messages of the TLS control channel, and the options a server pushes.
//!
//! After the key exchange, both sides exchange NUL-terminated ASCII messages over TLS
//! ([`split_messages`]). The server sends `PUSH_REPLY,...` with the tunnel's settings,
//! possibly in several parts (`push-continuation 2` on all but the last), and may send
//! `AUTH_FAILED`, `RESTART`, `HALT`, `EXIT`, `AUTH_PENDING` or `INFO` ([`ServerMessage`]).
//!
//! [`PushAccumulator`] joins the parts of a PUSH_REPLY, applies the profile's `pull-filter`
//! and `route-nopull` rules, and parses the options into [`PushedOptions`];
//! [`PushedOptions::tunnel_config`] turns them into the [`TunnelConfig`] every tunnel reports.
//! Options erebus does not use are ignored with a debug log, as OpenVPN ignores options it
//! cannot apply; a known option with a bad value is an error naming it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use erebus_sansio::TunnelConfig;
use erebus_sansio::tunnel::IpNet;

use crate::config::{
    Compression, DataCipher, Profile, PullFilterAction, RedirectGateway, SecretString, Topology,
};

/// The longest control message OpenVPN reads (`TLS_CHANNEL_BUF_SIZE`).
pub const MAX_MESSAGE_LEN: usize = 2048;

/// Takes the complete NUL-terminated messages off the front of `buf` (the plaintext received
/// so far), leaving an unterminated tail for later. As OpenVPN does, trailing CR/LF are
/// stripped, and empty messages and messages with other non-printable characters are dropped.
pub fn split_messages(buf: &mut Vec<u8>) -> Vec<String> {
    let Some(last_nul) = buf.iter().rposition(|&b| b == 0) else {
        return Vec::new();
    };
    let messages = buf[..last_nul]
        .split(|&b| b == 0)
        .filter_map(|raw| {
            let end = raw
                .iter()
                .rposition(|&b| b != b'\r' && b != b'\n')
                .map_or(0, |i| i + 1);
            let text = &raw[..end];
            let printable = text
                .iter()
                .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t');
            (!text.is_empty() && printable).then(|| String::from_utf8_lossy(text).into_owned())
        })
        .collect();
    buf.drain(..=last_nul);
    messages
}

/// Where to go after `AUTH_FAILED,TEMP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advance {
    /// `advance no`: retry the same server address.
    No,
    /// `advance addr`: the next address of the same server (OpenVPN's default).
    Addr,
    /// `advance remote`: the next `remote`.
    Remote,
}

/// A temporary authentication failure: retry later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TempFailure {
    /// `backoff N`: seconds to wait before retrying.
    pub backoff: Option<u32>,
    /// `advance ...`.
    pub advance: Option<Advance>,
    /// The text after `:`.
    pub message: String,
}

/// A message from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// `PUSH_REPLY[,options]`: the text after `PUSH_REPLY`, for [`PushAccumulator::feed`].
    PushReply(String),
    /// `AUTH_FAILED[,reason]`: stop (or retry without the auth-token if one was used).
    AuthFailed {
        /// The reason, when given (`AUTH_FAILED,<reason>`).
        reason: Option<String>,
        /// `AUTH_FAILED,TEMP...`: a temporary failure.
        temp: Option<TempFailure>,
    },
    /// `RESTART[,[flags]message]`: reconnect.
    Restart {
        /// `P`: keep the credentials.
        keep_credentials: bool,
        /// `N`: move to the next server.
        next_server: bool,
        /// The text, flags removed.
        message: Option<String>,
    },
    /// `HALT[,message]`: stop for good.
    Halt(Option<String>),
    /// `EXIT`: the server is going away; reconnect.
    Exit,
    /// `AUTH_PENDING[,timeout N]`: authentication continues elsewhere; wait up to N seconds.
    AuthPending {
        /// `timeout N`.
        timeout: Option<u32>,
    },
    /// `INFO_PRE,text`: information shown before authentication completes (web auth URL).
    InfoPre(String),
    /// `INFO,text`.
    Info(String),
    /// Anything else: logged and ignored.
    Unknown(String),
}

impl ServerMessage {
    /// Parses one message, by prefix in OpenVPN's order.
    pub fn parse(text: &str) -> Self {
        let after = |prefix: &str| -> Option<Option<&str>> {
            let rest = text.strip_prefix(prefix)?;
            if rest.is_empty() {
                Some(None)
            } else {
                rest.strip_prefix(',').map(Some)
            }
        };
        if let Some(rest) = text.strip_prefix("AUTH_FAILED") {
            let reason = rest.strip_prefix(',').filter(|r| !r.is_empty());
            let temp = reason
                .and_then(|r| r.strip_prefix("TEMP"))
                .map(parse_temp_failure);
            return Self::AuthFailed {
                reason: reason.map(str::to_owned),
                temp,
            };
        }
        if let Some(rest) = text.strip_prefix("PUSH_REPLY") {
            return Self::PushReply(rest.to_owned());
        }
        if let Some(rest) = after("RESTART") {
            let (mut keep_credentials, mut next_server) = (false, false);
            let mut message = rest;
            if let Some(flagged) = rest.and_then(|r| r.strip_prefix('['))
                && let Some((flags, tail)) = flagged.split_once(']')
            {
                keep_credentials = flags.contains('P');
                next_server = flags.contains('N');
                message = Some(tail);
            }
            return Self::Restart {
                keep_credentials,
                next_server,
                message: message.filter(|m| !m.is_empty()).map(str::to_owned),
            };
        }
        if let Some(rest) = after("HALT") {
            return Self::Halt(rest.map(str::to_owned));
        }
        // INFO_PRE before INFO: the shorter prefix would match both.
        if let Some(rest) = text.strip_prefix("INFO_PRE,") {
            return Self::InfoPre(rest.to_owned());
        }
        if let Some(rest) = text.strip_prefix("INFO,") {
            return Self::Info(rest.to_owned());
        }
        if let Some(rest) = after("AUTH_PENDING") {
            let timeout = rest.and_then(|r| {
                r.split(',')
                    .find_map(|kw| kw.trim().strip_prefix("timeout "))
                    .and_then(|n| n.trim().parse().ok())
            });
            return Self::AuthPending { timeout };
        }
        if text == "EXIT" {
            return Self::Exit;
        }
        Self::Unknown(text.to_owned())
    }
}

/// `TEMP[backoff N,advance no|addr|remote]:message`, after `TEMP`.
fn parse_temp_failure(rest: &str) -> TempFailure {
    let mut failure = TempFailure {
        backoff: None,
        advance: None,
        message: String::new(),
    };
    let mut message = rest;
    if let Some(flagged) = rest.strip_prefix('[')
        && let Some((flags, tail)) = flagged.split_once(']')
    {
        message = tail;
        for flag in flags.split(',') {
            if let Some(n) = flag.strip_prefix("backoff ") {
                failure.backoff = n.trim().parse().ok();
            } else if let Some(a) = flag.strip_prefix("advance ") {
                failure.advance = match a.trim() {
                    "no" => Some(Advance::No),
                    "addr" => Some(Advance::Addr),
                    "remote" => Some(Advance::Remote),
                    _ => None,
                };
            }
        }
    }
    failure.message = message.strip_prefix(':').unwrap_or_default().to_owned();
    failure
}

/// Why a PUSH_REPLY was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A known option with a value that cannot be.
    #[error("pushed option `{option}`: {reason} (in '{line}')")]
    BadValue {
        /// The option's name.
        option: String,
        /// The whole option as pushed.
        line: String,
        /// What is wrong.
        reason: String,
    },
    /// A `pull-filter reject` rule matched.
    #[error("pushed option '{0}' rejected by pull-filter")]
    Rejected(String),
    /// The parts of a continued PUSH_REPLY grew past any sensible size.
    #[error("the PUSH_REPLY continues for more than {0} bytes")]
    TooLong(usize),
}

/// `protocol-flags`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolFlags {
    /// `cc-exit`: send `EXIT` over the control channel on shutdown.
    pub cc_exit: bool,
    /// `tls-ekm`: data keys from the TLS exporter.
    pub tls_ekm: bool,
    /// `dyn-tls-crypt`: wrap renegotiations with dynamic tls-crypt keys.
    pub dyn_tls_crypt: bool,
    /// `aead-epoch` (2.7): epoch data keys.
    pub aead_epoch: bool,
}

/// Where a pushed route leads (`route`'s third argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// No gateway, `vpn_gateway` or an address: through the tunnel.
    Tunnel,
    /// `net_gateway`: around the tunnel, through the local network.
    Local,
}

/// A pushed `route`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushedRoute {
    /// The network.
    pub network: IpNet,
    /// Where it leads.
    pub target: RouteTarget,
}

/// The options of a complete PUSH_REPLY that erebus uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushedOptions {
    /// `ifconfig local netmask|remote`.
    pub ifconfig: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `ifconfig-ipv6 addr/bits remote`.
    pub ifconfig_ipv6: Option<(IpNet, Option<Ipv6Addr>)>,
    /// `topology`.
    pub topology: Option<Topology>,
    /// `route` and `route-ipv6`, in order.
    pub routes: Vec<PushedRoute>,
    /// `route-gateway addr` (`dhcp` leaves it unset).
    pub route_gateway: Option<Ipv4Addr>,
    /// `redirect-gateway` (`redirect-private` changes no default route and is ignored).
    pub redirect_gateway: Option<RedirectGateway>,
    /// `dhcp-option DNS` and `DNS6`, in order.
    pub dns_servers: Vec<IpAddr>,
    /// `dhcp-option DOMAIN` (and `ADAPTER_DOMAIN_SUFFIX`).
    pub domain: Option<String>,
    /// `dhcp-option DOMAIN-SEARCH`, in order.
    pub search_domains: Vec<String>,
    /// `peer-id`: P_DATA_V2 with this 24-bit id.
    pub peer_id: Option<u32>,
    /// `cipher`: the negotiated data cipher.
    pub cipher: Option<DataCipher>,
    /// `ping` seconds.
    pub ping: Option<u32>,
    /// `ping-restart` seconds.
    pub ping_restart: Option<u32>,
    /// `ping-exit` seconds.
    pub ping_exit: Option<u32>,
    /// `tun-mtu`.
    pub tun_mtu: Option<u16>,
    /// `auth-token`: the password for later authentications.
    pub auth_token: Option<SecretString>,
    /// `auth-token-user` (base64, as pushed).
    pub auth_token_user: Option<SecretString>,
    /// `protocol-flags`.
    pub protocol_flags: ProtocolFlags,
    /// `key-derivation tls-ekm`.
    pub key_derivation_tls_ekm: bool,
    /// `compress` or `comp-lzo`, whichever came last.
    pub compression: Option<Compression>,
    /// `explicit-exit-notify [n]`.
    pub explicit_exit_notify: Option<u32>,
}

impl PushedOptions {
    /// Whether the data keys come from the TLS exporter (`tls-ekm` either way).
    pub fn uses_tls_ekm(&self) -> bool {
        self.key_derivation_tls_ekm || self.protocol_flags.tls_ekm
    }

    /// The tunnel's configuration: the pushed settings, with the profile's own `route` lines
    /// and its `topology` and `tun-mtu` where nothing was pushed.
    ///
    /// - IPv4: with `topology subnet`, `ifconfig` is the address and netmask; with `net30` (the
    ///   default) and `p2p` it is the address and the peer, which becomes the gateway, and the
    ///   net30 subnet is the /30 around the address.
    /// - `redirect-gateway` routes everything (`0.0.0.0/0`, and `::/0` with `ipv6`) through
    ///   the tunnel; `net_gateway` routes are left out.
    /// - DNS servers in pushed order; `DOMAIN` first among the search domains.
    ///
    /// # Errors
    ///
    /// [`PushError::BadValue`] for a subnet `ifconfig` with a netmask that is not contiguous.
    pub fn tunnel_config(&self, profile: &Profile) -> Result<TunnelConfig, PushError> {
        let topology = self
            .topology
            .or(profile.topology)
            .unwrap_or(Topology::Net30);
        let mut config = TunnelConfig {
            mtu: self
                .tun_mtu
                .or_else(|| {
                    profile
                        .connections
                        .first()
                        .and_then(|c| c.tun_mtu)
                        .and_then(|m| u16::try_from(m).ok())
                })
                .unwrap_or(TunnelConfig::DEFAULT_MTU),
            ..TunnelConfig::default()
        };
        if let Some((local, other)) = self.ifconfig {
            match topology {
                Topology::Subnet => {
                    config.ipv4 = Some(IpNet::from_netmask(local, other).ok_or_else(|| {
                        PushError::BadValue {
                            option: "ifconfig".into(),
                            line: format!("ifconfig {local} {other}"),
                            reason: "with topology subnet the second address must be a \
                                     contiguous netmask"
                                .into(),
                        }
                    })?);
                }
                Topology::Net30 => {
                    // Our address with the /30 that net30 carves around it.
                    config.ipv4 = IpNet::new(IpAddr::V4(local), 30);
                    config.gateway = Some(IpAddr::V4(other));
                }
                Topology::P2p => {
                    config.ipv4 = Some(IpNet::host(IpAddr::V4(local)));
                    config.gateway = Some(IpAddr::V4(other));
                }
            }
        }
        if let Some(gateway) = self.route_gateway {
            config.gateway = Some(IpAddr::V4(gateway));
        }
        if let Some((net, _)) = self.ifconfig_ipv6 {
            config.ipv6 = Some(net);
        }
        let mut routes: Vec<IpNet> = self
            .routes
            .iter()
            .filter(|r| r.target == RouteTarget::Tunnel)
            .map(|r| r.network)
            .collect();
        routes.extend(profile.routes.iter().filter_map(|r| r.ipv4_net()));
        routes.extend(profile.routes_ipv6.iter().map(|r| r.network));
        let redirect = self.redirect_gateway.or(profile.redirect_gateway);
        if let Some(redirect) = redirect {
            if redirect.ipv4 {
                routes.extend(IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
            }
            if redirect.ipv6 {
                routes.extend(IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
            }
        }
        for route in routes {
            if !config.routes.contains(&route) {
                config.routes.push(route);
            }
        }
        config.dns_servers.clone_from(&self.dns_servers);
        config.search_domains.extend(self.domain.iter().cloned());
        for domain in &self.search_domains {
            if !config.search_domains.contains(domain) {
                config.search_domains.push(domain.clone());
            }
        }
        Ok(config)
    }
}

/// Splits one option into words as OpenVPN's config parser does: whitespace separates,
/// double or single quotes group, and a backslash escapes the next character.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(core::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// Options `route-nopull` keeps out: routes and DNS (OpenVPN's `OPT_P_ROUTE` and
/// `OPT_P_DHCPDNS`).
const NOPULL_OPTIONS: [&str; 9] = [
    "route",
    "route-ipv6",
    "redirect-gateway",
    "redirect-private",
    "block-ipv6",
    "route-metric",
    "dhcp-option",
    "dns",
    "block-outside-dns",
];

/// Options that are understood and deliberately not used (system VPN settings).
const IGNORED_OPTIONS: [&str; 12] = [
    "redirect-private",
    "block-ipv6",
    "route-metric",
    "block-outside-dns",
    "register-dns",
    "setenv",
    "echo",
    "inactive",
    "dns",
    "route-delay",
    "sndbuf",
    "rcvbuf",
];

/// Joins the parts of a PUSH_REPLY and parses it.
#[derive(Debug, Default)]
pub struct PushAccumulator {
    lines: Vec<String>,
    bytes: usize,
}

/// Generous bound on the total of a continued PUSH_REPLY, so a server cannot grow it forever.
const MAX_TOTAL_PUSH: usize = 64 * 1024;

impl PushAccumulator {
    /// A fresh accumulator, for each PUSH_REQUEST round.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one PUSH_REPLY message (the text after `PUSH_REPLY`, as in
    /// [`ServerMessage::PushReply`]). Returns the options once the last part arrived
    /// (`push-continuation 1`, or no continuation), `None` while more parts are due.
    ///
    /// Each option passes the profile's `pull-filter` rules first (first match wins: `accept`
    /// keeps it, `ignore` drops it, `reject` fails), then `route-nopull`.
    ///
    /// # Errors
    ///
    /// [`PushError::Rejected`] for a `pull-filter reject` match, [`PushError::BadValue`] for a
    /// known option with a bad value, [`PushError::TooLong`] when the parts never end.
    pub fn feed(
        &mut self,
        profile: &Profile,
        reply: &str,
    ) -> Result<Option<PushedOptions>, PushError> {
        self.bytes += reply.len();
        if self.bytes > MAX_TOTAL_PUSH {
            return Err(PushError::TooLong(MAX_TOTAL_PUSH));
        }
        let mut more = false;
        for line in reply.split(',') {
            let line = line.trim_start();
            if line.is_empty() {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or_default();
            if first == "push-continuation" {
                more = line.split_whitespace().nth(1) == Some("2");
                continue;
            }
            let action = profile
                .pull_filters
                .iter()
                .find(|f| line.starts_with(f.text.as_str()))
                .map(|f| f.action);
            match action {
                Some(PullFilterAction::Reject) => return Err(PushError::Rejected(line.into())),
                Some(PullFilterAction::Ignore) => {
                    tracing::debug!(option = line, "pushed option removed by pull-filter");
                    continue;
                }
                Some(PullFilterAction::Accept) | None => {}
            }
            if profile.route_nopull && NOPULL_OPTIONS.contains(&first) {
                tracing::debug!(option = line, "pushed option ignored: route-nopull");
                continue;
            }
            self.lines.push(line.to_owned());
        }
        if more {
            return Ok(None);
        }
        let lines = core::mem::take(&mut self.lines);
        self.bytes = 0;
        let mut options = PushedOptions::default();
        for line in &lines {
            apply_option(&mut options, line)?;
        }
        Ok(Some(options))
    }
}

fn bad(option: &str, line: &str, reason: impl Into<String>) -> PushError {
    PushError::BadValue {
        option: option.to_owned(),
        line: line.to_owned(),
        reason: reason.into(),
    }
}

fn arg<'a>(w: &'a [String], index: usize, option: &str, line: &str) -> Result<&'a str, PushError> {
    w.get(index)
        .map(String::as_str)
        .ok_or_else(|| bad(option, line, format!("argument {index} is missing")))
}

fn number<T: core::str::FromStr>(
    w: &[String],
    index: usize,
    option: &str,
    line: &str,
) -> Result<T, PushError> {
    let text = arg(w, index, option, line)?;
    text.parse()
        .map_err(|_| bad(option, line, format!("'{text}' is not a valid number")))
}

fn ipv4(text: &str, option: &str, line: &str) -> Result<Ipv4Addr, PushError> {
    text.parse()
        .map_err(|_| bad(option, line, format!("'{text}' is not an IPv4 address")))
}

/// `addr/bits` (bits default to 128 when absent, as OpenVPN does for hosts).
fn ipv6_net(text: &str, option: &str, line: &str) -> Result<IpNet, PushError> {
    let (addr, bits) = text.split_once('/').unwrap_or((text, "128"));
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| bad(option, line, format!("'{addr}' is not an IPv6 address")))?;
    let bits: u8 = bits
        .parse()
        .map_err(|_| bad(option, line, format!("'{bits}' is not a prefix length")))?;
    IpNet::new(IpAddr::V6(addr), bits)
        .ok_or_else(|| bad(option, line, format!("prefix length {bits} is over 128")))
}

fn apply_option(options: &mut PushedOptions, line: &str) -> Result<(), PushError> {
    let w = words(line);
    let Some(name) = w.first().map(String::as_str) else {
        return Ok(());
    };
    match name {
        "ifconfig" => {
            let local = ipv4(arg(&w, 1, name, line)?, name, line)?;
            let other = ipv4(arg(&w, 2, name, line)?, name, line)?;
            options.ifconfig = Some((local, other));
        }
        "ifconfig-ipv6" => {
            let net = ipv6_net(arg(&w, 1, name, line)?, name, line)?;
            let remote = match w.get(2) {
                Some(text) => Some(
                    text.parse()
                        .map_err(|_| bad(name, line, format!("'{text}' is not an IPv6 address")))?,
                ),
                None => None,
            };
            options.ifconfig_ipv6 = Some((net, remote));
        }
        "topology" => {
            options.topology = Some(match arg(&w, 1, name, line)? {
                "net30" => Topology::Net30,
                "p2p" => Topology::P2p,
                "subnet" => Topology::Subnet,
                other => return Err(bad(name, line, format!("unknown topology '{other}'"))),
            });
        }
        "route" => {
            let network = ipv4(arg(&w, 1, name, line)?, name, line)?;
            let netmask = match w.get(2).map(String::as_str) {
                None | Some("default") => Ipv4Addr::BROADCAST,
                Some(mask) => ipv4(mask, name, line)?,
            };
            let network = IpNet::from_netmask(network, netmask)
                .ok_or_else(|| bad(name, line, "the netmask is not contiguous"))?;
            let target = match w.get(3).map(String::as_str) {
                Some("net_gateway") => RouteTarget::Local,
                _ => RouteTarget::Tunnel,
            };
            options.routes.push(PushedRoute { network, target });
        }
        "route-ipv6" => {
            let network = ipv6_net(arg(&w, 1, name, line)?, name, line)?;
            let target = match w.get(2).map(String::as_str) {
                Some("net_gateway") => RouteTarget::Local,
                _ => RouteTarget::Tunnel,
            };
            options.routes.push(PushedRoute { network, target });
        }
        "route-gateway" => match arg(&w, 1, name, line)? {
            "dhcp" => options.route_gateway = None,
            addr => options.route_gateway = Some(ipv4(addr, name, line)?),
        },
        "redirect-gateway" => {
            let mut redirect = RedirectGateway {
                ipv4: true,
                ..RedirectGateway::default()
            };
            for flag in &w[1..] {
                match flag.as_str() {
                    "def1" => redirect.def1 = true,
                    "local" => redirect.local = true,
                    "autolocal" => redirect.autolocal = true,
                    "bypass-dhcp" => redirect.bypass_dhcp = true,
                    "bypass-dns" => redirect.bypass_dns = true,
                    "block-local" => redirect.block_local = true,
                    "ipv6" => redirect.ipv6 = true,
                    "!ipv4" => redirect.ipv4 = false,
                    other => tracing::debug!(flag = other, "unknown redirect-gateway flag"),
                }
            }
            options.redirect_gateway = Some(redirect);
        }
        "dhcp-option" => {
            let kind = arg(&w, 1, name, line)?;
            match kind {
                "DNS" | "DNS6" => {
                    let text = arg(&w, 2, name, line)?;
                    let addr: IpAddr = text
                        .parse()
                        .map_err(|_| bad(name, line, format!("'{text}' is not an IP address")))?;
                    options.dns_servers.push(addr);
                }
                "DOMAIN" | "ADAPTER_DOMAIN_SUFFIX" => {
                    options.domain = Some(arg(&w, 2, name, line)?.to_owned());
                }
                "DOMAIN-SEARCH" => {
                    options
                        .search_domains
                        .push(arg(&w, 2, name, line)?.to_owned());
                }
                other => tracing::debug!(kind = other, "dhcp-option ignored"),
            }
        }
        "peer-id" => {
            let id: u32 = number(&w, 1, name, line)?;
            if id > 0x00ff_ffff {
                return Err(bad(name, line, "a peer id has 24 bits"));
            }
            options.peer_id = Some(id);
        }
        "cipher" => {
            let text = arg(&w, 1, name, line)?;
            options.cipher = Some(
                text.parse()
                    .map_err(|_| bad(name, line, format!("erebus does not implement '{text}'")))?,
            );
        }
        "ping" => options.ping = Some(number(&w, 1, name, line)?),
        "ping-restart" => options.ping_restart = Some(number(&w, 1, name, line)?),
        "ping-exit" => options.ping_exit = Some(number(&w, 1, name, line)?),
        "tun-mtu" => {
            let mtu: u16 = number(&w, 1, name, line)?;
            // IPv4 needs at least 68 bytes per packet; OpenVPN refuses less than 48.
            if mtu < 68 {
                return Err(bad(name, line, "too small for IP"));
            }
            options.tun_mtu = Some(mtu);
        }
        "auth-token" => {
            options.auth_token = Some(SecretString::new(arg(&w, 1, name, line)?.to_owned()));
        }
        "auth-token-user" => {
            options.auth_token_user = Some(SecretString::new(arg(&w, 1, name, line)?.to_owned()));
        }
        "protocol-flags" => {
            for flag in &w[1..] {
                match flag.as_str() {
                    "cc-exit" => options.protocol_flags.cc_exit = true,
                    "tls-ekm" => options.protocol_flags.tls_ekm = true,
                    "dyn-tls-crypt" => options.protocol_flags.dyn_tls_crypt = true,
                    "aead-epoch" => options.protocol_flags.aead_epoch = true,
                    other => tracing::debug!(flag = other, "unknown protocol flag"),
                }
            }
        }
        "key-derivation" => match arg(&w, 1, name, line)? {
            "tls-ekm" => options.key_derivation_tls_ekm = true,
            other => {
                return Err(bad(name, line, format!("unknown key derivation '{other}'")));
            }
        },
        "compress" => {
            options.compression = Some(match w.get(1).map(String::as_str) {
                None | Some("stub") => Compression::Stub,
                Some("stub-v2") => Compression::StubV2,
                Some("lzo") => Compression::Lzo { adaptive: false },
                Some("lz4") => Compression::Lz4,
                Some("lz4-v2") => Compression::Lz4V2,
                Some("migrate") => Compression::Migrate,
                Some(other) => {
                    return Err(bad(name, line, format!("unknown compression '{other}'")));
                }
            });
        }
        "comp-lzo" => {
            options.compression = Some(match w.get(1).map(String::as_str) {
                Some("no") => Compression::LzoStub,
                Some("yes") => Compression::Lzo { adaptive: false },
                None | Some("adaptive") => Compression::Lzo { adaptive: true },
                Some(other) => {
                    return Err(bad(name, line, format!("unknown comp-lzo mode '{other}'")));
                }
            });
        }
        "explicit-exit-notify" => {
            options.explicit_exit_notify = Some(match w.get(1) {
                Some(_) => number(&w, 1, name, line)?,
                None => 1,
            });
        }
        other if IGNORED_OPTIONS.contains(&other) => {
            tracing::debug!(option = line, "pushed option not used by erebus");
        }
        _ => tracing::debug!(option = line, "unknown pushed option ignored"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn profile(extra: &str) -> Profile {
        let text = format!("client\nremote vpn.example.net\nca ca.crt\nauth-user-pass\n{extra}");
        Profile::parse(text.as_bytes()).unwrap().0
    }

    fn v4(text: &str) -> IpAddr {
        IpAddr::V4(text.parse().unwrap())
    }

    fn net(text: &str) -> IpNet {
        let (addr, bits) = text.split_once('/').unwrap();
        IpNet::new(addr.parse().unwrap(), bits.parse().unwrap()).unwrap()
    }

    fn unhex(text: &str) -> Vec<u8> {
        let text = text.trim();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The PUSH_REPLY of a capture, taken from the decrypted server plaintext after its
    /// key-method message.
    fn captured_push_reply(hex: &str) -> String {
        let bytes = unhex(hex);
        let (_, used) = super::super::keymethod::parse_server_message(&bytes)
            .unwrap()
            .unwrap();
        let mut plaintext = bytes[used..].to_vec();
        let messages = split_messages(&mut plaintext);
        assert!(plaintext.is_empty());
        assert_eq!(messages.len(), 1);
        messages.into_iter().next().unwrap()
    }

    #[test]
    fn control_push_reply_of_tls_udp_capture() {
        let text = captured_push_reply(include_str!(
            "../../../../testvectors/captures/tls-udp/plaintext-s2c.hex"
        ));
        let ServerMessage::PushReply(body) = ServerMessage::parse(&text) else {
            panic!("{text}");
        };
        let profile = profile("");
        let options = PushAccumulator::new()
            .feed(&profile, &body)
            .unwrap()
            .unwrap();
        assert_eq!(options.dns_servers, [v4("10.8.0.1")]);
        assert_eq!(options.route_gateway, Some("10.8.0.1".parse().unwrap()));
        assert_eq!(options.topology, Some(Topology::Subnet));
        assert_eq!((options.ping, options.ping_restart), (Some(10), Some(60)));
        assert_eq!(
            options.ifconfig,
            Some((
                "10.8.0.2".parse().unwrap(),
                "255.255.255.0".parse().unwrap()
            ))
        );
        assert_eq!(options.peer_id, Some(0));
        assert_eq!(options.cipher, Some(DataCipher::Aes256Gcm));
        assert_eq!(
            options.protocol_flags,
            ProtocolFlags {
                cc_exit: true,
                tls_ekm: true,
                dyn_tls_crypt: true,
                aead_epoch: false
            }
        );
        assert!(options.uses_tls_ekm());
        assert_eq!(options.tun_mtu, Some(1500));

        let config = options.tunnel_config(&profile).unwrap();
        assert_eq!(config.ipv4, Some(net("10.8.0.2/24")));
        assert_eq!(config.gateway, Some(v4("10.8.0.1")));
        assert_eq!(config.dns_servers, [v4("10.8.0.1")]);
        assert!(config.routes.is_empty());
        assert_eq!(config.mtu, 1500);
        assert!(config.routes_to(v4("10.8.0.1")));
    }

    #[test]
    fn control_push_reply_of_tls_auth_and_legacy_captures() {
        let text = captured_push_reply(include_str!(
            "../../../../testvectors/captures/tls-auth/plaintext-s2c.hex"
        ));
        let ServerMessage::PushReply(body) = ServerMessage::parse(&text) else {
            panic!("{text}");
        };
        let options = PushAccumulator::new()
            .feed(&profile(""), &body)
            .unwrap()
            .unwrap();
        assert_eq!(options.compression, Some(Compression::StubV2));
        assert_eq!(options.cipher, Some(DataCipher::ChaCha20Poly1305));

        let text = captured_push_reply(include_str!(
            "../../../../testvectors/captures/tls-legacy-prf/plaintext-s2c.hex"
        ));
        let ServerMessage::PushReply(body) = ServerMessage::parse(&text) else {
            panic!("{text}");
        };
        let options = PushAccumulator::new()
            .feed(&profile(""), &body)
            .unwrap()
            .unwrap();
        assert!(!options.uses_tls_ekm());
        assert!(options.protocol_flags.cc_exit);
    }

    #[test]
    fn control_push_continuation_joins_parts() {
        let profile = profile("");
        let mut acc = PushAccumulator::new();
        assert_eq!(
            acc.feed(
                &profile,
                ",route 192.168.1.0 255.255.255.0,push-continuation 2"
            ),
            Ok(None)
        );
        assert_eq!(
            acc.feed(&profile, ",route-ipv6 fd00:1::/64,push-continuation 2"),
            Ok(None)
        );
        let options = acc
            .feed(
                &profile,
                ",ifconfig 10.9.0.6 10.9.0.5,dhcp-option DOMAIN corp.example,\
                 dhcp-option DOMAIN-SEARCH lab.example,push-continuation 1",
            )
            .unwrap()
            .unwrap();
        assert_eq!(options.routes.len(), 2);
        // net30 (the default topology): the peer is the gateway, the /30 is the subnet.
        let config = options.tunnel_config(&profile).unwrap();
        assert_eq!(config.ipv4, Some(net("10.9.0.6/30")));
        assert_eq!(config.gateway, Some(v4("10.9.0.5")));
        assert_eq!(config.routes, [net("192.168.1.0/24"), net("fd00:1::/64")]);
        assert_eq!(config.search_domains, ["corp.example", "lab.example"]);
        // The accumulator starts over after a complete reply.
        assert_eq!(
            acc.feed(&profile, ",ping 5").unwrap().unwrap().ping,
            Some(5)
        );
    }

    #[test]
    fn control_push_pull_filter_first_match_wins_and_route_nopull() {
        let profile = profile(
            "pull-filter accept \"route 10.\"\npull-filter ignore \"route \"\n\
             pull-filter ignore \"dhcp-option DNS 8.8\"\n",
        );
        let options = PushAccumulator::new()
            .feed(
                &profile,
                ",route 10.1.0.0 255.255.0.0,route 172.16.0.0 255.240.0.0,\
                 dhcp-option DNS 8.8.8.8,dhcp-option DNS 10.1.0.53",
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            options.routes,
            [PushedRoute {
                network: net("10.1.0.0/16"),
                target: RouteTarget::Tunnel
            }]
        );
        assert_eq!(options.dns_servers, [v4("10.1.0.53")]);

        let rejecting = self::profile("pull-filter reject \"redirect-gateway\"\n");
        assert_eq!(
            PushAccumulator::new().feed(&rejecting, ",redirect-gateway def1"),
            Err(PushError::Rejected("redirect-gateway def1".into()))
        );

        let nopull = self::profile("route-nopull\n");
        let options = PushAccumulator::new()
            .feed(
                &nopull,
                ",route 10.1.0.0 255.255.0.0,redirect-gateway def1,dhcp-option DNS 10.1.0.53,\
                 route-gateway 10.8.0.1,ifconfig 10.8.0.2 255.255.255.0,topology subnet",
            )
            .unwrap()
            .unwrap();
        assert!(options.routes.is_empty());
        assert!(options.redirect_gateway.is_none());
        assert!(options.dns_servers.is_empty());
        assert_eq!(options.route_gateway, Some("10.8.0.1".parse().unwrap()));
        assert!(options.ifconfig.is_some());
    }

    #[test]
    fn control_push_redirect_gateway_and_net_gateway() {
        let profile = profile("");
        let options = PushAccumulator::new()
            .feed(
                &profile,
                ",redirect-gateway def1 ipv6 bypass-dhcp,route 203.0.113.7 255.255.255.255 \
                 net_gateway,ifconfig-ipv6 fd00::1000/64 fd00::1,topology p2p,\
                 ifconfig 10.8.0.2 10.8.0.1,explicit-exit-notify",
            )
            .unwrap()
            .unwrap();
        let redirect = options.redirect_gateway.unwrap();
        assert!(redirect.ipv4 && redirect.ipv6 && redirect.def1 && redirect.bypass_dhcp);
        assert_eq!(options.explicit_exit_notify, Some(1));
        let config = options.tunnel_config(&profile).unwrap();
        assert_eq!(config.routes, [net("0.0.0.0/0"), net("::/0")]);
        assert_eq!(config.ipv6, Some(net("fd00::1000/64")));
        assert_eq!(config.ipv4, Some(net("10.8.0.2/32")));
        assert_eq!(config.gateway, Some(v4("10.8.0.1")));
    }

    #[test]
    fn control_push_bad_values_name_the_option() {
        let profile = profile("");
        let err = |body: &str| PushAccumulator::new().feed(&profile, body).unwrap_err();
        for (body, option) in [
            (",ifconfig 10.8.0.300 255.255.255.0", "ifconfig"),
            (",route 10.0.0.0 255.0.255.0", "route"),
            (",peer-id 16777216", "peer-id"),
            (",peer-id x", "peer-id"),
            (",cipher BF-CBC", "cipher"),
            (",tun-mtu 20", "tun-mtu"),
            (",topology star", "topology"),
            (",route-ipv6 fd00::/129", "route-ipv6"),
            (",dhcp-option DNS resolver.example", "dhcp-option"),
            (",ping", "ping"),
        ] {
            match err(body) {
                PushError::BadValue { option: got, .. } => assert_eq!(got, option, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        let message = err(",ping-restart soon").to_string();
        assert!(
            message.starts_with("pushed option `ping-restart`:"),
            "{message}"
        );
        // Unknown options are ignored.
        let options = PushAccumulator::new()
            .feed(
                &profile,
                ",frobnicate 3,block-outside-dns,setenv X 1,ping 10",
            )
            .unwrap()
            .unwrap();
        assert_eq!(options.ping, Some(10));
        // A subnet ifconfig with a non-contiguous mask fails when it is applied.
        let options = PushAccumulator::new()
            .feed(&profile, ",topology subnet,ifconfig 10.8.0.2 255.0.255.0")
            .unwrap()
            .unwrap();
        assert!(matches!(
            options.tunnel_config(&profile),
            Err(PushError::BadValue { .. })
        ));
    }

    #[test]
    fn control_push_auth_token_and_quoting() {
        let options = PushAccumulator::new()
            .feed(
                &profile(""),
                ",auth-token SESS_abc,auth-token-user dXNlcg==,dhcp-option DOMAIN \"a b\"",
            )
            .unwrap()
            .unwrap();
        assert_eq!(options.auth_token.unwrap().expose(), "SESS_abc");
        assert_eq!(options.auth_token_user.unwrap().expose(), "dXNlcg==");
        assert_eq!(options.domain.as_deref(), Some("a b"));
        assert_eq!(words(r#"a "b c" 'd e' f\ g"#), ["a", "b c", "d e", "f g"]);
    }

    #[test]
    fn control_messages_parse() {
        assert_eq!(
            ServerMessage::parse("AUTH_FAILED"),
            ServerMessage::AuthFailed {
                reason: None,
                temp: None
            }
        );
        assert_eq!(
            ServerMessage::parse("AUTH_FAILED,Invalid username or password"),
            ServerMessage::AuthFailed {
                reason: Some("Invalid username or password".into()),
                temp: None
            }
        );
        assert_eq!(
            ServerMessage::parse("AUTH_FAILED,TEMP[backoff 30,advance remote]:server busy"),
            ServerMessage::AuthFailed {
                reason: Some("TEMP[backoff 30,advance remote]:server busy".into()),
                temp: Some(TempFailure {
                    backoff: Some(30),
                    advance: Some(Advance::Remote),
                    message: "server busy".into()
                })
            }
        );
        assert_eq!(
            ServerMessage::parse("AUTH_FAILED,TEMP:later"),
            ServerMessage::AuthFailed {
                reason: Some("TEMP:later".into()),
                temp: Some(TempFailure {
                    backoff: None,
                    advance: None,
                    message: "later".into()
                })
            }
        );
        assert_eq!(
            ServerMessage::parse("RESTART,[N]server shutting down"),
            ServerMessage::Restart {
                keep_credentials: false,
                next_server: true,
                message: Some("server shutting down".into())
            }
        );
        assert_eq!(
            ServerMessage::parse("RESTART"),
            ServerMessage::Restart {
                keep_credentials: false,
                next_server: false,
                message: None
            }
        );
        assert_eq!(
            ServerMessage::parse("HALT,bye"),
            ServerMessage::Halt(Some("bye".into()))
        );
        assert_eq!(ServerMessage::parse("HALT"), ServerMessage::Halt(None));
        assert_eq!(ServerMessage::parse("EXIT"), ServerMessage::Exit);
        assert_eq!(
            ServerMessage::parse("AUTH_PENDING,timeout 120"),
            ServerMessage::AuthPending { timeout: Some(120) }
        );
        assert_eq!(
            ServerMessage::parse("AUTH_PENDING"),
            ServerMessage::AuthPending { timeout: None }
        );
        assert_eq!(
            ServerMessage::parse("INFO_PRE,WEB_AUTH::https://sso.example/"),
            ServerMessage::InfoPre("WEB_AUTH::https://sso.example/".into())
        );
        assert_eq!(
            ServerMessage::parse("INFO,hello"),
            ServerMessage::Info("hello".into())
        );
        assert_eq!(
            ServerMessage::parse("PUSH_REPLY"),
            ServerMessage::PushReply(String::new())
        );
        assert_eq!(
            ServerMessage::parse("HALTING"),
            ServerMessage::Unknown("HALTING".into())
        );
    }

    #[test]
    fn control_messages_split_on_nul() {
        let mut buf = b"PUSH_REPLY,ping 10\0\0EXIT\r\n\0bad\x01\0INFO,par".to_vec();
        assert_eq!(split_messages(&mut buf), ["PUSH_REPLY,ping 10", "EXIT"]);
        assert_eq!(buf, b"INFO,par");
        buf.extend_from_slice(b"tial\0");
        assert_eq!(split_messages(&mut buf), ["INFO,partial"]);
        assert!(buf.is_empty());
        assert!(split_messages(&mut buf).is_empty());
    }

    proptest! {
        #[test]
        fn control_push_parsers_never_panic(text in "\\PC{0,200}") {
            let _ = ServerMessage::parse(&text);
            let _ = PushAccumulator::new().feed(&Profile::default(), &text);
            let mut bytes = text.into_bytes();
            let _ = split_messages(&mut bytes);
        }

        #[test]
        fn control_split_messages_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = bytes;
            let _ = split_messages(&mut buf);
            prop_assert!(!buf.contains(&0));
        }
    }
}
