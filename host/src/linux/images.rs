//! The read-only images a Linux environment mounts besides its runtime image:
//! the function's code (`/var/task`, one image per code blob) and its layers
//! (`/opt`, one image per ordered list of layer blobs: every layer's ZIP
//! extracted in order into one tree, later layers overwriting earlier files,
//! which is how Lambda fills `/opt`). Both are built by the code-image tool
//! (`images/code-image.sh ZIP... OUT`) on first use and cached by content, so
//! a warm host builds each image once.
//!
//! The images hold plaintext code, so they live under emberd's run directory
//! only while emberd runs: the cache is emptied when it opens and when emberd
//! stops (the encrypted blobs stay the only copy at rest).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::LinuxError;

/// Built images, keyed by content.
pub struct ImageCache {
    dir: PathBuf,
    tool: PathBuf,
    /// One lock per image name, so two cold starts of the same function
    /// build its image once.
    building: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// The file name of the merged image of `layers` (blob addresses, in order).
pub fn layers_image_name(layers: &[String]) -> String {
    let mut h = Sha256::new();
    for l in layers {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("layers-{}.squashfs", &hex[..32])
}

/// The file name of the code image of a code blob.
pub fn code_image_name(blob: &str) -> String {
    format!("code-{blob}.squashfs")
}

impl ImageCache {
    /// Opens (and empties) the cache directory `dir`, mode 0700.
    pub fn open(dir: &Path, tool: &Path) -> Result<Self, LinuxError> {
        let cache_err = |e| LinuxError::Cache(dir.to_path_buf(), e);
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(cache_err)?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(cache_err)?;
        let s = dir.display().to_string();
        if s.contains(',') || s.contains(':') {
            return Err(LinuxError::BadPath(dir.to_path_buf()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tool: tool.to_path_buf(),
            building: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes every built image (emberd is stopping).
    pub fn clear(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// The code image of the ZIP stored as `blob`; `zip` is only called when
    /// the image is not built yet.
    pub fn code_image(
        &self,
        blob: &str,
        zip: impl FnOnce() -> Result<Vec<u8>, LinuxError>,
    ) -> Result<PathBuf, LinuxError> {
        self.build(&code_image_name(blob), || Ok(vec![zip()?]))
    }

    /// The merged image of the layer ZIPs `blobs` (in order); `load` reads
    /// one blob and is only called when the image is not built yet.
    pub fn layers_image(
        &self,
        blobs: &[String],
        load: impl Fn(&str) -> Result<Vec<u8>, LinuxError>,
    ) -> Result<PathBuf, LinuxError> {
        self.build(&layers_image_name(blobs), || {
            blobs.iter().map(|b| load(b)).collect()
        })
    }

    fn lock_for(&self, name: &str) -> Arc<Mutex<()>> {
        let mut m = self.building.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }

    /// Builds `dir/name` from the ZIPs `zips` returns unless it exists.
    fn build(
        &self,
        name: &str,
        zips: impl FnOnce() -> Result<Vec<Vec<u8>>, LinuxError>,
    ) -> Result<PathBuf, LinuxError> {
        let out = self.dir.join(name);
        let lock = self.lock_for(name);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        if out.is_file() {
            return Ok(out);
        }
        let work = self.dir.join(format!("tmp-{}", crate::util::uuid4()));
        let cache_err = |e| LinuxError::Cache(work.clone(), e);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .map_err(cache_err)?;
        let result = (|| {
            let mut args = Vec::new();
            for (i, zip) in zips()?.iter().enumerate() {
                let p = work.join(format!("{i}.zip"));
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&p)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, zip))
                    .map_err(cache_err)?;
                args.push(p);
            }
            let tmp_out = work.join("out.squashfs");
            run_tool(&self.tool, &args, &tmp_out)?;
            fs::rename(&tmp_out, &out).map_err(cache_err)
        })();
        let _ = fs::remove_dir_all(&work);
        result.map(|()| out)
    }
}

/// Runs `tool ZIP... OUT`; a failure carries the tool's last stderr line
/// (e.g. "refusing symlink entry: 'x'").
fn run_tool(tool: &Path, zips: &[PathBuf], out: &Path) -> Result<(), LinuxError> {
    let output = Command::new(tool)
        .args(zips)
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| LinuxError::Tool(tool.to_path_buf(), e))?;
    if output.status.success() && out.is_file() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message");
    Err(LinuxError::Build(format!(
        "{} ({})",
        last.trim(),
        output.status
    )))
}
