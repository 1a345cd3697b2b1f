;; WASI command module whose web answer is its own 403 with a
;; {"Message": …} body, shaped like emberd's refusals: emberd must not take
;; it for a refusal it made (audit trail of function URL calls).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "{\"statusCode\":403,\"headers\":{\"Content-Type\":\"application/json\"},\"body\":\"{\\\"Message\\\":\\\"fn-own-403\\\"}\"}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 256))
    (i32.store (i32.const 4) (i32.const 102))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
