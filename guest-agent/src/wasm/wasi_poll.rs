//! WASI `poll_oneoff` for clock subscriptions (what `time.sleep`,
//! `nanosleep` and `select` timeouts become): the call waits until the
//! earliest clock fires, never past the invocation's deadline (the engine's
//! own deadline check then ends the call). There is no idle halt here yet:
//! the wait spins on the clock, costing the function its CPU time as a busy
//! loop would. fd subscriptions are answered at once with ENOTSUP events.

use super::wasi::{clock_ns, range, write_bytes, Ctx, EFAULT, EINVAL};

/// One subscription (`__wasi_subscription_t`) and one event are this long.
const SUB_LEN: u32 = 48;
const EVENT_LEN: u32 = 32;
/// Most subscriptions in one call.
const MAX_SUBS: u32 = 4096;
const ENOTSUP: u16 = 58;
const EVENTTYPE_CLOCK: u8 = 0;
const SUBCLOCK_ABSTIME: u16 = 1;

fn u64_at(mem: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&mem[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Writes event `i` (userdata, error, type) at `out`.
fn put_event(
    mem: &mut [u8],
    out: u32,
    i: u32,
    userdata: u64,
    error: u16,
    ty: u8,
) -> Result<(), i32> {
    let at = out
        .checked_add(i.checked_mul(EVENT_LEN).ok_or(EFAULT)?)
        .ok_or(EFAULT)?;
    let mut ev = [0u8; EVENT_LEN as usize];
    ev[0..8].copy_from_slice(&userdata.to_le_bytes());
    ev[8..10].copy_from_slice(&error.to_le_bytes());
    ev[10] = ty;
    write_bytes(mem, at, &ev)
}

/// `poll_oneoff(in, out, nsubscriptions, nevents)`.
pub(crate) fn poll_oneoff<L>(
    mem: &mut [u8],
    ctx: &Ctx<L>,
    subs: u32,
    out: u32,
    n: u32,
    nevents: u32,
) -> Result<(), i32> {
    if n == 0 || n > MAX_SUBS {
        return Err(EINVAL);
    }
    let all = range(mem, subs, n * SUB_LEN)?;
    // Every event slot must be writable before anything waits.
    range(mem, out, n * EVENT_LEN)?;
    range(mem, nevents, 4)?;
    let now = ctx.clock.monotonic_ns();
    let mut clocks: alloc::vec::Vec<(u64, u64)> = alloc::vec::Vec::new(); // (userdata, wake)
    let mut fds: alloc::vec::Vec<(u64, u8)> = alloc::vec::Vec::new();
    for i in 0..n as usize {
        let s = all.start + i * SUB_LEN as usize;
        let userdata = u64_at(mem, s);
        let tag = mem[s + 8];
        if tag != EVENTTYPE_CLOCK {
            fds.push((userdata, tag));
            continue;
        }
        let id = u32::from_le_bytes([mem[s + 16], mem[s + 17], mem[s + 18], mem[s + 19]]);
        let timeout = u64_at(mem, s + 24);
        let flags = u16::from_le_bytes([mem[s + 40], mem[s + 41]]);
        let wait = if flags & SUBCLOCK_ABSTIME != 0 {
            timeout.saturating_sub(clock_ns(ctx, id as i32)?)
        } else {
            clock_ns(ctx, id as i32)?;
            timeout
        };
        clocks.push((userdata, now.saturating_add(wait)));
    }
    let mut count = 0u32;
    if !fds.is_empty() {
        for (userdata, tag) in fds {
            put_event(mem, out, count, userdata, ENOTSUP, tag)?;
            count += 1;
        }
    } else {
        let wake = clocks.iter().map(|c| c.1).min().unwrap_or(now);
        let deadline_ns = ctx.deadline_ms.saturating_mul(1_000_000);
        while ctx.clock.monotonic_ns() < wake && ctx.clock.realtime_ns() < deadline_ns {
            core::hint::spin_loop();
        }
        let now = ctx.clock.monotonic_ns();
        for (userdata, at) in clocks {
            if at <= now {
                put_event(mem, out, count, userdata, 0, EVENTTYPE_CLOCK)?;
                count += 1;
            }
        }
    }
    write_bytes(mem, nevents, &count.to_le_bytes())
}
