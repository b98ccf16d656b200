//! A stream's writing half shared by its writer task and whoever has a frame for it.
//!
//! Handing every frame to the stream's task costs the frame the rest of the sending task's
//! turn and a wake-up, on the path of every write. So a frame may be written there and then
//! ([`SharedSink::send`]) when nothing waits for the task; otherwise, and whenever the stream
//! cannot take it at once, it is handed to the task, which writes what it was handed, in
//! order ([`SharedSink::feed`], [`SharedSink::flush`], [`SharedSink::finished`]). While the
//! task has anything it has not finished, only the task writes, so frames keep their order.
//! Used by the leader's early requests (`raft::early`) and by forwarded writes and their
//! answers (`node::forward`).

use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Sink, SinkExt};

/// How writing a frame at once went (see [`write_now`]).
enum Now {
    /// It left.
    Written,
    /// The stream took it, but not all of it is on the socket yet: it needs a flush.
    Buffered,
    /// The stream cannot take it now; it was not taken.
    Busy,
    /// The stream has failed.
    Broken,
}

/// What [`SharedSink::send`] asks its caller to hand to the task.
pub(crate) enum Hand {
    /// The frame itself: it could not be written at once.
    Frame,
    /// Nothing but a flush: the frame was taken but not all of it has left.
    Flush,
    /// The frame, if the task should try it on another stream: the open one has just failed
    /// under it (declining fails the frame).
    AfterFailure,
}

/// A stream's writing half, `S`, with `X` kept alongside for as long as that stream is open
/// (what its frames' answers are matched with, say).
pub(crate) struct SharedSink<S, X = ()> {
    state: parking_lot::Mutex<State<S, X>>,
}

struct State<S, X> {
    /// `None` until a stream is open, and once it has failed.
    open: Option<(S, X)>,
    /// Messages handed to the task that it has not finished.
    queued: usize,
}

impl<S, X> Default for SharedSink<S, X> {
    fn default() -> Self {
        SharedSink { state: parking_lot::Mutex::new(State { open: None, queued: 0 }) }
    }
}

impl<S, X> SharedSink<S, X>
where
    S: Sink<Bytes, Error = std::io::Error> + Unpin,
{
    /// A stream has been opened (by the task).
    pub fn open(&self, sink: S, with: X) {
        self.state.lock().open = Some((sink, with));
    }

    /// Nothing more goes out on the stream.
    pub fn close(&self) {
        self.state.lock().open = None;
    }

    pub fn is_open(&self) -> bool {
        self.state.lock().open.is_some()
    }

    /// Sends `frame`: written there and then if `at_once` allows, a stream is open, and
    /// nothing waits for the task; otherwise `hand` is asked to hand it (or a flush) to the
    /// task, returning whether it could. `accepted` runs once the stream has taken the frame,
    /// if it was written here (before it is flushed: an answer to it cannot come before).
    /// `false` if the frame will not go out.
    pub fn send(
        &self,
        frame: &Bytes,
        at_once: bool,
        accepted: impl FnOnce(&X),
        hand: impl FnOnce(Hand) -> bool,
    ) -> bool {
        let mut st = self.state.lock();
        let mut handing = Hand::Frame;
        if at_once && st.queued == 0 {
            if let Some((sink, with)) = st.open.as_mut() {
                match write_now(sink, frame.clone(), || accepted(with)) {
                    Now::Written => return true,
                    Now::Buffered => handing = Hand::Flush,
                    Now::Busy => {}
                    Now::Broken => {
                        st.open = None;
                        handing = Hand::AfterFailure;
                    }
                }
            }
        }
        let flush = matches!(handing, Hand::Flush);
        if hand(handing) {
            st.queued += 1;
            true
        } else {
            if flush {
                // The task has stopped: nothing more goes out on this stream.
                st.open = None;
            }
            false
        }
    }

    /// The task's part: puts `frame` in the open stream's buffer, with `accepted` run once
    /// it is taken; `false` if there is no open stream or it failed.
    pub async fn feed(&self, frame: Bytes, accepted: impl FnOnce(&X)) -> bool {
        if !self.poll(|sink, cx| sink.poll_ready_unpin(cx)).await {
            return false;
        }
        let mut st = self.state.lock();
        let Some((sink, with)) = st.open.as_mut() else { return false };
        let taken = sink.start_send_unpin(frame).is_ok();
        if taken {
            accepted(with);
        }
        taken
    }

    /// The task's part: writes out what the open stream has buffered; `false` if there is
    /// no open stream or it failed.
    pub async fn flush(&self) -> bool {
        self.poll(|sink, cx| sink.poll_flush_unpin(cx)).await
    }

    /// The task has finished `n` messages it was handed; if `ok` is false the stream failed
    /// and is closed.
    pub fn finished(&self, n: usize, ok: bool) {
        let mut st = self.state.lock();
        st.queued = st.queued.saturating_sub(n);
        if !ok {
            st.open = None;
        }
    }

    /// Polls the open stream with `f` until it is ready; `false` if none is open or it failed.
    async fn poll(&self, mut f: impl FnMut(&mut S, &mut Context<'_>) -> Poll<Result<(), std::io::Error>>) -> bool {
        futures::future::poll_fn(|cx| match self.state.lock().open.as_mut() {
            Some((sink, _)) => f(sink, cx).map(|r| r.is_ok()),
            None => Poll::Ready(false),
        })
        .await
    }
}

/// Writes `frame` to `sink` without waiting: the stream is polled once, as it stands, with
/// a waker that does nothing (whoever gets `Buffered` or `Busy` hands the rest to a task
/// that waits properly). `accepted` runs once the stream has taken the frame.
fn write_now<S>(sink: &mut S, frame: Bytes, accepted: impl FnOnce()) -> Now
where
    S: Sink<Bytes, Error = std::io::Error> + Unpin,
{
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match sink.poll_ready_unpin(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(_)) => return Now::Broken,
        Poll::Pending => return Now::Busy,
    }
    if sink.start_send_unpin(frame).is_err() {
        return Now::Broken;
    }
    accepted();
    match sink.poll_flush_unpin(&mut cx) {
        Poll::Ready(Ok(())) => Now::Written,
        Poll::Ready(Err(_)) => Now::Broken,
        Poll::Pending => Now::Buffered,
    }
}
