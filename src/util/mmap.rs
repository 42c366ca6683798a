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
    let (start, end) = page_span(map, offset, len);
    if end > start {
        // SAFETY: read-only private file mapping; no Rust reference into these pages outlives this
        // call in a way that could observe a change (the contents are re-read identically).
        unsafe {
            let _ = map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start);
        }
    }
}

/// `madvise(MADV_WILLNEED)` over `[offset, offset+len)`: the kernel starts reading those pages in
/// the background, so a tensor's bytes arrive while earlier ones are being quantized.
///
/// Linux reads at most one readahead window per call (`force_page_cache_ra` caps the request at
/// the device's `read_ahead_kb`, 128 KiB by default), so one call over a 90 MB tensor would fetch
/// only its first window: the range is advised a window at a time.
pub fn prefetch_pages(map: &Mmap, offset: usize, len: usize) {
    const WINDOW: usize = 128 << 10;
    let (start, end) = page_span(map, offset, len);
    for at in (start..end).step_by(WINDOW) {
        let _ = map.advise_range(Advice::WillNeed, at, WINDOW.min(end - at));
    }
}

/// The whole pages of `map` that `[offset, offset+len)` touches, as `(start, end)` offsets.
fn page_span(map: &Mmap, offset: usize, len: usize) -> (usize, usize) {
    const PAGE: usize = 4096;
    (offset / PAGE * PAGE, (offset + len).next_multiple_of(PAGE).min(map.len()))
}
