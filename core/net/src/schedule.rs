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
    }

    /// The socket is gone.
    pub(crate) fn forget(&mut self, handle: SocketHandle) {
        // Its handle may still sit in a queue or the heap; those are skipped as unknown.
        self.entries.remove(&handle);
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

    /// The earliest timer of the sockets that are not due. It may be earlier than needed (a
    /// stale entry not yet skipped), never later.
    pub(crate) fn earliest_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|&Reverse((at, _))| at)
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
