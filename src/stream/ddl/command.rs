//! A DDL command as the source's event trigger reports it (a transactional
//! logical message with prefix [`PREFIX`]), and what the target replays of
//! it.

use serde::Deserialize;

use super::split::{split, Statement};

/// The logical message prefix of captured DDL.
pub const PREFIX: &str = "pgmigrate.ddl";

/// Words that begin a statement the event trigger fires for. Global
/// objects (roles, databases, tablespaces) never fire it.
const DDL_WORDS: &[&str] = &[
    "CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE", "SECURITY", "REFRESH", "IMPORT",
];

/// Command tags that are not schema changes worth holding the stream for.
const NOT_REPLAYED: &[&str] = &["REINDEX"];

/// One object a command created or altered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DdlObject {
    /// `table`, `index`, `function`, …
    #[serde(rename = "type")]
    pub object_type: String,
    /// `schema.name` as `pg_identify_object` spells it.
    pub identity: String,
    /// The schema, when the object has one.
    pub schema: Option<String>,
}

/// What the event trigger wrote.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DdlCommand {
    /// `current_query()`: the whole client message.
    pub query: String,
    /// The command tag (`ALTER TABLE`).
    pub tag: String,
    /// The source session's search_path.
    pub search_path: String,
    /// The role that ran it.
    pub role: String,
    /// This command's place among the DDL commands of its client message
    /// (0-based): which statement of `query` it is.
    pub seq: usize,
    /// The objects it touched.
    #[serde(default)]
    pub objects: Vec<DdlObject>,
}

/// Why a message is not a command.
#[derive(Debug, thiserror::Error)]
#[error("a DDL message that does not parse: {0}")]
pub struct BadMessage(#[from] serde_json::Error);

impl DdlCommand {
    /// Parses a message's content.
    pub fn parse(content: &[u8]) -> Result<DdlCommand, BadMessage> {
        Ok(serde_json::from_slice(content)?)
    }

    /// The statement text for errors and logs, shortened.
    pub fn display(&self) -> String {
        let q = self.query.trim();
        match q.char_indices().nth(200) {
            Some((i, _)) => format!("{}…", &q[..i]),
            None => q.to_string(),
        }
    }
}

/// What the target runs for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// This statement (CONCURRENTLY removed: it runs inside the apply
    /// transaction, which makes it exactly once with the origin).
    Statement(String),
    /// Nothing: the command is not replayed (REINDEX), or it is a later
    /// command of a statement replayed whole at its first command.
    Skip,
    /// The command ran inside a DO block or a function called by this one
    /// statement: replayed whole, once, which is exact only when the
    /// transaction changed no rows (the caller checks).
    Whole(String),
    /// The command cannot be told apart in its client message.
    Unknown(String),
}

/// Which statement of the client message `cmd` is, and how it replays.
pub fn replay_of(cmd: &DdlCommand) -> Replay {
    if NOT_REPLAYED.contains(&cmd.tag.as_str()) {
        return Replay::Skip;
    }
    let statements = split(&cmd.query);
    let tag_word = cmd.tag.split(' ').next().unwrap_or("").to_ascii_uppercase();
    let ddl: Vec<&Statement> = statements
        .iter()
        .filter(|s| DDL_WORDS.contains(&s.first_word()))
        .collect();
    if let Some(s) = ddl.get(cmd.seq) {
        if s.first_word() == tag_word {
            return Replay::Statement(s.without_word("CONCURRENTLY"));
        }
    }
    if ddl.is_empty() && statements.len() == 1 {
        // DO, CALL, SELECT f(): its commands all run again when it does.
        return match (cmd.seq, statements.first()) {
            (0, Some(s)) => Replay::Whole(s.text.clone()),
            _ => Replay::Skip,
        };
    }
    Replay::Unknown(format!(
        "command {} ({}) of a client message with {} statements, {} of them DDL",
        cmd.seq + 1,
        cmd.tag,
        statements.len(),
        ddl.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(query: &str, tag: &str, seq: usize) -> DdlCommand {
        DdlCommand {
            query: query.into(),
            tag: tag.into(),
            search_path: "public".into(),
            role: "app".into(),
            seq,
            objects: vec![],
        }
    }

    #[test]
    fn one_statement_replays_as_sent() {
        assert_eq!(
            replay_of(&cmd(
                "ALTER TABLE orders ADD COLUMN note text;",
                "ALTER TABLE",
                0
            )),
            Replay::Statement("ALTER TABLE orders ADD COLUMN note text".into())
        );
        assert_eq!(
            replay_of(&cmd(
                "CREATE INDEX CONCURRENTLY i ON t (a)",
                "CREATE INDEX",
                0
            )),
            Replay::Statement("CREATE INDEX  i ON t (a)".into())
        );
        assert_eq!(
            replay_of(&cmd("REINDEX TABLE t", "REINDEX", 0)),
            Replay::Skip
        );
    }

    #[test]
    fn a_multi_statement_message_replays_only_its_ddl_in_turn() {
        let q =
            "INSERT INTO t VALUES (1); ALTER TABLE t ADD b int; UPDATE t SET b = 1; DROP INDEX i";
        assert_eq!(
            replay_of(&cmd(q, "ALTER TABLE", 0)),
            Replay::Statement("ALTER TABLE t ADD b int".into())
        );
        assert_eq!(
            replay_of(&cmd(q, "DROP INDEX", 1)),
            Replay::Statement("DROP INDEX i".into())
        );
        assert!(matches!(
            replay_of(&cmd(q, "CREATE TABLE", 2)),
            Replay::Unknown(_)
        ));
        assert!(matches!(
            replay_of(&cmd(q, "CREATE TABLE", 1)),
            Replay::Unknown(_)
        ));
    }

    #[test]
    fn do_blocks_replay_whole_once() {
        let q = "DO $$ BEGIN EXECUTE 'ALTER TABLE t ADD c int'; EXECUTE 'CREATE INDEX ON t (c)'; END $$";
        assert_eq!(
            replay_of(&cmd(q, "ALTER TABLE", 0)),
            Replay::Whole(q.into())
        );
        assert_eq!(replay_of(&cmd(q, "CREATE INDEX", 1)), Replay::Skip);
    }

    #[test]
    fn messages_parse() {
        let c = DdlCommand::parse(
            br#"{"query":"ALTER TABLE t ADD c int","tag":"ALTER TABLE","search_path":"\"$user\", public","role":"app","seq":0,"objects":[{"type":"table","identity":"public.t","schema":"public"}]}"#,
        )
        .unwrap();
        assert_eq!(c.objects[0].identity, "public.t");
        assert!(DdlCommand::parse(b"{").is_err());
    }
}
