;; WASI reactor for the init-failure log test: `_initialize` prints
;; "init: config missing" to stderr, then traps, so its Init always fails.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "init: config missing\n")
  (func (export "_initialize")
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 21))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 16)))
    unreachable)
  (func (export "handle")))
