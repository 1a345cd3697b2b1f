//! The environment a Lambda runtime expects: the reserved `AWS_LAMBDA_*`,
//! `_HANDLER`, `LAMBDA_TASK_ROOT`, `AWS_LAMBDA_RUNTIME_API`... variables, the
//! function's own variables, and sane defaults for PATH, locale and time zone.

use std::path::Path;

use super::config::AgentConfig;

/// Reserved names: the function's configuration cannot override these.
const RESERVED: &[&str] = &[
    "_HANDLER",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// What the runtime environment is built from.
pub struct EnvInputs<'a> {
    pub cfg: &'a AgentConfig,
    pub task_root: &'a Path,
    pub api_addr: &'a str,
    pub function_name: &'a str,
    pub function_version: &'a str,
    pub handler: &'a str,
    pub memory_mib: u32,
    /// The function's configured variables.
    pub user: &'a [(String, String)],
}

/// Builds the runtime's complete environment (it starts from an empty one).
pub fn runtime_env(i: &EnvInputs<'_>) -> Vec<(String, String)> {
    let task = i.task_root.display().to_string();
    let rt_dir = i.cfg.runtime_dir.display().to_string();
    let opt = i.cfg.opt_dir.display().to_string();
    // Inside a guest the runtime image decides; as a host process the
    // agent's own PATH finds sh, python3...
    let path = if i.cfg.pid1 {
        format!("/var/lang/bin:/usr/local/bin:/usr/bin:/bin:{opt}/bin")
    } else {
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
    };
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path),
        ("LANG".into(), "C.UTF-8".into()),
        ("TZ".into(), ":UTC".into()),
        ("HOME".into(), "/tmp".into()),
    ];
    if i.cfg.pid1 {
        let ld = format!(
            "/var/lang/lib:/lib64:/usr/lib64:{rt_dir}:{rt_dir}/lib:{task}:{task}/lib:{opt}/lib"
        );
        env.push(("LD_LIBRARY_PATH".into(), ld));
    }
    for (k, v) in i.user {
        if !RESERVED.contains(&k.as_str()) {
            env.retain(|(name, _)| name != k);
            env.push((k.clone(), v.clone()));
        }
    }
    let reserved = [
        ("_HANDLER", i.handler.to_string()),
        ("AWS_REGION", i.cfg.region.clone()),
        ("AWS_DEFAULT_REGION", i.cfg.region.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", i.function_name.to_string()),
        (
            "AWS_LAMBDA_FUNCTION_VERSION",
            i.function_version.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", i.memory_mib.to_string()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_string()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", i.function_name),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("ember/[{}]", i.function_version),
        ),
        ("AWS_LAMBDA_RUNTIME_API", i.api_addr.to_string()),
        ("LAMBDA_TASK_ROOT", task),
        ("LAMBDA_RUNTIME_DIR", rt_dir),
    ];
    env.extend(reserved.into_iter().map(|(k, v)| (k.to_string(), v)));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_variables_cannot_override_reserved_ones() {
        let cfg = AgentConfig::default();
        let user = vec![
            ("AWS_LAMBDA_RUNTIME_API".to_string(), "evil:1".to_string()),
            ("TZ".to_string(), "Europe/Paris".to_string()),
            ("MY_VAR".to_string(), "x".to_string()),
        ];
        let env = runtime_env(&EnvInputs {
            cfg: &cfg,
            task_root: Path::new("/var/task"),
            api_addr: "127.0.0.1:9001",
            function_name: "f",
            function_version: "$LATEST",
            handler: "app.handler",
            memory_mib: 128,
            user: &user,
        });
        let get = |k: &str| {
            env.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("AWS_LAMBDA_RUNTIME_API"), ["127.0.0.1:9001"]);
        assert_eq!(get("TZ"), ["Europe/Paris"]);
        assert_eq!(get("MY_VAR"), ["x"]);
        assert_eq!(get("_HANDLER"), ["app.handler"]);
        assert_eq!(get("LAMBDA_TASK_ROOT"), ["/var/task"]);
    }
}
