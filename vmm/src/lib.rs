//! ember's VMM as a library: [`vm::Vm`] is one KVM microVM (build from a
//! validated [`config::VmConfig`], start, pause, resume, wait, stop);
//! [`cli`] turns an `ember-vmm` command line into that config; [`sandbox`]
//! is the seccomp + Landlock confinement the process puts itself in; [`api`]
//! serves Firecracker's API socket (`--api-sock`) around a `Vm`. The
//! `ember-vmm` binary (`src/main.rs`) is a thin wrapper: parse, build, run,
//! map the end to an exit code (`ember_abi::exit::ExitCode`).

mod abi_ports;
pub mod api;
mod boot;
pub mod cli;
pub mod config;
mod device_manager;
mod devices;
mod event_loop;
pub mod exit;
mod host;
pub mod logger;
mod memory;
mod panic_watch;
pub mod phases;
pub mod sandbox;
pub mod snapshot;
mod vcpu;
pub mod vm;
