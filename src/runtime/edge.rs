//! A network edge carries the runtime's [`Frame`]s over its library's
//! socket: it names the two conversions and what an error means;
//! [`Framed`] does the rest, holding nothing more than the socket.

use super::frame::Frame;
use futures::{Sink, SinkExt, Stream, StreamExt};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

pub trait Edge: 'static {
    /// The library's message.
    type Message;
    /// The library's error.
    type Error;
    /// What a failed read tells the reader.
    type ReadError;
    /// What a failed write tells the writer.
    type WriteError;
    fn frame(m: Self::Message) -> Frame;
    fn message(f: Frame) -> Self::Message;
    fn read_error(e: Self::Error) -> Self::ReadError;
    fn write_error(e: Self::Error) -> Self::WriteError;
}

/// A socket of `E`'s library, reading and writing frames.
pub struct Framed<S, E> {
    socket: S,
    edge: PhantomData<fn() -> E>,
}

impl<S, E> Framed<S, E> {
    pub fn new(socket: S) -> Framed<S, E> {
        Framed {
            socket,
            edge: PhantomData,
        }
    }
}

impl<S, E> Stream for Framed<S, E>
where
    E: Edge,
    S: Stream<Item = Result<E::Message, E::Error>> + Unpin,
{
    type Item = Result<Frame, E::ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        (self.socket.poll_next_unpin(cx)).map(|m| m.map(|r| r.map(E::frame).map_err(E::read_error)))
    }
}

impl<S, E> Sink<Frame> for Framed<S, E>
where
    E: Edge,
    S: Sink<E::Message, Error = E::Error> + Unpin,
{
    type Error = E::WriteError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket.poll_ready_unpin(cx).map_err(E::write_error)
    }

    fn start_send(mut self: Pin<&mut Self>, f: Frame) -> Result<(), Self::Error> {
        (self.socket.start_send_unpin(E::message(f))).map_err(E::write_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket.poll_flush_unpin(cx).map_err(E::write_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.socket.poll_close_unpin(cx).map_err(E::write_error)
    }
}
