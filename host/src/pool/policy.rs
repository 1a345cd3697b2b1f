//! Concurrency admission, pure: reserved concurrency per function and the
//! host-wide limit shared by all functions without a reservation. Each
//! admitted invocation holds one unit until it finishes.

use std::collections::HashMap;

/// Why an invocation was refused (maps to 429 `Reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttle {
    /// The function's reserved concurrency is used up (or is 0).
    Reserved,
    /// The unreserved part of the host limit is used up.
    Host,
    /// No room in the host's memory budget for a new environment, even
    /// after evicting every idle one (see [`super::claim`]).
    Memory,
}

#[derive(Debug, Default)]
pub struct Admission {
    host_limit: u32,
    reserved: HashMap<String, u32>,
    inflight_reserved: HashMap<String, u32>,
    inflight_unreserved: u32,
}

impl Admission {
    pub fn new(host_limit: u32) -> Self {
        Self {
            host_limit,
            ..Default::default()
        }
    }

    pub fn host_limit(&self) -> u32 {
        self.host_limit
    }

    /// Capacity left to functions without a reservation.
    pub fn unreserved_capacity(&self) -> u32 {
        self.host_limit.saturating_sub(self.reserved.values().sum())
    }

    /// Sets (Some) or clears (None) a function's reservation. The caller has
    /// checked it fits (`can_reserve`).
    pub fn set_reserved(&mut self, function: &str, n: Option<u32>) {
        match n {
            Some(n) => self.reserved.insert(function.to_string(), n),
            None => self.reserved.remove(function),
        };
    }

    /// Whether reserving `n` for `function` leaves the host limit intact.
    pub fn can_reserve(&self, function: &str, n: u32) -> bool {
        let others: u32 = self
            .reserved
            .iter()
            .filter(|(f, _)| f.as_str() != function)
            .map(|(_, v)| v)
            .sum();
        others.saturating_add(n) <= self.host_limit
    }

    pub fn admit(&mut self, function: &str) -> Result<(), Throttle> {
        match self.reserved.get(function) {
            Some(&limit) => {
                let n = self
                    .inflight_reserved
                    .entry(function.to_string())
                    .or_default();
                if *n >= limit {
                    return Err(Throttle::Reserved);
                }
                *n += 1;
            }
            None => {
                if self.inflight_unreserved >= self.unreserved_capacity() {
                    return Err(Throttle::Host);
                }
                self.inflight_unreserved += 1;
            }
        }
        Ok(())
    }

    /// Ends one admitted invocation. A reservation changed meanwhile is
    /// handled by releasing from whichever counter holds the unit.
    pub fn release(&mut self, function: &str) {
        if let Some(n) = self.inflight_reserved.get_mut(function).filter(|n| **n > 0) {
            *n -= 1;
        } else {
            self.inflight_unreserved = self.inflight_unreserved.saturating_sub(1);
        }
    }

    /// Invocations in flight for `function` under its reservation.
    pub fn inflight(&self, function: &str) -> u32 {
        self.inflight_reserved.get(function).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_function_throttles_at_its_limit() {
        let mut a = Admission::new(10);
        a.set_reserved("f", Some(2));
        assert!(a.admit("f").is_ok());
        assert!(a.admit("f").is_ok());
        assert_eq!(a.admit("f"), Err(Throttle::Reserved));
        a.release("f");
        assert!(a.admit("f").is_ok());
    }

    #[test]
    fn reservations_shrink_the_shared_pool() {
        let mut a = Admission::new(4);
        assert!(a.can_reserve("f", 3));
        assert!(!a.can_reserve("f", 5));
        a.set_reserved("f", Some(3));
        assert_eq!(a.unreserved_capacity(), 1);
        assert!(a.admit("g").is_ok());
        assert_eq!(a.admit("h"), Err(Throttle::Host));
        a.release("g");
        assert!(a.admit("h").is_ok());
    }

    #[test]
    fn zero_reservation_blocks_all_calls() {
        let mut a = Admission::new(4);
        a.set_reserved("off", Some(0));
        assert_eq!(a.admit("off"), Err(Throttle::Reserved));
        a.set_reserved("off", None);
        assert!(a.admit("off").is_ok());
    }
}
