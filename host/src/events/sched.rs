//! The in-memory schedule of queued events, pure (times are passed in):
//! each account's due events in (not-before, arrival) order, accounts served
//! round-robin, no account holding more than its share of the workers at
//! once, and the in-flight set that guarantees one event — one request id —
//! is never handed to two workers at once.
//!
//! The workers are shared by every account; without the per-account cap and
//! the rotation one tenant's slow events would hold all of them and delay
//! another's by up to the function timeout.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::model::EventRecord;
use crate::util::split_scoped;

/// One account's part of the schedule.
#[derive(Default)]
struct Queue {
    /// (not before, seq) of every waiting event of the account.
    order: BinaryHeap<Reverse<(u64, u64)>>,
    /// Its events in flight (workers it holds).
    held: usize,
}

#[derive(Default)]
struct Inner {
    queues: HashMap<String, Queue>,
    /// Accounts with waiting or in-flight events, next to serve first.
    ring: VecDeque<String>,
    waiting: HashMap<u64, EventRecord>,
    /// Request id -> account of every event in flight.
    in_flight: HashMap<String, String>,
}

pub struct Sched {
    inner: Mutex<Inner>,
    /// Most workers one account may hold at once.
    per_account: usize,
}

/// What a worker gets when it asks for work.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Event(EventRecord),
    /// Nothing due (for an account with a worker to spare); the next such
    /// event is due in this long (None: none queued).
    Wait(Option<Duration>),
}

fn account_of(ev: &EventRecord) -> &str {
    split_scoped(&ev.function).0
}

impl Inner {
    /// The first due event of `account` at `now_ms`, now in flight; or how
    /// long until its next one is due.
    fn take_from(&mut self, account: &str, now_ms: u64) -> Result<EventRecord, Option<u64>> {
        loop {
            let q = self.queues.get_mut(account).ok_or(None)?;
            let Some(&Reverse((due, seq))) = q.order.peek() else {
                return Err(None);
            };
            if due > now_ms {
                return Err(Some(due - now_ms));
            }
            q.order.pop();
            let Some(ev) = self.waiting.remove(&seq) else {
                continue;
            };
            if self.in_flight.contains_key(&ev.request_id) {
                // Already being delivered: never twice at once. Its holder
                // will push it back when done; this copy is stale.
                continue;
            }
            q.held += 1;
            self.in_flight
                .insert(ev.request_id.clone(), account.to_string());
            return Ok(ev);
        }
    }

    /// Drops `account` from the ring once it has nothing queued or held.
    fn forget_if_idle(&mut self, account: &str) {
        let idle = self
            .queues
            .get(account)
            .is_some_and(|q| q.held == 0 && q.order.is_empty());
        if idle {
            self.queues.remove(account);
            self.ring.retain(|a| a != account);
        }
    }
}

impl Sched {
    /// An empty schedule in which one account holds at most `per_account`
    /// workers at once (at least one).
    pub fn new(per_account: usize) -> Self {
        Self {
            inner: Mutex::default(),
            per_account: per_account.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data: a panic elsewhere leaves it consistent enough to serve.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `ev` (or returns it to the queue after an attempt). The
    /// worker that held it must have called [`Sched::done`] first.
    pub fn push(&self, ev: EventRecord) {
        let mut i = self.lock();
        let account = account_of(&ev).to_string();
        if !i.queues.contains_key(&account) {
            i.ring.push_back(account.clone());
        }
        let q = i.queues.entry(account).or_default();
        q.order.push(Reverse((ev.not_before_ms, ev.seq)));
        i.waiting.insert(ev.seq, ev);
    }

    /// The next due event at `now_ms`, now in flight: from the first account
    /// in turn that has one due and holds fewer than its share of workers.
    /// That account then goes to the back of the turn.
    pub fn take(&self, now_ms: u64) -> Take {
        let mut i = self.lock();
        let mut soonest: Option<u64> = None;
        for turn in 0..i.ring.len() {
            let account = i.ring[turn].clone();
            let held = i.queues.get(&account).map_or(0, |q| q.held);
            if held >= self.per_account {
                // Its holder's `done` lets it take again.
                continue;
            }
            match i.take_from(&account, now_ms) {
                Ok(ev) => {
                    if let Some(a) = i.ring.remove(turn) {
                        i.ring.push_back(a);
                    }
                    return Take::Event(ev);
                }
                Err(wait) => {
                    soonest = match (soonest, wait) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        let ring: Vec<String> = i.ring.iter().cloned().collect();
        for account in ring {
            i.forget_if_idle(&account);
        }
        Take::Wait(soonest.map(Duration::from_millis))
    }

    /// The worker holding `request_id` has finished with it.
    pub fn done(&self, request_id: &str) {
        let mut i = self.lock();
        let Some(account) = i.in_flight.remove(request_id) else {
            return;
        };
        if let Some(q) = i.queues.get_mut(&account) {
            q.held = q.held.saturating_sub(1);
        }
        i.forget_if_idle(&account);
    }

    /// (waiting, in flight).
    pub fn depth(&self) -> (usize, usize) {
        let i = self.lock();
        (i.waiting.len(), i.in_flight.len())
    }

    /// (waiting, in flight) of `account`'s events.
    pub fn depth_of(&self, account: &str) -> (usize, usize) {
        let i = self.lock();
        let waiting = i
            .waiting
            .values()
            .filter(|ev| account_of(ev) == account)
            .count();
        let in_flight = i.in_flight.values().filter(|a| *a == account).count();
        (waiting, in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, rid: &str, due: u64) -> EventRecord {
        on("f", seq, rid, due)
    }

    /// An event for `function` (a scoped name: `ACCOUNT:NAME` or a bare
    /// name of the default account).
    fn on(function: &str, seq: u64, rid: &str, due: u64) -> EventRecord {
        EventRecord {
            seq,
            request_id: rid.into(),
            function: function.into(),
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

    fn take(s: &Sched, now: u64) -> EventRecord {
        match s.take(now) {
            Take::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[test]
    fn due_events_come_in_time_then_arrival_order() {
        let s = Sched::new(8);
        s.push(ev(2, "b", 10));
        s.push(ev(1, "a", 10));
        s.push(ev(3, "c", 50));
        assert_eq!(s.take(5), Take::Wait(Some(Duration::from_millis(5))));
        let a = take(&s, 10);
        let b = take(&s, 10);
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(s.take(10), Take::Wait(Some(Duration::from_millis(40))));
        assert_eq!(s.depth(), (1, 2));
        assert_eq!(take(&s, 60).seq, 3);
        assert_eq!(s.take(60), Take::Wait(None));
    }

    #[test]
    fn an_event_in_flight_is_never_handed_out_again() {
        let s = Sched::new(8);
        s.push(ev(1, "a", 0));
        let held = take(&s, 0);
        // A second copy of the same request (e.g. queued again by mistake)
        // must not reach another worker while the first is in flight.
        s.push(ev(7, "a", 0));
        assert_eq!(s.take(0), Take::Wait(None));
        s.done(&held.request_id);
        s.push(held);
        assert_eq!(take(&s, 0).seq, 1);
    }

    #[test]
    fn accounts_take_turns_whatever_the_arrival_order() {
        let s = Sched::new(8);
        // Account A queued 100 events before B's first.
        for n in 0..100 {
            s.push(on("a", n, &format!("a{n}"), 0));
        }
        s.push(on("111111111111:b", 100, "b0", 0));
        s.push(on("111111111111:b", 101, "b1", 0));
        let order: Vec<String> = (0..4).map(|_| take(&s, 0).request_id).collect();
        assert_eq!(order, ["a0", "b0", "a1", "b1"]);
    }

    #[test]
    fn one_account_never_holds_more_than_its_share() {
        let s = Sched::new(2);
        for n in 0..10 {
            s.push(on("a", n, &format!("a{n}"), 0));
        }
        let a0 = take(&s, 0);
        let _a1 = take(&s, 0);
        // A holds its two: a third worker waits rather than take A's third.
        assert_eq!(s.take(0), Take::Wait(None));
        // ... and so is free the moment B's event arrives.
        s.push(on("111111111111:b", 50, "b0", 0));
        assert_eq!(take(&s, 0).request_id, "b0");
        // A finished one: it may take its next.
        s.done(&a0.request_id);
        assert_eq!(take(&s, 0).request_id, "a2");
        assert_eq!(s.depth(), (7, 3));
    }

    #[test]
    fn an_account_at_its_cap_does_not_hide_others_due_times() {
        let s = Sched::new(1);
        s.push(on("a", 1, "a1", 0));
        s.push(on("a", 2, "a2", 0));
        s.push(on("111111111111:b", 3, "b1", 30));
        let _a1 = take(&s, 0);
        assert_eq!(s.take(0), Take::Wait(Some(Duration::from_millis(30))));
        assert_eq!(take(&s, 30).request_id, "b1");
    }
}
