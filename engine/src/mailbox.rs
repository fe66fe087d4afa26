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
}

impl Mailbox {
    pub fn new(capacity: usize) -> Self {
        Mailbox {
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

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

pub enum SendError {
    Full(Job),
    Closed,
}

impl From<SendError> for Error {
    fn from(_: SendError) -> Self {
        Error::ShuttingDown
    }
}
