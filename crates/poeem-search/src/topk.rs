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
//! the price is a threshold that lags the exact k-th best between selections. A pair is held
//! as one `u128` (the key's bits mapped to an unsigned integer in [`f32::total_cmp`] order,
//! then the id), so the selections compare integers.

/// Room beyond `k` in the buffer for small `k`.
const SLACK: usize = 32;

/// The `k` smallest `(key, id)` pairs offered so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopK {
    k: usize,
    /// Candidates ([`pack`]ed), unordered; at most `2k + SLACK`.
    buf: Vec<u128>,
    /// The kept pairs, best first, once [`TopK::sorted`] has run.
    out: Vec<(f32, u64)>,
    /// No kept pair has a larger key: `+∞` until the first selection.
    threshold: f32,
    /// Ids never kept, sorted (a query's excluded items; usually empty).
    excluded: Vec<u64>,
}

/// A candidate as an integer whose order is the candidates' total order: by key
/// ([`f32::total_cmp`]: negative keys' bits inverted, the others' sign bit set), then by id.
#[inline(always)]
fn pack(key: f32, id: u64) -> u128 {
    let bits = key.to_bits();
    let ordered = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    u128::from(ordered) << 64 | u128::from(id)
}

/// The `(key, id)` of a [`pack`]ed candidate.
#[inline(always)]
fn unpack(packed: u128) -> (f32, u64) {
    let ordered = (packed >> 64) as u32;
    let bits = if ordered >> 31 == 1 {
        ordered & !(1 << 31)
    } else {
        !ordered
    };
    (f32::from_bits(bits), packed as u64)
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
        self.buf.push(pack(key, id));
        if self.buf.len() >= self.capacity() {
            self.select();
        }
    }

    /// Keeps the best `k` candidates and lowers the threshold to the worst of them.
    fn select(&mut self) {
        let k = self.k;
        if self.buf.len() > k {
            self.buf.select_nth_unstable(k - 1);
            self.buf.truncate(k);
            self.threshold = unpack(self.buf[k - 1]).0;
        }
    }

    /// The kept pairs (at most `k`), best first. Leaves the selection unusable until the next
    /// [`TopK::reset`].
    pub(crate) fn sorted(&mut self) -> &[(f32, u64)] {
        self.finish(true);
        &self.out
    }

    /// Ends the selection: the best `k` become [`TopK::kept`], best first when `sort` (else in
    /// no particular order, which saves the sort when the caller re-scores them anyway).
    /// Leaves the selection unusable until the next [`TopK::reset`].
    pub(crate) fn finish(&mut self, sort: bool) {
        self.select();
        if sort {
            self.buf.sort_unstable();
        }
        self.out.clear();
        self.out.extend(self.buf.iter().map(|&p| unpack(p)));
    }

    /// The pairs kept by the last [`TopK::finish`].
    pub(crate) fn kept(&self) -> &[(f32, u64)] {
        &self.out
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

    #[test]
    fn packed_order_is_total_cmp_then_id_and_unpacks_exactly() {
        let keys = [
            f32::NEG_INFINITY,
            -f32::MAX,
            -1.5,
            -f32::MIN_POSITIVE,
            -1e-45,
            -0.0,
            0.0,
            1e-45,
            f32::MIN_POSITIVE,
            1.0,
            1.5,
            f32::MAX,
            f32::INFINITY,
        ];
        let pairs: Vec<(f32, u64)> = keys
            .iter()
            .flat_map(|&k| [(k, 0), (k, 7), (k, u64::MAX)])
            .collect();
        for a in &pairs {
            assert_eq!(unpack(pack(a.0, a.1)).0.to_bits(), a.0.to_bits());
            assert_eq!(unpack(pack(a.0, a.1)).1, a.1);
            for b in &pairs {
                let expected = a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                assert_eq!(pack(a.0, a.1).cmp(&pack(b.0, b.1)), expected, "{a:?} {b:?}");
            }
        }
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
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            all.truncate(k);
            assert_eq!(top.sorted(), &all[..]);
        }
    }
}
