//! Client verbs that make one request: `status`, `list`, `get`, `token create|list|revoke`,
//! `cluster status`.

use std::path::PathBuf;
use std::time::Duration;

use agentrack_server::auth::{Role, TokenGrant};
use agentrack_server::server::{admin_token_path, create_token_in};
use agentrack_server::store::StoreConfig;
use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{ClientArgs, TokenCreateArgs};

/// The token to use: given, or the admin token of a data directory.
pub(super) fn resolve_token(token: Option<&str>, data: Option<&PathBuf>) -> anyhow::Result<String> {
    if let Some(token) = token {
        return Ok(token.to_owned());
    }
    let dir = data.cloned().unwrap_or_else(|| PathBuf::from("./agentrack-data"));
    let path = admin_token_path(&dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no token: pass --token or set AGENTRACK_TOKEN (or point --data at a data directory with {})",
            path.display()
        )
    })?;
    Ok(text.trim().to_owned())
}

pub(super) struct Api {
    http: reqwest::Client,
    pub(super) base: String,
    pub(super) token: String,
}

impl Api {
    pub(super) fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .context("cannot build the HTTP client")?,
            base: args.url.trim_end_matches('/').to_owned(),
            token: resolve_token(args.token.as_deref(), args.data.as_ref())?,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = body["error"]["code"].as_str().unwrap_or("error");
            let message = body["error"]["message"].as_str().unwrap_or("no details");
            bail!("{} {code}: {message}", status.as_u16());
        }
        Ok(body)
    }

    pub(super) async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `agentrack status`.
pub(super) async fn status(args: &ClientArgs) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let metrics = api.get("/v1/metrics", &[]).await?;
    println!(
        "executions: {} total, {} active, {} completed, {} failed, {} timed out, {} dead, {} cancelled",
        metrics["total_executions"],
        metrics["active_executions"],
        metrics["successful_executions"],
        metrics["failed_executions"],
        metrics["timeout_executions"],
        metrics["dead_executions"],
        metrics["cancelled_executions"],
    );
    println!(
        "success rate: {:.1}%   failure rate: {:.1}%",
        metrics["success_rate"].as_f64().unwrap_or(0.0) * 100.0,
        metrics["failure_rate"].as_f64().unwrap_or(0.0) * 100.0
    );
    if let Some(phases) = metrics["phase_durations_ms"].as_object().filter(|p| !p.is_empty()) {
        println!(
            "{:<20} {:>7} {:>9} {:>9} {:>9}",
            "PHASE", "COUNT", "P50 ms", "P90 ms", "P99 ms"
        );
        for (phase, stats) in phases {
            println!(
                "{:<20} {:>7} {:>9} {:>9} {:>9}",
                phase, stats["count"], stats["p50"], stats["p90"], stats["p99"]
            );
        }
    }
    Ok(())
}

/// `agentrack list`.
pub(super) async fn list(args: &ClientArgs, query: &[(&str, String)], as_json: bool) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let page = api.get("/v1/executions", query).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    let empty = Vec::new();
    let executions = page["executions"].as_array().unwrap_or(&empty);
    println!(
        "{:<37} {:<10} {:<18} {:<16} {:<12} {:<14} STARTED",
        "EXECUTION", "STATE", "PHASE", "AGENT", "USER", "THREAD"
    );
    for record in executions {
        println!(
            "{:<37} {:<10} {:<18} {:<16} {:<12} {:<14} {}",
            text(&record["execution_id"]),
            text(&record["state"]),
            text(&record["current_phase"]),
            text(&record["agent_name"]),
            text(&record["user_id"]),
            text(&record["thread_id"]),
            text(&record["started_at"]),
        );
    }
    if let Some(cursor) = page["next_cursor"].as_str() {
        println!("(more: --limit or the API's cursor={cursor})");
    }
    Ok(())
}

/// `agentrack get ID`.
pub(super) async fn get(args: &ClientArgs, id: &str) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let record = api.get(&format!("/v1/executions/{id}"), &[]).await?;
    println!("{}", serde_json::to_string_pretty(&record)?);
    Ok(())
}

/// `agentrack token create`.
pub(super) async fn token_create(args: TokenCreateArgs) -> anyhow::Result<()> {
    let role: Role = args.role.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(data) = &args.data {
        let mut grant = TokenGrant::new(role, args.tenant, args.user, args.label)?;
        grant.expires_at = args
            .expires_in
            .map(|expires_in| chrono::Duration::from_std(expires_in).map(|after| grant.created_at + after))
            .transpose()?;
        let store = StoreConfig {
            url: args.store,
            ..StoreConfig::default()
        };
        let token = create_token_in(&store, data, grant).await?;
        println!("{token}");
        return Ok(());
    }
    let client = ClientArgs {
        url: args.url,
        token: args.token,
        data: None,
    };
    let api = Api::new(&client)?;
    let created = api
        .post(
            "/v1/tokens",
            &json!({"role": role, "tenant": args.tenant, "user_id": args.user, "label": args.label,
                "expires_in_seconds": args.expires_in.map(|expires_in| expires_in.as_secs_f64())}),
        )
        .await?;
    println!("{}", text(&created["token"]));
    Ok(())
}

/// `agentrack token list`.
pub(super) async fn token_list(args: &ClientArgs, as_json: bool) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let list = api.get("/v1/tokens", &[]).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let empty = Vec::new();
    println!(
        "{:<21} {:<8} {:<14} {:<12} {:<16} {:<25} {:<25} REVOKED",
        "ID", "ROLE", "TENANT", "USER", "LABEL", "CREATED", "EXPIRES"
    );
    for token in list["tokens"].as_array().unwrap_or(&empty) {
        println!(
            "{:<21} {:<8} {:<14} {:<12} {:<16} {:<25} {:<25} {}",
            text(&token["id"]),
            text(&token["role"]),
            text(&token["tenant"]),
            text(&token["user_id"]),
            text(&token["label"]),
            text(&token["created_at"]),
            text(&token["expires_at"]),
            text(&token["revoked_at"]),
        );
    }
    Ok(())
}

/// `agentrack token revoke ID`.
pub(super) async fn token_revoke(args: &ClientArgs, id: &str) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let revoked = api
        .send(api.http.delete(format!("{}/v1/tokens/{id}", api.base)))
        .await?;
    println!("revoked {} at {}", text(&revoked["id"]), text(&revoked["revoked_at"]));
    Ok(())
}

/// `agentrack cluster status`.
pub(super) async fn cluster_status(args: &ClientArgs, as_json: bool) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let cluster = api.get("/v1/cluster", &[]).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&cluster)?);
        return Ok(());
    }
    print!("{}", cluster_table(&cluster));
    Ok(())
}

/// The text of `agentrack cluster status`.
fn cluster_table(cluster: &Value) -> String {
    use std::fmt::Write;
    let now = cluster["now_ms"].as_i64().unwrap_or_default();
    let empty = Vec::new();
    let nodes = cluster["nodes"].as_array().unwrap_or(&empty);
    let alive = nodes.iter().filter(|node| node["alive"] == true).count();
    let this = cluster["this_node"].as_str().unwrap_or_default();
    // Durations relative to the store's clock, as the leases are.
    let seconds = |ms: i64| format!("{}.{}s", ms / 1000, (ms % 1000).abs() / 100);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {alive} of {} nodes alive, {} shards, lease TTL {}",
        if cluster["clustered"] == true {
            "cluster"
        } else {
            "single node"
        },
        nodes.len(),
        cluster["shard_count"],
        seconds(cluster["lease_ttl_ms"].as_i64().unwrap_or_default()),
    );
    let _ = writeln!(
        out,
        "{:<24} {:<28} {:<6} {:>6} {:>10} {:>10}",
        "NODE", "URL", "ALIVE", "SHARDS", "LEASE LEFT", "SEEN AGO"
    );
    for node in nodes {
        let id = text(&node["node_id"]);
        let name = if id == this { format!("{id} (this)") } else { id };
        let lease = node["lease_until_ms"]
            .as_i64()
            .map_or_else(|| "-".to_owned(), |until| seconds(until - now));
        let _ = writeln!(
            out,
            "{name:<24} {:<28} {:<6} {:>6} {lease:>10} {:>10}",
            text(&node["url"]),
            if node["alive"] == true { "yes" } else { "no" },
            node["shards"].as_array().map_or(0, Vec::len),
            seconds(now - node["seen_ms"].as_i64().unwrap_or(now)),
        );
    }
    let unowned = cluster["unowned_shards"].as_array().unwrap_or(&empty);
    if unowned.is_empty() {
        let _ = writeln!(out, "every shard is served");
    } else {
        let list: Vec<String> = unowned.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "not served right now (being taken over): {}", list.join(", "));
    }
    let moves = cluster["recent_moves"].as_array().unwrap_or(&empty);
    if !moves.is_empty() {
        let _ = writeln!(out, "recent moves (newest first):");
    }
    for shard_move in moves.iter().take(20) {
        let _ = writeln!(
            out,
            "  {:>8} ago  shard {:<4} {} → {} ({})",
            seconds(now - shard_move["at_ms"].as_i64().unwrap_or(now)),
            shard_move["shard"],
            text(&shard_move["from_node"]),
            text(&shard_move["to_node"]),
            text(&shard_move["reason"]),
        );
    }
    out
}
