//! The `[store]` section of the configuration and the `--store URL` that picks a backend.
//!
//! ```toml
//! [store]
//! url = "sqlite://./agentrack-data/agentrack.db"   # default: agentrack.db in the data directory
//! # url = "postgres://agentrack@db.internal:5432/agentrack?sslmode=require"
//! synchronous = "full"      # SQLite only: "full" or "normal"
//! pool_size = 8             # PostgreSQL only: read connections (the writer has its own)
//! ca_file = "/etc/ssl/db-ca.pem"   # PostgreSQL only: verify the server's certificate against it
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::StoreError;

/// The file name of the embedded store inside the data directory, when no URL is given.
pub const DEFAULT_SQLITE_FILE: &str = "agentrack.db";

/// Where the store lives and how it is tuned.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The store's URL (`sqlite://PATH`); `None` means the SQLite file in the data directory.
    pub url: Option<String>,
    /// How hard the embedded store syncs to disk on commit (SQLite only).
    pub synchronous: Synchronous,
    /// Read connections kept open (PostgreSQL only; the writer has its own).
    pub pool_size: usize,
    /// A PEM file of CA certificates the database server's certificate must chain to
    /// (PostgreSQL only). Without it, TLS (`sslmode=prefer` or `require`) encrypts without
    /// verifying the server, as libpq does.
    pub ca_file: Option<PathBuf>,
    /// How many shards a new shared store is made with (PostgreSQL only; fixed once the store
    /// exists — a store that already holds data keeps its count). Each node of a cluster owns
    /// some of them.
    pub shards: u16,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            synchronous: Synchronous::default(),
            pool_size: 8,
            ca_file: None,
            shards: 64,
        }
    }
}

/// How hard SQLite syncs to disk on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged write survives a power cut.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a process crash, may lose the latest commits on a
    /// power cut. Faster.
    Normal,
}

/// A store URL split into its scheme and the rest, which the backend of that scheme reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    scheme: String,
    rest: String,
    text: String,
}

impl StoreUrl {
    /// Parses `SCHEME://REST`.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidUrl`] when there is no `://`.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(StoreError::InvalidUrl {
                url: redact(text),
                reason: "expected SCHEME://..., e.g. sqlite://./agentrack-data/agentrack.db".into(),
            });
        };
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            rest: rest.to_owned(),
            text: text.to_owned(),
        })
    }

    /// The URL of the default store: the SQLite file in `data`.
    pub fn default_in(data: &Path) -> Self {
        let path = data.join(DEFAULT_SQLITE_FILE);
        Self {
            scheme: "sqlite".into(),
            rest: path.display().to_string(),
            text: format!("sqlite://{}", path.display()),
        }
    }

    /// The scheme, lower case (`sqlite`).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// What follows `://`.
    pub fn rest(&self) -> &str {
        &self.rest
    }

    /// What follows `://`, read as a file path.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.rest)
    }

    /// The whole URL as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The URL with any password replaced, fit for logs and errors.
    pub fn redacted(&self) -> String {
        redact(&self.text)
    }
}

/// Replaces the password of `user:password@` in a URL.
fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => text.to_owned(),
        },
        None => text.to_owned(),
    }
}

impl StoreConfig {
    /// The URL to open: the configured one, or the SQLite file in `data`.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidUrl`] for a malformed URL.
    pub fn url(&self, data: &Path) -> Result<StoreUrl, StoreError> {
        match &self.url {
            Some(text) => StoreUrl::parse(text),
            None => Ok(StoreUrl::default_in(data)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_splits_into_scheme_and_rest_and_defaults_to_the_data_dir() {
        let url = StoreUrl::parse("SQLite:///var/lib/agentrack/a.db").unwrap();
        assert_eq!((url.scheme(), url.rest()), ("sqlite", "/var/lib/agentrack/a.db"));
        let url = StoreConfig::default().url(Path::new("data")).unwrap();
        assert_eq!(url.path(), Path::new("data").join(DEFAULT_SQLITE_FILE));
        let error = StoreUrl::parse("agentrack.db").unwrap_err();
        assert!(error.to_string().contains("expected SCHEME://"), "{error}");
    }

    #[test]
    fn passwords_never_reach_logs() {
        let url = StoreUrl::parse("postgres://bob:secret@db:5432/agentrack").unwrap();
        assert_eq!(url.redacted(), "postgres://bob:***@db:5432/agentrack");
        assert_eq!(redact("postgres://bob@db/x"), "postgres://bob@db/x");
    }
}
