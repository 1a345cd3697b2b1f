//! How many connections emberd holds, and which go first: a cap in total
//! and per source address; at a cap the connection that has waited longest
//! without a request in progress (silent, idle, or sending its head) is
//! closed to make room, so idle or half-header floods cannot lock signed
//! clients out. When every connection is busy with a request, the newcomer
//! gets a 503 with `Retry-After`. Also raises `RLIMIT_NOFILE` at start.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, Semaphore};

use super::timeouts::{now_ms, Activity, Timeouts};

/// The connection caps.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub total: usize,
    pub per_ip: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            total: 4096,
            per_ip: 1024,
        }
    }
}

struct Entry {
    ip: IpAddr,
    activity: Arc<Activity>,
    kill: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    open: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Inner {
    /// Forgets connection `id` (once); returns its entry.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.open.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&e.ip);
            }
        }
        Some(e)
    }

    /// Closes the sheddable connection (of `ip`, if given) that has waited
    /// longest; false if there is none.
    fn shed(&mut self, ip: Option<IpAddr>) -> bool {
        let victim = self
            .open
            .iter()
            .filter(|(_, e)| ip.is_none_or(|ip| e.ip == ip) && e.activity.sheddable())
            .min_by_key(|(id, e)| (e.activity.since_ms(), **id))
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.remove(id)) {
            Some(e) => {
                e.kill.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Counters of what the limits did (for `/metrics`).
#[derive(Default)]
pub struct EdgeStats {
    pub shed: std::sync::atomic::AtomicU64,
    pub timed_out: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
}

/// The open connections.
pub struct Conns {
    caps: Caps,
    inner: Mutex<Inner>,
    pub stats: EdgeStats,
}

/// One admitted connection: its activity, the signal that closes it, and
/// its place under the caps (given back on drop).
pub struct Slot {
    id: u64,
    conns: Arc<Conns>,
    pub activity: Arc<Activity>,
    pub kill: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().remove(self.id);
    }
}

impl Conns {
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Conns {
            caps,
            inner: Mutex::new(Inner::default()),
            stats: EdgeStats::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Admits a connection from `ip`, shedding another if a cap is reached;
    /// `None` when nothing can be shed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut inner = self.lock();
        if inner.per_ip.get(&ip).copied().unwrap_or(0) >= self.caps.per_ip {
            if !inner.shed(Some(ip)) {
                return None;
            }
            self.stats.shed.fetch_add(1, Relaxed);
        }
        if inner.open.len() >= self.caps.total {
            if !inner.shed(None) {
                return None;
            }
            self.stats.shed.fetch_add(1, Relaxed);
        }
        let id = inner.next;
        inner.next += 1;
        let activity = Arc::new(Activity::new());
        let kill = Arc::new(Notify::new());
        inner.open.insert(
            id,
            Entry {
                ip,
                activity: activity.clone(),
                kill: kill.clone(),
            },
        );
        *inner.per_ip.entry(ip).or_insert(0) += 1;
        Some(Slot {
            id,
            conns: self.clone(),
            activity,
            kill,
        })
    }

    /// Closes every connection past its deadline; returns how many.
    pub fn reap(&self, t: &Timeouts) -> usize {
        let now = now_ms();
        let mut inner = self.lock();
        let expired: Vec<u64> = inner
            .open
            .iter()
            .filter(|(_, e)| e.activity.expired(now, t))
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            if let Some(e) = inner.remove(*id) {
                e.kill.notify_one();
            }
        }
        let n = expired.len();
        self.stats
            .timed_out
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        n
    }
}

/// How often deadlines are checked.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// Closes connections past their deadlines until `stop` fires.
pub async fn reaper(conns: Arc<Conns>, t: Timeouts, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => { conns.reap(&t); }
            _ = stop.changed() => return,
        }
    }
}

/// The answer to a connection no cap has room for.
fn unavailable() -> Vec<u8> {
    let body = r#"{"Type":"Service","message":"emberd is at its connection limit and every connection is busy; retry later"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nX-Amzn-ErrorType: ServiceException\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Most refusals being written at once (more are just closed).
pub const MAX_REFUSING: usize = 64;

/// Answers 503 on a connection that was not admitted, then closes it
/// (reading briefly first, so the answer is not lost to a reset).
pub fn refuse(mut stream: TcpStream, tls: bool, slots: &Arc<Semaphore>) {
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if !tls {
                stream.write_all(&unavailable()).await?;
            }
            stream.shutdown().await?;
            let mut buf = [0u8; 4096];
            let mut seen = 0;
            while seen < 64 * 1024 {
                match stream.read(&mut buf).await? {
                    0 => break,
                    n => seen += n,
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit now in force.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Caps that fit in `nofile` descriptors, leaving room for everything else
/// emberd opens (store, logs, VM sockets and pipes).
pub fn fit(caps: Caps, nofile: u64) -> Caps {
    const RESERVED: u64 = 1024;
    let room = nofile.saturating_sub(RESERVED).max(64) as usize;
    Caps {
        total: caps.total.min(room),
        per_ip: caps.per_ip.min(caps.total).min(room),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_source_sheds_its_longest_waiting_idle_connection() {
        let conns = Conns::new(Caps {
            total: 10,
            per_ip: 2,
        });
        let a = conns.admit(ip("10.0.0.1")).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = conns.admit(ip("10.0.0.1")).unwrap();
        let _other = conns.admit(ip("10.0.0.2")).unwrap();
        let _c = conns.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(conns.open(), 3);
        // `a` was shed (its kill signal is pending); `b` stays.
        assert!(tokio_test_notified(&a.kill));
        assert!(!tokio_test_notified(&b.kill));
    }

    #[test]
    fn busy_connections_are_never_shed() {
        let conns = Conns::new(Caps {
            total: 2,
            per_ip: 2,
        });
        let a = conns.admit(ip("10.0.0.1")).unwrap();
        let b = conns.admit(ip("10.0.0.2")).unwrap();
        a.activity.request_started();
        b.activity.request_started();
        assert!(conns.admit(ip("10.0.0.3")).is_none());
        b.activity.request_done();
        assert!(conns.admit(ip("10.0.0.3")).is_some());
        drop(a);
        assert_eq!(conns.open(), 0, "b was shed, the third dropped, a dropped");
    }

    #[test]
    fn caps_fit_the_descriptor_limit() {
        let c = fit(Caps::default(), 2048);
        assert_eq!((c.total, c.per_ip), (1024, 1024));
        let c = fit(Caps::default(), 1 << 20);
        assert_eq!((c.total, c.per_ip), (4096, 1024));
    }

    /// Whether `n` holds a stored permit (consumes it).
    fn tokio_test_notified(n: &Notify) -> bool {
        use std::future::Future;
        let fut = n.notified();
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        fut.as_mut().poll(&mut cx).is_ready()
    }
}
