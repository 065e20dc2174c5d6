//! The command-line client against a running server.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{BIN, GOLDEN_EVENTS, TestServer};
use serde_json::Value;

fn agentrack(server: &TestServer, token: &str, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .env("AGENTRACK_URL", &server.url)
        .env("AGENTRACK_TOKEN", token)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "agentrack {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn list_and_get_show_what_the_api_shows() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "t1", None).await;
    let first = server.create(&agent, "researcher", "thread-1", "alice").await;
    let second = server.create(&agent, "writer", "thread-2", "bob").await;
    server.golden_path(&agent, &second).await;

    let table = agentrack(&server, &agent, &["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("EXECUTION"), "{table}");
    assert!(lines[1].starts_with(&second) && lines[1].contains("completed") && lines[1].contains("writer"));
    assert!(lines[2].starts_with(&first) && lines[2].contains("pending") && lines[2].contains("researcher"));

    let listed: Value = serde_json::from_str(&agentrack(&server, &agent, &["list", "--json"])).unwrap();
    let (_, api) = server.get("/v1/executions?limit=50", &agent).await;
    assert_eq!(listed, api);
    let filtered = agentrack(&server, &agent, &["list", "--state", "completed"]);
    assert!(filtered.contains(&second) && !filtered.contains(&first));

    let shown: Value = serde_json::from_str(&agentrack(&server, &agent, &["get", &second])).unwrap();
    let (_, api) = server.get(&format!("/v1/executions/{second}"), &agent).await;
    assert_eq!(shown, api);
    assert_eq!(shown["phase_history"].as_array().unwrap().len(), 9);

    let status = agentrack(&server, &agent, &["status"]);
    assert!(status.contains("2 total, 1 active, 1 completed"), "{status}");

    // Errors are reported, with a failing exit status.
    let missing = Command::new(BIN)
        .args(["get", "exec_0123456789abcdef0123456789abcdef"])
        .env("AGENTRACK_URL", &server.url)
        .env("AGENTRACK_TOKEN", &agent)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404 not_found"));
}

#[tokio::test]
async fn watch_prints_the_golden_path_live() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "t1", None).await;
    let mut watch = Command::new(BIN)
        .args(["watch", "--thread", "thread-7"])
        .env("AGENTRACK_URL", &server.url)
        .env("AGENTRACK_TOKEN", &agent)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    let lines_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(("out", line));
        }
    });
    let stderr = watch.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(("err", line));
        }
    });
    let (stream, line) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(stream, "err");
    assert!(line.starts_with("watching "), "{line}");

    let id = server.create(&agent, "researcher", "thread-7", "alice").await;
    let noise = server.create(&agent, "researcher", "elsewhere", "alice").await;
    server.golden_path(&agent, &id).await;
    server.golden_path(&agent, &noise).await;

    let mut printed = Vec::new();
    while let Ok((stream, line)) = rx.recv_timeout(Duration::from_secs(5)) {
        if stream == "out" {
            let done = line.contains("execution_completed");
            printed.push(line);
            if done {
                break;
            }
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let kinds: Vec<&str> = printed
        .iter()
        .map(|line| line.split_whitespace().nth(2).unwrap_or(""))
        .filter(|kind| *kind != "heartbeat")
        .collect();
    assert_eq!(kinds, GOLDEN_EVENTS, "{printed:#?}");
    assert!(printed.iter().all(|line| line.contains(&id) && !line.contains(&noise)));
    assert!(printed.iter().any(|line| line.contains("tool get_forecast")));
}

#[tokio::test]
async fn token_create_works_against_a_server_and_a_data_directory() {
    let server = TestServer::start().await;
    let via_server = agentrack(
        &server,
        &server.admin,
        &[
            "token", "create", "--role", "viewer", "--tenant", "t1", "--user", "alice",
        ],
    );
    let viewer = via_server.trim();
    assert!(viewer.starts_with("agt_"));
    assert_eq!(server.get("/v1/executions", viewer).await.0, 200);
    assert_eq!(
        server.post("/v1/executions", viewer, serde_json::json!({})).await.0,
        403
    );

    let output = Command::new(BIN)
        .args(["token", "create", "--role", "agent", "--tenant", "t1", "--data"])
        .arg(server.data())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let agent = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    // The running server finds a token written straight into its store.
    let id = server.create(&agent, "researcher", "thread", "alice").await;
    assert_eq!(server.get(&format!("/v1/executions/{id}"), &agent).await.0, 200);

    let refused = Command::new(BIN)
        .args(["token", "create", "--role", "root", "--tenant", "t1", "--data"])
        .arg(server.data())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("valid values: admin, agent, viewer, metrics"));
}

#[tokio::test]
async fn token_list_and_revoke_work_against_a_server() {
    let server = TestServer::start().await;
    let made = agentrack(
        &server,
        &server.admin,
        &[
            "token",
            "create",
            "--role",
            "agent",
            "--tenant",
            "t1",
            "--label",
            "ci-runner",
            "--expires-in",
            "2h",
        ],
    );
    let agent = made.trim().to_owned();
    assert_eq!(server.get("/v1/executions", &agent).await.0, 200);
    let table = agentrack(&server, &server.admin, &["token", "list"]);
    let line = table
        .lines()
        .find(|line| line.contains("ci-runner"))
        .unwrap_or_else(|| panic!("no ci-runner in\n{table}"));
    assert!(!table.contains(&agent), "the list never shows a token");
    let id = line.split_whitespace().next().unwrap().to_owned();
    assert!(id.starts_with("tok_"), "{line}");
    // Created, and expiring in two hours; not revoked.
    assert!(line.trim_end().ends_with('-'), "{line}");
    let listed: Value = serde_json::from_str(&agentrack(&server, &server.admin, &["token", "list", "--json"])).unwrap();
    let entry = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert!(entry["expires_at"].is_string(), "{entry}");

    let revoked = agentrack(&server, &server.admin, &["token", "revoke", &id]);
    assert!(revoked.starts_with(&format!("revoked {id} at ")), "{revoked}");
    assert_eq!(server.get("/v1/executions", &agent).await.0, 401);
    // The last admin token stays, with the server's reason.
    let admin_id = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let output = Command::new(BIN)
        .args(["token", "revoke", &admin_id])
        .env("AGENTRACK_URL", &server.url)
        .env("AGENTRACK_TOKEN", &server.admin)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("409 last_admin_token"));
}
