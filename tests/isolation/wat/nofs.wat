;; WASI command: asks for the first preopened directory (fd 3), which is
;; where a WASI program would find a filesystem such as /tmp, and answers
;; `prestat errno=N` (0 = a directory is there; 8 = EBADF: none).
(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "prestat errno=")
  (func (export "_start")
    (local $e i32)
    (local.set $e (call $prestat (i32.const 3) (i32.const 200)))
    (i32.store8 (i32.const 114) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $e) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.const 115) (i32.add (i32.const 48) (i32.rem_u (local.get $e) (i32.const 10))))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
