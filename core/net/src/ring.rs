//! A byte ring buffer whose storage grows on demand, up to its capacity.
//!
//! The send buffer holds the bytes from the oldest unacknowledged one onwards; the receive
//! buffer holds in-order bytes the application has not read yet, and out-of-order bytes are
//! written into its free space ahead of time (see [`RingBuffer::write_unallocated`]) until the
//! hole before them fills.
//!
//! The capacity bounds what the buffer may hold; the storage behind it starts empty and
//! doubles (from [`RingBuffer::MIN_STORAGE`]) only when the bytes to hold need it, so a
//! connection whose buffers are drained promptly keeps a few KiB however large its capacity.
//! [`RingBuffer::release_if_empty`] gives the storage back.

/// A bounded FIFO of bytes.
#[derive(Clone)]
pub struct RingBuffer {
    /// The bytes, as a ring; its length is the allocated size, a power of two or the
    /// capacity.
    storage: Vec<u8>,
    /// The most bytes the buffer may hold.
    capacity: usize,
    read_at: usize,
    len: usize,
}

impl core::fmt::Debug for RingBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingBuffer")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("allocated", &self.storage.len())
            .finish()
    }
}

impl RingBuffer {
    /// The storage allocated when the first byte arrives; it doubles from there.
    pub const MIN_STORAGE: usize = 4 * 1024;

    /// A buffer that holds up to `capacity` bytes. Nothing is allocated yet.
    pub const fn new(capacity: usize) -> Self {
        Self {
            storage: Vec::new(),
            capacity,
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

    /// The most bytes the buffer may hold.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of storage allocated now (at most the capacity).
    pub fn allocated(&self) -> usize {
        self.storage.len()
    }

    /// Raises the capacity to `capacity`; a smaller value leaves it as it is. The storage
    /// grows only when bytes need it.
    pub fn raise_capacity(&mut self, capacity: usize) {
        self.capacity = self.capacity.max(capacity);
    }

    /// Free bytes.
    pub const fn free(&self) -> usize {
        self.capacity - self.len
    }

    /// Whether no byte is free.
    pub const fn is_full(&self) -> bool {
        self.free() == 0
    }

    fn wrap(&self, index: usize) -> usize {
        let size = self.storage.len();
        if size == 0 { 0 } else { index % size }
    }

    /// Makes the storage cover at least `needed` bytes from the read position, doubling it
    /// (up to the capacity) and moving the bytes, those written ahead included, to its start.
    fn reserve(&mut self, needed: usize) {
        let old_size = self.storage.len();
        if needed <= old_size {
            return;
        }
        let mut size = old_size.max(Self::MIN_STORAGE);
        while size < needed {
            size = size.saturating_mul(2);
        }
        let size = size.min(self.capacity).max(needed);
        // Zeroed storage comes from the allocator untouched, so pages the buffer never
        // reaches cost no memory.
        let mut storage = vec![0; size];
        let tail = old_size - self.read_at;
        storage[..tail].copy_from_slice(&self.storage[self.read_at..]);
        storage[tail..old_size].copy_from_slice(&self.storage[..self.read_at]);
        self.storage = storage;
        self.read_at = 0;
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
        if offset >= free || data.is_empty() {
            return 0;
        }
        let amount = data.len().min(free - offset);
        self.reserve(self.len + offset + amount);
        let size = self.storage.len();
        let start = self.wrap(self.read_at + self.len + offset);
        let first = amount.min(size - start);
        self.storage[start..start + first].copy_from_slice(&data[..first]);
        self.storage[..amount - first].copy_from_slice(&data[first..amount]);
        amount
    }

    /// Makes `count` bytes written by [`write_unallocated`](Self::write_unallocated) part of
    /// the stored bytes (clamped to the free space and to what the storage holds).
    pub fn commit(&mut self, count: usize) {
        let room = self.free().min(self.storage.len() - self.len);
        self.len += count.min(room);
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
        let size = self.storage.len();
        let start = self.wrap(self.read_at + offset);
        let first = amount.min(size - start);
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
        let size = self.storage.len();
        let start = self.wrap(self.read_at + offset);
        let amount = max.min(self.len - offset).min(size - start);
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
    /// wrap point, and a buffer drained as fast as it fills stays within its first pages).
    /// Only for a buffer with nothing written ahead by
    /// [`write_unallocated`](Self::write_unallocated): those bytes would be lost.
    pub fn rewind_if_empty(&mut self) {
        if self.len == 0 {
            self.read_at = 0;
        }
    }

    /// Moves the stored bytes into storage of `size` bytes (at least
    /// [`MIN_STORAGE`](Self::MIN_STORAGE) and what is stored) when the storage now is larger;
    /// the capacity stays. Returns whether it shrank. Only for a buffer with nothing written
    /// ahead by [`write_unallocated`](Self::write_unallocated): those bytes would be lost.
    pub fn shrink_storage(&mut self, size: usize) -> bool {
        let size = size
            .max(Self::MIN_STORAGE)
            .max(self.len)
            .next_power_of_two()
            .min(self.capacity.max(self.len));
        if self.storage.len() <= size {
            return false;
        }
        let mut storage = vec![0; size];
        let copied = self.peek(0, &mut storage);
        debug_assert_eq!(copied, self.len);
        self.storage = storage;
        self.read_at = 0;
        true
    }

    /// Frees the storage of an empty buffer; the capacity stays. Returns whether there was
    /// storage to free. Only for a buffer with nothing written ahead by
    /// [`write_unallocated`](Self::write_unallocated): those bytes would be lost.
    pub fn release_if_empty(&mut self) -> bool {
        if self.len != 0 || self.storage.is_empty() {
            return false;
        }
        self.storage = Vec::new();
        self.read_at = 0;
        true
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
    fn shrinking_keeps_the_bytes_in_order() {
        let mut ring = RingBuffer::new(64 * 1024);
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        assert_eq!(ring.enqueue(&data), data.len());
        let mut first = vec![0; 30_000];
        assert_eq!(ring.dequeue(&mut first), first.len());
        assert_eq!(ring.allocated(), 64 * 1024);
        // The stored bytes wrap around the end of the storage.
        assert_eq!(ring.enqueue(&data[..30_000]), 30_000);
        assert!(
            !ring.shrink_storage(8 * 1024),
            "40,000 bytes need the 64 KiB"
        );
        let mut second = vec![0; 30_000];
        assert_eq!(ring.dequeue(&mut second), second.len());
        assert!(ring.shrink_storage(8 * 1024));
        assert_eq!(
            ring.allocated(),
            16 * 1024,
            "a power of two that holds 10,000 bytes"
        );
        let mut third = vec![0; 10_000];
        assert_eq!(ring.dequeue(&mut third), third.len());
        assert_eq!(&second[..10_000], &data[30_000..]);
        assert_eq!(&second[10_000..], &data[..20_000]);
        assert_eq!(&third[..], &data[20_000..30_000]);
        assert!(ring.shrink_storage(0));
        assert_eq!(ring.allocated(), RingBuffer::MIN_STORAGE);
        assert!(!ring.shrink_storage(0));
    }

    #[test]
    fn zero_capacity_is_inert() {
        let mut ring = RingBuffer::new(0);
        assert_eq!(ring.enqueue(b"a"), 0);
        assert_eq!(ring.dequeue(&mut [0; 1]), 0);
        assert!(ring.contiguous(0, 5).is_empty());
    }

    #[test]
    fn storage_grows_by_doubling_only_as_needed() {
        let mut ring = RingBuffer::new(1 << 20);
        assert_eq!(ring.allocated(), 0);
        ring.enqueue(&[1; 100]);
        assert_eq!(ring.allocated(), RingBuffer::MIN_STORAGE);
        // Drained as fast as it fills, the buffer stays at its first allocation.
        let mut out = vec![0; 3000];
        for _ in 0..1000 {
            ring.enqueue(&[7; 3000]);
            assert_eq!(ring.dequeue(&mut out[..]), 3000);
        }
        assert_eq!(ring.allocated(), RingBuffer::MIN_STORAGE);
        ring.enqueue(&[2; 10_000]);
        assert_eq!(ring.allocated(), 4 * RingBuffer::MIN_STORAGE);
        assert_eq!(ring.len(), 10_100);
    }

    #[test]
    fn growing_keeps_wrapped_bytes_in_order() {
        let mut ring = RingBuffer::new(64 * 1024);
        let data: Vec<u8> = (0..=255u8).cycle().take(40_000).collect();
        // Wrap the read position around the first storage, then force a growth.
        ring.enqueue(&data[..3000]);
        ring.discard(3000);
        ring.enqueue(&data[..3000]);
        assert_eq!(ring.allocated(), RingBuffer::MIN_STORAGE);
        ring.enqueue(&data[3000..]);
        let mut out = vec![0; 40_000];
        assert_eq!(ring.dequeue(&mut out), 40_000);
        assert_eq!(out, data);
    }

    #[test]
    fn growing_keeps_bytes_written_ahead() {
        let mut ring = RingBuffer::new(64 * 1024);
        ring.enqueue(&[0; 3000]);
        ring.discard(2000);
        // Written ahead in the first storage, across its wrap point.
        assert_eq!(ring.write_unallocated(1000, b"later"), 5);
        // A write far ahead makes the storage grow.
        assert_eq!(ring.write_unallocated(20_000, b"far"), 3);
        assert!(ring.allocated() >= 21_003);
        ring.write_unallocated(0, &[9; 1000]);
        ring.commit(1005);
        let mut out = vec![0; 2005];
        assert_eq!(ring.dequeue(&mut out), 2005);
        assert_eq!(&out[2000..], b"later");
        assert_eq!(ring.peek(0, &mut [0; 1]), 0);
    }

    #[test]
    fn storage_stops_at_the_capacity_and_the_capacity_can_rise() {
        let mut ring = RingBuffer::new(10_000);
        assert_eq!(ring.enqueue(&[1; 20_000]), 10_000);
        assert_eq!(ring.allocated(), 10_000);
        assert!(ring.is_full());
        ring.raise_capacity(5_000);
        assert_eq!(ring.capacity(), 10_000);
        ring.raise_capacity(30_000);
        assert_eq!(ring.enqueue(&[2; 20_000]), 20_000);
        assert_eq!(ring.allocated(), 30_000);
        let mut out = vec![0; 30_000];
        assert_eq!(ring.dequeue(&mut out), 30_000);
        assert!(out[..10_000].iter().all(|&b| b == 1) && out[10_000..].iter().all(|&b| b == 2));
    }

    #[test]
    fn release_frees_only_an_empty_buffer() {
        let mut ring = RingBuffer::new(1 << 20);
        ring.enqueue(&[1; 100_000]);
        assert!(!ring.release_if_empty());
        ring.discard(100_000);
        assert!(ring.release_if_empty());
        assert_eq!(ring.allocated(), 0);
        assert_eq!(ring.capacity(), 1 << 20);
        assert!(!ring.release_if_empty());
        ring.enqueue(b"again");
        assert_eq!(ring.contiguous(0, 10), b"again");
    }
}
