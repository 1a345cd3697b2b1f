//! Guest time for the wasm agent: the TSC read against the wall-clock/TSC
//! pair the VMM put in the start-info page at entry.

use ember_guest::wasm::Clock;
use ember_rt::StartInfo;

/// Used when the VMM could not tell the TSC frequency (then times are rough,
/// but deadlines still fire).
const FALLBACK_TSC_KHZ: u64 = 2_000_000;

pub struct TscClock {
    wall_ns: u64,
    tsc0: u64,
    khz: u64,
}

impl TscClock {
    pub fn new(info: &StartInfo) -> Self {
        let khz = if info.tsc_khz == 0 {
            FALLBACK_TSC_KHZ
        } else {
            info.tsc_khz
        };
        TscClock {
            wall_ns: info.wallclock_ns,
            tsc0: info.wallclock_tsc,
            khz,
        }
    }

    fn elapsed_ns(&self) -> u64 {
        let ticks = ember_rt::rdtsc().wrapping_sub(self.tsc0) as u128;
        (ticks * 1_000_000 / self.khz as u128) as u64
    }

    /// Microseconds since the guest was entered.
    pub fn since_entry_us(&self) -> u64 {
        self.elapsed_ns() / 1000
    }
}

impl Clock for TscClock {
    fn realtime_ns(&self) -> u64 {
        self.wall_ns + self.elapsed_ns()
    }

    fn monotonic_ns(&self) -> u64 {
        self.elapsed_ns()
    }
}
