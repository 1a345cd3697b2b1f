;; WASI command module for the log tests: prints the event as one stderr line
;; (a function log line), then answers with the event (stdin copied to stdout,
;; up to 64 KiB).
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 900) "\n")
  (func (export "_start")
    (local $total i32) (local $n i32)
    (block $done
      (loop $rd
        (i32.store (i32.const 0) (i32.add (i32.const 1024) (local.get $total)))
        (i32.store (i32.const 4) (i32.sub (i32.const 65536) (local.get $total)))
        (br_if $done (i32.ne (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)) (i32.const 0)))
        (local.set $n (i32.load (i32.const 16)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br_if $done (i32.ge_u (local.get $total) (i32.const 65536)))
        (br $rd)))
    ;; iovecs at 32: [event, "\n"] -> stderr; at 0: [event] -> stdout
    (i32.store (i32.const 32) (i32.const 1024))
    (i32.store (i32.const 36) (local.get $total))
    (i32.store (i32.const 40) (i32.const 900))
    (i32.store (i32.const 44) (i32.const 1))
    (drop (call $fd_write (i32.const 2) (i32.const 32) (i32.const 2) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (local.get $total))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
