//! Empty stand-in for `memfd` (see Cargo.toml): wasmtime without std never uses it.
#![no_std]
