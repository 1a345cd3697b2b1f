;; WASI reactor whose `_initialize` spins for 250 ms (a heavy init, as a
;; large runtime's start-up would be); `handle` answers {}. Used to show
;; what SnapStart saves (tests/api/test_snapstart.py, scripts/bench-snapstart.sh).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 384) "{}")
  (func $now (result i64)
    (drop (call $clock (i32.const 1) (i64.const 1000) (i32.const 64)))
    (i64.load (i32.const 64)))
  (func (export "_initialize")
    (local $end i64)
    (local.set $end (i64.add (call $now) (i64.const 250000000)))
    (loop $spin (br_if $spin (i64.lt_u (call $now) (local.get $end)))))
  (func (export "handle")
    (i32.store (i32.const 0) (i32.const 384))
    (i32.store (i32.const 4) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
