//! A hub's streams: per room, the epoch, the last offset and the newest
//! messages kept (bounded by `history.size`, `history.ttl_s` and the
//! operator's bytes per element). Alone, they are the history; with a
//! shared history they mirror the store's newest messages (`place`,
//! `adopt`). The hub holds them under one lock (`history.rs`).

use crate::runtime::frame::Frame;
use crate::runtime::position::Position;
use crate::runtime::shared_history::Stored;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

#[derive(Default)]
pub(crate) struct Streams {
    pub(super) map: HashMap<String, Stream>,
    pub(super) bytes: usize,
    pub(super) swept_at: i64,
}

pub(super) struct Stream {
    pub(super) epoch: Arc<str>,
    pub(super) top: u64,
    pub(super) items: VecDeque<Item>,
    pub(super) touched: i64,
    /// Shared: notifications up to here may still arrive (the stream was
    /// made from a read of the store).
    pub(super) late: u64,
    /// Shared: connections that must not get offsets up to theirs.
    pub(super) fresh: HashMap<String, u64>,
}

pub(super) struct Item {
    pub(super) offset: u64,
    pub(super) msg: Frame,
    pub(super) at: i64,
}

pub(super) fn item_bytes(m: &Frame) -> usize {
    m.len() + 64
}

fn new_epoch() -> Arc<str> {
    uuid::Uuid::new_v4().simple().to_string()[..16].into()
}

impl Stream {
    pub(super) fn new(now: i64) -> Stream {
        Stream::at(new_epoch(), 0, now)
    }

    pub(super) fn at(epoch: Arc<str>, top: u64, now: i64) -> Stream {
        Stream {
            epoch,
            top,
            items: VecDeque::new(),
            touched: now,
            late: 0,
            fresh: HashMap::new(),
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.items.iter().map(|i| item_bytes(&i.msg)).sum()
    }

    /// Whether the kept messages after `since` are all here.
    pub(super) fn covers(&self, since: u64, ttl_ms: i64, now: i64) -> bool {
        if since >= self.top {
            return since == self.top;
        }
        let first = self
            .items
            .iter()
            .find(|i| i.at >= now - ttl_ms)
            .map_or(self.top + 1, |i| i.offset);
        first <= since + 1 && self.items.len() as u64 > self.top.saturating_sub(first)
    }
}

impl Streams {
    pub(super) fn stream(&mut self, room: &str, now: i64) -> &mut Stream {
        self.map
            .entry(room.to_string())
            .or_insert_with(|| Stream::new(now))
    }

    /// Drops what is past `ttl_ms`, then what is over `size`, in `room`;
    /// then the oldest of any room while over `cap` bytes.
    pub(super) fn trim(&mut self, room: &str, size: usize, ttl_ms: i64, cap: usize, now: i64) {
        let mut freed = 0;
        if let Some(s) = self.map.get_mut(room) {
            while s
                .items
                .front()
                .is_some_and(|i| i.at < now - ttl_ms || s.items.len() > size)
            {
                freed += s.items.pop_front().map_or(0, |i| item_bytes(&i.msg));
            }
        }
        self.bytes -= freed;
        while self.bytes > cap {
            let oldest = self
                .map
                .iter()
                .filter_map(|(r, s)| s.items.front().map(|i| (i.at, r.clone())))
                .min();
            let Some((_, r)) = oldest else { break };
            if let Some(i) = self.map.get_mut(&r).and_then(|s| s.items.pop_front()) {
                self.bytes -= item_bytes(&i.msg);
            }
        }
    }

    /// Takes a publication the shared store placed: None when this node
    /// has it already; else the connections that must not get it, and
    /// whether notifications before it were missed (a hole).
    pub(super) fn place(
        &mut self,
        room: &str,
        pos: &Position,
        msg: &Frame,
        at: i64,
        now: i64,
    ) -> Option<(Vec<String>, bool)> {
        let s = self.map.entry(room.to_string()).or_insert_with(|| {
            Stream::at(pos.epoch.as_str().into(), pos.offset.saturating_sub(1), now)
        });
        if *s.epoch != *pos.epoch {
            // The stream's history was lost and made again.
            self.bytes -= s.bytes();
            *s = Stream::at(pos.epoch.as_str().into(), pos.offset.saturating_sub(1), now);
        }
        s.touched = now;
        let o = pos.offset;
        let skip: Vec<String> = s
            .fresh
            .iter()
            .filter(|(_, v)| **v >= o)
            .map(|(k, _)| k.clone())
            .collect();
        let item = Item {
            offset: o,
            msg: msg.clone(),
            at,
        };
        let hole = o > s.top + 1;
        if o > s.top {
            if hole {
                // Missed notifications: what is kept here has a hole, so
                // recoveries read the store.
                self.bytes -= s.bytes();
                s.items.clear();
            }
            s.top = o;
            // Commit order: nothing at or below the stream's read comes now.
            s.late = 0;
            s.fresh.retain(|_, v| *v > o);
            s.items.push_back(item);
        } else if o <= s.late {
            if s.items.iter().any(|i| i.offset == o) {
                return Some((skip, false));
            }
            let at = s
                .items
                .iter()
                .position(|i| i.offset > o)
                .unwrap_or(s.items.len());
            s.items.insert(at, item);
        } else {
            return None;
        }
        self.bytes += item_bytes(msg);
        Some((skip, hole))
    }

    /// Makes `room`'s stream from a read of the shared store.
    pub(super) fn adopt(&mut self, room: &str, read: &Stored, ttl_ms: i64, now: i64) {
        if self.map.contains_key(room) {
            return;
        }
        let p = &read.position;
        let mut s = Stream::at(p.epoch.as_str().into(), p.offset, now);
        s.late = p.offset;
        for (offset, msg, at) in &read.items {
            if *offset <= p.offset && *at >= now - ttl_ms {
                self.bytes += item_bytes(msg);
                s.items.push_back(Item {
                    offset: *offset,
                    msg: msg.clone(),
                    at: *at,
                });
            }
        }
        self.map.insert(room.to_string(), s);
    }

    /// Forgets streams with nothing kept and no use for `ttl_ms` (their
    /// epoch goes with them), at most once per `ttl_ms`.
    pub(super) fn sweep(&mut self, ttl_ms: i64, now: i64) {
        if now - self.swept_at < ttl_ms {
            return;
        }
        self.swept_at = now;
        let mut freed = 0;
        self.map.retain(|_, s| {
            while s.items.front().is_some_and(|i| i.at < now - ttl_ms) {
                freed += s.items.pop_front().map_or(0, |i| item_bytes(&i.msg));
            }
            !s.items.is_empty() || now - s.touched < ttl_ms
        });
        self.bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    fn text(s: &str) -> Frame {
        Frame::text(s.to_string())
    }

    fn offsets(st: &Streams, room: &str) -> Vec<u64> {
        st.map[room].items.iter().map(|i| i.offset).collect()
    }

    #[test]
    fn placed_publications_are_taken_once_in_order() {
        let mut st = Streams::default();
        assert_eq!(
            st.place("r", &at("e1", 1), &text("a"), 0, 0),
            Some((vec![], false))
        );
        assert_eq!(
            st.place("r", &at("e1", 2), &text("b"), 0, 0),
            Some((vec![], false))
        );
        // Seen already: dropped.
        assert_eq!(st.place("r", &at("e1", 2), &text("b"), 0, 0), None);
        assert_eq!(st.place("r", &at("e1", 1), &text("a"), 0, 0), None);
        assert_eq!(offsets(&st, "r"), [1, 2]);
        assert!(st.map["r"].covers(0, 1000, 0));
        // A stream first seen at 7 keeps 7 only.
        st.place("s", &at("e1", 7), &text("x"), 0, 0);
        assert!(st.map["s"].covers(6, 1000, 0));
        assert!(!st.map["s"].covers(5, 1000, 0));
    }

    #[test]
    fn a_missed_notification_is_a_hole_and_the_mirror_starts_over() {
        let mut st = Streams::default();
        st.place("r", &at("e1", 1), &text("a"), 0, 0);
        st.place("r", &at("e1", 2), &text("b"), 0, 0);
        assert_eq!(
            st.place("r", &at("e1", 5), &text("e"), 0, 0),
            Some((vec![], true))
        );
        assert_eq!(offsets(&st, "r"), [5]);
        assert!(!st.map["r"].covers(2, 1000, 0), "3 and 4 are not here");
        assert_eq!(st.bytes, item_bytes(&text("e")));
        // Another epoch: the stream is made again.
        assert_eq!(
            st.place("r", &at("e2", 1), &text("n"), 0, 0),
            Some((vec![], false))
        );
        assert_eq!((&*st.map["r"].epoch, st.map["r"].top), ("e2", 1));
    }

    #[test]
    fn a_stream_read_from_the_store_takes_late_notifications_but_not_for_fresh_clients() {
        let mut st = Streams::default();
        let read = Stored {
            position: at("e1", 10),
            items: vec![(9, text("i"), 0), (10, text("j"), 0)],
        };
        st.adopt("r", &read, 1000, 0);
        st.map.get_mut("r").unwrap().fresh.insert("c1".into(), 10);
        assert!(st.map["r"].covers(8, 1000, 0));
        // 10 was in the read; a late notification of it still reaches the
        // other members, not c1, and is not kept twice.
        assert_eq!(
            st.place("r", &at("e1", 10), &text("j"), 0, 0),
            Some((vec!["c1".to_string()], false))
        );
        assert_eq!(offsets(&st, "r"), [9, 10]);
        // Past the read: everyone, and c1 is no longer held back.
        assert_eq!(
            st.place("r", &at("e1", 11), &text("k"), 0, 0),
            Some((vec![], false))
        );
        assert!(st.map["r"].fresh.is_empty());
        assert_eq!(st.map["r"].late, 0);
        assert_eq!(st.place("r", &at("e1", 10), &text("j"), 0, 0), None);
    }

    #[test]
    fn trims_keep_size_and_the_bytes_cap() {
        let mut st = Streams::default();
        for o in 1..=5 {
            st.place("r", &at("e", o), &text("12345678"), 0, 0);
            st.trim("r", 3, 1000, usize::MAX, 0);
        }
        assert_eq!(offsets(&st, "r"), [3, 4, 5]);
        let one = item_bytes(&text("12345678"));
        st.trim("r", 3, 1000, one * 2, 0);
        assert_eq!(offsets(&st, "r"), [4, 5]);
        assert_eq!(st.bytes, one * 2);
    }
}
