//! The controllers' work queue, with client-go's rate-limiting workqueue semantics (`Add`,
//! `AddAfter`, `AddRateLimited`, `Forget`, `NumRequeues`, `Get`/`Done`, `ShutDown`):
//!
//! - A key is queued at most once: adding a queued key again does nothing ("dirty" set).
//! - A key handed out by [`WorkQueue::next`] is *processing* until [`WorkQueue::done`]; no other
//!   worker gets it meanwhile. Added again while processing, it is queued once `done` is called,
//!   so the change that caused the add is reconciled from a fresh read.
//! - [`WorkQueue::add_after`] holds a key back until a deadline (an earlier deadline replaces a
//!   later one for the same key); a delayed key is independent of a queued one, as in client-go.
//! - [`WorkQueue::add_rate_limited`] is `add_after` with the key's exponential backoff
//!   (5 ms, 10 ms, 20 ms, ... capped); [`WorkQueue::forget`] resets it after a success.
//!
//! Workers wait on a [`Notify`] and, while keys are delayed, on a timer for the earliest
//! deadline: nothing polls. The typical worker:
//!
//! ```
//! # async fn reconcile(_: &str) -> Result<(), ()> { Ok(()) }
//! # async fn worker(queue: ferrovirt_controllers::queue::WorkQueue<String>) {
//! while let Some(key) = queue.next().await {
//!     match reconcile(&key).await {
//!         Ok(()) => queue.forget(&key),
//!         Err(()) => queue.add_rate_limited(key.clone()),
//!     }
//!     queue.done(&key);
//! }
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The first retry's delay; each further failure doubles it (client-go's
/// `ItemExponentialFailureRateLimiter` base).
pub const BASE_BACKOFF: Duration = Duration::from_millis(5);

/// The longest retry delay by default.
///
/// client-go caps at 1000 s because its controllers share a remote API server with many others:
/// a long cap protects that server from keys that fail for hours. Here the controllers read a
/// local store in-process (a retry costs a millisecond), and a failing key usually waits for
/// something a user is fixing right now (a storage class created, a volume freed, a disk image
/// put in place); after ~17 minutes of silence the VM would look stuck. One minute keeps the
/// retries cheap and the reaction to a fix prompt.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A de-duplicating work queue with delayed adds and per-key exponential backoff. Clones share
/// the same queue (hand one to every event handler and worker).
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<K> {
    state: Mutex<State<K>>,
    /// Woken when a key becomes ready, an earlier deadline is set, or on shutdown.
    wake: Notify,
    max_backoff: Duration,
}

struct State<K> {
    /// Keys ready for a worker, oldest first; each is also in `dirty`.
    ready: VecDeque<K>,
    /// Keys that need processing (ready, or processing and added again).
    dirty: HashSet<K>,
    /// Keys a worker holds between `next` and `done`.
    processing: HashSet<K>,
    /// Delayed keys by deadline (the sequence number keeps equal deadlines apart and in order).
    delayed: BTreeMap<(Instant, u64), K>,
    /// The deadline of each delayed key.
    deadlines: HashMap<K, (Instant, u64)>,
    next_sequence: u64,
    /// Failures since the last `forget`, per key.
    failures: HashMap<K, u32>,
    shutting_down: bool,
}

impl<K: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// A queue whose backoff is capped at [`DEFAULT_MAX_BACKOFF`].
    pub fn new() -> Self {
        Self::with_max_backoff(DEFAULT_MAX_BACKOFF)
    }

    /// A queue whose backoff is capped at `max_backoff`.
    pub fn with_max_backoff(max_backoff: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    ready: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashSet::new(),
                    delayed: BTreeMap::new(),
                    deadlines: HashMap::new(),
                    next_sequence: 0,
                    failures: HashMap::new(),
                    shutting_down: false,
                }),
                wake: Notify::new(),
                max_backoff,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // Every method leaves the state consistent before it could panic (no user code runs
        // under the lock), so a poisoned lock still guards a usable state.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key` unless it is queued already (a key being processed is queued again once
    /// its worker calls [`WorkQueue::done`]). Ignored after [`WorkQueue::shutdown`].
    pub fn add(&self, key: K) {
        if self.lock().add(key) {
            self.shared.wake.notify_one();
        }
    }

    /// Queues `key` once `delay` has passed (at once for a zero delay). If the key is already
    /// delayed, the earlier of the two deadlines wins.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let deadline = Instant::now() + delay;
        if self.lock().add_at(key, deadline) {
            self.shared.wake.notify_one();
        }
    }

    /// Queues `key` after its backoff: [`BASE_BACKOFF`] doubled for every failure since the
    /// last [`WorkQueue::forget`], capped at the queue's maximum. Counts one more failure.
    pub fn add_rate_limited(&self, key: K) {
        let delay = {
            let mut state = self.lock();
            let failures = state.failures.entry(key.clone()).or_insert(0);
            let delay = backoff(*failures, self.shared.max_backoff);
            *failures = failures.saturating_add(1);
            delay
        };
        self.add_after(key, delay);
    }

    /// Resets the key's failure count (call it after a successful reconcile). Does not remove
    /// a delayed or queued key.
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// Failures counted for `key` since the last [`WorkQueue::forget`].
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next ready key, waiting for one; `None` once the queue is shut down. The caller
    /// owns the key until it calls [`WorkQueue::done`].
    pub async fn next(&self) -> Option<K> {
        loop {
            // Registered before the state is read, so a wake-up between the read and the
            // wait is not lost.
            let woken = self.shared.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let earliest = {
                let mut state = self.lock();
                if state.shutting_down {
                    return None;
                }
                state.promote_due(Instant::now());
                if let Some(key) = state.take_ready() {
                    return Some(key);
                }
                state.earliest_deadline()
            };
            match earliest {
                Some(deadline) => {
                    tokio::select! {
                        () = &mut woken => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// Ends the processing of a key from [`WorkQueue::next`]; queues it again if it was added
    /// meanwhile.
    pub fn done(&self, key: &K) {
        if self.lock().done(key) {
            self.shared.wake.notify_one();
        }
    }

    /// Stops the queue: [`WorkQueue::next`] returns `None` from now on (in every worker), adds
    /// are ignored, queued and delayed keys are dropped. The controllers are level-triggered:
    /// the next start lists every object again.
    pub fn shutdown(&self) {
        {
            let mut state = self.lock();
            state.shutting_down = true;
            state.ready.clear();
            state.dirty.clear();
            state.delayed.clear();
            state.deadlines.clear();
        }
        self.shared.wake.notify_waiters();
    }

    /// Whether [`WorkQueue::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// Keys ready for a worker now (neither delayed nor processing), as client-go's `Len`.
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Whether no key is ready now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `BASE_BACKOFF * 2^failures`, capped at `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    2u32.checked_pow(failures)
        .and_then(|factor| BASE_BACKOFF.checked_mul(factor))
        .map_or(max, |delay| delay.min(max))
}

impl<K: Clone + Eq + Hash> State<K> {
    /// Marks the key dirty and queues it; `true` when a worker should wake.
    fn add(&mut self, key: K) -> bool {
        if self.shutting_down || !self.dirty.insert(key.clone()) {
            return false;
        }
        if self.processing.contains(&key) {
            return false;
        }
        self.ready.push_back(key);
        true
    }

    /// Delays the key until `deadline` (keeping an earlier one); `true` when the earliest
    /// deadline of the queue may have moved closer.
    fn add_at(&mut self, key: K, deadline: Instant) -> bool {
        if self.shutting_down {
            return false;
        }
        if let Some(&current) = self.deadlines.get(&key) {
            if current.0 <= deadline {
                return false;
            }
            self.delayed.remove(&current);
        }
        let slot = (deadline, self.next_sequence);
        self.next_sequence += 1;
        self.delayed.insert(slot, key.clone());
        self.deadlines.insert(key, slot);
        true
    }

    /// Moves every delayed key whose deadline has passed to the ready keys.
    fn promote_due(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.deadlines.remove(&key);
            self.add(key);
        }
    }

    fn take_ready(&mut self) -> Option<K> {
        let key = self.ready.pop_front()?;
        self.dirty.remove(&key);
        self.processing.insert(key.clone());
        Some(key)
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        self.delayed.keys().next().map(|(deadline, _)| *deadline)
    }

    /// `true` when the key was added during processing and is queued again.
    fn done(&mut self, key: &K) -> bool {
        if !self.processing.remove(key) || !self.dirty.contains(key) {
            return false;
        }
        self.ready.push_back(key.clone());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key if one is ready within `within` (paused time advances by itself).
    async fn next_within(
        queue: &WorkQueue<&'static str>,
        within: Duration,
    ) -> Option<&'static str> {
        tokio::time::timeout(within, queue.next())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_added_twice_is_handed_out_once() {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.next().await, Some("a"));
        assert_eq!(queue.next().await, Some("b"));
        assert_eq!(next_within(&queue, Duration::from_secs(1)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_being_processed_is_not_handed_to_a_second_worker() {
        let queue = WorkQueue::new();
        queue.add("a");
        assert_eq!(queue.next().await, Some("a"));
        queue.add("a");
        assert_eq!(queue.len(), 0, "held back while processing");
        let second_worker = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next().await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!second_worker.is_finished());
        queue.done(&"a");
        assert_eq!(second_worker.await.ok().flatten(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_added_during_processing_is_processed_again_after_done() {
        let queue = WorkQueue::new();
        queue.add("a");
        assert_eq!(queue.next().await, Some("a"));
        queue.add("a");
        queue.add("a");
        queue.done(&"a");
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next().await, Some("a"));
        queue.done(&"a");
        assert_eq!(next_within(&queue, Duration::from_secs(1)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn done_without_a_new_add_does_not_requeue() {
        let queue = WorkQueue::new();
        queue.add("a");
        assert_eq!(queue.next().await, Some("a"));
        queue.done(&"a");
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_come_out_in_deadline_order_at_their_deadline() {
        let queue = WorkQueue::new();
        let start = Instant::now();
        queue.add_after("late", Duration::from_millis(300));
        queue.add_after("early", Duration::from_millis(100));
        queue.add_after("middle", Duration::from_millis(200));
        assert!(queue.is_empty());
        for (key, at) in [("early", 100), ("middle", 200), ("late", 300)] {
            assert_eq!(queue.next().await, Some(key));
            assert_eq!(start.elapsed(), Duration::from_millis(at));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_of_a_key_wins() {
        let queue = WorkQueue::new();
        let start = Instant::now();
        queue.add_after("a", Duration::from_secs(10));
        queue.add_after("a", Duration::from_secs(2));
        queue.add_after("a", Duration::from_secs(5));
        assert_eq!(queue.next().await, Some("a"));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        queue.done(&"a");
        assert_eq!(next_within(&queue, Duration::from_secs(60)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_waiting_for_a_later_deadline_wakes_for_an_earlier_one() {
        let queue = WorkQueue::new();
        let start = Instant::now();
        queue.add_after("later", Duration::from_secs(10));
        let worker = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next().await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        queue.add_after("sooner", Duration::from_secs(1));
        assert_eq!(worker.await.ok().flatten(), Some("sooner"));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_plain_add_wakes_a_worker_waiting_for_a_deadline() {
        let queue = WorkQueue::new();
        let start = Instant::now();
        queue.add_after("later", Duration::from_secs(10));
        let worker = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue.add("now");
        assert_eq!(worker.await.ok().flatten(), Some("now"));
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_from_5_ms_and_stops_at_the_cap() {
        let queue = WorkQueue::with_max_backoff(Duration::from_millis(100));
        let mut waited = Vec::new();
        for _ in 0..7 {
            let start = Instant::now();
            queue.add_rate_limited("a");
            assert_eq!(queue.next().await, Some("a"));
            queue.done(&"a");
            waited.push(start.elapsed().as_millis());
        }
        assert_eq!(waited, [5, 10, 20, 40, 80, 100, 100]);
        assert_eq!(queue.num_requeues(&"a"), 7);
    }

    #[test]
    fn the_default_backoff_caps_at_a_minute_and_never_overflows() {
        let max = DEFAULT_MAX_BACKOFF;
        assert_eq!(backoff(0, max), Duration::from_millis(5));
        assert_eq!(backoff(13, max), Duration::from_millis(40_960));
        assert_eq!(backoff(14, max), max);
        assert_eq!(backoff(40, max), max);
        assert_eq!(backoff(u32::MAX, max), max);
    }

    #[tokio::test(start_paused = true)]
    async fn forget_resets_the_backoff() {
        let queue = WorkQueue::new();
        for _ in 0..4 {
            queue.add_rate_limited("a");
            assert_eq!(queue.next().await, Some("a"));
            queue.done(&"a");
        }
        assert_eq!(queue.num_requeues(&"a"), 4);
        queue.forget(&"a");
        assert_eq!(queue.num_requeues(&"a"), 0);
        let start = Instant::now();
        queue.add_rate_limited("a");
        assert_eq!(queue.next().await, Some("a"));
        assert_eq!(start.elapsed(), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_counted_per_key() {
        let queue = WorkQueue::new();
        queue.add_rate_limited("a");
        queue.add_rate_limited("a");
        queue.add_rate_limited("b");
        assert_eq!(queue.num_requeues(&"a"), 2);
        assert_eq!(queue.num_requeues(&"b"), 1);
        assert_eq!(queue.num_requeues(&"c"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_every_waiting_worker_and_ignores_later_adds() {
        let queue: WorkQueue<&'static str> = WorkQueue::new();
        queue.add_after("delayed", Duration::from_secs(1));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.next().await })
            })
            .collect();
        tokio::task::yield_now().await;
        queue.shutdown();
        for worker in workers {
            assert_eq!(worker.await.ok().flatten(), None);
        }
        queue.add("a");
        assert!(queue.is_shutting_down());
        assert!(queue.is_empty());
        assert_eq!(queue.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_added_over_and_over_is_never_held_by_two_workers() {
        let queue = WorkQueue::new();
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        let rounds = Arc::new(Mutex::new(0u32));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (queue, in_flight, rounds) = (queue.clone(), in_flight.clone(), rounds.clone());
                tokio::spawn(async move {
                    while let Some(key) = queue.next().await {
                        let first = in_flight.lock().map(|mut s| s.insert(key)).unwrap_or(false);
                        assert!(first, "{key} handed to two workers at once");
                        tokio::time::sleep(Duration::from_millis(7)).await;
                        if let Ok(mut s) = in_flight.lock() {
                            s.remove(key);
                        }
                        if let Ok(mut r) = rounds.lock() {
                            *r += 1;
                        }
                        queue.done(&key);
                    }
                })
            })
            .collect();
        for _ in 0..100 {
            queue.add("a");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue.shutdown();
        for worker in workers {
            assert!(worker.await.is_ok(), "a worker saw a key twice");
        }
        // 200 ms of adds with 7 ms per round: the key was processed again and again, serially.
        let rounds = rounds.lock().map(|r| *r).unwrap_or(0);
        assert!((20..=40).contains(&rounds), "{rounds} rounds");
    }

    #[tokio::test(start_paused = true)]
    async fn several_workers_share_the_keys_without_duplicates() {
        let queue = WorkQueue::new();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while let Some(key) = queue.next().await {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        seen.push(key);
                        queue.done(&key);
                    }
                    seen
                })
            })
            .collect();
        let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
        for key in keys {
            queue.add(key);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        queue.shutdown();
        let mut seen = Vec::new();
        for worker in workers {
            seen.extend(worker.await.unwrap_or_default());
        }
        seen.sort_unstable();
        assert_eq!(seen, keys);
    }
}
