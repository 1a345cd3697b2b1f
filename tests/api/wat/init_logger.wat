;; WASI reactor for the init-log test: `_initialize` (run once, in the init
;; phase) prints "init: warming up" to stderr; `handle` prints "handle: called"
;; and answers {}.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "init: warming up\n")
  (data (i32.const 320) "handle: called\n")
  (data (i32.const 384) "{}")
  (func $print (param $fd i32) (param $at i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $at))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16))))
  (func (export "_initialize")
    (call $print (i32.const 2) (i32.const 256) (i32.const 17)))
  (func (export "handle")
    (call $print (i32.const 2) (i32.const 320) (i32.const 15))
    (call $print (i32.const 1) (i32.const 384) (i32.const 2))))
