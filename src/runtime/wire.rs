//! Watches the frames a websocket client sends, below the protocol
//! layer. tungstenite gathers a fragmented message (and a frame cut
//! short) out of sight while it answers pings, so neither the heartbeat
//! nor the idle clock sees a client that starts a message and never
//! ends it. This wrapper of the socket follows frame headers (payloads
//! are skipped, not copied) and tells the connection since when a
//! message has been left unfinished.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What a connection's reader and its conn loop share.
#[derive(Default)]
pub struct WireWatch {
    /// Set once the connection speaks WebSocket: HTTP bytes are not frames.
    armed: AtomicBool,
    /// Milliseconds since [`epoch`] (plus one) when the current message
    /// was left unfinished; 0 while none is.
    since: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl WireWatch {
    /// From now on, what the client sends is frames.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    /// Since when a message (or frame) from the client is unfinished.
    pub fn incomplete_since(&self) -> Option<Instant> {
        match self.since.load(Ordering::Acquire) {
            0 => None,
            ms => Some(epoch() + Duration::from_millis(ms - 1)),
        }
    }

    fn set(&self, incomplete: bool) {
        let v = if incomplete {
            epoch().elapsed().as_millis() as u64 + 1
        } else {
            0
        };
        self.since.store(v, Ordering::Release);
    }
}

/// Frame boundaries of a client's byte stream (RFC 6455 §5.2).
#[derive(Default)]
struct Frames {
    head: [u8; 14],
    have: u8,
    /// The header's length, once its first two bytes are in.
    need: u8,
    /// Payload bytes of the current frame still to come.
    payload: u64,
    /// A data message has begun and its final frame has not.
    open: bool,
}

impl Frames {
    fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.payload > 0 {
                let n = self.payload.min(b.len() as u64);
                self.payload -= n;
                b = &b[n as usize..];
                continue;
            }
            self.head[self.have as usize] = b[0];
            self.have += 1;
            b = &b[1..];
            if self.have == 2 {
                let ext = match self.head[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let mask = if self.head[1] & 0x80 != 0 { 4 } else { 0 };
                self.need = 2 + ext + mask;
            }
            if self.have == self.need {
                self.end_header();
            }
        }
    }

    fn end_header(&mut self) {
        let h = &self.head;
        let fin = h[0] & 0x80 != 0;
        // Control frames (0x8 and up) may come between fragments.
        if h[0] & 0x0f < 8 {
            self.open = !fin;
        }
        self.payload = match h[1] & 0x7f {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 => u64::from_be_bytes(h[2..10].try_into().unwrap_or_default()),
            n => n as u64,
        };
        self.have = 0;
        self.need = 0;
    }

    fn incomplete(&self) -> bool {
        self.open || self.have > 0 || self.payload > 0
    }
}

/// A connection's socket, watched; `H` is held for the socket's life
/// (its place under the per-address cap).
pub struct Wire<T, H> {
    io: T,
    watch: Arc<WireWatch>,
    frames: Frames,
    incomplete: bool,
    _hold: H,
}

impl<T, H> Wire<T, H> {
    pub fn new(io: T, watch: Arc<WireWatch>, hold: H) -> Self {
        Wire {
            io,
            watch,
            frames: Frames::default(),
            incomplete: false,
            _hold: hold,
        }
    }
}

impl<T: AsyncRead + Unpin, H: Unpin> AsyncRead for Wire<T, H> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut me.io).poll_read(cx, buf))?;
        if buf.filled().len() > before && me.watch.armed.load(Ordering::Acquire) {
            me.frames.feed(&buf.filled()[before..]);
            let now = me.frames.incomplete();
            if now != me.incomplete {
                me.incomplete = now;
                me.watch.set(now);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin, H: Unpin> AsyncWrite for Wire<T, H> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, b)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, b)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, op: u8, len: usize) -> Vec<u8> {
        let mut f = vec![(fin as u8) << 7 | op];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend((len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend((len as u64).to_be_bytes());
            }
        }
        f.extend([1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn follows_fragments_control_frames_and_cut_frames() {
        let mut fr = Frames::default();
        fr.feed(&frame(true, 1, 300));
        assert!(!fr.incomplete(), "one whole frame");
        fr.feed(&frame(false, 1, 10));
        assert!(fr.incomplete(), "a first fragment");
        fr.feed(&frame(true, 0xA, 0));
        assert!(fr.incomplete(), "a pong between fragments ends nothing");
        fr.feed(&frame(true, 0, 70_000));
        assert!(!fr.incomplete(), "the final fragment");
        // The same bytes one at a time, and a frame cut short.
        let mut fr = Frames::default();
        let whole = frame(true, 2, 200);
        for b in &whole[..whole.len() - 1] {
            fr.feed(std::slice::from_ref(b));
            assert!(fr.incomplete());
        }
        fr.feed(&whole[whole.len() - 1..]);
        assert!(!fr.incomplete());
    }
}
