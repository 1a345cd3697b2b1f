//! The WASI preview 1 file-system calls over [`super::fs::Files`]: preopens,
//! `path_open`, reads, writes, seeks, stats, directory listings and the
//! `/tmp` mutations. Each moves bytes between linear memory and the file
//! system through the bounds-checked helpers of `wasi` (EFAULT for any
//! pointer outside memory) and returns the errno; paths must be UTF-8.
//! `wasi_fs_table!` names them once, for the list and for both engines' linkers.

use alloc::vec;

use super::fs::{FsError, OpenFlags, Stat, FIRST_FD};
use super::wasi::{iovecs, range, write_bytes, write_u32, write_u64, Ctx, EBADF, EINVAL};

/// Rights bits (wasi/api.h) that decide how `path_open` opens a file.
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;
/// Largest single read or write the agent copies at once.
const MAX_IO: usize = 16 * 1024 * 1024;
/// Seek on a stream (stdio).
const ESPIPE: i32 = 70;

fn err(e: FsError) -> i32 {
    e.errno()
}

/// A UTF-8 path from linear memory.
fn path(mem: &[u8], ptr: u32, len: u32) -> Result<&str, i32> {
    if len as usize > super::fs::tree::MAX_PATH {
        return Err(FsError::NameTooLong.errno());
    }
    core::str::from_utf8(&mem[range(mem, ptr, len)?]).map_err(|_| EINVAL)
}

fn fd_of(fd: i32) -> Result<u32, i32> {
    u32::try_from(fd).map_err(|_| EBADF)
}

pub(crate) fn prestat_get<L>(mem: &mut [u8], ctx: &Ctx<L>, fd: i32, out: u32) -> Result<(), i32> {
    // EBADF past the last preopen ends wasi-libc's preopen scan.
    let name = ctx.fs.preopen(fd_of(fd)?).ok_or(EBADF)?;
    let mut b = [0u8; 8];
    b[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
    write_bytes(mem, out, &b)
}

pub(crate) fn prestat_dir_name<L>(
    mem: &mut [u8],
    ctx: &Ctx<L>,
    fd: i32,
    ptr: u32,
    len: u32,
) -> Result<(), i32> {
    let name = ctx.fs.preopen(fd_of(fd)?).ok_or(EBADF)?;
    if (len as usize) < name.len() {
        return Err(EINVAL);
    }
    write_bytes(mem, ptr, name.as_bytes())
}

/// `fd_fdstat_get` for every fd: stdio is a character device.
pub(crate) fn fdstat_get<L>(mem: &mut [u8], ctx: &Ctx<L>, fd: i32, out: u32) -> Result<(), i32> {
    let (filetype, append) = match fd {
        0..=2 => (2, false),
        _ => ctx.fs.fdstat(fd_of(fd)?).map_err(err)?,
    };
    let mut stat = [0u8; 24];
    stat[0] = filetype;
    stat[2] = u8::from(append);
    // Rights: all; what is refused is refused by the call itself.
    stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    stat[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    write_bytes(mem, out, &stat)
}

pub(crate) fn fd_close<L>(ctx: &mut Ctx<L>, fd: i32) -> Result<(), i32> {
    match fd {
        0..=2 => Ok(()),
        _ => ctx.fs.close(fd_of(fd)?).map_err(err),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn path_open<L>(
    mem: &mut [u8],
    ctx: &mut Ctx<L>,
    fd: i32,
    p: u32,
    len: u32,
    oflags: i32,
    rights: u64,
    fdflags: i32,
    out: u32,
) -> Result<(), i32> {
    let name = path(mem, p, len)?;
    let f = OpenFlags {
        create: oflags & 1 != 0,
        directory: oflags & 2 != 0,
        exclusive: oflags & 4 != 0,
        truncate: oflags & 8 != 0,
        read: rights & RIGHT_FD_READ != 0,
        write: rights & RIGHT_FD_WRITE != 0,
        append: fdflags & 1 != 0,
    };
    let new = ctx.fs.open(fd_of(fd)?, name, f).map_err(err)?;
    write_u32(mem, out, new)
}

/// `fd_read` (at = None) or `fd_pread` on an open file.
pub(crate) fn file_read<L>(
    mem: &mut [u8],
    ctx: &mut Ctx<L>,
    fd: i32,
    iovs: u32,
    count: u32,
    mut at: Option<u64>,
    nread: u32,
) -> Result<(), i32> {
    let fd = fd_of(fd)?;
    let mut total: u32 = 0;
    for (ptr, len) in iovecs(mem, iovs, count)? {
        let dst = range(mem, ptr, len)?;
        let want = dst.len().min(MAX_IO);
        let dst = &mut mem[dst.start..dst.start + want];
        let n = ctx.fs.read(fd, dst, at).map_err(err)?;
        total = total.saturating_add(n as u32);
        if let Some(a) = at.as_mut() {
            *a += n as u64;
        }
        if n < want {
            break;
        }
    }
    write_u32(mem, nread, total)
}

/// `fd_write` (at = None) or `fd_pwrite` on an open file.
pub(crate) fn file_write<L>(
    mem: &mut [u8],
    ctx: &mut Ctx<L>,
    fd: i32,
    iovs: u32,
    count: u32,
    mut at: Option<u64>,
    nwritten: u32,
) -> Result<(), i32> {
    let fd = fd_of(fd)?;
    let mut total: u32 = 0;
    for (ptr, len) in iovecs(mem, iovs, count)? {
        let src = &mem[range(mem, ptr, len)?];
        let n = ctx.fs.write(fd, src, at).map_err(err)?;
        total = total.saturating_add(n as u32);
        if let Some(a) = at.as_mut() {
            *a += n as u64;
        }
    }
    write_u32(mem, nwritten, total)
}

pub(crate) fn fd_seek<L>(
    mem: &mut [u8],
    ctx: &mut Ctx<L>,
    fd: i32,
    offset: i64,
    whence: i32,
    out: u32,
) -> Result<(), i32> {
    if (0..=2).contains(&fd) {
        return Err(ESPIPE);
    }
    let whence = u8::try_from(whence).map_err(|_| EINVAL)?;
    let pos = ctx.fs.seek(fd_of(fd)?, offset, whence).map_err(err)?;
    write_u64(mem, out, pos)
}

fn put_stat(mem: &mut [u8], out: u32, st: Stat) -> Result<(), i32> {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&st.dev.to_le_bytes());
    b[8..16].copy_from_slice(&st.ino.to_le_bytes());
    b[16] = st.filetype;
    b[24..32].copy_from_slice(&1u64.to_le_bytes()); // nlink
    b[32..40].copy_from_slice(&st.size.to_le_bytes());
    // atim, mtim, ctim: 0 (the Unix epoch), as archive times are not kept.
    write_bytes(mem, out, &b)
}

pub(crate) fn fd_filestat_get<L>(
    mem: &mut [u8],
    ctx: &Ctx<L>,
    fd: i32,
    out: u32,
) -> Result<(), i32> {
    let st = match fd {
        0..=2 => Stat {
            dev: 0,
            ino: fd as u64,
            filetype: 2,
            size: 0,
        },
        _ => ctx.fs.fd_stat(fd_of(fd)?).map_err(err)?,
    };
    put_stat(mem, out, st)
}

pub(crate) fn path_filestat_get<L>(
    mem: &mut [u8],
    ctx: &Ctx<L>,
    fd: i32,
    p: u32,
    len: u32,
    out: u32,
) -> Result<(), i32> {
    let st = ctx
        .fs
        .path_stat(fd_of(fd)?, path(mem, p, len)?)
        .map_err(err)?;
    put_stat(mem, out, st)
}

/// `fd_readdir`: dirents (d_next u64, d_ino u64, d_namlen u32, d_type u8,
/// padding to 24 bytes, then the name) from entry `cookie` on, cut at
/// `buf_len` (a short count tells the caller it reached the end).
pub(crate) fn fd_readdir<L>(
    mem: &mut [u8],
    ctx: &Ctx<L>,
    fd: i32,
    buf: u32,
    buf_len: u32,
    cookie: u64,
    out: u32,
) -> Result<(), i32> {
    let entries = ctx.fs.readdir(fd_of(fd)?).map_err(err)?;
    let dst = range(mem, buf, buf_len)?;
    let mut bytes = vec![];
    let skip = usize::try_from(cookie).unwrap_or(usize::MAX);
    for (i, e) in entries.iter().enumerate().skip(skip) {
        if bytes.len() >= dst.len() {
            break;
        }
        let mut head = [0u8; 24];
        head[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        head[8..16].copy_from_slice(&e.ino.to_le_bytes());
        head[16..20].copy_from_slice(&(e.name.len() as u32).to_le_bytes());
        head[20] = e.filetype;
        bytes.extend_from_slice(&head);
        bytes.extend_from_slice(e.name.as_bytes());
    }
    let n = bytes.len().min(dst.len());
    mem[dst.start..dst.start + n].copy_from_slice(&bytes[..n]);
    write_u32(mem, out, n as u32)
}

pub(crate) fn path_create_directory<L>(
    mem: &mut [u8],
    ctx: &mut Ctx<L>,
    fd: i32,
    p: u32,
    len: u32,
) -> Result<(), i32> {
    let name = path(mem, p, len)?;
    ctx.fs.mkdir(fd_of(fd)?, name).map_err(err)
}

pub(crate) fn path_remove<L>(
    mem: &mut [u8],
    ctx: &mut Ctx<L>,
    fd: i32,
    p: u32,
    len: u32,
    dir: bool,
) -> Result<(), i32> {
    let name = path(mem, p, len)?;
    ctx.fs.remove(fd_of(fd)?, name, dir).map_err(err)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn path_rename<L>(
    mem: &mut [u8],
    ctx: &mut Ctx<L>,
    fd1: i32,
    p1: u32,
    l1: u32,
    fd2: i32,
    p2: u32,
    l2: u32,
) -> Result<(), i32> {
    let old = path(mem, p1, l1)?;
    let new = path(mem, p2, l2)?;
    ctx.fs
        .rename(fd_of(fd1)?, old, fd_of(fd2)?, new)
        .map_err(err)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn path_readlink<L>(
    mem: &mut [u8],
    ctx: &Ctx<L>,
    fd: i32,
    p: u32,
    len: u32,
    buf: u32,
    buf_len: u32,
    out: u32,
) -> Result<(), i32> {
    let target = ctx
        .fs
        .readlink(fd_of(fd)?, path(mem, p, len)?)
        .map_err(err)?;
    let n = target.len().min(buf_len as usize);
    write_bytes(mem, buf, &target.as_bytes()[..n])?;
    write_u32(mem, out, n as u32)
}

pub(crate) fn fd_filestat_set_size<L>(ctx: &mut Ctx<L>, fd: i32, size: i64) -> Result<(), i32> {
    let size = u64::try_from(size).map_err(|_| EINVAL)?;
    ctx.fs.set_size(fd_of(fd)?, size).map_err(err)
}

/// Calls that succeed without effect on any valid fd (`fd_sync`,
/// `fd_datasync`, `fd_advise`, `fd_filestat_set_times`): the data is
/// in memory, times are not kept.
pub(crate) fn fd_noop<L>(ctx: &Ctx<L>, fd: i32) -> Result<(), i32> {
    match fd {
        0..=2 => Ok(()),
        fd if fd >= FIRST_FD as i32 && ctx.fs.owns(fd as u32) => Ok(()),
        _ => Err(EBADF),
    }
}

/// The file-system calls, each named once (the table form of `wasi_table`;
/// `define_wasi!` registers them with `register linker`). `wasi_core!` routes
/// fd_read/fd_write/fd_close/fd_fdstat_get/fd_prestat_get here too.
macro_rules! wasi_fs_table {
    ($($mode:tt)*) => {
        $crate::wasm::wasi_table::wasi_table! { $($mode)*
            fd_prestat_dir_name(fd: i32, p: i32, l: i32) |m, ctx| {
                fsw::prestat_dir_name(m, ctx, fd, p as u32, l as u32)
            };
            path_open(
                fd: i32,
                _dirflags: i32,
                p: i32,
                l: i32,
                oflags: i32,
                rights: i64,
                _inheriting: i64,
                fdflags: i32,
                out: i32
            ) |m, ctx| {
                fsw::path_open(
                    m,
                    ctx,
                    fd,
                    p as u32,
                    l as u32,
                    oflags,
                    rights as u64,
                    fdflags,
                    out as u32,
                )
            };
            fd_pread(fd: i32, iovs: i32, n: i32, at: i64, out: i32) |m, ctx| {
                let at = Some(at as u64);
                fsw::file_read(m, ctx, fd, iovs as u32, n as u32, at, out as u32)
            };
            fd_pwrite(fd: i32, iovs: i32, n: i32, at: i64, out: i32) |m, ctx| {
                let at = Some(at as u64);
                fsw::file_write(m, ctx, fd, iovs as u32, n as u32, at, out as u32)
            };
            fd_seek(fd: i32, off: i64, whence: i32, out: i32) |m, ctx| {
                fsw::fd_seek(m, ctx, fd, off, whence, out as u32)
            };
            fd_tell(fd: i32, out: i32) |m, ctx| fsw::fd_seek(m, ctx, fd, 0, 1, out as u32);
            fd_filestat_get(fd: i32, out: i32) |m, ctx| {
                fsw::fd_filestat_get(m, ctx, fd, out as u32)
            };
            path_filestat_get(fd: i32, _flags: i32, p: i32, l: i32, out: i32) |m, ctx| {
                fsw::path_filestat_get(m, ctx, fd, p as u32, l as u32, out as u32)
            };
            fd_readdir(fd: i32, buf: i32, len: i32, cookie: i64, out: i32) |m, ctx| {
                let (buf, len, cookie) = (buf as u32, len as u32, cookie as u64);
                fsw::fd_readdir(m, ctx, fd, buf, len, cookie, out as u32)
            };
            path_create_directory(fd: i32, p: i32, l: i32) |m, ctx| {
                fsw::path_create_directory(m, ctx, fd, p as u32, l as u32)
            };
            path_remove_directory(fd: i32, p: i32, l: i32) |m, ctx| {
                fsw::path_remove(m, ctx, fd, p as u32, l as u32, true)
            };
            path_unlink_file(fd: i32, p: i32, l: i32) |m, ctx| {
                fsw::path_remove(m, ctx, fd, p as u32, l as u32, false)
            };
            path_rename(fd1: i32, p1: i32, l1: i32, fd2: i32, p2: i32, l2: i32) |m, ctx| {
                fsw::path_rename(m, ctx, fd1, p1 as u32, l1 as u32, fd2, p2 as u32, l2 as u32)
            };
            path_readlink(fd: i32, p: i32, l: i32, buf: i32, bl: i32, out: i32) |m, ctx| {
                let (buf, bl, out) = (buf as u32, bl as u32, out as u32);
                fsw::path_readlink(m, ctx, fd, p as u32, l as u32, buf, bl, out)
            };
            fd_filestat_set_size(fd: i32, size: i64) |_, ctx| {
                fsw::fd_filestat_set_size(ctx, fd, size)
            };
            fd_sync(fd: i32) |_, ctx| fsw::fd_noop(ctx, fd);
            fd_datasync(fd: i32) |_, ctx| fsw::fd_noop(ctx, fd);
            fd_advise(fd: i32, _off: i64, _len: i64, _advice: i32) |_, ctx| {
                fsw::fd_noop(ctx, fd)
            };
            fd_filestat_set_times(fd: i32, _a: i64, _m: i64, _flags: i32) |_, ctx| {
                fsw::fd_noop(ctx, fd)
            };
        }
    };
}
pub(crate) use wasi_fs_table;

/// The file-system calls [`wasi_fs_table!`] defines.
pub(crate) const IMPLEMENTED: &[&str] = wasi_fs_table!(names []);
