//! Live events and the batched recorder.
//!
//! Every event is published on an in-process broadcast channel (the SSE
//! streams read it) and, unless it was already written inside a database
//! transaction, queued for the recorder. The recorder also takes op runs.
//! It writes in batches off the request path; `flush` gives
//! read-your-writes to `activity` and `stats`.

use crate::clock::Clock;
use crate::model::{new_event_id, now_ms};
use crate::model::{Event, Run};
use crate::store::Db;
use crate::sync::lock;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Runs being folded: one row per key and window.
#[derive(Default)]
struct Folded {
    rows: std::collections::HashMap<
        (
            crate::ids::ElementId,
            String,
            crate::model::Outcome,
            Option<String>,
            i64,
        ),
        Run,
    >,
}

impl Folded {
    fn add(&mut self, r: Run) {
        let key = (
            r.element_id.clone(),
            r.op.clone(),
            r.outcome,
            r.error_code.clone(),
            r.at / r.fold.window_ms(),
        );
        match self.rows.get_mut(&key) {
            Some(row) => {
                row.count += r.count;
                row.duration_us += r.duration_us;
                row.cost_micro_au += r.cost_micro_au;
            }
            None => {
                self.rows.insert(key, r);
            }
        }
    }

    /// Rows of windows that are over (all of them with `all`).
    fn take_done(&mut self, all: bool, into: &mut Vec<Run>) {
        let now = now_ms();
        let done: Vec<_> = self
            .rows
            .iter()
            .filter(|(k, r)| all || k.4 < now / r.fold.window_ms())
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            if let Some(r) = self.rows.remove(&k) {
                into.push(r);
            }
        }
    }
}

/// One sampled stream's second: the first `budget` events of each second
/// are kept (persisted); the others go live only and are counted into
/// the next kept one's `unpersisted_before`.
#[derive(Default)]
struct Second {
    at: i64,
    kept: u64,
    skipped: u64,
}

impl Second {
    /// Some(skipped since the last kept one) when this one is kept.
    fn take(&mut self, second: i64, budget: u64) -> Option<u64> {
        if self.at != second {
            self.at = second;
            self.kept = 0;
        }
        if self.kept >= budget {
            self.skipped += 1;
            return None;
        }
        self.kept += 1;
        Some(std::mem::take(&mut self.skipped))
    }
}

/// One stream sampled per second (a hub's received or sent messages, its
/// opened or closed connections).
#[derive(Default)]
pub struct Sampler(Mutex<Second>);

impl Sampler {
    /// Some(skipped since the last kept one) when this one is kept: the
    /// first of each second.
    pub fn take(&self) -> Option<u64> {
        self.take_within(1)
    }

    /// Like [`Sampler::take`], keeping the first `budget` of each second.
    pub fn take_within(&self, budget: u64) -> Option<u64> {
        lock(&self.0).take(now_ms() / 1000, budget)
    }
}

/// Streams sampled per key (element and kind), by the server's clock.
struct Samples {
    seen: Mutex<std::collections::HashMap<String, Second>>,
    clock: Clock,
}

impl Samples {
    fn take(&self, key: &str) -> Option<u64> {
        let second = self.clock.now_ms() / 1000;
        let mut seen = lock(&self.seen);
        if seen.len() > 4096 {
            // Bounded: keys quiet for a minute forget their count.
            seen.retain(|_, s| s.at > second - 60);
        }
        seen.entry(key.to_string()).or_default().take(second, 1)
    }
}

enum Record {
    /// Shared with the live stream: recorded without a copy.
    Event(Arc<Event>),
    /// For webhooks only: not kept in activity (a sampled message event).
    Outbox(Arc<Event>),
    Run(Run),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Bus {
    live: broadcast::Sender<Arc<Event>>,
    recorder: mpsc::Sender<Record>,
    // Keeps id order and channel order the same.
    order: Arc<Mutex<()>>,
    listeners: Arc<Listeners>,
    samples: Arc<Samples>,
    /// Runs folded where they happen: a read costs a map update, not a
    /// message to (and a wake of) the recorder.
    folded: Arc<Mutex<Folded>>,
}

/// Who reads live events: this node's SSE streams, and whether another
/// node has some (the cluster keeps that flag). The cluster forwarder
/// does not count: it only forwards what remote listeners will read.
struct Listeners {
    local: std::sync::atomic::AtomicUsize,
    remote: std::sync::atomic::AtomicBool,
    /// Whether this node has any; the cluster announces changes.
    announce: tokio::sync::watch::Sender<bool>,
}

/// See [`Bus::listening`].
#[derive(Clone)]
pub struct Listening(Arc<Listeners>);

impl Listening {
    /// Changes of "this node has live listeners".
    pub fn local_changes(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.announce.subscribe()
    }

    /// Whether another node has live listeners (the cluster sets it).
    pub fn remote(&self) -> bool {
        self.0.remote.load(Ordering::Acquire)
    }

    pub fn set_remote(&self, on: bool) {
        self.0.remote.store(on, Ordering::Release);
    }
}

/// Counts one live listener while it is held.
pub struct ListenerGuard(Arc<Listeners>);

impl Listeners {
    /// Publishes "any local listener" as of now. The count is read inside
    /// the watch's lock, so racing joins and leaves settle on the truth.
    fn sync(&self) {
        self.announce.send_if_modified(|v| {
            let now = self.local.load(Ordering::Acquire) > 0;
            std::mem::replace(v, now) != now
        });
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        if self.0.local.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.sync();
        }
    }
}

const BATCH: usize = 512;
const BATCH_WINDOW: Duration = Duration::from_millis(50);

impl Bus {
    /// Starts the recorder task; it ends once every `Bus` clone is dropped
    /// and what was queued is written. Sampled events count seconds by
    /// `clock`.
    pub fn start(db: Db, clock: Clock) -> (Bus, tokio::task::JoinHandle<()>) {
        let (live, _) = broadcast::channel(8192);
        let (tx, rx) = mpsc::channel(65536);
        let folded = Arc::new(Mutex::new(Folded::default()));
        let handle = tokio::spawn(record_loop(db, rx, folded.clone()));
        (
            Bus {
                live,
                recorder: tx,
                order: Arc::new(Mutex::new(())),
                listeners: Arc::new(Listeners {
                    local: Default::default(),
                    remote: Default::default(),
                    announce: tokio::sync::watch::Sender::new(false),
                }),
                samples: Arc::new(Samples {
                    seen: Default::default(),
                    clock,
                }),
                folded,
            },
            handle,
        )
    }

    /// A raw subscription; it does not count as a listener.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// A subscription for a reader such as an SSE stream: while the guard
    /// lives, message events are built for it.
    pub fn listen(&self) -> (broadcast::Receiver<Arc<Event>>, ListenerGuard) {
        let l = &self.listeners;
        if l.local.fetch_add(1, Ordering::AcqRel) == 0 {
            l.sync();
        }
        (self.live.subscribe(), ListenerGuard(l.clone()))
    }

    /// The listener flags, for the cluster; holding it does not keep the
    /// bus (and so its recorder) alive.
    pub fn listening(&self) -> Listening {
        Listening(self.listeners.clone())
    }

    /// Publishes an event live and queues it for the activity table.
    pub async fn emit(&self, mut event: Event) {
        let ev = {
            let _g = crate::sync::lock(&self.order);
            event.id = new_event_id();
            let ev = Arc::new(event);
            let _ = self.live.send(ev.clone());
            ev
        };
        if self.recorder.send(Record::Event(ev.clone())).await.is_err() {
            tracing::warn!(kind = %ev.kind, "recorder stopped; event not persisted");
        }
    }

    /// A message event that sampling leaves out of activity but webhooks
    /// may want: live when someone listens, and to the outbox, batched.
    pub async fn to_outbox(&self, mut event: Event) {
        let ev = {
            let _g = crate::sync::lock(&self.order);
            event.id = new_event_id();
            let ev = Arc::new(event);
            if self.has_live_listeners() {
                let _ = self.live.send(ev.clone());
            }
            ev
        };
        if self.recorder.send(Record::Outbox(ev)).await.is_err() {
            tracing::warn!("recorder stopped; event not handed to webhooks");
        }
    }

    /// Emits a high-rate event (anonymous traffic, rejections): live
    /// always, persisted as sampled per element, kind and second.
    pub async fn emit_sampled(&self, mut event: Event) {
        let key = format!(
            "{}:{}",
            event.element_id.as_deref().unwrap_or(&event.circle_id),
            event.kind
        );
        match self.samples.take(&key) {
            Some(skipped) => {
                event.data.insert("unpersisted_before", json!(skipped));
                self.emit(event).await
            }
            None if self.has_live_listeners() => self.publish_live(event),
            None => {}
        }
    }

    /// Publishes an event that is already stored (written in a transaction).
    pub fn publish_stored(&self, event: Event) {
        let _g = crate::sync::lock(&self.order);
        let _ = self.live.send(Arc::new(event));
    }

    /// Publishes another node's event live, keeping its id; the node that
    /// emitted it persists it.
    pub fn publish_remote(&self, event: Event) {
        let _g = crate::sync::lock(&self.order);
        let _ = self.live.send(Arc::new(event));
    }

    /// Publishes an event live only; it is never persisted. For high-rate
    /// runtime events whose persistence the runtime samples.
    pub fn publish_live(&self, mut event: Event) {
        let _g = crate::sync::lock(&self.order);
        event.id = new_event_id();
        let _ = self.live.send(Arc::new(event));
    }

    /// Whether anyone reads live events right now: an SSE stream here, or
    /// one on another node.
    pub fn has_live_listeners(&self) -> bool {
        self.listeners.local.load(Ordering::Acquire) > 0
            || self.listeners.remote.load(Ordering::Acquire)
    }

    pub async fn record_run(&self, run: Run) {
        if run.fold != crate::model::Fold::No {
            lock(&self.folded).add(run);
            return;
        }
        let _ = self.recorder.send(Record::Run(run)).await;
    }

    /// Waits until everything queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.recorder.send(Record::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn record_loop(db: Db, mut rx: mpsc::Receiver<Record>, folded: Arc<Mutex<Folded>>) {
    let mut events = Vec::new();
    let mut outbox = Vec::new();
    let mut runs = Vec::new();
    let mut waiters = Vec::new();
    let take_done = |all: bool, runs: &mut Vec<Run>| lock(&folded).take_done(all, runs);
    loop {
        // Wake each second for the folded runs whose window is over.
        let first = match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(r) => r,
            Err(_) => {
                take_done(false, &mut runs);
                write_batch(&db, &mut events, &mut outbox, &mut runs).await;
                continue;
            }
        };
        let Some(first) = first else { break };
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Record::Event(e)) => events.push(e),
                Some(Record::Outbox(e)) => outbox.push(e),
                Some(Record::Run(r)) => runs.push(r),
                Some(Record::Flush(w)) => waiters.push(w),
                None => {}
            }
            if !waiters.is_empty() || events.len() + outbox.len() + runs.len() >= BATCH {
                break;
            }
            // What is queued already is taken without a timer: one made
            // for every record cost more than the record's move.
            match rx.try_recv() {
                Ok(r) => next = Some(r),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(r)) => next = Some(r),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        // A flush (a reader wants its writes) takes the open windows too.
        take_done(!waiters.is_empty(), &mut runs);
        write_batch(&db, &mut events, &mut outbox, &mut runs).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
    take_done(true, &mut runs);
    write_batch(&db, &mut events, &mut outbox, &mut runs).await;
}

/// Records kept for the next try when the database cannot take them (a
/// full descriptor table, a restart of PostgreSQL), at most.
const MAX_PENDING: usize = 65_536;

/// Writes what is queued. A batch the database refuses three times stays
/// queued for the next turn (the loop comes back at least each second), so
/// a passing failure loses nothing; only past [`MAX_PENDING`] are the
/// oldest dropped, and said.
async fn write_batch(
    db: &Db,
    events: &mut Vec<Arc<Event>>,
    outbox: &mut Vec<Arc<Event>>,
    runs: &mut Vec<Run>,
) {
    if events.is_empty() && outbox.is_empty() && runs.is_empty() {
        return;
    }
    for attempt in 0..3 {
        match db.write_records(events, outbox, runs).await {
            // A duplicate: an earlier try did commit, its answer was lost.
            Ok(()) | Err(crate::store::StoreError::Duplicate) => {
                events.clear();
                outbox.clear();
                runs.clear();
                return;
            }
            Err(e) if attempt < 2 => {
                tracing::warn!(error = %e, "recorder write failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => tracing::error!(
                error = %e,
                events = events.len(),
                runs = runs.len(),
                "recorder write failed; kept for the next try"
            ),
        }
    }
    for (what, n) in [("events", events.len()), ("runs", runs.len())] {
        if n > MAX_PENDING {
            tracing::error!(
                dropped = n - MAX_PENDING,
                what,
                "recorder backlog full; oldest records dropped"
            );
        }
    }
    if events.len() > MAX_PENDING {
        events.drain(..events.len() - MAX_PENDING);
    }
    // The outbox bounds each webhook's pending anyway: what a long outage
    // of the database holds back here is the newest.
    if outbox.len() > MAX_PENDING {
        outbox.drain(..outbox.len() - MAX_PENDING);
    }
    if runs.len() > MAX_PENDING {
        runs.drain(..runs.len() - MAX_PENDING);
    }
}

#[cfg(test)]
mod tests {
    use super::Second;

    #[test]
    fn a_budget_keeps_the_first_of_each_second() {
        let mut s = Second::default();
        let got: Vec<_> = (0..5).map(|_| s.take(7, 3)).collect();
        assert_eq!(got, [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(
            s.take(8, 3),
            Some(2),
            "the next second's first counts the two"
        );
        assert_eq!(s.take(8, 3), Some(0));
        let mut one = Second::default();
        let got: Vec<_> = [1, 1, 1, 2, 2, 4].map(|at| one.take(at, 1)).into();
        assert_eq!(got, [Some(0), None, None, Some(2), None, Some(1)]);
    }
}
