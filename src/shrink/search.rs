//! The size bracket: bisection on the file size with the proxy as the test.
//!
//! `hi` is the smallest size known to pass the proxy, `lo` the largest known (or assumed) to fail;
//! each step measures the middle and moves one end to it, so the bracket only narrows. The search
//! stops when the bracket is narrower than `resolution` or the steps are spent. Pure: the caller
//! measures, so a resumed search that replays the same measurements makes the same decisions.

use serde::{Deserialize, Serialize};

/// Sizes are rounded to this (64 KiB): candidates a few bytes apart are the same file.
pub const GRANULE: u64 = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bracket {
    /// Fails the proxy (measured, or the assumed floor).
    pub lo: u64,
    /// Passes the proxy (measured).
    pub hi: u64,
}

impl Bracket {
    /// The next size to measure, or None when the bracket is narrow enough.
    pub fn next(&self, resolution: u64) -> Option<u64> {
        if self.hi <= self.lo || self.hi - self.lo <= resolution.max(GRANULE) {
            return None;
        }
        let mid = (self.lo + (self.hi - self.lo) / 2) / GRANULE * GRANULE;
        (mid > self.lo && mid < self.hi).then_some(mid)
    }

    /// The bracket after measuring `size` (inside it): the end on its side moves to it.
    pub fn narrowed(&self, size: u64, passes: bool) -> Bracket {
        debug_assert!(size > self.lo && size < self.hi);
        if passes {
            Bracket { lo: self.lo, hi: size }
        } else {
            Bracket { lo: size, hi: self.hi }
        }
    }
}

/// Sizes the search starts from: the reference's size rounded down to the granule (the top,
/// which must pass), and `floor` of it (the bottom, assumed to fail).
pub fn start(reference_bytes: u64, floor: f64) -> Bracket {
    let hi = reference_bytes / GRANULE * GRANULE;
    let lo = ((hi as f64 * floor) as u64) / GRANULE * GRANULE;
    Bracket { lo, hi }
}

/// Upward steps when the top fails the proxy: each 15% larger, at most up to `ceiling`.
pub fn widened(hi: u64, ceiling: u64) -> Option<u64> {
    let next = ((hi as f64 * 1.15) as u64).next_multiple_of(GRANULE);
    (hi < ceiling).then_some(next.min(ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a known threshold: every step narrows, the pick passes and sits within the
    /// resolution of the threshold.
    #[test]
    fn bisection_narrows_to_the_threshold() {
        let threshold = 80_123_456u64;
        let mut b = start(98_362_432, 0.6);
        let resolution = 500_000;
        let mut steps = 0;
        while let Some(s) = b.next(resolution) {
            let nb = b.narrowed(s, s >= threshold);
            assert!(nb.lo >= b.lo && nb.hi <= b.hi && nb.hi - nb.lo < b.hi - b.lo, "{b:?} -> {nb:?}");
            b = nb;
            steps += 1;
        }
        assert!(b.hi >= threshold && b.hi - threshold <= resolution.max(GRANULE), "{b:?}");
        assert!(b.lo < threshold);
        assert!(steps <= 7, "{steps} steps");
    }

    #[test]
    fn sizes_are_whole_granules_and_widening_stops_at_the_ceiling() {
        let b = start(98_362_432, 0.6);
        assert_eq!(b.hi % GRANULE, 0);
        assert_eq!(b.lo % GRANULE, 0);
        assert!(b.next(0).unwrap().is_multiple_of(GRANULE));
        assert_eq!(widened(100 * GRANULE, 110 * GRANULE), Some(110 * GRANULE));
        assert_eq!(widened(110 * GRANULE, 110 * GRANULE), None);
    }
}
