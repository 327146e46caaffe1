//! A TUN device: one IP packet per read or write, the seed of an optional TUN add-on.
//!
//! erebus itself needs no TUN device (its TCP/IP stack runs in user space and programs reach
//! it through the proxies). This adapter exists for the cases where an IP interface is wanted
//! anyway: attaching the user-space stack to the kernel's own TCP for interop tests, and,
//! later, an add-on that routes a namespace's traffic through the tunnel.
//!
//! [`TunDevice::open`] attaches to the device of that name, or creates a non-persistent one
//! if none exists, always as `IFF_TUN | IFF_NO_PI`: every read returns one bare IPv4 or IPv6
//! packet and every write takes one, with no packet-information prefix and no virtio header.
//! It configures nothing: addresses, MTU and link state belong to whoever owns the device
//! (`ip tuntap add`, `ip addr`, `ip link set up`). Opening needs `CAP_NET_ADMIN`, or a
//! persistent device whose owner is the caller.
//!
//! Two modes:
//! - [`TunMode::Blocking`]: [`recv`](TunDevice::recv) waits for the next packet; for a thread
//!   that does nothing else.
//! - [`TunMode::NonBlocking`]: `recv` returns [`io::ErrorKind::WouldBlock`] when no packet is
//!   queued. The device implements [`mio::event::Source`] and exposes its descriptor through
//!   [`AsFd`]/[`AsRawFd`], so it can be registered with a `mio::Poll` directly or through
//!   `mio::unix::SourceFd`.
//!
//! The ioctl (`TUNSETIFF`) comes from the `tun-rs` crate, built without its address-management
//! feature so that it never touches addresses or routes: erebus forbids unsafe code, and
//! neither `rustix` nor `nix` offers a safe `TUNSETIFF`.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// The longest interface name Linux accepts (`IFNAMSIZ` minus the terminating NUL).
pub const MAX_NAME_LEN: usize = 15;

/// A buffer of this many bytes holds any packet a TUN device can deliver (the largest IPv4
/// total length); a buffer of the device's MTU is enough when the MTU is known.
pub const MAX_PACKET_LEN: usize = 65_535;

/// Whether reads wait for a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunMode {
    /// [`TunDevice::recv`] blocks until a packet arrives.
    Blocking,
    /// [`TunDevice::recv`] returns [`io::ErrorKind::WouldBlock`] when no packet is queued; for
    /// use with a poller.
    NonBlocking,
}

/// An open TUN device (layer 3, no packet information).
///
/// Dropping it closes the descriptor: a device created by [`open`](Self::open) disappears
/// then, a persistent one stays (with its carrier down until someone attaches again).
pub struct TunDevice {
    device: tun_rs::SyncDevice,
    name: String,
    mode: TunMode,
}

impl fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .field("fd", &self.device.as_raw_fd())
            .field("mode", &self.mode)
            .finish()
    }
}

impl TunDevice {
    /// Attaches to the TUN device `name` in the calling thread's network namespace, or
    /// creates it (non-persistent, down, without addresses) if there is none, in `mode`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a name Linux would refuse (empty, longer than
    /// [`MAX_NAME_LEN`] bytes, or containing `/`, whitespace or NUL); otherwise the error of
    /// opening `/dev/net/tun` or of `TUNSETIFF` (`EPERM` without `CAP_NET_ADMIN`, `EINVAL`
    /// when a device of that name exists with other flags, `EBUSY` when it is a TAP device
    /// or already attached), with the device name in the message.
    pub fn open(name: &str, mode: TunMode) -> io::Result<Self> {
        check_name(name)?;
        let device = tun_rs::DeviceBuilder::new()
            .name(name)
            .layer(tun_rs::Layer::L3)
            .packet_information(false)
            .build_sync()
            .map_err(|error| context(error, &format!("opening TUN device {name}")))?;
        // A name with a `%d` pattern would be completed by the kernel; ask for the result.
        let name = device.name().unwrap_or_else(|_| name.to_owned());
        let mut tun = Self {
            device,
            name,
            mode: TunMode::Blocking,
        };
        tun.set_mode(mode)?;
        Ok(tun)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current mode.
    pub const fn mode(&self) -> TunMode {
        self.mode
    }

    /// Switches between blocking and non-blocking reads and writes.
    ///
    /// # Errors
    ///
    /// When `fcntl` fails (it does not on a valid descriptor).
    pub fn set_mode(&mut self, mode: TunMode) -> io::Result<()> {
        self.device
            .set_nonblocking(mode == TunMode::NonBlocking)
            .map_err(|error| context(error, &format!("setting the mode of {}", self.name)))?;
        self.mode = mode;
        Ok(())
    }

    /// The device's MTU as the kernel has it.
    ///
    /// # Errors
    ///
    /// When the `SIOCGIFMTU` request fails.
    pub fn mtu(&self) -> io::Result<u16> {
        self.device.mtu()
    }

    /// Reads one packet into `buf` and returns its length.
    ///
    /// `buf` should hold the device's MTU (or [`MAX_PACKET_LEN`]); the kernel cuts a packet
    /// that does not fit.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] in non-blocking mode when no packet is queued;
    /// [`io::ErrorKind::Interrupted`] when a signal interrupted a blocking read (retry);
    /// any other error of `read(2)`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.device.recv(buf)
    }

    /// Writes `packet`, one whole IPv4 or IPv6 packet, to the kernel.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] in non-blocking mode when the device cannot take it now
    /// (rare: the kernel queues written packets on its backlog), `EINVAL` for a packet the
    /// kernel refuses (empty, or longer than the device accepts), any other error of
    /// `write(2)`, and [`io::ErrorKind::WriteZero`] should the kernel ever take only part.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let written = self.device.send(packet)?;
        if written == packet.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "{} took {written} of {} bytes of a packet",
                    self.name,
                    packet.len()
                ),
            ))
        }
    }
}

impl AsRawFd for TunDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.device.as_raw_fd()
    }
}

impl AsFd for TunDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }
}

/// Registration with `mio`: meant for [`TunMode::NonBlocking`] (a blocking device would stall
/// the poll loop on a read that finds nothing).
impl mio::event::Source for TunDevice {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).deregister(registry)
    }
}

/// Refuses names the kernel would refuse or misread, before any system call.
fn check_name(name: &str) -> io::Result<()> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than 15 bytes")
    } else if name
        .chars()
        .any(|c| c == '/' || c == '\0' || c.is_whitespace())
    {
        Some("contains '/', whitespace or NUL")
    } else if name == "." || name == ".." {
        Some("is a path component")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TUN device name {name:?} {problem}"),
        )),
        None => Ok(()),
    }
}

/// The same error with `what` in front of its message.
fn context(error: io::Error, what: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_linux_refuses_are_refused_before_any_system_call() {
        for bad in ["", "a-name-of-16-byt", "tun/0", "tun 0", "tun\0", ".", ".."] {
            let error = TunDevice::open(bad, TunMode::Blocking).expect_err(bad);
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            assert!(error.to_string().contains("TUN device name"), "{bad:?}");
        }
    }

    #[test]
    fn names_linux_accepts_pass_the_check() {
        for good in ["etun0", "a-name-of-15-by", "tun%d", "erebus.tun"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
