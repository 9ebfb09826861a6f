;; Finds a bare CR or bare LF, 16 bytes at a time (WebAssembly SIMD).
;; The source of the module embedded in bare-line-endings.wasm.ts: after editing this file, run
;; `node bin/build-wasm.mjs` (a test fails while the two differ).
;;
;; A text has no bare CR or LF exactly when, at every position i, "byte i is LF" equals
;; "byte i-1 is CR": an LF without its CR breaks this at the LF, a CR without its LF at the byte
;; after it. So one unaligned load one byte back, two compares and an XOR test 16 positions.
(module
  (memory (export "memory") 2)
  ;; The caller puts the bytes at 16 (byte 15, never written, is 0: not a CR) and at least 16
  ;; zero bytes after them. Positions 16 .. 16+len are checked, the zero after the
  ;; text included, so a CR at its very end counts as bare. Returns 1 if something is bare.
  (func (export "scan") (param $len i32) (result i32)
    (local $at i32)
    (local $end i32)
    (local $seen v128)
    (local.set $at (i32.const 16))
    (local.set $end (i32.add (i32.const 17) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $seen
          (v128.or
            (local.get $seen)
            (v128.xor
              (i8x16.eq (v128.load (local.get $at)) (i8x16.splat (i32.const 10)))
              (i8x16.eq (v128.load (i32.sub (local.get $at) (i32.const 1))) (i8x16.splat (i32.const 13))))))
        (local.set $at (i32.add (local.get $at) (i32.const 16)))
        (br $next)))
    (v128.any_true (local.get $seen))))
