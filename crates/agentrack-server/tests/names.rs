//! Names are validated at the server's boundary (issue 15, item 9), attacked on the real binary:
//! a tenant with `/` (which made its breakers visible to the tenant before the slash), a newline
//! (which joined hub keys), invisible characters, over-long names. Each is refused with 422
//! naming the field, what is wrong and the rule, and nothing is stored. A tenant stored before
//! the rule (written straight into the store) still sees only its own breakers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod openapi;

use std::process::Command;

use common::{BIN, TestServer};
use serde_json::{Value, json};

/// The names every field is attacked with, and what the refusal must say.
const BAD: &[(&str, &str)] = &[
    ("line\nbreak", "non-printable character U+000A"),
    ("nul\u{0}", "non-printable character U+0000"),
    ("tab\tbed", "non-printable character U+0009"),
    ("rtl\u{202E}olleh", "non-printable character U+202E"),
    ("zero\u{200B}width", "non-printable character U+200B"),
    (" padded", "white space"),
    ("padded ", "white space"),
];

fn long() -> String {
    "n".repeat(257)
}

fn assert_refused(status: u16, body: &Value, field: &str, problem: &str) {
    assert_eq!(status, 422, "{field}: {body}");
    assert_eq!(body["error"]["code"], "invalid_field", "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(problem), "{field}: {message}");
    let rule = body["error"]["rule"].as_str().unwrap();
    assert!(rule.contains("1 to 256 characters of printable characters"), "{rule}");
    assert!(message.contains(rule), "the message states the rule: {message}");
}

async fn executions(server: &TestServer) -> usize {
    let (status, page) = server.get("/v1/executions?limit=1000", &server.admin).await;
    assert_eq!(status, 200, "{page}");
    page["executions"].as_array().unwrap().len()
}

#[tokio::test]
async fn bad_names_are_refused_with_the_field_and_the_rule_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let agent = server.token("agent", "acme", None).await;
    let valid = json!({"agent_name": "a", "thread_id": "t", "user_id": "u"});
    let before = executions(&server).await;
    let schemas = openapi::Schemas::published(&server).await;

    let mut attacks: Vec<(String, String)> = BAD.iter().map(|(n, p)| ((*n).to_owned(), (*p).to_owned())).collect();
    attacks.push((long(), "257 characters long".to_owned()));
    for (name, problem) in &attacks {
        for field in ["agent_name", "thread_id", "user_id", "tenant"] {
            let mut body = valid.clone();
            body[field] = json!(name);
            let (status, answer) = server.post("/v1/executions", &server.admin, body).await;
            assert_refused(status, &answer, field, problem);
            schemas.assert_matches("Error", &answer, "a refused name");
        }
        let (status, answer) = server
            .post("/v1/tokens", &server.admin, json!({"role": "agent", "tenant": name}))
            .await;
        assert_refused(status, &answer, "tenant", problem);
        let (status, answer) = server
            .post(
                "/v1/tokens",
                &server.admin,
                json!({"role": "viewer", "tenant": "acme", "user_id": name}),
            )
            .await;
        assert_refused(status, &answer, "user_id", problem);
    }
    // A slash separates a breaker key's tenant from its name: refused in both.
    let (status, answer) = server
        .post(
            "/v1/tokens",
            &server.admin,
            json!({"role": "agent", "tenant": "acme/eu"}),
        )
        .await;
    assert_refused(status, &answer, "tenant", "contains '/'");
    assert!(answer["error"]["rule"].as_str().unwrap().contains("without '/'"));
    let mut body = valid.clone();
    body["tenant"] = json!("acme/eu");
    let (status, answer) = server.post("/v1/executions", &server.admin, body).await;
    assert_refused(status, &answer, "tenant", "contains '/'");
    for path in ["a%2Fb", "line%0Abreak", "rtl%E2%80%AEx", &"b".repeat(257)] {
        let (status, answer) = server
            .post(&format!("/v1/breakers/{path}/acquire"), &agent, json!({}))
            .await;
        assert_eq!(status, 422, "{path}: {answer}");
        assert_eq!(answer["error"]["field"], "name", "{answer}");
    }
    // Slashes are fine where they are no separator.
    let (status, created) = server
        .post(
            "/v1/executions",
            &agent,
            json!({"agent_name": "team/planner", "thread_id": "thread/42", "user_id": "ü@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");

    assert_eq!(
        executions(&server).await,
        before + 1,
        "only the valid execution is stored"
    );
    let (_, listed) = server.get("/v1/breakers", &server.admin).await;
    assert_eq!(listed["breakers"], json!([]), "no breaker was made: {listed}");
}

#[tokio::test]
async fn the_offline_token_command_refuses_bad_names_too() {
    let server = TestServer::start().await;
    let data = server.data().to_str().unwrap().to_owned();
    for tenant in ["acme/eu", "line\nbreak"] {
        let output = Command::new(BIN)
            .args([
                "token", "create", "--role", "agent", "--tenant", tenant, "--data", &data,
            ])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{tenant:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("tenant is not a valid name"), "{stderr}");
    }
}

/// Writes an agent token of `tenant` straight into a SQLite store, as a version without the
/// names' rule could have.
fn legacy_token(db: &std::path::Path, token: &str, tenant: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    conn.execute(
        "INSERT INTO tokens (token_hash, role, tenant, user_id, label, created_at_ms) VALUES (?1, 'agent', ?2, NULL, NULL, 0)",
        rusqlite::params![agentrack_server::auth::hash_token(token), tenant],
    )
    .unwrap();
}

#[tokio::test]
async fn a_tenant_with_a_slash_stored_before_the_rule_sees_and_shows_only_its_own_breakers() {
    let server = TestServer::start().await;
    // Well-formed, so that it reaches the store (a malformed token is refused before).
    let legacy = &format!("agt_{}", "ae".repeat(32));
    legacy_token(&server.data().join("agentrack.db"), legacy, "acme/eu");
    let acme = server.token("agent", "acme", None).await;

    // acme/eu trips its breaker "x" open (the name acme would see as "eu/x" under a split on
    // the first '/').
    let (status, grant) = server.post("/v1/breakers/x/acquire", legacy, json!({})).await;
    assert_eq!(status, 200, "{grant}");
    let (status, _) = server
        .post(
            "/v1/breakers/x/record",
            legacy,
            json!({"permit": grant["permit"], "outcome": "failure"}),
        )
        .await;
    assert_eq!(status, 200);

    let (_, mine) = server.get("/v1/breakers", &acme).await;
    assert_eq!(mine["breakers"], json!([]), "acme sees nothing of acme/eu: {mine}");
    let (_, theirs) = server.get("/v1/breakers", legacy).await;
    let theirs = theirs["breakers"].as_array().unwrap();
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["tenant"], "acme/eu");
    assert_eq!(theirs[0]["name"], "x");
    let (_, all) = server.get("/v1/breakers", &server.admin).await;
    assert_eq!(all["breakers"][0]["tenant"], "acme/eu", "{all}");
    assert_eq!(all["breakers"][0]["name"], "x", "{all}");
}
