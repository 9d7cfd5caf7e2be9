//! The `k` best candidates of a scan.
//!
//! Keys are "smaller is better" (an L2 distance, or a negated similarity); ties go to the
//! smaller id, so the kept set and its order do not depend on the order candidates arrive in.
//! Keys are compared with [`f32::total_cmp`], so no input can make the selection panic, and NaN
//! keys are ignored (the scan kernels' `key <= threshold` test already drops them).
//!
//! Candidates go to a buffer of `2k + 32` pairs; when it fills, a selection keeps the best `k`
//! and the threshold becomes the worst of them. Each offer is an append (a binary heap's sift,
//! with its unpredictable branches, took about a sixth of a query's time in profiles at k = 10);
//! the price is a threshold that lags the exact k-th best between selections.

use std::cmp::Ordering;

/// Room beyond `k` in the buffer for small `k`.
const SLACK: usize = 32;

/// The `k` smallest `(key, id)` pairs offered so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopK {
    k: usize,
    /// Candidates, unordered; at most `2k + SLACK`.
    buf: Vec<(f32, u64)>,
    /// No kept pair has a larger key: `+∞` until the first selection.
    threshold: f32,
    /// Ids never kept, sorted (a query's excluded items; usually empty).
    excluded: Vec<u64>,
}

/// Total order on candidates: by key, then by id.
#[inline(always)]
fn cmp(a: &(f32, u64), b: &(f32, u64)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

impl TopK {
    /// An empty selection of `k` pairs; allocates only when `k` exceeds every earlier capacity.
    pub(crate) fn reset(&mut self, k: usize) {
        self.k = k;
        self.threshold = f32::INFINITY;
        self.buf.clear();
        self.buf.reserve(self.capacity());
        self.excluded.clear();
    }

    /// Never keeps the ids in `excluded` (any order, repeats allowed) until the next
    /// [`TopK::reset`]. A filter of the selection, not of the scan: excluded candidates cost a
    /// binary search only when they beat the threshold, and the `k` kept are the best others.
    pub(crate) fn exclude(&mut self, excluded: &[u64]) {
        self.excluded.clear();
        self.excluded.extend_from_slice(excluded);
        self.excluded.sort_unstable();
    }

    fn capacity(&self) -> usize {
        2 * self.k + SLACK
    }

    /// The key a candidate must not exceed to be kept for now (it may still lose a later
    /// selection; equal keys are decided by id there).
    #[inline(always)]
    pub(crate) fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Offers a candidate; NaN keys are ignored.
    #[inline]
    pub(crate) fn push(&mut self, key: f32, id: u64) {
        if key.is_nan() || key > self.threshold || self.k == 0 {
            return;
        }
        if !self.excluded.is_empty() && self.excluded.binary_search(&id).is_ok() {
            return;
        }
        self.buf.push((key, id));
        if self.buf.len() >= self.capacity() {
            self.select();
        }
    }

    /// Keeps the best `k` candidates and lowers the threshold to the worst of them.
    fn select(&mut self) {
        let k = self.k;
        if self.buf.len() > k {
            self.buf.select_nth_unstable_by(k - 1, cmp);
            self.buf.truncate(k);
            self.threshold = self.buf[k - 1].0;
        }
    }

    /// The kept pairs (at most `k`), best first. Leaves the selection unusable until the next
    /// [`TopK::reset`].
    pub(crate) fn sorted(&mut self) -> &[(f32, u64)] {
        self.select();
        self.buf.sort_unstable_by(cmp);
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_smallest_with_ties_to_smaller_ids() {
        let mut top = TopK::default();
        top.reset(3);
        assert_eq!(top.threshold(), f32::INFINITY);
        for (key, id) in [(5.0, 1), (1.0, 9), (3.0, 4), (1.0, 2), (3.0, 3), (7.0, 0)] {
            top.push(key, id);
        }
        assert_eq!(top.sorted(), &[(1.0, 2), (1.0, 9), (3.0, 3)]);
    }

    #[test]
    fn infinite_keys_are_kept_and_order_is_total() {
        let mut top = TopK::default();
        top.reset(2);
        top.push(f32::INFINITY, 5);
        top.push(f32::NEG_INFINITY, 6);
        top.push(f32::INFINITY, 1);
        top.push(f32::NAN, 0);
        top.push(-f32::NAN, 0);
        assert_eq!(top.sorted(), &[(f32::NEG_INFINITY, 6), (f32::INFINITY, 1)]);
    }

    #[test]
    fn excluded_ids_are_never_kept() {
        let mut top = TopK::default();
        top.reset(2);
        top.exclude(&[9, 2, 9]);
        for (key, id) in [(1.0, 9), (2.0, 2), (3.0, 4), (4.0, 5), (5.0, 6)] {
            top.push(key, id);
        }
        assert_eq!(top.sorted(), &[(3.0, 4), (4.0, 5)]);
        top.reset(1);
        top.push(1.0, 9);
        assert_eq!(top.sorted(), &[(1.0, 9)]);
    }

    /// Many offers, with the threshold honoured as the scan honours it, keep what a full sort
    /// keeps.
    #[test]
    fn equals_a_full_sort() {
        for k in [1, 3, 10, 100] {
            let mut top = TopK::default();
            top.reset(k);
            let mut all = Vec::new();
            let mut x = 12345u64;
            for id in 0..2000u64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = (x >> 40) as f32 / 1000.0;
                all.push((key, id ^ 0x55));
                if key <= top.threshold() {
                    top.push(key, id ^ 0x55);
                }
            }
            all.sort_by(cmp);
            all.truncate(k);
            assert_eq!(top.sorted(), &all[..]);
        }
    }
}
