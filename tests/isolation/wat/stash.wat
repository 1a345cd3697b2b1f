;; WASI reactor (one instance per environment): its linear memory is the
;; environment's memory state. An event "put:X" (a JSON string) stores X in
;; memory; every call answers the JSON string "stash=" followed by what this
;; instance's memory holds (nothing, in a fresh environment). The event
;; "hold" first spins for 1.5 s (keeps the environment busy).
;; Memory: 0..8 iovec / 8 nread, 16..40 three output iovecs, 40 clock, 1024..1280 the
;; event, 2044 stash length, 2048..2304 the stash, 3000 `"stash=`, 3010 `"`.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 3000) "\"stash=")
  (data (i32.const 3010) "\"")
  (func $now (result i64)
    (drop (call $clock (i32.const 1) (i64.const 1000) (i32.const 40)))
    (i64.load (i32.const 40)))
  (func (export "handle")
    (local $n i32) (local $end i64)
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 256))
    (i32.store (i32.const 8) (i32.const 0))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (local.set $n (i32.load (i32.const 8)))
    ;; "hold" read as a little-endian i32
    (if (i32.eq (i32.load (i32.const 1025)) (i32.const 0x646c6f68))
      (then
        (local.set $end (i64.add (call $now) (i64.const 1500000000)))
        (loop $spin (br_if $spin (i64.lt_u (call $now) (local.get $end))))))
    ;; `"put:` then at least the closing quote: the bytes after the opening
    ;; quote read as a little-endian i32 are "put:".
    (if (i32.and (i32.ge_u (local.get $n) (i32.const 6))
                 (i32.eq (i32.load (i32.const 1025)) (i32.const 0x3a747570)))
      (then
        (memory.copy (i32.const 2048) (i32.const 1029) (i32.sub (local.get $n) (i32.const 6)))
        (i32.store (i32.const 2044) (i32.sub (local.get $n) (i32.const 6)))))
    (i32.store (i32.const 16) (i32.const 3000))
    (i32.store (i32.const 20) (i32.const 7))
    (i32.store (i32.const 24) (i32.const 2048))
    (i32.store (i32.const 28) (i32.load (i32.const 2044)))
    (i32.store (i32.const 32) (i32.const 3010))
    (i32.store (i32.const 36) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 3) (i32.const 8)))))
