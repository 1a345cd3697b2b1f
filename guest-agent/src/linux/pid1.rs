//! What the agent does as the guest's init: mount the kernel file systems,
//! find its virtio devices, mount the runtime image as the new root with the
//! code at `/var/task`, a layer at `/opt` and a size-limited `/tmp`, switch
//! into it, set up a cgroup for memory accounting, and power the VM off at
//! the end (PID 1 must never exit: the kernel would panic).

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::Path;

use super::config::Devices;

/// A mount or root switch that failed.
#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    #[error("mount {what} on {target} failed")]
    Mount {
        what: String,
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("switching root to {0} failed")]
    SwitchRoot(String, #[source] io::Error),
    #[error("path contains a NUL byte: {0:?}")]
    BadPath(String),
}

fn cstr(s: &str) -> Result<CString, Pid1Error> {
    CString::new(s).map_err(|_| Pid1Error::BadPath(s.to_string()))
}

/// mount(2) with optional source/type/data.
fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), Pid1Error> {
    let _ = fs::create_dir_all(target);
    let (s, t, f, d) = (cstr(src)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    let fptr = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    let dptr = if data.is_empty() {
        std::ptr::null()
    } else {
        d.as_ptr().cast()
    };
    // SAFETY: every pointer is a NUL-terminated string (or null where the
    // kernel accepts null) that lives until the call returns.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), fptr, flags, dptr) };
    if rc < 0 {
        return Err(Pid1Error::Mount {
            what: format!("{src} ({fstype})"),
            target: target.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// /dev, /proc and /sys inside the initramfs (before anything else).
pub fn early_mounts() -> Result<(), Pid1Error> {
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    reopen_console();
    mount(
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )?;
    mount(
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )
}

/// Points stdin/stdout/stderr at /dev/console when the kernel could not (an
/// initramfs without a /dev/console node leaves init with no descriptors).
fn reopen_console() {
    // SAFETY: fcntl(F_GETFD) on fd 2 only queries; no memory involved.
    if unsafe { libc::fcntl(2, libc::F_GETFD) } >= 0 {
        return;
    }
    let Ok(console) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&console);
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which are unused here.
        unsafe { libc::dup2(fd, target) };
    }
}

/// The virtio devices the kernel found, by kind.
#[derive(Debug, Default, Clone)]
pub struct Found {
    pub block: Vec<String>,
    pub net: usize,
    pub vsock: bool,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "block=[{}] net={} vsock={}",
            self.block.join(","),
            self.net,
            self.vsock
        )
    }
}

/// Lists virtio devices from sysfs (virtio device ids: 1 net, 2 block, 19 vsock).
pub fn discover() -> Found {
    let mut found = Found::default();
    if let Ok(entries) = fs::read_dir("/sys/bus/virtio/devices") {
        for e in entries.flatten() {
            let id = fs::read_to_string(e.path().join("device")).unwrap_or_default();
            match u32::from_str_radix(id.trim().trim_start_matches("0x"), 16) {
                Ok(1) => found.net += 1,
                Ok(19) => found.vsock = true,
                _ => {}
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/sys/block") {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("vd"))
            .collect();
        names.sort();
        found.block = names;
    }
    found
}

/// Mounts a read-only image, trying squashfs then ext4.
fn mount_image(dev: &Path, target: &str) -> Result<(), Pid1Error> {
    let dev = dev.display().to_string();
    let ro = libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID;
    mount(&dev, target, "squashfs", ro, "").or_else(|_| mount(&dev, target, "ext4", ro, "noload"))
}

/// Mounts the runtime image as the new root (code, layer, /tmp, kernel file
/// systems inside it) and switches into it. Without a runtime device the
/// agent stays in the initramfs. Returns what was mounted, for the console.
pub fn enter_runtime(dev: &Devices, found: &Found) -> Result<Vec<String>, Pid1Error> {
    let has = |p: &Path| {
        p.file_name()
            .is_some_and(|n| found.block.iter().any(|b| n.to_string_lossy() == *b))
    };
    let mut mounted = Vec::new();
    let root = if has(&dev.runtime) {
        mount_image(&dev.runtime, "/newroot")?;
        mounted.push(format!("{} on /", dev.runtime.display()));
        "/newroot"
    } else {
        ""
    };
    if has(&dev.code) {
        mount_image(&dev.code, &format!("{root}/var/task"))?;
        mounted.push(format!("{} on /var/task", dev.code.display()));
    }
    if has(&dev.layer) {
        mount_image(&dev.layer, &format!("{root}/opt"))?;
        mounted.push(format!("{} on /opt", dev.layer.display()));
    }
    let tmp_opts = format!("size={},mode=1777", dev.tmp_size);
    mount(
        "tmpfs",
        &format!("{root}/tmp"),
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        &tmp_opts,
    )?;
    mounted.push(format!("tmpfs on /tmp ({})", dev.tmp_size));
    if !root.is_empty() {
        for m in ["/dev", "/proc", "/sys"] {
            mount(m, &format!("{root}{m}"), "", libc::MS_MOVE, "")?;
        }
        switch_root(root)?;
    }
    Ok(mounted)
}

/// Makes `root` the root directory (as switch_root does: move it over `/`,
/// then chroot). The initramfs stays in memory; it is small.
fn switch_root(root: &str) -> Result<(), Pid1Error> {
    let err = |e| Pid1Error::SwitchRoot(root.to_string(), e);
    std::env::set_current_dir(root).map_err(err)?;
    mount(".", "/", "", libc::MS_MOVE, "")?;
    std::os::unix::fs::chroot(".").map_err(err)?;
    std::env::set_current_dir("/").map_err(err)
}

/// Mounts cgroup2 and enables the memory controller for child cgroups.
pub fn setup_cgroup(root: &Path) -> Result<(), Pid1Error> {
    let r = root.display().to_string();
    mount(
        "cgroup2",
        &r,
        "cgroup2",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )?;
    fs::write(root.join("cgroup.subtree_control"), "+memory").map_err(|source| Pid1Error::Mount {
        what: "+memory".into(),
        target: r,
        source,
    })
}

/// Brings up the loopback interface: the Runtime API listens on 127.0.0.1
/// and nothing else configures `lo` in a guest whose init is the agent.
pub fn loopback_up() -> io::Result<()> {
    configure_interface("lo", None)
}

/// Gives `ifname` an IPv4 address and prefix and brings it up (the TCP host
/// path of QEMU tests; vsock needs no IP configuration).
pub fn ipv4_up(ifname: &str, addr: std::net::Ipv4Addr, prefix: u8) -> io::Result<()> {
    configure_interface(ifname, Some((addr, prefix)))
}

fn sockaddr_v4(ip: std::net::Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in and sockaddr are plain data of the same size (16
    // bytes); all-zero is valid for both.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
    // SAFETY: same size, both plain data; the kernel reads it as sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn configure_interface(ifname: &str, v4: Option<(std::net::Ipv4Addr, u8)>) -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned from here on (closed on drop).
    let _owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid starting value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if ifname.len() >= req.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    if let Some((ip, prefix)) = v4 {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        for (ioctl, value) in [
            (libc::SIOCSIFADDR, ip),
            (libc::SIOCSIFNETMASK, std::net::Ipv4Addr::from(mask)),
        ] {
            req.ifr_ifru.ifru_addr = sockaddr_v4(value);
            // SAFETY: the request reads the `req` we own, valid for the call.
            if unsafe { libc::ioctl(fd, ioctl, &req) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: SIOCGIFFLAGS reads into the `req` we own, valid for the call.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags field.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the `req` we own, valid for the call.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Seconds since the kernel started, for `Ready.boot_us`.
pub fn uptime_us() -> Option<u64> {
    let s = fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1e6) as u64)
}

/// Ends the VM: sync, then reboot(2) (Firecracker-style VMMs and QEMU with
/// `-no-reboot` exit on a guest reset). Never returns.
pub fn power_off() -> ! {
    // SAFETY: sync(2) and reboot(2) take no pointers; PID 1 may call them.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::park();
    }
}
