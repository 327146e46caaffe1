//! Which sockets of a [`Stack`](crate::Stack) need attention, so that polling costs what is
//! due rather than the number of sockets.
//!
//! A socket changes only when the stack hands it a segment, when the application uses it
//! ([`Stack::socket_mut`](crate::Stack::socket_mut)), when it is dispatched, or when one of
//! its timers fires. The first two mark it *due*: it is dispatched at the next egress poll and
//! looked at by the next event poll. A dispatched socket that has nothing more to send files
//! its next timer here; the timer marks it due again when it expires. A thousand idle
//! connections then cost nothing per packet of the one that is busy.
//!
//! Each socket is queued at most once in each queue (flags in its entry), so the queues never
//! hold more handles than there are sockets, and once they and the timer heap have reached
//! that size nothing here allocates again.

use core::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use erebus_sansio::Instant;

use crate::stack::SocketHandle;

/// What the schedule knows of one socket.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Queued in `due`.
    due: bool,
    /// Queued in `eventful`.
    eventful: bool,
    /// The socket's next timer, as it said after its last dispatch; `None` while due.
    deadline: Option<Instant>,
}

/// The sockets to dispatch, the sockets that may have events, and the timers.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    entries: BTreeMap<SocketHandle, Entry>,
    /// Sockets that may have something to send now, in the order they became due.
    due: VecDeque<SocketHandle>,
    /// Sockets that may have events for the application.
    eventful: VecDeque<SocketHandle>,
    /// Every socket's deadline, earliest first. An entry whose socket has since moved its
    /// deadline (or is due, or gone) is stale and skipped when it comes to the top.
    timers: BinaryHeap<Reverse<(Instant, SocketHandle)>>,
}

impl Schedule {
    /// A socket was added or changed: dispatch it and look at its events.
    pub(crate) fn touch(&mut self, handle: SocketHandle) {
        let entry = self.entries.entry(handle).or_default();
        if !entry.due {
            entry.due = true;
            // Its heap entry is stale from now on (it may be skipped and dropped while the
            // socket is due); the dispatch that ends this turn files the deadline afresh.
            entry.deadline = None;
            self.due.push_back(handle);
        }
        if !entry.eventful {
            entry.eventful = true;
            self.eventful.push_back(handle);
        }
        self.prune();
    }

    /// The socket is gone.
    pub(crate) fn forget(&mut self, handle: SocketHandle) {
        // Its handle may still sit in a queue or the heap; those are skipped as unknown.
        self.entries.remove(&handle);
        self.prune();
    }

    /// Marks due every socket whose timer expired by `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, handle))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(entry) = self.entries.get(&handle)
                && entry.deadline == Some(at)
                && !entry.due
            {
                self.touch(handle);
            }
        }
    }

    /// The socket to dispatch next, if any; it stays first until [`Schedule::sent`] or
    /// [`Schedule::idle`] says how that went.
    pub(crate) fn next_due(&mut self) -> Option<SocketHandle> {
        while let Some(&handle) = self.due.front() {
            if self.entries.get(&handle).is_some_and(|e| e.due) {
                return Some(handle);
            }
            self.due.pop_front();
        }
        None
    }

    /// The first due socket sent a packet: it goes to the back of the queue, so that busy
    /// sockets take turns, and may have events.
    pub(crate) fn sent(&mut self, handle: SocketHandle) {
        if self.due.front() == Some(&handle) {
            self.due.pop_front();
            self.due.push_back(handle);
        }
        if let Some(entry) = self.entries.get_mut(&handle)
            && !entry.eventful
        {
            entry.eventful = true;
            self.eventful.push_back(handle);
        }
    }

    /// The first due socket has nothing to send now; its next timer is `deadline`. A dispatch
    /// runs its timers, so it may have events as well.
    pub(crate) fn idle(&mut self, handle: SocketHandle, deadline: Option<Instant>) {
        if self.due.front() == Some(&handle) {
            self.due.pop_front();
        }
        let Some(entry) = self.entries.get_mut(&handle) else {
            return;
        };
        entry.due = false;
        let moved = entry.deadline != deadline;
        entry.deadline = deadline;
        if !entry.eventful {
            entry.eventful = true;
            self.eventful.push_back(handle);
        }
        if let (true, Some(at)) = (moved, deadline) {
            self.timers.push(Reverse((at, handle)));
            self.compact();
        }
        self.prune();
    }

    /// The next socket that may have events; it leaves the queue.
    pub(crate) fn next_eventful(&mut self) -> Option<SocketHandle> {
        while let Some(handle) = self.eventful.pop_front() {
            if let Some(entry) = self.entries.get_mut(&handle)
                && entry.eventful
            {
                entry.eventful = false;
                return Some(handle);
            }
        }
        None
    }

    /// The due sockets, whose deadlines the caller must ask them for.
    pub(crate) fn due(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.due
            .iter()
            .copied()
            .filter(|h| self.entries.get(h).is_some_and(|e| e.due))
    }

    /// The earliest timer of the sockets that are not due (the top of the heap is never
    /// stale: every change prunes it).
    pub(crate) fn earliest_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|&Reverse((at, _))| at)
    }

    /// Drops stale entries from the top of the heap, so that its top is a live timer: a
    /// removed or rescheduled socket's old deadline must not wake the caller for nothing.
    fn prune(&mut self) {
        while let Some(&Reverse((at, handle))) = self.timers.peek() {
            let live = self
                .entries
                .get(&handle)
                .is_some_and(|e| !e.due && e.deadline == Some(at));
            if live {
                break;
            }
            self.timers.pop();
        }
    }

    /// Rebuilds the heap from the entries when stale ones outnumber the live ones, so that a
    /// long transfer, which moves its retransmission timer with every acknowledgment, does not
    /// grow the heap without bound. The heap keeps its capacity.
    fn compact(&mut self) {
        if self.timers.len() <= 2 * self.entries.len() + 64 {
            return;
        }
        let mut timers = core::mem::take(&mut self.timers).into_vec();
        timers.clear();
        timers.extend(
            self.entries
                .iter()
                .filter(|(_, e)| !e.due)
                .filter_map(|(&h, e)| e.deadline.map(|at| Reverse((at, h)))),
        );
        self.timers = BinaryHeap::from(timers);
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn an_idle_socket_becomes_due_when_its_timer_expires_and_not_before() {
        let mut schedule = Schedule::default();
        let socket = SocketHandle::for_tests(1);
        schedule.touch(socket);
        assert_eq!(schedule.next_due(), Some(socket));
        schedule.idle(socket, Some(at(200)));
        assert_eq!(schedule.next_due(), None);
        assert_eq!(schedule.earliest_timer(), Some(at(200)));
        schedule.expire(at(199));
        assert_eq!(schedule.next_due(), None);
        schedule.expire(at(200));
        assert_eq!(schedule.next_due(), Some(socket));
    }

    #[test]
    fn a_touched_socket_files_its_timer_again_even_when_unchanged() {
        let mut schedule = Schedule::default();
        let socket = SocketHandle::for_tests(1);
        schedule.touch(socket);
        schedule.idle(socket, Some(at(200)));
        // Touched and dispatched again, with the same deadline: the old heap entry may have
        // been dropped meanwhile, so the timer must still fire.
        schedule.touch(socket);
        schedule.expire(at(300));
        assert_eq!(schedule.next_due(), Some(socket));
        schedule.idle(socket, Some(at(400)));
        schedule.expire(at(400));
        assert_eq!(schedule.next_due(), Some(socket));
    }

    #[test]
    fn busy_sockets_take_turns_and_each_is_queued_once() {
        let mut schedule = Schedule::default();
        let (a, b) = (SocketHandle::for_tests(1), SocketHandle::for_tests(2));
        for _ in 0..3 {
            schedule.touch(a);
            schedule.touch(b);
        }
        assert_eq!(schedule.due().count(), 2);
        assert_eq!(schedule.next_due(), Some(a));
        schedule.sent(a);
        assert_eq!(schedule.next_due(), Some(b));
        schedule.idle(b, None);
        assert_eq!(schedule.next_due(), Some(a));
        schedule.idle(a, None);
        assert_eq!(schedule.next_due(), None);
        let mut eventful = Vec::new();
        while let Some(h) = schedule.next_eventful() {
            eventful.push(h);
        }
        assert_eq!(eventful, [a, b]);
    }

    #[test]
    fn the_earliest_timer_is_never_a_stale_one() {
        let mut schedule = Schedule::default();
        let (a, b) = (SocketHandle::for_tests(1), SocketHandle::for_tests(2));
        schedule.touch(a);
        schedule.idle(a, Some(at(100)));
        schedule.touch(b);
        schedule.idle(b, Some(at(500)));
        assert_eq!(schedule.earliest_timer(), Some(at(100)));
        schedule.forget(a);
        assert_eq!(schedule.earliest_timer(), Some(at(500)));
        schedule.touch(b);
        assert_eq!(schedule.earliest_timer(), None);
        schedule.idle(b, Some(at(700)));
        assert_eq!(schedule.earliest_timer(), Some(at(700)));
    }

    #[test]
    fn a_forgotten_socket_is_skipped_everywhere() {
        let mut schedule = Schedule::default();
        let socket = SocketHandle::for_tests(1);
        schedule.touch(socket);
        schedule.forget(socket);
        assert_eq!(schedule.next_due(), None);
        assert_eq!(schedule.next_eventful(), None);
        assert_eq!(schedule.due().count(), 0);
    }

    #[test]
    fn moving_timers_do_not_grow_the_heap_without_bound() {
        let mut schedule = Schedule::default();
        let sockets: Vec<_> = (0..10).map(SocketHandle::for_tests).collect();
        for step in 0..100_000u64 {
            let socket = sockets[(step % 10) as usize];
            schedule.touch(socket);
            assert_eq!(schedule.next_due(), Some(socket));
            // A retransmission timer that moves with every acknowledgment.
            schedule.idle(socket, Some(at(step + 200)));
        }
        assert!(
            schedule.timers.len() <= 2 * 10 + 64 + 1,
            "{}",
            schedule.timers.len()
        );
        schedule.expire(at(100_000 + 200));
        assert_eq!(schedule.due().count(), 10);
    }
}
