//! The domain's vocabulary: an element and where it lives, its state,
//! roles, who acts, and the events that record it. Every layer speaks it;
//! it imports nothing of theirs.

use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::ids::{CircleId, ElementId};
pub use crate::json::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An element's life: it answers every op while ready; disabled it
/// refuses invocations; deleted it answers reads only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ready,
    Disabled,
    Deleted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Disabled => "disabled",
            State::Deleted => "deleted",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        match s {
            "ready" => Some(State::Ready),
            "disabled" => Some(State::Disabled),
            "deleted" => Some(State::Deleted),
            _ => None,
        }
    }
}

/// An environment: draft (the preview, following every change), demo
/// and live (moved only by promotion or rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    Draft,
    Demo,
    Live,
}

impl Env {
    pub const ALL: [Env; 3] = [Env::Draft, Env::Demo, Env::Live];

    pub fn as_str(self) -> &'static str {
        match self {
            Env::Draft => "draft",
            Env::Demo => "demo",
            Env::Live => "live",
        }
    }
    pub fn parse(s: &str) -> Option<Env> {
        match s {
            "draft" => Some(Env::Draft),
            "demo" => Some(Env::Demo),
            "live" => Some(Env::Live),
            _ => None,
        }
    }
    /// The branch a promotion to this environment comes from.
    pub fn promoted_from(self) -> Option<Env> {
        match self {
            Env::Draft => None,
            Env::Demo => Some(Env::Draft),
            Env::Live => Some(Env::Demo),
        }
    }
}

/// Where an element lives: a circle is the root of its tenancy; every
/// other element is stored flat in one circle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Circle,
    /// In the circle with this slug.
    In(String),
}

/// A checked slug: `^[a-z0-9][a-z0-9-]{0,62}$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(s: &str) -> crate::error::Result<Slug> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok {
            Ok(Slug(s.to_string()))
        } else {
            let shown = crate::error::shown(s);
            Err(crate::error::Error::bad_request(
                ErrorCode::InvalidSlug,
                format!("invalid slug '{shown}': use 1-63 of a-z, 0-9 and '-', starting with a letter or digit"),
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// "chat-room" → "Chat Room".
pub fn name_from_slug(slug: &str) -> String {
    slug.split('-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An element as stored: the current version's content and its state.
#[derive(Debug, Clone)]
pub struct Element {
    pub id: ElementId,
    pub scope: Scope,
    /// The circle's id (a circle's own id for circles): what tenancy is
    /// bound to, since a deleted circle's slug can be taken again.
    pub circle_id: CircleId,
    pub slug: String,
    pub name: String,
    pub element_type: String,
    pub parent_id: Option<ElementId>,
    pub state: State,
    pub state_reason: Option<String>,
    pub intention: Option<String>,
    pub spec: Value,
    pub meta: Value,
    /// README.md, only when a change sets it: rows are read without it
    /// (it can be large); `Db::readme` reads it. Git holds a copy on draft.
    pub readme: Option<String>,
    pub version: i64,
    /// Bumped by every write, versioned or not: the compare-and-swap token.
    pub rev: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Element {
    /// The slug of the circle this element belongs to (a circle belongs
    /// to itself).
    pub fn circle(&self) -> &str {
        match &self.scope {
            Scope::Circle => &self.slug,
            Scope::In(c) => c,
        }
    }
    pub fn is_root(&self) -> bool {
        self.scope == Scope::Circle
    }
    pub fn is_deleted(&self) -> bool {
        self.state == State::Deleted
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Member,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }
}

/// How far an attachment reaches below the element that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cascade {
    /// The carrying element only.
    None,
    /// And the elements one step below: contained, or a manifest's members.
    Children,
    /// And everything below, at any depth.
    Descendants,
}

impl Cascade {
    pub const NAMES: &'static str = "none, children or descendants";
    pub fn parse(s: &str) -> Option<Cascade> {
        match s {
            "none" => Some(Cascade::None),
            "children" => Some(Cascade::Children),
            "descendants" => Some(Cascade::Descendants),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Cascade::None => "none",
            Cascade::Children => "children",
            Cascade::Descendants => "descendants",
        }
    }
    /// Whether it reaches an element `depth` steps below its carrier.
    pub fn reaches(self, depth: usize) -> bool {
        match self {
            Cascade::None => depth == 0,
            Cascade::Children => depth <= 1,
            Cascade::Descendants => true,
        }
    }
}

/// What a token reaches: the whole platform (`*`), or one circle, bound
/// to its id (None until the circle it was made for exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Platform,
    Circle { slug: String, id: Option<CircleId> },
}

impl Reach {
    /// The circle as people write it: a slug, or `*`.
    pub fn label(&self) -> &str {
        match self {
            Reach::Platform => "*",
            Reach::Circle { slug, .. } => slug,
        }
    }
    pub fn parse(circle: &str, id: Option<CircleId>) -> Reach {
        match circle {
            "*" => Reach::Platform,
            slug => Reach::Circle {
                slug: slug.to_string(),
                id,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    Token,
    External,
    System,
}

/// Who caused an event: a token (id and role), an external caller, or
/// elementd itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Actor {
    pub kind: ActorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl Actor {
    pub fn token(token_id: &str, role: Role) -> Self {
        Actor {
            kind: ActorKind::Token,
            token_id: Some(token_id.to_string()),
            role: Some(role),
        }
    }
    pub fn external() -> Self {
        Actor {
            kind: ActorKind::External,
            token_id: None,
            role: None,
        }
    }
    /// [`Actor::system`] as events carry it.
    pub fn system_json() -> Json {
        Json::text_of(&Actor::system())
    }

    pub fn system() -> Self {
        Actor {
            kind: ActorKind::System,
            token_id: None,
            role: None,
        }
    }
    /// The short form stored as a version's author.
    pub fn label(&self) -> String {
        match (&self.token_id, self.kind) {
            (Some(id), _) => format!("token:{id}"),
            (None, ActorKind::Token) => "token".into(),
            (None, ActorKind::External) => "external".into(),
            (None, ActorKind::System) => "system".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub circle: String,
    /// The circle's id: streams and activity are scoped by it, not by
    /// the slug, which a later circle may reuse.
    #[serde(default)]
    pub circle_id: CircleId,
    pub element_id: Option<ElementId>,
    pub slug: Option<String>,
    pub kind: String,
    pub op: Option<String>,
    pub invocation_id: Option<String>,
    pub actor: Json,
    pub trace_id: Option<String>,
    pub data: Json,
    pub at: i64,
    /// Came from another node: published live here, never forwarded back.
    #[serde(skip)]
    pub remote: bool,
}

/// Event ids are UUIDv7: unique across nodes and ordered by time, so
/// `Last-Event-ID` can resume with `id > last`.
pub fn new_event_id() -> String {
    // Encoded in place, then copied: `to_string` on the uuid, or on the
    // `&mut str` it is encoded to, goes through the formatter.
    let mut buf = uuid::Uuid::encode_buffer();
    let id: &str = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
    id.to_owned()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Unix milliseconds as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    Rfc3339(ms).with_text(str::to_owned)
}

/// A time in ms since the epoch, written as [`rfc3339`] writes it,
/// straight from a stack buffer: through chrono's formatter a timestamp
/// cost about 900 instructions, a quarter of a `history` of 100.
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339(pub i64);

impl Rfc3339 {
    /// The 24 bytes, for years 0 to 9999 (chrono writes the rest).
    fn digits(self) -> Option<[u8; 24]> {
        use chrono::{Datelike, Timelike};
        let t = chrono::DateTime::from_timestamp_millis(self.0)?;
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let fields = [
            (0, 4, year),
            (5, 2, t.month()),
            (8, 2, t.day()),
            (11, 2, t.hour()),
            (14, 2, t.minute()),
            (17, 2, t.second()),
            (20, 3, t.timestamp_subsec_millis()),
        ];
        for (at, width, mut v) in fields {
            for d in b[at..at + width].iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        Some(b)
    }

    /// `f` of the text: the one place that chooses between the buffer
    /// and chrono.
    fn with_text<R>(self, f: impl FnOnce(&str) -> R) -> R {
        match self.digits() {
            // Only ASCII digits and separators were written.
            Some(b) => f(std::str::from_utf8(&b).unwrap_or_default()),
            None => f(&chrono::DateTime::from_timestamp_millis(self.0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.with_text(|t| s.serialize_str(t))
    }
}

#[cfg(test)]
mod rfc3339_tests {
    fn chrono_way(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    #[test]
    fn reads_as_chrono_wrote_it() {
        // Leap days, the turn of centuries and years, the epoch, the last
        // millisecond before 10000, and a spread in between.
        let mut at = vec![
            0,
            1,
            951_782_400_000,     // 2000-02-29
            4_107_542_399_999,   // 2100-02-28T23:59:59.999
            1_798_761_599_999,   // 2026-12-31T23:59:59.999
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000: chrono's
            -1,
            -62_167_219_200_001, // the last millisecond of year -1
            i64::MIN,            // out of chrono's range: the epoch
        ];
        at.extend((0..20_000).map(|i: i64| i * 12_675_413_297 + i % 1000));
        for ms in at {
            assert_eq!(super::rfc3339(ms), chrono_way(ms), "at {ms} ms");
            let json = serde_json::to_string(&super::Rfc3339(ms)).unwrap();
            assert_eq!(json, format!("\"{}\"", chrono_way(ms)), "at {ms} ms");
        }
        assert_eq!(super::rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}

impl Event {
    pub fn new(circle: &str, circle_id: &CircleId, kind: EventKind) -> Self {
        Event {
            id: new_event_id(),
            ..Event::unnumbered(circle, circle_id, kind)
        }
    }

    /// An event without its id yet: the bus gives every event it
    /// publishes one (`Bus::emit` and its kin), so an id made here would
    /// be thrown away.
    pub fn unnumbered(circle: &str, circle_id: &CircleId, kind: EventKind) -> Self {
        Event::unnumbered_by(circle, circle_id, kind, Actor::system_json())
    }

    /// As [`Event::unnumbered`], caused by `actor`: a system actor made
    /// only to be replaced cost a map and its strings.
    pub fn unnumbered_by(circle: &str, circle_id: &CircleId, kind: EventKind, actor: Json) -> Self {
        Event {
            id: String::new(),
            circle: circle.to_string(),
            circle_id: circle_id.clone(),
            element_id: None,
            slug: None,
            kind: kind.as_str().to_string(),
            op: None,
            invocation_id: None,
            actor,
            trace_id: None,
            data: Json::default(),
            at: now_ms(),
            remote: false,
        }
    }

    /// The event as callers see it; [`Event::to_json`] and the live
    /// stream's text are both this, so the two cannot drift.
    pub fn shown(&self) -> Shown<'_> {
        Shown {
            id: &self.id,
            kind: &self.kind,
            circle: &self.circle,
            element: self.element_id.as_deref().map(|id| ElementRef {
                id,
                slug: self.slug.as_deref(),
            }),
            op: self.op.as_deref(),
            invocation_id: self.invocation_id.as_deref(),
            actor: &self.actor,
            trace_id: self.trace_id.as_deref(),
            data: &self.data,
            timestamp: Rfc3339(self.at),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.shown()).unwrap_or_default()
    }

    /// [`Event::to_json`] as a caller sees it: without what only admins
    /// see, unless `admin`.
    pub fn to_json_for(&self, admin: bool) -> Value {
        let mut v = self.to_json();
        if !admin {
            if let Some(d) = v.get_mut("data").and_then(Value::as_object_mut) {
                hide_admin_only(d);
            }
        }
        v
    }
}

/// The key of event data, and of a connection's listing, that only admins
/// see: a client's network address.
pub const ADMIN_ONLY: &str = "remote_addr";

/// Takes [`ADMIN_ONLY`] out of `map`, keeping the other keys in order
/// (`remove` would move the last key into its place).
pub fn hide_admin_only(map: &mut serde_json::Map<String, Value>) {
    map.shift_remove(ADMIN_ONLY);
}

/// An [`Event`]'s public shape, borrowed from it.
#[derive(Serialize)]
pub struct Shown<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    circle: &'a str,
    element: Option<ElementRef<'a>>,
    op: Option<&'a str>,
    invocation_id: Option<&'a str>,
    actor: &'a Json,
    trace_id: Option<&'a str>,
    data: &'a Json,
    timestamp: Rfc3339,
}

#[derive(Serialize)]
struct ElementRef<'a> {
    id: &'a str,
    slug: Option<&'a str>,
}

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

/// The strings of an array at `key` of a JSON object (others skipped).
pub fn strings_at(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
