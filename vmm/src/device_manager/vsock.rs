//! The `vsock` config section (Firecracker: `{"guest_cid": 3, "uds_path":
//! "/tmp/v.sock"}`, optional legacy `vsock_id`) and the `--vsock CID:PATH`
//! flag: checks them and attaches one virtio-vsock device with the hybrid
//! Unix-socket backend listening on `uds_path`.

use std::path::PathBuf;

use ember_abi::vmm_args::VsockArg;
use ember_devices::virtio::vsock::{check_cid, UnixMuxer, Vsock};
use serde_json::Value;

use crate::devices::{parse_section, DeviceContext, DeviceError};

/// Config key.
pub const NAME: &str = "vsock";
/// `sun_path` holds 108 bytes with its NUL; guest-initiated connections
/// append `_<port>` (up to 11 bytes) to `uds_path`.
const MAX_UDS_PATH: usize = 108 - 1 - 11;

/// The section as Firecracker spells it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
    /// Accepted for compatibility with older Firecracker configs; unused.
    #[serde(default)]
    pub vsock_id: Option<String>,
}

fn err(message: impl Into<String>) -> DeviceError {
    DeviceError::config(NAME, message)
}

/// Parses and checks the section.
pub fn parse(value: &Value) -> Result<VsockConfig, DeviceError> {
    let c: VsockConfig = parse_section(NAME, value)?;
    check_cid(c.guest_cid).map_err(|e| err(e.to_string()))?;
    let len = c.uds_path.as_os_str().len();
    if len == 0 {
        return Err(err("uds_path is empty"));
    }
    if len > MAX_UDS_PATH {
        return Err(err(format!(
            "uds_path is {len} bytes; at most {MAX_UDS_PATH} fit a Unix socket address"
        )));
    }
    Ok(c)
}

/// Attaches the virtio-vsock device with its hybrid Unix-socket backend.
pub fn attach(ctx: &mut DeviceContext, c: &VsockConfig) -> Result<(), DeviceError> {
    let setup = |e: ember_devices::virtio::vsock::VsockError| DeviceError::Setup {
        section: NAME.to_string(),
        what: e.to_string(),
        source: std::io::Error::other(ember_abi::error::chain(&e)),
    };
    let muxer = UnixMuxer::new(c.guest_cid, &c.uds_path).map_err(setup)?;
    let device = Vsock::new(c.guest_cid, muxer).map_err(setup)?;
    super::attach_virtio(ctx, NAME, device)
}

/// The section for `--vsock CID:PATH` (checked with the rest of the config).
pub fn from_arg(a: &VsockArg) -> Value {
    serde_json::json!({ "guest_cid": a.guest_cid, "uds_path": a.uds_path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_firecracker_vsock_and_refuses_bad_ones() {
        let v: Value =
            serde_json::from_str(r#"{"vsock_id":"vsock0","guest_cid":3,"uds_path":"/tmp/v.sock"}"#)
                .unwrap();
        assert_eq!(parse(&v).unwrap().guest_cid, 3);
        let bad = [
            r#"{"guest_cid":2,"uds_path":"/tmp/v.sock"}"#,
            r#"{"guest_cid":4294967295,"uds_path":"/tmp/v.sock"}"#,
            r#"{"guest_cid":3}"#,
            r#"{"guest_cid":3,"uds_path":""}"#,
            r#"{"guest_cid":3,"uds_path":"/tmp/v.sock","extra":1}"#,
        ];
        for b in bad {
            let e = parse(&serde_json::from_str(b).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("config section `vsock`"), "{b}: {e}");
        }
        let long = format!(r#"{{"guest_cid":3,"uds_path":"/{}"}}"#, "a".repeat(100));
        assert!(parse(&serde_json::from_str(&long).unwrap())
            .unwrap_err()
            .to_string()
            .contains("at most"));
        assert!(parse(&serde_json::from_str(r#"{"guest_cid":3}"#).unwrap())
            .unwrap_err()
            .to_string()
            .contains("uds_path"));
    }

    /// The entry the flag `--vsock s` makes (None: the flag is refused).
    fn from_flag(s: &str) -> Option<Value> {
        match ember_abi::vmm_args::VmmArgs::parse(&["--vsock", s]).ok()? {
            ember_abi::vmm_args::VmmCommand::Run(a) => Some(from_arg(a.vsock.as_ref()?)),
            _ => None,
        }
    }

    #[test]
    fn flag_form() {
        assert_eq!(
            from_flag("3:/tmp/a.sock"),
            Some(serde_json::json!({"guest_cid": 3, "uds_path": "/tmp/a.sock"}))
        );
        assert_eq!(from_flag("x:/a"), None);
        assert_eq!(from_flag("3:"), None);
        assert_eq!(from_flag("3"), None);
    }
}
