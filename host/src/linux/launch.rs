//! One Linux environment: the images it mounts (runtime image as vda, the
//! function's code image as vdb, its merged layers as vdc when it has any,
//! all read-only), the `ember-vmm` launch (kernel, initramfs whose `/init`
//! is `ember-agent`, vsock, the function's memory), jailed like wasm
//! environments, and the `Init` that points the agent at `/var/task`.

use std::path::PathBuf;
use std::sync::Arc;

use super::caps::Found;
use super::{parse_layer_arn, runtime_image, ImageCache, LinuxError};
use crate::agent::{Code, Console, Guest, InitSpec, LaunchConfig};
use crate::pool::EnvSpec;
use crate::store::{Store, StoreError};

/// Lambda's CPU share: one vCPU per 1,769 MB of function memory.
const MIB_PER_VCPU: u32 = 1769;
/// Lambda's largest function (10,240 MB) gets 6 vCPUs.
const MAX_VCPUS: u32 = 6;

/// The drives of one environment, in guest order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drives {
    pub runtime: PathBuf,
    pub code: PathBuf,
    pub layers: Option<PathBuf>,
}

impl Drives {
    pub fn in_order(&self) -> Vec<PathBuf> {
        let mut v = vec![self.runtime.clone(), self.code.clone()];
        v.extend(self.layers.clone());
        v
    }
}

/// vCPUs for a function of `memory_mib` (Lambda scales CPU with memory).
pub fn vcpus_for(memory_mib: u32) -> u8 {
    memory_mib
        .div_ceil(MIB_PER_VCPU)
        .clamp(1, MAX_VCPUS)
        .try_into()
        .unwrap_or(1)
}

/// The kernel command line: quiet serial console, reboot (= VM exit) on
/// panic, and the agent's settings (`ember_*` words reach init as
/// environment): `/tmp` sized to the function's ephemeral storage, the
/// region its ARNs name, and the init phase's limit.
pub fn kernel_cmdline(ephemeral_mib: u32, init_timeout: std::time::Duration) -> String {
    format!(
        "console=ttyS0 reboot=k panic=-1 quiet ember_tmp_size={ephemeral_mib}m ember_region={} \
         ember_init_timeout_ms={}",
        crate::util::REGION,
        init_timeout.as_millis()
    )
}

/// The launch of `spec` on `drives`, from `base` (the VMM and jail emberd
/// uses for every environment).
pub fn launch_config(
    base: &LaunchConfig,
    found: &Found,
    spec: &EnvSpec,
    drives: &Drives,
) -> LaunchConfig {
    LaunchConfig {
        vmm: base.vmm.clone(),
        guest: Guest::Linux {
            kernel: found.kernel.clone(),
            initrd: Some(found.initramfs.clone()),
            cmdline: kernel_cmdline(spec.ephemeral_mib, found.init_timeout),
        },
        // Lambda's memory size is the whole VM's; the kernel and agent take
        // their share of it as they do in Lambda.
        mem_mib: spec.memory_mib,
        vcpus: vcpus_for(spec.memory_mib),
        work_root: spec.work_dir.clone(),
        // Kernel and agent messages (boot problems show here); the
        // function's own output reaches the host as Log frames instead.
        console: Console::File(spec.work_dir.join("console.log")),
        boot_timeout: found.boot_timeout,
        // After a timeout or crash the agent re-initialises the runtime
        // before it answers (Lambda's re-init): the answer may come up to
        // the init phase's limit after the deadline.
        deadline_grace: base.deadline_grace + found.init_timeout,
        drives: drives.in_order(),
        extra_args: Vec::new(),
        jail: base.jail.clone(),
    }
}

/// Where the agent mounts the code image (vdb).
pub const TASK_ROOT: &str = "/var/task";

/// What the agent is told at `Init`: code from the mounted image.
pub fn init_spec(spec: &EnvSpec) -> InitSpec {
    crate::vmlauncher::init_spec(spec, Code::Path(TASK_ROOT.into()))
}

/// The Linux side of emberd's launcher.
pub struct LinuxGuests {
    found: Found,
    cache: ImageCache,
    store: Arc<Store>,
}

impl LinuxGuests {
    pub fn new(found: Found, cache: ImageCache, store: Arc<Store>) -> Self {
        Self {
            found,
            cache,
            store,
        }
    }

    pub fn found(&self) -> &Found {
        &self.found
    }

    /// emberd is stopping: remove the plaintext images.
    pub fn close(&self) {
        self.cache.clear();
    }

    /// The blob addresses of the layer versions `arns`, in order.
    fn layer_blobs(&self, arns: &[String]) -> Result<Vec<String>, LinuxError> {
        arns.iter()
            .map(|arn| {
                let (account, name, v) =
                    parse_layer_arn(arn).ok_or_else(|| LinuxError::Layer(arn.clone()))?;
                let l = self
                    .store
                    .get_layer_for_use(&crate::util::scoped_name(account, name), v)
                    .map_err(|_| LinuxError::Layer(arn.clone()))?;
                Ok(l.code.blob)
            })
            .collect()
    }

    /// Builds the images of a function that was just created or changed in
    /// the background, so its first cold start does not pay for them (a few
    /// hundred ms for a small ZIP, seconds for tens of MB). Failures are only
    /// logged: the launch builds again and reports them to the caller.
    pub fn prepare(self: &Arc<Self>, code_blob: &str, layers: &[String]) {
        let (me, blob, layers) = (self.clone(), code_blob.to_string(), layers.to_vec());
        std::thread::spawn(move || {
            let load = || {
                me.store
                    .blobs
                    .get(&blob)
                    .map_err(|e| LinuxError::Blob(e.into()))
            };
            let built = me
                .cache
                .code_image(&blob, load)
                .and_then(|_| me.layers_image(&layers));
            if let Err(e) = built {
                eprintln!(
                    "emberd: preparing images of code {blob}: {}",
                    crate::util::error_chain(&e)
                );
            }
        });
    }

    /// The merged image of the layer versions `arns` (none: no image).
    fn layers_image(&self, arns: &[String]) -> Result<Option<PathBuf>, LinuxError> {
        if arns.is_empty() {
            return Ok(None);
        }
        let blobs = self.layer_blobs(arns)?;
        let load = |b: &str| {
            self.store
                .blobs
                .get(b)
                .map_err(|e| LinuxError::Blob(StoreError::from(e)))
        };
        self.cache.layers_image(&blobs, load).map(Some)
    }

    /// The drives of `spec`, building its code and layer images if needed.
    pub fn drives(&self, spec: &EnvSpec) -> Result<Drives, LinuxError> {
        let image = runtime_image(&spec.runtime)
            .map(|i| self.found.images_dir.join(i))
            .filter(|p| p.is_file())
            .and_then(|p| super::caps::real_path(&p))
            .ok_or_else(|| LinuxError::NoRuntimeImage(spec.runtime.clone()))?;
        let code = self
            .cache
            .code_image(&spec.code_blob, || Ok(spec.code.to_vec()))?;
        Ok(Drives {
            runtime: image,
            code,
            layers: self.layers_image(&spec.layers)?,
        })
    }
}
