//! The exit's allow-list: which destinations a client's flows may reach.
//!
//! A rule is a network and a port range, written `NET[/PREFIX][:PORT[-PORT]]`:
//! `127.0.0.0/8`, `10.1.2.3:443`, `192.0.2.0/24:8000-8099`, `0.0.0.0/0:80`. An address
//! without a prefix is one host; a rule without ports allows every port. Nothing is allowed
//! until a rule says so.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use erebus_sansio::tunnel::IpNet;

/// One allowed destination network and port range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// The destination network.
    pub net: IpNet,
    /// The destination ports.
    pub ports: RangeInclusive<u16>,
}

impl AllowRule {
    /// Every port of `net`.
    pub const fn network(net: IpNet) -> Self {
        Self {
            net,
            ports: 0..=u16::MAX,
        }
    }

    /// Whether the rule allows `to`.
    pub fn allows(&self, to: SocketAddr) -> bool {
        self.net.contains(to.ip()) && self.ports.contains(&to.port())
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all_ports = self.ports == (0..=u16::MAX);
        // An IPv6 network followed by ports is bracketed, as the parser reads it.
        if self.net.addr().is_ipv6() && !all_ports {
            write!(f, "[{}]/{}", self.net.addr(), self.net.prefix())?;
        } else {
            write!(f, "{}", self.net)?;
        }
        match (*self.ports.start(), *self.ports.end()) {
            _ if all_ports => Ok(()),
            (a, b) if a == b => write!(f, ":{a}"),
            (a, b) => write!(f, ":{a}-{b}"),
        }
    }
}

/// Why a rule does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("allow rule {rule:?}: {reason}")]
pub struct AllowRuleError {
    /// The rule as written.
    pub rule: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for AllowRule {
    type Err = AllowRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| AllowRuleError {
            rule: text.to_owned(),
            reason,
        };
        let text = text.trim();
        // IPv6 networks are written in brackets when ports follow: [2001:db8::]/32:443; an
        // IPv6 network without brackets has no ports.
        let (net_text, port_text) = if let Some(rest) = text.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| fail("expected an IP address or network"))?;
            let (prefix, ports) = match after.split_once(':') {
                Some((prefix, ports)) => (prefix, Some(ports)),
                None => (after, None),
            };
            (format!("{addr}{prefix}"), ports)
        } else if text.matches(':').count() > 1 {
            (text.to_owned(), None)
        } else {
            match text.split_once(':') {
                Some((net, ports)) => (net.to_owned(), Some(ports)),
                None => (text.to_owned(), None),
            }
        };
        let (addr_text, prefix) = match net_text.split_once('/') {
            Some((addr, prefix)) => (
                addr,
                Some(
                    prefix
                        .parse::<u8>()
                        .map_err(|_| fail("the prefix length is not a number"))?,
                ),
            ),
            None => (net_text.as_str(), None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| fail("expected an IP address or network"))?;
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        let net = IpNet::new(addr, prefix).ok_or_else(|| fail("the prefix length is too long"))?;
        if !is_network_address(addr, prefix) {
            return Err(fail("the address has bits set beyond the prefix"));
        }
        let ports = match port_text {
            None => 0..=u16::MAX,
            Some(ports) => {
                let parse = |p: &str| {
                    p.parse::<u16>()
                        .map_err(|_| fail("expected a port or a range of ports"))
                };
                let (first, last) = match ports.split_once('-') {
                    Some((a, b)) => (parse(a)?, parse(b)?),
                    None => {
                        let port = parse(ports)?;
                        (port, port)
                    }
                };
                if first > last {
                    return Err(fail("the port range is backwards"));
                }
                first..=last
            }
        };
        Ok(Self { net, ports })
    }
}

/// Whether no bit of `addr` beyond the first `prefix` is set.
fn is_network_address(addr: IpAddr, prefix: u8) -> bool {
    match addr {
        IpAddr::V4(v4) => u32::from(v4).checked_shl(u32::from(prefix)).unwrap_or(0) == 0,
        IpAddr::V6(v6) => u128::from(v6).checked_shl(u32::from(prefix)).unwrap_or(0) == 0,
    }
}

/// The rules together: a destination is allowed when any rule allows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<AllowRule>,
}

impl AllowList {
    /// A list of these rules.
    pub const fn new(rules: Vec<AllowRule>) -> Self {
        Self { rules }
    }

    /// Every port on the loopback networks (what `erebus demo` allows).
    pub fn loopback() -> Self {
        let v4 = IpNet::new(IpAddr::from([127, 0, 0, 0]), 8);
        Self {
            rules: v4.into_iter().map(AllowRule::network).collect(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }

    /// Whether any rule allows `to`.
    pub fn allows(&self, to: SocketAddr) -> bool {
        self.rules.iter().any(|rule| rule.allows(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> AllowRule {
        text.parse().unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_match() {
        let net = rule("192.0.2.0/24:8000-8099");
        assert!(net.allows(addr("192.0.2.9:8000")));
        assert!(net.allows(addr("192.0.2.9:8099")));
        assert!(!net.allows(addr("192.0.2.9:8100")));
        assert!(!net.allows(addr("192.0.3.9:8000")));
        let host = rule("10.1.2.3:443");
        assert!(host.allows(addr("10.1.2.3:443")));
        assert!(!host.allows(addr("10.1.2.4:443")));
        let any_port = rule("127.0.0.0/8");
        assert!(any_port.allows(addr("127.1.2.3:1")));
        assert_eq!(any_port.to_string(), "127.0.0.0/8");
        assert_eq!(net.to_string(), "192.0.2.0/24:8000-8099");
        assert_eq!(host.to_string(), "10.1.2.3/32:443");
        let v6 = rule("[2001:db8::]/32:53");
        assert!(v6.allows(addr("[2001:db8::1]:53")));
        assert_eq!(v6.to_string(), "[2001:db8::]/32:53");
        assert_eq!(rule(&v6.to_string()), v6);
        assert_eq!(rule("2001:db8::/32").to_string(), "2001:db8::/32");
        assert!(rule("::1").allows(addr("[::1]:22")));
    }

    #[test]
    fn bad_rules_say_why() {
        for (text, reason) in [
            ("", "expected an IP address or network"),
            ("intranet", "expected an IP address or network"),
            ("10.0.0.0/33", "the prefix length is too long"),
            ("10.0.0.1/8", "the address has bits set beyond the prefix"),
            ("10.0.0.0/x", "the prefix length is not a number"),
            ("10.0.0.0/8:http", "expected a port or a range of ports"),
            ("10.0.0.0/8:90-80", "the port range is backwards"),
            ("10.0.0.0/8:70000", "expected a port or a range of ports"),
        ] {
            let error = text.parse::<AllowRule>().unwrap_err();
            assert_eq!(error.reason, reason, "{text}");
        }
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        assert!(!AllowList::default().allows(addr("127.0.0.1:80")));
        assert!(AllowList::loopback().allows(addr("127.0.0.1:80")));
        assert!(!AllowList::loopback().allows(addr("10.0.0.1:80")));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,40}") {
            let _ = text.parse::<AllowRule>();
        }
    }
}
