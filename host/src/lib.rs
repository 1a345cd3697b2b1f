//! ember's host side: the `emberd` supervisor and the `ember` CLI.

pub mod aot;
pub mod api;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod code;
pub mod daemon;
pub mod digest;
pub mod env;
pub mod events;
pub mod functions;
pub mod heap;
pub mod invoker;
pub mod keyfile;
pub mod linux;
pub mod logs;
pub mod metrics;
pub mod pool;
pub mod preflight;
pub mod procfs;
pub mod server;
pub mod store;
pub mod tls;
pub mod util;
