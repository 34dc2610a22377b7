//! Cuts a query string as the client sent it into its statements, the way
//! the server's scanner sees them: semicolons inside quotes, quoted
//! identifiers, dollar quotes and comments do not end a statement. The
//! event trigger reports `current_query()`, the whole client message, so a
//! multi-statement message must be cut to replay only its DDL.

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

/// The non-empty statements of `query`, in order.
pub fn split(query: &str) -> Vec<Statement> {
    let b = query.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut words: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    let mut i = 0;
    let mut push = |start: usize, end: usize, words: &mut Vec<(String, std::ops::Range<usize>)>| {
        let text = &query[start..end];
        let lead = text.len() - text.trim_start().len();
        let text = text.trim();
        if !text.is_empty() {
            let shifted = words
                .drain(..)
                .map(|(w, r)| (w, r.start - start - lead..r.end - start - lead))
                .collect();
            out.push(Statement {
                text: text.to_string(),
                words: shifted,
            });
        }
        words.clear();
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b';' => {
                push(start, i, &mut words);
                i += 1;
                start = i;
            }
            b'\'' => i = skip_quoted(b, i + 1, b'\'', backslashes(b, i)),
            b'"' => i = skip_quoted(b, i + 1, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'$' => match dollar_tag(b, i) {
                Some(tag_end) => i = skip_dollar(b, i, tag_end),
                None => i += 1,
            },
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let s = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                // E'…' and friends: the quote belongs to the literal.
                if b.get(i) == Some(&b'\'') {
                    continue;
                }
                words.push((query[s..i].to_ascii_uppercase(), s..i));
            }
            _ => i += 1,
        }
    }
    push(start, b.len(), &mut words);
    out
}

/// An `E'…'` literal (the letter before the quote) takes backslash escapes.
fn backslashes(b: &[u8], quote: usize) -> bool {
    quote > 0
        && matches!(b[quote - 1], b'e' | b'E')
        && (quote < 2 || !(b[quote - 2].is_ascii_alphanumeric() || b[quote - 2] == b'_'))
}

/// Past the closing `q` of a quoted run starting at `i` (doubled quotes
/// stay inside).
fn skip_quoted(b: &[u8], mut i: usize, q: u8, escapes: bool) -> usize {
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Past a (nested) block comment starting at `i`.
fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The end (exclusive) of a `$tag$` opening at `i`, if it is one.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    // `$1` is a parameter, and a `$` inside a word was consumed with it.
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1)
}

/// Past the closing tag of a dollar-quoted string whose opening tag is
/// `b[i..tag_end]`.
fn skip_dollar(b: &[u8], i: usize, tag_end: usize) -> usize {
    let tag = &b[i..tag_end];
    let mut j = tag_end;
    while j + tag.len() <= b.len() {
        if &b[j..j + tag.len()] == tag {
            return j + tag.len();
        }
        j += 1;
    }
    b.len()
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
                "/* a; /* b; */ */ SELECT 2"
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
