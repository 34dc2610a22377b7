//! The two faces of a validation: an aligned table for people and the
//! `{"validation": [...]}` document for programs.

use serde::Serialize;

use crate::control::state::ValidationCheck;
use crate::control::status::CheckResult;

/// The checks as an aligned table, each fix on its own line under its
/// check, and a one-line summary at the end.
pub fn render_table(checks: &[ValidationCheck]) -> String {
    let result_w = checks
        .iter()
        .map(|c| c.result.as_str().len())
        .chain(["RESULT".len()])
        .max()
        .unwrap_or(6);
    let id_w = checks
        .iter()
        .map(|c| c.id.len())
        .chain(["CHECK".len()])
        .max()
        .unwrap_or(5);
    let mut out = format!("{:<result_w$}  {:<id_w$}  MESSAGE\n", "RESULT", "CHECK");
    for c in checks {
        out.push_str(&format!(
            "{:<result_w$}  {:<id_w$}  {}\n",
            c.result.as_str(),
            c.id,
            c.message
        ));
        if c.result != CheckResult::Succeeded && !c.fix.is_empty() {
            out.push_str(&format!(
                "{:<result_w$}  {:<id_w$}  fix: {}\n",
                "", "", c.fix
            ));
        }
    }
    let n = |r: CheckResult| checks.iter().filter(|c| c.result == r).count();
    let warnings = n(CheckResult::Warning);
    out.push_str(&format!(
        "\n{} failed, {warnings} {}, {} succeeded\n",
        n(CheckResult::Failed),
        if warnings == 1 { "warning" } else { "warnings" },
        n(CheckResult::Succeeded)
    ));
    out
}

#[derive(Serialize)]
struct Document<'a> {
    validation: &'a [ValidationCheck],
}

/// `{"validation": [{"id", "result", "message", "fix"}, …]}`, pretty-printed
/// with a final newline.
pub fn render_json(checks: &[ValidationCheck]) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(&Document { validation: checks })?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::check::{fail, pass};

    #[test]
    fn table_is_aligned_and_shows_fixes_of_failures_only() {
        let checks = vec![
            pass("source_wal_level", "wal_level = logical"),
            fail(
                "replica_identity",
                "1 table without key",
                "ALTER TABLE t REPLICA IDENTITY FULL;",
            ),
        ];
        let t = render_table(&checks);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "RESULT     CHECK             MESSAGE");
        assert_eq!(lines[1], "Succeeded  source_wal_level  wal_level = logical");
        assert_eq!(lines[2], "Failed     replica_identity  1 table without key");
        assert_eq!(
            lines[3],
            "                             fix: ALTER TABLE t REPLICA IDENTITY FULL;"
        );
        assert_eq!(lines[5], "1 failed, 0 warnings, 1 succeeded");
    }

    #[test]
    fn json_has_the_contract_shape() {
        let checks = vec![fail("source_wal_level", "replica", "set it")];
        let v: serde_json::Value = serde_json::from_str(&render_json(&checks).unwrap()).unwrap();
        assert_eq!(v["validation"][0]["id"], "source_wal_level");
        assert_eq!(v["validation"][0]["result"], "Failed");
        assert_eq!(v["validation"][0]["message"], "replica");
        assert_eq!(v["validation"][0]["fix"], "set it");
    }
}
