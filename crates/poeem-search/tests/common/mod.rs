//! Helpers shared by the search test files.

use faer::Par;
use poeem_search::{SearchIndex, SearchParams};

/// Checks `index.search_batch_excluding` against `every`, one row per query of a search that
/// returned every item (best first, −1 for none): row `r` must be its first `params.k` ids not
/// in `excluded[r]`, padded with −1, on one task and on three.
pub fn assert_excluding_matches(
    index: &SearchIndex<'_>,
    queries: &[f32],
    excluded: &[Vec<u64>],
    params: &SearchParams,
    every: &[i64],
    label: &str,
) {
    let (n, k) = (excluded.len(), params.k);
    let n_all = every.len() / n;
    let slices: Vec<&[u64]> = excluded.iter().map(Vec::as_slice).collect();
    for par in [Par::Seq, Par::rayon(3)] {
        let mut got = (vec![0i64; n * k], vec![0.0f32; n * k]);
        index
            .search_batch_excluding(queries, &slices, params, &mut got.0, &mut got.1, par)
            .unwrap();
        for (row, ((got, all), excluded)) in got
            .0
            .chunks(k)
            .zip(every.chunks(n_all))
            .zip(excluded)
            .enumerate()
        {
            let mut want: Vec<i64> = all
                .iter()
                .copied()
                .filter(|&id| id >= 0 && !excluded.contains(&(id as u64)))
                .take(k)
                .collect();
            want.resize(k, -1);
            assert_eq!(got, &want[..], "{label}, row {row}");
        }
    }
}
