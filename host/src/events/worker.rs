//! One event worker: takes the next due event, delivers it through the
//! shared [`crate::invoker`] (admission first: a throttled event waits and
//! retries, it never goes around reserved or host concurrency), and settles
//! the outcome durably: attempt-log entry, event removed or rescheduled, and
//! the destination record, all in one commit.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::db::{self, AttemptEnd, Op, Settled};
use super::model::{self, AttemptRecord, Condition, EventRecord, InvokeConfig, LastError};
use super::retry::{Attempt, History, Next};
use super::sched::Take;
use super::{dest, now_ms, Events};
use crate::catalog::CatalogError;
use crate::env::InvokeRequest;
use crate::invoker::{CallResult, Invoker, Outcome};
use crate::store::StoreError;

/// Longest idle wait before a worker looks again (a safety net; pushes wake it).
const IDLE_POLL: Duration = Duration::from_secs(1);

pub async fn run(events: Arc<Events>, inv: Arc<Invoker>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let wait = match events.sched.take(now_ms()) {
            Take::Event(ev) => {
                let rid = ev.request_id.clone();
                let back = deliver(&events, &inv, ev, &shutdown).await;
                events.sched.done(&rid);
                if let Some(ev) = back {
                    events.requeue(ev);
                }
                continue;
            }
            Take::Wait(w) => w.unwrap_or(IDLE_POLL).min(IDLE_POLL),
        };
        tokio::select! {
            _ = events.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Delivers one event; returns it if it goes back on the schedule.
async fn deliver(
    events: &Events,
    inv: &Arc<Invoker>,
    mut ev: EventRecord,
    shutdown: &watch::Receiver<bool>,
) -> Option<EventRecord> {
    let q = ev.qualifier_or_latest().to_string();
    let cfg = match events.db.get_config(&ev.function, &q) {
        Ok(c) => c.unwrap_or_else(|| InvokeConfig::default_for(&ev.function, &q)),
        Err(e) => return transient(events, ev, None, &format!("reading its config: {e}")).await,
    };
    let target = match crate::catalog::resolve(inv.store(), &ev.function, ev.qualifier.as_deref()) {
        Ok(t) => t,
        Err(CatalogError::Store(StoreError::NotFound(m))) => {
            // The function (or the version/alias) was deleted: nothing can
            // run this event any more.
            eprintln!(
                "emberd: dropping event {} for {}: {m}",
                ev.request_id, ev.function
            );
            inv.metrics().async_event_dropped(&ev.function, &q);
            return settle(events, ev, false, None, None).await;
        }
        Err(e) => return transient(events, ev, None, &e.to_string()).await,
    };
    let version = target.version.clone();
    let age = Duration::from_millis(now_ms().saturating_sub(ev.received_ms));
    if !events.timing.fresh(age, cfg.maximum_event_age_in_seconds) {
        return give_up(
            events,
            inv,
            &version,
            ev,
            &cfg,
            Condition::EventAgeExceeded,
            None,
            None,
        )
        .await;
    }
    // A SnapStart version whose snapshot is not ready (an alias moved to it
    // after the event was queued) is not started by boot + Init: the event
    // waits, as a throttled one does, until the version is Active or the
    // event is too old (then its on-failure destination hears why).
    if target.state != crate::store::VersionState::Active {
        let why = format!("version {version} is not Active ({:?})", target.state);
        return transient(events, ev, None, &why).await;
    }
    let pending = match inv.begin(target, ev.qualifier.as_deref()) {
        Ok(p) => p,
        Err(_throttled) => return transient(events, ev, None, "throttled").await,
    };
    inv.metrics().async_event_age(&ev.function, &version, age);
    let payload = match events.db.payload(ev.seq) {
        Ok(Some(p)) => bytes::Bytes::from(p),
        Ok(None) => {
            eprintln!("emberd: event {} has no payload; dropped", ev.request_id);
            return settle(events, ev, false, None, None).await;
        }
        Err(e) => return transient(events, ev, None, &format!("reading its payload: {e}")).await,
    };
    // Log the attempt durably before the payload reaches an environment.
    ev.invocations += 1;
    let attempt = AttemptRecord {
        id: 0,
        request_id: ev.request_id.clone(),
        function: ev.function.clone(),
        attempt: ev.invocations,
        boot: events.boot,
        start_ms: now_ms(),
        end_ms: None,
        env_id: None,
        result: None,
    };
    let attempt_id = match events.db.submit(Op::Start(ev.clone(), attempt)).await {
        Ok(id) => id,
        Err(e) => {
            ev.invocations -= 1;
            ev.open_attempt = None;
            return store_failed(ev, events, &format!("logging the attempt failed ({e})"));
        }
    };
    ev.open_attempt = Some(attempt_id);
    let out = pending
        .run(InvokeRequest {
            request_id: ev.request_id.clone(),
            payload: payload.clone(),
            ..Default::default()
        })
        .await;
    let success = matches!(out.result, CallResult::Success(_));
    if *shutdown.borrow() && !success {
        // emberd is stopping and may have killed this environment: leave the
        // attempt open; the next run closes it as interrupted and redelivers.
        return None;
    }
    let end = AttemptEnd {
        id: attempt_id,
        end_ms: now_ms(),
        env_id: out.env_id,
        result: result_label(&out.result),
    };
    ev.open_attempt = None;
    let (kind, response) = match &out.result {
        CallResult::Success(p) => (Attempt::Success, model::payload_value(p)),
        CallResult::FunctionError(f) => {
            (Attempt::FunctionError, model::payload_value(&f.payload()))
        }
        CallResult::ServiceError(m) => {
            return transient(events, ev, Some(end), m).await;
        }
        // The function's own hook failed: retried as its errors are.
        CallResult::SnapStartError(m) => (
            Attempt::FunctionError,
            serde_json::json!({"errorType": "SnapStartException", "errorMessage": m}),
        ),
    };
    ev.transient = 0;
    if kind == Attempt::FunctionError {
        ev.errors += 1;
        ev.last_error = Some(LastError {
            version: out.version.clone(),
            response: response.clone(),
        });
    }
    let age = Duration::from_millis(now_ms().saturating_sub(ev.received_ms));
    let history = History {
        errors: ev.errors,
        transient: 0,
    };
    let next = events.timing.next(
        kind,
        history,
        age,
        cfg.maximum_retry_attempts,
        cfg.maximum_event_age_in_seconds,
    );
    let resp = Some((&out, &response, &payload[..]));
    match next {
        Next::Done => {
            let msg = record(&cfg.on_success, &ev, Condition::Success, &payload, resp);
            let msg = admit(events, inv, &version, &ev, msg);
            settle(events, ev, false, Some(end), msg).await
        }
        Next::RetryAfter(d) => {
            ev.not_before_ms = now_ms() + d.as_millis() as u64;
            settle(events, ev, true, Some(end), None).await
        }
        Next::RetriesExhausted => {
            give_up(
                events,
                inv,
                &version,
                ev,
                &cfg,
                Condition::RetriesExhausted,
                Some(end),
                resp,
            )
            .await
        }
        Next::AgeExceeded => {
            give_up(
                events,
                inv,
                &version,
                ev,
                &cfg,
                Condition::EventAgeExceeded,
                Some(end),
                resp,
            )
            .await
        }
    }
}

fn result_label(r: &CallResult) -> String {
    match r {
        CallResult::Success(_) => "Success".into(),
        CallResult::FunctionError(f) => format!("FunctionError:{}", f.error_type),
        CallResult::ServiceError(_) => "ServiceError".into(),
        CallResult::SnapStartError(_) => "SnapStartException".into(),
    }
}

/// A destination record admitted under its account's quota, which holds
/// its bytes until the settle that writes it commits.
struct Admitted<'a> {
    record: db::Record,
    held: db::Reservation<'a>,
}

/// Admits `record` (for `ev` of `version`) under its account's quota. A
/// refused record is not delivered (Lambda's DestinationDeliveryFailures:
/// the event itself is settled as it would be): logged and counted.
fn admit<'a>(
    events: &'a Events,
    inv: &Invoker,
    version: &str,
    ev: &EventRecord,
    record: Option<(String, model::QueueMessage)>,
) -> Option<Admitted<'a>> {
    let (queue, msg) = record?;
    let admitted = db::Record::new(queue.clone(), &msg).and_then(|record| {
        let held = events.db.admit_record(&record)?;
        Ok(Admitted { record, held })
    });
    match admitted {
        Ok(a) => Some(a),
        Err(e) => {
            inv.metrics()
                .destination_delivery_failure(&ev.function, version);
            eprintln!(
                "emberd: destination record for event {} of {} not delivered to {}: {e}",
                ev.request_id,
                ev.function,
                dest::queue_arn(&queue)
            );
            None
        }
    }
}

/// The response of the attempt that just ended: its outcome, response
/// JSON and the request payload.
type Resp<'a> = Option<(&'a Outcome, &'a Value, &'a [u8])>;

/// A destination message for `queue_arn` (if configured).
fn record(
    queue_arn: &Option<String>,
    ev: &EventRecord,
    condition: Condition,
    payload: &[u8],
    resp: Resp<'_>,
) -> Option<(String, model::QueueMessage)> {
    let arn = queue_arn.as_ref()?;
    // Validated when the config was put; a bad one here is skipped loudly.
    let queue = match dest::queue_of(arn) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("emberd: destination for {}: {e}", ev.request_id);
            return None;
        }
    };
    let last = ev.last_error.as_ref();
    let response = match resp {
        Some((out, value, _)) => Some(model::Response {
            version: &out.version,
            function_error: !matches!(out.result, CallResult::Success(_)),
            payload: value,
        }),
        None => last.map(|l| model::Response {
            version: &l.version,
            function_error: true,
            payload: &l.response,
        }),
    };
    let ts = crate::util::now_lambda().replace("+0000", "Z");
    let body = model::destination_record(ev, condition, &ts, payload, response);
    Some((queue, db::message(body)))
}

/// Ends `ev` (of `version`) for good, with an on-failure record if configured.
#[allow(clippy::too_many_arguments)]
async fn give_up(
    events: &Events,
    inv: &Invoker,
    version: &str,
    ev: EventRecord,
    cfg: &InvokeConfig,
    condition: Condition,
    end: Option<AttemptEnd>,
    resp: Resp<'_>,
) -> Option<EventRecord> {
    let payload = match resp {
        Some((_, _, p)) => p.to_vec(),
        None => events.db.payload(ev.seq).ok().flatten().unwrap_or_default(),
    };
    let msg = record(&cfg.on_failure, &ev, condition, &payload, resp);
    let msg = admit(events, inv, version, &ev, msg);
    inv.metrics().async_event_dropped(&ev.function, version);
    if msg.is_none() && cfg.on_failure.is_some() {
        inv.metrics().dead_letter_error(&ev.function, version);
    }
    if msg.is_none() {
        eprintln!(
            "emberd: event {} for {} dropped ({}; no on-failure destination)",
            ev.request_id,
            ev.function,
            condition.as_str()
        );
    }
    settle(events, ev, false, end, msg).await
}

/// Throttled or a service error: back off (without using a retry attempt).
async fn transient(
    events: &Events,
    mut ev: EventRecord,
    end: Option<AttemptEnd>,
    why: &str,
) -> Option<EventRecord> {
    ev.transient += 1;
    ev.open_attempt = None;
    let delay = events.timing.backoff(ev.transient);
    ev.not_before_ms = now_ms() + delay.as_millis() as u64;
    if ev.transient == 1 || ev.transient.is_multiple_of(10) {
        eprintln!(
            "emberd: event {} for {}: {why}; retrying in {delay:?} (try {})",
            ev.request_id, ev.function, ev.transient
        );
    }
    // Throttles touch only memory (the age check still applies on the next
    // take); an ended attempt must reach the log.
    match end {
        None => Some(ev),
        Some(end) => settle(events, ev, true, Some(end), None).await,
    }
}

/// Commits the settle: the event stays queued (`keep`, rewritten) or is
/// removed. Returns the event if it goes back on the schedule.
async fn settle(
    events: &Events,
    ev: EventRecord,
    keep: bool,
    end: Option<AttemptEnd>,
    record: Option<Admitted<'_>>,
) -> Option<EventRecord> {
    let event = if keep {
        Settled::Keep(ev.clone())
    } else {
        Settled::Remove(ev.seq)
    };
    let (message, held) = match record {
        Some(r) => (Some(r.record), Some(r.held)),
        None => (None, None),
    };
    let op = Op::Settle {
        event,
        end,
        message,
    };
    let r = events.db.submit(op).await;
    if r.is_ok() {
        if let Some(held) = held {
            events.db.kept(held);
        }
    }
    match r {
        Ok(_) if keep => Some(ev),
        Ok(_) => None,
        Err(e) => {
            // Not recorded: try the whole event again later (at-least-once).
            let why = format!("settling failed ({})", crate::util::error_chain(&e));
            store_failed(ev, events, &why)
        }
    }
}

/// emberd's own store could not record the event's progress: it goes back
/// on the schedule with the store's short backoff (a healed store resumes
/// delivery within seconds), without using a retry attempt.
fn store_failed(mut ev: EventRecord, events: &Events, why: &str) -> Option<EventRecord> {
    ev.transient += 1;
    let delay = events.timing.store_retry(ev.transient);
    ev.not_before_ms = now_ms() + delay.as_millis() as u64;
    eprintln!(
        "emberd: event {}: {why}; retrying in {delay:?}",
        ev.request_id
    );
    Some(ev)
}
