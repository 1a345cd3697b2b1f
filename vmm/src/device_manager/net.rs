//! The `network-interfaces` config section (Firecracker's
//! `network-interfaces[]`) and the `--net` flag: validates the entries and
//! attaches one virtio-net device per interface, on the named TAP.

use ember_abi::vmm_args::{format_mac, NetArg};
use ember_devices::rate_limiter::RateLimiterConfig;
use ember_devices::virtio::net::{parse_mac, Net, NetConfig};
use serde_json::Value;

use crate::devices::{parse_section, DeviceContext, DeviceError};

/// Config key.
pub const NAME: &str = "network-interfaces";

/// One entry of `network-interfaces[]`, as Firecracker spells it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetIfaceConfig {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(default)]
    pub guest_mac: Option<String>,
    #[serde(default)]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

fn err(message: impl Into<String>) -> DeviceError {
    DeviceError::config(NAME, message)
}

/// Parses and checks the section: unique ids, TAPs and MACs, valid MACs.
pub fn parse(value: &Value) -> Result<Vec<NetConfig>, DeviceError> {
    let ifaces: Vec<NetIfaceConfig> = parse_section(NAME, value)?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(ifaces.len());
    for i in ifaces {
        let guest_mac = match &i.guest_mac {
            Some(m) => Some(
                parse_mac(m)
                    .ok_or_else(|| err(format!("iface {}: bad guest_mac {m:?}", i.iface_id)))?,
            ),
            None => None,
        };
        let keys = [
            format!("id:{}", i.iface_id),
            format!("tap:{}", i.host_dev_name),
            guest_mac.map(|m| format!("mac:{m:?}")).unwrap_or_default(),
        ];
        for k in keys.iter().filter(|k| !k.is_empty()) {
            if !seen.insert(k.clone()) {
                return Err(err(format!("iface {}: {k} used twice", i.iface_id)));
            }
        }
        if i.iface_id.is_empty() || i.host_dev_name.is_empty() {
            return Err(err("iface_id and host_dev_name must not be empty"));
        }
        out.push(NetConfig {
            iface_id: i.iface_id,
            host_dev_name: i.host_dev_name,
            guest_mac,
            rx_rate_limiter: i.rx_rate_limiter.unwrap_or_default(),
            tx_rate_limiter: i.tx_rate_limiter.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Attaches one virtio-net device per parsed interface.
pub fn attach(ctx: &mut DeviceContext, ifaces: &[NetConfig]) -> Result<(), DeviceError> {
    for cfg in ifaces {
        let net = Net::new(cfg).map_err(|e| DeviceError::Setup {
            section: NAME.to_string(),
            what: format!("iface {}: {e}", cfg.iface_id),
            source: std::io::Error::other(ember_abi::error::chain(&e)),
        })?;
        super::attach_virtio(ctx, NAME, net)?;
    }
    Ok(())
}

/// The section entry for `--net` number `n`.
pub fn from_arg(a: &NetArg, n: usize) -> Value {
    let mut v = serde_json::json!({ "iface_id": format!("eth{n}"), "host_dev_name": a.tap });
    if let Some(m) = &a.mac {
        v["guest_mac"] = Value::String(format_mac(m));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_firecracker_interfaces_and_refuses_bad_ones() {
        let v: Value = serde_json::from_str(
            r#"[{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:ac:10:00:02",
                 "rx_rate_limiter":{"bandwidth":{"size":1000,"refill_time":100}},
                 "tx_rate_limiter":{"ops":{"size":10,"refill_time":1000}}},
                {"iface_id":"eth1","host_dev_name":"tap1"}]"#,
        )
        .unwrap();
        let n = parse(&v).unwrap();
        assert_eq!(n[0].guest_mac, Some([6, 0, 0xac, 0x10, 0, 2]));
        assert_eq!(n[0].tx_rate_limiter.ops.map(|o| o.size), Some(10));
        assert!(n[1].guest_mac.is_none() && n[1].rx_rate_limiter.is_unlimited());
        for bad in [
            r#"[{"iface_id":"a","host_dev_name":"t","guest_mac":"nope"}]"#,
            r#"[{"iface_id":"a","host_dev_name":"t"},{"iface_id":"b","host_dev_name":"t"}]"#,
            r#"[{"iface_id":"a","host_dev_name":"t"},{"iface_id":"a","host_dev_name":"u"}]"#,
            r#"[{"iface_id":"a","host_dev_name":"t","allow_mmds_requests":true}]"#,
        ] {
            assert!(parse(&serde_json::from_str(bad).unwrap()).is_err(), "{bad}");
        }
    }

    /// The entry the flag `--net s` makes (None: the flag is refused).
    fn from_flag(s: &str, n: usize) -> Option<Value> {
        match ember_abi::vmm_args::VmmArgs::parse(&["--net", s]).ok()? {
            ember_abi::vmm_args::VmmCommand::Run(a) => Some(from_arg(a.nets.first()?, n)),
            _ => None,
        }
    }

    #[test]
    fn net_flag_becomes_a_config_entry() {
        let v = from_flag("tap7,06:00:00:00:00:01", 0).unwrap();
        assert_eq!(
            (v["host_dev_name"].as_str(), v["guest_mac"].as_str()),
            (Some("tap7"), Some("06:00:00:00:00:01"))
        );
        assert!(from_flag("tap7,zz", 0).is_none());
        assert_eq!(from_flag("tap8", 2).unwrap()["iface_id"], "eth2");
    }
}
