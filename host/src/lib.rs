//! ember's host side: the `emberd` supervisor and the `ember` CLI.

pub mod agent;
pub mod code;
pub mod pool;
pub mod store;
pub mod util;
