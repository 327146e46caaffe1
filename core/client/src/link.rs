//! The transport towards the server as a machine above a [`Tunnel`] sees it: which attempt it
//! belongs to, where it connected, and the partial frames of a stream. The client and the
//! ping probe both keep one.
//!
//! [`Tunnel`]: erebus_sansio::Tunnel

use std::net::SocketAddr;

use erebus_sansio::tunnel::TransportSpec;

use crate::framing::Deframer;

/// The current transport: its attempt, its server's address once connected, and the bytes of
/// a stream not yet making a whole packet.
#[derive(Debug, Default)]
pub struct Link {
    attempt: Option<u64>,
    remote: Option<SocketAddr>,
    deframer: Deframer,
}

impl Link {
    /// Follows what the tunnel wants: a new attempt (or none) forgets the old transport's
    /// address and partial frames.
    pub fn follow(&mut self, wanted: Option<&TransportSpec>) {
        let attempt = wanted.map(|spec| spec.attempt);
        if attempt != self.attempt {
            self.attempt = attempt;
            self.remote = None;
            self.deframer.reset();
        }
    }

    /// The current attempt's transport connected to `remote`. `false` (and nothing changes)
    /// when no transport is wanted or it already connected: a stale or repeated report.
    pub fn connect(&mut self, remote: SocketAddr) -> bool {
        if self.attempt.is_none() || self.remote.is_some() {
            return false;
        }
        self.remote = Some(remote);
        self.deframer.reset();
        true
    }

    /// The current attempt's transport closed. `false` when no transport is wanted.
    pub fn close(&mut self) -> bool {
        self.remote = None;
        self.deframer.reset();
        self.attempt.is_some()
    }

    /// Where the transport connected, once it did: where packets go.
    pub const fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Whether bytes from `from` are the server's: anything else never reaches the tunnel.
    pub fn is_server(&self, from: SocketAddr) -> bool {
        self.remote == Some(from)
    }

    /// The stream's deframer (stream transports only).
    pub fn deframer(&mut self) -> &mut Deframer {
        &mut self.deframer
    }
}

#[cfg(test)]
mod tests {
    use erebus_sansio::tunnel::TransportKind;

    use super::*;

    #[test]
    fn a_new_attempt_forgets_the_old_transport() {
        let server: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let mut spec = TransportSpec::to_addr(server, TransportKind::TcpLengthPrefixed);
        let mut link = Link::default();
        assert!(!link.connect(server), "no attempt yet");
        link.follow(Some(&spec));
        assert!(link.connect(server));
        assert!(!link.connect(server), "connected once per attempt");
        assert!(link.is_server(server));
        link.deframer().push(&[0, 5, 1]);
        spec.attempt += 1;
        link.follow(Some(&spec));
        assert_eq!(link.remote(), None);
        assert!(matches!(link.deframer().next_frame(), Ok(None)));
        assert!(link.connect(server));
        assert!(link.close());
        link.follow(None);
        assert!(!link.close(), "nothing wanted");
    }
}
