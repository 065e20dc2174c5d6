//! Periodic upkeep while the server runs: expired breaker permits are given back every second,
//! named breakers idle for `quotas.breaker_idle` are dropped (checked every quarter of it, at
//! most every minute), and finished executions past retention are purged from the store every
//! `purge_interval` (the first purge right at start-up).

use std::time::Duration;

use crate::app::AppState;

/// How long finished executions stay in the store, and how often that is enforced.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Finished executions older than this are purged.
    pub keep: Duration,
    /// How often the purge runs.
    pub interval: Duration,
}

/// Runs until the server shuts down.
pub async fn run(state: AppState, retention: Retention) {
    let mut permits = tokio::time::interval(Duration::from_secs(1));
    let mut purge = tokio::time::interval(retention.interval.max(Duration::from_secs(1)));
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sweep_every = (state.quotas.config.breaker_idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(60));
    let mut breakers = tokio::time::interval(sweep_every);
    breakers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            _ = permits.tick() => { state.permits.expire(); }
            _ = breakers.tick() => { state.quotas.evict_idle_breakers(&state.shards.locals()); }
            _ = purge.tick() => purge_expired(&state, retention.keep).await,
        }
    }
}

async fn purge_expired(state: &AppState, keep: Duration) {
    let Some(before) = chrono::Duration::from_std(keep)
        .ok()
        .and_then(|age| chrono::Utc::now().checked_sub_signed(age))
    else {
        return;
    };
    match state.pipeline.purge(before).await {
        Ok(purged) if purged.executions > 0 => tracing::info!(
            executions = purged.executions,
            events = purged.events,
            "purged finished executions past retention"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "retention purge failed"),
    }
}
