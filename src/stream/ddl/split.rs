//! Cuts a query string as the client sent it into its statements, the way
//! the server's scanner sees them: semicolons inside quotes, quoted
//! identifiers, dollar quotes and comments do not end a statement. The
//! event trigger reports `current_query()`, the whole client message, so a
//! multi-statement message must be cut to replay only its DDL.

use crate::sql_script;

/// One statement of a query string, with its words as the scanner reads
/// them: keywords upper-cased, quoted names and literals left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement's text, without its terminating semicolon.
    pub text: String,
    /// Its unquoted words (upper-cased), in order, with their byte ranges
    /// in `text`.
    pub words: Vec<(String, std::ops::Range<usize>)>,
}

impl Statement {
    /// The first word, upper-cased ("" for an empty statement).
    pub fn first_word(&self) -> &str {
        self.words.first().map_or("", |(w, _)| w.as_str())
    }

    /// The text without the unquoted keyword `word` (e.g. CONCURRENTLY).
    pub fn without_word(&self, word: &str) -> String {
        let mut out = String::with_capacity(self.text.len());
        let mut at = 0;
        for (w, range) in &self.words {
            if w == word {
                out.push_str(self.text.get(at..range.start).unwrap_or(""));
                at = range.end;
            }
        }
        out.push_str(self.text.get(at..).unwrap_or(""));
        out
    }
}

/// The non-empty statements of `query`, in order (the shared lexer of
/// [`crate::sql_script`]; leading comments are not part of a statement).
pub fn split(query: &str) -> Vec<Statement> {
    sql_script::split(query)
        .into_iter()
        .map(|s| Statement {
            text: s.sql.to_string(),
            words: sql_script::words(s.sql),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(q: &str) -> Vec<String> {
        split(q).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn semicolons_inside_quotes_and_comments_stay() {
        assert_eq!(
            texts("ALTER TABLE a ADD c text DEFAULT 'x;y'; INSERT INTO \"b;\" VALUES (1) -- ;\n;"),
            vec![
                "ALTER TABLE a ADD c text DEFAULT 'x;y'",
                "INSERT INTO \"b;\" VALUES (1) -- ;"
            ]
        );
        assert_eq!(
            texts("CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql; /* a; /* b; */ */ SELECT 2"),
            vec![
                "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql",
                "SELECT 2"
            ]
        );
        assert_eq!(
            texts("SELECT E'a\\';b'; SELECT 'it''s;'"),
            vec!["SELECT E'a\\';b'", "SELECT 'it''s;'"]
        );
        assert_eq!(texts(" ; ;\n"), Vec::<String>::new());
    }

    #[test]
    fn words_are_unquoted_keywords() {
        let s = &split("create /* x */ unique index concurrently \"CONCURRENTLY\" on t (a)")[0];
        let words: Vec<&str> = s.words.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(
            words,
            ["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY", "ON", "T", "A"]
        );
        assert_eq!(s.first_word(), "CREATE");
        assert_eq!(
            s.without_word("CONCURRENTLY"),
            "create /* x */ unique index  \"CONCURRENTLY\" on t (a)"
        );
    }

    #[test]
    fn dollar_parameters_are_not_quotes() {
        assert_eq!(
            texts("PREPARE p AS SELECT $1; SELECT 2"),
            vec!["PREPARE p AS SELECT $1", "SELECT 2"]
        );
    }

    #[test]
    fn arbitrary_text_never_panics_and_words_stay_inside() {
        // The fuzz target's invariants over many generated strings of the
        // characters that matter to the scanner (cargo-fuzz may be absent).
        let alphabet: Vec<char> = "ab_$1;'\"-/*\\eE \nCONCURRENTLYé".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let text: String = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()])
                .collect();
            for s in split(&text) {
                assert!(text.contains(s.text.as_str()), "{text:?}");
                for (_, r) in &s.words {
                    assert!(s.text.get(r.clone()).is_some(), "{text:?}");
                }
                let _ = s.without_word("CONCURRENTLY");
            }
        }
    }
}
