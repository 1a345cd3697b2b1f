//! The in-memory schedule of queued events, pure (times are passed in):
//! due events in (not-before, arrival) order, and the in-flight set that
//! guarantees one event — one request id — is never handed to two workers
//! at once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::model::EventRecord;

#[derive(Default)]
struct Inner {
    /// (not before, seq) of every waiting event.
    order: BinaryHeap<Reverse<(u64, u64)>>,
    waiting: HashMap<u64, EventRecord>,
    in_flight: HashSet<String>,
}

#[derive(Default)]
pub struct Sched {
    inner: Mutex<Inner>,
}

/// What a worker gets when it asks for work.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Event(EventRecord),
    /// Nothing due; the next event is due in this long (None: queue empty).
    Wait(Option<Duration>),
}

impl Sched {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data: a panic elsewhere leaves it consistent enough to serve.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `ev` (or returns it to the queue after an attempt). The
    /// worker that held it must have called [`Sched::done`] first.
    pub fn push(&self, ev: EventRecord) {
        let mut i = self.lock();
        i.order.push(Reverse((ev.not_before_ms, ev.seq)));
        i.waiting.insert(ev.seq, ev);
    }

    /// The earliest due event at `now_ms`, now in flight.
    pub fn take(&self, now_ms: u64) -> Take {
        let mut i = self.lock();
        while let Some(&Reverse((due, seq))) = i.order.peek() {
            if due > now_ms {
                return Take::Wait(Some(Duration::from_millis(due - now_ms)));
            }
            i.order.pop();
            let Some(ev) = i.waiting.remove(&seq) else {
                continue;
            };
            if !i.in_flight.insert(ev.request_id.clone()) {
                // Already being delivered: never twice at once. Its holder
                // will push it back when done; this copy is stale.
                continue;
            }
            return Take::Event(ev);
        }
        Take::Wait(None)
    }

    /// The worker holding `request_id` has finished with it.
    pub fn done(&self, request_id: &str) {
        self.lock().in_flight.remove(request_id);
    }

    /// (waiting, in flight).
    pub fn depth(&self) -> (usize, usize) {
        let i = self.lock();
        (i.waiting.len(), i.in_flight.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, rid: &str, due: u64) -> EventRecord {
        EventRecord {
            seq,
            request_id: rid.into(),
            function: "f".into(),
            qualifier: None,
            received_ms: 0,
            not_before_ms: due,
            invocations: 0,
            errors: 0,
            transient: 0,
            open_attempt: None,
            last_error: None,
        }
    }

    #[test]
    fn due_events_come_in_time_then_arrival_order() {
        let s = Sched::default();
        s.push(ev(2, "b", 10));
        s.push(ev(1, "a", 10));
        s.push(ev(3, "c", 50));
        assert_eq!(s.take(5), Take::Wait(Some(Duration::from_millis(5))));
        let Take::Event(a) = s.take(10) else { panic!() };
        let Take::Event(b) = s.take(10) else { panic!() };
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(s.take(10), Take::Wait(Some(Duration::from_millis(40))));
        assert_eq!(s.depth(), (1, 2));
        let Take::Event(c) = s.take(60) else { panic!() };
        assert_eq!(c.seq, 3);
        assert_eq!(s.take(60), Take::Wait(None));
    }

    #[test]
    fn an_event_in_flight_is_never_handed_out_again() {
        let s = Sched::default();
        s.push(ev(1, "a", 0));
        let Take::Event(held) = s.take(0) else {
            panic!()
        };
        // A second copy of the same request (e.g. queued again by mistake)
        // must not reach another worker while the first is in flight.
        s.push(ev(7, "a", 0));
        assert_eq!(s.take(0), Take::Wait(None));
        s.done(&held.request_id);
        s.push(held);
        let Take::Event(again) = s.take(0) else {
            panic!()
        };
        assert_eq!(again.seq, 1);
    }
}
