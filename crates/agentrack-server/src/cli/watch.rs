//! `agentrack watch`: follow events live, one coloured line each, resuming after a dropped
//! connection from the `cursor` of the last event seen (on any node of a cluster).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::ClientArgs;
use super::client::resolve_token;

pub(super) struct Options {
    pub(super) thread: Option<String>,
    pub(super) execution: Option<String>,
    pub(super) since: Option<String>,
    pub(super) json: bool,
}

/// Consecutive failed connection attempts before giving up.
const MAX_FAILURES: u32 = 5;

fn events_url(base: &str, options: &Options, since: Option<&str>) -> anyhow::Result<String> {
    let base = base.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        bail!("the URL must start with http:// or https://, not {base:?}");
    };
    let mut query = Vec::new();
    if let Some(thread) = &options.thread {
        query.push(format!("thread_id={}", encode(thread)));
    }
    if let Some(execution) = &options.execution {
        query.push(format!("execution_id={}", encode(execution)));
    }
    if let Some(since) = since {
        query.push(format!("since={}", encode(since)));
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    Ok(format!("{ws}/v1/events{query}"))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs until interrupted or the server goes away for good.
pub(super) async fn run(args: &ClientArgs, options: Options) -> anyhow::Result<()> {
    let token = resolve_token(args.token.as_deref(), args.data.as_ref())?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut last_cursor = options.since.clone();
    let mut failures = 0;
    loop {
        let url = events_url(&args.url, &options, last_cursor.as_deref())?;
        let mut request = url.as_str().into_client_request().context("invalid URL")?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).context("invalid token")?,
        );
        let (mut socket, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                bail!("the server refused the stream: {} {body}", response.status());
            }
            Err(error) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Err(error).context(format!("cannot connect to {}", args.url));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        failures = 0;
        eprintln!("watching {url} (Ctrl-C to stop)");
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    let Ok(event) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(cursor) = event["cursor"].as_str() {
                        last_cursor = Some(cursor.to_owned());
                    }
                    if options.json {
                        println!("{text}");
                    } else {
                        println!("{}", format_event(&event, colour));
                    }
                }
                Ok(Message::Close(frame)) => {
                    if let Some(frame) = frame {
                        eprintln!(
                            "stream closed by the server: {} {}",
                            u16::from(frame.code),
                            frame.reason
                        );
                    }
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a line shows after the common columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    Created,
    Lifecycle,
    Heartbeat,
    AgentState,
    Phases,
    Reasoning,
    Tool,
    AgentError,
    Finished,
    Fields,
    Breaker,
    None,
}

/// How one kind of event is shown: its detail and the ANSI colour of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Style {
    detail: Detail,
    paint: &'static str,
}

const PLAIN: &str = "0";
const DIM: &str = "2";
const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const CYAN: &str = "36";

/// How each kind of event the server sends is shown, by its `type`; `None` for a kind this
/// build does not know (a newer server's).
fn style(kind: &str) -> Option<Style> {
    let (detail, paint) = match kind {
        "execution_created" => (Detail::Created, PLAIN),
        "state_changed" => (Detail::Lifecycle, PLAIN),
        "heartbeat" => (Detail::Heartbeat, DIM),
        "agent_state_updated" => (Detail::AgentState, CYAN),
        "phase_changed" => (Detail::Phases, PLAIN),
        "agent_started" => (Detail::Phases, CYAN),
        "agent_thinking" => (Detail::Reasoning, CYAN),
        "tool_executing" => (Detail::Tool, CYAN),
        "agent_completed" => (Detail::Phases, GREEN),
        "agent_error" => (Detail::AgentError, RED),
        "execution_completed" => (Detail::Finished, GREEN),
        "execution_failed" | "execution_cancelled" | "timed_out" | "dead" => (Detail::Finished, RED),
        "record_edited" => (Detail::Fields, PLAIN),
        "breaker_opened" | "breaker_half_open" | "breaker_closed" => (Detail::Breaker, YELLOW),
        _ => return None,
    };
    Some(Style { detail, paint })
}

/// One line for one event.
pub(super) fn format_event(event: &Value, colour: bool) -> String {
    let kind = event["type"].as_str().unwrap_or("?");
    let time = event["timestamp"]
        .as_str()
        .and_then(|t| t.get(11..23))
        .unwrap_or("--:--:--.---");
    let s = |key: &str| event[key].as_str().unwrap_or("-");
    let transition = &event["transition"];
    let phases = || {
        format!(
            "{} → {}",
            transition["from_phase"].as_str().unwrap_or("?"),
            transition["to_phase"].as_str().unwrap_or("?")
        )
    };
    let (detail, paint) = match style(kind) {
        Some(Style { detail, paint }) => (detail, paint),
        // A kind from a newer server: its name alone says what it is.
        None => (Detail::None, PLAIN),
    };
    let detail = match detail {
        Detail::Created => format!("created, timeout {}s", event["timeout_seconds"]),
        Detail::Lifecycle => format!("{} → {}", s("from"), s("to")),
        Detail::Heartbeat => format!("heartbeat #{}", event["heartbeat_count"]),
        Detail::AgentState => format!("warnings {}, errors {}", event["warning_count"], event["error_count"]),
        Detail::Phases => phases(),
        Detail::Reasoning => format!("{}: {}", phases(), s("reasoning")),
        Detail::Tool => format!("{}: tool {}", phases(), s("tool_name")),
        Detail::AgentError => format!("{}: {}", phases(), s("error")),
        Detail::Finished => match event["error"].as_str() {
            Some(error) => format!("{}: {error}", s("state")),
            None => s("state").to_owned(),
        },
        Detail::Fields => {
            let fields: Vec<&str> = event["fields"]
                .as_array()
                .map(|fields| fields.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("fields {}", fields.join(", "))
        }
        Detail::Breaker => format!("{} {}", s("breaker"), s("state")),
        Detail::None => String::new(),
    };
    let name = if colour {
        format!("\x1b[{paint}m{kind:<20}\x1b[0m")
    } else {
        format!("{kind:<20}")
    };
    format!(
        "{time}  #{:<6} {name} {:<37} {:<14} {:<12} {detail}",
        event["global_seq"],
        s("execution_id"),
        s("agent_name"),
        s("thread_id"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_event_has_its_own_style() {
        for kind in agentrack::EventKind::NAMES {
            assert!(style(kind).is_some(), "{kind} is shown as an unknown kind");
        }
        assert_eq!(style("from_a_newer_server"), None);
    }

    #[test]
    fn a_line_names_the_kind_and_its_detail() {
        let event = serde_json::json!({"type": "record_edited", "global_seq": 7, "execution_id": "e",
            "agent_name": "a", "thread_id": "t", "timestamp": "2026-01-01T12:00:00.123456Z",
            "fields": ["state", "error"]});
        let line = format_event(&event, false);
        assert!(line.starts_with("12:00:00.123  #7"), "{line}");
        assert!(line.ends_with("fields state, error"), "{line}");
        let unknown = format_event(&serde_json::json!({"type": "from_a_newer_server"}), true);
        assert!(unknown.contains("\x1b[0mfrom_a_newer_server"), "{unknown}");
    }
}
