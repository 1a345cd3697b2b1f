//! What both engines share beyond the WASI surface: one environment's
//! module, instantiated per invocation for commands and once for reactors,
//! with the reactor's `_initialize`, proc_exit re-instantiation and the
//! per-invocation output. Written once as [`define_engine!`], expanded in
//! `interp` (wasmi) and `compiled` (wasmtime), whose embedding APIs have the
//! same shape.

/// Defines the engine struct `$name`. In scope at the call site: the
/// engine's `Engine`, `Module`, `Linker`, `Store`, `Instance`, `Error`,
/// `ExternType`, `StoreLimitsBuilder`; `Ctx`; `Files`, `files_for`; the WASI module `wasi_impl`;
/// and the engine-specific functions `load`, `new_store`, `instantiate`,
/// `get_func`, `call`, `classify`, `memory_kib`.
macro_rules! define_engine {
    ($name:ident) => {
        /// The reactor's long-lived instance.
        struct Resident {
            store: Store<Ctx>,
            instance: Instance,
        }

        /// A loaded module, ready to be invoked.
        pub struct $name {
            engine: Engine,
            module: Module,
            linker: Linker<Ctx>,
            kind: ModuleKind,
            cfg: FunctionConfig,
            clock: Arc<dyn Clock>,
            /// Reactor instance (None for commands, or after a reactor exited).
            resident: Option<Resident>,
            /// State carried between command invocations (the random
            /// stream, the file system).
            spare: Option<Ctx>,
        }

        impl $name {
            /// Loads `code` (see `load`), links WASI, and (for reactors)
            /// instantiates and runs `_initialize`. Returns the init-time log lines.
            pub fn new(
                code: &[u8],
                cfg: FunctionConfig,
                clock: Arc<dyn Clock>,
            ) -> Result<($name, Vec<(LogStream, String)>), InitFailure> {
                let mut cfg = cfg;
                let (engine, module) = load(code, &cfg)?;
                let mut linker = Linker::new(&engine);
                wasi_impl::add_to_linker(&mut linker)
                    .map_err(|e| fail("Runtime.InvalidModule", e))?;
                let mut defined: Vec<String> = Vec::new();
                for import in module.imports() {
                    let (m, name) = (import.module(), import.name());
                    let known = wasi::IMPLEMENTED.contains(&name)
                        || $crate::wasm::wasi_fs::IMPLEMENTED.contains(&name);
                    if m != WASI {
                        return Err(fail(
                            "Runtime.InvalidModule",
                            format!("unsupported import {m}.{name}"),
                        ));
                    }
                    if known || defined.iter().any(|d| d == name) {
                        continue;
                    }
                    let ExternType::Func(ty) = import.ty() else {
                        return Err(fail(
                            "Runtime.InvalidModule",
                            format!("unsupported import {m}.{name}"),
                        ));
                    };
                    wasi_impl::add_enosys_stub(&mut linker, name, ty.clone())
                        .map_err(|e| fail("Runtime.InvalidModule", e))?;
                    defined.push(name.into());
                }
                let exports = |n: &str| {
                    module
                        .exports()
                        .any(|e| e.name() == n && matches!(e.ty(), ExternType::Func(_)))
                };
                let kind = module_kind(&cfg, exports)?;
                let files = files_for(&mut cfg)?;
                let mut rt = $name {
                    engine,
                    module,
                    linker,
                    kind,
                    spare: None,
                    resident: None,
                    clock,
                    cfg,
                };
                let ctx = rt.new_ctx(ChaCha20::new(&rt.cfg.random_seed), files);
                // Instantiate once now: link errors and oversized memories surface at
                // init, and a reactor's instance is the one it keeps.
                let mut store = rt.new_store(ctx);
                let instance = rt
                    .instantiate(&mut store)
                    .map_err(|e| fail("Runtime.InvalidModule", e))?;
                let mut logs = Vec::new();
                match &rt.kind {
                    ModuleKind::Command => rt.spare = Some(store.into_data()),
                    ModuleKind::Reactor { .. } => {
                        logs = rt.hook(&mut store, instance, "_initialize")?;
                        // SnapStart: the environment is about to be snapshotted.
                        if $crate::wasm::runtime::snap_start(&rt.cfg) {
                            logs.extend(rt.hook(
                                &mut store,
                                instance,
                                $crate::wasm::runtime::BEFORE_SNAPSHOT,
                            )?);
                        }
                        rt.resident = Some(Resident { store, instance });
                    }
                }
                Ok((rt, logs))
            }

            pub fn kind(&self) -> &ModuleKind {
                &self.kind
            }

            /// Runs the reactor export `name` (if the module has it) with
            /// the init phase's environment and deadline; its log lines, or
            /// why it failed.
            fn hook(
                &self,
                store: &mut Store<Ctx>,
                instance: Instance,
                name: &str,
            ) -> Result<Vec<(LogStream, String)>, InitFailure> {
                let Some(f) = get_func(store, instance, name) else {
                    return Ok(Vec::new());
                };
                let deadline =
                    self.clock.realtime_ns() / 1_000_000 + u64::from(self.cfg.timeout_ms);
                let env = self.env_for(&InvokeContext {
                    deadline_ms: deadline,
                    ..Default::default()
                });
                store.data_mut().start_invocation(&[], env);
                let end = call(store, f, &*self.clock, deadline);
                store.data_mut().flush_stderr();
                let logs = core::mem::take(&mut store.data_mut().logs);
                let mut f = match end {
                    CallEnd::Finished | CallEnd::Exit(0) | CallEnd::Failed => return Ok(logs),
                    CallEnd::Exit(n) => {
                        // A runtime's init error: its document on stdout
                        // (the reactor ABI, DESIGN.md).
                        let mut f = fail(
                            "Runtime.ExitError",
                            format!("{name} exited with status {n}"),
                        );
                        f.document = core::mem::take(&mut store.data_mut().stdout);
                        f
                    }
                    // `_initialize`'s failures keep their old wording.
                    CallEnd::Trap(m) if name == "_initialize" => fail("Runtime.InitError", m),
                    CallEnd::Trap(m) => fail("Runtime.InitError", format!("{name}: {m}")),
                    CallEnd::Timeout if name == "_initialize" => {
                        fail("Sandbox.Timedout", "init timed out")
                    }
                    CallEnd::Timeout => fail("Sandbox.Timedout", format!("{name} timed out")),
                };
                // What it logged before failing goes with the error.
                f.logs = logs;
                Err(f)
            }

            /// After a snapshot restore: every random stream this
            /// environment keeps is re-keyed with the clone's fresh `seed`
            /// (so clones never share WASI `random_get` output), then the
            /// reactor's `ember_after_restore` export runs if it has one.
            pub fn after_restore(
                &mut self,
                seed: &[u8; 32],
            ) -> Result<Vec<(LogStream, String)>, InitFailure> {
                if let Some(ctx) = self.spare.as_mut() {
                    ctx.rng.rekey(seed);
                }
                let Some(mut res) = self.resident.take() else {
                    return Ok(Vec::new());
                };
                res.store.data_mut().rng.rekey(seed);
                let r = self.hook(
                    &mut res.store,
                    res.instance,
                    $crate::wasm::runtime::AFTER_RESTORE,
                );
                self.resident = Some(res);
                r
            }

            /// A context for a new instance: `files` keeps its trees and
            /// `/tmp`, but no file stays open.
            fn new_ctx(&self, rng: ChaCha20, mut files: Files) -> Ctx {
                let limits = StoreLimitsBuilder::new()
                    .memory_size((self.cfg.memory_mib as usize).saturating_mul(1024 * 1024))
                    .instances(1)
                    .tables(4)
                    .memories(1)
                    .table_elements(1 << 20)
                    .build();
                let mut ctx = Ctx::new(rng, self.clock.clone(), limits);
                files.close_all();
                ctx.fs = files;
                let name = if self.cfg.handler.is_empty() {
                    &self.cfg.function_name
                } else {
                    &self.cfg.handler
                };
                ctx.args = alloc::vec![name.as_bytes().to_vec()];
                ctx
            }

            fn new_store(&self, ctx: Ctx) -> Store<Ctx> {
                new_store(&self.engine, ctx, &self.clock)
            }

            /// Which of `names` [`wasi_impl::add_to_linker`] defines in
            /// `wasi_snapshot_preview1` (tests hold the WASI tables' lists
            /// against it). Neither engine lists a linker's host functions,
            /// so each name is probed: defining it again fails exactly when
            /// it is defined (shadowing is off).
            #[cfg(test)]
            pub(crate) fn wasi_defined(&self, names: &[&'static str]) -> Vec<&'static str> {
                let mut linker = Linker::<Ctx>::new(&self.engine);
                if wasi_impl::add_to_linker(&mut linker).is_err() {
                    return Vec::new();
                }
                names
                    .iter()
                    .copied()
                    .filter(|n| linker.func_wrap(WASI, n, || {}).is_err())
                    .collect()
            }

            fn instantiate(&self, store: &mut Store<Ctx>) -> Result<Instance, Error> {
                instantiate(&self.linker, store, &self.module, &self.cfg, &*self.clock)
            }

            fn env_for(&self, ctx: &InvokeContext<'_>) -> Vec<Vec<u8>> {
                env_for(&self.cfg, ctx)
            }

            pub fn invoke(&mut self, req: &InvokeContext<'_>) -> InvokeOutput {
                let start = self.clock.monotonic_ns();
                let env = self.env_for(req);
                let (end, ctx, mem_kib) = match self.kind.clone() {
                    ModuleKind::Command => self.run_command(req, env),
                    ModuleKind::Reactor { handler } => self.run_reactor(req, env, &handler),
                };
                let mut ctx = ctx;
                let (outcome, logs) = finish(&self.cfg, end, &mut ctx);
                self.put_back(ctx);
                InvokeOutput {
                    outcome,
                    logs,
                    duration_us: (self.clock.monotonic_ns().saturating_sub(start)) / 1000,
                    max_memory_kib: mem_kib,
                }
            }
            fn run_command(
                &mut self,
                req: &InvokeContext<'_>,
                env: Vec<Vec<u8>>,
            ) -> (CallEnd, Ctx, u64) {
                let (rng, files) = match self.spare.take() {
                    Some(old) => (old.rng, old.fs),
                    None => (ChaCha20::new(&self.cfg.random_seed), Files::default()),
                };
                let mut ctx = self.new_ctx(rng, files);
                ctx.start_invocation(req.payload, env);
                let mut store = self.new_store(ctx);
                let (end, mem) = match self.instantiate(&mut store) {
                    Ok(instance) => {
                        let end = match get_func(&mut store, instance, "_start") {
                            Some(f) => call(&mut store, f, &*self.clock, req.deadline_ms),
                            None => CallEnd::Trap("_start disappeared".into()),
                        };
                        (end, memory_kib(&mut store, instance))
                    }
                    Err(e) => (classify(&e), 0),
                };
                (end, store.into_data(), mem)
            }

            fn run_reactor(
                &mut self,
                req: &InvokeContext<'_>,
                env: Vec<Vec<u8>>,
                handler: &str,
            ) -> (CallEnd, Ctx, u64) {
                if self.resident.is_none() {
                    // The previous instance called proc_exit: start a fresh one, as
                    // Lambda re-inits a runtime that exited.
                    let (rng, files) = match self.spare.take() {
                        Some(old) => (old.rng, old.fs),
                        None => (ChaCha20::new(&self.cfg.random_seed), Files::default()),
                    };
                    let mut store = self.new_store(self.new_ctx(rng, files));
                    match self.instantiate(&mut store) {
                        Ok(instance) => self.resident = Some(Resident { store, instance }),
                        Err(e) => return (classify(&e), store.into_data(), 0),
                    }
                }
                let Some(mut res) = self.resident.take() else {
                    return (
                        CallEnd::Trap("no instance".into()),
                        self.new_ctx(ChaCha20::new(&[0; 32]), Files::default()),
                        0,
                    );
                };
                res.store.data_mut().start_invocation(req.payload, env);
                let end = match get_func(&mut res.store, res.instance, handler) {
                    Some(f) => call(&mut res.store, f, &*self.clock, req.deadline_ms),
                    None => CallEnd::Trap(format!("handler `{handler}` not found")),
                };
                let mem = memory_kib(&mut res.store, res.instance);
                // Move the per-invocation output out; the state stays in the store.
                let ctx = res.store.data_mut();
                let mut out = Ctx::new(
                    ChaCha20::new(&[0; 32]),
                    self.clock.clone(),
                    StoreLimitsBuilder::new().build(),
                );
                out.stdout = core::mem::take(&mut ctx.stdout);
                out.stdout_overflow = ctx.stdout_overflow;
                ctx.flush_stderr();
                out.logs = core::mem::take(&mut ctx.logs);
                out.logs_dropped = ctx.logs_dropped;
                if let CallEnd::Exit(_) = end {
                    // The instance is finished; keep its random stream for the next one.
                    self.spare = Some(res.store.into_data());
                } else {
                    self.resident = Some(res);
                }
                (end, out, mem)
            }

            fn put_back(&mut self, ctx: Ctx) {
                if self.kind == ModuleKind::Command {
                    self.spare = Some(ctx);
                }
            }
        }
    };
}
pub(crate) use define_engine;
