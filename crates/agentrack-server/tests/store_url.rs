//! `--store URL` picks where the store lives; a URL no backend takes is refused at start-up.

mod common;

use std::process::Command;

use common::{BIN, TestServer};
use serde_json::json;

#[tokio::test]
async fn a_sqlite_url_puts_the_store_where_it_says_and_a_restart_finds_it_there() {
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("nested").join("tracker.db");
    let url = format!("sqlite://{}", file.display());
    let mut server = TestServer::start_with(&["--store", &url]).await;
    let agent = server.token("agent", "acme", None).await;
    let id = server.create(&agent, "researcher", "thread-1", "alice").await;
    assert!(file.exists(), "the store is at {}", file.display());
    assert!(
        !server.data().join("agentrack.db").exists(),
        "and not in the data directory"
    );
    server.terminate();
    server.restart();
    let (status, record) = server.get(&format!("/v1/executions/{id}"), &server.admin).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["state"], json!("pending"));
}

#[test]
fn an_unknown_store_scheme_is_refused_naming_the_valid_ones() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "mysql://db/agentrack",
            "--data",
        ])
        .arg(data.path())
        .env_remove("AGENTRACK_CONFIG")
        .env_remove("AGENTRACK_STORE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown scheme \"mysql\"; valid: sqlite://"),
        "{stderr}"
    );
    assert!(!data.path().join("admin.token").exists(), "nothing was bootstrapped");
}
