//! Linux runtimes in emberd (`provided*`, `python3.11`): deciding at startup
//! whether this host can boot Linux guests and which runtimes it offers
//! ([`caps`]), the read-only code and layer images each function needs,
//! built with `images/code-image.sh` and cached per content ([`images`]),
//! and the drives of one environment ([`guests`]); the `ember-vmm` launch
//! of one Linux environment is [`crate::env::linux`].
//! DESIGN.md, "Linux guest" and "emberd: Linux environments".

pub mod caps;
pub mod guests;
pub mod images;

pub use caps::{LinuxArgs, LinuxMode, Offer};
pub use guests::{Drives, LinuxGuests};
pub use images::ImageCache;

/// Runtime names emberd knows besides `wasm`, with the runtime image each
/// boots from (a file in the images directory). `python3.12` is a name AWS
/// clients send; no image exists for it yet, so it is known but never offered.
pub const LINUX_RUNTIMES: &[(&str, Option<&str>)] = &[
    ("provided", Some("provided.squashfs")),
    ("provided.al2", Some("provided.squashfs")),
    ("provided.al2023", Some("provided.squashfs")),
    ("python3.11", Some("python3.11.squashfs")),
    ("python3.12", None),
];

/// Whether `runtime` names a Linux runtime (as opposed to `wasm`).
pub fn is_linux_runtime(runtime: &str) -> bool {
    LINUX_RUNTIMES.iter().any(|(r, _)| *r == runtime)
}

/// The runtime image file `runtime` boots from, if there is one.
pub fn runtime_image(runtime: &str) -> Option<&'static str> {
    LINUX_RUNTIMES
        .iter()
        .find(|(r, _)| *r == runtime)
        .and_then(|(_, img)| *img)
}

/// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION` → (ACCOUNT, NAME,
/// VERSION); the store keeps the layer as `util::scoped_name(ACCOUNT, NAME)`.
pub fn parse_layer_arn(arn: &str) -> Option<(&str, &str, u64)> {
    match arn.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", _, "lambda", _, account, "layer", name, v] => {
            Some((account, name, v.parse().ok()?))
        }
        _ => None,
    }
}

/// Why a Linux environment could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("runtime {0} has no runtime image on this host")]
    NoRuntimeImage(String),
    #[error("layer {0} is malformed or no longer exists")]
    Layer(String),
    #[error("cannot read the stored code")]
    Blob(#[source] crate::store::StoreError),
    #[error("image cache {0}")]
    Cache(std::path::PathBuf, #[source] std::io::Error),
    #[error("cannot run the code-image tool {0}")]
    Tool(std::path::PathBuf, #[source] std::io::Error),
    #[error("building the code image failed: {0}")]
    Build(String),
    #[error(
        "image path {0} contains ',' or ':', which ember-vmm/ember-jailer arguments cannot carry"
    )]
    BadPath(std::path::PathBuf),
}

#[cfg(test)]
mod tests;
