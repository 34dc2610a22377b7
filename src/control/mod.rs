//! Control of a running migration: the status vocabulary, the state.json
//! document and its single writer, live progress counters, the human
//! reports of `show` and `list`, readiness reports to systemd, and the
//! admin console with its clients.

pub mod console;
pub mod console_client;
pub mod console_session;
pub mod console_show;
pub mod human;
pub mod locate;
pub mod notify;
pub mod progress;
pub mod report;
pub mod state;
pub mod state_dir;
pub mod status;
pub mod store;
mod table;
pub mod terminal;

pub use console::{
    serve as serve_console, serve_with as serve_console_with, ConsoleCommand, ConsoleError,
    ConsoleHandler, ConsoleRefusal, ConsoleReply,
};
pub use console_show::{databases_reply, show_reply, status_reply, tables_reply};
pub use progress::{spawn_state_flusher, DbProgress, MigrationProgress};
pub use report::{
    absent_state_dir, list_migrations, render_json, render_list, render_show, render_validation,
    ListFilter,
};
pub use state::{now_rfc3339, DatabaseState, MigrationState, ResumeState, ValidationCheck};
pub use status::{CheckResult, Phase, Status, Substatus, UnknownValue};
pub use store::{RunningDaemon, StateError, StateStore};
