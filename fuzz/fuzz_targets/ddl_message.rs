//! Feeds arbitrary bytes to the DDL message parser and the statement
//! splitter (a logical message from the source's event trigger: any client
//! text can be in its query): they must return, never panic, and every
//! statement must be a slice of the query with its words inside it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmigrate::stream::ddl::command::DdlCommand;
use pgmigrate::stream::ddl::{replay_of, split::split};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for s in split(&text) {
        assert!(text.contains(s.text.as_str()));
        for (_, range) in &s.words {
            assert!(s.text.get(range.clone()).is_some());
        }
        let _ = s.without_word("CONCURRENTLY");
    }
    if let Ok(cmd) = DdlCommand::parse(data) {
        let _ = replay_of(&cmd);
        let _ = cmd.display();
    }
    let cmd = DdlCommand {
        query: text.into_owned(),
        tag: "ALTER TABLE".into(),
        search_path: "public".into(),
        role: "app".into(),
        seq: data.len() % 4,
        objects: Vec::new(),
    };
    let _ = replay_of(&cmd);
});
