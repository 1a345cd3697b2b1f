;; The file-system probe (issue 19), shared by the runtime's unit tests
;; (guest-agent/src/wasm/tests.rs) and the microVM test (tests/tests/agent_fs.rs):
;; a command module that reads /var/task/data.txt (fd 3) and
;; /opt/python/layer.txt (fd 4), appends a byte to /tmp/count (fd 5) and
;; prints its size as a digit, then tries `../../etc/passwd` from /var/task
;; and a path pointer outside memory and prints both errnos as bytes.
;; Spliced into a module after the shared fd_read/fd_write imports and
;; before the `$write` helper: the first part (imports) ends at the marker.
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $fstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
;; --- body ---
  (data (i32.const 256) "data.txt")
  (data (i32.const 272) "count")
  (data (i32.const 288) "../../etc/passwd")
  (data (i32.const 320) "python/layer.txt")
  (func $cat (param $dir i32) (param $p i32) (param $l i32) (local $fd i32)
    (if (call $open (local.get $dir) (i32.const 0) (local.get $p) (local.get $l)
          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 100))
      (then (unreachable)))
    (local.set $fd (i32.load (i32.const 100)))
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.const 1024))
    (if (call $fd_read (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))
      (then (unreachable)))
    (drop (call $write (i32.const 1) (i32.const 4096) (i32.load (i32.const 24))))
    (drop (call $close (local.get $fd))))
  (func (export "_start") (local $fd i32)
    (call $cat (i32.const 3) (i32.const 256) (i32.const 8))
    (call $cat (i32.const 4) (i32.const 320) (i32.const 16))
    ;; /tmp/count: O_CREAT, read+write rights, append
    (if (call $open (i32.const 5) (i32.const 0) (i32.const 272) (i32.const 5)
          (i32.const 1) (i64.const 66) (i64.const 0) (i32.const 1) (i32.const 100))
      (then (unreachable)))
    (local.set $fd (i32.load (i32.const 100)))
    (if (call $write (local.get $fd) (i32.const 272) (i32.const 1)) (then (unreachable)))
    (if (call $fstat (local.get $fd) (i32.const 512)) (then (unreachable)))
    (i32.store8 (i32.const 600) (i32.add (i32.const 48) (i32.load (i32.const 544))))
    (i32.store8 (i32.const 601)
      (call $open (i32.const 3) (i32.const 0) (i32.const 288) (i32.const 16)
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 100)))
    (i32.store8 (i32.const 602)
      (call $open (i32.const 3) (i32.const 0) (i32.const 0xfffffff0) (i32.const 64)
        (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 100)))
    (drop (call $write (i32.const 1) (i32.const 600) (i32.const 3))))
