//! Group commit: writes that arrive while a batch is being committed wait in a queue, and the
//! next batch takes all of them (LevelDB's writer queue). One thread at a time, the leader, runs
//! a batch on behalf of everyone in it; each caller gets its own result back.
//!
//! A write that arrives when nobody is writing leads at once (a lone write costs what it did
//! before: no extra thread, no waiting for company). When a leader is done it hands the lead to
//! the oldest waiting write, so nobody leads twice in a row while others wait, and the order of
//! the queue is the order of the batches. Nothing here knows about SQLite: the caller's `run`
//! commits a batch and returns one result per job, in order.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// At most this many writes in one batch (bounds one commit's time and the queue's hold on it).
pub(crate) const MAX_BATCH: usize = 256;

/// The queue of writes waiting for a batch.
pub(crate) struct GroupCommit<J, R> {
    queue: Mutex<Queue<J, R>>,
}

struct Queue<J, R> {
    pending: VecDeque<(J, Arc<Ticket<R>>)>,
    /// Some thread is running a batch or has been told to run the next one. Invariant: when
    /// false, `pending` is empty.
    leading: bool,
}

/// Where a waiting caller learns what happened to its write.
struct Ticket<R> {
    slot: Mutex<Slot<R>>,
    ready: Condvar,
}

enum Slot<R> {
    Waiting,
    /// Run the next batch (it starts with this caller's write).
    Lead,
    Done(R),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves the data consistent (plain pushes, pops and flags).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<R> Ticket<R> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            slot: Mutex::new(Slot::Waiting),
            ready: Condvar::new(),
        })
    }

    fn set(&self, slot: Slot<R>) {
        *lock(&self.slot) = slot;
        self.ready.notify_one();
    }

    /// Waits until the write is done (`Ok`) or this caller is to lead (`Err(())`).
    fn wait(&self) -> Result<R, ()> {
        let mut slot = lock(&self.slot);
        loop {
            match std::mem::replace(&mut *slot, Slot::Waiting) {
                Slot::Waiting => {
                    slot = self
                        .ready
                        .wait(slot)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Slot::Lead => return Err(()),
                Slot::Done(result) => return Ok(result),
            }
        }
    }
}

impl<J, R> GroupCommit<J, R> {
    pub(crate) fn new() -> Self {
        Self {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                leading: false,
            }),
        }
    }

    /// Runs `job` in a batch and returns its result. `run` gets a batch's jobs in arrival order
    /// and returns their results in the same order; `abandoned` is the result of a job whose
    /// batch ended without one (its leader panicked, or `run` returned too few results).
    pub(crate) fn submit(
        &self,
        job: J,
        run: impl FnOnce(Vec<J>) -> Vec<R>,
        abandoned: impl Fn() -> R,
    ) -> R {
        let ticket = Ticket::new();
        let lead_now = {
            let mut queue = lock(&self.queue);
            queue.pending.push_back((job, ticket.clone()));
            !std::mem::replace(&mut queue.leading, true)
        };
        if !lead_now && let Ok(result) = ticket.wait() {
            return result;
        }
        // This caller leads. Its job is in the batch: either the queue held only it, or the lead
        // was handed to the oldest waiting job, which is first in the queue.
        let (jobs, tickets): (Vec<J>, Vec<Arc<Ticket<R>>>) = {
            let mut queue = lock(&self.queue);
            let count = queue.pending.len().min(MAX_BATCH);
            queue.pending.drain(..count).unzip()
        };
        let mut batch = Batch {
            group: self,
            tickets: tickets.into(),
            abandoned: &abandoned,
        };
        let mut own = None;
        for result in run(jobs) {
            let Some(waiting) = batch.tickets.pop_front() else {
                break;
            };
            if Arc::ptr_eq(&waiting, &ticket) {
                own = Some(result);
            } else {
                waiting.set(Slot::Done(result));
            }
        }
        drop(batch);
        own.unwrap_or_else(abandoned)
    }
}

#[cfg(test)]
impl<J, R> GroupCommit<J, R> {
    /// (writes waiting, whether a batch is being run or about to be).
    pub(crate) fn queue_state(&self) -> (usize, bool) {
        let queue = lock(&self.queue);
        (queue.pending.len(), queue.leading)
    }
}

/// The tickets of the batch being run. Dropped when the batch is over (or its leader unwinds):
/// the jobs left without a result get `abandoned()`, and the lead passes on.
struct Batch<'a, J, R> {
    group: &'a GroupCommit<J, R>,
    tickets: VecDeque<Arc<Ticket<R>>>,
    abandoned: &'a dyn Fn() -> R,
}

impl<J, R> Drop for Batch<'_, J, R> {
    fn drop(&mut self) {
        for waiting in self.tickets.drain(..) {
            waiting.set(Slot::Done((self.abandoned)()));
        }
        let mut queue = lock(&self.group.queue);
        match queue.pending.front() {
            Some((_, next)) => next.set(Slot::Lead),
            None => queue.leading = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_lone_job_runs_on_its_own_thread_at_once() {
        let group = GroupCommit::<u32, u32>::new();
        let caller = std::thread::current().id();
        let result = group.submit(
            7,
            |jobs| {
                assert_eq!(std::thread::current().id(), caller);
                jobs.into_iter().map(|j| j * 2).collect()
            },
            || 0,
        );
        assert_eq!(result, 14);
    }

    #[test]
    fn concurrent_jobs_are_batched_and_each_gets_its_own_result() {
        let group = Arc::new(GroupCommit::<usize, usize>::new());
        let batches = Arc::new(AtomicUsize::new(0));
        let threads = 16;
        let per_thread = 200;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (group, batches, barrier) = (group.clone(), batches.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..per_thread {
                        let job = t * per_thread + i;
                        let result = group.submit(
                            job,
                            |jobs| {
                                batches.fetch_add(1, Ordering::Relaxed);
                                std::thread::yield_now();
                                jobs.into_iter().map(|j| j + 1_000_000).collect()
                            },
                            || usize::MAX,
                        );
                        assert_eq!(result, job + 1_000_000);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let batches = batches.load(Ordering::Relaxed);
        assert!(batches <= threads * per_thread, "{batches}");
        let queue = lock(&group.queue);
        assert!(queue.pending.is_empty() && !queue.leading);
    }

    #[test]
    fn a_batch_without_results_abandons_its_jobs_and_passes_the_lead() {
        let group = GroupCommit::<u32, Option<u32>>::new();
        assert_eq!(group.submit(1, |_| Vec::new(), || None), None);
        // The lead was released: the next job runs.
        assert_eq!(
            group.submit(2, |jobs| jobs.into_iter().map(Some).collect(), || None),
            Some(2)
        );
    }
}
