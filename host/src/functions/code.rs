//! A function's deployment package: decoded, checked against its runtime and
//! stored as what runs (the wasm module, or a Linux function's whole ZIP).

use base64::Engine;

use super::{Functions, FunctionsError};
use crate::code::CodeError;
use crate::store::{CodeRef, FunctionConfig, Pin};

/// The code a request carries: `ZipFile` (base64), or a note that it named
/// a source emberd does not take (S3, an image).
#[derive(Clone, Copy)]
pub struct Package<'a> {
    pub zip_b64: Option<&'a str>,
    pub other_source: bool,
}

/// Why a package cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{}; upload the package as ZipFile.", if *other_source { "S3 and image code locations are not supported by emberd" } else { "Code.ZipFile is required" })]
    Missing { other_source: bool },
    /// `DryRun` without a package.
    #[error("ZipFile is required")]
    Required,
    #[error("ZipFile is not valid base64")]
    Base64,
    #[error(transparent)]
    Code(#[from] CodeError),
    /// No guest on this host can run the package (native extensions).
    #[error(transparent)]
    Guest(crate::python::PythonError),
}

fn decode(b64: &str) -> Result<Vec<u8>, PackageError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| PackageError::Base64)
}

/// The package of a `DryRun`, which must carry one.
pub(super) fn decode_required(zip_b64: Option<&str>) -> Result<Vec<u8>, PackageError> {
    decode(zip_b64.ok_or(PackageError::Required)?)
}

/// What is stored for `package`: the wasm module it holds, or for Linux
/// runtimes the checked ZIP itself (turned into a code image at launch).
pub(super) fn runnable(
    package: &[u8],
    runtime: &str,
    handler: &str,
) -> Result<Vec<u8>, PackageError> {
    if crate::linux::is_linux_runtime(runtime) {
        // AWS's own answer to a package that is not a ZIP.
        if !package.starts_with(b"PK") {
            return Err(CodeError::BadZip.into());
        }
        crate::code::check_archive(package)?;
        return Ok(package.to_vec());
    }
    Ok(crate::code::extract_module(package, handler)?)
}

impl Functions {
    /// Decodes the package, extracts what runs and stores it (the blob is
    /// durable before any metadata names it). The returned pin must live
    /// until the record naming the blob has committed: until then only the
    /// pin keeps another request's garbage collection off the blob.
    pub(super) fn store_code(
        &self,
        (account, replaces): (&str, u64),
        package: Package<'_>,
        cfg: &FunctionConfig,
    ) -> Result<(CodeRef, Pin), FunctionsError> {
        let b64 = package.zip_b64.ok_or(PackageError::Missing {
            other_source: package.other_source,
        })?;
        let package = decode(b64)?;
        let module = runnable(&package, &cfg.runtime, &cfg.handler)?;
        let native = if cfg.runtime == crate::python::RUNTIME {
            crate::python::native_extensions(&package)
        } else {
            Vec::new()
        };
        // A package no guest here can run is refused before it is stored.
        self.caps
            .guest(&cfg.runtime, &native)
            .map_err(PackageError::Guest)?;
        // Code beyond the account's storage quota is refused before its blob
        // is written (the commit checks again, exactly).
        let grows = (package.len() as u64).saturating_sub(replaces);
        self.store.precheck_code(account, grows)?;
        let pin = self.store.put_blob(&module)?;
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&package);
        let code = CodeRef {
            blob: pin.hex().to_string(),
            package_sha256: base64::engine::general_purpose::STANDARD.encode(digest),
            size: package.len() as u64,
            native,
        };
        Ok((code, pin))
    }
}
