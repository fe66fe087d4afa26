//! The one way into a shard from another thread: a bounded lock-free MPMC queue of jobs
//! (crossbeam's `ArrayQueue`, used as MPSC) and an `AtomicWaker` for the shard's inbox task.
//!
//! Producers push, then wake the inbox task; glommio routes a wake from a foreign thread
//! through the executor's own notifier, so a parked shard wakes without polling. When the
//! queue is full, producers park their own waker in a second lock-free queue and the shard
//! wakes them after it drains a batch: no lock, no busy loop, no lost request.

use crate::error::{Error, Result};
use atomic_waker::AtomicWaker;
use crossbeam_queue::{ArrayQueue, SegQueue};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;

/// Work for a shard. It runs on the shard's inbox task and must not block; anything that
/// waits spawns a local task.
pub type Job = Box<dyn FnOnce(&crate::shard::ShardRef) + Send>;

pub struct Mailbox {
    queue: ArrayQueue<Job>,
    inbox_waker: AtomicWaker,
    space_waiters: SegQueue<Waker>,
    closed: AtomicBool,
    close_requested: AtomicBool,
    /// Set (before `closed`) when the shard's thread panicked: later requests are told the
    /// shard failed rather than that the engine is shutting down.
    failed: AtomicBool,
    shard: usize,
}

impl Mailbox {
    pub fn new(shard: usize, capacity: usize) -> Self {
        Mailbox {
            failed: AtomicBool::new(false),
            shard,
            queue: ArrayQueue::new(capacity),
            inbox_waker: AtomicWaker::new(),
            space_waiters: SegQueue::new(),
            closed: AtomicBool::new(false),
            close_requested: AtomicBool::new(false),
        }
    }

    /// Queues a job. `Err(job)` if the queue is full; `ShuttingDown` if the shard has stopped.
    pub fn try_send(&self, job: Job) -> Result<(), SendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if let Err(job) = self.queue.push(job) {
            return Err(SendError::Full(job));
        }
        self.inbox_waker.wake();
        // The shard may have closed between our check and the push; if so, nobody will run
        // the job, so drain it here: dropping a job drops its reply sender, and the waiting
        // caller sees `ShuttingDown` instead of hanging.
        if self.closed.load(Ordering::Acquire) {
            while self.queue.pop().is_some() {}
        }
        Ok(())
    }

    /// Registers `waker` to be woken once the shard has drained some jobs.
    pub fn wait_for_space(&self, waker: &Waker) {
        self.space_waiters.push(waker.clone());
    }

    pub fn pop(&self) -> Option<Job> {
        self.queue.pop()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn register_inbox(&self, waker: &Waker) {
        self.inbox_waker.register(waker);
    }

    pub fn wake_space_waiters(&self) {
        while let Some(w) = self.space_waiters.pop() {
            w.wake();
        }
    }

    /// Marks the mailbox closed and drops queued jobs, failing their callers.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        while self.queue.pop().is_some() {}
        self.wake_space_waiters();
    }

    /// Asks the shard to shut down; works even when the queue is full.
    pub fn request_close(&self) {
        self.close_requested.store(true, Ordering::Release);
        self.inbox_waker.wake();
    }

    pub fn close_requested(&self) -> bool {
        self.close_requested.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the mailbox of a shard whose thread is unwinding from a panic.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.close();
    }

    /// What a request refused by this closed mailbox is told.
    pub fn closed_error(&self) -> Error {
        if self.failed.load(Ordering::Acquire) {
            Error::ShardFailed { shard: self.shard }
        } else {
            Error::ShuttingDown
        }
    }
}

/// Held by a shard's main future: if the shard's thread panics, the executor drops it while
/// unwinding, and the mailbox closes. Without it the handle would go on queueing requests that
/// no one runs, and their callers would wait forever. A normal exit closes the mailbox itself
/// (earlier, in order); closing again is harmless.
pub struct CloseOnPanic(pub std::sync::Arc<Mailbox>);

impl Drop for CloseOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail();
        }
    }
}

pub enum SendError {
    Full(Job),
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_mailbox_refuses_with_the_shard_and_drops_queued_jobs() {
        let mb = std::sync::Arc::new(Mailbox::new(3, 4));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        assert!(mb.try_send(Box::new(move |_| drop(tx))).is_ok());
        // A guard dropped on a normal exit changes nothing.
        drop(CloseOnPanic(mb.clone()));
        assert!(!mb.is_closed());
        let guard = CloseOnPanic(mb.clone());
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _g = guard;
            panic!("a shard's task panicked");
        }));
        assert!(unwound.is_err());
        assert!(mb.is_closed());
        // The queued job was dropped (its reply sender with it), not left to wait.
        assert!(rx.recv().is_err());
        assert!(matches!(mb.try_send(Box::new(|_| {})), Err(SendError::Closed)));
        assert!(matches!(mb.closed_error(), Error::ShardFailed { shard: 3 }));
        let closed = Mailbox::new(1, 4);
        closed.close();
        assert!(matches!(closed.closed_error(), Error::ShuttingDown));
    }
}
