//! The status vocabulary of DESIGN.md's "Status model": the cloud migration
//! service's words, spelled exactly as operators know them. Each enum
//! serializes, displays and parses as its variant name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A string that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {kind} \"{value}\"")]
pub struct UnknownValue {
    /// Which vocabulary was expected (`status`, `phase`, …).
    pub kind: &'static str,
    /// The rejected text.
    pub value: String,
}

/// Declares an enum whose variant names are its external spelling, with
/// `ALL`, `as_str`, `Display` and `FromStr`.
macro_rules! vocabulary {
    ($kind:literal, $(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The external spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue { kind: $kind, value: s.to_owned() })
            }
        }
    };
}

vocabulary! {
    "status",
    /// Where a migration stands as a whole.
    #[derive(Default)]
    Status {
        /// Working: see the substatus.
        #[default]
        InProgress,
        /// Online copy done and streaming; waiting for the cutover trigger.
        WaitingForUserAction,
        /// Cancel running: slot, publication and origins being dropped.
        CleaningUp,
        /// Done; the target is the new primary (or, for `validate`, all checks passed).
        Succeeded,
        /// Stopped on an error; the substatus is where it failed.
        Failed,
        /// Canceled by the operator.
        Canceled,
        /// Validation ended with at least one failed check.
        ValidationFailed,
        /// `rollback` after a cutover with reverse replication: the source
        /// holds every change made on the target and is writable again.
        RolledBack,
    }
}

impl Status {
    /// Ended for good: a `run` of the same config does nothing more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded
                | Status::Failed
                | Status::Canceled
                | Status::ValidationFailed
                | Status::RolledBack
        )
    }

    /// Not yet ended (shown by `list --filter active`).
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }
}

vocabulary! {
    "substatus",
    /// What a migration is doing within its status.
    #[derive(Default)]
    Substatus {
        /// Connecting, slot and publication setup.
        #[default]
        PerformingPreRequisiteSteps,
        /// Premigration checks running (or, with `ValidationFailed`, failed).
        ValidationInProgress,
        /// Schema, snapshot copy, indexes, then streaming until the initial backlog is applied.
        MigratingData,
        /// Cutover running.
        CompletingMigration,
        /// Online: base copy done, streaming, ready for cutover.
        WaitingForCutoverTrigger,
        /// Cancel running.
        CancelingRequestedDBMigrations,
        /// Succeeded.
        Completed,
        /// Canceled.
        Canceled,
        /// After cutover: the target's changes stream back to the source
        /// until `rollback` or `finish`.
        WaitingForRollbackOrFinish,
        /// Rolled back to the source.
        RolledBack,
    }
}

/// A status with a substatus the contract allows with it (DESIGN.md's
/// "Status model"): a pair outside that table cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `InProgress` / `PerformingPreRequisiteSteps`.
    Prerequisites,
    /// `InProgress` / `ValidationInProgress`.
    Validating,
    /// `InProgress` / `MigratingData`.
    MigratingData,
    /// `InProgress` / `CompletingMigration`.
    CompletingMigration,
    /// `WaitingForUserAction` / `WaitingForCutoverTrigger`.
    WaitingForCutover,
    /// `CleaningUp` / `CancelingRequestedDBMigrations`.
    CleaningUp,
    /// `Succeeded` / `Completed`.
    Succeeded,
    /// `Canceled` / `Canceled`.
    Canceled,
    /// `ValidationFailed` / `ValidationInProgress`.
    ValidationFailed,
    /// `Failed` / the substatus of the stage it failed in.
    Failed(Working),
    /// `WaitingForUserAction` / `WaitingForRollbackOrFinish`.
    Reversing,
    /// `RolledBack` / `RolledBack`.
    RolledBack,
}

/// The stages a migration can fail in; `Failed` keeps their substatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Working {
    /// Failed in `PerformingPreRequisiteSteps`.
    Prerequisites,
    /// Failed in `ValidationInProgress`.
    Validating,
    /// Failed in `MigratingData`.
    MigratingData,
    /// Failed in `CompletingMigration`.
    CompletingMigration,
    /// Failed in `WaitingForCutoverTrigger`.
    WaitingForCutover,
    /// Failed in `CancelingRequestedDBMigrations`.
    CleaningUp,
    /// Failed in `WaitingForRollbackOrFinish`.
    Reversing,
}

/// A status/substatus pair the contract does not have (read from a file).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{status} / {substatus} is not a status the contract has")]
pub struct InvalidPair {
    /// The status read.
    pub status: Status,
    /// The substatus read.
    pub substatus: Substatus,
}

/// A move the status machine refuses; nothing of it is written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("status cannot go from {} / {} to {} / {}", from.status(), from.substatus(), to.status(), to.substatus())]
pub struct InvalidTransition {
    /// Where the migration stands.
    pub from: Stage,
    /// Where it was asked to go.
    pub to: Stage,
}

impl Working {
    fn stage(self) -> Stage {
        match self {
            Working::Prerequisites => Stage::Prerequisites,
            Working::Validating => Stage::Validating,
            Working::MigratingData => Stage::MigratingData,
            Working::CompletingMigration => Stage::CompletingMigration,
            Working::WaitingForCutover => Stage::WaitingForCutover,
            Working::CleaningUp => Stage::CleaningUp,
            Working::Reversing => Stage::Reversing,
        }
    }
}

impl Stage {
    /// Every stage, for tests and tables.
    pub const ALL: &'static [Stage] = &[
        Stage::Prerequisites,
        Stage::Validating,
        Stage::MigratingData,
        Stage::CompletingMigration,
        Stage::WaitingForCutover,
        Stage::CleaningUp,
        Stage::Succeeded,
        Stage::Canceled,
        Stage::ValidationFailed,
        Stage::Failed(Working::Prerequisites),
        Stage::Failed(Working::Validating),
        Stage::Failed(Working::MigratingData),
        Stage::Failed(Working::CompletingMigration),
        Stage::Failed(Working::WaitingForCutover),
        Stage::Failed(Working::CleaningUp),
        Stage::Reversing,
        Stage::RolledBack,
        Stage::Failed(Working::Reversing),
    ];

    /// The status written to state.json.
    pub fn status(self) -> Status {
        match self {
            Stage::Prerequisites
            | Stage::Validating
            | Stage::MigratingData
            | Stage::CompletingMigration => Status::InProgress,
            Stage::WaitingForCutover | Stage::Reversing => Status::WaitingForUserAction,
            Stage::RolledBack => Status::RolledBack,
            Stage::CleaningUp => Status::CleaningUp,
            Stage::Succeeded => Status::Succeeded,
            Stage::Canceled => Status::Canceled,
            Stage::ValidationFailed => Status::ValidationFailed,
            Stage::Failed(_) => Status::Failed,
        }
    }

    /// The substatus written to state.json.
    pub fn substatus(self) -> Substatus {
        match self {
            Stage::Prerequisites => Substatus::PerformingPreRequisiteSteps,
            Stage::Validating | Stage::ValidationFailed => Substatus::ValidationInProgress,
            Stage::MigratingData => Substatus::MigratingData,
            Stage::CompletingMigration => Substatus::CompletingMigration,
            Stage::WaitingForCutover => Substatus::WaitingForCutoverTrigger,
            Stage::CleaningUp => Substatus::CancelingRequestedDBMigrations,
            Stage::Succeeded => Substatus::Completed,
            Stage::Canceled => Substatus::Canceled,
            Stage::Reversing => Substatus::WaitingForRollbackOrFinish,
            Stage::RolledBack => Substatus::RolledBack,
            Stage::Failed(w) => w.stage().substatus(),
        }
    }

    /// The stage of a pair read from state.json.
    pub fn of(status: Status, substatus: Substatus) -> Result<Stage, InvalidPair> {
        Stage::ALL
            .iter()
            .copied()
            .find(|s| s.status() == status && s.substatus() == substatus)
            .ok_or(InvalidPair { status, substatus })
    }

    /// The stage this one fails into (`Failed` keeps its substatus).
    pub fn failed(self) -> Stage {
        match self {
            Stage::Prerequisites => Stage::Failed(Working::Prerequisites),
            Stage::Validating => Stage::Failed(Working::Validating),
            Stage::MigratingData => Stage::Failed(Working::MigratingData),
            Stage::CompletingMigration => Stage::Failed(Working::CompletingMigration),
            Stage::WaitingForCutover => Stage::Failed(Working::WaitingForCutover),
            Stage::CleaningUp => Stage::Failed(Working::CleaningUp),
            Stage::Reversing => Stage::Failed(Working::Reversing),
            ended => ended,
        }
    }

    /// Whether the contract lets a migration in `self` move to `to`.
    /// Staying is always allowed (a resumed run re-records where it is).
    pub fn allows(self, to: Stage) -> bool {
        use Stage::*;
        if self == to {
            return true;
        }
        match (self, to) {
            // Nothing leaves these: a `run` of the same config does nothing.
            (Succeeded | Canceled | RolledBack, _) => false,
            // A run starts anew from anything unfinished (a kill -9 can
            // leave any stage behind); an accepted cutover goes on.
            (_, Prerequisites) => true,
            (_, CompletingMigration) => matches!(
                self,
                WaitingForCutover | Prerequisites | MigratingData | Reversing | Failed(_)
            ),
            // `cancel` without a daemon also takes failed migrations.
            (_, CleaningUp) => !matches!(self, CompletingMigration),
            (Failed(_) | ValidationFailed, _) => false,
            (_, Failed(w)) => w.stage() == self,
            (Prerequisites, Validating | MigratingData) => true,
            (Validating, MigratingData | Succeeded | ValidationFailed) => true,
            (MigratingData, WaitingForCutover | Succeeded) => true,
            (WaitingForCutover, MigratingData) => true,
            (CompletingMigration, Succeeded | Reversing) => true,
            // Reverse replication ends in `finish` or `rollback`.
            (Reversing, Succeeded | RolledBack) => true,
            (CleaningUp, Canceled) => true,
            _ => false,
        }
    }

    /// `to` if the contract allows the move, else the refusal.
    pub fn transition(self, to: Stage) -> Result<Stage, InvalidTransition> {
        if self.allows(to) {
            Ok(to)
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }
}

vocabulary! {
    "phase",
    /// Where one database of a migration stands.
    #[derive(Default)]
    Phase {
        /// Premigration checks.
        #[default]
        Validating,
        /// pg_dump/pg_restore of the pre-data schema.
        CopyingSchema,
        /// Snapshot COPY of the tables.
        CopyingData,
        /// Post-data: indexes and constraints.
        BuildingIndexes,
        /// Applying the change stream.
        Streaming,
        /// Cutover running.
        CuttingOver,
        /// Migrated.
        Done,
        /// Stopped on an error (see the database's message).
        Failed,
        /// Canceled.
        Canceled,
    }
}

vocabulary! {
    "check result",
    /// Outcome of one premigration check.
    CheckResult {
        /// Passed.
        Succeeded,
        /// Passed with a caveat; does not block migrating.
        Warning,
        /// Blocks migrating.
        Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde, Display and FromStr must agree with the contract's spelling.
    fn check<T>(all: &[T], expected: &[&str])
    where
        T: fmt::Display + FromStr + Serialize + PartialEq + fmt::Debug + Copy,
        T: for<'de> Deserialize<'de>,
    {
        let shown: Vec<String> = all.iter().map(|v| v.to_string()).collect();
        assert_eq!(shown, expected);
        for (v, text) in all.iter().zip(expected) {
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{text}\""));
            let back: T = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!(back, *v);
            assert!(text.parse::<T>().ok() == Some(*v));
        }
    }

    #[test]
    fn strings_are_exact() {
        check(
            Status::ALL,
            &[
                "InProgress",
                "WaitingForUserAction",
                "CleaningUp",
                "Succeeded",
                "Failed",
                "Canceled",
                "ValidationFailed",
                "RolledBack",
            ],
        );
        check(
            Substatus::ALL,
            &[
                "PerformingPreRequisiteSteps",
                "ValidationInProgress",
                "MigratingData",
                "CompletingMigration",
                "WaitingForCutoverTrigger",
                "CancelingRequestedDBMigrations",
                "Completed",
                "Canceled",
                "WaitingForRollbackOrFinish",
                "RolledBack",
            ],
        );
        check(
            Phase::ALL,
            &[
                "Validating",
                "CopyingSchema",
                "CopyingData",
                "BuildingIndexes",
                "Streaming",
                "CuttingOver",
                "Done",
                "Failed",
                "Canceled",
            ],
        );
        check(CheckResult::ALL, &["Succeeded", "Warning", "Failed"]);
    }

    #[test]
    fn reverse_replication_moves() {
        use Stage::*;
        assert!(CompletingMigration.allows(Reversing));
        assert!(Reversing.allows(Succeeded));
        assert!(Reversing.allows(RolledBack));
        assert!(
            Reversing.allows(CompletingMigration),
            "a restart resumes it"
        );
        assert!(Reversing.allows(CleaningUp));
        assert!(Reversing.allows(Failed(Working::Reversing)));
        assert!(!RolledBack.allows(Prerequisites));
        assert!(!WaitingForCutover.allows(Reversing));
        assert_eq!(Reversing.status(), Status::WaitingForUserAction);
        assert_eq!(RolledBack.substatus(), Substatus::RolledBack);
    }

    #[test]
    fn unknown_strings_are_rejected() {
        let e = "inprogress".parse::<Status>().unwrap_err();
        assert_eq!(e.to_string(), "unknown status \"inprogress\"");
        assert!("Copying".parse::<Phase>().is_err());
        assert!(serde_json::from_str::<Substatus>("\"Done\"").is_err());
    }

    #[test]
    fn terminal_and_active_partition_statuses() {
        let terminal: Vec<Status> = Status::ALL
            .iter()
            .copied()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                Status::Succeeded,
                Status::Failed,
                Status::Canceled,
                Status::ValidationFailed,
                Status::RolledBack
            ]
        );
        for s in Status::ALL {
            assert_ne!(s.is_terminal(), s.is_active(), "{s}");
        }
    }

    #[test]
    fn every_stage_is_a_contract_pair_and_reads_back() {
        for s in Stage::ALL {
            assert_eq!(Stage::of(s.status(), s.substatus()), Ok(*s));
        }
        assert_eq!(Stage::of(Status::Failed, Substatus::Completed).ok(), None);
        let e = Stage::of(Status::Succeeded, Substatus::MigratingData).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Succeeded / MigratingData is not a status the contract has"
        );
    }

    #[test]
    fn contract_transitions_are_accepted() {
        use Stage::*;
        let failed_from = [
            Prerequisites,
            Validating,
            MigratingData,
            CompletingMigration,
            WaitingForCutover,
            CleaningUp,
        ];
        let mut ok = vec![
            // validate-and-migrate and validate
            (Prerequisites, Validating),
            (Validating, MigratingData),
            (Validating, Succeeded),
            (Validating, ValidationFailed),
            // migrate (offline ends after the copy)
            (Prerequisites, MigratingData),
            (MigratingData, Succeeded),
            // online: ready, not ready again, cutover
            (MigratingData, WaitingForCutover),
            (WaitingForCutover, MigratingData),
            (WaitingForCutover, CompletingMigration),
            (CompletingMigration, Succeeded),
            // cancel
            (MigratingData, CleaningUp),
            (WaitingForCutover, CleaningUp),
            (Prerequisites, CleaningUp),
            (CleaningUp, Canceled),
            // restarts
            (Failed(Working::MigratingData), Prerequisites),
            (Failed(Working::CompletingMigration), CompletingMigration),
            (ValidationFailed, Prerequisites),
            (MigratingData, Prerequisites),
            (Prerequisites, CompletingMigration),
            (Failed(Working::MigratingData), CleaningUp),
        ];
        ok.extend(failed_from.iter().map(|s| (*s, s.failed())));
        for (from, to) in ok {
            assert_eq!(from.transition(to), Ok(to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn other_transitions_are_refused() {
        use Stage::*;
        let refused = [
            (Succeeded, Prerequisites),
            (Canceled, MigratingData),
            (Prerequisites, WaitingForCutover),
            (Prerequisites, Succeeded),
            (MigratingData, Canceled),
            (CompletingMigration, CleaningUp),
            (CompletingMigration, WaitingForCutover),
            (MigratingData, Failed(Working::CompletingMigration)),
            (Failed(Working::MigratingData), Succeeded),
            (ValidationFailed, MigratingData),
            (Validating, WaitingForCutover),
        ];
        for (from, to) in refused {
            let e = from.transition(to).unwrap_err();
            assert_eq!(e, InvalidTransition { from, to });
        }
        assert_eq!(
            Succeeded.transition(Prerequisites).unwrap_err().to_string(),
            "status cannot go from Succeeded / Completed to InProgress / PerformingPreRequisiteSteps"
        );
    }
}
