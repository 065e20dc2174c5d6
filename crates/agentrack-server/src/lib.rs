//! The agentrack server: the [`agentrack`] core behind an HTTP and WebSocket API, with a
//! durable embedded store, tokens with per-tenant and per-user isolation, and metrics.
//!
//! # Layout
//!
//! - [`server`]: start-up (store → tracker → pipeline → monitor → listener) and shutdown.
//! - [`store`]: the narrow store interface, the one place a `--store` URL becomes a backend
//!   ([`store::open`]), and the group-commit [`Pipeline`](store::pipeline::Pipeline) that makes
//!   every change durable before it is acknowledged or broadcast.
//! - [`auth`]: tokens, roles and the [`Scope`](auth::Scope) every query and subscription is
//!   filtered through.
//! - [`api`]: one module per resource, and the route table the router and `/openapi.json` are
//!   built from.
//! - [`http`]: the listener's bounds: header and body timeouts, connection and request limits.
//! - [`ws`], [`hub`] and [`agui`]: the event stream, its per-user fan-out, and its AG-UI view.
//! - [`metrics`]: scoped counters and the Prometheus text format.
//! - [`quotas`]: per-tenant and per-token quotas (429 `quota_exceeded` past them).
//! - [`dashboard`]: the web dashboard at `/`, its assets compiled into the binary.
//! - [`fuzzing`]: the request-body parsers and stored-row decoders as the fuzz targets drive them.
//! - [`files`]: the data directory and the files in it, private to the server's user.
//!
//! The `agentrack` binary (`serve`, the command-line client, `agentrack load`) is the default
//! `cli` feature; with `default-features = false` this library embeds the server without the
//! dependencies only the binary needs.
//!
//! # Example
//!
//! ```no_run
//! use agentrack_server::config::ServerConfig;
//! use agentrack_server::server::Server;
//!
//! # async fn run() -> Result<(), agentrack_server::server::ServerError> {
//! let server = Server::bind(ServerConfig::default()).await?;
//! println!("listening on http://{}", server.local_addr()?);
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod agui;
pub mod api;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod cursor;
pub mod dashboard;
pub mod files;
pub mod fuzzing;
pub mod housekeeping;
pub mod http;
pub mod hub;
pub mod json_size;
pub mod metrics;
pub mod names;
pub mod permits;
pub mod quotas;
pub mod serialized_event;
pub mod server;
pub mod store;
pub mod ws;
