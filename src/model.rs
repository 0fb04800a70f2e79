//! The domain's vocabulary: an element and where it lives, its state,
//! roles, who acts, and the events that record it. Every layer speaks it;
//! it imports nothing of theirs.

use crate::error_codes::ErrorCode;
use crate::event_kind::EventKind;
use crate::ids::{CircleId, ElementId};
pub use crate::json::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod run;
mod time;
pub use run::{Fold, Outcome, Run};
pub use time::{now_ms, rfc3339, Rfc3339};

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

    /// [`Event::to_json_for`] as text, written straight from the event:
    /// its actor and data are often text already, and a live stream
    /// writes one per event (a `Value` built, parsed from that text and
    /// written again cost most of a watched message). Data holding an
    /// address a caller may not see takes the `Value`'s way.
    pub fn text_for(&self, admin: bool) -> String {
        let has_addr = || match &self.data {
            Json::Value(v) => v.get(ADMIN_ONLY).is_some(),
            // Found as a key or (rarely) as a string value: either way the
            // slow path, which removes only the key.
            Json::Text(raw) => {
                let t = raw.get();
                t.match_indices(ADMIN_ONLY)
                    .any(|(i, k)| t[..i].ends_with('"') && t[i + k.len()..].starts_with('"'))
            }
        };
        if !admin && has_addr() {
            return self.to_json_for(admin).to_string();
        }
        serde_json::to_string(&self.shown()).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::{Event, Json};
    use crate::event_kind::EventKind;
    use serde_json::json;

    fn event(data: Json, on_element: bool) -> Event {
        let circle = crate::ids::CircleId::stored("c1");
        let mut e = Event::new("acme", &circle, EventKind::WsConnectionOpened);
        if on_element {
            e.element_id = Some(crate::ids::ElementId::stored("e1"));
            e.slug = Some("chat".into());
        }
        e.op = Some("send".into());
        e.actor = Json::text_of(&json!({"kind": "external", "user": "ann <\"x\">"}));
        e.data = data;
        e
    }

    #[test]
    fn the_text_is_the_json_a_caller_sees() {
        let with_addr = json!({"connection_id": "c_1", "remote_addr": "10.0.0.1:5", "env": "live"});
        let quoted = json!({"message": "remote_addr", "note": "\"remote_addr\" said \u{1}"});
        for data in [with_addr, quoted, json!({}), json!({"n": [1, 2.5, null]})] {
            for text in [false, true] {
                let d = if text {
                    Json::text_of(&data)
                } else {
                    Json::from(data.clone())
                };
                for (on_element, admin) in [(true, true), (true, false), (false, false)] {
                    let e = event(d.clone(), on_element);
                    let want = e.to_json_for(admin).to_string();
                    assert_eq!(e.text_for(admin), want, "{data} text {text} admin {admin}");
                }
            }
        }
        // Only admins see a client's address.
        let e = event(Json::text_of(&json!({"remote_addr": "10.0.0.1:5"})), true);
        assert!(e.text_for(true).contains("10.0.0.1"));
        assert!(!e.text_for(false).contains("10.0.0.1"));
    }
}
