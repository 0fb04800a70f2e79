//! An op invocation's record, as the recorder writes it.

use crate::ids::ElementId;

/// One op invocation, or (`count` > 1) several folded into one row:
/// `duration_us` and `cost_micro_au` are then their totals.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub circle: String,
    pub element_id: ElementId,
    pub op: String,
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub duration_us: i64,
    pub cost_micro_au: i64,
    pub at: i64,
    pub count: i64,
    pub fold: Fold,
}

/// How a run ended. A refusal (the caller's mistake: a bad body, a
/// missing token, its rate) is counted apart from a failure, which is the
/// element's or the server's, so only failures weigh on health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Refused,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "client_error",
            Outcome::Failed => "error",
        }
    }
}

/// How runs are kept: each in its row, or folded into one row per
/// element, op, outcome and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Writes and executions: a row each.
    No,
    /// Traffic without a token: per second, so it cannot write a row per
    /// request.
    PerSecond,
    /// Reads: per minute; a read writes nothing per request.
    PerMinute,
}

impl Fold {
    pub fn window_ms(self) -> i64 {
        match self {
            Fold::No => 1,
            Fold::PerSecond => 1000,
            Fold::PerMinute => 60_000,
        }
    }
}
