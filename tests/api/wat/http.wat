;; WASI command module answering like a web handler (payload format 2.0
;; response): status 201, two headers, a cookie and a text body.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "{\"statusCode\":201,\"headers\":{\"X-Fn\":\"yes\",\"Content-Type\":\"text/plain\"},\"cookies\":[\"session=abc; HttpOnly\"],\"body\":\"made by the function\"}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 137))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
