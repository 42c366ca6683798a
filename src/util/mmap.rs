//! Memory maps that give their pages back: streaming through a file larger than RAM keeps only
//! what is being converted resident (mapped file pages count toward a process's RSS).

use memmap2::{Advice, Mmap, UncheckedAdvice};

/// [`release_pages`] for a slice that lies inside `map` (anything else is ignored).
pub fn release_slice(map: &Mmap, part: &[u8]) {
    let base = map.as_ptr() as usize;
    let start = part.as_ptr() as usize;
    if start >= base && start + part.len() <= base + map.len() {
        release_pages(map, start - base, part.len());
    }
}

/// `madvise(MADV_DONTNEED)` over the pages of `[offset, offset+len)`.
///
/// The map is read-only and file-backed, so dropped pages are simply re-read from the file if
/// touched again; this only trims the resident set.
pub fn release_pages(map: &Mmap, offset: usize, len: usize) {
    const PAGE: usize = 4096;
    let start = offset / PAGE * PAGE;
    let end = (offset + len).next_multiple_of(PAGE).min(map.len());
    if end > start {
        // SAFETY: read-only private file mapping; no Rust reference into these pages outlives this
        // call in a way that could observe a change (the contents are re-read identically).
        unsafe {
            let _ = map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start);
        }
    }
}

/// `madvise(MADV_WILLNEED)` over `[offset, offset+len)`: the kernel starts reading those pages in
/// the background, so the next tensor's bytes arrive while the current one is being quantized.
pub fn prefetch_pages(map: &Mmap, offset: usize, len: usize) {
    const PAGE: usize = 4096;
    let start = offset / PAGE * PAGE;
    let end = (offset + len).next_multiple_of(PAGE).min(map.len());
    if end > start {
        let _ = map.advise_range(Advice::WillNeed, start, end - start);
    }
}
