//! The table form of the WASI surface: each WASI function is written once,
//! as an entry of a table macro (`wasi_core!` in `wasi`, `wasi_fs_table!`
//! in `wasi_fs`), and [`wasi_table!`] turns that table into either the list
//! of names the agent implements (`names []`, which decides which imports
//! get ENOSYS stubs) or the engine's `func_wrap` calls (`register linker`,
//! inside `define_wasi!`). So the list and the registrations cannot differ.
//!
//! Entries, each ending in `;`:
//! - `name(param: type, …) |mem, ctx| body` — `body` runs on the caller's
//!   exported memory and state (`with_mem`) and yields `Result<(), errno>`;
//! - `name => closure` — the closure takes the engine's `Caller` itself.

/// Expands a WASI table in one of two modes; see the module comment. In
/// `register` mode the call site has `WASI`, `Caller`, `Ctx` and `with_mem`
/// in scope (as `define_wasi!` does) and returns the linker's error with `?`.
macro_rules! wasi_table {
    (names [$($done:ident)*]) => {
        &[$(stringify!($done)),*]
    };
    (names [$($done:ident)*] $name:ident => $f:expr; $($rest:tt)*) => {
        $crate::wasm::wasi_table::wasi_table!(names [$($done)* $name] $($rest)*)
    };
    (names [$($done:ident)*]
        $name:ident ($($p:ident: $t:ty),*) |$m:tt, $c:tt| $body:expr; $($rest:tt)*) => {
        $crate::wasm::wasi_table::wasi_table!(names [$($done)* $name] $($rest)*)
    };
    (register $linker:ident) => {};
    (register $linker:ident $name:ident => $f:expr; $($rest:tt)*) => {
        $linker.func_wrap(WASI, stringify!($name), $f)?;
        $crate::wasm::wasi_table::wasi_table!(register $linker $($rest)*);
    };
    (register $linker:ident
        $name:ident ($($p:ident: $t:ty),*) |$m:tt, $c:tt| $body:expr; $($rest:tt)*) => {
        $linker.func_wrap(
            WASI,
            stringify!($name),
            |mut caller: Caller<'_, Ctx>, $($p: $t),*| with_mem(&mut caller, |$m, $c| $body),
        )?;
        $crate::wasm::wasi_table::wasi_table!(register $linker $($rest)*);
    };
}
pub(crate) use wasi_table;
