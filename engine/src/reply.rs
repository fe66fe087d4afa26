//! `Reply<T>`: the answer to a request sent to a shard from another thread. Await it from any
//! async runtime, or `wait()` for it from a plain thread. If the mailbox is full the request
//! is held here and sent when the shard makes room: the caller waits, nothing spins.

use crate::error::{Error, Result};
use crate::mailbox::{Job, Mailbox, SendError};
use futures_channel::oneshot;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub struct Reply<T> {
    state: State<T>,
    /// How long `wait` polls before parking (`Config::reply_spin`).
    spin: Option<Duration>,
}

enum State<T> {
    Ready(Option<Result<T>>),
    Unsent {
        job: Option<Job>,
        mailbox: Arc<Mailbox>,
        rx: oneshot::Receiver<Result<T>>,
    },
    Sent(oneshot::Receiver<Result<T>>),
}

impl<T> Reply<T> {
    pub(crate) fn ready(r: Result<T>) -> Self {
        Reply {
            state: State::Ready(Some(r)),
            spin: None,
        }
    }

    pub(crate) fn unsent(job: Job, mailbox: Arc<Mailbox>, rx: oneshot::Receiver<Result<T>>) -> Self {
        Reply {
            state: State::Unsent {
                job: Some(job),
                mailbox,
                rx,
            },
            spin: None,
        }
    }

    pub(crate) fn sent(rx: oneshot::Receiver<Result<T>>) -> Self {
        Reply {
            state: State::Sent(rx),
            spin: None,
        }
    }

    /// Sets how long `wait` polls before parking (the engine's `Config::reply_spin`).
    pub(crate) fn with_spin(mut self, spin: Option<Duration>) -> Self {
        self.spin = spin;
        self
    }

    /// Blocks the calling thread until the shard answers: parks at once, or polls first for
    /// `Config::reply_spin` if that is set. Never call this on a shard thread.
    pub fn wait(self) -> Result<T> {
        match self.spin {
            Some(spin) => self.wait_spinning(spin),
            None => futures_lite::future::block_on(self),
        }
    }

    /// Like [`wait`](Self::wait), but first polls for the answer for up to `spin` before the
    /// thread parks. Parking costs the round trip a wake-up of the caller's thread, which on
    /// an idle (virtual) CPU is tens of µs: a Memory append from another thread took p50
    /// 70 µs parked here, most of it the two wake-ups, one of which this saves when the
    /// answer comes within `spin`. The spin occupies the calling thread's CPU meanwhile, so
    /// use it from threads that have a core to themselves, for requests that answer quickly
    /// (Memory appends, reads of recent records), not for Synced appends (an fdatasync
    /// takes hundreds of µs, longer than a spin worth its CPU).
    /// The spin is at most `Config::reply_spin`'s ceiling, 10 ms.
    pub fn wait_spinning(mut self, spin: Duration) -> Result<T> {
        let deadline = std::time::Instant::now() + spin.min(crate::config::MAX_REPLY_SPIN);
        loop {
            match &mut self.state {
                State::Ready(r) => return r.take().unwrap_or(Err(Error::ShuttingDown)),
                State::Sent(rx) => match rx.try_recv() {
                    Ok(Some(r)) => return r,
                    Ok(None) => {}
                    // The shard dropped the request's sender: it stopped.
                    Err(_) => return Err(Error::ShuttingDown),
                },
                // Waiting for room in a full mailbox: that wait is the shard's to end.
                State::Unsent { .. } => break,
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
        futures_lite::future::block_on(self)
    }

    /// Like [`wait`](Self::wait), giving up with `Error::Timeout` after `timeout`. The request
    /// itself may still complete on the shard.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<T> {
        let deadline = std::time::Instant::now() + timeout;
        let thread = std::thread::current();
        let waker = Waker::from(Arc::new(Unparker(thread)));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(r) = Pin::new(&mut self).poll(&mut cx) {
                return r;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(timeout));
            }
            // A wake that raced ahead of this park leaves the token set, so nothing is missed.
            std::thread::park_timeout(deadline - now);
        }
    }
}

struct Unparker(std::thread::Thread);

impl std::task::Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

impl<T> Unpin for Reply<T> {}

impl<T> Future for Reply<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        loop {
            match &mut self.state {
                State::Ready(r) => return Poll::Ready(r.take().unwrap_or(Err(Error::ShuttingDown))),
                State::Sent(rx) => {
                    return Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Err(Error::ShuttingDown)));
                }
                State::Unsent { job, mailbox, rx } => {
                    let Some(j) = job.take() else {
                        return Poll::Ready(Err(Error::ShuttingDown));
                    };
                    match mailbox.try_send(j) {
                        Ok(()) => {
                            let rx = std::mem::replace(rx, oneshot::channel().1);
                            self.state = State::Sent(rx);
                        }
                        Err(SendError::Closed) => return Poll::Ready(Err(mailbox.closed_error())),
                        Err(SendError::Full(j)) => {
                            mailbox.wait_for_space(cx.waker());
                            // The shard may have drained between the failed push and the
                            // registration; try once more so the wake cannot be missed.
                            match mailbox.try_send(j) {
                                Ok(()) => {
                                    let rx = std::mem::replace(rx, oneshot::channel().1);
                                    self.state = State::Sent(rx);
                                }
                                Err(SendError::Closed) => return Poll::Ready(Err(mailbox.closed_error())),
                                Err(SendError::Full(j)) => {
                                    *job = Some(j);
                                    return Poll::Pending;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
