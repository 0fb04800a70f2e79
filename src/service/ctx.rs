//! The invocation context: who is invoking which op, carried into every
//! record and event the invocation makes.

use crate::error::{Error, Result};
use crate::event_kind::EventKind;
use crate::ids::CircleId;
use crate::model::{Actor, Element, Event};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Who is invoking which op, carried into every record of the invocation.
#[derive(Debug, Clone)]
pub struct OpCtx {
    pub actor: Actor,
    pub invocation_id: String,
    pub trace_id: String,
    pub op: String,
    /// Set for a long op: how far it got, and whether its caller left.
    pub watch: Option<Arc<Watch>>,
}

/// How a live event of the op is kept: stored like its other events, or
/// shown to live listeners only (the op is a read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Stored,
    LiveOnly,
}

/// A long op's progress and its caller's presence. The op looks at it
/// only between whole steps, so stopping never leaves a step half done.
#[derive(Debug)]
pub struct Watch {
    cancel: CancellationToken,
    done: AtomicU64,
    total: AtomicU64,
    pub keep: Keep,
}

impl Watch {
    pub fn new(cancel: CancellationToken, keep: Keep) -> Watch {
        Watch {
            cancel,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            keep,
        }
    }

    /// `(done, total)` as last told.
    pub fn position(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// Records a step; true when it is worth an event (every step up to a
    /// hundred, then each whole percent, and always the last).
    pub fn advance(&self, done: u64, total: u64) -> bool {
        let before = self.done.swap(done, Ordering::Relaxed);
        let total_before = self.total.swap(total, Ordering::Relaxed);
        if (before, total_before) == (done, total) {
            return false; // told already
        }
        total <= 100 || done >= total || before * 100 / total.max(1) != done * 100 / total.max(1)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl OpCtx {
    /// A new invocation of `op` by `actor`, traced as `trace_id` (a new
    /// trace when the caller brought none).
    pub fn new(actor: Actor, op: &str, trace_id: Option<String>) -> OpCtx {
        OpCtx {
            actor,
            invocation_id: uuid::Uuid::now_v7().to_string(),
            trace_id: trace_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            op: op.to_string(),
            watch: None,
        }
    }

    /// Stops a long op whose caller has gone, between two whole steps.
    pub fn check_cancelled(&self) -> Result<()> {
        match &self.watch {
            Some(w) if w.is_cancelled() => {
                let (done, total) = w.position();
                Err(Error::cancelled(format!(
                    "the caller went away; stopped after {done} of {total} steps, each whole"
                )))
            }
            _ => Ok(()),
        }
    }

    pub fn event(&self, el: &Element, kind: EventKind, data: Value) -> Event {
        let mut e = self.circle_event(el.circle(), &el.circle_id, kind, data);
        e.element_id = Some(el.id.clone());
        e.slug = Some(el.slug.clone());
        e
    }

    /// An event of the invocation not tied to one element.
    pub fn circle_event(
        &self,
        circle: &str,
        circle_id: &CircleId,
        kind: EventKind,
        data: Value,
    ) -> Event {
        let mut e = Event::new(circle, circle_id, kind);
        e.op = Some(self.op.clone());
        e.invocation_id = Some(self.invocation_id.clone());
        e.actor = crate::model::Json::text_of(&self.actor);
        e.trace_id = Some(self.trace_id.clone());
        e.data = data.into();
        e
    }
}
