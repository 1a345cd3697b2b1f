;; WASI reactor whose `_initialize` traps: its Init always fails.
(module
  (memory (export "memory") 1)
  (func (export "_initialize") unreachable)
  (func (export "handle")))
