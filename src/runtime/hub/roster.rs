//! Users as addresses: which of this hub's connections belong to which
//! user, and how many of a user's connections are in each room, so a
//! user's first join and last leave can be told (presence events) and
//! `send`/`close` reach every connection of a user.

use super::{Audience, Hub};
use crate::runtime::conn::{CloseReq, Conn, SendOutcome};
use crate::runtime::frame::Frame;
use crate::sync::lock;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Default)]
pub(super) struct Roster {
    /// A user's connections on this node.
    conns: HashMap<String, HashSet<String>>,
    /// (room, user): how many of the user's connections here are in it.
    rooms: HashMap<(String, String), usize>,
}

impl Roster {
    fn add(&mut self, user: &str, id: &str) {
        self.conns
            .entry(user.to_string())
            .or_default()
            .insert(id.to_string());
    }

    fn remove(&mut self, user: &str, id: &str) {
        if let Some(set) = self.conns.get_mut(user) {
            set.remove(id);
            if set.is_empty() {
                self.conns.remove(user);
            }
        }
    }

    /// True when this is the user's first connection here in `room`.
    fn enter(&mut self, room: &str, user: &str) -> bool {
        let n = self
            .rooms
            .entry((room.to_string(), user.to_string()))
            .or_default();
        *n += 1;
        *n == 1
    }

    /// True when that was the user's last connection here in `room`.
    fn exit(&mut self, room: &str, user: &str) -> bool {
        let key = (room.to_string(), user.to_string());
        match self.rooms.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.rooms.remove(&key);
                true
            }
            None => false,
        }
    }

    fn ids(&self, user: &str) -> Vec<String> {
        self.conns
            .get(user)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The frame room members get when a user arrives or goes.
pub fn presence_frame(room: &str, user: &str, info: Option<&Value>, joined: bool) -> String {
    json!({
        "op": "presence",
        "room": room,
        "action": if joined { "join" } else { "leave" },
        "user": user,
        "info": info,
    })
    .to_string()
}

/// One connection as `presence` counts it: its user, when it connected
/// and its info. Gathered unsorted from every node, then folded by user.
pub type Seen = (Arc<str>, i64, Option<Arc<Value>>);

/// `presence`'s answer, from users gathered on every node; written out
/// as it is, without a JSON tree in between.
#[derive(Debug, serde::Serialize)]
pub struct Presence {
    pub room: Option<String>,
    pub users: Vec<PresentUser>,
    pub user_count: usize,
    pub connection_count: usize,
    /// The environment asked about (the REST op names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<crate::model::Env>,
}

/// One user in [`Presence`].
#[derive(Debug, serde::Serialize)]
pub struct PresentUser {
    pub user: Arc<str>,
    pub connections: usize,
    /// The newest connection's.
    pub info: Option<Arc<Value>>,
}

/// Users in name order, each with its connection count and its newest
/// connection's info. A sort of shared names instead of a map of copies:
/// `presence` answers often.
pub fn presence_json(room: Option<&str>, mut seen: Vec<Seen>, connection_count: usize) -> Presence {
    seen.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut users: Vec<PresentUser> = Vec::new();
    for (user, _, info) in seen {
        match users.last_mut() {
            // Sorted by time within a user: the last one seen is the newest.
            Some(last) if last.user == user => {
                last.connections += 1;
                last.info = info;
            }
            _ => users.push(PresentUser {
                user,
                connections: 1,
                info,
            }),
        }
    }
    Presence {
        room: room.map(str::to_string),
        user_count: users.len(),
        users,
        connection_count,
        env: None,
    }
}

impl Hub {
    /// A connection with a user was registered (its rooms already set).
    pub(super) fn user_arrived(&self, conn: &Conn) {
        let Some(user) = conn.user.as_deref() else {
            return;
        };
        // Told under the roster's lock, so a user's join and leave go out
        // in the order they happened.
        let mut r = lock(&self.roster);
        r.add(user, &conn.id);
        for room in conn.rooms() {
            if r.enter(&room, user) {
                self.presence_changed(&room, user, conn.info(), true);
            }
        }
    }

    /// A connection with a user went (its rooms still on it).
    pub(super) fn user_went(&self, conn: &Conn) {
        let Some(user) = conn.user.as_deref() else {
            return;
        };
        let mut r = lock(&self.roster);
        r.remove(user, &conn.id);
        for room in conn.rooms() {
            if r.exit(&room, user) {
                self.presence_changed(&room, user, conn.info(), false);
            }
        }
    }

    /// `conn` joined (`joined`) or left `room`.
    pub(super) fn user_moved(&self, conn: &Conn, room: &str, joined: bool) {
        let Some(user) = conn.user.as_deref() else {
            return;
        };
        let mut r = lock(&self.roster);
        let changed = if joined {
            r.enter(room, user)
        } else {
            r.exit(room, user)
        };
        if changed {
            self.presence_changed(room, user, conn.info(), joined);
        }
    }

    /// A user's first connection on this node joined `room`, or its last
    /// one left. Alone, that is the user's arrival or leaving, told at
    /// once; with other nodes, the cluster decides (exactly once across
    /// them) and tells every node's members. Never waits.
    /// `info` is copied only when the change is told to other nodes.
    fn presence_changed(&self, room: &str, user: &str, info: Option<Arc<Value>>, joined: bool) {
        if !self.spec().rooms.presence_events {
            return;
        }
        if self.peers.shared() {
            let info = info.as_deref().cloned();
            self.peers
                .presence
                .user_moved(&self.key, room, user, info, joined);
        } else {
            let text = presence_frame(room, user, info.as_deref(), joined);
            self.deliver(&Frame::text(text), Audience::Room(room));
        }
    }

    /// This node's open connections of `user`.
    fn user_conns(&self, user: &str) -> Vec<std::sync::Arc<Conn>> {
        let ids = lock(&self.roster).ids(user);
        ids.iter().filter_map(|id| self.find(id)).collect()
    }

    /// `send {"user"}` here: how many of the user's connections took it.
    pub fn send_to_user(&self, user: &str, msg: &Frame) -> usize {
        let mut delivered = 0;
        for c in self.user_conns(user) {
            match c.try_send(msg.clone()) {
                SendOutcome::Queued => delivered += 1,
                SendOutcome::Overflow => self.metrics.slow_client_count.inc(),
                SendOutcome::Gone => {}
            }
        }
        self.metrics.message_sent_count.inc_by(delivered as u64);
        delivered
    }

    /// `close {"user"}` here: how many connections are being closed.
    pub fn close_user(&self, user: &str, code: u16, reason: &str) -> usize {
        let conns = self.user_conns(user);
        for c in &conns {
            c.request_close(CloseReq::soft(code, reason));
        }
        conns.len()
    }

    /// `presence` of this hub on every node: users (of `room`, or all)
    /// with their connection counts and info.
    pub async fn presence(&self, room: Option<&str>) -> crate::error::Result<Presence> {
        let mut seen = Vec::new();
        let mut n = self.gather_presence(room, &mut seen);
        if self.peers.shared() {
            let remote = self
                .peers
                .presence
                .remote_connections(&self.key, room, None);
            for c in remote.await? {
                n += 1;
                if let Some(u) = c.user {
                    let info = c
                        .info
                        .and_then(|i| serde_json::from_str(&i).ok())
                        .map(Arc::new);
                    seen.push((Arc::from(u), c.connected_at, info));
                }
            }
        }
        Ok(presence_json(room, seen, n))
    }

    /// This node's part of `presence`: the connections with a user (of
    /// `room`, or of the whole hub) added to `seen`; answers how many
    /// connections counted.
    pub fn gather_presence(&self, room: Option<&str>, seen: &mut Vec<Seen>) -> usize {
        let conns = match room {
            Some(r) => self.members(std::iter::once(r.to_string()), None),
            None => self.all_conns(),
        };
        let mut n = 0;
        seen.reserve(conns.len());
        for c in conns.iter().filter(|c| !c.is_closing()) {
            n += 1;
            if let Some(u) = &c.user {
                seen.push((u.clone(), c.connected_at, c.info()));
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_join_and_last_leave_are_told_once() {
        let mut r = Roster::default();
        assert!(r.enter("lobby", "ann"));
        assert!(!r.enter("lobby", "ann"));
        assert!(r.enter("lobby", "bob"));
        assert!(!r.exit("lobby", "ann"));
        assert!(r.exit("lobby", "ann"));
        // A leave nobody joined is no change.
        assert!(!r.exit("lobby", "ann"));
        assert!(r.exit("lobby", "bob"));
        assert!(r.rooms.is_empty());
    }

    #[test]
    fn a_users_connections_are_found_until_they_go() {
        let mut r = Roster::default();
        r.add("ann", "c1");
        r.add("ann", "c2");
        let mut ids = r.ids("ann");
        ids.sort();
        assert_eq!(ids, ["c1", "c2"]);
        r.remove("ann", "c1");
        r.remove("ann", "c2");
        assert!(r.ids("ann").is_empty());
        assert!(r.conns.is_empty());
    }

    #[test]
    fn presence_folds_users_in_order_with_the_newest_info() {
        let info = |v: i64| Some(Arc::new(serde_json::json!(v)));
        let seen: Vec<Seen> = vec![
            (Arc::from("bob"), 5, info(1)),
            (Arc::from("ann"), 9, info(2)),
            (Arc::from("bob"), 7, info(3)),
            (Arc::from("ann"), 3, info(4)),
            (Arc::from("cy"), 1, None),
        ];
        let p = presence_json(Some("lobby"), seen, 6);
        let got: Vec<_> = (p.users.iter())
            .map(|u| {
                (
                    u.user.to_string(),
                    u.connections,
                    u.info.as_deref().cloned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("ann".to_string(), 2, Some(serde_json::json!(2))),
                ("bob".to_string(), 2, Some(serde_json::json!(3))),
                ("cy".to_string(), 1, None),
            ]
        );
        assert_eq!((p.user_count, p.connection_count), (3, 6));
    }
}
