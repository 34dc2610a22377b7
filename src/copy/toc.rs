//! The archive's table of contents as `pg_restore --list --verbose` prints
//! it: one line per entry, with the dump IDs it depends on. The order of
//! post-data is derived from these dependencies, never from entry kinds.

/// One entry of the table of contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// The entry's dump ID (the number before `;`).
    pub dump_id: u32,
    /// The line as printed, quoted in errors so an operator can find the
    /// entry in `pg_restore --list`.
    pub line: String,
    /// Catalog OID of the object on the source (0 for comments, ACLs, …).
    pub oid: u32,
    /// Entry type: `INDEX`, `CONSTRAINT`, `FK CONSTRAINT`, `TRIGGER`, …
    pub kind: String,
    /// Dump IDs this entry depends on.
    pub deps: Vec<u32>,
}

/// Entry types of more than one word, longest first where one is the
/// prefix of another.
const KINDS: &[&str] = &[
    "FK CONSTRAINT",
    "CHECK CONSTRAINT",
    "CONSTRAINT",
    "INDEX ATTACH",
    "INDEX",
    "EVENT TRIGGER",
    "TRIGGER",
    "MATERIALIZED VIEW DATA",
    "MATERIALIZED VIEW",
    "ROW SECURITY",
    "RULE",
    "POLICY",
    "PUBLICATION TABLES IN SCHEMA",
    "PUBLICATION TABLE",
    "PUBLICATION",
    "SUBSCRIPTION TABLE",
    "SUBSCRIPTION",
    "STATISTICS DATA",
    "STATISTICS",
    "DEFAULT ACL",
    "DEFAULT",
    "COMMENT",
    "SECURITY LABEL",
    "ACL",
];

/// Parses `pg_restore --list [--verbose]` output:
/// `3340; 1259 16399 INDEX public idx owner`, optionally followed by
/// `;\tdepends on: 215 214`.
pub fn parse_toc(list: &str) -> Vec<TocEntry> {
    let mut out: Vec<TocEntry> = Vec::new();
    for l in list.lines() {
        if let Some(deps) = l.strip_prefix(";\tdepends on:") {
            if let Some(last) = out.last_mut() {
                last.deps.extend(
                    deps.split_whitespace()
                        .filter_map(|d| d.parse::<u32>().ok()),
                );
            }
            continue;
        }
        if l.starts_with(';') || l.trim().is_empty() {
            continue;
        }
        if let Some(e) = parse_line(l) {
            out.push(e);
        }
    }
    out
}

fn parse_line(l: &str) -> Option<TocEntry> {
    let (id, rest) = l.split_once("; ")?;
    let dump_id = id.trim().parse().ok()?;
    let mut parts = rest.splitn(3, ' ');
    let _catalog = parts.next()?;
    let oid = parts.next()?.parse().ok()?;
    let tail = parts.next()?;
    let kind = KINDS
        .iter()
        .find(|k| tail.starts_with(*k) && tail.as_bytes().get(k.len()) == Some(&b' '))
        .map(|k| k.to_string())
        .unwrap_or_else(|| tail.split(' ').next().unwrap_or("").to_string());
    Some(TocEntry {
        dump_id,
        line: l.to_string(),
        oid,
        kind,
        deps: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_lines_with_dependencies() {
        let toc = parse_toc(
            ";\n; Archive created at\n3340; 1259 16399 INDEX public idx_a postgres\n\
             ;\tdepends on: 215\n\
             3341; 2606 16400 CONSTRAINT public t t_pkey postgres\n\
             3342; 2606 16401 FK CONSTRAINT public c c_fk postgres\n\
             ;\tdepends on: 215 214 3341\n\
             3356; 0 0 COMMENT public CONSTRAINT c_fk ON c postgres\n\
             ;\tdepends on: 3342\n",
        );
        assert_eq!(toc.len(), 4);
        assert_eq!(toc[0].kind, "INDEX");
        assert_eq!(toc[0].oid, 16399);
        assert_eq!(toc[0].dump_id, 3340);
        assert_eq!(toc[0].deps, vec![215]);
        assert_eq!(toc[1].kind, "CONSTRAINT");
        assert!(toc[1].deps.is_empty());
        assert_eq!(toc[2].kind, "FK CONSTRAINT");
        assert_eq!(toc[2].deps, vec![215, 214, 3341]);
        assert_eq!(toc[3].kind, "COMMENT");
        assert_eq!(toc[3].deps, vec![3342]);
    }

    #[test]
    fn garbage_is_skipped() {
        let toc = parse_toc("x; y\n;\tdepends on: 1\n12; a b\n; 1 2 3\n\u{0}\n");
        assert!(toc.is_empty());
    }
}
