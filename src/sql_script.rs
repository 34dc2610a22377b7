//! The one SQL lexer: splits a script from pg_restore into statements, so
//! it can be run in bounded batches (one huge implicit transaction would
//! exhaust the lock table on a schema with thousands of tables) and so
//! settings the target does not know can be dropped; and cuts a client's
//! query string (DDL replication's `current_query()`) into statements and
//! their unquoted words.
//!
//! The lexer knows what psql knows: quoted identifiers, standard-conforming
//! and `E''` strings, dollar quotes, line and nested block comments, and
//! psql meta-commands (`\restrict`, `\connect`) at the start of a statement.

/// One statement of the script, without its trailing semicolon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement text, leading comments and whitespace removed.
    pub sql: &'a str,
    /// Byte offset of `sql` in the script.
    pub offset: usize,
}

impl Statement<'_> {
    /// For `SET name = value` / `SET name TO value`, the setting's name in
    /// lower case.
    pub fn set_name(&self) -> Option<String> {
        let mut words = self.sql.split_whitespace();
        if !words.next()?.eq_ignore_ascii_case("set") {
            return None;
        }
        let name = words.next()?;
        let name = name.split('=').next()?.trim();
        if name.eq_ignore_ascii_case("session") || name.eq_ignore_ascii_case("local") {
            return None;
        }
        Some(name.to_ascii_lowercase())
    }
}

/// Splits `script` into statements. Meta-command lines are skipped; a
/// trailing statement without a semicolon is returned too.
pub fn split(script: &str) -> Vec<Statement<'_>> {
    let b = script.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    while i < b.len() {
        if b[i] == b'\\' && start.is_none() {
            // psql meta-command: runs to the end of the line.
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let (lexeme, end) = lex(b, i);
        match lexeme {
            Lexeme::Semicolon => {
                if let Some(s) = start.take() {
                    out.push(Statement {
                        sql: script[s..i].trim_end(),
                        offset: s,
                    });
                }
            }
            Lexeme::Comment | Lexeme::Space => {}
            Lexeme::Word | Lexeme::Other => {
                start.get_or_insert(i);
            }
        }
        i = end;
    }
    if let Some(s) = start {
        let rest = script[s..].trim_end();
        if !rest.is_empty() {
            out.push(Statement {
                sql: rest,
                offset: s,
            });
        }
    }
    out
}

/// The unquoted words of one statement as the server's scanner reads them
/// (keywords and plain names, upper-cased), with their byte ranges in
/// `sql`: quoted names, literals, dollar-quoted bodies and comments are
/// left out, and so is a literal's prefix (`E'…'`, `U&'…'`, `B'…'`).
pub fn words(sql: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let (lexeme, end) = lex(b, i);
        if lexeme == Lexeme::Word && b.get(end) != Some(&b'\'') {
            if let Some(word) = sql.get(i..end) {
                out.push((word.to_ascii_uppercase(), i..end));
            }
        }
        i = end;
    }
    out
}

/// What starts at a byte of SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexeme {
    /// `-- …` to the end of the line, or a (nested) `/* … */`.
    Comment,
    /// A statement's end.
    Semicolon,
    /// One whitespace byte.
    Space,
    /// An unquoted word (a `$` inside it belongs to it: `a$b`, `x$1`).
    Word,
    /// A quoted string or identifier, a dollar quote, or any other byte.
    Other,
}

/// The lexeme starting at `i` and the index after it.
fn lex(b: &[u8], i: usize) -> (Lexeme, usize) {
    match b[i] {
        b'-' if b.get(i + 1) == Some(&b'-') => {
            let mut j = i;
            while j < b.len() && b[j] != b'\n' {
                j += 1;
            }
            (Lexeme::Comment, j)
        }
        b'/' if b.get(i + 1) == Some(&b'*') => (Lexeme::Comment, skip_block_comment(b, i)),
        b';' => (Lexeme::Semicolon, i + 1),
        c if c.is_ascii_whitespace() => (Lexeme::Space, i + 1),
        c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
            let mut j = i + 1;
            while j < b.len() && (is_ident_byte(Some(b[j])) || b[j] == b'$') {
                j += 1;
            }
            (Lexeme::Word, j)
        }
        _ => (Lexeme::Other, skip_token(b, i)),
    }
}

/// Past a (nested) block comment starting at `i`.
fn skip_block_comment(b: &[u8], i: usize) -> usize {
    let mut depth = 1;
    let mut j = i + 2;
    while j < b.len() && depth > 0 {
        if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
            depth += 1;
            j += 2;
        } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
            depth -= 1;
            j += 2;
        } else {
            j += 1;
        }
    }
    j.min(b.len())
}

/// Skips one token starting at `i` (a quoted string, identifier, dollar
/// quote or a single other byte) and returns the index after it.
fn skip_token(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'\'' => {
            // E'...' strings allow backslash escapes; plain ones do not
            // (pg_dump always writes standard_conforming_strings = on).
            let escapes = i > 0
                && matches!(b[i - 1], b'E' | b'e')
                && !is_ident_byte(b.get(i.wrapping_sub(2)).copied());
            let mut j = i + 1;
            while j < b.len() {
                if escapes && b[j] == b'\\' {
                    j += 2;
                    continue;
                }
                if b[j] == b'\'' {
                    if b.get(j + 1) == Some(&b'\'') {
                        j += 2;
                        continue;
                    }
                    return j + 1;
                }
                j += 1;
            }
            b.len()
        }
        b'"' => {
            let mut j = i + 1;
            while j < b.len() {
                if b[j] == b'"' {
                    if b.get(j + 1) == Some(&b'"') {
                        j += 2;
                        continue;
                    }
                    return j + 1;
                }
                j += 1;
            }
            b.len()
        }
        b'$' => {
            // $tag$ … $tag$, where tag is empty or an identifier not
            // starting with a digit; `$1` is a parameter, not a quote.
            if i > 0 && is_ident_byte(Some(b[i - 1])) {
                return i + 1;
            }
            let mut j = i + 1;
            while j < b.len() && is_ident_byte(Some(b[j])) && b[j] != b'$' {
                j += 1;
            }
            if b.get(j) != Some(&b'$') || b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                return i + 1;
            }
            let tag = &b[i..=j];
            let mut k = j + 1;
            while k + tag.len() <= b.len() {
                if &b[k..k + tag.len()] == tag {
                    return k + tag.len();
                }
                k += 1;
            }
            b.len()
        }
        _ => i + 1,
    }
}

fn is_ident_byte(c: Option<u8>) -> bool {
    matches!(c, Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(s: &str) -> Vec<&str> {
        split(s).into_iter().map(|s| s.sql).collect()
    }

    #[test]
    fn splits_plain_statements() {
        assert_eq!(
            sqls("SET a = 1;\nCREATE TABLE t (x int);\n"),
            vec!["SET a = 1", "CREATE TABLE t (x int)"]
        );
    }

    #[test]
    fn keeps_semicolons_in_quotes_and_bodies() {
        let s = "CREATE FUNCTION f() RETURNS int AS $$ select 1; $$ LANGUAGE sql;\n\
                 COMMENT ON TABLE t IS 'a;b''c';\nCREATE TABLE \"x;y\" (a int);\n\
                 SELECT E'\\';x';\nCREATE FUNCTION g() RETURNS int AS $body$ begin; return $1; end $body$ LANGUAGE plpgsql;";
        let v = sqls(s);
        assert_eq!(v.len(), 5, "{v:?}");
        assert!(v[0].ends_with("LANGUAGE sql"));
        assert_eq!(v[1], "COMMENT ON TABLE t IS 'a;b''c'");
        assert_eq!(v[3], "SELECT E'\\';x'");
    }

    #[test]
    fn skips_comments_and_meta_commands() {
        let s = "\\restrict abc123\n--\n-- Name: t; Type: TABLE\n--\n/* a; /* nested; */ */\nCREATE TABLE t ();\n\\unrestrict abc123\n";
        assert_eq!(sqls(s), vec!["CREATE TABLE t ()"]);
    }

    #[test]
    fn set_names() {
        let v = split(
            "SET transaction_timeout = 0;\nSET search_path TO x;\nSET SESSION AUTHORIZATION y;",
        );
        assert_eq!(v[0].set_name().as_deref(), Some("transaction_timeout"));
        assert_eq!(v[1].set_name().as_deref(), Some("search_path"));
        assert_eq!(v[2].set_name(), None);
    }

    #[test]
    fn words_leave_out_quotes_literals_and_comments() {
        let w: Vec<String> =
            words("create /* x */ index concurrently \"CONCURRENTLY\" on t$1 (E'a', $$b$$) -- c")
                .into_iter()
                .map(|(w, _)| w)
                .collect();
        assert_eq!(w, ["CREATE", "INDEX", "CONCURRENTLY", "ON", "T$1"]);
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for s in ["'abc", "\"abc", "$x$ abc", "/* abc", "E'\\", "$", "$$"] {
            let _ = split(s);
        }
    }
}
