//! What nodes say to each other: small JSON envelopes on the channel.

use crate::model::Event;
use crate::runtime::{ConnAction, Frame, HubKey};
use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub(super) struct Envelope {
    pub from: String,
    #[serde(flatten)]
    pub msg: Msg,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Msg {
    ElementChanged {
        id: crate::ids::ElementId,
    },
    /// Whether the sender has live listeners (SSE streams); repeated every
    /// heartbeat while true, so a node that joins later learns it.
    Listening {
        on: bool,
    },
    /// Live events, as many as fit one NOTIFY.
    Events {
        events: Vec<Event>,
    },
    /// Something for the node holding a connection to do with it.
    ToConnection {
        to: String,
        #[serde(rename = "element_id")]
        hub: HubKey,
        connection_id: String,
        action: ConnAction,
    },
    /// `send` or `close` for every connection of a user (each node acts
    /// on its own).
    ToUser {
        #[serde(rename = "element_id")]
        hub: HubKey,
        user: String,
        action: ConnAction,
    },
    /// Messages for the receivers' connections: a `broadcast` op's (one),
    /// or client messages that `on_message` relays, as many as fit one
    /// NOTIFY (a storm costs few round trips, not one per message).
    FanOut {
        batch: Vec<FanOut>,
    },
    /// Publications placed in the shared history, in commit order: every
    /// node delivers them, the one that placed them too.
    Published {
        batch: Vec<Pub>,
    },
    /// The real envelope is in `cluster_payloads` (`published`: it is a
    /// `Published`, which the sender reads back too).
    Stored {
        id: i64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        published: bool,
    },
}

/// One placed publication.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct Pub {
    #[serde(rename = "element_id")]
    pub hub: HubKey,
    text: Option<String>,
    binary_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<String>,
    pub at: i64,
    /// (room, epoch, offset)
    pub streams: Vec<(String, String, u64)>,
}

impl Pub {
    pub fn new(
        hub: &HubKey,
        msg: &Frame,
        except: Option<String>,
        at: i64,
        streams: Vec<(String, String, u64)>,
    ) -> Option<Pub> {
        let (text, binary_base64) = split(msg)?;
        Some(Pub {
            hub: hub.clone(),
            text,
            binary_base64,
            except,
            at,
            streams,
        })
    }

    pub fn message(&mut self) -> Option<Frame> {
        join(self.text.take(), self.binary_base64.take())
    }

    /// About what it adds to a NOTIFY body.
    pub fn json_len(&self) -> usize {
        let streams: usize = self
            .streams
            .iter()
            .map(|(r, e, _)| r.len() + e.len() + 32)
            .sum();
        100 + self.hub.as_str().len()
            + self.text.as_ref().map_or(0, |t| t.len() + t.len() / 8)
            + self.binary_base64.as_ref().map_or(0, String::len)
            + streams
    }
}

/// A frame as (text, base64 of binary); None for control frames.
fn split(msg: &Frame) -> Option<(Option<String>, Option<String>)> {
    match msg {
        Frame::Text(t) => Some((Some(t.as_str().to_string()), None)),
        Frame::Binary(b) => Some((
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(b)),
        )),
        _ => None,
    }
}

fn join(text: Option<String>, binary_base64: Option<String>) -> Option<Frame> {
    match (text, binary_base64) {
        (Some(t), _) => Some(Frame::text(t)),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .map(|b| Frame::Binary(b.into())),
        (None, None) => None,
    }
}

/// One message for the receiving node's connections of the hub: all
/// of them, or the members of `rooms`. The sender of a relayed client
/// message is never among them: it is on the node that relays.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct FanOut {
    #[serde(rename = "element_id")]
    pub hub: HubKey,
    text: Option<String>,
    binary_base64: Option<String>,
    pub rooms: Option<Vec<String>>,
    /// A control frame (presence): delivered, never a publication.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control: bool,
}

impl FanOut {
    /// A text or binary message; None for control frames.
    pub fn new(hub: &HubKey, msg: &Frame, rooms: Option<Vec<String>>) -> Option<FanOut> {
        let (text, binary_base64) = split(msg)?;
        Some(FanOut {
            hub: hub.clone(),
            text,
            binary_base64,
            rooms,
            control: false,
        })
    }

    /// A `broadcast` op's text.
    pub fn text(hub: &HubKey, text: String, rooms: Option<Vec<String>>) -> FanOut {
        FanOut {
            hub: hub.clone(),
            text: Some(text),
            binary_base64: None,
            rooms,
            control: false,
        }
    }

    /// A control frame (presence) for the members of `rooms`.
    pub fn control(hub: &HubKey, text: String, rooms: Vec<String>) -> FanOut {
        FanOut {
            control: true,
            ..FanOut::text(hub, text, Some(rooms))
        }
    }

    /// The message again, frame kind and bytes as they were sent.
    pub fn message(&mut self) -> Option<Frame> {
        join(self.text.take(), self.binary_base64.take())
    }

    /// About what it adds to a NOTIFY body.
    pub fn json_len(&self) -> usize {
        let rooms: usize = self.rooms.iter().flatten().map(|r| r.len() + 3).sum();
        80 + self.hub.as_str().len()
            + self.text.as_ref().map_or(0, |t| t.len() + t.len() / 8)
            + self.binary_base64.as_ref().map_or(0, String::len)
            + rooms
    }
}
