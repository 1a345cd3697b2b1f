//! One Linux environment's launch: the `ember-vmm` command (kernel,
//! initramfs whose `/init` is `ember-agent`, vsock, the function's memory
//! and vCPUs, the drives [`crate::linux::LinuxGuests`] prepared), jailed like
//! wasm environments, and the `Init` that points the agent at `/var/task`.

use super::{Code, Console, EnvSpec, Guest, InitSpec, LaunchConfig};
use crate::linux::caps::Found;
use crate::linux::Drives;

/// Lambda's CPU share: one vCPU per 1,769 MB of function memory.
const MIB_PER_VCPU: u32 = 1769;
/// Lambda's largest function (10,240 MB) gets 6 vCPUs.
const MAX_VCPUS: u32 = 6;

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
        api: false,
        restore: None,
        slot: None,
    }
}

/// Where the agent mounts the code image (vdb).
pub const TASK_ROOT: &str = "/var/task";

/// What the agent is told at `Init`: code from the mounted image.
pub fn init_spec(spec: &EnvSpec) -> InitSpec {
    spec.init_spec(Code::Path(TASK_ROOT.into()))
}
