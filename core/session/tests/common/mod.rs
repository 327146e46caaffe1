//! A protocol for supervisor tests: its sessions come up as soon as their transport connects,
//! carry packets as they are, and end when the test says so.

#![allow(dead_code)] // Each test binary uses a different part.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use erebus_sansio::io::TransportError;
use erebus_sansio::tunnel::{
    Decapsulated, DropReason, Failure, Fault, IpNet, Overhead, TransportKind, TransportSpec,
    Tunnel, TunnelConfig, TunnelEvent,
};
use erebus_sansio::{Instant, Seed, WallClock};
use erebus_session::{Protocol, Remote};

/// What the test tells the sessions.
#[derive(Default)]
pub(crate) struct Control {
    /// Sessions built so far: (remote index, address).
    pub(crate) built: Vec<(usize, SocketAddr)>,
    /// Sessions alive now.
    pub(crate) alive: usize,
    /// Whether sessions come up when their transport connects.
    pub(crate) come_up: bool,
    /// A fault the next session reports instead of coming up.
    pub(crate) refuse_with: Option<Fault>,
    /// Set by the test: the live session ends with this failure at its next timeout.
    pub(crate) kill: Option<Failure>,
}

pub(crate) type Shared = Rc<RefCell<Control>>;

pub(crate) fn control() -> Shared {
    Rc::new(RefCell::new(Control {
        come_up: true,
        ..Control::default()
    }))
}

pub(crate) struct FakeProtocol(pub(crate) Shared);

pub(crate) struct FakeSession {
    control: Shared,
    events: VecDeque<TunnelEvent>,
    down: bool,
    closing: bool,
}

impl Drop for FakeSession {
    fn drop(&mut self) {
        self.control.borrow_mut().alive -= 1;
    }
}

pub(crate) fn inner_config() -> TunnelConfig {
    TunnelConfig {
        ipv4: IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 2)), 24),
        gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 8, 0, 1))),
        mtu: 1500,
        ..TunnelConfig::default()
    }
}

impl Protocol for FakeProtocol {
    type Tunnel = FakeSession;

    fn build(
        &mut self,
        index: usize,
        remote: SocketAddr,
        _: &Seed,
        _: WallClock,
        _: Instant,
    ) -> Result<FakeSession, Failure> {
        let mut control = self.0.borrow_mut();
        control.built.push((index, remote));
        control.alive += 1;
        Ok(FakeSession {
            control: self.0.clone(),
            events: VecDeque::new(),
            down: false,
            closing: false,
        })
    }
}

impl FakeSession {
    fn fail(&mut self, failure: Failure) {
        if !self.down {
            self.down = true;
            self.events.push_back(TunnelEvent::Down(failure));
        }
    }
}

impl Tunnel for FakeSession {
    fn transport(&self) -> Option<&TransportSpec> {
        None
    }
    fn overhead(&self) -> Overhead {
        Overhead::default()
    }
    fn transport_connected(&mut self, _: Instant, _: SocketAddr) {
        let refuse = self.control.borrow_mut().refuse_with.take();
        match refuse {
            Some(fault) => self.fail(Failure::new(fault, "refused by the test")),
            None if self.control.borrow().come_up => {
                self.events.push_back(TunnelEvent::Up(inner_config()));
            }
            None => {}
        }
    }
    fn transport_closed(&mut self, _: Instant, error: TransportError) {
        self.fail(Failure::new(Fault::Timeout, error.to_string()));
    }
    fn decapsulate(&mut self, _: Instant, packet: &mut [u8]) -> Result<Decapsulated, DropReason> {
        if self.down {
            return Err(DropReason::NotReady);
        }
        Ok(Decapsulated::Inner(0..packet.len()))
    }
    fn encapsulate(
        &mut self,
        _: Instant,
        _: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, DropReason> {
        if self.down {
            return Err(DropReason::NotReady);
        }
        Ok(inner)
    }
    fn handle_timeout(&mut self, _: Instant) {
        let kill = self.control.borrow_mut().kill.take();
        if let Some(failure) = kill {
            self.fail(failure);
        }
    }
    fn close(&mut self, _: Instant) {
        self.closing = true;
        self.fail(Failure::new(Fault::Closed, "the session was closed"));
    }
    fn poll_transmit(&mut self, _: Instant, _: &mut [u8]) -> Option<Result<usize, usize>> {
        None
    }
    fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.events.pop_front()
    }
    fn poll_timeout(&self) -> Option<(Instant, &'static str)> {
        None
    }
}

/// A server to try, with OpenVPN's defaults and `connect-retry 1 8`.
pub(crate) fn remote(index: usize, host: &str) -> Remote {
    Remote {
        index,
        host: host.into(),
        port: 1194,
        kind: TransportKind::Udp,
        retry_delay: Duration::from_secs(1),
        max_retry_delay: Duration::from_secs(8),
        poll_timeout: Duration::from_secs(10),
    }
}

pub(crate) fn wall() -> WallClock {
    WallClock::new(
        Instant::ZERO,
        erebus_sansio::UnixTime::from_secs(1_800_000_000),
    )
}
