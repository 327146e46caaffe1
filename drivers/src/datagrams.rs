//! Reading a batch of datagrams with one system call (`recvmmsg`), for the drivers' UDP
//! transport.
//!
//! A download arrives as tens of thousands of datagrams; read one `recv` each, the system
//! call's entry and exit cost as much again as copying the datagram. One `recvmmsg` takes up to
//! [`BATCH`] of them into preallocated slots, and the caller hands each to the machine before
//! draining it once.
//!
//! The slots live in a thread-local: the system call's headers hold raw pointers, so they may
//! not move between threads with a driver, and each event loop reads on its own thread.

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

/// Datagrams read per system call at most.
pub const BATCH: usize = 32;

/// Bytes per slot: the largest UDP payload, so no datagram is ever cut short.
const SLOT: usize = 65_536;

thread_local! {
    /// This thread's slots, made at its first read.
    static SLOTS: RefCell<Option<DatagramBatch>> = const { RefCell::new(None) };
}

/// Reads the datagrams waiting on `socket` (non-blocking), up to [`BATCH`], and hands each
/// to `each` in the order they arrived. Returns how many were read; an empty socket is
/// [`io::ErrorKind::WouldBlock`]. Nothing is allocated after a thread's first call.
///
/// # Errors
///
/// The socket's error, as `recv` would return it (an ICMP error on a connected socket, say).
pub fn recv_batch(socket: &impl AsRawFd, each: impl FnMut(&[u8])) -> io::Result<usize> {
    SLOTS.with(|slots| {
        let Ok(mut slots) = slots.try_borrow_mut() else {
            // Only a read from inside `each` would get here.
            return Err(io::Error::other("recv_batch called from its own callback"));
        };
        slots
            .get_or_insert_with(DatagramBatch::new)
            .recv_batch(socket, each)
    })
}

/// Preallocated slots and headers for a batch read.
struct DatagramBatch {
    headers: MultiHeaders<SockaddrStorage>,
    /// [`BATCH`] slots of [`SLOT`] bytes in one allocation. It is large enough to be mapped
    /// on its own, fresh from the kernel, so only the pages datagrams reach (the first of
    /// each slot, for datagrams of a path's MTU) become resident.
    slots: Vec<u8>,
}

impl std::fmt::Debug for DatagramBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramBatch")
            .field("slots", &BATCH)
            .finish()
    }
}

impl DatagramBatch {
    /// Slots and headers for [`BATCH`] datagrams.
    fn new() -> Self {
        Self {
            headers: MultiHeaders::preallocate(BATCH, None),
            slots: vec![0; BATCH * SLOT],
        }
    }

    fn recv_batch(
        &mut self,
        socket: &impl AsRawFd,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<usize> {
        let mut lengths = [0usize; BATCH];
        let mut count = 0;
        {
            let mut chunks = self.slots.chunks_exact_mut(SLOT);
            let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            let received = recvmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)?;
            for (length, message) in lengths.iter_mut().zip(received) {
                // A slot holds the largest UDP payload, so nothing is cut short; a
                // truncated datagram would fail its authentication anyway.
                *length = if message.flags.contains(MsgFlags::MSG_TRUNC) {
                    0
                } else {
                    message.bytes
                };
                count += 1;
            }
        }
        for (slot, &length) in self.slots.chunks_exact(SLOT).zip(&lengths[..count]) {
            if let Some(datagram) = slot.get(..length)
                && length > 0
            {
                each(datagram);
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn pair() -> (UdpSocket, UdpSocket) {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.connect(receiver.local_addr().unwrap()).unwrap();
        receiver.connect(sender.local_addr().unwrap()).unwrap();
        (sender, receiver)
    }

    #[test]
    fn reads_every_waiting_datagram_in_order_in_batches() {
        let (sender, receiver) = pair();
        let sizes: Vec<usize> = (0..BATCH + 7).map(|i| 1 + (i * 997) % 1600).collect();
        for (i, &size) in sizes.iter().enumerate() {
            let datagram = vec![u8::try_from(i % 251).unwrap(); size];
            sender.send(&datagram).unwrap();
        }
        let mut seen = Vec::new();
        let first = recv_batch(&receiver, |d| seen.push(d.to_vec())).unwrap();
        assert_eq!(first, BATCH, "a full batch first");
        let second = recv_batch(&receiver, |d| seen.push(d.to_vec())).unwrap();
        assert_eq!(second, 7);
        assert_eq!(seen.len(), sizes.len());
        for (i, (datagram, &size)) in seen.iter().zip(&sizes).enumerate() {
            assert_eq!(datagram.len(), size, "datagram {i}");
            assert!(datagram.iter().all(|&b| usize::from(b) == i % 251));
        }
        let empty = recv_batch(&receiver, |_| panic!("nothing waits"));
        assert_eq!(empty.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn the_largest_datagram_arrives_whole() {
        let (sender, receiver) = pair();
        let largest = vec![0xa5; 65_507];
        sender.send(&largest).unwrap();
        sender.send(b"").unwrap();
        sender.send(b"after").unwrap();
        let mut seen = Vec::new();
        let count = recv_batch(&receiver, |d| seen.push(d.to_vec())).unwrap();
        assert_eq!(count, 3);
        // The empty datagram carries nothing for the machine and is not handed on.
        assert_eq!(seen, [largest, b"after".to_vec()]);
    }
}
