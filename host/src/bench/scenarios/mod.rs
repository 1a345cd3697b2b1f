//! The benchmark scenarios: `vmm-boot` (VMMs side by side on one guest),
//! `function` (invocations through emberd), `ramp` (simultaneous cold
//! starts), `snapshot-restore` (ember-vmm's API socket), and the emberd
//! they talk to.

pub mod emberd;
pub mod function;
pub mod ramp;
pub mod snapshot;
pub mod vmm_boot;

use std::path::PathBuf;

/// Why a scenario could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Missing(String),
    #[error("{}", .0.display())]
    Io(PathBuf, #[source] std::io::Error),
    #[error("emberd unreachable at {0}: {1} (start one, or pass --throwaway)")]
    Unreachable(String, String),
    #[error("emberd: {0}")]
    Api(String),
}
