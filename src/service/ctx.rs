//! The invocation context: who is invoking which op, carried into every
//! record and event the invocation makes.

use crate::event_kind::EventKind;
use crate::model::{Actor, Element, Event};
use serde_json::Value;

/// Who is invoking which op, carried into every record of the invocation.
#[derive(Debug, Clone)]
pub struct OpCtx {
    pub actor: Actor,
    pub invocation_id: String,
    pub trace_id: String,
    pub op: String,
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
        circle_id: &str,
        kind: EventKind,
        data: Value,
    ) -> Event {
        let mut e = Event::new(circle, circle_id, kind);
        e.op = Some(self.op.clone());
        e.invocation_id = Some(self.invocation_id.clone());
        e.actor = serde_json::to_value(&self.actor).unwrap_or_default();
        e.trace_id = Some(self.trace_id.clone());
        e.data = data;
        e
    }
}
