//! `[keyless]`: what an online migration does with a table that has no
//! primary key and no replica identity, per table. Parsed here into a
//! [`KeylessPolicy`]; the validation and the publication set-up only ask it
//! [`KeylessPolicy::mode_for`].
//!
//! ```toml
//! [keyless]
//! default = "fail"                          # fail | insert_only | replica_identity_full
//! insert_only = ["public.pgbench_history", "logs.*"]
//! replica_identity_full = ["public.audit"]
//! ```
//!
//! Names are `schema.table` as the catalog spells them (unquoted, case
//! sensitive); `*` matches any run of characters. An exact name wins over a
//! pattern; when patterns of both lists match, `replica_identity_full`
//! wins, as it carries every change.

use std::fmt;

use serde::Deserialize;

/// How the changes of one keyless table are carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeylessMode {
    /// Validation fails for the table (the behaviour without `[keyless]`).
    #[default]
    Fail,
    /// Only its INSERTs are replicated, through a second publication that
    /// publishes inserts only, so the source's own UPDATE/DELETE on it are
    /// not refused.
    InsertOnly,
    /// pgmigrate sets `REPLICA IDENTITY FULL` on the source for the
    /// migration and restores the original identity afterwards.
    ReplicaIdentityFull,
}

impl KeylessMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeylessMode::Fail => "fail",
            KeylessMode::InsertOnly => "insert_only",
            KeylessMode::ReplicaIdentityFull => "replica_identity_full",
        }
    }
}

impl fmt::Display for KeylessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `schema.table` with `*` wildcards in either part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    schema: String,
    table: String,
}

impl TablePattern {
    /// Parses `schema.table`; the first `.` separates the two.
    pub fn parse(text: &str) -> Result<TablePattern, String> {
        let Some((schema, table)) = text.split_once('.') else {
            return Err(format!(
                "{text:?} is not schema.table (e.g. \"public.pgbench_history\" or \"logs.*\")"
            ));
        };
        if schema.is_empty() || table.is_empty() {
            return Err(format!("{text:?} has an empty schema or table name"));
        }
        if text.contains('"') {
            return Err(format!(
                "{text:?}: write names unquoted, as the catalog spells them"
            ));
        }
        Ok(TablePattern {
            schema: schema.to_string(),
            table: table.to_string(),
        })
    }

    /// True when no `*` is in it.
    pub fn is_exact(&self) -> bool {
        !self.schema.contains('*') && !self.table.contains('*')
    }

    /// Whether `schema.table` is matched.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        glob(&self.schema, schema) && glob(&self.table, table)
    }
}

/// Patterns from test literals, for the tests of `[keyless]` and `[tables]`.
#[cfg(test)]
pub(super) fn pats(list: &[&str]) -> Vec<TablePattern> {
    list.iter()
        .map(|p| TablePattern::parse(p).unwrap())
        .collect()
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// `*` matches any run of characters; everything else itself. Linear in
/// the text for each `*` (greedy with backtracking to the last star).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The per-table choice for keyless tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeylessPolicy {
    /// Mode of a keyless table no rule names.
    pub default: KeylessMode,
    /// `(pattern, mode)` for `insert_only` and `replica_identity_full`.
    rules: Vec<(TablePattern, KeylessMode)>,
}

impl KeylessPolicy {
    /// Builds the policy; a name listed exactly under both modes is refused.
    pub fn new(
        default: KeylessMode,
        insert_only: Vec<TablePattern>,
        full: Vec<TablePattern>,
    ) -> Result<KeylessPolicy, String> {
        if let Some(both) = insert_only
            .iter()
            .find(|p| p.is_exact() && full.contains(p))
        {
            return Err(format!(
                "\"{both}\" is listed under both insert_only and replica_identity_full"
            ));
        }
        let rules = insert_only
            .into_iter()
            .map(|p| (p, KeylessMode::InsertOnly))
            .chain(
                full.into_iter()
                    .map(|p| (p, KeylessMode::ReplicaIdentityFull)),
            )
            .collect();
        Ok(KeylessPolicy { default, rules })
    }

    /// The mode for the keyless table `schema.table`.
    pub fn mode_for(&self, schema: &str, table: &str) -> KeylessMode {
        let matching = || self.rules.iter().filter(|(p, _)| p.matches(schema, table));
        if let Some((_, m)) = matching().find(|(p, _)| p.is_exact()) {
            return *m;
        }
        let mut found = None;
        for (_, m) in matching() {
            if *m == KeylessMode::ReplicaIdentityFull {
                return *m;
            }
            found = Some(*m);
        }
        found.unwrap_or(self.default)
    }

    /// True when every keyless table fails (no `[keyless]` section).
    pub fn is_default(&self) -> bool {
        self.default == KeylessMode::Fail && self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("pgbench_*", "pgbench_history"));
        assert!(glob("*_log", "app_log"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(!glob("history", "pgbench_history"));
    }

    #[test]
    fn patterns_parse() {
        assert!(TablePattern::parse("nodot").is_err());
        assert!(TablePattern::parse(".t").is_err());
        assert!(TablePattern::parse("public.\"T\"").is_err());
        let p = TablePattern::parse("public.a.b").unwrap();
        assert!(p.matches("public", "a.b"));
    }

    #[test]
    fn precedence() {
        let policy = KeylessPolicy::new(
            KeylessMode::Fail,
            pats(&["public.pgbench_history", "logs.*"]),
            pats(&["*.audit*", "logs.keep"]),
        )
        .unwrap();
        assert_eq!(
            policy.mode_for("public", "pgbench_history"),
            KeylessMode::InsertOnly
        );
        assert_eq!(policy.mode_for("logs", "x"), KeylessMode::InsertOnly);
        assert_eq!(
            policy.mode_for("logs", "keep"),
            KeylessMode::ReplicaIdentityFull
        );
        assert_eq!(
            policy.mode_for("logs", "audit_1"),
            KeylessMode::ReplicaIdentityFull
        );
        assert_eq!(policy.mode_for("public", "other"), KeylessMode::Fail);
        assert!(KeylessPolicy::new(KeylessMode::Fail, pats(&["a.b"]), pats(&["a.b"])).is_err());
        assert!(KeylessPolicy::default().is_default());
    }
}
