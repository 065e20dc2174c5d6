//! Walks one execution through the golden path, makes a breaker-protected LLM call, then lets a
//! second execution miss its heartbeats so the monitor declares it dead — printing every event as
//! it happens.
//!
//! Run with `cargo run --example golden_path`.

use std::time::Duration;

use agentrack::{CallError, EventFilter, NewExecution, Phase, Tracker, TrackerConfig};
use serde_json::{Map, Value, json};

fn meta(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Short timeouts so the missed heartbeat shows within a second.
    let tracker = Tracker::with_config(TrackerConfig {
        heartbeat_timeout: Duration::from_millis(300),
        execution_timeout: Duration::from_secs(30),
        monitor_interval: Duration::from_millis(50),
        ..TrackerConfig::default()
    });
    let monitor = tracker.spawn_monitor();
    tracker.on_dead(|record| async move {
        println!(
            "  ↳ callback: {} declared dead ({:?})",
            record.execution_id, record.error
        );
        Ok(())
    });

    let mut events = tracker.subscribe(EventFilter::all());
    let printer = tokio::spawn(async move {
        while let Some(Ok(event)) = events.recv().await {
            let scope = event.execution.as_ref();
            println!(
                "#{:<3} {:<22} {}{}",
                event.global_seq,
                event.kind.name(),
                scope.map(|s| s.execution_id.to_string()).unwrap_or_default(),
                match &event.kind {
                    agentrack::EventKind::StateChanged { from, to } => format!("  {from} → {to}"),
                    agentrack::EventKind::AgentThinking { reasoning, .. } => format!("  \"{reasoning}\""),
                    agentrack::EventKind::ToolExecuting { tool_name, .. } => format!("  tool={tool_name}"),
                    kind => kind
                        .finished()
                        .and_then(|f| f.error.clone())
                        .map(|e| format!("  {e}"))
                        .unwrap_or_default(),
                }
            );
        }
    });

    println!("— the golden path —");
    let id = tracker
        .create(NewExecution::new("weather-agent", "thread-42", "alice"))?
        .id();
    tracker.start(id)?;
    tracker.heartbeat(id)?;
    tracker.transition(id, Phase::WebsocketSetup, meta(json!({"socket": "ws-1"})))?;
    tracker.transition(id, Phase::ContextValidation, meta(json!({"valid": true})))?;
    tracker.transition(id, Phase::Starting, meta(json!({"question": "Weather in Paris?"})))?;
    tracker.transition(id, Phase::Thinking, meta(json!({"reasoning": "I need a forecast"})))?;
    tracker.transition(id, Phase::LlmInteraction, meta(json!({"model": "gpt-4o"})))?;

    let openai = tracker.breaker("openai:gpt-4o");
    let reply: Result<&str, CallError<std::io::Error>> = tracker
        .execute_via(id, &openai, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok("call get_forecast(Paris)")
        })
        .await;
    println!("  ↳ LLM replied: {:?}; breaker {}", reply?, openai.status().state);

    tracker.transition(
        id,
        Phase::ToolExecution,
        meta(json!({"tool_name": "get_forecast", "parameters": {"city": "Paris"}})),
    )?;
    tracker.transition(id, Phase::ResultProcessing, meta(json!({"rows": 1})))?;
    tracker.transition(id, Phase::Completing, meta(json!({"reasoning": "writing the answer"})))?;
    tracker.transition(id, Phase::Completed, meta(json!({"result": "Sunny, 21 °C"})))?;
    tracker.complete(id, Some(json!("Sunny, 21 °C")))?;

    println!("— an agent that stops heartbeating —");
    let silent = tracker
        .create(NewExecution::new("flaky-agent", "thread-43", "bob"))?
        .id();
    tracker.start(silent)?;
    tracker.heartbeat(silent)?;
    // Nothing more from this agent: after 300 ms without a heartbeat the monitor steps in.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let metrics = tracker.metrics();
    println!(
        "— metrics: total {}, completed {}, dead {}, success rate {:.0}% —",
        metrics.total_executions,
        metrics.successful_executions,
        metrics.dead_executions,
        metrics.success_rate * 100.0
    );
    monitor.stop().await;
    drop(tracker);
    let _ = tokio::time::timeout(Duration::from_millis(100), printer).await;
    Ok(())
}
