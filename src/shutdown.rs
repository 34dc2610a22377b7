//! The one way to ask the daemon's tasks and threads to stop.
//!
//! A [`Shutdown`] is created once per purpose in the run loop and cloned
//! down: async tasks await [`Shutdown::requested`], blocking threads poll
//! [`Shutdown::flag`]. Both views change together when the
//! [`ShutdownTrigger`] fires, and dropping the trigger counts as firing, so
//! a task can never wait on a stop that nobody is left to send.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// The sending side: fires once, for every clone of its [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
    flag: Arc<AtomicBool>,
}

/// The listening side, cheap to clone into tasks and threads.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// A new, not yet requested, shutdown and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        let flag = Arc::new(AtomicBool::new(false));
        (
            ShutdownTrigger {
                tx,
                flag: Arc::clone(&flag),
            },
            Shutdown { rx, flag },
        )
    }

    /// Whether the stop was asked for (or its trigger is gone).
    pub fn is_requested(&self) -> bool {
        self.flag.load(Ordering::Acquire) || *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Completes once the stop is asked for or the trigger is dropped.
    pub async fn requested(&self) {
        let mut rx = self.rx.clone();
        // Err: the trigger is gone, which means stop too.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// The view for blocking threads, which cannot await.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }

    /// The view for APIs that take a `watch` (the console server).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }
}

impl ShutdownTrigger {
    /// Asks every listener to stop; later calls do nothing more.
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        self.tx.send_replace(true);
    }

    /// Whether it has fired.
    pub fn fired(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.trigger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn trigger_reaches_tasks_and_threads() {
        let (trigger, shutdown) = Shutdown::new();
        assert!(!shutdown.is_requested());
        let flag = shutdown.flag();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let s = shutdown.clone();
        let task = tokio::spawn(async move { s.requested().await });
        trigger.trigger();
        trigger.trigger();
        task.await.unwrap();
        thread.join().unwrap();
        assert!(shutdown.is_requested() && trigger.fired());
    }

    #[tokio::test]
    async fn a_dropped_trigger_means_stop() {
        let (trigger, shutdown) = Shutdown::new();
        drop(trigger);
        assert!(shutdown.is_requested());
        tokio::time::timeout(Duration::from_secs(5), shutdown.requested())
            .await
            .unwrap();
    }
}
