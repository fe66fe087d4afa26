//! A single-threaded "something changed" signal for tasks on one shard.
//!
//! Waiters re-check their own condition after every notification, so a notification is never
//! lost and never has to say what changed. Not `Send`: it lives and dies on its shard.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Event {
    wakers: RefCell<Vec<Waker>>,
    generation: std::cell::Cell<u64>,
}

impl Event {
    /// Resolves at the next `notify_all` after this call.
    pub async fn next(&self) {
        let start = self.generation.get();
        self.wait_for(|| (self.generation.get() != start).then_some(())).await
    }

    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once `ready()` returns `Some`, re-evaluated after each notification.
    pub fn wait_for<T, F: FnMut() -> Option<T>>(&self, ready: F) -> WaitFor<'_, F> {
        WaitFor { event: self, ready }
    }
}

pub struct WaitFor<'a, F> {
    event: &'a Event,
    ready: F,
}

impl<T, F: FnMut() -> Option<T> + Unpin> Future for WaitFor<'_, F> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(v) = (self.ready)() {
            return Poll::Ready(v);
        }
        let mut wakers = self.event.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
