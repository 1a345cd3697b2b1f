//! The WASI preview 1 (`wasi_snapshot_preview1`) subset a function gets:
//! stdin = the event, stdout = the response, stderr = log lines, environment,
//! arguments, clocks, seeded randomness, `proc_exit`, and the file system
//! (`wasi_fs` over `fs`: preopened trees and `/tmp`); every other WASI import
//! returns ENOSYS. All guest pointers are checked against the linear memory
//! slice, so a module can never make the agent touch memory outside it.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::fs::Files;
use super::rng::ChaCha20;
use super::Clock;
use ember_abi::protocol::{LogStream, MAX_PAYLOAD};

pub(crate) const WASI: &str = "wasi_snapshot_preview1";

/// WASI errno values (wasi/api.h).
pub(crate) const ESUCCESS: i32 = 0;
pub(crate) const EBADF: i32 = 8;
pub(crate) const EFAULT: i32 = 21;
const EFBIG: i32 = 22;
pub(crate) const EINVAL: i32 = 28;
pub(crate) const ENOSYS: i32 = 52;

/// Most log bytes kept per invocation; later lines are counted as dropped.
pub(crate) const MAX_LOG_BYTES: usize = 1024 * 1024;
/// A stderr line longer than this is cut into several log lines.
const MAX_LINE: usize = 16 * 1024;
/// Most iovecs in one fd_read/fd_write call (POSIX IOV_MAX).
const MAX_IOVS: u32 = 1024;

/// Per-store state the WASI functions work on; `L` is the engine's store
/// limiter (memory cap = the function's memory).
pub(crate) struct Ctx<L> {
    pub stdin: Vec<u8>,
    pub stdin_pos: usize,
    pub stdout: Vec<u8>,
    /// The function tried to write more than MAX_PAYLOAD bytes of response.
    pub stdout_overflow: bool,
    stderr_partial: Vec<u8>,
    pub logs: Vec<(LogStream, String)>,
    log_bytes: usize,
    pub logs_dropped: usize,
    /// "KEY=VALUE" entries.
    pub env: Vec<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
    pub rng: ChaCha20,
    pub clock: Arc<dyn Clock>,
    pub limits: L,
    /// The running call's deadline (ms since the Unix epoch), for engines
    /// that check it from a callback.
    pub deadline_ms: u64,
    /// The function's file system (kept across the environment's instances).
    pub fs: Files,
}

impl<L> Ctx<L> {
    pub(crate) fn new(rng: ChaCha20, clock: Arc<dyn Clock>, limits: L) -> Self {
        Ctx {
            stdin: Vec::new(),
            stdin_pos: 0,
            stdout: Vec::new(),
            stdout_overflow: false,
            stderr_partial: Vec::new(),
            logs: Vec::new(),
            log_bytes: 0,
            logs_dropped: 0,
            env: Vec::new(),
            args: Vec::new(),
            rng,
            clock,
            limits,
            deadline_ms: 0,
            fs: Files::default(),
        }
    }

    /// Clears the per-invocation buffers and loads a new event.
    pub(crate) fn start_invocation(&mut self, payload: &[u8], env: Vec<Vec<u8>>) {
        self.stdin.clear();
        self.stdin.extend_from_slice(payload);
        self.stdin_pos = 0;
        self.stdout = Vec::new();
        self.stdout_overflow = false;
        self.stderr_partial.clear();
        self.logs = Vec::new();
        self.log_bytes = 0;
        self.logs_dropped = 0;
        self.env = env;
    }

    pub(crate) fn log(&mut self, stream: LogStream, line: String) {
        if self.log_bytes + line.len() > MAX_LOG_BYTES {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += line.len();
        self.logs.push((stream, line));
    }

    /// Emits a trailing stderr line that had no newline.
    pub(crate) fn flush_stderr(&mut self) {
        if !self.stderr_partial.is_empty() {
            let line = String::from_utf8_lossy(&self.stderr_partial).into_owned();
            self.stderr_partial.clear();
            self.log(LogStream::Stderr, line);
        }
    }

    fn write_stderr(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (line, rest, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            self.stderr_partial.extend_from_slice(line);
            if complete || self.stderr_partial.len() >= MAX_LINE {
                let text = String::from_utf8_lossy(&self.stderr_partial).into_owned();
                self.stderr_partial.clear();
                self.log(LogStream::Stderr, text);
            }
            bytes = rest;
        }
    }
}

// Bounds-checked access to linear memory. Every guest-supplied pointer and
// length goes through these; an out-of-range access is EFAULT, never a panic.

pub(crate) fn range(mem: &[u8], ptr: u32, len: u32) -> Result<core::ops::Range<usize>, i32> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(EFAULT)?;
    if end > mem.len() {
        return Err(EFAULT);
    }
    Ok(start..end)
}

pub(crate) fn read_u32(mem: &[u8], ptr: u32) -> Result<u32, i32> {
    let r = range(mem, ptr, 4)?;
    let b = &mem[r];
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn write_bytes(mem: &mut [u8], ptr: u32, bytes: &[u8]) -> Result<(), i32> {
    let len = u32::try_from(bytes.len()).map_err(|_| EFAULT)?;
    let r = range(mem, ptr, len)?;
    mem[r].copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(mem: &mut [u8], ptr: u32, v: u32) -> Result<(), i32> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

pub(crate) fn write_u64(mem: &mut [u8], ptr: u32, v: u64) -> Result<(), i32> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

/// The (ptr, len) pairs of an iovec array.
pub(crate) fn iovecs(mem: &[u8], iovs: u32, count: u32) -> Result<Vec<(u32, u32)>, i32> {
    if count > MAX_IOVS {
        return Err(EINVAL);
    }
    let mut out = Vec::new();
    for i in 0..count {
        let at = iovs.checked_add(i * 8).ok_or(EFAULT)?;
        out.push((
            read_u32(mem, at)?,
            read_u32(mem, at.checked_add(4).ok_or(EFAULT)?)?,
        ));
    }
    Ok(out)
}

/// Writes a list of strings the WASI way: pointers into `ptrs`, the
/// NUL-terminated bytes packed into `buf`.
pub(crate) fn put_strings(
    mem: &mut [u8],
    list: &[Vec<u8>],
    ptrs: u32,
    buf: u32,
) -> Result<(), i32> {
    let mut at = buf;
    for (i, s) in list.iter().enumerate() {
        let slot = ptrs.checked_add(i as u32 * 4).ok_or(EFAULT)?;
        write_u32(mem, slot, at)?;
        write_bytes(mem, at, s)?;
        let len = u32::try_from(s.len()).map_err(|_| EFAULT)?;
        let nul = at.checked_add(len).ok_or(EFAULT)?;
        write_bytes(mem, nul, &[0])?;
        at = nul.checked_add(1).ok_or(EFAULT)?;
    }
    Ok(())
}

pub(crate) fn put_sizes(
    mem: &mut [u8],
    list: &[Vec<u8>],
    count_ptr: u32,
    size_ptr: u32,
) -> Result<(), i32> {
    let size: usize = list.iter().map(|s| s.len() + 1).sum();
    write_u32(mem, count_ptr, list.len() as u32)?;
    write_u32(mem, size_ptr, u32::try_from(size).map_err(|_| EFAULT)?)
}

pub(crate) fn fd_write<L>(
    mem: &mut [u8],
    ctx: &mut Ctx<L>,
    fd: i32,
    iovs: u32,
    count: u32,
    nwritten: u32,
) -> Result<(), i32> {
    if fd > 2 {
        return super::wasi_fs::file_write(mem, ctx, fd, iovs, count, None, nwritten);
    }
    if fd != 1 && fd != 2 {
        return Err(EBADF);
    }
    let mut total: u32 = 0;
    for (ptr, len) in iovecs(mem, iovs, count)? {
        let bytes = &mem[range(mem, ptr, len)?];
        if fd == 1 {
            if ctx.stdout.len() + bytes.len() > MAX_PAYLOAD {
                ctx.stdout_overflow = true;
                return Err(EFBIG);
            }
            ctx.stdout.extend_from_slice(bytes);
        } else {
            ctx.write_stderr(bytes);
        }
        total = total.saturating_add(len);
    }
    write_u32(mem, nwritten, total)
}

pub(crate) fn fd_read<L>(
    mem: &mut [u8],
    ctx: &mut Ctx<L>,
    fd: i32,
    iovs: u32,
    count: u32,
    nread: u32,
) -> Result<(), i32> {
    if fd > 2 {
        return super::wasi_fs::file_read(mem, ctx, fd, iovs, count, None, nread);
    }
    if fd != 0 {
        return Err(EBADF);
    }
    let mut total: u32 = 0;
    for (ptr, len) in iovecs(mem, iovs, count)? {
        let dst = range(mem, ptr, len)?;
        let src = &ctx.stdin[ctx.stdin_pos..];
        let n = src.len().min(dst.len());
        mem[dst.start..dst.start + n].copy_from_slice(&src[..n]);
        ctx.stdin_pos += n;
        total = total.saturating_add(n as u32);
        if n < len as usize {
            break;
        }
    }
    write_u32(mem, nread, total)
}

pub(crate) fn clock_ns<L>(ctx: &Ctx<L>, id: i32) -> Result<u64, i32> {
    match id {
        0 => Ok(ctx.clock.realtime_ns()),
        1..=3 => Ok(ctx.clock.monotonic_ns()),
        _ => Err(EINVAL),
    }
}

/// The WASI functions of this module, each named once (the table form of
/// `wasi_table`): `wasi_core!(names [])` lists them, `wasi_core!(register
/// linker)` registers them inside `define_wasi!`.
macro_rules! wasi_core {
    ($($mode:tt)*) => {
        $crate::wasm::wasi_table::wasi_table! { $($mode)*
            args_sizes_get(n: i32, size: i32) |m, ctx| {
                put_sizes(m, &ctx.args, n as u32, size as u32)
            };
            args_get(ptrs: i32, buf: i32) |m, ctx| {
                put_strings(m, &ctx.args, ptrs as u32, buf as u32)
            };
            environ_sizes_get(n: i32, size: i32) |m, ctx| {
                put_sizes(m, &ctx.env, n as u32, size as u32)
            };
            environ_get(ptrs: i32, buf: i32) |m, ctx| {
                put_strings(m, &ctx.env, ptrs as u32, buf as u32)
            };
            clock_res_get(id: i32, out: i32) |m, ctx| {
                clock_ns(ctx, id)?;
                write_u64(m, out as u32, 1_000)
            };
            clock_time_get(id: i32, _precision: i64, out: i32) |m, ctx| {
                write_u64(m, out as u32, clock_ns(ctx, id)?)
            };
            random_get(buf: i32, len: i32) |m, ctx| {
                let r = range(m, buf as u32, len as u32)?;
                ctx.rng.fill(&mut m[r]);
                Ok(())
            };
            fd_write(fd: i32, iovs: i32, n: i32, out: i32) |m, ctx| {
                fd_write(m, ctx, fd, iovs as u32, n as u32, out as u32)
            };
            fd_read(fd: i32, iovs: i32, n: i32, out: i32) |m, ctx| {
                fd_read(m, ctx, fd, iovs as u32, n as u32, out as u32)
            };
            fd_fdstat_get(fd: i32, out: i32) |m, ctx| fsw::fdstat_get(m, ctx, fd, out as u32);
            // Past the last preopen EBADF ends wasi-libc's preopen scan
            // cleanly (any other errno makes it abort).
            fd_prestat_get(fd: i32, out: i32) |m, ctx| fsw::prestat_get(m, ctx, fd, out as u32);
            fd_close(fd: i32) |_, ctx| fsw::fd_close(ctx, fd);
            sched_yield => |_: Caller<'_, Ctx>| ESUCCESS;
            poll_oneoff(subs: i32, out: i32, n: i32, nevents: i32) |m, ctx| {
                $crate::wasm::wasi_poll::poll_oneoff(
                    m,
                    ctx,
                    subs as u32,
                    out as u32,
                    n as u32,
                    nevents as u32,
                )
            };
            proc_exit => |_: Caller<'_, Ctx>, code: i32| -> Result<(), Error> {
                Err(exit_error(code))
            };
        }
    };
}

/// The WASI functions [`wasi_core!`] defines (the file system's are
/// `wasi_fs::IMPLEMENTED`); other WASI imports get ENOSYS stubs.
pub(crate) const IMPLEMENTED: &[&str] = wasi_core!(names []);

/// Defines `add_to_linker` and `add_enosys_stub` for one engine (wasmi and
/// wasmtime have the same embedding API shape, so the WASI surface is written
/// once). In scope at the call site: the engine's `Caller`, `Error`, `Extern`,
/// `FuncType`, `Linker`, `Val`, `ValType`, a `LinkerError` type, and `Ctx`
/// (this module's `Ctx` with the engine's limiter); `$exit` turns a
/// `proc_exit` status into the engine's `Error`, `$msg` a message.
macro_rules! define_wasi {
    ($exit:expr, $msg:expr) => {
        use $crate::wasm::wasi::{
            clock_ns, fd_read, fd_write, put_sizes, put_strings, range, write_u64, EFAULT, ENOSYS,
            ESUCCESS, WASI,
        };
        use $crate::wasm::wasi_fs as fsw;

        /// Runs `f` on the caller's exported memory and state; returns the errno.
        fn with_mem(
            caller: &mut Caller<'_, Ctx>,
            f: impl FnOnce(&mut [u8], &mut Ctx) -> Result<(), i32>,
        ) -> i32 {
            let Some(Extern::Memory(mem)) = caller.get_export("memory") else {
                return EFAULT;
            };
            let (data, ctx) = mem.data_and_store_mut(&mut *caller);
            match f(data, ctx) {
                Ok(()) => ESUCCESS,
                Err(e) => e,
            }
        }

        /// `proc_exit`'s status as the engine's error.
        fn exit_error(code: i32) -> Error {
            $exit(code)
        }

        /// Registers the WASI functions the agent implements: the tables of
        /// `wasi` and `wasi_fs`.
        pub(crate) fn add_to_linker(linker: &mut Linker<Ctx>) -> Result<(), LinkerError> {
            $crate::wasm::wasi::wasi_core!(register linker);
            $crate::wasm::wasi_fs::wasi_fs_table!(register linker);
            Ok(())
        }

        /// Defines an ENOSYS stub for `name` with the import's own signature: the
        /// first i32 result is ENOSYS, other results zero.
        pub(crate) fn add_enosys_stub(
            linker: &mut Linker<Ctx>,
            name: &str,
            ty: FuncType,
        ) -> Result<(), LinkerError> {
            let results: alloc::vec::Vec<ValType> =
                ty.results().into_iter().map(|t| t.clone()).collect();
            linker.func_new(
                WASI,
                name,
                ty,
                move |_c, _params: &[Val], out: &mut [Val]| {
                    for (slot, t) in out.iter_mut().zip(results.iter()) {
                        *slot = match t {
                            ValType::I32 => Val::I32(ENOSYS),
                            ValType::I64 => Val::I64(0),
                            ValType::F32 => Val::from(0f32),
                            ValType::F64 => Val::from(0f64),
                            _ => return Err($msg("unsupported WASI import signature")),
                        };
                    }
                    Ok(())
                },
            )?;
            Ok(())
        }
    };
}
pub(crate) use define_wasi;
pub(crate) use wasi_core;
