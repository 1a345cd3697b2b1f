//! The `drives` config section (Firecracker's `drives[]`) and the `--drive`
//! flag: validates the entries and attaches one virtio-block device per
//! drive, the root device first (so a Linux guest sees it as /dev/vda).

use ember_abi::vmm_args::DriveArg;
use ember_devices::rate_limiter::RateLimiterConfig;
use ember_devices::virtio::block::{Block, BlockConfig, CacheType};
use serde_json::Value;

use crate::devices::{parse_section, DeviceContext, DeviceError};

/// Config key.
pub const NAME: &str = "drives";

/// One entry of `drives[]`, as Firecracker spells it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveConfig {
    pub drive_id: String,
    pub path_on_host: String,
    #[serde(default)]
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
    #[serde(default)]
    pub cache_type: CacheType,
    #[serde(default)]
    pub rate_limiter: Option<RateLimiterConfig>,
    /// Accepted for compatibility; ember does not use partition UUIDs.
    #[serde(default)]
    pub partuuid: Option<String>,
    /// Accepted for compatibility: only "Sync" (the default) exists here.
    #[serde(default)]
    pub io_engine: Option<String>,
}

fn err(message: impl Into<String>) -> DeviceError {
    DeviceError::config(NAME, message)
}

/// Parses and checks the section: unique ids, one root device at most.
pub fn parse(value: &Value) -> Result<Vec<DriveConfig>, DeviceError> {
    let drives: Vec<DriveConfig> = parse_section(NAME, value)?;
    let mut ids = std::collections::BTreeSet::new();
    for d in &drives {
        if d.drive_id.is_empty() || !ids.insert(d.drive_id.as_str()) {
            return Err(err(format!(
                "drive_id {:?} is empty or repeated",
                d.drive_id
            )));
        }
        if d.path_on_host.is_empty() {
            return Err(err(format!("drive {}: empty path_on_host", d.drive_id)));
        }
        if d.io_engine.as_deref().is_some_and(|e| e != "Sync") {
            return Err(err(format!(
                "drive {}: only io_engine \"Sync\" is supported",
                d.drive_id
            )));
        }
    }
    if drives.iter().filter(|d| d.is_root_device).count() > 1 {
        return Err(err("more than one drive has is_root_device"));
    }
    Ok(drives)
}

/// The device's own config for one drive.
pub fn to_block_config(d: &DriveConfig) -> BlockConfig {
    BlockConfig {
        drive_id: d.drive_id.clone(),
        path: d.path_on_host.clone().into(),
        read_only: d.is_read_only,
        cache_type: d.cache_type,
        rate_limiter: d.rate_limiter.unwrap_or_default(),
    }
}

/// Attaches one virtio-block device per parsed drive.
pub fn attach(ctx: &mut DeviceContext, drives: &[DriveConfig]) -> Result<(), DeviceError> {
    let mut drives = drives.to_vec();
    // Root first: it becomes the first virtio-mmio window (/dev/vda).
    drives.sort_by_key(|d| !d.is_root_device);
    for d in &drives {
        let block = Block::new(&to_block_config(d)).map_err(|e| DeviceError::Setup {
            section: NAME.to_string(),
            what: format!("drive {}: {e}", d.drive_id),
            source: std::io::Error::other(ember_abi::error::chain(&e)),
        })?;
        super::attach_virtio(ctx, NAME, block)?;
    }
    Ok(())
}

/// The section entry for `--drive` number `n` (`drive0` is the root device).
pub fn from_arg(d: &DriveArg, n: usize) -> Value {
    serde_json::json!({
        "drive_id": format!("drive{n}"),
        "path_on_host": d.path,
        "is_root_device": n == 0,
        "is_read_only": d.read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_firecracker_drives_and_refuses_bad_ones() {
        let v: Value = serde_json::from_str(
            r#"[{"drive_id":"rootfs","path_on_host":"/r.img","is_root_device":true,"is_read_only":true},
                {"drive_id":"data","path_on_host":"/d.img","is_root_device":false,"is_read_only":false,
                 "cache_type":"Writeback","io_engine":"Sync",
                 "rate_limiter":{"bandwidth":{"size":1048576,"refill_time":100}}}]"#,
        )
        .unwrap();
        let d = parse(&v).unwrap();
        assert_eq!(d[1].cache_type, CacheType::Writeback);
        let c = to_block_config(&d[1]);
        assert_eq!(c.rate_limiter.bandwidth.map(|b| b.size), Some(1 << 20));
        assert!(to_block_config(&d[0]).read_only);
        for bad in [
            r#"[{"drive_id":"a","path_on_host":"/a","is_root_device":false,"bogus":1}]"#,
            r#"[{"drive_id":"a","path_on_host":"/a"},{"drive_id":"a","path_on_host":"/b"}]"#,
            r#"[{"drive_id":"a","path_on_host":"/a","is_root_device":true},{"drive_id":"b","path_on_host":"/b","is_root_device":true}]"#,
            r#"[{"drive_id":"a","path_on_host":"/a","cache_type":"Sometimes"}]"#,
            r#"[{"drive_id":"a","path_on_host":"/a","io_engine":"Async"}]"#,
            r#"{"drive_id":"a"}"#,
        ] {
            assert!(parse(&serde_json::from_str(bad).unwrap()).is_err(), "{bad}");
        }
    }

    /// The entry the flag `--drive s` makes (None: the flag is refused).
    fn from_flag(s: &str, n: usize) -> Option<Value> {
        match ember_abi::vmm_args::VmmArgs::parse(&["--drive", s]).ok()? {
            ember_abi::vmm_args::VmmCommand::Run(a) => Some(from_arg(a.drives.first()?, n)),
            _ => None,
        }
    }

    #[test]
    fn drive_flag_becomes_a_config_entry() {
        let v = from_flag("/tmp/x.img,ro", 0).unwrap();
        assert_eq!(v["path_on_host"], "/tmp/x.img");
        assert_eq!(v["is_read_only"], true);
        assert_eq!(v["is_root_device"], true);
        assert_eq!(from_flag("/tmp/y.img", 1).unwrap()["is_read_only"], false);
        assert!(from_flag("", 0).is_none());
    }
}
