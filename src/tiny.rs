//! Release builds (`--features tiny`; also the size floor, bench/floor): no
//! std, a trap on panic (no message formatting), lol_alloc's free list as the
//! global allocator (the wasm is single-threaded: no atomics, no shared memory).

use lol_alloc::{AssumeSingleThreaded, FreeListAllocator};

// SAFETY: the release wasm is built without the atomics target feature,
// so it runs on one thread and the allocator is never entered twice.
#[global_allocator]
static ALLOC: AssumeSingleThreaded<FreeListAllocator> =
    unsafe { AssumeSingleThreaded::new(FreeListAllocator::new()) };

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
