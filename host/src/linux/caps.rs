//! Whether this host can run Linux guests, decided once at emberd's start:
//! hardware KVM (not PVM, on which a stock kernel cannot boot), a built
//! kernel, the initramfs holding the agent, a runtime image per runtime, and
//! the code-image tool. The result is an [`Offer`]: the Linux runtimes
//! CreateFunction accepts, or the one-line reason it refuses them.

use std::path::{Path, PathBuf};

use super::{ImageCache, LINUX_RUNTIMES};

/// `emberd --linux-guests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinuxMode {
    /// Offer Linux runtimes when the host has hardware KVM and the kernel and
    /// images are found.
    Auto,
    /// Offer them whenever the kernel and images are found, skipping the
    /// hardware check (on PVM the guests then fail to boot: for testing the
    /// launch path, or a PVM-enabled guest kernel).
    Force,
    /// Never offer them.
    Off,
}

/// emberd's flags for Linux guests (flattened into `emberd`'s own).
#[derive(Debug, Clone, clap::Args)]
pub struct LinuxArgs {
    /// Linux runtimes (provided*, python3.11): auto, force or off.
    #[arg(long, value_enum, default_value = "auto", env = "EMBER_LINUX_GUESTS")]
    pub linux_guests: LinuxMode,
    /// The guest kernel (default: the newest vmlinux that
    /// kernel-config/build.sh cached under $EMBER_CACHE or ~/.cache/ember).
    #[arg(long, env = "EMBER_VMLINUX")]
    pub linux_kernel: Option<PathBuf>,
    /// Directory holding initramfs.cpio and the runtime images (default: the
    /// newest set images/build-images.sh cached).
    #[arg(long, env = "EMBER_LINUX_IMAGES")]
    pub linux_images: Option<PathBuf>,
    /// The tool turning ZIPs into code images (default: images/code-image.sh
    /// of the repository emberd was built in).
    #[arg(long, env = "EMBER_CODE_IMAGE_TOOL")]
    pub code_image_tool: Option<PathBuf>,
    /// Seconds a Linux guest may take from spawn to its agent's `Ready` (a
    /// microVM kernel boots in well under a second on hardware; raise it
    /// only for emulated hosts, e.g. the nested test host of tests/hvhost).
    #[arg(long, default_value_t = 20, env = "EMBER_LINUX_BOOT_TIMEOUT")]
    pub linux_boot_timeout: u64,
    /// Seconds a Linux function's init phase may take (Lambda's 10 s: the
    /// runtime's start to its first `next`); raise it only for emulated
    /// hosts, where importing a runtime alone can take longer.
    #[arg(long, default_value_t = 10, env = "EMBER_LINUX_INIT_TIMEOUT")]
    pub linux_init_timeout: u64,
}

/// What CreateFunction may accept besides `wasm`.
#[derive(Debug, Clone, Default)]
pub struct Offer {
    offered: Vec<String>,
    /// Why Linux runtimes are not offered at all (`None` with nothing
    /// offered: emberd was started without Linux support, e.g. in unit tests).
    why_not: Option<String>,
    /// Where runtime images were looked for (for the per-runtime message).
    images_dir: Option<PathBuf>,
}

impl Offer {
    /// An offer of exactly `runtimes` (API tests; emberd uses [`detect`]).
    pub fn offering(runtimes: &[&str]) -> Self {
        Offer {
            offered: runtimes.iter().map(|r| r.to_string()).collect(),
            ..Offer::default()
        }
    }

    /// The runtimes offered, in [`LINUX_RUNTIMES`] order.
    pub fn offered(&self) -> &[String] {
        &self.offered
    }

    /// Ok if `runtime` (a Linux runtime name) can run here, else the message
    /// CreateFunction returns.
    pub fn check(&self, runtime: &str) -> Result<(), String> {
        if self.offered.iter().any(|r| r == runtime) {
            return Ok(());
        }
        if self.offered.is_empty() {
            let why = self
                .why_not
                .as_deref()
                .unwrap_or("Linux guests are not configured");
            return Err(format!(
                "The runtime parameter of {runtime} needs a Linux guest, which this host cannot run ({why}). Use Runtime 'wasm'."
            ));
        }
        let dir = self
            .images_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let image = super::runtime_image(runtime).unwrap_or("an image");
        Err(format!(
            "Runtime {runtime} is not available on this host (no {image} in {dir}). Available: wasm, {}.",
            self.offered.join(", ")
        ))
    }
}

/// The files a Linux environment boots from.
#[derive(Debug, Clone)]
pub struct Found {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub images_dir: PathBuf,
    pub tool: PathBuf,
    /// Spawn to `Ready` (`--linux-boot-timeout`).
    pub boot_timeout: std::time::Duration,
    /// The agent's init phase limit (`--linux-init-timeout`).
    pub init_timeout: std::time::Duration,
}

/// Why KVM on this host (`root` = `/` outside tests) cannot boot a stock
/// Linux guest, if so. Same rule as ember-vmm's host detection.
pub fn kvm_refusal(root: &Path) -> Option<String> {
    match KvmKind::detect(root) {
        KvmKind::None => Some("no /dev/kvm".into()),
        KvmKind::Pvm => Some(
            "host KVM is PVM (software virtualization): a stock Linux guest kernel cannot boot on it"
                .into(),
        ),
        KvmKind::Unknown => {
            Some("KVM is neither kvm_intel nor kvm_amd (not hardware-backed)".into())
        }
        KvmKind::HardwareVmx | KvmKind::HardwareSvm => None,
    }
}

/// What `/dev/kvm` is backed by (also recorded with every `ember bench`
/// result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvmKind {
    /// PVM: software virtualization without VMX/SVM (guest CPL0 code is
    /// emulated, so only CPL3 guests run at native speed).
    Pvm,
    /// Hardware virtualization (kvm_intel).
    HardwareVmx,
    /// Hardware virtualization (kvm_amd).
    HardwareSvm,
    /// `/dev/kvm` exists but no known module is loaded.
    Unknown,
    /// No `/dev/kvm`.
    None,
}

impl KvmKind {
    /// Detects the kind under `root` (`/` on a live system) from the loaded
    /// KVM module (`/sys/module/kvm_pvm`, `kvm_intel`, `kvm_amd`).
    pub fn detect(root: &Path) -> KvmKind {
        let module = |m: &str| root.join("sys/module").join(m).exists();
        if !root.join("dev/kvm").exists() {
            KvmKind::None
        } else if module("kvm_pvm") {
            KvmKind::Pvm
        } else if module("kvm_intel") {
            KvmKind::HardwareVmx
        } else if module("kvm_amd") {
            KvmKind::HardwareSvm
        } else {
            KvmKind::Unknown
        }
    }
}

/// `$EMBER_CACHE`, else `~/.cache/ember` (where the build scripts cache).
fn build_cache() -> Option<PathBuf> {
    std::env::var_os("EMBER_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ember")))
}

/// The most recently modified `dir/<entry>/<file>` among entries whose name
/// passes `pick` (the build scripts' cache layout).
fn newest(dir: &Path, pick: impl Fn(&str) -> bool, file: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| pick(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.join(file).is_file())
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
}

/// `images/code-image.sh` in an ancestor of the running executable (emberd
/// runs from `target/<profile>/` of the repository), else in the repository
/// emberd was built from (a target directory outside the tree).
fn repo_tool() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    exe.ancestors()
        .chain(std::iter::once(built_from.as_path()))
        .map(|a| a.join("images/code-image.sh"))
        .find(|p| p.is_file())
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// `path` with every symlink resolved: the jailer takes only real files (it
/// refuses a link rather than chown or mount what it names), and the image
/// cache's `set-*` directories are made of links to the built artefacts.
pub fn real_path(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// Finds the kernel, initramfs, images and tool; the reason if one is missing.
pub fn find_files(args: &LinuxArgs) -> Result<Found, String> {
    let cache = build_cache();
    let kernel = args
        .linux_kernel
        .clone()
        .or_else(|| {
            let dir = cache.as_ref()?.join("kernel");
            // Cached kernels sit in `<16 hex digits>/` (not `build-*/`).
            let key = |n: &str| n.len() == 16 && n.bytes().all(|b| b.is_ascii_hexdigit());
            Some(newest(&dir, key, "vmlinux")?.join("vmlinux"))
        })
        .filter(|k| k.is_file())
        .and_then(|k| real_path(&k))
        .ok_or("no guest kernel: run kernel-config/build.sh or pass --linux-kernel")?;
    let images_dir = args
        .linux_images
        .clone()
        .or_else(|| {
            let dir = cache.as_ref()?.join("images");
            newest(&dir, |n| n.starts_with("set-"), "initramfs.cpio")
        })
        .ok_or("no Linux guest images: run images/build-images.sh or pass --linux-images")?;
    let initramfs = Some(images_dir.join("initramfs.cpio"))
        .filter(|i| i.is_file())
        .and_then(|i| real_path(&i))
        .ok_or_else(|| format!("no initramfs.cpio in {}", images_dir.display()))?;
    let tool = args
        .code_image_tool
        .clone()
        .or_else(repo_tool)
        .filter(|t| t.is_file())
        .ok_or("no code-image tool: pass --code-image-tool (images/code-image.sh)")?;
    for cmd in ["mksquashfs", "python3"] {
        if !on_path(cmd) {
            return Err(format!(
                "{cmd} is not installed (the code-image tool needs it)"
            ));
        }
    }
    Ok(Found {
        kernel,
        initramfs,
        images_dir,
        tool,
        boot_timeout: std::time::Duration::from_secs(args.linux_boot_timeout.max(1)),
        init_timeout: std::time::Duration::from_secs(args.linux_init_timeout.max(1)),
    })
}

/// Decides what emberd offers: `(offer, files)`; files are `Some` exactly
/// when at least one Linux runtime is offered.
pub fn detect(args: &LinuxArgs, root: &Path) -> (Offer, Option<Found>) {
    let refuse = |why: String| {
        (
            Offer {
                why_not: Some(why),
                ..Offer::default()
            },
            None,
        )
    };
    match args.linux_guests {
        LinuxMode::Off => return refuse("emberd runs with --linux-guests off".into()),
        LinuxMode::Auto => {
            if let Some(why) = kvm_refusal(root) {
                return refuse(why);
            }
        }
        LinuxMode::Force => {}
    }
    let found = match find_files(args) {
        Ok(f) => f,
        Err(why) => return refuse(why),
    };
    let offered: Vec<String> = LINUX_RUNTIMES
        .iter()
        .filter(|(_, img)| img.is_some_and(|i| found.images_dir.join(i).is_file()))
        .map(|(r, _)| r.to_string())
        .collect();
    if offered.is_empty() {
        return refuse(format!(
            "no runtime image in {}",
            found.images_dir.display()
        ));
    }
    let offer = Offer {
        offered,
        why_not: None,
        images_dir: Some(found.images_dir.clone()),
    };
    (offer, Some(found))
}

/// Startup: the offer, and the Linux side of the launcher when anything is
/// offered. Prints what was decided (emberd's log says why a runtime is
/// missing before any client asks).
pub fn setup(
    args: &LinuxArgs,
    cache_dir: &Path,
    store: std::sync::Arc<crate::store::Store>,
) -> (Offer, Option<std::sync::Arc<super::LinuxGuests>>) {
    let (offer, found) = detect(args, Path::new("/"));
    let Some(found) = found else {
        eprintln!(
            "emberd: Linux runtimes not offered: {}",
            offer.why_not.as_deref().unwrap_or("")
        );
        return (offer, None);
    };
    let cache = match ImageCache::open(cache_dir, &found.tool) {
        Ok(c) => c,
        Err(e) => {
            let why = crate::util::error_chain(&e);
            eprintln!("emberd: Linux runtimes not offered: {why}");
            return (
                Offer {
                    why_not: Some(why),
                    ..Offer::default()
                },
                None,
            );
        }
    };
    eprintln!(
        "emberd: Linux runtimes offered: {} (kernel {}, images {})",
        offer.offered.join(", "),
        found.kernel.display(),
        found.images_dir.display()
    );
    let guests = super::LinuxGuests::new(found, cache, store);
    (offer, Some(std::sync::Arc::new(guests)))
}
