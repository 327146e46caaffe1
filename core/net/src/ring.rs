//! A byte ring buffer allocated once, at construction.
//!
//! The send buffer holds the bytes from the oldest unacknowledged one onwards; the receive
//! buffer holds in-order bytes the application has not read yet, and out-of-order bytes are
//! written into its free space ahead of time (see [`RingBuffer::write_unallocated`]) until the
//! hole before them fills.

/// A fixed-capacity FIFO of bytes.
#[derive(Clone)]
pub struct RingBuffer {
    storage: Vec<u8>,
    read_at: usize,
    len: usize,
}

impl core::fmt::Debug for RingBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingBuffer")
            .field("len", &self.len)
            .field("capacity", &self.storage.len())
            .finish()
    }
}

impl RingBuffer {
    /// A buffer of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            storage: vec![0; capacity],
            read_at: 0,
            len: 0,
        }
    }

    /// Bytes stored.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are stored.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total capacity.
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// Free bytes.
    pub fn free(&self) -> usize {
        self.capacity() - self.len
    }

    /// Whether no byte is free.
    pub fn is_full(&self) -> bool {
        self.free() == 0
    }

    fn wrap(&self, index: usize) -> usize {
        let cap = self.capacity();
        if cap == 0 { 0 } else { index % cap }
    }

    /// Appends as much of `data` as fits and returns how much that was.
    pub fn enqueue(&mut self, data: &[u8]) -> usize {
        let written = self.write_unallocated(0, data);
        self.len += written;
        written
    }

    /// Writes `data` into the free space starting `offset` bytes after the stored bytes,
    /// without storing it: a later [`commit`](Self::commit) makes it part of the buffer.
    /// Returns how many bytes fit.
    pub fn write_unallocated(&mut self, offset: usize, data: &[u8]) -> usize {
        let free = self.free();
        if offset >= free {
            return 0;
        }
        let amount = data.len().min(free - offset);
        let cap = self.capacity();
        let start = self.wrap(self.read_at + self.len + offset);
        let first = amount.min(cap - start);
        self.storage[start..start + first].copy_from_slice(&data[..first]);
        self.storage[..amount - first].copy_from_slice(&data[first..amount]);
        amount
    }

    /// Makes `count` bytes written by [`write_unallocated`](Self::write_unallocated) part of
    /// the stored bytes (clamped to the free space).
    pub fn commit(&mut self, count: usize) {
        self.len += count.min(self.free());
    }

    /// Removes up to `buf.len()` bytes from the front into `buf` and returns how many.
    pub fn dequeue(&mut self, buf: &mut [u8]) -> usize {
        let amount = self.peek(0, buf);
        self.discard(amount);
        amount
    }

    /// Copies stored bytes starting `offset` bytes from the front into `buf`, without removing
    /// them. Returns how many were copied.
    pub fn peek(&self, offset: usize, buf: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let amount = buf.len().min(self.len - offset);
        let cap = self.capacity();
        let start = self.wrap(self.read_at + offset);
        let first = amount.min(cap - start);
        buf[..first].copy_from_slice(&self.storage[start..start + first]);
        buf[first..amount].copy_from_slice(&self.storage[..amount - first]);
        amount
    }

    /// The longest contiguous run of stored bytes starting `offset` bytes from the front, at
    /// most `max` long. It is shorter than what is stored when the bytes wrap around.
    pub fn contiguous(&self, offset: usize, max: usize) -> &[u8] {
        if offset >= self.len {
            return &[];
        }
        let cap = self.capacity();
        let start = self.wrap(self.read_at + offset);
        let amount = max.min(self.len - offset).min(cap - start);
        &self.storage[start..start + amount]
    }

    /// Drops up to `count` bytes from the front and returns how many.
    pub fn discard(&mut self, count: usize) -> usize {
        let amount = count.min(self.len);
        self.read_at = self.wrap(self.read_at + amount);
        self.len -= amount;
        amount
    }

    /// Moves an empty buffer's start back to the beginning of its storage, so the next
    /// writes are contiguous (segments sent from an idle buffer are then not split at the
    /// wrap point). Only for a buffer with nothing written ahead by
    /// [`write_unallocated`](Self::write_unallocated): those bytes would be lost.
    pub fn rewind_if_empty(&mut self) {
        if self.len == 0 {
            self.read_at = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_dequeue_wraps() {
        let mut ring = RingBuffer::new(8);
        assert_eq!(ring.enqueue(b"abcdef"), 6);
        let mut out = [0; 4];
        assert_eq!(ring.dequeue(&mut out), 4);
        assert_eq!(&out, b"abcd");
        assert_eq!(ring.enqueue(b"ghijklmn"), 6);
        assert!(ring.is_full());
        assert_eq!(ring.contiguous(0, 100), b"efgh");
        assert_eq!(ring.contiguous(4, 100), b"ijkl");
        let mut all = [0; 8];
        assert_eq!(ring.peek(1, &mut all), 7);
        assert_eq!(&all[..7], b"fghijkl");
        assert_eq!(ring.dequeue(&mut all), 8);
        assert_eq!(&all, b"efghijkl");
        assert!(ring.is_empty());
    }

    #[test]
    fn out_of_order_writes_commit_later() {
        let mut ring = RingBuffer::new(8);
        ring.enqueue(b"ab");
        assert_eq!(ring.write_unallocated(2, b"efgh"), 4);
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.write_unallocated(0, b"cd"), 2);
        ring.commit(4);
        let mut out = [0; 8];
        assert_eq!(ring.dequeue(&mut out), 6);
        assert_eq!(&out[..6], b"abcdef");
        assert_eq!(ring.write_unallocated(8, b"x"), 0);
        assert_eq!(ring.write_unallocated(6, b"xyz"), 2);
    }

    /// Bytes written ahead must stay where they are when the stored bytes run out.
    #[test]
    fn emptying_keeps_bytes_written_ahead() {
        let mut ring = RingBuffer::new(8);
        ring.enqueue(b"abc");
        ring.write_unallocated(2, b"fg");
        ring.discard(3);
        ring.write_unallocated(0, b"de");
        ring.commit(4);
        let mut out = [0; 4];
        assert_eq!(ring.dequeue(&mut out), 4);
        assert_eq!(&out, b"defg");
        ring.rewind_if_empty();
        ring.enqueue(b"wxyz1234");
        assert_eq!(ring.contiguous(0, 8), b"wxyz1234");
    }

    #[test]
    fn zero_capacity_is_inert() {
        let mut ring = RingBuffer::new(0);
        assert_eq!(ring.enqueue(b"a"), 0);
        assert_eq!(ring.dequeue(&mut [0; 1]), 0);
        assert!(ring.contiguous(0, 5).is_empty());
    }
}
