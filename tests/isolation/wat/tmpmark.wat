;; WASI command: looks for the file `mark` in the first preopened directory
;; (fd 3: the environment's in-memory /tmp), answers `open errno=NN` (00: it
;; is there; 44 = ENOENT: it is not), then creates it. So a warm call in the
;; same environment finds the mark an earlier call left, and any other
;; environment does not.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "open errno=")
  (data (i32.const 300) "mark")
  (func (export "_start")
    (local $e i32)
    (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 300) (i32.const 4)
                              (i32.const 0) (i64.const 0x1fffffff) (i64.const 0x1fffffff)
                              (i32.const 0) (i32.const 200)))
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 300) (i32.const 4)
                      (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff)
                      (i32.const 0) (i32.const 204)))
    (i32.store8 (i32.const 111) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $e) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.const 112) (i32.add (i32.const 48) (i32.rem_u (local.get $e) (i32.const 10))))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
