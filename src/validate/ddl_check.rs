//! `ddl_replication`: which `ddl` mode an online migration runs with, and
//! why (the source user's privilege, the source's version).

use crate::config::{Config, DdlMode, Mode, MESSAGES_SINCE};
use crate::control::state::ValidationCheck;

use super::check::{self, fail, pass, warn};
use super::source_facts::SourceServer;

/// The check; None for an offline migration, which streams nothing.
pub fn ddl_replication(s: &SourceServer, config: &Config) -> Option<ValidationCheck> {
    if config.mode != Mode::Online {
        return None;
    }
    let id = check::DDL_REPLICATION;
    let recent = s.major >= MESSAGES_SINCE;
    let missing = match (s.superuser, recent) {
        (true, true) => None,
        (false, _) => Some(format!(
            "user \"{}\" is not a superuser and may not create event triggers",
            s.user
        )),
        (true, false) => Some(format!(
            "PostgreSQL {} sends no logical messages through pgoutput (since {MESSAGES_SINCE})",
            s.major
        )),
    };
    let mode = DdlMode::resolve(config.ddl, missing.is_none());
    let chosen = if config.ddl.is_some() {
        "configured"
    } else {
        "the default"
    };
    Some(match (mode, missing) {
        (DdlMode::Ignore, None) => warn(
            id,
            format!("source {}: ddl = \"ignore\" ({chosen}): schema changes during streaming are not carried; a changed table stops the apply", s.server),
            "keep the schema unchanged until cutover, or set ddl = \"replicate\"",
        ),
        (DdlMode::Ignore, Some(why)) => warn(
            id,
            format!("source {}: ddl = \"ignore\" ({chosen}, because {why}): schema changes during streaming are not carried; a changed table stops the apply", s.server),
            "keep the schema unchanged until cutover; to carry DDL, migrate as a superuser from PostgreSQL 14 or later",
        ),
        (m, None) => pass(
            id,
            format!(
                "source {}: ddl = \"{}\" ({chosen}): an event trigger captures DDL ({})",
                s.server,
                m.as_str(),
                if m == DdlMode::Replicate {
                    "applied on the target in commit order"
                } else {
                    "the first command stops the migration"
                }
            ),
        ),
        (m, Some(why)) => fail(
            id,
            format!("source {}: ddl = \"{}\" needs an event trigger, but {why}", s.server, m.as_str()),
            "connect to the source as a superuser (PostgreSQL 14 or later), or set ddl = \"ignore\"",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::status::CheckResult;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "name = \"t\"\ndatabases = [\"app\"]\n{extra}\n[source]\nhost = \"src\"\n[target]\nhost = \"dst\"\n"
        );
        Config::from_toml_str(&text, Path::new("/")).unwrap()
    }

    fn server(major: u32, superuser: bool) -> SourceServer {
        SourceServer {
            server: "src:5432".into(),
            major,
            user: "app".into(),
            superuser,
            ..SourceServer::default()
        }
    }

    #[test]
    fn the_mode_and_its_reason_are_said() {
        let c = ddl_replication(&server(15, true), &config("")).unwrap();
        assert_eq!(c.result, CheckResult::Succeeded);
        assert!(
            c.message.contains("ddl = \"replicate\" (the default)"),
            "{}",
            c.message
        );
        let c = ddl_replication(&server(15, false), &config("")).unwrap();
        assert_eq!(c.result, CheckResult::Warning);
        assert!(c.message.contains("not a superuser"), "{}", c.message);
        let c = ddl_replication(&server(13, true), &config("")).unwrap();
        assert_eq!(c.result, CheckResult::Warning);
        assert!(c.message.contains("PostgreSQL 13"), "{}", c.message);
        let c = ddl_replication(&server(13, true), &config("ddl = \"replicate\"")).unwrap();
        assert_eq!(c.result, CheckResult::Failed);
        let c = ddl_replication(&server(15, false), &config("ddl = \"fail\"")).unwrap();
        assert_eq!(c.result, CheckResult::Failed);
        let c = ddl_replication(&server(15, true), &config("ddl = \"ignore\"")).unwrap();
        assert_eq!(c.result, CheckResult::Warning);
        assert!(ddl_replication(&server(15, true), &config("mode = \"offline\"")).is_none());
    }

    #[test]
    fn an_unknown_mode_is_a_config_error() {
        let text = "name = \"t\"\ndatabases = [\"app\"]\nddl = \"sometimes\"\n[source]\nhost = \"s\"\n[target]\nhost = \"d\"\n";
        let e = Config::from_toml_str(text, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }
}
