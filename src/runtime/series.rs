//! A hub's recent past for the console's charts: one sample every
//! [`EVERY_MS`] (live connections, messages in and out per second), the
//! last [`KEEP`] of them. In memory only, one fixed ring per hub (so per
//! node and environment), dropped with the hub.

use crate::model::rfc3339;
use serde_json::{json, Value};
use std::collections::VecDeque;

/// How often a sample is taken.
pub const EVERY_MS: i64 = 10_000;
/// How many are kept: 15 minutes.
pub const KEEP: usize = 90;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: i64,
    pub connections: u64,
    pub in_per_s: f64,
    pub out_per_s: f64,
}

impl Sample {
    pub fn json(&self) -> Value {
        json!({
            "at": rfc3339(self.at),
            "connections": self.connections,
            "messages_in_per_s": round(self.in_per_s),
            "messages_out_per_s": round(self.out_per_s),
        })
    }
}

/// Two decimals are plenty for a chart, and keep the answer short.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The counters as read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    pub at: i64,
    pub connections: u64,
    pub messages_in: u64,
    pub messages_out: u64,
}

pub struct Series {
    samples: VecDeque<Sample>,
    /// The reading the next sample's rates start from.
    last: Reading,
}

impl Series {
    /// An empty ring whose first rates count from `start`.
    pub fn new(start: Reading) -> Series {
        Series {
            samples: VecDeque::with_capacity(KEEP),
            last: start,
        }
    }

    /// The rates from the last reading to `now`, over at least a second
    /// (a read just after a sample would otherwise multiply a few
    /// messages into a burst).
    fn rate(&self, now: Reading) -> Sample {
        let secs = (now.at - self.last.at).max(1000) as f64 / 1000.0;
        // Counters only grow while the hub lives; saturate all the same.
        let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        Sample {
            at: now.at,
            connections: now.connections,
            in_per_s: per_s(now.messages_in, self.last.messages_in),
            out_per_s: per_s(now.messages_out, self.last.messages_out),
        }
    }

    /// Takes a sample; the oldest goes when the ring is full.
    pub fn record(&mut self, now: Reading) {
        let s = self.rate(now);
        if self.samples.len() == KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
        self.last = now;
    }

    /// Oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// The interval under way: what the next sample would say now.
    pub fn current(&self, now: Reading) -> Sample {
        self.rate(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, conns: u64, i: u64, o: u64) -> Reading {
        Reading {
            at: secs * 1000,
            connections: conns,
            messages_in: i,
            messages_out: o,
        }
    }

    #[test]
    fn rates_are_per_second_between_samples() {
        let mut s = Series::new(at(0, 0, 0, 0));
        s.record(at(10, 2, 50, 100));
        s.record(at(20, 1, 50, 130));
        let got: Vec<_> = s.samples().copied().collect();
        assert_eq!(got[0].in_per_s, 5.0);
        assert_eq!(got[0].out_per_s, 10.0);
        assert_eq!(got[1].in_per_s, 0.0);
        assert_eq!(got[1].out_per_s, 3.0);
        assert_eq!(got[1].connections, 1);
        // Half a second into the next interval: counted over a second.
        let now = s.current(Reading {
            at: 20_500,
            connections: 1,
            messages_in: 54,
            messages_out: 130,
        });
        assert_eq!(now.in_per_s, 4.0);
    }

    #[test]
    fn the_ring_keeps_the_last_fifteen_minutes() {
        let mut s = Series::new(at(0, 0, 0, 0));
        let room = s.samples.capacity();
        for i in 1..=(KEEP as i64 + 25) {
            s.record(at(i * 10, i as u64, 0, 0));
        }
        assert_eq!(s.samples().count(), KEEP);
        assert_eq!(s.samples().next().unwrap().connections, 26);
        assert_eq!(s.samples.capacity(), room, "the ring never grows");
    }
}
