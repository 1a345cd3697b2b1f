//! From an HTTP request to an [`Action`]: the routes of Firecracker's
//! OpenAPI description (`firecracker.yaml`), the JSON bodies checked by
//! serde (`deny_unknown_fields`, as Firecracker's own types), and
//! Firecracker's answers to requests it cannot route. Runs on the API
//! thread; the VMM only ever sees a well-formed [`Action`].

use serde::Deserialize;
use serde_json::Value;

use super::http::{Method, Request, Response};
use crate::config::LoggerConfig;
use crate::device_manager::block::DriveConfig;
use crate::device_manager::entropy::EntropyConfig;
use crate::device_manager::net::NetIfaceConfig;
use crate::device_manager::vsock::VsockConfig;

/// What the API asks the VMM to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    DescribeInstance,
    GetVersion,
    GetFullConfig,
    GetMachineConfig,
    PutBootSource(BootSource),
    PutMachineConfig(MachineConfig),
    PatchMachineConfig(MachineConfigPatch),
    /// `PUT /drives/{id}` (the body, id checked against the path).
    PutDrive(Value),
    /// `PATCH /drives/{id}`.
    PatchDrive(Value),
    PutNet(Value),
    PatchNet(Value),
    PutVsock(Value),
    PutLogger(LoggerConfig),
    PutMetrics(Metrics),
    PutSerial(Serial),
    /// `PUT /entropy` (the body checked as `EntropyDeviceConfig`).
    PutEntropy(Value),
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
    Pause,
    Resume,
    CreateSnapshot(SnapshotCreate),
    LoadSnapshot(SnapshotLoad),
    /// An operation of the description ember does not implement: answered
    /// 400 naming the feature.
    Unsupported(&'static str),
}

/// `BootSource`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: String,
    pub initrd_path: Option<String>,
    pub boot_args: Option<String>,
}

/// `MachineConfiguration` for PUT (unset optional fields take defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u64,
    pub mem_size_mib: u64,
    #[serde(default)]
    pub smt: bool,
    #[serde(default)]
    pub track_dirty_pages: bool,
    pub cpu_template: Option<String>,
    pub huge_pages: Option<String>,
}

/// `MachineConfiguration` for PATCH (unset fields keep their value).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigPatch {
    pub vcpu_count: Option<u64>,
    pub mem_size_mib: Option<u64>,
    pub smt: Option<bool>,
    pub track_dirty_pages: Option<bool>,
    pub cpu_template: Option<String>,
    pub huge_pages: Option<String>,
}

/// `Metrics`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: String,
}

/// `SerialDevice`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serial {
    pub serial_out_path: Option<String>,
    pub rate_limiter: Option<Value>,
}

/// `SnapshotCreateParams`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    pub snapshot_path: String,
    pub mem_file_path: String,
    pub snapshot_type: Option<SnapshotType>,
}

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SnapshotType {
    Full,
    Diff,
}

/// `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    pub backend_type: BackendType,
    pub backend_path: String,
}

/// `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BackendType {
    File,
    Uffd,
}

/// `SnapshotLoadParams`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoad {
    pub snapshot_path: String,
    pub mem_file_path: Option<String>,
    pub mem_backend: Option<MemoryBackend>,
    pub enable_diff_snapshots: Option<bool>,
    pub track_dirty_pages: Option<bool>,
    pub resume_vm: Option<bool>,
    pub network_overrides: Option<Vec<Value>>,
    pub vsock_override: Option<VsockOverride>,
    pub clock_realtime: Option<bool>,
}

/// `VsockOverride`: where the restored vsock device listens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    pub uds_path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionInfo {
    action_type: ActionType,
}

#[derive(Deserialize)]
enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmState {
    state: VmStateName,
}

#[derive(Deserialize)]
enum VmStateName {
    Paused,
    Resumed,
}

/// A request that is not an [`Action`], with Firecracker's wording.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("Invalid request method and/or path: {} {}.", .0.as_str(), .1)]
    InvalidPathMethod(Method, String),
    #[error("GET request cannot have a body.")]
    GetWithBody,
    #[error("Empty PUT request.")]
    EmptyPut,
    #[error("Empty PATCH request.")]
    EmptyPatch,
    #[error("The ID cannot be empty.")]
    EmptyId,
    #[error("API Resource IDs can only contain alphanumeric characters and underscores.")]
    InvalidId,
    #[error("The id from the path [{path}] does not match the id from the body [{body}]!")]
    IdMismatch { path: String, body: String },
    #[error("An error occurred when deserializing the json body of a request: {0}.")]
    Json(#[source] serde_json::Error),
}

impl RouteError {
    /// The 400 answer.
    pub fn response(&self) -> Response {
        Response::fault(400, &self.to_string())
    }
}

fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, RouteError> {
    serde_json::from_slice(b).map_err(RouteError::Json)
}

/// Checks a resource id from the path: non-empty, alphanumeric or `_`.
fn checked_id(id: Option<&&str>) -> Result<String, RouteError> {
    let id = id.copied().unwrap_or("");
    if id.is_empty() {
        return Err(RouteError::EmptyId);
    }
    if !id.chars().all(|c| c == '_' || c.is_alphanumeric()) {
        return Err(RouteError::InvalidId);
    }
    Ok(id.to_string())
}

/// `PartialDrive` (PATCH /drives/{id}).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // checked for shape; ember applies no update
struct PartialDrive {
    drive_id: String,
    path_on_host: Option<String>,
    rate_limiter: Option<Value>,
}

/// `PartialNetworkInterface` (PATCH /network-interfaces/{id}).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // checked for shape; ember applies no update
struct PartialNet {
    iface_id: String,
    rx_rate_limiter: Option<Value>,
    tx_rate_limiter: Option<Value>,
}

/// A device body of type `T` (checked here, so a bad one gets
/// Firecracker's deserialization answer) whose `id_field` must equal the
/// path's id; kept as JSON for the configuration.
fn device_body<T: serde::de::DeserializeOwned>(
    b: &[u8],
    id: Option<&&str>,
    id_field: &str,
) -> Result<Value, RouteError> {
    let id = checked_id(id)?;
    let v: Value = body(b)?;
    serde_json::from_value::<T>(v.clone()).map_err(RouteError::Json)?;
    if let Some(got) = v.get(id_field).and_then(Value::as_str) {
        if got != id {
            return Err(RouteError::IdMismatch {
                path: id,
                body: got.to_string(),
            });
        }
    }
    Ok(v)
}

/// The feature behind a resource ember does not implement.
fn unsupported(first: &str, second: Option<&str>) -> Option<&'static str> {
    Some(match (first, second) {
        ("balloon", _) => "the balloon device",
        ("mmds", _) => "MMDS (the microVM metadata service)",
        ("hotplug", Some("memory")) => "memory hotplug",
        ("pmem", _) => "pmem devices",
        ("cpu-config", None) => "CPU templates (cpu-config)",
        _ => return None,
    })
}

/// Routes a request.
pub fn route(req: &Request) -> Result<Action, RouteError> {
    let tokens: Vec<&str> = req
        .path
        .trim_start_matches('/')
        .split_terminator('/')
        .collect();
    let first = tokens.first().copied().unwrap_or("");
    let second = tokens.get(1).copied();
    let invalid = || RouteError::InvalidPathMethod(req.method, first.to_string());
    // Resources of the description ember does not implement: refused by
    // name whatever the method and body (some of their operations have none).
    if let Some(feature) = unsupported(first, second) {
        return Ok(Action::Unsupported(feature));
    }
    let b = match (req.method, &req.body) {
        (Method::Get, Some(_)) => return Err(RouteError::GetWithBody),
        (Method::Get, None) => {
            return match (first, second, tokens.len()) {
                ("", None, _) => Ok(Action::DescribeInstance),
                ("version", None, _) => Ok(Action::GetVersion),
                ("vm", Some("config"), 2) => Ok(Action::GetFullConfig),
                ("machine-config", None, _) => Ok(Action::GetMachineConfig),
                _ => Err(invalid()),
            };
        }
        (Method::Put, None) => return Err(RouteError::EmptyPut),
        (Method::Patch, None) => return Err(RouteError::EmptyPatch),
        (_, Some(b)) => b.as_slice(),
    };
    let one = tokens.len() == 1;
    match (req.method, first) {
        (Method::Put, "boot-source") if one => Ok(Action::PutBootSource(body(b)?)),
        (Method::Put, "machine-config") if one => Ok(Action::PutMachineConfig(body(b)?)),
        (Method::Patch, "machine-config") if one => Ok(Action::PatchMachineConfig(body(b)?)),
        (Method::Put, "drives") => Ok(Action::PutDrive(device_body::<DriveConfig>(
            b,
            tokens.get(1),
            "drive_id",
        )?)),
        (Method::Patch, "drives") => Ok(Action::PatchDrive(device_body::<PartialDrive>(
            b,
            tokens.get(1),
            "drive_id",
        )?)),
        (Method::Put, "network-interfaces") => Ok(Action::PutNet(device_body::<NetIfaceConfig>(
            b,
            tokens.get(1),
            "iface_id",
        )?)),
        (Method::Patch, "network-interfaces") => Ok(Action::PatchNet(device_body::<PartialNet>(
            b,
            tokens.get(1),
            "iface_id",
        )?)),
        (Method::Put, "vsock") if one => {
            let v: Value = body(b)?;
            serde_json::from_value::<VsockConfig>(v.clone()).map_err(RouteError::Json)?;
            Ok(Action::PutVsock(v))
        }
        (Method::Put, "logger") if one => Ok(Action::PutLogger(body(b)?)),
        (Method::Put, "metrics") if one => Ok(Action::PutMetrics(body(b)?)),
        (Method::Put, "serial") if one => Ok(Action::PutSerial(body(b)?)),
        (Method::Put, "entropy") if one => {
            let v: Value = body(b)?;
            serde_json::from_value::<EntropyConfig>(v.clone()).map_err(RouteError::Json)?;
            Ok(Action::PutEntropy(v))
        }
        (Method::Put, "actions") if one => {
            let info: ActionInfo = body(b)?;
            Ok(match info.action_type {
                ActionType::InstanceStart => Action::InstanceStart,
                ActionType::SendCtrlAltDel => Action::SendCtrlAltDel,
                ActionType::FlushMetrics => Action::FlushMetrics,
            })
        }
        (Method::Patch, "vm") if one => {
            let s: VmState = body(b)?;
            Ok(match s.state {
                VmStateName::Paused => Action::Pause,
                VmStateName::Resumed => Action::Resume,
            })
        }
        (Method::Put, "snapshot") if second == Some("create") && tokens.len() == 2 => {
            Ok(Action::CreateSnapshot(body(b)?))
        }
        (Method::Put, "snapshot") if second == Some("load") && tokens.len() == 2 => {
            Ok(Action::LoadSnapshot(body(b)?))
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, body: Option<&str>) -> Request {
        Request {
            method,
            path: path.into(),
            body: body.map(|b| b.as_bytes().to_vec()),
            close: false,
        }
    }

    fn fault(method: Method, path: &str, body: Option<&str>) -> String {
        route(&req(method, path, body)).unwrap_err().to_string()
    }

    #[test]
    fn routes_the_described_operations() {
        use Method::*;
        assert_eq!(
            route(&req(Get, "/", None)).unwrap(),
            Action::DescribeInstance
        );
        assert_eq!(
            route(&req(Get, "/vm/config", None)).unwrap(),
            Action::GetFullConfig
        );
        assert_eq!(
            route(&req(
                Put,
                "/actions",
                Some(r#"{"action_type":"InstanceStart"}"#)
            ))
            .unwrap(),
            Action::InstanceStart
        );
        assert_eq!(
            route(&req(Patch, "/vm", Some(r#"{"state":"Paused"}"#))).unwrap(),
            Action::Pause
        );
        assert!(matches!(
            route(&req(
                Put,
                "/drives/root",
                Some(r#"{"drive_id":"root","path_on_host":"/r"}"#)
            ))
            .unwrap(),
            Action::PutDrive(_)
        ));
        assert_eq!(
            route(&req(Put, "/balloon", Some("{}"))).unwrap(),
            Action::Unsupported("the balloon device")
        );
        assert_eq!(
            route(&req(Patch, "/balloon/hinting/stop", None)).unwrap(),
            Action::Unsupported("the balloon device")
        );
    }

    #[test]
    fn answers_bad_requests_as_firecracker() {
        use Method::*;
        assert_eq!(
            fault(Get, "/nope", None),
            "Invalid request method and/or path: GET nope."
        );
        assert_eq!(
            fault(Get, "/", Some("{}")),
            "GET request cannot have a body."
        );
        assert_eq!(fault(Put, "/boot-source", None), "Empty PUT request.");
        assert_eq!(fault(Patch, "/vm", None), "Empty PATCH request.");
        assert_eq!(fault(Put, "/drives", Some("{}")), "The ID cannot be empty.");
        assert!(fault(Put, "/drives/a-b", Some("{}")).contains("alphanumeric"));
        assert!(fault(
            Put,
            "/drives/a",
            Some(r#"{"drive_id":"b","path_on_host":"/x"}"#)
        )
        .contains("does not match"));
        let e = fault(
            Put,
            "/boot-source",
            Some(r#"{"kernel_image_path":"/k","x":1}"#),
        );
        assert!(
            e.starts_with("An error occurred when deserializing the json body"),
            "{e}"
        );
        assert!(e.contains("unknown field `x`"), "{e}");
        let e = fault(Put, "/actions", Some(r#"{"action_type":"Reboot"}"#));
        assert!(e.contains("unknown variant `Reboot`"), "{e}");
        assert!(fault(Put, "/machine-config", Some(r#"{"vcpu_count":1}"#))
            .contains("missing field `mem_size_mib`"));
    }
}
