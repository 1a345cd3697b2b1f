//! The images a Linux function's environments mount (runtime image as vda,
//! the function's code image as vdb, its merged layers as vdc when it has
//! any, all read-only): prepared as soon as code or layers change, cached
//! per content ([`super::images`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::caps::Found;
use super::{runtime_image, ImageCache, LinuxError};
use crate::env::EnvSpec;
use crate::store::{Store, StoreError};

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
        crate::catalog::layer_blobs(&self.store, arns).map_err(|e| match e {
            crate::catalog::CatalogError::MalformedLayerArn(a)
            | crate::catalog::CatalogError::NoSuchLayer(a) => LinuxError::Layer(a),
            other => LinuxError::Layer(other.to_string()),
        })
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
                    .read_blob(&blob)
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
                .read_blob(b)
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
