//! `pgmigrate verify` as a client: when the migration's daemon streams, it
//! is asked to verify at one LSN (console `VERIFY`) and followed through
//! `SHOW VERIFY` until its report is in; without a streaming daemon the
//! live tables are compared directly, as before.

use std::time::Duration;

use crate::config::Config;
use crate::conn::sqlstate;
use crate::control::console_client::{self, ConsoleClientError};
use crate::control::ConsoleCommand;

use super::live_console::SHOW_VERIFY_COLUMNS;
use super::{VerifyError, VerifyReport};

/// Pause between two `SHOW VERIFY`.
const POLL: Duration = Duration::from_millis(300);

/// Verifies `config`'s migration: through its streaming daemon when there
/// is one, else directly.
pub async fn verify(config: &Config) -> Result<VerifyReport, VerifyError> {
    let (dir, name) = (&config.state_dir, &config.name);
    let id = match console_client::send(dir, name, ConsoleCommand::Verify).await {
        Ok(rows) => rows
            .first()
            .and_then(|r| r.opt_str(0).ok().flatten())
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| VerifyError::Daemon("VERIFY returned no run id".into()))?,
        Err(ConsoleClientError::NotRunning { .. }) => return super::verify(config).await,
        Err(ConsoleClientError::Refused {
            sqlstate: code,
            message,
            ..
        }) if code == sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE => {
            tracing::warn!("{message}: comparing the live tables directly");
            return super::verify(config).await;
        }
        Err(e) => return Err(VerifyError::Daemon(e.to_string())),
    };
    tracing::info!(run = id, "the daemon verifies at one LSN while streaming");
    loop {
        let rows = console_client::send(dir, name, ConsoleCommand::ShowVerify)
            .await
            .map_err(|e| VerifyError::Daemon(e.to_string()))?;
        let row = rows
            .first()
            .ok_or_else(|| VerifyError::Daemon("SHOW VERIFY returned no row".into()))?;
        let col = |name: &str| {
            SHOW_VERIFY_COLUMNS
                .iter()
                .position(|c| *c == name)
                .and_then(|i| row.opt_str(i).ok().flatten())
                .map(str::to_string)
        };
        if col("id").and_then(|s| s.parse::<u64>().ok()) != Some(id) {
            return Err(VerifyError::Daemon(format!(
                "the daemon's verify run {id} is gone (restarted?)"
            )));
        }
        match col("state").as_deref() {
            Some("running") => {
                tracing::debug!(
                    done = col("tables_done"),
                    total = col("tables_total"),
                    "verifying"
                );
                tokio::time::sleep(POLL).await;
            }
            Some("failed") => return Err(VerifyError::Daemon(col("message").unwrap_or_default())),
            _ => {
                let json = col("report_json")
                    .ok_or_else(|| VerifyError::Daemon("SHOW VERIFY has no report".into()))?;
                return serde_json::from_str(&json)
                    .map_err(|e| VerifyError::Daemon(format!("SHOW VERIFY's report: {e}")));
            }
        }
    }
}
