//! The supervisor's lifecycle with a protocol whose sessions the test controls: which server
//! is tried when, how long it waits, when it gives up, and that it keeps nothing it no longer
//! needs.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{FakeProtocol, Shared, control, remote, wall};
use erebus_sansio::io::TransportError;
use erebus_sansio::tunnel::{Failure, Fault, Tunnel, TunnelEvent};
use erebus_sansio::{Instant, Seed};
use erebus_session::{Remote, RetryPolicy, Supervisor};

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn supervisor(
    remotes: Vec<Remote>,
    policy: RetryPolicy,
    seed: u8,
) -> (Supervisor<FakeProtocol>, Shared) {
    let control = control();
    let supervisor = Supervisor::new(
        FakeProtocol(control.clone()),
        remotes,
        policy,
        &Seed::from_byte(seed),
        wall(),
        Instant::ZERO,
    );
    (supervisor, control)
}

fn events(supervisor: &mut Supervisor<FakeProtocol>) -> Vec<TunnelEvent> {
    std::iter::from_fn(|| supervisor.poll_event()).collect()
}

/// The host and attempt the supervisor wants a transport for now.
fn wanted(supervisor: &Supervisor<FakeProtocol>) -> Option<(String, u64)> {
    supervisor
        .transport()
        .map(|spec| (spec.host.clone(), spec.attempt))
}

/// Waits out the supervisor's deadline; returns the time it fired.
fn wait(supervisor: &mut Supervisor<FakeProtocol>) -> Instant {
    let (deadline, _) = supervisor.poll_timeout().expect("a deadline");
    supervisor.handle_timeout(deadline);
    deadline
}

fn retry_in(events: &[TunnelEvent]) -> Duration {
    events
        .iter()
        .find_map(|e| match e {
            TunnelEvent::Reconnecting { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .expect("a Reconnecting event")
}

#[test]
fn connects_and_comes_up_only_once_the_transport_is_open() {
    let (mut s, control) = supervisor(vec![remote(0, "10.99.0.1")], RetryPolicy::default(), 1);
    let first = events(&mut s);
    assert!(matches!(&first[..], [TunnelEvent::Connecting(spec)] if spec.host == "10.99.0.1"));
    assert_eq!(wanted(&s), Some(("10.99.0.1".into(), 1)));
    assert_eq!(
        control.borrow().built.len(),
        0,
        "no session before the transport"
    );
    let mut buf = [0u8; 64];
    assert!(s.poll_transmit(Instant::ZERO, &mut buf).is_none());
    s.transport_connected(Instant::from_millis(5), addr("10.99.0.1:1194"));
    assert_eq!(control.borrow().built, [(0, addr("10.99.0.1:1194"))]);
    assert!(matches!(&events(&mut s)[..], [TunnelEvent::Up(_)]));
    assert!(s.is_up());
}

#[test]
fn a_lost_session_is_rebuilt_on_the_same_server_after_the_wait() {
    let remotes = vec![remote(0, "10.99.0.1"), remote(1, "10.99.0.9")];
    let (mut s, control) = supervisor(remotes, RetryPolicy::default(), 2);
    s.transport_connected(Instant::ZERO, addr("10.99.0.1:1194"));
    events(&mut s);
    control.borrow_mut().kill = Some(Failure::new(Fault::Timeout, "ping-restart"));
    s.handle_timeout(Instant::from_secs(100));
    let lost = events(&mut s);
    assert!(matches!(
        &lost[..],
        [TunnelEvent::Reconnecting { reason, .. }] if reason.message == "ping-restart"
    ));
    let delay = retry_in(&lost);
    assert!(
        (Duration::from_secs(1)..=Duration::from_millis(1250)).contains(&delay),
        "{delay:?}"
    );
    assert_eq!(wanted(&s), None, "no transport while waiting");
    assert_eq!(control.borrow().alive, 0, "the old session is gone");
    let fired = wait(&mut s);
    assert_eq!(fired, Instant::from_secs(100) + delay);
    // A session that was up is tried again where it worked.
    assert_eq!(wanted(&s), Some(("10.99.0.1".into(), 2)));
    s.transport_connected(fired, addr("10.99.0.1:1194"));
    assert!(matches!(
        &events(&mut s)[..],
        [TunnelEvent::Connecting(_), TunnelEvent::Up(_)]
    ));
}

#[test]
fn a_failed_attempt_moves_on_to_the_next_server() {
    let remotes = vec![remote(0, "10.99.0.1"), remote(1, "10.99.0.9")];
    let (mut s, control) = supervisor(remotes, RetryPolicy::default(), 3);
    events(&mut s);
    // The first server is dead: its TCP connect is refused.
    s.transport_closed(Instant::from_millis(3), TransportError::Refused);
    let failed = events(&mut s);
    assert!(matches!(
        &failed[..],
        [TunnelEvent::Reconnecting { reason, .. }]
            if reason.message.contains("10.99.0.1:1194") && reason.message.contains("refused")
    ));
    wait(&mut s);
    assert_eq!(wanted(&s), Some(("10.99.0.9".into(), 2)));
    s.transport_connected(Instant::from_secs(2), addr("10.99.0.9:1194"));
    assert_eq!(control.borrow().built, [(1, addr("10.99.0.9:1194"))]);
}

#[test]
fn a_silent_server_is_left_after_server_poll_timeout() {
    let remotes = vec![remote(0, "10.99.0.1"), remote(1, "10.99.0.9")];
    let (mut s, control) = supervisor(remotes, RetryPolicy::default(), 4);
    control.borrow_mut().come_up = false;
    events(&mut s);
    s.transport_connected(Instant::ZERO, addr("10.99.0.1:1194"));
    assert_eq!(
        s.poll_timeout(),
        Some((Instant::from_secs(10), "server-poll-timeout"))
    );
    s.handle_timeout(Instant::from_secs(10));
    let lost = events(&mut s);
    assert!(matches!(
        &lost[..],
        [TunnelEvent::Reconnecting { reason, .. }]
            if reason.message.contains("server-poll-timeout (10 s)")
    ));
    wait(&mut s);
    assert_eq!(wanted(&s), Some(("10.99.0.9".into(), 2)));
}

#[test]
fn a_server_that_answers_is_not_left_for_silence() {
    let (mut s, control) = supervisor(vec![remote(0, "10.99.0.1")], RetryPolicy::default(), 5);
    control.borrow_mut().come_up = false;
    s.transport_connected(Instant::ZERO, addr("10.99.0.1:1194"));
    let mut packet = [0x45u8; 20];
    assert!(s.decapsulate(Instant::from_secs(1), &mut packet).is_ok());
    s.handle_timeout(Instant::from_secs(30));
    assert!(
        events(&mut s)
            .iter()
            .all(|e| matches!(e, TunnelEvent::Connecting(_)))
    );
    assert_eq!(wanted(&s), Some(("10.99.0.1".into(), 1)));
}

#[test]
fn faults_retrying_cannot_fix_end_it_at_once() {
    for fault in [
        Fault::Auth,
        Fault::Config,
        Fault::PeerIncompatible,
        Fault::Halted,
    ] {
        let (mut s, control) = supervisor(vec![remote(0, "10.99.0.1")], RetryPolicy::default(), 6);
        control.borrow_mut().refuse_with = Some(fault);
        s.transport_connected(Instant::ZERO, addr("10.99.0.1:1194"));
        let end = events(&mut s);
        assert!(
            matches!(end.last(), Some(TunnelEvent::Down(f)) if f.fault == fault),
            "{fault:?}: {end:?}"
        );
        assert!(s.is_down());
        assert_eq!(wanted(&s), None);
        assert_eq!(s.poll_timeout(), None, "{fault:?}: no retry is scheduled");
        assert_eq!(control.borrow().alive, 0);
    }
}

#[test]
fn connect_retry_max_gives_up_after_every_server_was_tried_that_often() {
    let policy = RetryPolicy {
        max_tries_per_remote: Some(2),
        ..RetryPolicy::default()
    };
    let remotes = vec![remote(0, "10.99.0.1"), remote(1, "10.99.0.9")];
    let (mut s, _) = supervisor(remotes, policy, 7);
    let mut tried = Vec::new();
    loop {
        tried.extend(wanted(&s).map(|(host, _)| host));
        s.transport_closed(Instant::ZERO, TransportError::Refused);
        let after = events(&mut s);
        if let Some(TunnelEvent::Down(failure)) = after.last() {
            assert_eq!(failure.fault, Fault::Timeout);
            assert!(failure.message.contains("connect-retry-max"), "{failure}");
            break;
        }
        wait(&mut s);
        assert!(tried.len() < 10, "never gave up: {tried:?}");
    }
    assert_eq!(tried, ["10.99.0.1", "10.99.0.9", "10.99.0.1", "10.99.0.9"]);
}

#[test]
fn resolv_retry_bounds_how_long_an_unresolvable_name_is_retried() {
    let policy = RetryPolicy {
        resolve_for: Some(Duration::from_secs(5)),
        ..RetryPolicy::default()
    };
    let (mut s, _) = supervisor(vec![remote(0, "vpn.example")], policy, 8);
    let mut now = Instant::ZERO;
    let mut attempts = 0;
    loop {
        attempts += 1;
        s.transport_closed(now, TransportError::Unresolved);
        if let Some(TunnelEvent::Down(failure)) = events(&mut s).last() {
            assert!(failure.message.contains("resolv-retry (5 s)"), "{failure}");
            break;
        }
        now = wait(&mut s);
        assert!(attempts < 20);
    }
    assert!(
        now >= Instant::from_secs(5),
        "gave up too early, at {now:?}"
    );
    assert!(attempts >= 4, "{attempts} attempts in 5 s of 1 s waits");
}

#[test]
fn remote_random_shuffles_once_per_seed() {
    let remotes: Vec<Remote> = (0..6)
        .map(|i| remote(i, &format!("10.99.0.{}", i + 1)))
        .collect();
    let random = RetryPolicy {
        random_order: true,
        ..RetryPolicy::default()
    };
    let order = |seed| supervisor(remotes.clone(), random, seed).0.order().to_vec();
    assert_eq!(order(9), order(9), "the same seed, the same order");
    let orders: std::collections::BTreeSet<Vec<usize>> = (0..20).map(order).collect();
    assert!(
        orders.len() > 10,
        "only {} orders from 20 seeds",
        orders.len()
    );
    for order in &orders {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4, 5], "every server exactly once");
    }
    let (plain, _) = supervisor(remotes, RetryPolicy::default(), 9);
    assert_eq!(plain.order(), [0, 1, 2, 3, 4, 5]);
}

#[test]
fn waits_double_after_five_failed_rounds_and_stay_under_the_maximum() {
    let (mut s, _) = supervisor(vec![remote(0, "10.99.0.1")], RetryPolicy::default(), 10);
    let mut waits = Vec::new();
    let mut now = Instant::ZERO;
    for _ in 0..12 {
        s.transport_closed(now, TransportError::Refused);
        waits.push(retry_in(&events(&mut s)));
        now = wait(&mut s);
    }
    let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
    assert_eq!(&secs[..5], [1, 1, 1, 1, 1], "{waits:?}");
    assert_eq!(&secs[5..8], [2, 4, 8], "{waits:?}");
    assert!(
        waits[8..].iter().all(|w| *w <= Duration::from_secs(10)),
        "{waits:?}"
    );
}

#[test]
fn close_ends_it_whatever_the_state() {
    // Waiting between attempts.
    let (mut s, _) = supervisor(vec![remote(0, "10.99.0.1")], RetryPolicy::default(), 11);
    s.transport_closed(Instant::ZERO, TransportError::Refused);
    events(&mut s);
    s.close(Instant::from_millis(10));
    assert!(
        matches!(events(&mut s).last(), Some(TunnelEvent::Down(f)) if f.fault == Fault::Closed)
    );
    assert_eq!(s.poll_timeout(), None);
    // Up: the session closes itself (its exit notification), then it is down for good.
    let (mut s, control) = supervisor(vec![remote(0, "10.99.0.1")], RetryPolicy::default(), 12);
    s.transport_connected(Instant::ZERO, addr("10.99.0.1:1194"));
    events(&mut s);
    s.close(Instant::from_secs(1));
    assert!(
        matches!(events(&mut s).last(), Some(TunnelEvent::Down(f)) if f.fault == Fault::Closed)
    );
    assert!(s.is_down());
    assert_eq!(control.borrow().alive, 0);
}

#[test]
fn a_hundred_losses_keep_one_session_and_one_deadline() {
    let (mut s, control) = supervisor(vec![remote(0, "10.99.0.1")], RetryPolicy::default(), 13);
    let mut now = Instant::ZERO;
    for round in 0..100u64 {
        s.transport_connected(now, addr("10.99.0.1:1194"));
        assert!(s.is_up(), "round {round}");
        assert_eq!(control.borrow().alive, 1);
        control.borrow_mut().kill = Some(Failure::new(Fault::Timeout, "ping-restart"));
        now += Duration::from_secs(60);
        s.handle_timeout(now);
        assert_eq!(control.borrow().alive, 0);
        let seen = events(&mut s);
        assert!(seen.len() <= 3, "events pile up: {seen:?}");
        now = wait(&mut s);
        assert_eq!(wanted(&s).map(|(_, attempt)| attempt), Some(round + 2));
    }
    // Every loss followed a session that was up: the wait never grew.
    assert!(s.stats().reconnects == 100 && s.stats().sessions_up == 100);
}
