//! A hold point on one database's stream, for `verify` while streaming:
//! the receiver dispatches every transaction that committed before an LSN
//! `L`, flushes the apply workers, then stops dispatching until released.
//! The target then holds exactly the source's state at `L` for as long as
//! it takes to export a snapshot of it, and the stream goes on.
//!
//! `L` is the consistent point of a temporary slot created with
//! EXPORT_SNAPSHOT: a transaction whose commit record starts before `L` is
//! in that snapshot, one whose commit record starts at or after `L` is not
//! (logical decoding skips commits with `origptr < start_decoding_at`, and
//! pgoutput's `commit_lsn` is that `origptr`). So the boundary is
//! `commit_lsn < L`.
//!
//! Between arming and knowing `L` (the slot is being created), dispatching
//! pauses: a transaction dispatched then might commit after `L`, and the
//! target would be ahead of the source's snapshot. The registry is keyed
//! by database and outlives stream restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::protocol::lsn::Lsn;

/// Longest the receiver pauses for a point not yet known (the slot is
/// being created, which waits for the source's running transactions)
/// before it goes on by itself: the verify then fails rather than the
/// stream falling behind a long transaction.
pub const MAX_PENDING: Duration = Duration::from_secs(5);
/// Longest the receiver stays held (a flush is done; only a snapshot export
/// on the target is awaited).
pub const MAX_HELD: Duration = Duration::from_secs(30);

/// How long the receiver may wait in `state`.
pub fn max_pause(state: HoldState) -> Duration {
    match state {
        HoldState::Pending => MAX_PENDING,
        _ => MAX_HELD,
    }
}

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// No verify in progress: dispatch freely.
    Idle,
    /// Armed, the point is not known yet: dispatch nothing.
    Pending,
    /// Dispatch every commit before the point, hold at the first after.
    At(Lsn),
    /// The receiver flushed everything before the point and waits.
    Held(Lsn),
    /// The receiver gave up waiting (see [`max_pause`]) and went on.
    Abandoned,
}

/// One database's hold point, shared by the receiver thread and verify.
#[derive(Debug)]
pub struct HoldPoint {
    state: Mutex<(HoldState, Instant)>,
}

impl Default for HoldPoint {
    fn default() -> HoldPoint {
        HoldPoint {
            state: Mutex::new((HoldState::Idle, Instant::now())),
        }
    }
}

/// The hold point of database `db` in this process.
pub fn for_db(db: &str) -> Arc<HoldPoint> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<HoldPoint>>>> = OnceLock::new();
    let registry = REGISTRY.get_or_init(Default::default);
    match registry.lock() {
        Ok(mut map) => map.entry(db.to_string()).or_default().clone(),
        // A panic elsewhere poisoned the map: an unshared point never holds.
        Err(_) => Arc::new(HoldPoint::default()),
    }
}

impl HoldPoint {
    /// The current state.
    pub fn state(&self) -> HoldState {
        self.state.lock().map(|s| s.0).unwrap_or(HoldState::Idle)
    }

    /// How long the current state has lasted.
    pub fn since(&self) -> Duration {
        self.state.lock().map(|s| s.1.elapsed()).unwrap_or_default()
    }

    fn set(&self, new: HoldState) {
        if let Ok(mut s) = self.state.lock() {
            *s = (new, Instant::now());
        }
    }

    /// Changes `from` into `to`; false when the state was not `from`.
    fn swap(&self, from: HoldState, to: HoldState) -> bool {
        match self.state.lock() {
            Ok(mut s) if s.0 == from => {
                *s = (to, Instant::now());
                true
            }
            _ => false,
        }
    }

    /// Arms the hold (dispatching pauses); None while another verify has it.
    pub fn arm(self: &Arc<Self>) -> Option<HoldGuard> {
        let idle = matches!(self.state(), HoldState::Idle | HoldState::Abandoned);
        if idle {
            self.set(HoldState::Pending);
            return Some(HoldGuard(self.clone()));
        }
        None
    }

    /// The receiver's side: the commit at `commit_lsn` is to wait (the
    /// point is unknown, or this commit is at or past it).
    pub fn must_wait(&self, commit_lsn: Lsn) -> bool {
        match self.state() {
            HoldState::Pending => true,
            HoldState::At(l) => commit_lsn >= l,
            _ => false,
        }
    }

    /// The receiver's side, between transactions: the stream has been
    /// decoded through `received`, so no commit before the point is to come.
    pub fn reached_idle(&self, received: Lsn) -> bool {
        matches!(self.state(), HoldState::At(l) if received >= l)
    }

    /// The receiver flushed every commit before the point: held.
    pub fn mark_held(&self) {
        if let HoldState::At(l) = self.state() {
            self.swap(HoldState::At(l), HoldState::Held(l));
        }
    }

    /// The receiver waited past [`max_pause`] and goes on.
    pub fn abandon(&self) {
        let s = self.state();
        if matches!(
            s,
            HoldState::Pending | HoldState::At(_) | HoldState::Held(_)
        ) {
            self.swap(s, HoldState::Abandoned);
        }
    }
}

/// Verify's side of an armed hold: released when dropped.
#[derive(Debug)]
pub struct HoldGuard(Arc<HoldPoint>);

impl HoldGuard {
    /// The point is known: commits before `lsn` may be dispatched.
    pub fn set_point(&self, lsn: Lsn) -> bool {
        self.0.swap(HoldState::Pending, HoldState::At(lsn))
    }

    /// The current state.
    pub fn state(&self) -> HoldState {
        self.0.state()
    }

    /// Waits until the receiver holds (true), gives up, or `timeout` passes.
    pub async fn wait_held(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.0.state() {
                HoldState::Held(_) => return true,
                HoldState::Abandoned | HoldState::Idle => return false,
                _ if Instant::now() >= deadline => return false,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Lets the stream go on.
    pub fn release(self) {}
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.0.set(HoldState::Idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_before_the_point_pass_the_rest_wait() {
        let p = Arc::new(HoldPoint::default());
        assert!(!p.must_wait(Lsn(5)));
        let g = p.arm().unwrap();
        assert!(p.arm().is_none(), "one verify at a time");
        assert!(p.must_wait(Lsn(5)), "pending: nothing is dispatched");
        assert!(g.set_point(Lsn(10)));
        assert!(!p.must_wait(Lsn(9)));
        assert!(p.must_wait(Lsn(10)));
        assert!(!p.reached_idle(Lsn(9)));
        assert!(p.reached_idle(Lsn(10)));
        p.mark_held();
        assert_eq!(p.state(), HoldState::Held(Lsn(10)));
        assert!(
            !p.must_wait(Lsn(11)),
            "held: the receiver waits on the state itself"
        );
        g.release();
        assert_eq!(p.state(), HoldState::Idle);
    }

    #[test]
    fn an_abandoned_hold_is_not_held() {
        let p = Arc::new(HoldPoint::default());
        let g = p.arm().unwrap();
        p.abandon();
        assert!(!g.set_point(Lsn(1)));
        drop(g);
        assert!(p.arm().is_some());
    }
}
