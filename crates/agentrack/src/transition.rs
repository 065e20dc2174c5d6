//! Phase transitions, their events and the original's notifications.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::TrackerError;
use crate::event::{Event, EventKind};
use crate::id::ExecutionId;
use crate::notifier::{Notification, Notifier};
use crate::phase::{NotificationKind, Phase, Validation};
use crate::record::{Transition, millis};
use crate::tracker::{Change, Tracker, Want, ensure_alive, touch};

impl Tracker {
    /// Changes the phase, records the transition (with the time spent in the phase left) and
    /// emits the matching event (`agent_started`, `agent_thinking`, `tool_executing`,
    /// `agent_completed`, `agent_error`, or `phase_changed`). Counts as a sign of life.
    ///
    /// Under strict phase validation (the default) a transition the rules forbid, or one on a
    /// finished execution, is refused; under lenient validation it happens and is flagged
    /// `valid: false`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Terminal` or `InvalidTransition` (strict only).
    pub fn transition(
        &self,
        id: ExecutionId,
        phase: Phase,
        metadata: Option<Map<String, Value>>,
    ) -> Result<Change, TrackerError> {
        let recorded = self.transition_recorded(id, phase, metadata, Want::Events, false)?;
        Ok(Change {
            execution_id: id,
            events: recorded.event.into_iter().collect(),
        })
    }

    /// Records the transition under the record's lock; with `notification`, also builds the
    /// original's notification for it there, so that its counts and durations are this
    /// transition's even while other threads move the same execution on.
    pub(crate) fn transition_recorded(
        &self,
        id: ExecutionId,
        phase: Phase,
        metadata: Option<Map<String, Value>>,
        want: Want,
        notification: bool,
    ) -> Result<Recorded, TrackerError> {
        let slot = self.slot(id)?;
        let mut slot = slot.lock();
        let strict = self.inner.config.phase_validation == Validation::Strict;
        if strict {
            ensure_alive(&slot)?;
        }
        let from = slot.record.current_phase;
        let valid = from.can_transition_to(phase) && slot.record.is_alive();
        if strict && !valid {
            return Err(TrackerError::InvalidTransition {
                execution_id: id,
                from,
                to: phase,
                allowed: from.allowed_next(),
            });
        }
        if !valid {
            tracing::warn!(execution_id = %id, %from, to = %phase, "phase transition outside the rules (lenient validation)");
        }
        let now = self.inner.clock.now();
        let mono = self.mono();
        let transition = Transition {
            from_phase: from,
            to_phase: phase,
            timestamp: now,
            duration_ms: millis(now - slot.record.phase_entered_at),
            metadata: metadata.unwrap_or_default(),
            websocket_event_sent: false,
            valid,
        };
        slot.record.phase_history.push(transition);
        slot.record.current_phase = phase;
        slot.record.phase_entered_at = now;
        if slot.record.is_alive() {
            touch(&mut slot, now, mono);
        }
        // Counted from the first change ever, so that it survives the cap dropping older ones.
        let history_position = slot.record.phase_count() - 1;
        let notification = if notification {
            Notification::for_latest_transition(&slot.record, now)
        } else {
            None
        };
        let event = self.emit_when(&mut slot, now, want, |slot| {
            let history = &slot.record.phase_history;
            let step_number = u32::try_from(slot.record.phase_count()).unwrap_or(u32::MAX);
            let execution_time_ms = millis(now - slot.record.started_at);
            phase_event(history[history.len() - 1].clone(), step_number, execution_time_ms)
        });
        // Only now: the event and the notification above are of the change just recorded.
        slot.record.cap_phase_history(self.inner.config.max_phase_history);
        Ok(Recorded {
            event,
            valid,
            history_position,
            notification,
        })
    }

    /// Like [`Tracker::transition`], then hands the original's notification for it (a
    /// [`Notification`], built under the record's lock: exactly the arguments the original
    /// passed its WebSocket manager) to `notifier`. A failing notifier is logged; the transition
    /// stands with `websocket_event_sent = false`. Returns the transition as stored.
    ///
    /// # Errors
    ///
    /// As [`Tracker::transition`].
    pub async fn transition_notify<N: Notifier>(
        &self,
        id: ExecutionId,
        phase: Phase,
        metadata: Option<Map<String, Value>>,
        notifier: &N,
    ) -> Result<Transition, TrackerError> {
        let change = self.transition_recorded(id, phase, metadata, Want::Events, true)?;
        let Some(event) = &change.event else {
            return Err(TrackerError::NotFound { execution_id: id });
        };
        let Some(mut transition) = event.kind.transition().cloned() else {
            return Err(TrackerError::NotFound { execution_id: id });
        };
        let sent = match &change.notification {
            Some(notification) => Some(notification.send(notifier).await),
            None => None,
        };
        match sent {
            Some(Ok(())) => {
                transition.websocket_event_sent = true;
                // Counted from the first change, so later changes (and the cap dropping older
                // ones) do not move it; a change dropped meanwhile is not marked.
                if let Ok(slot) = self.slot(id) {
                    let record = &mut slot.lock().record;
                    let kept = change
                        .history_position
                        .checked_sub(record.phase_history_dropped)
                        .and_then(|position| usize::try_from(position).ok());
                    if let Some(stored) = kept.and_then(|position| record.phase_history.get_mut(position)) {
                        stored.websocket_event_sent = true;
                    }
                }
            }
            Some(Err(error)) => {
                tracing::warn!(execution_id = %id, %phase, %error, "notifier failed; transition kept with websocket_event_sent = false");
            }
            None => {}
        }
        Ok(transition)
    }
}

/// A transition's event (if built), whether the rules allow it, its position in the phase
/// history, and the original's notification for it (if asked for and notified).
pub(crate) struct Recorded {
    pub(crate) event: Option<Arc<Event>>,
    pub(crate) valid: bool,
    history_position: u64,
    notification: Option<Notification>,
}

fn phase_event(transition: Transition, step_number: u32, execution_time_ms: u64) -> EventKind {
    let metadata = &transition.metadata;
    let text = |key: &str| metadata.get(key).and_then(Value::as_str).map(str::to_owned);
    let phase = transition.to_phase;
    match phase.notification_kind() {
        None => EventKind::PhaseChanged { transition },
        Some(kind) => match kind {
            NotificationKind::AgentStarted => EventKind::AgentStarted {
                context: Value::Object(metadata.clone()),
                transition,
            },
            NotificationKind::AgentThinking => EventKind::AgentThinking {
                reasoning: text("reasoning").unwrap_or_else(|| format!("Agent is in phase {phase}")),
                step_number,
                transition,
            },
            NotificationKind::ToolExecuting => EventKind::ToolExecuting {
                tool_name: text("tool_name").unwrap_or_else(|| "unknown".to_owned()),
                parameters: metadata
                    .get("parameters")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new())),
                transition,
            },
            NotificationKind::AgentCompleted => EventKind::AgentCompleted {
                result: metadata.get("result").cloned().unwrap_or(Value::Null),
                execution_time_ms,
                transition,
            },
            NotificationKind::AgentError => EventKind::AgentError {
                error: text("error").unwrap_or_else(|| format!("Agent entered phase {phase}")),
                error_context: Value::Object(metadata.clone()),
                transition,
            },
        },
    }
}
