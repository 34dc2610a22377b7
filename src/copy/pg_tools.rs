//! pg_dump and pg_restore: finding a pair new enough for the source, and
//! running them with the connection passed through the environment (and the
//! password through a 0600 password file) so no password ever shows in a
//! process title or a process environment.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::passfile::Passfile;
use crate::conn::{ConnectParams, Host, SslMode};

/// Errors of the external dump tools.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// No usable pg_dump/pg_restore was found.
    #[error("{0}")]
    NotFound(String),
    /// The tools are older than the source server.
    #[error("pg_dump in {dir} is version {found}, older than the source server's {needed}; set pg_bin_dir to PostgreSQL {needed} or newer client binaries")]
    TooOld {
        /// Directory searched.
        dir: String,
        /// Major found.
        found: u32,
        /// Source major.
        needed: u32,
    },
    /// The tool ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        /// Which tool.
        tool: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr (last lines).
        stderr: String,
    },
    /// The password file for the tool could not be written.
    #[error("cannot write a password file in {dir}: {source}")]
    Passfile {
        /// The directory it was to go in.
        dir: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The tool could not be started.
    #[error("cannot run {tool}: {source}")]
    Spawn {
        /// Which tool.
        tool: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A located pg_dump/pg_restore pair.
#[derive(Debug, Clone)]
pub struct PgTools {
    /// Directory holding both binaries.
    pub bin_dir: PathBuf,
    /// Their major version.
    pub major: u32,
}

impl PgTools {
    /// Finds pg_dump and pg_restore: in `configured` when given, else the
    /// newest `/usr/lib/postgresql/*/bin`, else on PATH.
    pub async fn locate(configured: Option<&Path>) -> Result<PgTools, ToolError> {
        let candidates: Vec<PathBuf> = match configured {
            Some(dir) => vec![dir.to_path_buf()],
            None => {
                let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                        let bin = e.path().join("bin");
                        bin.join("pg_dump").exists().then_some((major, bin))
                    })
                    .collect();
                dirs.sort();
                let mut v: Vec<PathBuf> = dirs.into_iter().rev().map(|(_, d)| d).collect();
                if let Some(path) = std::env::var_os("PATH") {
                    v.extend(std::env::split_paths(&path).filter(|d| d.join("pg_dump").exists()));
                }
                v
            }
        };
        let Some(dir) = candidates
            .into_iter()
            .find(|d| d.join("pg_dump").exists() && d.join("pg_restore").exists())
        else {
            return Err(ToolError::NotFound(match configured {
                Some(d) => format!("pg_bin_dir {} holds no pg_dump and pg_restore", d.display()),
                None => "no pg_dump/pg_restore found in /usr/lib/postgresql/*/bin or PATH; install the PostgreSQL client or set pg_bin_dir".into(),
            }));
        };
        let major = tool_major(&dir.join("pg_dump")).await?;
        Ok(PgTools {
            bin_dir: dir,
            major,
        })
    }

    /// Fails when these tools cannot dump a server of `source_major`.
    pub fn check_source(&self, source_major: u32) -> Result<(), ToolError> {
        if self.major < source_major {
            return Err(ToolError::TooOld {
                dir: self.bin_dir.display().to_string(),
                found: self.major,
                needed: source_major,
            });
        }
        Ok(())
    }

    /// Dumps the schema of `params.database` as seen by `snapshot` into a
    /// custom-format archive at `out`.
    pub async fn dump_schema(
        &self,
        params: &ConnectParams,
        snapshot: &str,
        out: &Path,
    ) -> Result<(), ToolError> {
        let mut cmd = Command::new(self.bin_dir.join("pg_dump"));
        cmd.arg("--format=custom")
            // Sections rather than --schema-only: matview refreshes are
            // post-data and --schema-only would leave them out.
            .arg("--section=pre-data")
            .arg("--section=post-data")
            .arg(format!("--snapshot={snapshot}"))
            .arg("--no-sync")
            .arg("--file")
            .arg(out);
        // The password file sits beside the archive, in the migration's
        // 0700 directory, and lives until pg_dump has exited.
        let dir = out.parent().unwrap_or(Path::new("."));
        let _passfile = libpq_env(&mut cmd, params, dir)?;
        run(cmd, "pg_dump").await.map(|_| ())
    }

    /// The table of contents of an archive with each entry's dependencies
    /// (`pg_restore --list --verbose`: a `;\tdepends on: …` line after an
    /// entry that has any).
    pub async fn list(&self, archive: &Path) -> Result<String, ToolError> {
        let mut cmd = Command::new(self.bin_dir.join("pg_restore"));
        cmd.arg("--list").arg("--verbose").arg(archive);
        run(cmd, "pg_restore --list").await
    }

    /// The SQL of one section of an archive. `--verbose` heads every entry
    /// with `-- TOC entry <dump id>`, so the script can be cut into entries.
    pub async fn sql(
        &self,
        archive: &Path,
        section: &str,
        no_owner: bool,
    ) -> Result<String, ToolError> {
        let mut cmd = Command::new(self.bin_dir.join("pg_restore"));
        cmd.arg("--file=-")
            .arg("--verbose")
            .arg(format!("--section={section}"));
        // Tablespaces, subscriptions and security labels name things that
        // live outside this database and rarely exist on the target.
        cmd.arg("--no-tablespaces")
            .arg("--no-subscriptions")
            .arg("--no-security-labels");
        if no_owner {
            cmd.arg("--no-owner").arg("--no-privileges");
        }
        cmd.arg(archive);
        run(cmd, "pg_restore").await
    }
}

/// Points libpq of a child process at `params` through its environment.
/// The password goes into a 0600 file in `passfile_dir` named by
/// `PGPASSFILE`, never into `PGPASSWORD`; keep the returned file until the
/// child has exited.
pub fn libpq_env(
    cmd: &mut Command,
    params: &ConnectParams,
    passfile_dir: &Path,
) -> Result<Option<Passfile>, ToolError> {
    let host = match &params.host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(d) => d.display().to_string(),
    };
    cmd.env("PGHOST", host)
        .env("PGPORT", params.port.to_string())
        .env("PGUSER", &params.user)
        .env("PGDATABASE", &params.database)
        .env("PGAPPNAME", "pgmigrate-dump")
        .env(
            "PGCONNECT_TIMEOUT",
            params.connect_timeout.as_secs().max(2).to_string(),
        )
        .env(
            "PGSSLMODE",
            match params.sslmode {
                SslMode::Disable => "disable",
                SslMode::Prefer => "prefer",
                SslMode::Require => "require",
                SslMode::VerifyCa => "verify-ca",
                SslMode::VerifyFull => "verify-full",
            },
        )
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS");
    // Also when we have no password: one inherited from our own
    // environment must not reach the child.
    cmd.env_remove("PGPASSWORD");
    let passfile = match &params.password {
        Some(pw) => {
            let file = Passfile::create(passfile_dir, pw).map_err(|e| ToolError::Passfile {
                dir: passfile_dir.display().to_string(),
                source: e,
            })?;
            cmd.env("PGPASSFILE", file.path());
            Some(file)
        }
        None => None,
    };
    match &params.sslrootcert {
        Some(p) => cmd.env("PGSSLROOTCERT", p),
        None if matches!(params.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            cmd.env("PGSSLROOTCERT", "system")
        }
        None => cmd.env_remove("PGSSLROOTCERT"),
    };
    Ok(passfile)
}

async fn run(mut cmd: Command, tool: &str) -> Result<String, ToolError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd.output().await.map_err(|source| ToolError::Spawn {
        tool: tool.to_string(),
        source,
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(ToolError::Failed {
            tool: tool.to_string(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    String::from_utf8(out.stdout).map_err(|e| ToolError::Failed {
        tool: tool.to_string(),
        status: "ok".into(),
        stderr: format!("output is not UTF-8: {e}"),
    })
}

async fn tool_major(bin: &Path) -> Result<u32, ToolError> {
    let mut cmd = Command::new(bin);
    cmd.arg("--version");
    let out = run(cmd, &bin.display().to_string()).await?;
    // "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    out.split_whitespace()
        .find_map(|w| w.split('.').next().and_then(|m| m.parse::<u32>().ok()))
        .ok_or_else(|| {
            ToolError::NotFound(format!(
                "cannot read the version of {}: {out:?}",
                bin.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(cmd: &Command) -> Vec<(String, Option<String>)> {
        cmd.as_std()
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn password_goes_through_a_passfile_not_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = ConnectParams::new(Host::Tcp("db1".into()), 5432, "u", "app");
        params.password = Some(r"p:w\d".into());
        let mut cmd = Command::new("pg_dump");
        let file = libpq_env(&mut cmd, &params, dir.path()).unwrap().unwrap();
        let env = env_of(&cmd);
        // PGPASSWORD is only ever removed, never set.
        assert!(env.contains(&("PGPASSWORD".into(), None)), "{env:?}");
        let passfile = env
            .iter()
            .find(|(k, _)| k == "PGPASSFILE")
            .and_then(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(Path::new(&passfile), file.path());
        assert_eq!(
            std::fs::read_to_string(&passfile).unwrap(),
            "*:*:*:*:p\\:w\\\\d\n"
        );
        drop(file);
        assert!(!Path::new(&passfile).exists());

        params.password = None;
        let mut cmd = Command::new("pg_dump");
        assert!(libpq_env(&mut cmd, &params, dir.path()).unwrap().is_none());
        assert!(!env_of(&cmd).iter().any(|(k, _)| k == "PGPASSFILE"));
    }
}
