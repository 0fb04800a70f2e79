//! Event times: Unix milliseconds now, and written as RFC 3339 UTC.

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
mod tests {
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
