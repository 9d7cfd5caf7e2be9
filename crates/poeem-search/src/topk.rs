//! The `k` best candidates of a scan: a bounded binary max-heap on `(key, id)`.
//!
//! Keys are "smaller is better" (an L2 distance, or a negated similarity); ties go to the
//! smaller id, so the kept set and its order do not depend on the order candidates arrive in.
//! Keys are compared with [`f32::total_cmp`], so no input can make the heap panic; the scan
//! kernels never offer NaN keys (their `key <= threshold` test is false for NaN).

use std::cmp::Ordering;

/// The `k` smallest `(key, id)` pairs offered so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct TopK {
    k: usize,
    /// A max-heap: `heap[0]` is the worst pair kept.
    heap: Vec<(f32, u64)>,
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
        self.heap.clear();
        self.heap.reserve(k);
    }

    /// Number of pairs kept.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// The key a candidate must not exceed to have a chance to enter: the worst kept key once
    /// `k` pairs are kept, `+∞` before. A candidate whose key equals the threshold enters only
    /// if its id is smaller than the worst kept pair's.
    #[inline(always)]
    pub(crate) fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::INFINITY
        } else {
            self.heap[0].0
        }
    }

    /// Offers a candidate.
    #[inline]
    pub(crate) fn push(&mut self, key: f32, id: u64) {
        let item = (key, id);
        if self.heap.len() < self.k {
            self.heap.push(item);
            self.sift_up(self.heap.len() - 1);
        } else if self.k > 0 && cmp(&item, &self.heap[0]) == Ordering::Less {
            self.heap[0] = item;
            self.sift_down(0);
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if cmp(&self.heap[i], &self.heap[parent]) != Ordering::Greater {
                break;
            }
            self.heap.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (left, right) = (2 * i + 1, 2 * i + 2);
            let mut largest = i;
            if left < n && cmp(&self.heap[left], &self.heap[largest]) == Ordering::Greater {
                largest = left;
            }
            if right < n && cmp(&self.heap[right], &self.heap[largest]) == Ordering::Greater {
                largest = right;
            }
            if largest == i {
                break;
            }
            self.heap.swap(i, largest);
            i = largest;
        }
    }

    /// The kept pairs, best first. Leaves the selection unusable until the next
    /// [`TopK::reset`].
    pub(crate) fn sorted(&mut self) -> &[(f32, u64)] {
        self.heap.sort_unstable_by(cmp);
        &self.heap
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
        assert_eq!(top.threshold(), 3.0);
        assert_eq!(top.sorted(), &[(1.0, 2), (1.0, 9), (3.0, 3)]);
    }

    #[test]
    fn infinite_keys_are_kept_and_order_is_total() {
        let mut top = TopK::default();
        top.reset(2);
        top.push(f32::INFINITY, 5);
        top.push(f32::NEG_INFINITY, 6);
        top.push(f32::INFINITY, 1);
        assert_eq!(top.len(), 2);
        assert_eq!(top.sorted(), &[(f32::NEG_INFINITY, 6), (f32::INFINITY, 1)]);
    }
}
