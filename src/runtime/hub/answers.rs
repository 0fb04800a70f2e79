//! `presence` answers kept as the bytes they were written to, while
//! nobody arrived, left, moved or changed their info: a room asked
//! about often is folded and serialized once per change, not per ask.

use super::Hub;
use crate::sync::lock;
use bytes::Bytes;
use std::collections::HashMap;

/// Rooms whose answers are kept at once; room names come from callers,
/// so the map is bounded (a room beyond it is answered, not kept).
const MAX_KEPT: usize = 64;

/// Answers true at one count of the hub's [`Changes`](crate::runtime::conn::Changes).
#[derive(Default)]
pub(super) struct Answers {
    at: u64,
    /// The whole hub's (no room asked).
    all: Option<Bytes>,
    rooms: HashMap<String, Bytes>,
}

impl Answers {
    fn get(&self, at: u64, room: Option<&str>) -> Option<Bytes> {
        if at != self.at {
            return None;
        }
        match room {
            None => self.all.clone(),
            Some(r) => self.rooms.get(r).cloned(),
        }
    }

    /// Keeps an answer gathered after the count read `at`. A later count
    /// drops everything kept; an answer from an earlier one is stale.
    fn put(&mut self, at: u64, room: Option<&str>, answer: Bytes) {
        if at < self.at {
            return;
        }
        if at > self.at {
            self.at = at;
            self.all = None;
            self.rooms.clear();
        }
        match room {
            None => self.all = Some(answer),
            Some(r) if self.rooms.len() < MAX_KEPT => {
                self.rooms.insert(r.to_string(), answer);
            }
            Some(_) => {}
        }
    }
}

impl Hub {
    /// `presence` as the REST op answers it (with the environment), on
    /// every node. Alone, the answer is kept until the roster changes;
    /// with other nodes, their connections are asked for each time.
    pub async fn presence_written(&self, room: Option<&str>) -> crate::error::Result<Bytes> {
        // Read before gathering: a change during it makes a later count.
        let at = (!self.peers.shared()).then(|| self.changes.seen());
        if let Some(kept) = at.and_then(|at| lock(&self.answers).get(at, room)) {
            return Ok(kept);
        }
        let mut p = self.presence(room).await?;
        p.env = Some(self.env);
        let answer = write(&p)?;
        if let Some(at) = at {
            lock(&self.answers).put(at, room, answer.clone());
        }
        Ok(answer)
    }
}

/// Room for a typical entry each: grown from nothing, the answer for
/// 100 users was copied over eight times.
pub fn write(p: &super::Presence) -> crate::error::Result<Bytes> {
    let mut out = Vec::with_capacity(128 + 64 * p.users.len());
    serde_json::to_writer(&mut out, p)?;
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_holds_until_the_count_moves() {
        let mut a = Answers::default();
        let lobby = Bytes::from_static(b"lobby");
        a.put(3, Some("lobby"), lobby.clone());
        a.put(3, None, Bytes::from_static(b"all"));
        assert_eq!(a.get(3, Some("lobby")), Some(lobby));
        assert_eq!(a.get(3, None).as_deref(), Some(&b"all"[..]));
        assert_eq!(a.get(3, Some("hall")), None);
        // Something changed: nothing kept is true any more.
        assert_eq!(a.get(4, Some("lobby")), None);
        // An answer gathered before the change does not come back.
        a.put(4, Some("hall"), Bytes::from_static(b"hall"));
        a.put(3, Some("lobby"), Bytes::from_static(b"stale"));
        assert_eq!(a.get(4, Some("lobby")), None);
        assert_eq!(a.get(4, None), None);
        assert_eq!(a.get(4, Some("hall")).as_deref(), Some(&b"hall"[..]));
    }

    #[test]
    fn rooms_kept_are_bounded() {
        let mut a = Answers::default();
        for i in 0..MAX_KEPT + 10 {
            a.put(1, Some(&format!("r{i}")), Bytes::from_static(b"x"));
        }
        assert_eq!(a.rooms.len(), MAX_KEPT);
        assert!(a.get(1, Some("r0")).is_some());
        assert!(a.get(1, Some(&format!("r{}", MAX_KEPT + 1))).is_none());
    }
}
