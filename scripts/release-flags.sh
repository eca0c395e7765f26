# The release wasm's compiler and optimiser flags, sourced by scripts/build-pkg.sh
# (the package) and bench/floor.sh (the size floor), so that both are built alike.
#
# RUSTFLAGS, for the installed `nightly` with -Zbuild-std=core,alloc: abort on
# panic without any formatting (immediate-abort, no location details, no Debug
# formatting).
#
# Without the reference-types target feature, wasm-bindgen keeps JS values in
# its JS-side heap instead of an externref table: no externref shim around
# each export and import (measured: payload 47,559 -> 46,747 B brotli; the
# wasm -1,015 B, the glue +203 B). Every engine the package supports runs
# both; the suites that load pkg/ (e2e, engines, apps) run this build.
#
# --inline-threshold=12: LLVM's inliner a little more willing than opt-level
# z's default (measured on the release wasm, brotli: 5 (default) 39,789 B,
# 8 39,572, 12 and 15 39,423, 18 39,685, 25 39,637, 40 40,319). Re-measure
# when the code changes much. -Zmir-opt-level=3 would take 1.2 KB more with
# it, but that level runs MIR passes rustc does not enable by default: not used.
#
# -Zcross-crate-inline-threshold=yes: every function's MIR is made available to the crates that
# call it, as `#[inline]` functions' is (the default: only small leaf functions), here including
# core, alloc, wasm-bindgen and js-sys, so LLVM instantiates and inlines them where they are used.
# An optimisation heuristic, not a change of meaning. Measured on the release wasm, brotli, LLVM
# threshold 12: neither 37,149 B; rustc's MIR inliner (-Zinline-mir=yes, which rustc runs by
# default for -O but not for opt-level z) 35,980, with its threshold 100 35,824 (150 35,867;
# 200 35,813; 300 36,129; 1000 36,520); this flag with the MIR inliner 34,199 (its threshold
# 30 / 50 / 200: 34,211 / 34,199 / 34,199); this flag alone 33,950 (LLVM's threshold 0 / 5 / 8 /
# 15 / 25: 34,712 / 34,334 / 34,219 / 33,950 / 34,558; with -enable-gvn-sink 34,058). A numeric
# threshold (200) changes nothing. Re-measure with LLVM's threshold when the code changes much.
RELEASE_RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none -Zfmt-debug=none -Ctarget-feature=-reference-types -Cllvm-args=--inline-threshold=12 -Zcross-crate-inline-threshold=yes"

# wasm-opt (binaryen from npm: scripts/node_modules/.bin/wasm-opt).
# --low-memory-unused: the optimizer may assume nothing lives below address
# 1024. Rust's wasm32 layout puts the 1 MB stack first, growing down to 0,
# and the data after it (__stack_pointer starts at 1048576), so those bytes
# are only reached by a stack 1 MB deep. --flatten --rereloop, then -Oz twice,
# rebuilds the control flow before shrinking it. Measured (brotli, wasm
# before short names): -Oz 38,822 B; -Oz --converge 38,798; -Oz
# --low-memory-unused --converge 38,538; this line 38,264.
# scripts/check-low-memory.mjs fails the build if that layout ever changes:
# run it on the input first. --strip-target-features: the `target_features`
# custom section (148 B) is for tools that read the module later; the features
# are named here, and engines ignore the section (the wasm -113 B brotli, the
# payload -86 B).
WASM_OPT_FLAGS=(--low-memory-unused --flatten --rereloop -Oz -Oz --enable-bulk-memory
  --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals
  --enable-reference-types --enable-multivalue --strip-debug --strip-producers --strip-target-features)
