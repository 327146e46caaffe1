//! The TCP stack's cost, two ways.
//!
//! - `stack_throughput`: bulk TCP between two stacks joined by an in-memory link, 16 MiB one
//!   way with the default buffers at an MTU of 1500 (see `tests/support`). Two links are
//!   measured: one paced at 10 Gbit/s, where segments arrive one by one and the receiver
//!   acknowledges as it would on a real path, and one with no rate at all, where a whole window
//!   lands at the same instant and is acknowledged at once.
//! - `tcp_segment`: one full-size data segment into the receiving stack and what it sends in
//!   return (its ACK, when one is due), per segment. Only those two calls are timed; the sender,
//!   the receiving application and the ACK's way back are run between measurements.
//!
//! Before measuring, the benchmark runs the zero-allocation check of `tests/zero_alloc.rs` (which
//! `cargo test` runs) on both links and fails unless neither stack allocated in steady state.

#[path = "../tests/support/mod.rs"]
mod support;

use std::cell::{RefCell, RefMut};
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use erebus_alloc_counter::CountingAllocator;
use erebus_net::RecvError;
use erebus_sansio::Instant;
use support::{
    Link, MTU, PACED_RATE, TRANSFER, Transfer, source, steady_state_allocates_nothing, transfer,
};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn bench_stack_throughput(c: &mut Criterion) {
    let source = source();
    let mut read_buf = vec![0u8; 64 * 1024];
    let mut group = c.benchmark_group("stack_throughput");
    group.throughput(Throughput::Bytes(TRANSFER as u64));
    group.sample_size(10);
    for (name, rate) in [("paced_10gbit", Some(PACED_RATE)), ("unpaced", None)] {
        // A checked, counted transfer first: a figure for a broken or allocating path would
        // mislead.
        steady_state_allocates_nothing(rate);
        let mut link = Link::new(rate);
        group.bench_function(format!("tcp_16MiB_one_way_mtu1500/{name}"), |b| {
            b.iter(|| {
                black_box(transfer(
                    &mut link,
                    &mut read_buf,
                    black_box(&source),
                    false,
                ))
            });
        });
    }
    group.finish();
}

/// A connected pair, client (side 0) sending to server (side 1), with the handshake done.
struct SegmentPair {
    transfer: Transfer,
    now: Instant,
    segment: Vec<u8>,
    reply: Vec<u8>,
    /// The length of the server's last reply in `reply`, until the client has it.
    reply_len: Option<usize>,
    read_buf: Vec<u8>,
    payload: Vec<u8>,
}

impl SegmentPair {
    fn new() -> Self {
        let mut pair = Self {
            transfer: Transfer::new(),
            now: Instant::ZERO,
            segment: vec![0; MTU],
            reply: vec![0; MTU],
            reply_len: None,
            read_buf: vec![0; 64 * 1024],
            payload: vec![0x5a; 64 * 1024],
        };
        // Exchange everything both sides have until the handshake is over.
        for _ in 0..10 {
            pair.exchange();
        }
        pair
    }

    /// Delivers everything each side has to send to the other, at the same instant.
    fn exchange(&mut self) {
        for from in [0, 1] {
            while let Some(len) =
                self.transfer.stacks[from].poll_egress(self.now, &mut self.segment)
            {
                self.transfer.stacks[1 - from]
                    .ingress(self.now, &self.segment[..len])
                    .expect("valid packet");
            }
        }
    }

    /// Has the client send one full-size data segment into `self.segment`; its length.
    fn next_segment(&mut self) -> usize {
        self.now += Duration::from_micros(2);
        let handle = self.transfer.handles[0];
        let client = &mut self.transfer.stacks[0];
        let socket = client.socket_mut(handle).expect("client socket");
        if socket.may_send() {
            let _ = socket.send(&self.payload).expect("open for sending");
        }
        client
            .poll_egress(self.now, &mut self.segment)
            .expect("the client has a segment in its window")
    }

    /// The server's application reads what arrived; its last reply (if any) goes back to the
    /// client.
    fn settle(&mut self) {
        if let Some(len) = self.reply_len.take() {
            self.transfer.stacks[0]
                .ingress(self.now, &self.reply[..len])
                .expect("valid ACK");
        }
        let handle = self.transfer.handles[1];
        let socket = self.transfer.stacks[1]
            .socket_mut(handle)
            .expect("server socket");
        loop {
            match socket.recv(&mut self.read_buf) {
                Ok(0) | Err(RecvError::InvalidState | RecvError::Finished) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Settles the previous segment and has the client send the next one: everything but the
/// receiving stack's own calls, run outside the measurement.
fn next_segment(pair: &RefCell<SegmentPair>) -> (RefMut<'_, SegmentPair>, usize) {
    let mut pair = pair.borrow_mut();
    pair.settle();
    let len = pair.next_segment();
    (pair, len)
}

fn bench_tcp_segment(c: &mut Criterion) {
    let mut group = c.benchmark_group("tcp_segment");
    group.throughput(Throughput::Elements(1));
    let pair = RefCell::new(SegmentPair::new());
    group.bench_function("data_segment_in_ack_out/mtu1500", |b| {
        // One segment per batch: each setup depends on what the previous segment did, and
        // criterion times only the routine, the receiving stack's two calls.
        b.iter_batched_ref(
            || next_segment(&pair),
            |(pair, len)| {
                let SegmentPair {
                    transfer,
                    now,
                    segment,
                    reply,
                    reply_len,
                    ..
                } = &mut **pair;
                let server = &mut transfer.stacks[1];
                server
                    .ingress(*now, black_box(&segment[..*len]))
                    .expect("valid segment");
                *reply_len = server.poll_egress(*now, reply);
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_stack_throughput, bench_tcp_segment);
criterion_main!(benches);
