//! ember's host side: the `emberd` supervisor and the `ember` CLI.

pub mod store;
pub mod util;
