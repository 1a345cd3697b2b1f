//! The Linux guest agent (`ember-agent`): PID 1 of a Linux microVM, or an
//! ordinary process in tests. It speaks the host↔agent protocol over vsock
//! (or a Unix socket), serves the Lambda Runtime API to an unmodified runtime
//! (`bootstrap`), and turns the runtime's behaviour — responses, errors, crashes,
//! timeouts, output — into protocol messages.
//!
//! Layout: [`config`] (paths, ports, devices), [`transport`] (vsock / Unix
//! socket behind one trait), [`http`] (a small bounded HTTP/1.1 codec), [`link`] (frames out to the host),
//! [`runtime_api`] (the Runtime API routes and the invocation hand-off),
//! [`runtime`] (the bootstrap process tree, its output and memory),
//! [`reaper`] (zombie reaping, which PID 1 owes the system), [`pid1`] (mounts,
//! device discovery, switch into the runtime image, power-off), [`agent`] (the
//! event loop that ties them together).

pub mod agent;
pub mod config;
pub mod env;
pub mod http;
pub mod link;
pub mod pid1;
pub mod reaper;
pub mod runtime;
pub mod runtime_api;
pub mod transport;

pub use agent::{run, AgentError};
pub use config::AgentConfig;
pub use transport::{TcpTransport, Transport, UnixTransport, VsockTransport};
