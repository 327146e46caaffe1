//! A hundred outages in a row, simulated: the client over a supervisor whose session dies and
//! comes back, with proxied connections open each time. Nothing may pile up: no socket in the
//! stack, no connection, no timer, no memory.
//!
//! This file is its own test binary with a single test, so the heap it measures is its own.

// The live-bytes counter has to implement `GlobalAlloc`, which is an unsafe trait. It only
// forwards to the system allocator; nothing of it is part of the library.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::{FakeProtocol, control, remote, wall};
use erebus_client::{Client, ClientConfig};
use erebus_net::TcpConfig;
use erebus_proxy::{FrontEnd, ProxyConfig};
use erebus_sansio::io::{
    ConnId, Event, Input, ListenerId, LocalAction, LocalEvent, Output, TransportEvent,
};
use erebus_sansio::tunnel::{Failure, Fault};
use erebus_sansio::{Driven, Instant, Seed};
use erebus_session::{RetryPolicy, Supervisor};

/// Heap bytes in use by the whole process.
static LIVE: AtomicI64 = AtomicI64::new(0);

struct LiveBytes;

fn size(layout: Layout) -> i64 {
    i64::try_from(layout.size()).unwrap_or(i64::MAX)
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter has no effect on memory.
unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(size(layout), Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `alloc` are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(size(layout), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = i64::try_from(new_size).unwrap_or(i64::MAX) - size(layout);
        LIVE.fetch_add(grown, Ordering::Relaxed);
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(size(layout), Ordering::Relaxed);
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: LiveBytes = LiveBytes;

const SERVER: &str = "10.99.0.1:1194";

/// Drains `client` as a driver does; returns the deadline, the events and the local closes.
fn drain(
    client: &mut impl Driven,
    buf: &mut Vec<u8>,
) -> (Option<Instant>, Vec<Event>, Vec<ConnId>) {
    let mut events = Vec::new();
    let mut closed = Vec::new();
    loop {
        match client.poll_output(buf) {
            Output::Transmit { to, .. } => assert_eq!(to, SERVER.parse::<SocketAddr>().unwrap()),
            Output::Local { conn, action } => {
                if action == LocalAction::Close {
                    closed.push(conn);
                }
            }
            Output::Event(event) => events.push(event),
            Output::BufferTooSmall { needed } => buf.resize(needed, 0),
            Output::Timeout(deadline) => return (deadline, events, closed),
        }
    }
}

#[test]
fn a_hundred_outages_leave_no_socket_timer_or_memory_behind() {
    let control = control();
    let tunnel = Supervisor::new(
        FakeProtocol(control.clone()),
        vec![remote(0, "10.99.0.1")],
        RetryPolicy::default(),
        &Seed::from_byte(21),
        wall(),
        Instant::ZERO,
    );
    let config = ClientConfig {
        listeners: vec![FrontEnd::Http],
        proxy: ProxyConfig::default(),
        tcp: TcpConfig::default(),
        dns_servers: Vec::new(),
        tunnel_wait: Duration::from_secs(10),
        limits: erebus_client::Limits::default(),
    };
    let mut client = Client::new(tunnel, config, &Seed::from_byte(22), Instant::ZERO);
    let mut buf = vec![0u8; 65_536];
    let mut now = Instant::ZERO;
    let mut next_conn = 0u64;
    // Sized up front: the test's own bookkeeping must not grow the heap it measures.
    let mut live_after = Vec::with_capacity(100);
    drain(&mut client, &mut buf);
    for round in 0..100 {
        // The transport opens and the session comes up.
        let attempt = client.transport().map(|spec| spec.attempt);
        assert_eq!(attempt, Some(round + 1), "round {round}");
        client
            .handle_input(Input::Transport {
                now,
                event: TransportEvent::Connected {
                    remote: SERVER.parse().unwrap(),
                },
            })
            .unwrap();
        let (_, events, _) = drain(&mut client, &mut buf);
        assert!(
            events.iter().any(|e| matches!(e, Event::Connected(_))),
            "{events:?}"
        );
        // Three proxied connections through it.
        let opened: Vec<ConnId> = (0..3)
            .map(|_| {
                next_conn += 1;
                ConnId(next_conn)
            })
            .collect();
        for &conn in &opened {
            for event in [
                LocalEvent::Accepted {
                    listener: ListenerId(0),
                },
                LocalEvent::Data(b"CONNECT 10.8.0.1:80 HTTP/1.1\r\nHost: 10.8.0.1\r\n\r\n"),
            ] {
                client
                    .handle_input(Input::Local { now, conn, event })
                    .unwrap();
                drain(&mut client, &mut buf);
            }
        }
        assert_eq!(client.stack().handles().count(), 3);
        // The session dies: every connection through it is closed.
        control.borrow_mut().kill = Some(Failure::new(Fault::Timeout, "ping-restart"));
        now += Duration::from_secs(30);
        client.handle_input(Input::Timeout { now }).unwrap();
        let (deadline, events, mut closed) = drain(&mut client, &mut buf);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Reconnecting { .. })),
            "{events:?}"
        );
        closed.sort_unstable();
        assert_eq!(closed, opened, "round {round}");
        assert_eq!(client.stack().handles().count(), 0, "round {round}");
        assert_eq!(control.borrow().alive, 0);
        // One deadline: the next attempt's.
        let deadline = deadline.expect("the next attempt is scheduled");
        assert!(
            deadline <= now + Duration::from_millis(1250),
            "{deadline:?}"
        );
        now = deadline;
        client.handle_input(Input::Timeout { now }).unwrap();
        drain(&mut client, &mut buf);
        control.borrow_mut().built.clear();
        live_after.push(LIVE.load(Ordering::Relaxed));
    }
    assert_eq!(client.stats().connections, 300);
    assert_eq!(client.stats().cut_by_reconnect, 300);
    // Warm-up fills buffers and tables once; after that, the heap is flat.
    let (settled, last) = (live_after[9], live_after[99]);
    eprintln!("live heap after round 10: {settled} bytes, after round 100: {last} bytes");
    assert!(
        last - settled <= 1024,
        "the heap grew by {} bytes over 90 outages",
        last - settled
    );
}
