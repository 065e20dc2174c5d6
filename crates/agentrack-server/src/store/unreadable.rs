//! Stored rows that cannot be decoded (written by an older version, damaged, or nested past
//! what the decoder reads): reads skip them instead of failing, so one bad row never breaks a
//! tenant's list. Each skip is counted (`agentrack_store_unreadable_rows_total`) and each row
//! logged once per process.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use agentrack::{ExecutionId, ExecutionRecord};

use super::query::Page;

static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// The rows logged so far; past this many, further ones are counted only.
const MAX_LOGGED: usize = 1024;

static LOGGED: LazyLock<parking_lot::Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// How many times a read skipped an unreadable row since the process started.
pub fn skipped() -> &'static AtomicU64 {
    &SKIPPED
}

/// Counts a skipped row, and logs it the first time.
pub(super) fn skip(execution_id: &str, error: &dyn std::fmt::Display) {
    SKIPPED.fetch_add(1, Ordering::Relaxed);
    let mut logged = LOGGED.lock();
    if logged.len() < MAX_LOGGED && logged.insert(execution_id.to_owned()) {
        tracing::error!(%execution_id, %error, "skipping an unreadable stored execution (logged once)");
    }
}

/// A page of a list from its rows (`execution_id`, record JSON) as fetched: at most `limit`
/// decoded, any row more meaning there is a next page. The cursor is the last row's id even
/// when that row was skipped, so a page of skipped rows never ends the list early.
pub(crate) fn page<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>, limit: usize) -> Page {
    let mut records = Vec::new();
    let mut last: Option<&str> = None;
    let mut more = false;
    for (fetched, (id, text)) in rows.into_iter().enumerate() {
        if fetched == limit {
            more = true;
            break;
        }
        last = Some(id);
        match serde_json::from_str::<ExecutionRecord>(text) {
            Ok(record) => records.push(record),
            Err(error) => skip(id, &error),
        }
    }
    let next_cursor = if more {
        last.and_then(|id| id.parse::<ExecutionId>().ok())
    } else {
        None
    };
    Page { records, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_skips_unreadable_rows_and_still_leads_on() {
        let tracker = agentrack::Tracker::new();
        let change = tracker
            .create(agentrack::NewExecution::new("a", "t", "u"))
            .expect("created");
        let good = tracker.get(change.execution_id).expect("kept");
        let text = serde_json::to_string(&good).expect("encoded");
        let bad_id = ExecutionId::new().to_string();
        let good_id = good.execution_id.to_string();
        let before = skipped().load(Ordering::Relaxed);
        // Only the unreadable row fits the page: the list goes on past it.
        let page1 = page([(bad_id.as_str(), "[[["), (good_id.as_str(), text.as_str())], 1);
        assert!(page1.records.is_empty());
        assert_eq!(page1.next_cursor.map(|id| id.to_string()), Some(bad_id.clone()));
        let page2 = page([(bad_id.as_str(), "[[["), (good_id.as_str(), text.as_str())], 10);
        assert_eq!(page2.records.len(), 1);
        assert_eq!(page2.next_cursor, None);
        assert_eq!(skipped().load(Ordering::Relaxed) - before, 2);
    }
}
