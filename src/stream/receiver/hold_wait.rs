//! The receiver's side of a verify hold point (see `stream::hold`): before
//! a commit at or past the point, or between transactions once the stream
//! is decoded past it, every worker is flushed and dispatching waits until
//! verify releases the hold. While it waits, status updates keep the
//! walsender from timing out.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::protocol::lsn::Lsn;
use crate::stream::hold::{max_pause, HoldState};
use crate::stream::StreamError;

use super::{Receiver, STATUS_INTERVAL};

/// How often a waiting receiver looks at the hold.
const POLL: Duration = Duration::from_millis(5);

impl Receiver<'_> {
    /// Called before dispatching the transaction committed at `commit_lsn`.
    pub(super) async fn hold_before(&mut self, commit_lsn: Lsn) -> Result<(), StreamError> {
        while self.hold.must_wait(commit_lsn) {
            if let HoldState::At(_) = self.hold.state() {
                return self.hold_here().await;
            }
            // Pending: the point is being chosen; nothing may pass.
            self.pause_tick().await?;
        }
        Ok(())
    }

    /// Called between transactions, when the stream was decoded through
    /// `received` (a keepalive's position).
    pub(super) async fn hold_idle(&mut self) -> Result<(), StreamError> {
        let received = Lsn(self.shared.received.load(Ordering::Acquire));
        if self.hold.reached_idle(received) {
            self.hold_here().await?;
        }
        Ok(())
    }

    /// While a point waits to be reached, asks the server for keepalives
    /// so an idle source still tells the receiver it is past the point.
    pub(super) fn hold_poke(&self) {
        if let HoldState::At(_) = self.hold.state() {
            self.shared.want_reply.store(true, Ordering::Release);
        }
    }

    /// Everything before the point is dispatched: flush, hold, wait.
    async fn hold_here(&mut self) -> Result<(), StreamError> {
        self.flush_workers().await?;
        self.hold.mark_held();
        tracing::debug!(state = ?self.hold.state(), "stream held for verify");
        while let HoldState::Held(_) = self.hold.state() {
            self.pause_tick().await?;
        }
        Ok(())
    }

    /// One wait step: status updates on their interval, stop and worker
    /// failures honoured, and the pause bounded by [`max_pause`].
    async fn pause_tick(&mut self) -> Result<(), StreamError> {
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(StreamError::Stopped);
        }
        self.check_workers()?;
        if self.hold.since() > max_pause(self.hold.state()) {
            tracing::warn!("verify did not release the stream in time; streaming on");
            self.hold.abandon();
            return Ok(());
        }
        if self.last_status.elapsed() >= STATUS_INTERVAL {
            self.send_status(false).await?;
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }
}
