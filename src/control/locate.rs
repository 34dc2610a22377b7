//! Where `show --config` and `list --config` look: the migration name and
//! state directory of a config file, read without its secrets. An operator
//! looking at progress has the config's path at hand but not the source's
//! password in the environment, and needs neither connection.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{MigrationName, DEFAULT_STATE_DIR, STATE_DIR_ENV};

/// Why a config could not be used to find a migration.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The file is not TOML, or its `name`/`state_dir` have the wrong type.
    #[error("config {path}: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// `name` is not a valid migration name.
    #[error("config {path}: name {name:?} is not a valid migration name")]
    Name {
        /// The config file.
        path: PathBuf,
        /// The name as written.
        name: String,
    },
}

/// The two keys that say where a migration's state lives; every other key
/// is left to `run`/`validate`, which check the whole file.
#[derive(Deserialize)]
struct Keys {
    name: String,
    #[serde(default)]
    state_dir: Option<String>,
}

/// A migration as its config places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The config's `name`.
    pub name: MigrationName,
    /// The config's `state_dir` as `run` resolves it: relative to the
    /// config's directory; when unset, `$PGMIGRATE_STATE_DIR`, else the
    /// default.
    pub state_dir: PathBuf,
}

/// Reads `name` and `state_dir` from the config at `path`.
pub fn from_config(path: &Path) -> Result<Located, LocateError> {
    let text = std::fs::read_to_string(path).map_err(|error| LocateError::Read {
        path: path.to_owned(),
        error,
    })?;
    let keys: Keys = toml::from_str(&text).map_err(|e| LocateError::Syntax {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })?;
    let name = MigrationName::new(&keys.name).map_err(|_| LocateError::Name {
        path: path.to_owned(),
        name: keys.name.clone(),
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    let state_dir = match keys.state_dir.filter(|s| !s.is_empty()) {
        Some(dir) => base.join(dir),
        None => std::env::var_os(STATE_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
    };
    Ok(Located { name, state_dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_and_state_dir_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "name = \"bench-move\"\nstate_dir = \"state\"\n[source]\npassword_env = \"UNSET_VAR\"\n",
        )
        .unwrap();
        let found = from_config(&path).unwrap();
        assert_eq!(found.name.as_str(), "bench-move");
        assert_eq!(found.state_dir, dir.path().join("state"));

        std::fs::write(&path, "name = \"m\"\nstate_dir = \"/abs/dir\"\n").unwrap();
        assert_eq!(from_config(&path).unwrap().state_dir, Path::new("/abs/dir"));
    }

    #[test]
    fn bad_files_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        let e = from_config(&path).unwrap_err();
        assert!(matches!(e, LocateError::Read { .. }), "{e}");
        std::fs::write(&path, "state_dir = 3\n").unwrap();
        let e = from_config(&path).unwrap_err().to_string();
        assert!(e.contains("m.toml"), "{e}");
        std::fs::write(&path, "name = \"-bad\"\n").unwrap();
        let e = from_config(&path).unwrap_err().to_string();
        assert!(e.contains("not a valid migration name"), "{e}");
    }
}
