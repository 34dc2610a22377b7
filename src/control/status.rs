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
    }
}

impl Status {
    /// Ended for good: a `run` of the same config does nothing more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Canceled | Status::ValidationFailed
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
                Status::ValidationFailed
            ]
        );
        for s in Status::ALL {
            assert_ne!(s.is_terminal(), s.is_active(), "{s}");
        }
    }
}
