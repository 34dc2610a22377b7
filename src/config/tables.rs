//! `[tables]`: which tables a migration takes. Parsed here into a
//! [`TableFilter`]; the copy, the schema restore, the stream, verify and
//! validation only ask it [`TableFilter::choice`].
//!
//! ```toml
//! [tables]
//! include = ["public.*", "billing.invoices"]   # empty: every table
//! exclude = ["public.tmp_*"]
//! schema_only = ["audit.*"]                      # schema, no rows, no changes
//! ```
//!
//! Same pattern syntax as `[keyless]` ([`TablePattern`]). Patterns match the
//! name of a partitioned table's root; its partitions follow it. Precedence:
//! an exact name in any list decides first (one name may be in one list
//! only); then an `exclude` pattern, then a `schema_only` pattern; then the
//! table is migrated when `include` is empty or one of its patterns matches,
//! else it is excluded.

use std::fmt;

use super::TablePattern;

/// What a migration does with one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableChoice {
    /// Schema, rows and changes.
    Migrate,
    /// Schema only: created empty on the target, changes not streamed.
    SchemaOnly,
    /// Not on the target at all.
    Exclude,
}

impl TableChoice {
    /// True when the table exists on the target (schema restored).
    pub fn has_schema(self) -> bool {
        self != TableChoice::Exclude
    }
}

/// Which of the three lists a pattern comes from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterList {
    /// `tables.include`.
    Include,
    /// `tables.exclude`.
    Exclude,
    /// `tables.schema_only`.
    SchemaOnly,
}

impl fmt::Display for FilterList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilterList::Include => "tables.include",
            FilterList::Exclude => "tables.exclude",
            FilterList::SchemaOnly => "tables.schema_only",
        })
    }
}

/// The `[tables]` section, typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFilter {
    include: Vec<TablePattern>,
    exclude: Vec<TablePattern>,
    schema_only: Vec<TablePattern>,
}

impl TableFilter {
    /// Builds the filter; the same exact name in two lists is refused.
    pub fn new(
        include: Vec<TablePattern>,
        exclude: Vec<TablePattern>,
        schema_only: Vec<TablePattern>,
    ) -> Result<TableFilter, String> {
        let lists = [
            (FilterList::Include, &include),
            (FilterList::Exclude, &exclude),
            (FilterList::SchemaOnly, &schema_only),
        ];
        for (i, (la, a)) in lists.iter().enumerate() {
            for (lb, b) in &lists[i + 1..] {
                if let Some(p) = a.iter().find(|p| p.is_exact() && b.contains(p)) {
                    return Err(format!("\"{p}\" is listed under both {la} and {lb}"));
                }
            }
        }
        Ok(TableFilter {
            include,
            exclude,
            schema_only,
        })
    }

    /// What happens to `schema.table` (a root name for a partition).
    pub fn choice(&self, schema: &str, table: &str) -> TableChoice {
        let exact = |list: &[TablePattern]| {
            list.iter()
                .any(|p| p.is_exact() && p.matches(schema, table))
        };
        let any = |list: &[TablePattern]| list.iter().any(|p| p.matches(schema, table));
        if exact(&self.exclude) {
            TableChoice::Exclude
        } else if exact(&self.schema_only) {
            TableChoice::SchemaOnly
        } else if exact(&self.include) {
            TableChoice::Migrate
        } else if any(&self.exclude) {
            TableChoice::Exclude
        } else if any(&self.schema_only) {
            TableChoice::SchemaOnly
        } else if self.include.is_empty() || any(&self.include) {
            TableChoice::Migrate
        } else {
            TableChoice::Exclude
        }
    }

    /// True when every table is migrated (no `[tables]` section).
    pub fn is_default(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty() && self.schema_only.is_empty()
    }

    /// Every pattern with the list it is in.
    pub fn patterns(&self) -> impl Iterator<Item = (FilterList, &TablePattern)> {
        fn tag(
            l: FilterList,
            v: &[TablePattern],
        ) -> impl Iterator<Item = (FilterList, &TablePattern)> {
            v.iter().map(move |p| (l, p))
        }
        tag(FilterList::Include, &self.include)
            .chain(tag(FilterList::Exclude, &self.exclude))
            .chain(tag(FilterList::SchemaOnly, &self.schema_only))
    }
}

#[cfg(test)]
mod tests {
    use super::super::keyless::pats;
    use super::*;

    #[test]
    fn default_takes_everything() {
        let f = TableFilter::default();
        assert!(f.is_default());
        assert_eq!(f.choice("a", "b"), TableChoice::Migrate);
    }

    #[test]
    fn precedence() {
        let f = TableFilter::new(
            pats(&["public.*", "app.keep_tmp"]),
            pats(&["*.tmp*", "public.old"]),
            pats(&["public.audit*", "app.tmp_audit"]),
        )
        .unwrap();
        assert!(!f.is_default());
        assert_eq!(f.choice("public", "users"), TableChoice::Migrate);
        assert_eq!(f.choice("public", "old"), TableChoice::Exclude);
        assert_eq!(f.choice("public", "tmp1"), TableChoice::Exclude);
        // exclude pattern beats schema_only pattern
        assert_eq!(f.choice("public", "audit"), TableChoice::SchemaOnly);
        assert_eq!(f.choice("app", "tmp_x"), TableChoice::Exclude);
        // an exact name beats patterns of other lists
        assert_eq!(f.choice("app", "keep_tmp"), TableChoice::Migrate);
        assert_eq!(f.choice("app", "tmp_audit"), TableChoice::SchemaOnly);
        // not included
        assert_eq!(f.choice("other", "t"), TableChoice::Exclude);
        assert_eq!(f.patterns().count(), 6);
    }

    #[test]
    fn exclude_only_keeps_the_rest() {
        let f = TableFilter::new(vec![], pats(&["public.logs"]), vec![]).unwrap();
        assert_eq!(f.choice("public", "logs"), TableChoice::Exclude);
        assert_eq!(f.choice("public", "x"), TableChoice::Migrate);
    }

    #[test]
    fn one_name_in_two_lists_is_refused() {
        let e = TableFilter::new(pats(&["a.b"]), vec![], pats(&["a.b"])).unwrap_err();
        assert!(e.contains("tables.include") && e.contains("tables.schema_only"));
        assert!(TableFilter::new(pats(&["a.*"]), pats(&["a.*"]), vec![]).is_ok());
    }
}
