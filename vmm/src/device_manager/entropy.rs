//! The `entropy` config section and `PUT /entropy` (Firecracker's
//! `EntropyDeviceConfig`: `{"rate_limiter": {...}}`, the limiter optional):
//! checks it and attaches one virtio-rng device fed by the host's
//! `getrandom(2)`.

use ember_devices::rate_limiter::RateLimiterConfig;
use ember_devices::virtio::rng::{Entropy, EntropyConfig as DeviceConfig};
use serde_json::Value;

use crate::devices::{parse_section, DeviceContext, DeviceError};

/// Config key (and API resource).
pub const NAME: &str = "entropy";

/// The section as Firecracker spells it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyConfig {
    #[serde(default)]
    pub rate_limiter: Option<RateLimiterConfig>,
}

/// Parses and checks the section.
pub fn parse(value: &Value) -> Result<EntropyConfig, DeviceError> {
    parse_section(NAME, value)
}

/// Attaches the virtio-rng device.
pub fn attach(ctx: &mut DeviceContext, c: &EntropyConfig) -> Result<(), DeviceError> {
    let cfg = DeviceConfig {
        rate_limiter: c.rate_limiter.unwrap_or_default(),
    };
    let device = Entropy::new(&cfg).map_err(|e| DeviceError::Setup {
        section: NAME.to_string(),
        what: e.to_string(),
        source: std::io::Error::other(ember_abi::error::chain(&e)),
    })?;
    super::attach_virtio(ctx, NAME, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_firecracker_entropy_and_refuses_bad_ones() {
        let ok = [
            r#"{}"#,
            r#"{"rate_limiter":null}"#,
            r#"{"rate_limiter":{"bandwidth":{"size":1000,"one_time_burst":0,"refill_time":100}}}"#,
            r#"{"rate_limiter":{"ops":{"size":10,"refill_time":1000}}}"#,
        ];
        for o in ok {
            parse(&serde_json::from_str(o).unwrap()).unwrap();
        }
        let bad = [
            r#"{"rate":1}"#,
            r#"{"rate_limiter":{"bandwidth":{"size":-1,"refill_time":1}}}"#,
            r#"{"rate_limiter":{"bandwidth":{"refill_time":1}}}"#,
            r#""entropy""#,
        ];
        for b in bad {
            let e = parse(&serde_json::from_str(b).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("config section `entropy`"), "{b}: {e}");
        }
    }
}
