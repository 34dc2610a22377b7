//! Operator requests (console, SIGUSR1) handed to the run loop, which acts
//! on them in its own order.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::control::state::ReverseEnd;

/// Operator requests reaching a running migration from the console or a
/// signal; the run loop acts on them in its own order.
#[derive(Debug, Default)]
pub struct Requests {
    cutover: AtomicBool,
    cancel: std::sync::Mutex<Option<bool>>,
    reverse_end: std::sync::Mutex<Option<ReverseEnd>>,
    pub(super) notify: tokio::sync::Notify,
}

impl Requests {
    /// Asks for cutover (ignored unless the migration waits for it).
    pub fn cutover(&self) {
        self.cutover.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Asks to cancel, dropping the target databases when `drop_target`.
    pub fn cancel(&self, drop_target: bool) {
        if let Ok(mut c) = self.cancel.lock() {
            *c = Some(c.unwrap_or(false) || drop_target);
        }
        self.notify.notify_one();
    }

    /// Asks to end reverse replication with `rollback` or `finish`.
    pub fn end_reverse(&self, end: ReverseEnd) {
        if let Ok(mut e) = self.reverse_end.lock() {
            e.get_or_insert(end);
        }
        self.notify.notify_one();
    }

    pub(super) fn take_reverse_end(&self) -> Option<ReverseEnd> {
        self.reverse_end.lock().ok().and_then(|mut e| e.take())
    }

    pub(super) fn take_cutover(&self) -> bool {
        self.cutover.swap(false, Ordering::AcqRel)
    }

    pub(super) fn take_cancel(&self) -> Option<bool> {
        self.cancel.lock().ok().and_then(|mut c| c.take())
    }
}
