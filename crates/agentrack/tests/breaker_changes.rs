//! Breaker writes return the change they made — the events a store must persist before the
//! write is acknowledged — exactly as subscribers see them, and nothing when nothing changed.

#![allow(clippy::expect_used)]

mod common;

use std::sync::Arc;

use agentrack::{Event, EventFilter, EventKind, NewExecution, Outcome, TrackerConfig};
use common::{drain, manual, names, secs};

/// `event`'s name, after checking that it is the one event the subscriber got meanwhile.
fn only_broadcast(event: Option<Arc<Event>>, broadcast: &[Arc<Event>]) -> &'static str {
    let event = event.expect("a change was returned");
    assert_eq!(broadcast, [Arc::clone(&event)], "returned vs. broadcast");
    event.kind.name()
}

#[test]
fn a_shared_breaker_returns_each_state_change_it_makes() {
    let (tracker, clock) = manual(TrackerConfig::default());
    let mut events = tracker.subscribe(EventFilter::all());
    let breaker = tracker.breaker("openai:gpt-4o");

    // Failures below the threshold (3) change no state: nothing to wait for.
    for _ in 0..2 {
        assert_eq!(breaker.acquire().unwrap().record(Outcome::Failure), None);
    }
    assert!(drain(&mut events).is_empty());
    let opened = breaker.acquire().unwrap().record(Outcome::Failure);
    assert_eq!(only_broadcast(opened.clone(), &drain(&mut events)), "breaker_opened");
    let opened = opened.unwrap();
    assert!(
        opened.execution.is_none(),
        "a shared breaker's event belongs to no execution"
    );
    assert!(matches!(&opened.kind, EventKind::BreakerOpened(c) if c.breaker == "openai:gpt-4o" && c.failures == 3));

    // After the recovery time the next admission is a trial: the permit carries that change.
    clock.advance(secs(31));
    let trial = breaker.acquire().unwrap();
    let half_open = trial.admission_event().cloned();
    assert_eq!(only_broadcast(half_open, &drain(&mut events)), "breaker_half_open");
    // Two successful trials close it; the first changes nothing yet.
    assert_eq!(trial.record(Outcome::Success), None);
    let second = breaker.acquire().unwrap();
    assert!(second.admission_event().is_none(), "already half-open");
    let closed = second.record(Outcome::Success);
    assert_eq!(only_broadcast(closed, &drain(&mut events)), "breaker_closed");

    // A reset of an open breaker closes it; of a closed one, changes nothing.
    for _ in 0..3 {
        let _ = breaker.acquire().unwrap().record(Outcome::Timeout);
    }
    drain(&mut events);
    assert_eq!(only_broadcast(breaker.reset(), &drain(&mut events)), "breaker_closed");
    assert_eq!(breaker.reset(), None);
    // Ignored outcomes, and permits dropped unreported, change nothing either.
    assert_eq!(breaker.acquire().unwrap().record(Outcome::Ignored), None);
    drop(breaker.acquire().unwrap());
    assert!(drain(&mut events).is_empty());
}

#[test]
fn an_execution_breaker_returns_its_changes_as_changes_of_the_execution() {
    let (tracker, _clock) = manual(TrackerConfig::default());
    let mut events = tracker.subscribe(EventFilter::all());
    let id = tracker
        .create(NewExecution::new("agent", "thread", "user"))
        .unwrap()
        .id();
    drain(&mut events);

    // Closed already: a reset is a change with no events.
    let change = tracker.reset_breaker(id).unwrap();
    assert_eq!((change.id(), change.events.len()), (id, 0));
    for _ in 0..2 {
        assert!(
            tracker
                .begin_call(id)
                .unwrap()
                .record(Outcome::Failure)
                .events
                .is_empty()
        );
    }
    let opened = tracker.begin_call(id).unwrap().record(Outcome::Failure);
    assert_eq!(opened.id(), id);
    assert_eq!(names(&opened.events), ["breaker_opened"]);
    assert_eq!(opened.events, drain(&mut events));

    let reset = tracker.reset_breaker(id).unwrap();
    assert_eq!(names(&reset.events), ["breaker_closed"]);
    assert_eq!(reset.events, drain(&mut events));
    let scope = reset.events[0].execution.as_ref().unwrap();
    assert_eq!((scope.execution_id, scope.seq), (id, tracker.get(id).unwrap().seq));
}

#[test]
fn only_a_closed_breaker_nobody_holds_can_be_removed() {
    let (tracker, _clock) = manual(TrackerConfig::default());
    let name = "openai:gpt-4o";
    assert!(!tracker.has_breaker(name));
    let breaker = tracker.breaker(name);
    assert!(tracker.has_breaker(name));
    assert!(!tracker.remove_unused_breaker(name), "a handle is held");
    let permit = breaker.acquire().unwrap();
    drop(breaker);
    assert!(!tracker.remove_unused_breaker(name), "a permit is held");
    drop(permit);
    for _ in 0..3 {
        let _ = tracker.breaker(name).acquire().unwrap().record(Outcome::Failure);
    }
    assert!(!tracker.remove_unused_breaker(name), "an open breaker is kept");
    let _ = tracker.breaker(name).reset();
    assert!(tracker.remove_unused_breaker(name));
    assert!(!tracker.has_breaker(name) && tracker.breakers().is_empty());
    assert!(!tracker.remove_unused_breaker(name), "already gone");
}
