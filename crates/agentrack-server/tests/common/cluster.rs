//! Several real server processes on one fresh PostgreSQL database: a cluster.

use std::time::Duration;

use serde_json::Value;

use super::{TestServer, postgres};

/// The lease TTL the cluster tests run with: short, so that a failover takes seconds.
pub const LEASE_TTL: &str = "2s";

/// Nodes sharing one store.
pub struct TestCluster {
    /// The nodes, in the order they started (the first made the admin token).
    pub nodes: Vec<TestServer>,
    /// The store's URL.
    pub store: String,
    /// The admin token.
    pub admin: String,
    /// The database server's admin URL, and the database made on it.
    server: String,
    database: String,
}

impl TestCluster {
    /// `count` nodes on a fresh database with `args` (plus `--lease-ttl` [`LEASE_TTL`]), started
    /// one after the other, and balanced: every node serves its share of the shards.
    pub async fn start(count: usize, args: &[&str]) -> Self {
        Self::start_on(&postgres::admin_url(), count, args).await
    }

    /// As [`Self::start`], on a fresh database of the server at `server` (an admin URL).
    pub async fn start_on(server: &str, count: usize, args: &[&str]) -> Self {
        let (store, database) = postgres::fresh_database_on(server).await;
        let mut args: Vec<&str> = args.to_vec();
        if !args.contains(&"--lease-ttl") {
            args.extend(["--lease-ttl", LEASE_TTL]);
        }
        let first = TestServer::on_store(&store, &args, None);
        let admin = first.admin.clone();
        let mut nodes = vec![first];
        for _ in 1..count {
            nodes.push(TestServer::on_store(&store, &args, Some(&admin)));
        }
        let cluster = Self {
            nodes,
            store,
            admin,
            server: server.to_owned(),
            database,
        };
        cluster.balanced().await;
        cluster
    }

    /// Adds a node on the same store (with the same flags as the first).
    pub fn join(&mut self, args: &[&str]) -> usize {
        let mut args: Vec<&str> = args.to_vec();
        if !args.contains(&"--lease-ttl") {
            args.extend(["--lease-ttl", LEASE_TTL]);
        }
        self.nodes
            .push(TestServer::on_store(&self.store, &args, Some(&self.admin)));
        self.nodes.len() - 1
    }

    /// `GET /v1/cluster` as node `index` answers it.
    pub async fn status(&self, index: usize) -> Value {
        let (status, body) = self.nodes[index].get("/v1/cluster", &self.admin).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the running nodes all serve their share of the shards and nothing is
    /// unowned, as every running node sees it (up to 30 s: several lease rounds).
    pub async fn balanced(&self) {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut settled = true;
            for &index in &running {
                let status = self.status(index).await;
                settled &= is_balanced(&status, running.len());
            }
            if settled {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster did not balance in 30 s: {:#}",
                self.status(running[0]).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Node `index`'s id.
    pub async fn node_id(&self, index: usize) -> String {
        self.status(index).await["this_node"].as_str().unwrap().to_owned()
    }

    /// The URL of the node that owns `shard`, as node `asking` sees it.
    pub async fn owner_of(&self, asking: usize, shard: u64) -> Option<String> {
        let status = self.status(asking).await;
        status["nodes"]
            .as_array()?
            .iter()
            .find(|node| {
                node["shards"]
                    .as_array()
                    .is_some_and(|shards| shards.iter().any(|s| s.as_u64() == Some(shard)))
            })
            .and_then(|node| node["url"].as_str().map(str::to_owned))
    }
}

/// Whether `status` shows `alive` alive nodes sharing every shard fairly.
fn is_balanced(status: &Value, alive: usize) -> bool {
    let Some(nodes) = status["nodes"].as_array() else {
        return false;
    };
    let count = usize::try_from(status["shard_count"].as_u64().unwrap_or(0)).unwrap_or(0);
    let floor = count / alive.max(1);
    let live: Vec<&Value> = nodes.iter().filter(|node| node["alive"] == true).collect();
    live.len() == alive
        && status["unowned_shards"].as_array().is_some_and(Vec::is_empty)
        && live.iter().all(|node| {
            let held = node["shards"].as_array().map_or(0, Vec::len);
            held >= floor && held <= count.div_ceil(alive.max(1))
        })
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            if node.is_running() {
                // A paused node would never exit.
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &node.pid().to_string()])
                    .status();
            }
        }
        self.nodes.clear();
        postgres::drop_database_on(&self.server, &self.database);
    }
}
