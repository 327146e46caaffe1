//! The inner addresses the server hands out, OpenVPN's `server NETWORK NETMASK` with
//! `topology subnet`: the server takes the first host address, clients the rest.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Why a pool cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The netmask has holes (`255.0.255.0`).
    #[error("netmask {0} is not contiguous")]
    NotContiguous(Ipv4Addr),
    /// The network address has bits set beyond the mask.
    #[error("{network} is not the first address of a network with mask {netmask}")]
    NotANetwork {
        /// The address given.
        network: Ipv4Addr,
        /// The mask given.
        netmask: Ipv4Addr,
    },
    /// Fewer than two host addresses (the server's and one client's).
    #[error("a network with mask {0} has no room for a client (use /30 or larger)")]
    TooSmall(Ipv4Addr),
}

/// A pool of client addresses in one subnet.
#[derive(Clone, Debug)]
pub struct AddressPool {
    network: u32,
    netmask: Ipv4Addr,
    /// Offsets from the network address of the addresses in use.
    leased: BTreeSet<u32>,
    /// The highest usable offset (the one before broadcast).
    last: u32,
}

impl AddressPool {
    /// A pool over `network`/`netmask`.
    ///
    /// # Errors
    ///
    /// A mask with holes, a network address with host bits, or a network smaller than /30.
    pub fn new(network: Ipv4Addr, netmask: Ipv4Addr) -> Result<Self, PoolError> {
        let mask = u32::from(netmask);
        if mask.checked_shl(mask.leading_ones()).unwrap_or(0) != 0 {
            return Err(PoolError::NotContiguous(netmask));
        }
        if u32::from(network) & !mask != 0 {
            return Err(PoolError::NotANetwork { network, netmask });
        }
        let size = (!mask).wrapping_add(1);
        // Offsets: 0 network, 1 server, 2.. clients, size-1 broadcast.
        if size < 4 || mask == 0 {
            return Err(PoolError::TooSmall(netmask));
        }
        Ok(Self {
            network: u32::from(network),
            netmask,
            leased: BTreeSet::new(),
            last: size - 2,
        })
    }

    /// The server's own address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    /// The subnet mask.
    pub const fn netmask(&self) -> Ipv4Addr {
        self.netmask
    }

    /// The prefix length of the subnet.
    pub fn prefix(&self) -> u8 {
        u32::from(self.netmask).leading_ones() as u8
    }

    /// Takes the lowest free client address, or `None` when every one is in use.
    pub fn lease(&mut self) -> Option<Ipv4Addr> {
        let mut offset = 2;
        for &used in self.leased.range(2..) {
            if used != offset {
                break;
            }
            offset += 1;
        }
        if offset > self.last {
            return None;
        }
        self.leased.insert(offset);
        Some(Ipv4Addr::from(self.network + offset))
    }

    /// Gives an address back.
    pub fn release(&mut self, addr: Ipv4Addr) {
        let offset = u32::from(addr).wrapping_sub(self.network);
        self.leased.remove(&offset);
    }

    /// How many addresses are leased.
    pub fn leased(&self) -> usize {
        self.leased.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn leases_the_lowest_free_address_and_reuses_released_ones() {
        let mut pool = AddressPool::new(ip("10.8.0.0"), ip("255.255.255.0")).unwrap();
        assert_eq!(pool.gateway(), ip("10.8.0.1"));
        assert_eq!(pool.prefix(), 24);
        assert_eq!(pool.lease(), Some(ip("10.8.0.2")));
        assert_eq!(pool.lease(), Some(ip("10.8.0.3")));
        assert_eq!(pool.lease(), Some(ip("10.8.0.4")));
        pool.release(ip("10.8.0.3"));
        assert_eq!(pool.lease(), Some(ip("10.8.0.3")));
        assert_eq!(pool.leased(), 3);
    }

    #[test]
    fn a_slash_30_holds_one_client() {
        let mut pool = AddressPool::new(ip("10.8.0.4"), ip("255.255.255.252")).unwrap();
        assert_eq!(pool.gateway(), ip("10.8.0.5"));
        assert_eq!(pool.lease(), Some(ip("10.8.0.6")));
        assert_eq!(pool.lease(), None);
    }

    #[test]
    fn bad_networks_are_refused() {
        assert_eq!(
            AddressPool::new(ip("10.8.0.0"), ip("255.0.255.0")).unwrap_err(),
            PoolError::NotContiguous(ip("255.0.255.0"))
        );
        assert!(matches!(
            AddressPool::new(ip("10.8.0.1"), ip("255.255.255.0")),
            Err(PoolError::NotANetwork { .. })
        ));
        assert!(matches!(
            AddressPool::new(ip("10.8.0.0"), ip("255.255.255.254")),
            Err(PoolError::TooSmall(_))
        ));
        assert!(matches!(
            AddressPool::new(ip("0.0.0.0"), ip("0.0.0.0")),
            Err(PoolError::TooSmall(_))
        ));
    }
}
