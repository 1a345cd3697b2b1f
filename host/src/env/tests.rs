//! Tests of the host end of the protocol against a scripted agent on the
//! other end of a real Unix socket pair, and of the launcher's failure paths
//! with real child processes.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use ember_abi::exit::{ExitCode, VmmStatus};
use ember_abi::protocol::{read_frame, write_frame, Message, VERSION};

use super::*;

fn ready() -> Message {
    Message::Ready {
        protocol_version: VERSION,
        agent: AgentKind::Linux,
        agent_version: "test".into(),
        boot_us: 10,
        timings: vec![("x".into(), 1)],
    }
}

fn spec() -> InitSpec {
    InitSpec {
        function_name: "f".into(),
        function_version: "1".into(),
        handler: "h".into(),
        code: Code::Path("/var/task".into()),
        env: vec![("A".into(), "b".into())],
        memory_mib: 128,
        timeout_ms: 1000,
        random_seed: None,
        trees: Vec::new(),
        ephemeral_mib: 0,
    }
}

fn request(id: &str, payload: &[u8]) -> InvokeRequest {
    InvokeRequest {
        request_id: id.into(),
        payload: payload.to_vec().into(),
        deadline_ms: 0,
        ..Default::default()
    }
}

/// Runs `agent` on the far end of a socket pair; returns the host end.
fn with_agent(
    agent: impl FnOnce(UnixStream) + Send + 'static,
) -> (UnixStream, thread::JoinHandle<()>) {
    let (host, guest) = UnixStream::pair().unwrap();
    (host, thread::spawn(move || agent(guest)))
}

#[test]
fn full_conversation_with_logs_and_errors() {
    let (host, agent) = with_agent(|mut s| {
        write_frame(&mut s, &ready()).unwrap();
        let Message::Init {
            random_seed, env, ..
        } = read_frame(&mut s).unwrap()
        else {
            panic!("no init")
        };
        assert_ne!(random_seed, [0; 32], "a fresh seed is drawn");
        assert_eq!(env, vec![("A".to_string(), "b".to_string())]);
        write_frame(&mut s, &Message::InitDone { init_us: 7 }).unwrap();
        loop {
            match read_frame(&mut s).unwrap() {
                Message::Invoke {
                    request_id,
                    payload,
                    ..
                } => {
                    let log = Message::Log {
                        request_id: request_id.clone(),
                        stream: LogStream::Stderr,
                        line: "hi".into(),
                    };
                    write_frame(&mut s, &log).unwrap();
                    let reply = if payload == b"fail" {
                        Message::Error {
                            request_id,
                            error_type: "Runtime.Trap".into(),
                            message: "unreachable".into(),
                            fatal: false,
                            duration_us: 1,
                            max_memory_kib: 2,
                            document: br#"{"errorMessage":"unreachable","stackTrace":[]}"#.to_vec(),
                        }
                    } else {
                        Message::Result {
                            request_id,
                            payload,
                            duration_us: 3,
                            max_memory_kib: 4,
                        }
                    };
                    write_frame(&mut s, &reply).unwrap();
                }
                Message::Shutdown => return,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    assert_eq!(conn.ready().agent, AgentKind::Linux);
    assert_eq!(
        conn.init(&spec(), Duration::from_secs(5)).unwrap().init_us,
        7
    );
    let inv = conn
        .invoke(&request("r1", b"echo"), Duration::from_secs(5))
        .unwrap();
    assert_eq!(inv.result, Ok(b"echo".to_vec()));
    assert_eq!(
        inv.logs.lines,
        vec![LogLine {
            stream: LogStream::Stderr,
            line: "hi".into()
        }]
    );
    assert_eq!((inv.duration_us, inv.max_memory_kib), (3, 4));
    let inv = conn
        .invoke(&request("r2", b"fail"), Duration::from_secs(5))
        .unwrap();
    let err = inv.result.unwrap_err();
    assert_eq!(
        (err.error_type.as_str(), err.fatal),
        ("Runtime.Trap", false)
    );
    // The runtime's own error document arrives unchanged.
    assert_eq!(
        err.document,
        br#"{"errorMessage":"unreachable","stackTrace":[]}"#
    );
    // An oversize request is refused without breaking the connection.
    let big = request("r3", &vec![0; MAX_PAYLOAD + 1]);
    assert!(matches!(
        conn.invoke(&big, Duration::from_secs(5)),
        Err(AgentError::Request(_))
    ));
    conn.shutdown().unwrap();
    agent.join().unwrap();
}

/// A restored agent sends its after-restore hook's lines (no request id)
/// right after its `Ready`: the next invocation carries them apart from
/// its own lines; another request's lines are still dropped.
#[test]
fn init_phase_lines_after_ready_reach_the_next_invocation() {
    let (host, agent) = with_agent(|mut s| {
        let log = |id: &str, line: &str| Message::Log {
            request_id: id.into(),
            stream: LogStream::Stderr,
            line: line.into(),
        };
        write_frame(&mut s, &ready()).unwrap();
        write_frame(&mut s, &log("", "after-restore hook ran")).unwrap();
        let Message::Invoke { request_id, .. } = read_frame(&mut s).unwrap() else {
            panic!("no invoke")
        };
        write_frame(&mut s, &log("old", "an abandoned call's line")).unwrap();
        write_frame(&mut s, &log(&request_id, "handled")).unwrap();
        let reply = Message::Result {
            request_id,
            payload: b"{}".to_vec(),
            duration_us: 1,
            max_memory_kib: 1,
        };
        write_frame(&mut s, &reply).unwrap();
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    let inv = conn
        .invoke(&request("r1", b"{}"), Duration::from_secs(5))
        .unwrap();
    let lines = |l: &Logs| l.lines.iter().map(|l| l.line.clone()).collect::<Vec<_>>();
    assert_eq!(lines(&inv.init_phase), ["after-restore hook ran"]);
    assert_eq!(lines(&inv.logs), ["handled"]);
    agent.join().unwrap();
}

#[test]
fn silent_agent_times_out_and_connection_stays_broken() {
    let (host, agent) = with_agent(|mut s| {
        write_frame(&mut s, &ready()).unwrap();
        let _ = read_frame(&mut s);
        write_frame(&mut s, &Message::InitDone { init_us: 1 }).unwrap();
        let _ = read_frame(&mut s);
        // Never answers the invoke; waits for the host to hang up.
        let _ = read_frame(&mut s);
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    conn.init(&spec(), Duration::from_secs(5)).unwrap();
    let t = std::time::Instant::now();
    assert!(matches!(
        conn.invoke(&request("r", b"x"), Duration::from_millis(100)),
        Err(AgentError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100) && t.elapsed() < Duration::from_secs(3));
    assert!(conn.is_broken());
    assert!(matches!(
        conn.invoke(&request("r", b"x"), Duration::from_secs(1)),
        Err(AgentError::Broken)
    ));
    drop(conn);
    agent.join().unwrap();
}

#[test]
fn eof_wrong_ids_and_garbage_are_faults() {
    // EOF mid-invocation.
    let (host, agent) = with_agent(|mut s| {
        write_frame(&mut s, &ready()).unwrap();
        let _ = read_frame(&mut s);
        write_frame(&mut s, &Message::InitDone { init_us: 1 }).unwrap();
        let _ = read_frame(&mut s);
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    conn.init(&spec(), Duration::from_secs(5)).unwrap();
    assert!(matches!(
        conn.invoke(&request("r", b"x"), Duration::from_secs(5)),
        Err(AgentError::Closed)
    ));
    agent.join().unwrap();

    // A result for another request.
    let (host, agent) = with_agent(|mut s| {
        write_frame(&mut s, &ready()).unwrap();
        let _ = read_frame(&mut s);
        let wrong = Message::Result {
            request_id: "other".into(),
            payload: Default::default(),
            duration_us: 0,
            max_memory_kib: 0,
        };
        write_frame(&mut s, &wrong).unwrap();
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    assert!(matches!(
        conn.invoke(&request("r", b"x"), Duration::from_secs(5)),
        Err(AgentError::Unexpected { .. })
    ));
    agent.join().unwrap();

    // Garbage instead of Ready, and a lying frame length.
    for bytes in [
        b"HTTP/1.1 200 OK\r\n\r\n".to_vec(),
        vec![b'E', b'M', VERSION, 1, 0xff, 0xff, 0xff, 0x7f],
    ] {
        let (host, agent) = with_agent(move |mut s| {
            use std::io::Write;
            s.write_all(&bytes).unwrap();
        });
        assert!(matches!(
            AgentConn::handshake(host, Duration::from_secs(5)),
            Err(AgentError::Protocol(_))
        ));
        agent.join().unwrap();
    }
}

#[test]
fn init_error_is_reported_with_its_logs() {
    let (host, agent) = with_agent(|mut s| {
        write_frame(&mut s, &ready()).unwrap();
        let _ = read_frame(&mut s);
        let log = Message::Log {
            request_id: String::new(),
            stream: LogStream::Agent,
            line: "bad module".into(),
        };
        write_frame(&mut s, &log).unwrap();
        let err = Message::InitError {
            error_type: "Runtime.InvalidModule".into(),
            message: "m".into(),
            init_us: 5,
            document: Vec::new(),
        };
        write_frame(&mut s, &err).unwrap();
    });
    let mut conn = AgentConn::handshake(host, Duration::from_secs(5)).unwrap();
    match conn.init(&spec(), Duration::from_secs(5)) {
        Err(AgentError::InitFailed {
            error: FunctionError { error_type, .. },
            init_us,
            logs,
            ..
        }) => {
            assert_eq!(
                (error_type.as_str(), init_us, logs.lines.len()),
                ("Runtime.InvalidModule", 5, 1)
            );
        }
        other => panic!("{other:?}"),
    }
    agent.join().unwrap();
}

fn test_root(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ember-agent-test-{}-{name}", std::process::id()))
}

#[test]
fn launch_reports_a_missing_vmm_and_a_vmm_that_dies() {
    let mut cfg = LaunchConfig::kernelless("/nonexistent/ember-vmm", "/nonexistent/agent");
    cfg.work_root = test_root("missing");
    assert!(matches!(
        Environment::launch(&cfg),
        Err(AgentError::Spawn(..))
    ));
    // A "VMM" that prints a reason and exits: the launcher must not wait for
    // the boot timeout, and must pass the reason on.
    let script = test_root("fake-vmm.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'noise' >&2\necho 'guest fault: #PF at rip 0x1234' >&2\nexit 3\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    cfg.vmm = script.clone();
    cfg.work_root = test_root("dies");
    let t = std::time::Instant::now();
    match Environment::launch(&cfg) {
        Err(AgentError::VmExited {
            status,
            exit,
            reason,
        }) => {
            assert!(status.contains('3'), "{status}");
            assert_eq!(exit, Some(VmmStatus::Exited(ExitCode::Guest(3))));
            assert_eq!(reason, "guest fault: #PF at rip 0x1234");
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("launched"),
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    // The failed environment left no work directory behind.
    assert_eq!(std::fs::read_dir(&cfg.work_root).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&cfg.work_root);
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_dir_all(test_root("missing"));
}

#[test]
fn launch_refuses_a_socket_path_that_cannot_fit() {
    let mut cfg = LaunchConfig::kernelless("/bin/true", "/x");
    cfg.work_root = test_root(&"d".repeat(100));
    assert!(matches!(
        Environment::launch(&cfg),
        Err(AgentError::PathTooLong(_))
    ));
    let _ = std::fs::remove_dir_all(&cfg.work_root);
}

#[test]
fn vmm_command_line_has_vsock_memory_and_console() {
    let mut cfg = LaunchConfig::kernelless("/usr/bin/ember-vmm", "/g/agent");
    cfg.mem_mib = 64;
    let args = spawn::vmm_args(&cfg, std::path::Path::new("/w/v.sock"), "id1");
    let line = args.join(" ");
    assert!(line.contains("--kernel /g/agent"), "{line}");
    assert!(line.contains("--mem-mib 64"), "{line}");
    assert!(line.contains("--vsock 3:/w/v.sock"), "{line}");
    assert!(line.contains("--console off"), "{line}");
}

#[test]
fn linux_guest_command_line_has_kernel_initrd_and_cmdline() {
    let mut cfg = LaunchConfig::kernelless("/usr/bin/ember-vmm", "/unused");
    cfg.guest = Guest::Linux {
        kernel: "/k/vmlinux".into(),
        initrd: Some("/k/initrd.cpio".into()),
        cmdline: "console=ttyS0 init=/init".into(),
    };
    cfg.extra_args = vec!["--drive".into(), "x".into()];
    let args = spawn::vmm_args(&cfg, std::path::Path::new("/w/v.sock"), "id2");
    let at = |flag: &str| arg_after(&args, flag);
    assert_eq!(at("--kernel"), Some("/k/vmlinux"));
    assert_eq!(at("--initrd"), Some("/k/initrd.cpio"));
    assert_eq!(at("--cmdline"), Some("console=ttyS0 init=/init"));
    assert!(!args.iter().any(|a| a == "--kernelless"));
    assert_eq!(&args[args.len() - 2..], ["--drive", "x"]);
    assert_eq!(vm_memory_mib(128), 560);
}

#[test]
fn jailed_command_line_maps_the_work_dir_and_agent_into_the_jail() {
    let mut cfg = LaunchConfig::kernelless("/usr/bin/ember-vmm", "/g/agent");
    cfg.mem_mib = 560;
    let mut jail = super::JailConfig::new("/usr/bin/ember-jailer");
    jail.chroot_base = Some("/j".into());
    cfg.jail = Some(jail.clone());
    let dir = std::path::Path::new("/w/env-1");
    let args = super::jail::jailer_args(&cfg, &jail, dir, "env-1").expect("valid paths");
    let split = args.iter().position(|a| a == "--").expect("a -- separator");
    let (outer, inner) = (&args[..split], &args[split + 1..]);
    let at = |args: &[String], flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    assert_eq!(at(outer, "--id").as_deref(), Some("env-1"));
    assert_eq!(
        at(outer, "--exec-file").as_deref(),
        Some("/usr/bin/ember-vmm")
    );
    assert_eq!(at(outer, "--dir-rw").as_deref(), Some("/w/env-1:/run"));
    assert_eq!(at(outer, "--file").as_deref(), Some("/g/agent:/agent"));
    assert_eq!(at(outer, "--mem-limit-mib").as_deref(), Some("624"));
    assert_eq!(at(outer, "--chroot-base").as_deref(), Some("/j"));
    // The VMM only ever sees in-jail paths.
    assert_eq!(at(inner, "--kernel").as_deref(), Some("/agent"));
    assert_eq!(at(inner, "--vsock").as_deref(), Some("3:/run/v.sock"));
    assert!(!inner
        .iter()
        .any(|a| a.contains("/w/env-1") || a.contains("/g/")));
    cfg.guest = Guest::Kernelless {
        elf: "/g:x/agent".into(),
    };
    assert!(matches!(
        super::jail::jailer_args(&cfg, &jail, dir, "env-1"),
        Err(AgentError::Jail(_))
    ));
}

/// The value after `flag` in a jailer argument list.
fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

#[test]
fn jailed_vms_get_a_cpu_quota_by_lambdas_memory_rule() {
    // 1,769 MiB buy one core; below 885 MiB the floor of half a core holds.
    assert_eq!(super::cpu_quota_us(1769, 1769), Some(100_000));
    assert_eq!(super::cpu_quota_us(3538, 1769), Some(200_000));
    assert_eq!(super::cpu_quota_us(128, 1769), Some(50_000));
    assert_eq!(super::cpu_quota_us(10240, 1769), Some(578_800));
    assert_eq!(super::cpu_quota_us(128, 0), None);
    let cfg = LaunchConfig::kernelless("/usr/bin/ember-vmm", "/g/agent");
    let mut jail = super::JailConfig::new("/usr/bin/ember-jailer");
    jail.cpu_quota_us = super::cpu_quota_us(1769, 1769);
    let args = super::jail::jailer_args(&cfg, &jail, std::path::Path::new("/w/e"), "e").unwrap();
    let at = |flag: &str| arg_after(&args, flag);
    assert_eq!(at("--cpu-quota-us"), Some("100000"));
    assert_eq!(at("--cpu-period-us"), Some("100000"));
    jail.cpu_quota_us = None;
    let args = super::jail::jailer_args(&cfg, &jail, std::path::Path::new("/w/e"), "e").unwrap();
    assert!(!args.iter().any(|a| a == "--cpu-quota-us"));
}

#[test]
fn all_vms_share_the_host_less_its_reserve() {
    // 2 cores, the default reserve (a tenth, at least a quarter core).
    assert_eq!(super::default_cpu_reserve_millicores(2000), 250);
    assert_eq!(super::default_cpu_reserve_millicores(64_000), 6400);
    assert_eq!(super::all_vms_cpu_quota_us(2000, 250), Ok(Some(175_000)));
    assert_eq!(super::all_vms_cpu_quota_us(2000, 0), Ok(None));
    let err = super::all_vms_cpu_quota_us(2000, 1800).unwrap_err();
    assert!(err.contains("leaves 200"), "{err}");
    let cfg = LaunchConfig::kernelless("/usr/bin/ember-vmm", "/g/agent");
    let mut jail = super::JailConfig::new("/usr/bin/ember-jailer");
    jail.all_vms_cpu_quota_us = Some(175_000);
    let args = super::jail::jailer_args(&cfg, &jail, std::path::Path::new("/w/e"), "e").unwrap();
    let at = |flag: &str| arg_after(&args, flag);
    assert_eq!(at("--all-vms-cpu-quota-us"), Some("175000"));
    assert_eq!(at("--cpu-period-us"), Some("100000"));
    assert_eq!(at("--cpu-quota-us"), None);
}
