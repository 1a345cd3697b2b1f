;; WASI command module answering like a RESPONSE_STREAM handler: the HTTP
;; prelude (JSON), 8 NUL bytes, then a body with a NUL byte of its own.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "{\"statusCode\":203,\"headers\":{\"x-streamed\":\"1\"}}\00\00\00\00\00\00\00\00first part\00second part")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 77))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
