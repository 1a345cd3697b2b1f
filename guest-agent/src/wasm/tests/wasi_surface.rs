//! The WASI surface per engine: the names that decide which imports get
//! ENOSYS stubs are exactly what the engine's linker defines.

use super::*;

/// Every function of WASI preview 1 (`wasi_snapshot_preview1.witx`).
const WASI_P1: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// The names that decide which imports get ENOSYS stubs are exactly the
/// functions the engine's linker defines: a function registered but not
/// listed (its import would get a second definition) or listed but not
/// registered (the module would not link) fails here.
#[test]
fn the_implemented_lists_are_what_the_linker_defines() {
    let bare = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#);
    let rt = runtime(&bare.unwrap());
    let mut listed: Vec<&str> = crate::wasm::wasi::IMPLEMENTED
        .iter()
        .chain(crate::wasm::wasi_fs::IMPLEMENTED)
        .copied()
        .collect();
    listed.sort_unstable();
    let n = listed.len();
    listed.dedup();
    assert_eq!(listed.len(), n, "a WASI function is listed twice");
    for name in &listed {
        assert!(
            WASI_P1.contains(name),
            "{name} is not a WASI preview 1 function"
        );
    }
    let mut defined = rt.wasi_defined(WASI_P1);
    defined.sort_unstable();
    assert_eq!(defined, listed);
}
