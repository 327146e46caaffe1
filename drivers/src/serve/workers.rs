//! A small bounded pool of threads for the blocking calls a server machine asks of its driver:
//! name resolution and credential checks. Answers go back through a channel, and a wake
//! function tells the event loop to collect them.

use std::collections::VecDeque;
use std::net::{IpAddr, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

/// Jobs that may wait for a thread; beyond this, a job is answered at once with its fallback.
const MAX_QUEUED: usize = 1024;
/// How long an idle worker thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);

/// The answer of one blocking call, to be fed to the machine.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A name's addresses (none when it does not resolve).
    Resolved { query: u64, addrs: Vec<IpAddr> },
    /// Whether a username and password were accepted.
    Checked { request: u64, accepted: bool },
}

/// The function that wakes the event loop once an answer is in the channel.
pub(crate) type Wake = Arc<dyn Fn() + Send + Sync>;

struct Job {
    work: Box<dyn FnOnce() -> Answer + Send>,
    /// The answer when the work panics.
    fallback: Answer,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    idle: usize,
    threads: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Up to `max_threads` threads running jobs in order; threads start when work waits and exit
/// after a while without any.
pub(crate) struct Workers {
    name: &'static str,
    max_threads: usize,
    shared: Arc<Shared>,
    answers: mpsc::Sender<Answer>,
    wake: Wake,
}

impl Workers {
    pub(crate) fn new(
        name: &'static str,
        max_threads: usize,
        answers: mpsc::Sender<Answer>,
        wake: Wake,
    ) -> Self {
        Self {
            name,
            max_threads: max_threads.max(1),
            shared: Arc::default(),
            answers,
            wake,
        }
    }

    /// Runs `work` on a worker thread and sends its answer (`fallback` if it panics). When
    /// too many jobs wait already, or no thread can be started, sends `fallback` at once.
    pub(crate) fn run(&self, fallback: Answer, work: impl FnOnce() -> Answer + Send + 'static) {
        let mut state = self.shared.lock();
        if state.closed || state.queue.len() >= MAX_QUEUED {
            drop(state);
            tracing::warn!("{}: too many requests wait; one is refused", self.name);
            self.answer_now(fallback);
            return;
        }
        state.queue.push_back(Job {
            work: Box::new(work),
            fallback,
        });
        if state.queue.len() > state.idle && state.threads < self.max_threads {
            let shared = self.shared.clone();
            let (answers, wake) = (self.answers.clone(), self.wake.clone());
            let spawned = std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || work_loop(&shared, &answers, &wake));
            match spawned {
                Ok(_) => state.threads += 1,
                Err(e) if state.threads == 0 => {
                    tracing::warn!("{}: cannot start a thread: {e}", self.name);
                    let jobs: Vec<Job> = state.queue.drain(..).collect();
                    drop(state);
                    for job in jobs {
                        self.answer_now(job.fallback);
                    }
                    return;
                }
                // The threads already running take the job in turn.
                Err(e) => tracing::debug!("{}: cannot start another thread: {e}", self.name),
            }
        }
        drop(state);
        self.shared.work.notify_one();
    }

    fn answer_now(&self, answer: Answer) {
        if self.answers.send(answer).is_ok() {
            (self.wake)();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.queue.clear();
        drop(state);
        self.shared.work.notify_all();
    }
}

fn work_loop(shared: &Shared, answers: &mpsc::Sender<Answer>, wake: &Wake) {
    loop {
        let job = {
            let mut state = shared.lock();
            let job = loop {
                if state.closed {
                    break None;
                }
                if let Some(job) = state.queue.pop_front() {
                    break Some(job);
                }
                state.idle += 1;
                let (next, waited) = shared
                    .work
                    .wait_timeout(state, IDLE_EXIT)
                    .unwrap_or_else(PoisonError::into_inner);
                state = next;
                state.idle -= 1;
                if waited.timed_out() && state.queue.is_empty() {
                    break None;
                }
            };
            if job.is_none() {
                state.threads -= 1;
            }
            job
        };
        let Some(Job { work, fallback }) = job else {
            return;
        };
        let answer = std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
            tracing::warn!("a blocking request panicked; it is answered negatively");
            fallback
        });
        if answers.send(answer).is_err() {
            // The driver is gone; the pool is closing.
            continue;
        }
        wake();
    }
}

/// The addresses of `name` from the system resolver, without duplicates, in its order; an
/// address literal is its own answer.
pub(crate) fn resolve_name(name: &str) -> Vec<IpAddr> {
    if let Some(addr) = crate::pump::literal(name, 0) {
        return vec![addr.ip()];
    }
    let mut addrs: Vec<IpAddr> = Vec::new();
    match (name, 0).to_socket_addrs() {
        Ok(found) => {
            for addr in found {
                if !addrs.contains(&addr.ip()) {
                    addrs.push(addr.ip());
                }
            }
        }
        Err(e) => tracing::debug!("cannot resolve {name}: {e}"),
    }
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_back_and_panics_answer_the_fallback() {
        let (tx, rx) = mpsc::channel();
        let workers = Workers::new("test-worker", 2, tx, Arc::new(|| {}));
        for request in 0..10 {
            workers.run(
                Answer::Checked {
                    request,
                    accepted: false,
                },
                move || {
                    assert!(request != 3, "checker failed");
                    Answer::Checked {
                        request,
                        accepted: true,
                    }
                },
            );
        }
        let mut seen: Vec<(u64, bool)> = (0..10)
            .map(|_| match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Answer::Checked { request, accepted }) => (request, accepted),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        seen.sort_unstable();
        let expected: Vec<(u64, bool)> = (0..10).map(|r| (r, r != 3)).collect();
        assert_eq!(seen, expected);
        assert!(workers.shared.lock().threads <= 2);
    }

    #[test]
    fn localhost_resolves_without_duplicates() {
        let addrs = resolve_name("localhost");
        assert!(addrs.iter().any(IpAddr::is_loopback), "{addrs:?}");
        let mut unique = addrs.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), addrs.len());
        assert_eq!(
            resolve_name("[::1]"),
            vec![IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])]
        );
    }
}
