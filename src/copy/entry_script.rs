//! A pg_restore script cut into its archive entries. `pg_restore --verbose`
//! heads each entry with `-- TOC entry <dump id>`; the statements after a
//! header belong to that entry, so entries can be run in any order the
//! dependencies allow, and an error names the entry that failed.
//!
//! pg_restore writes session settings (`SET default_tablespace`, `SET
//! default_table_access_method`, …) only when they change, just before the
//! header of the entry needing them. Each entry therefore carries the whole
//! session state in effect at its place in the script, which a session
//! running entries out of order re-establishes when it differs.

use std::sync::Arc;

use crate::sql_script::{self, Statement};

/// The statements of one archive entry, and the session settings it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEntry {
    /// The entry's dump ID.
    pub dump_id: u32,
    /// Session settings in effect for this entry (preamble included), in
    /// the order the script set them.
    pub setup: Arc<Vec<String>>,
    /// The entry's statements, without trailing semicolons.
    pub statements: Vec<String>,
}

const MARKER: &str = "-- TOC entry ";

/// True for statements that only set session state (pg_restore's preamble
/// and its per-entry `SET`s), which every session running part of a script
/// needs.
pub fn is_session_setup(sql: &str) -> bool {
    let lower = sql
        .trim_start()
        .get(..40)
        .unwrap_or(sql)
        .to_ascii_lowercase();
    lower.starts_with("set ") || lower.starts_with("select pg_catalog.set_config(")
}

/// The setting a session-setup statement changes, so a later `SET` of the
/// same name replaces the earlier one.
fn setting_key(s: &Statement<'_>) -> String {
    if let Some(name) = s.set_name() {
        return name;
    }
    // SELECT pg_catalog.set_config('search_path', '', false)
    s.sql
        .split('\'')
        .nth(1)
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| s.sql.to_string())
}

/// Byte offsets of entry headers that are comments between statements
/// (never text inside a string or body that happens to look like one).
fn header_offsets(script: &str, statements: &[Statement<'_>]) -> Vec<(usize, u32)> {
    let mut out = Vec::new();
    let mut stmts = statements.iter().peekable();
    let mut pos = 0;
    while let Some(found) = script.get(pos..).and_then(|s| s.find(MARKER)) {
        let at = pos + found;
        pos = at + MARKER.len();
        let line_start = at == 0 || script.as_bytes().get(at - 1) == Some(&b'\n');
        if !line_start {
            continue;
        }
        while stmts.peek().is_some_and(|s| s.offset + s.sql.len() <= at) {
            stmts.next();
        }
        if stmts.peek().is_some_and(|s| s.offset <= at) {
            continue; // inside a statement
        }
        let id = script
            .get(pos..)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse::<u32>().ok());
        if let Some(id) = id {
            out.push((at, id));
        }
    }
    out
}

/// Cuts `script` into entries. `keep` drops statements the target cannot
/// run (a setting it does not know).
pub fn parse_entries(script: &str, keep: impl Fn(&Statement<'_>) -> bool) -> Vec<ScriptEntry> {
    let statements = sql_script::split(script);
    let headers = header_offsets(script, &statements);
    let mut headers = headers.into_iter().peekable();
    let mut settings: Vec<(String, String)> = Vec::new();
    let mut setup = Arc::new(Vec::new());
    let mut setup_dirty = false;
    let mut out: Vec<ScriptEntry> = Vec::new();
    for s in statements.iter().filter(|s| keep(s)) {
        while let Some(&(at, id)) = headers.peek() {
            if at > s.offset {
                break;
            }
            headers.next();
            if setup_dirty {
                setup = Arc::new(settings.iter().map(|(_, v)| v.clone()).collect());
                setup_dirty = false;
            }
            out.push(ScriptEntry {
                dump_id: id,
                setup: setup.clone(),
                statements: Vec::new(),
            });
        }
        let current = out.last_mut();
        if is_session_setup(s.sql) || current.is_none() {
            let key = setting_key(s);
            match settings.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = s.sql.to_string(),
                None => settings.push((key, s.sql.to_string())),
            }
            setup_dirty = true;
        } else if let Some(e) = current {
            e.statements.push(s.sql.to_string());
        }
    }
    // Entries with no statement left (all filtered) are still listed, so
    // their dependents see them done.
    for (_, id) in headers {
        out.push(ScriptEntry {
            dump_id: id,
            setup: setup.clone(),
            statements: Vec::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "--\n-- PostgreSQL database dump\n--\n\\restrict abc\n\
        SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\
        SET default_tablespace = '';\n\n--\n-- TOC entry 3201 (class 2606 OID 16388)\n\
        -- Dependencies: 214\n--\n\nALTER TABLE ONLY public.p\n    ADD CONSTRAINT p_pkey PRIMARY KEY (a);\n\n\
        --\n-- TOC entry 3355 (class 0 OID 0)\n--\nCOMMENT ON INDEX public.i IS '\n-- TOC entry 9 (x)\n';\n\
        SET default_tablespace = 'ts';\n\
        --\n-- TOC entry 3202 (class 1259 OID 16397)\n--\nCREATE INDEX i ON public.c (a);\nCOMMENT ON INDEX i IS 'y';\n";

    #[test]
    fn cuts_entries_and_tracks_settings() {
        let e = parse_entries(SCRIPT, |_| true);
        let ids: Vec<u32> = e.iter().map(|e| e.dump_id).collect();
        assert_eq!(ids, vec![3201, 3355, 3202], "{e:#?}");
        assert_eq!(e[0].statements.len(), 1);
        assert!(e[0].statements[0].starts_with("ALTER TABLE ONLY public.p"));
        assert_eq!(e[1].statements.len(), 1, "{:?}", e[1].statements);
        assert_eq!(e[0].setup.len(), 3);
        assert!(Arc::ptr_eq(&e[0].setup, &e[1].setup));
        assert_eq!(e[2].setup.len(), 3);
        assert_eq!(e[2].setup[2], "SET default_tablespace = 'ts'");
        assert_eq!(e[2].statements.len(), 2);
    }

    #[test]
    fn filtered_settings_are_left_out() {
        let e = parse_entries(SCRIPT, |s| {
            s.set_name().as_deref() != Some("statement_timeout")
        });
        assert_eq!(e[0].setup.len(), 2);
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in [
            "-- TOC entry ",
            "-- TOC entry x\nSELECT 1;",
            "'-- TOC entry 1",
            "\n-- TOC entry 99",
        ] {
            let _ = parse_entries(s, |_| true);
        }
        let e = parse_entries("\n-- TOC entry 99\n", |_| true);
        assert_eq!(e.len(), 1);
    }
}
