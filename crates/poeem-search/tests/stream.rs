//! The streaming writer: byte-identical to `encode_index` for the same index (rotation or not,
//! 1- and 2-byte codes, empty lists, an empty index, `f32` / `f16` refinement data), and errors
//! that leave no file behind.

use poeem_search::refine::encode_float_refine;
use poeem_search::{
    BLOCK, Index, IndexHead, IndexParams, IndexParts, ListBuffer, Metric, PADDING_ID, RefineKind,
    SearchError, encode_index, write_index_streaming,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

fn random_parts(
    seed: u64,
    dim: usize,
    n_subspaces: usize,
    n_lists: usize,
    n_bits: u32,
    n_items: usize,
    rotation: bool,
) -> IndexParts {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let padded_dim = dim.div_ceil(n_subspaces) * n_subspaces;
    let params = IndexParams {
        dim,
        padded_dim,
        n_lists,
        n_subspaces,
        n_bits,
        metric: Metric::L2,
        n_items,
        code_layout: Default::default(),
    };
    let mut f = |n: usize| (0..n).map(|_| rng.random::<f32>()).collect::<Vec<_>>();
    let rotation = rotation.then(|| f(padded_dim * padded_dim));
    let centroids = f(n_lists * padded_dim);
    let codebooks = f((1 << n_bits) * padded_dim);
    // List 1 stays empty: items go to lists other than 1.
    let lists: Vec<u32> = (0..n_items)
        .map(|_| {
            let l = rng.random_range(0..n_lists as u32);
            if l == 1 { 0 } else { l }
        })
        .collect();
    let codes: Vec<u16> = (0..n_items * n_subspaces)
        .map(|_| rng.random_range(0..(1u32 << n_bits)) as u16)
        .collect();
    let ids: Vec<u64> = (0..n_items).map(|_| rng.random::<u64>() >> 1).collect();
    IndexParts::from_item_codes(
        params,
        rotation,
        centroids,
        codebooks,
        &lists,
        &codes,
        &ids,
        serde_json::from_value(json!({"test": seed})).unwrap(),
    )
    .unwrap()
}

/// `parts` with `kind` refinement data: random vectors (zeros in padding slots).
fn with_refine(mut parts: IndexParts, kind: RefineKind, seed: u64) -> IndexParts {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dim = parts.params.dim;
    let mut rows = Vec::with_capacity(parts.ids.len() * dim);
    for &id in &parts.ids {
        rows.extend((0..dim).map(|_| match id {
            PADDING_ID => 0.0,
            _ => rng.random::<f32>() - 0.5,
        }));
    }
    parts.refine = Some(encode_float_refine(kind, dim, &rows));
    parts
}

fn head_of(parts: &IndexParts) -> IndexHead {
    IndexHead {
        params: parts.params,
        rotation: parts.rotation.clone(),
        coarse_centroids: parts.coarse_centroids.clone(),
        codebooks: parts.codebooks.clone(),
        list_sizes: parts.list_sizes.clone(),
        metadata: parts.metadata.clone(),
        refine: parts.view().unwrap().refine().map(|r| r.kind()),
    }
}

/// Fills list `j` from an in-memory index, un-transposing its codes.
fn fill_from(parts: &IndexParts, j: usize, buf: &mut ListBuffer) {
    let view = parts.view().unwrap();
    let list = view.list(j);
    buf.ids.extend_from_slice(list.ids);
    for pos in 0..list.len() {
        for m in 0..parts.params.n_subspaces {
            buf.codes.push(view.code(j, pos, m));
        }
    }
    if let Some(refine) = view.refine() {
        let first = view.list_offsets()[j] as usize;
        let mut row = vec![0.0; parts.params.dim];
        for slot in first..first + list.len() {
            refine.decode(slot, &mut row);
            buf.refine.extend_from_slice(&row);
        }
    }
}

#[test]
fn streaming_writer_matches_encode_index() {
    let cases = [
        (1, 10, 4, 5, 4, 100, true),
        (2, 8, 8, 3, 8, 70, false),
        (3, 7, 2, 4, 12, 65, true),
        (4, 5, 5, 2, 16, 33, false),
        (5, 6, 3, 3, 1, 0, false),
        (6, 16, 4, 6, 6, 2 * BLOCK + 1, true),
    ];
    let dir = tempfile::tempdir().unwrap();
    let refines = [None, Some(RefineKind::F32), Some(RefineKind::F16)];
    for ((seed, dim, m, lists, bits, n, rot), refine) in
        cases.into_iter().zip(refines.iter().cycle())
    {
        let mut parts = random_parts(seed, dim, m, lists, bits, n, rot);
        if let Some(kind) = *refine {
            parts = with_refine(parts, kind, seed);
        }
        let path = dir.path().join(format!("s{seed}.poeem"));
        write_index_streaming::<SearchError>(&path, &head_of(&parts), |j, buf| {
            fill_from(&parts, j, buf);
            Ok(())
        })
        .unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written, encode_index(&parts).unwrap(), "case {seed}");
        let index = Index::open(&path).unwrap();
        index.verify().unwrap();
        assert_eq!(index.to_parts(), parts);
    }
}

#[derive(Debug)]
enum TestError {
    Search(SearchError),
    Source,
}

impl From<SearchError> for TestError {
    fn from(e: SearchError) -> Self {
        TestError::Search(e)
    }
}

#[test]
fn streaming_writer_errors_leave_no_file() {
    let parts = random_parts(9, 8, 4, 4, 8, 90, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.poeem");
    // The source fails on list 2: its own error comes back.
    let result = write_index_streaming(&path, &head_of(&parts), |j, buf| {
        if j == 2 {
            return Err(TestError::Source);
        }
        fill_from(&parts, j, buf);
        Ok(())
    });
    assert!(matches!(result, Err(TestError::Source)));
    // A list one item short.
    let result = write_index_streaming::<TestError>(&path, &head_of(&parts), |j, buf| {
        fill_from(&parts, j, buf);
        if j == 0 && !buf.ids.is_empty() {
            buf.ids.pop();
        }
        Ok(())
    });
    assert!(matches!(
        result,
        Err(TestError::Search(SearchError::DimensionMismatch { .. }))
    ));
    // A code out of range.
    let result = write_index_streaming::<TestError>(&path, &head_of(&parts), |j, buf| {
        fill_from(&parts, j, buf);
        if let Some(c) = buf.codes.first_mut() {
            *c = 256;
        }
        Ok(())
    });
    assert!(matches!(
        result,
        Err(TestError::Search(SearchError::CodeOutOfRange {
            code: 256,
            ..
        }))
    ));
    // A head whose sizes do not add up to n_items.
    let mut head = head_of(&parts);
    head.params.n_items += 1;
    let result = write_index_streaming::<TestError>(&path, &head, |_, _| Ok(()));
    assert!(matches!(
        result,
        Err(TestError::Search(SearchError::DimensionMismatch { .. }))
    ));
    // Refinement data: a list one value short, and pq8 data, which are not streamed.
    let refined = with_refine(parts.clone(), RefineKind::F32, 3);
    let result = write_index_streaming::<TestError>(&path, &head_of(&refined), |j, buf| {
        fill_from(&refined, j, buf);
        if j == 0 {
            buf.refine.pop();
        }
        Ok(())
    });
    assert!(matches!(
        result,
        Err(TestError::Search(SearchError::DimensionMismatch {
            what: "refinement values of a list",
            ..
        }))
    ));
    let mut head = head_of(&refined);
    head.refine = Some(RefineKind::Pq8);
    let result = write_index_streaming::<TestError>(&path, &head, |_, _| Ok(()));
    assert!(matches!(
        result,
        Err(TestError::Search(SearchError::InvalidParameter {
            name: "refine",
            ..
        }))
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
