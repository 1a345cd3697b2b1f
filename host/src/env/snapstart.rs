//! SnapStart in the launcher: taking a version's snapshot (a fresh
//! kernel-less VM with its API socket, `Init` with
//! `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`, pause, `PUT
//! /snapshot/create`) and restoring it for a cold start (a fresh jailed
//! `ember-vmm` in API mode, `PUT /snapshot/load` with the decrypted files
//! and `vsock_override` to this environment's socket, the agent's `Ready`
//! saying it was restored and initialised). A restore that fails for any
//! reason but the function's own hook is the caller's cue to boot + Init.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::launcher::{kernelless_config, log_lines, VmLauncher};
use super::slots::Slots;
use super::{
    AgentError, EnvError, EnvSpec, Environment, Fault, LaunchConfig, LaunchError, OnSpawn,
    RestoreFrom,
};
use crate::snapstart::vault::{SnapKey, Vault, VaultError};

/// The environment variable Lambda sets to tell a runtime how it was
/// initialised; `snap-start` makes the agent run `ember_before_snapshot`.
pub const INIT_TYPE_VAR: &str = "AWS_LAMBDA_INITIALIZATION_TYPE";
/// How long the VMM may take to pause and write a snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a restore did not give an environment.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("no snapshot vault")]
    NoVault,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("restored VM")]
    Agent(#[source] AgentError),
    #[error("the restored agent was not initialised (timings: {0})")]
    NotInitialized(String),
    /// The function's `ember_after_restore` hook failed: the function's
    /// error, not the snapshot's (no fallback).
    #[error("the ember_after_restore hook failed")]
    Hook,
}

/// A timing the agent reported in its `Ready`.
fn timing(env: &Environment, name: &str) -> Option<u64> {
    env.ready()
        .timings
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
}

/// What a restore needs: the launcher's kernel-less VM config and CPU rule,
/// and the vault (a copy is what the restored spares restore with).
#[derive(Clone)]
pub struct Restorer {
    pub(super) base: LaunchConfig,
    pub(super) mib_per_vcpu: u32,
    pub(super) vault: Arc<Vault>,
    /// Where slot takes and discards are counted.
    pub(super) metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Restorer {
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// An environment restored from `key`'s snapshot: in a slot's VMM
    /// (started ahead, see [`super::slots`]) if `slots` has a live one and
    /// the load in it works, else in a freshly started VMM.
    pub fn restore(
        &self,
        spec: &EnvSpec,
        key: &SnapKey,
        on_spawn: &OnSpawn,
        slots: Option<&Slots>,
    ) -> Result<Environment, RestoreError> {
        let plain = self.vault.open_plain(key)?;
        let slot = slots.and_then(Slots::take);
        let mut cfg = kernelless_config(&self.base, self.mib_per_vcpu, spec);
        cfg.work_root = spec.work_dir.clone();
        // The jail's memory limit follows the snapshot's guest memory.
        cfg.mem_mib = plain.mem_mib.max(spec.memory_mib);
        let mut env = None;
        if let Some(slot) = slot {
            // It left the slots' pid file: the caller's takes it over.
            if let Some(pid) = slot.pid() {
                on_spawn.call(pid);
            }
            match slot.restore(&plain, &cfg) {
                Ok(e) => {
                    if let Some(m) = &self.metrics {
                        m.restore_slot_taken();
                    }
                    env = Some(e);
                }
                Err(e) => {
                    if let Some(m) = &self.metrics {
                        m.restore_slot_discarded();
                    }
                    eprintln!(
                        "emberd: restore slot failed for {}:{} ({}); restoring in a new VMM",
                        key.function,
                        key.version,
                        crate::util::error_chain(&e)
                    );
                }
            }
        }
        let env = match env {
            Some(e) => e,
            None => {
                cfg.restore = Some(RestoreFrom {
                    state: plain.state.clone(),
                    mem: plain.mem.clone(),
                });
                Environment::launch_with(&cfg, on_spawn).map_err(RestoreError::Agent)?
            }
        };
        if timing(&env, "initialized") != Some(1) {
            let t = format!("{:?}", env.ready().timings);
            return Err(RestoreError::NotInitialized(t));
        }
        if timing(&env, "after_restore_failed") == Some(1) {
            return Err(RestoreError::Hook);
        }
        Ok(env)
    }
}

impl VmLauncher {
    /// A fresh environment restored from `key`'s snapshot.
    pub(super) fn restore(
        &self,
        spec: &EnvSpec,
        key: &SnapKey,
        on_spawn: &OnSpawn,
    ) -> Result<Environment, RestoreError> {
        self.restorer().ok_or(RestoreError::NoVault)?.restore(
            spec,
            key,
            on_spawn,
            self.slots.as_deref(),
        )
    }

    /// See [`super::EnvLauncher::take_snapshot`].
    pub(super) fn snapshot_into(&self, spec: &EnvSpec, out: &Path) -> Result<(), EnvError> {
        if self.runs_on_linux(spec) {
            return Err(EnvError::Launch(LaunchError::Unavailable(format!(
                "SnapStart snapshots kernel-less environments only; {} runs in a Linux guest here",
                spec.runtime
            ))));
        }
        let mut cfg = self.config_for_spec(spec);
        cfg.work_root = spec.work_dir.clone();
        cfg.api = true;
        let mut env = Environment::launch_with(&cfg, &OnSpawn::default())
            .map_err(|e| EnvError::Launch(LaunchError::Agent(e)))?;
        // The Init a cold start would send (python3.11: the runtime's trees
        // and environment; every wasm function: its layers), as snap-start.
        let mut init = self.wasm_init(spec, &env)?;
        init.env.retain(|(k, _)| k != INIT_TYPE_VAR);
        init.env.push((INIT_TYPE_VAR.into(), "snap-start".into()));
        match env.init(&init) {
            Ok(_) => {}
            Err(AgentError::InitFailed { error, logs, .. }) => {
                return Err(EnvError::Init(error, log_lines(logs.lines).collect()))
            }
            Err(e) => return Err(EnvError::Died(Fault::Agent(e))),
        }
        let (state, mem) = env
            .snapshot(SNAPSHOT_TIMEOUT)
            .map_err(|e| EnvError::Died(Fault::Agent(e)))?;
        let moved = std::fs::rename(&state, out.join("state"))
            .and_then(|()| std::fs::rename(&mem, out.join("mem")));
        drop(env);
        moved.map_err(|e| EnvError::Launch(LaunchError::WorkDir(e)))
    }
}
