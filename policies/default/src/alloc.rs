//! A bump allocator for the wasm component, so an evaluation never calls `memory.grow` on the
//! common path.
//!
//! Every evaluation runs in a fresh instance and lasts microseconds, so memory is never given
//! back: allocations bump a cursor from `__heap_base` (where the linker ends the stack and the
//! static data) to the end of the module's initial memory, one 64 KiB page of which about
//! 26 KiB are free. `dealloc` only rewinds the cursor when it frees the most recent
//! allocation, and `realloc` of the most recent allocation grows it in place, so building a
//! `String` or `Vec` does not copy. When the initial memory is exhausted, memory is grown by
//! whole pages and bumped through the same way; when growing fails, allocation returns null
//! (and the allocation-error handler aborts).
//!
//! [`cabi_realloc`], the canonical ABI's allocation function through which the host copies
//! every argument in, bumps directly, without the four calls of wit-bindgen's default.
//!
//! wasm32-unknown-unknown without the `atomics` feature is single-threaded, which is what makes
//! the `Cell`s below sound in a `static`.

#![allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait by definition"
)]

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::Cell;
use core::ptr;

/// A wasm page.
const PAGE_BYTES: usize = 64 * 1024;
/// The least memory is grown by once the initial memory is exhausted (1 MiB), to grow rarely.
const MIN_GROW_PAGES: usize = 16;

unsafe extern "C" {
    /// Defined by the linker (`wasm-ld`): the first address after the stack and the static
    /// data, where the heap may start. Only its address is used.
    static __heap_base: u8;
}

/// The allocator's state: the region being bumped through is `[next, end)`, addresses in
/// linear memory; `last` is the start of the most recent live allocation (0: none).
struct BumpAllocator {
    next: Cell<usize>,
    end: Cell<usize>,
    last: Cell<usize>,
}

// SAFETY: this module is compiled only for wasm32; without the `atomics` target feature the
// module has a single thread, so the `Cell`s are never accessed concurrently.
#[cfg(not(target_feature = "atomics"))]
unsafe impl Sync for BumpAllocator {}

#[global_allocator]
static ALLOCATOR: BumpAllocator = BumpAllocator {
    next: Cell::new(0),
    end: Cell::new(0),
    last: Cell::new(0),
};

impl BumpAllocator {
    /// Points the cursor at the free rest of the initial memory on first use (a static cannot
    /// hold an address as an integer).
    #[inline]
    fn start(&self) {
        if self.end.get() == 0 {
            let base = (&raw const __heap_base).expose_provenance();
            self.next.set(base);
            self.end
                .set(wasm32::memory_size(0).saturating_mul(PAGE_BYTES));
        }
    }

    /// Bumps `layout` out of `[next, end)`, or returns `None` if it does not fit.
    #[inline]
    fn bump(&self, layout: Layout) -> Option<usize> {
        // Rounds up to the alignment, a power of two.
        let mask = layout.align() - 1;
        let start = self.next.get().checked_add(mask)? & !mask;
        let new_next = start.checked_add(layout.size())?;
        if new_next > self.end.get() {
            return None;
        }
        self.next.set(new_next);
        self.last.set(start);
        Some(start)
    }

    /// Grows memory by at least enough pages for `layout`. Pages that continue the current
    /// region extend it; otherwise the region moves to the new pages (the rest of the old one
    /// is abandoned). Returns `false` when memory cannot grow.
    #[cold]
    fn grow(&self, layout: Layout) -> bool {
        let Some(needed) = layout.size().checked_add(layout.align()) else {
            return false;
        };
        let pages = needed.div_ceil(PAGE_BYTES).max(MIN_GROW_PAGES);
        let previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return false;
        }
        let (Some(start), Some(len)) = (
            previous.checked_mul(PAGE_BYTES),
            pages.checked_mul(PAGE_BYTES),
        ) else {
            return false;
        };
        if start != self.end.get() {
            // A new region: the most recent allocation is in the old one, so it can no longer
            // be resized in place or given back.
            self.next.set(start);
            self.last.set(0);
        }
        self.end.set(start.saturating_add(len));
        true
    }

    /// A fresh block for `layout`, or null when memory is exhausted.
    #[inline]
    fn allocate(&self, layout: Layout) -> *mut u8 {
        self.start();
        let address = match self.bump(layout) {
            Some(a) => a,
            None if self.grow(layout) => match self.bump(layout) {
                Some(a) => a,
                None => return ptr::null_mut(),
            },
            None => return ptr::null_mut(),
        };
        ptr::with_exposed_provenance_mut(address)
    }
}

// SAFETY: `alloc` returns either null or a block of `layout.size()` bytes aligned to
// `layout.align()` that no other live allocation overlaps: the cursor only moves forward past
// a handed-out block, and moves back (in `dealloc`/`realloc`) only over the most recent block,
// the one being freed or resized. All addresses are between `__heap_base` and the end of the
// initial memory (which nothing else uses: the stack and the static data lie below
// `__heap_base`), or inside pages this allocator obtained from `memory.grow`.
unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // Only the most recent allocation can be given back; everything else is reclaimed
        // when the instance is dropped.
        let address = ptr.expose_provenance();
        if address == self.last.get() {
            self.next.set(address);
            self.last.set(0);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let address = ptr.expose_provenance();
        if address == self.last.get()
            && let Some(new_end) = address.checked_add(new_size)
            && new_end <= self.end.get()
        {
            // The most recent allocation: resize it in place.
            self.next.set(new_end);
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let new_ptr = self.allocate(new_layout);
        if !new_ptr.is_null() {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes (the caller's contract) and
            // `new_ptr` a fresh block of `new_size` bytes; fresh blocks never overlap live ones.
            unsafe { ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size)) };
        }
        new_ptr
    }
}

/// The canonical ABI's `realloc`: the host calls it to place each argument (strings, lists,
/// the argument record) in linear memory before a call. It replaces wit-bindgen's weak default,
/// which reaches the same allocator through four nested calls; with ~20 arguments per
/// evaluation, that detour was a tenth of the guest's work.
///
/// `old_len == 0` asks for a fresh block (`new_len == 0`: any non-null, aligned pointer);
/// otherwise the block at `old_ptr` is resized. Traps when memory is exhausted, like
/// wit-bindgen's.
///
/// # Safety
///
/// Called by the component's host only, per the canonical ABI: `align` is a power of two, and
/// a non-zero `old_len` comes with a block this function returned, of that size and alignment.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    let block = if old_len == 0 {
        if new_len == 0 {
            return ptr::without_provenance_mut(align);
        }
        Layout::from_size_align(new_len, align)
            .map_or(ptr::null_mut(), |layout| ALLOCATOR.allocate(layout))
    } else {
        match Layout::from_size_align(old_len, align) {
            // SAFETY: per the canonical ABI, `old_ptr` is a live block of this layout.
            Ok(layout) => unsafe { ALLOCATOR.realloc(old_ptr, layout, new_len) },
            Err(_) => ptr::null_mut(),
        }
    };
    if block.is_null() {
        wasm32::unreachable();
    }
    block
}
