//! Firecracker-style metrics (`PUT /metrics`): counters of API requests in
//! Firecracker's groups and names (`get_api_requests.instance_info_count`,
//! `put_api_requests.actions_fails`, ...), written to the metrics file as
//! one JSON object per line on `FlushMetrics`, every 60 s and when the VM
//! ends. As in Firecracker, counters are deltas since the previous flush.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::request::Action;

/// The metrics sink and the counters since the last flush.
#[derive(Default)]
pub struct ApiMetrics {
    file: Option<(String, File)>,
    counters: BTreeMap<(&'static str, String), u64>,
    /// The counter the last request went to (its `_fails` twin on failure).
    last: Option<(&'static str, &'static str)>,
}

/// Where a request is counted: (group, counter stem).
fn slot(action: &Action) -> (&'static str, &'static str) {
    use Action::*;
    match action {
        DescribeInstance => ("get_api_requests", "instance_info"),
        GetVersion => ("get_api_requests", "vmm_version"),
        GetFullConfig => ("get_api_requests", "vm_config"),
        GetMachineConfig => ("get_api_requests", "machine_cfg"),
        PutBootSource(_) => ("put_api_requests", "boot_source"),
        PutMachineConfig(_) => ("put_api_requests", "machine_cfg"),
        PatchMachineConfig(_) => ("patch_api_requests", "machine_cfg"),
        PutDrive(_) => ("put_api_requests", "drive"),
        PatchDrive(_) => ("patch_api_requests", "drive"),
        PutNet(_) => ("put_api_requests", "network"),
        PatchNet(_) => ("patch_api_requests", "network"),
        PutVsock(_) => ("put_api_requests", "vsock"),
        PutLogger(_) => ("put_api_requests", "logger"),
        PutMetrics(_) => ("put_api_requests", "metrics"),
        PutSerial(_) => ("put_api_requests", "serial"),
        PutEntropy(_) => ("put_api_requests", "entropy"),
        InstanceStart | SendCtrlAltDel | FlushMetrics => ("put_api_requests", "actions"),
        Pause | Resume => ("patch_api_requests", "vm"),
        CreateSnapshot(_) => ("put_api_requests", "snapshot_create"),
        LoadSnapshot(_) => ("put_api_requests", "snapshot_load"),
        Unsupported(_) => ("put_api_requests", "unsupported"),
    }
}

impl ApiMetrics {
    /// Opens the metrics file (a file or FIFO, appended to).
    pub fn open(&mut self, path: &str) -> Result<(), String> {
        if self.file.is_some() {
            return Err("Reinitialization of metrics not allowed.".into());
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{path}: {e}"))?;
        self.file = Some((path.to_string(), f));
        Ok(())
    }

    /// The metrics file's path, once configured.
    pub fn path(&self) -> Option<&str> {
        self.file.as_ref().map(|(p, _)| p.as_str())
    }

    /// Counts one request.
    pub fn count(&mut self, action: &Action) {
        let (group, stem) = slot(action);
        *self
            .counters
            .entry((group, format!("{stem}_count")))
            .or_default() += 1;
        self.last = Some((group, stem));
    }

    /// Counts the last request as failed.
    pub fn failed(&mut self) {
        if let Some((group, stem)) = self.last {
            *self
                .counters
                .entry((group, format!("{stem}_fails")))
                .or_default() += 1;
        }
    }

    /// The counters since the last flush as one JSON object.
    fn snapshot(&mut self) -> Value {
        let mut root = Map::new();
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        root.insert("utc_timestamp_ms".into(), ms.into());
        for ((group, name), n) in std::mem::take(&mut self.counters) {
            let g = root
                .entry(group.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = g {
                m.insert(name, n.into());
            }
        }
        Value::Object(root)
    }

    /// Writes one line to the metrics file (nothing when none is set).
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let line = format!("{}\n", self.snapshot());
        if let Some((_, f)) = &mut self.file {
            f.write_all(line.as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_and_failures_as_deltas() {
        let dir = std::env::temp_dir().join(format!("ember-metrics-{}", std::process::id()));
        let mut m = ApiMetrics::default();
        m.open(dir.to_str().unwrap()).unwrap();
        assert!(m.open(dir.to_str().unwrap()).is_err());
        m.count(&Action::InstanceStart);
        m.failed();
        m.count(&Action::DescribeInstance);
        m.flush().unwrap();
        m.flush().unwrap();
        let text = std::fs::read_to_string(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["put_api_requests"]["actions_count"], 1);
        assert_eq!(lines[0]["put_api_requests"]["actions_fails"], 1);
        assert_eq!(lines[0]["get_api_requests"]["instance_info_count"], 1);
        assert!(lines[1].get("put_api_requests").is_none());
    }
}
