//! The one place a store URL becomes a backend.

use std::path::Path;
use std::sync::Arc;

use super::baseline::RawInserts;
use super::{Store, StoreConfig, StoreError, StoreFuture, StoreUrl, postgres, sqlite};

/// Opens a backend's store (creating and migrating its schema).
type OpenStore = fn(StoreUrl, StoreConfig) -> StoreFuture<'static, Arc<dyn Store>>;

/// Opens a backend's raw-insert baseline for the store bench (blocking).
type OpenRaw = fn(&StoreUrl, &StoreConfig) -> Result<Box<dyn RawInserts>, StoreError>;

/// One backend: its URL scheme and how to open it.
pub(super) struct Backend {
    /// The URL scheme.
    scheme: &'static str,
    /// Opens the store.
    open: OpenStore,
    /// Opens the store bench's baseline.
    pub(super) open_raw: OpenRaw,
}

/// Every backend. Adding one is a file of its own and a row here.
const BACKENDS: &[Backend] = &[
    Backend {
        scheme: "sqlite",
        open: sqlite::open,
        open_raw: sqlite::open_raw,
    },
    Backend {
        scheme: "postgres",
        open: postgres::open,
        open_raw: postgres::open_raw,
    },
    Backend {
        scheme: "postgresql",
        open: postgres::open,
        open_raw: postgres::open_raw,
    },
];

/// The backend of `url`'s scheme.
pub(super) fn backend(url: &StoreUrl) -> Result<&'static Backend, StoreError> {
    BACKENDS
        .iter()
        .find(|backend| backend.scheme == url.scheme())
        .ok_or_else(|| {
            let valid: Vec<String> = BACKENDS
                .iter()
                .map(|backend| format!("{}://", backend.scheme))
                .collect();
            StoreError::InvalidUrl {
                url: url.redacted(),
                reason: format!("unknown scheme {:?}; valid: {}", url.scheme(), valid.join(", ")),
            }
        })
}

/// Opens (creating and migrating if needed) the store that `config` names, or the SQLite file in
/// `data` when it names none.
///
/// # Errors
///
/// [`StoreError::InvalidUrl`] for a malformed URL or an unknown scheme (the message lists the
/// valid ones); otherwise whatever the backend reports.
pub async fn open(config: &StoreConfig, data: &Path) -> Result<Arc<dyn Store>, StoreError> {
    let url = config.url(data)?;
    let backend = backend(&url)?;
    tracing::info!(store = %url.redacted(), "opening the store");
    (backend.open)(url, config.clone()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_scheme_is_refused_with_the_valid_ones() {
        let config = StoreConfig {
            url: Some("mysql://db/agentrack".into()),
            ..StoreConfig::default()
        };
        let error = open(&config, Path::new(".")).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown scheme \"mysql\"; valid: sqlite://, postgres://, postgresql://"),
            "{error}"
        );
    }
}
