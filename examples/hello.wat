;; hello.wat — the smallest ember function: a WASI command module that reads
;; the event from stdin and answers {"hello": <event>} on stdout (WAGI style),
;; logging one line to stderr. Run it:
;;   wat2wasm examples/hello.wat -o /tmp/hello.wasm
;;   echo '"world"' | ember-run /tmp/hello.wasm
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "{\"hello\":")
  (data (i32.const 32) "}")
  (data (i32.const 48) "hello.wat: handling an event\n")

  ;; write(fd, ptr, len): one iovec at 0, bytes written at 8.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func (export "_start") (local $n i32) (local $total i32)
    (call $write (i32.const 2) (i32.const 48) (i32.const 29))
    ;; Read the whole event into memory at 1024 (up to the end of page 2).
    (block $done
      (loop $more
        (i32.store (i32.const 0) (i32.add (i32.const 1024) (local.get $total)))
        (i32.store (i32.const 4) (i32.sub (i32.const 130048) (local.get $total)))
        (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br_if $more (i32.lt_u (local.get $total) (i32.const 130048)))))
    ;; An empty event answers {"hello":null}.
    (if (i32.eqz (local.get $total))
      (then
        (i32.store (i32.const 1024) (i32.const 0x6c6c756e)) ;; "null"
        (local.set $total (i32.const 4))))
    (call $write (i32.const 1) (i32.const 16) (i32.const 9))
    (call $write (i32.const 1) (i32.const 1024) (local.get $total))
    (call $write (i32.const 1) (i32.const 32) (i32.const 1))))
