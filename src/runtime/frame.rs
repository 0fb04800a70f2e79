//! The runtime's own websocket frames: what connections, the driven link
//! and other nodes carry. Each network edge converts its library's
//! message to and from these; payloads are shared bytes, never copied
//! per recipient.

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// How much of a message an event carries.
pub const PREVIEW_BYTES: usize = 4096;

/// What a message event says of its message: text up to
/// [`PREVIEW_BYTES`] as it is, binary as base64.
#[derive(serde::Serialize)]
pub struct Preview<'a> {
    pub kind: &'static str,
    pub bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_base64: Option<String>,
    pub truncated: bool,
}

pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL: u16 = 1011;
pub const CLOSE_RESTART: u16 = 1012;
pub const CLOSE_TRY_AGAIN: u16 = 1013;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(Text),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<Close>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: Text,
}

/// A text payload: UTF-8, checked once when made, shared on clone. Held
/// as tungstenite's checked bytes, so a message fanned out to many
/// sockets is not checked again for each of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(Utf8Bytes);

impl Text {
    /// Checks `bytes`; no copy.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        Utf8Bytes::try_from(bytes).map(Text)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Utf8Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Utf8Bytes::from(s))
    }
}

/// Checked by tungstenite as it read them: no second check.
impl From<Utf8Bytes> for Text {
    fn from(t: Utf8Bytes) -> Text {
        Text(t)
    }
}

impl From<Text> for Utf8Bytes {
    fn from(t: Text) -> Utf8Bytes {
        t.0
    }
}

impl From<Text> for Bytes {
    fn from(t: Text) -> Bytes {
        t.0.into()
    }
}

impl Frame {
    pub fn text(t: impl Into<Text>) -> Frame {
        Frame::Text(t.into())
    }

    /// Payload bytes of a text or binary message; 0 for control frames.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Text or binary: a message, not a control frame.
    pub fn is_data(&self) -> bool {
        matches!(self, Frame::Text(_) | Frame::Binary(_))
    }

    /// Event data for a message: kind, size and a preview of at most
    /// [`PREVIEW_BYTES`].
    pub fn event_data(&self) -> Value {
        serde_json::to_value(self.preview()).unwrap_or_default()
    }

    /// [`Frame::event_data`]'s fields, to write as text with others.
    pub fn preview(&self) -> Preview<'_> {
        match self {
            Frame::Text(t) => {
                let t = t.as_str();
                let mut end = t.len().min(PREVIEW_BYTES);
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                Preview {
                    kind: "text",
                    bytes: t.len(),
                    message: Some(&t[..end]),
                    message_base64: None,
                    truncated: end < t.len(),
                }
            }
            other => {
                let b: &[u8] = match other {
                    Frame::Binary(b) => b,
                    _ => &[],
                };
                let end = b.len().min(PREVIEW_BYTES);
                Preview {
                    kind: "binary",
                    bytes: b.len(),
                    message: None,
                    message_base64: Some(
                        base64::engine::general_purpose::STANDARD.encode(&b[..end]),
                    ),
                    truncated: end < b.len(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_checked_once_and_shared_with_the_socket() {
        assert!(Text::from_utf8(Bytes::from_static(b"ok \xff")).is_err());
        let bytes = Bytes::from("h\u{e9}llo \u{2713}");
        let text = Text::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text.as_str(), "h\u{e9}llo \u{2713}");
        assert_eq!(text.len(), bytes.len());
        // Handed to tungstenite and back, the same bytes: no copy.
        let out: Utf8Bytes = text.clone().into();
        assert_eq!(out.as_ptr(), bytes.as_ptr());
        let back: Bytes = Text::from(out).into();
        assert_eq!(back.as_ptr(), bytes.as_ptr());
    }

    #[test]
    fn a_message_events_preview() {
        assert_eq!(
            Frame::text("hi \"x\"").event_data(),
            json!({"kind": "text", "bytes": 6, "message": "hi \"x\"", "truncated": false})
        );
        // Cut at a character's edge: 'é' is two bytes across the limit.
        let long = format!("{}é", "a".repeat(PREVIEW_BYTES - 1));
        let d = Frame::text(long.as_str()).event_data();
        assert_eq!(d["message"], "a".repeat(PREVIEW_BYTES - 1));
        assert_eq!(
            (&d["bytes"], &d["truncated"]),
            (&json!(PREVIEW_BYTES + 1), &json!(true))
        );
        let bin = Frame::Binary(Bytes::from(vec![0u8, 255, 1]));
        assert_eq!(
            bin.event_data(),
            json!({"kind": "binary", "bytes": 3, "message_base64": "AP8B", "truncated": false})
        );
        let big = Frame::Binary(Bytes::from(vec![7u8; PREVIEW_BYTES + 5])).event_data();
        let shown = big["message_base64"].as_str().unwrap();
        assert_eq!(shown.len(), PREVIEW_BYTES.div_ceil(3) * 4);
        assert_eq!(big["truncated"], true);
    }
}
