//! The index file format: round trips, the committed golden file, every truncation and
//! single-byte change of small files, specific corruptions with their error variants, and
//! atomic writes.
//!
//! Every random choice is seeded (data from `ChaCha8Rng` or a fixed splitmix64 stream, proptest
//! with a fixed seed and no failure persistence). The helpers under "the spec" re-implement the
//! layout of `docs/index-format.md` independently of the crate, to craft files and to check
//! that the writer follows the document.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use poeem_search::format::{
    FLAG_OPTIONAL, HEADER_LEN, MAGIC, SECTION_ALIGN, SECTION_ENTRY_LEN, SectionKind, version_for,
};
use poeem_search::refine::{encode_float_refine, encode_pq8_refine};
use poeem_search::{
    BLOCK, CodeLayout, Index, IndexMetadata, IndexParams, IndexParts, ItemKeys, Metric, PADDING_ID,
    RefineKind, SearchError, encode_index, padded_len, write_index,
};
use proptest::prelude::{ProptestConfig, any, prop_assert, prop_assert_eq, proptest};
use proptest::test_runner::RngSeed;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// A proptest configuration with `cases` cases, a fixed seed and no failure persistence.
fn prop_config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Metadata from a JSON object.
fn meta(value: serde_json::Value) -> IndexMetadata {
    serde_json::from_value(value).expect("a JSON object whose known keys have their types")
}

fn params(
    dim: usize,
    n_subspaces: usize,
    n_lists: usize,
    n_bits: u32,
    metric: Metric,
) -> IndexParams {
    IndexParams {
        dim,
        padded_dim: dim.div_ceil(n_subspaces) * n_subspaces,
        n_lists,
        n_subspaces,
        n_bits,
        metric,
        n_items: 0,
        code_layout: Default::default(),
    }
}

/// A random index: `n_items` items with random lists, codes and ids.
fn random_parts(
    p: IndexParams,
    rotation: bool,
    n_items: usize,
    seed: u64,
) -> (IndexParts, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut floats =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let rotation = rotation.then(|| floats(p.padded_dim * p.padded_dim));
    let centroids = floats(p.n_lists * p.padded_dim);
    let codebooks = floats(p.n_codewords() * p.padded_dim);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9);
    let lists: Vec<u32> = (0..n_items)
        .map(|_| rng.random_range(0..p.n_lists as u32))
        .collect();
    let codes: Vec<u32> = (0..n_items * p.n_subspaces)
        .map(|_| rng.random_range(0..p.n_codewords() as u32))
        .collect();
    let ids: Vec<u64> = (0..n_items)
        .map(|_| rng.random_range(0..u64::MAX))
        .collect();
    let metadata = meta(json!({ "seed": seed, "builder": "tests/format.rs" }));
    let parts = IndexParts::from_item_codes(
        p, rotation, centroids, codebooks, &lists, &codes, &ids, metadata,
    )
    .expect("consistent random parts");
    (parts, codes)
}

/// Reads everything a search could read through the view, so that a bad view panics here.
fn exercise(index: &Index) {
    let info = index.info();
    assert_eq!(info.params, *index.params());
    let _ = format!("{index:?}");
    let view = index.view();
    let p = *view.params();
    let mut out = vec![0.0f32; p.dim];
    let mut rotated = vec![0.0f32; p.padded_dim];
    for list in 0..p.n_lists {
        let l = view.list(list);
        assert_eq!(l.codes.len(), padded_len(l.len()) * p.slot_bytes());
        for pos in [0, l.len() / 2, l.len().saturating_sub(1)] {
            if pos < l.len() {
                for m in 0..p.n_subspaces {
                    let _ = view.code(list, pos, m);
                }
                view.reconstruct(list, pos, &mut out);
                view.reconstruct_rotated(list, pos, &mut rotated);
            }
        }
    }
    if let Some(refine) = view.refine() {
        let width = if refine.kind() == RefineKind::Pq8 {
            p.padded_dim
        } else {
            p.dim
        };
        let mut refined = vec![0.0f32; width];
        for slot in 0..view.slot_ids().len() {
            refine.decode(slot, &mut refined);
            let (list, pos) = view.locate_slot(slot);
            assert!(pos < padded_len(view.list(list).len()));
        }
    }
    let _ = index.to_parts();
}

/// Random refinement data of `kind` for `parts` (values in slot order, padding zero).
fn random_refine(parts: &IndexParts, kind: RefineKind, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = &parts.params;
    let slots = parts.ids.len();
    match kind {
        RefineKind::F32 | RefineKind::F16 => {
            let values: Vec<f32> = (0..slots * p.dim)
                .map(|i| {
                    if parts.ids[i / p.dim] == PADDING_ID {
                        0.0
                    } else {
                        rng.random_range(-1.0..1.0)
                    }
                })
                .collect();
            encode_float_refine(kind, p.dim, &values)
        }
        RefineKind::Pq8 => {
            let n_sub = p.n_subspaces;
            let books: Vec<f32> = (0..256 * p.padded_dim)
                .map(|_| rng.random_range(-0.1..0.1))
                .collect();
            let codes: Vec<u8> = (0..slots * n_sub).map(|_| rng.random()).collect();
            encode_pq8_refine(p.padded_dim, n_sub, &books, &codes)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The spec, re-implemented for crafting files.

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn table_end(file: &[u8]) -> usize {
    HEADER_LEN + u32_at(file, 12) as usize * SECTION_ENTRY_LEN
}

/// Recomputes the header CRC after a change to the header or the table.
fn fix_header_crc(file: &mut [u8]) {
    let end = table_end(file);
    let crc = crc32fast::hash(&file[..end]);
    put_u32(file, end, crc);
}

/// Where section-table entry `i` starts.
fn entry_at(i: usize) -> usize {
    HEADER_LEN + i * SECTION_ENTRY_LEN
}

/// The table position of the section of kind `kind`.
fn entry_of(file: &[u8], kind: SectionKind) -> usize {
    let count = u32_at(file, 12) as usize;
    (0..count)
        .find(|&i| u32_at(file, entry_at(i)) == kind.code())
        .expect("section present")
}

/// The byte range of the section of kind `kind`.
fn section_range(file: &[u8], kind: SectionKind) -> Range<usize> {
    let at = entry_at(entry_of(file, kind));
    let offset = u64_at(file, at + 8) as usize;
    offset..offset + u64_at(file, at + 16) as usize
}

struct RawSection {
    kind: u32,
    flags: u32,
    bytes: Vec<u8>,
}

struct RawFile {
    header: Vec<u8>,
    sections: Vec<RawSection>,
}

impl RawFile {
    fn split(file: &[u8]) -> Self {
        let count = u32_at(file, 12) as usize;
        let sections = (0..count)
            .map(|i| {
                let at = entry_at(i);
                let offset = u64_at(file, at + 8) as usize;
                let len = u64_at(file, at + 16) as usize;
                RawSection {
                    kind: u32_at(file, at),
                    flags: u32_at(file, at + 4),
                    bytes: file[offset..offset + len].to_vec(),
                }
            })
            .collect();
        Self {
            header: file[..HEADER_LEN].to_vec(),
            sections,
        }
    }

    fn section(&mut self, kind: SectionKind) -> &mut Vec<u8> {
        &mut self
            .sections
            .iter_mut()
            .find(|s| s.kind == kind.code())
            .expect("section present")
            .bytes
    }

    /// Lays the sections out as the document says: packed in table order, each at the next
    /// 64-byte boundary, with CRCs.
    fn assemble(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        put_u32(&mut out, 12, self.sections.len() as u32);
        let end = HEADER_LEN + self.sections.len() * SECTION_ENTRY_LEN;
        out.resize(end + 4, 0);
        let mut offset = (end + 4).next_multiple_of(SECTION_ALIGN);
        let mut offsets = Vec::new();
        for (i, s) in self.sections.iter().enumerate() {
            let at = entry_at(i);
            put_u32(&mut out, at, s.kind);
            put_u32(&mut out, at + 4, s.flags);
            put_u64(&mut out, at + 8, offset as u64);
            put_u64(&mut out, at + 16, s.bytes.len() as u64);
            put_u32(&mut out, at + 24, crc32fast::hash(&s.bytes));
            offsets.push(offset);
            offset = (offset + s.bytes.len()).next_multiple_of(SECTION_ALIGN);
        }
        fix_header_crc(&mut out);
        for (s, offset) in self.sections.iter().zip(offsets) {
            out.resize(offset, 0);
            out.extend_from_slice(&s.bytes);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The golden file.

/// A fixed pseudo-random stream (splitmix64), independent of any crate's versions so that the
/// golden file's contents can be recomputed forever.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in [−1, 1) with 24 significant bits, exact in f32.
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

const GOLDEN_ITEMS: usize = 40;

/// The golden index: dim 6 padded to 8, 4 subspaces of 2, 3 lists (35 items over two blocks,
/// an empty list, 5 items), 4-bit codes, a signed-permutation rotation, inner product.
/// Returns the parts and, per item, its list, codes and id.
fn golden_parts() -> (IndexParts, Vec<u32>, Vec<u8>, Vec<u64>) {
    let mut g = SplitMix(2021);
    let p = params(6, 4, 3, 4, Metric::InnerProduct);
    let mut perm: Vec<usize> = (0..8).collect();
    for i in (1..8).rev() {
        perm.swap(i, (g.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut rotation = vec![0.0f32; 64];
    for (row, &col) in perm.iter().enumerate() {
        rotation[row * 8 + col] = if g.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
    }
    let centroids: Vec<f32> = (0..3 * 8).map(|_| g.next_f32()).collect();
    let codebooks: Vec<f32> = (0..16 * 8).map(|_| g.next_f32()).collect();
    let lists: Vec<u32> = (0..GOLDEN_ITEMS)
        .map(|i| if i % 8 == 3 { 2 } else { 0 })
        .collect();
    let codes: Vec<u8> = (0..GOLDEN_ITEMS * 4)
        .map(|_| (g.next_u64() % 16) as u8)
        .collect();
    let ids: Vec<u64> = (0..GOLDEN_ITEMS).map(|_| g.next_u64() >> 1).collect();
    let metadata = meta(json!({
        "name": "golden-v1",
        "generator": "splitmix64, seed 2021 (crates/poeem-search/tests/format.rs)",
        "format_version": 1,
    }));
    let parts = IndexParts::from_item_codes(
        p,
        Some(rotation),
        centroids,
        codebooks,
        &lists,
        &codes,
        &ids,
        metadata,
    )
    .expect("golden parts");
    (parts, lists, codes, ids)
}

/// The version-2 golden index: dim 6 in 3 subspaces of 2 (odd M), 2 lists (34 items over two
/// blocks, 6 items), 4-bit codes in the fast-scan layout, no rotation, L2, and `f16`
/// refinement data. Returns the parts and, per item, its list, codes and id.
fn golden_v2_parts() -> (IndexParts, Vec<u32>, Vec<u8>, Vec<u64>) {
    let mut g = SplitMix(2026);
    let p = IndexParams {
        code_layout: CodeLayout::FastScan4,
        ..params(6, 3, 2, 4, Metric::L2)
    };
    let centroids: Vec<f32> = (0..2 * 6).map(|_| g.next_f32()).collect();
    let codebooks: Vec<f32> = (0..16 * 6).map(|_| g.next_f32()).collect();
    let n = 40;
    let lists: Vec<u32> = (0..n).map(|i| u32::from(i % 6 == 5)).collect();
    let codes: Vec<u8> = (0..n * 3).map(|_| (g.next_u64() % 16) as u8).collect();
    let ids: Vec<u64> = (0..n).map(|_| g.next_u64() >> 1).collect();
    let metadata = meta(json!({
        "name": "golden-v2",
        "generator": "splitmix64, seed 2026 (crates/poeem-search/tests/format.rs)",
        "format_version": 2,
    }));
    let mut parts = IndexParts::from_item_codes(
        p, None, centroids, codebooks, &lists, &codes, &ids, metadata,
    )
    .expect("golden v2 parts");
    let values: Vec<f32> = parts
        .ids
        .iter()
        .flat_map(|&id| [id == PADDING_ID; 6])
        .map(|padding| if padding { 0.0 } else { g.next_f32() })
        .collect();
    parts.refine = Some(encode_float_refine(RefineKind::F16, 6, &values));
    (parts, lists, codes, ids)
}

fn golden_v2_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/golden-v2.poeem")
}

#[test]
fn golden_v2_file_opens_and_matches() {
    let (parts, lists, codes, ids) = golden_v2_parts();
    let path = golden_v2_path();
    for index in [
        Index::open(&path).expect("open"),
        Index::read(&path).expect("read"),
    ] {
        let info = index.info();
        assert_eq!(info.format_version, 2);
        let refine = info.sections.iter().find(|s| s.name == "refine").unwrap();
        assert!(refine.optional);
        assert_eq!(index.params().code_layout, CodeLayout::FastScan4);
        assert_eq!(index.to_parts(), parts);
        index.verify().expect("golden v2 file verifies");
        let view = index.view();
        assert_eq!(view.list_sizes(), [34, 6]);
        let mut filled = [0usize; 2];
        for item in 0..lists.len() {
            let list = lists[item] as usize;
            let pos = filled[list];
            filled[list] += 1;
            assert_eq!(view.list(list).ids[pos], ids[item]);
            for m in 0..3 {
                assert_eq!(view.code(list, pos, m), u32::from(codes[item * 3 + m]));
            }
        }
        assert_eq!(view.refine().unwrap().kind(), RefineKind::F16);
        exercise(&index);
    }
    // The same bytes as the writer writes today.
    assert_eq!(
        std::fs::read(&path).unwrap()[..HEADER_LEN],
        encode_index(&parts).unwrap()[..HEADER_LEN]
    );
}

/// Rewrites the version-2 golden file (see [`regenerate_golden_v1`]):
/// `POEEM_REGENERATE_GOLDEN=1 cargo test -p poeem-search --test format -- --ignored regenerate_golden_v2`.
#[test]
#[ignore = "rewrites testdata/golden-v2.poeem; see docs/index-format.md"]
fn regenerate_golden_v2() {
    if std::env::var_os("POEEM_REGENERATE_GOLDEN").is_none() {
        eprintln!(
            "set POEEM_REGENERATE_GOLDEN=1 to rewrite {}",
            golden_v2_path().display()
        );
        return;
    }
    write_index(&golden_v2_path(), &golden_v2_parts().0).expect("write golden file");
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/golden-v1.poeem")
}

#[test]
fn golden_v1_file_opens_and_matches() {
    let (parts, lists, codes, ids) = golden_parts();
    let path = golden_path();
    let file_len = std::fs::metadata(&path).expect("golden file").len();
    for (index, mapped) in [
        (Index::open(&path).expect("open"), true),
        (Index::read(&path).expect("read"), false),
    ] {
        let info = index.info();
        assert_eq!(info.format_version, 1);
        assert_eq!(info.file_size, file_len);
        assert_eq!(info.mmapped, mapped);
        let names: Vec<&str> = info.sections.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "rotation",
                "coarse_centroids",
                "codebooks",
                "list_offsets",
                "list_sizes",
                "metadata",
                "ids",
                "codes"
            ]
        );
        let expected = IndexParams {
            n_items: GOLDEN_ITEMS,
            code_layout: Default::default(),
            ..params(6, 4, 3, 4, Metric::InnerProduct)
        };
        assert_eq!(*index.params(), expected);
        assert_eq!(index.metadata(), &parts.metadata);
        assert_eq!(index.to_parts(), parts);
        index.verify().expect("golden file verifies");

        let view = index.view();
        assert_eq!(view.list_sizes(), [35, 0, 5]);
        assert_eq!(view.list_offsets(), [0, 64, 64, 96]);
        assert!(view.list(1).is_empty());
        // Items keep their input order inside a list; check codes and ids item by item.
        let mut filled = [0usize; 3];
        for item in 0..GOLDEN_ITEMS {
            let list = lists[item] as usize;
            let pos = filled[list];
            filled[list] += 1;
            assert_eq!(view.list(list).ids[pos], ids[item]);
            for m in 0..4 {
                assert_eq!(view.code(list, pos, m), u32::from(codes[item * 4 + m]));
            }
        }
        assert!(view.slot_ids()[35..64].iter().all(|&id| id == PADDING_ID));
        exercise(&index);
    }
}

/// Rewrites the golden file from the generator. Run only on purpose, after a deliberate change
/// of the generator (never of the format: a new format version gets a new golden file):
/// `POEEM_REGENERATE_GOLDEN=1 cargo test -p poeem-search --test format -- --ignored regenerate_golden_v1`.
#[test]
#[ignore = "rewrites testdata/golden-v1.poeem; see docs/index-format.md"]
fn regenerate_golden_v1() {
    if std::env::var_os("POEEM_REGENERATE_GOLDEN").is_none() {
        eprintln!(
            "set POEEM_REGENERATE_GOLDEN=1 to rewrite {}",
            golden_path().display()
        );
        return;
    }
    write_index(&golden_path(), &golden_parts().0).expect("write golden file");
}

// ---------------------------------------------------------------------------------------------
// Round trips.

fn metric_of(i: usize) -> Metric {
    Metric::ALL[i % Metric::ALL.len()]
}

proptest! {
    #![proptest_config(prop_config(40, 0x1D3_F11E))]

    #[test]
    fn write_then_open_read_round_trips_every_field(
        dim in 1usize..=12,
        n_subspaces in 1usize..=4,
        n_lists in 1usize..=5,
        n_bits in 1u32..=16,
        rotation in any::<bool>(),
        metric in 0usize..3,
        n_items in 0usize..=80,
        seed in any::<u64>(),
    ) {
        let p = params(dim, n_subspaces, n_lists, n_bits, metric_of(metric));
        let (parts, codes) = random_parts(p, rotation, n_items, seed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.poeem");
        write_index(&path, &parts).unwrap();
        let bytes = encode_index(&parts).unwrap();
        prop_assert_eq!(&std::fs::read(&path).unwrap(), &bytes);
        prop_assert_eq!(RawFile::split(&bytes).assemble(), bytes.clone());
        let indexes = [
            (Index::open(&path).unwrap(), true),
            (Index::read(&path).unwrap(), false),
            (Index::from_bytes(&bytes).unwrap(), false),
        ];
        for (index, mapped) in indexes {
            prop_assert_eq!(index.params(), &parts.params);
            prop_assert_eq!(index.metadata(), &parts.metadata);
            prop_assert_eq!(index.to_parts(), parts.clone());
            index.verify().unwrap();
            let info = index.info();
            prop_assert_eq!(info.mmapped, mapped);
            prop_assert_eq!(info.format_version, 1);
            prop_assert_eq!(info.file_size, bytes.len() as u64);
            prop_assert_eq!(info.sections.len(), 7 + usize::from(rotation));
            for s in &info.sections {
                prop_assert!(s.offset % SECTION_ALIGN as u64 == 0);
                prop_assert!(!s.optional);
            }
            let view = index.view();
            prop_assert_eq!(view.rotation().is_some(), rotation);
            // Every item's codes, list by list.
            let original = parts.view().unwrap();
            for list in 0..n_lists {
                prop_assert_eq!(view.list(list).ids, original.list(list).ids);
                for pos in 0..view.list(list).len() {
                    for m in 0..p.n_subspaces {
                        prop_assert_eq!(view.code(list, pos, m), original.code(list, pos, m));
                    }
                }
            }
            prop_assert_eq!(view.list_sizes().iter().sum::<u64>(), n_items as u64);
            prop_assert!(codes.iter().all(|&c| (c as usize) < p.n_codewords()));
            exercise(&index);
        }
    }
}

#[test]
fn an_index_without_items_round_trips() {
    let p = params(5, 2, 4, 12, Metric::L2);
    let (parts, _) = random_parts(p, false, 0, 7);
    let bytes = encode_index(&parts).unwrap();
    let index = Index::from_bytes(&bytes).unwrap();
    assert_eq!(index.to_parts(), parts);
    index.verify().unwrap();
    let info = index.info();
    for name in ["ids", "codes"] {
        let s = info.sections.iter().find(|s| s.name == name).unwrap();
        assert_eq!(s.length, 0);
    }
    assert_eq!(info.sections.last().unwrap().offset, bytes.len() as u64);
}

#[test]
fn the_writer_follows_the_documented_layout() {
    let (parts, ..) = golden_parts();
    let bytes = encode_index(&parts).unwrap();
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(u32_at(&bytes, 8), version_for(&parts.params));
    assert_eq!(u32_at(&bytes, 12), 8);
    let p = &parts.params;
    let header_u64: Vec<u64> = (0..5).map(|i| u64_at(&bytes, 16 + 8 * i)).collect();
    assert_eq!(header_u64, [6, 8, 3, 4, GOLDEN_ITEMS as u64]);
    assert_eq!(u32_at(&bytes, 56), p.n_bits);
    assert_eq!(u32_at(&bytes, 60), Metric::InnerProduct.code());
    assert_eq!(u32_at(&bytes, 64), BLOCK as u32);
    assert_eq!(u32_at(&bytes, 68), 1);
    assert!(bytes[72..HEADER_LEN].iter().all(|&b| b == 0));
    let end = table_end(&bytes);
    assert_eq!(u32_at(&bytes, end), crc32fast::hash(&bytes[..end]));
    // Independent re-assembly from the table gives the same bytes.
    assert_eq!(RawFile::split(&bytes).assemble(), bytes);
    // Sections hold the parts' little-endian values.
    let r = section_range(&bytes, SectionKind::ListOffsets);
    let offsets: Vec<u64> = bytes[r].chunks(8).map(|c| u64_at(c, 0)).collect();
    assert_eq!(offsets, parts.list_offsets);
    let r = section_range(&bytes, SectionKind::Codebooks);
    let first = f32::from_le_bytes(bytes[r.start..r.start + 4].try_into().unwrap());
    assert_eq!(first, parts.codebooks[0]);
    assert_eq!(
        &bytes[section_range(&bytes, SectionKind::Codes)],
        &parts.codes[..]
    );
    // The file ends with the last section.
    assert_eq!(section_range(&bytes, SectionKind::Codes).end, bytes.len());
}

// ---------------------------------------------------------------------------------------------
// Exhaustive truncations and single-byte changes.

/// Small files covering both code widths, with and without a rotation, and the fast-scan
/// layout (odd and even M) with each kind of refinement data.
fn small_files() -> Vec<Vec<u8>> {
    let (golden, ..) = golden_parts();
    let (wide, _) = random_parts(params(1, 1, 2, 9, Metric::L2), false, 3, 11);
    let (v2, ..) = golden_v2_parts();
    let fast = IndexParams {
        code_layout: CodeLayout::FastScan4,
        ..params(4, 2, 2, 4, Metric::Cosine)
    };
    let (mut pq8, _) = random_parts(fast, true, 5, 12);
    pq8.refine = Some(random_refine(&pq8, RefineKind::Pq8, 13));
    let (mut f32s, _) = random_parts(fast, false, 3, 14);
    f32s.refine = Some(random_refine(&f32s, RefineKind::F32, 15));
    [golden, wide, v2, pq8, f32s]
        .iter()
        .map(|parts| encode_index(parts).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(prop_config(40, 0xFA57_5CA4))]

    /// Fast-scan indexes (any M, any list sizes) with any refinement data round-trip, verify,
    /// and hold the codes they were given.
    #[test]
    fn fast_scan_indexes_round_trip(
        dim in 1usize..=12,
        n_subspaces in 1usize..=7,
        n_lists in 1usize..=4,
        rotation in any::<bool>(),
        metric in 0usize..3,
        n_items in 0usize..=90,
        refine in 0usize..4,
        seed in any::<u64>(),
    ) {
        let n_subspaces = n_subspaces.min(dim);
        let p = IndexParams {
            code_layout: CodeLayout::FastScan4,
            ..params(dim, n_subspaces, n_lists, 4, metric_of(metric))
        };
        let (mut parts, codes) = random_parts(p, rotation, n_items, seed);
        let kinds = [None, Some(RefineKind::F32), Some(RefineKind::F16), Some(RefineKind::Pq8)];
        parts.refine = kinds[refine].map(|k| random_refine(&parts, k, seed ^ 1));
        let bytes = encode_index(&parts).unwrap();
        let index = Index::from_bytes(&bytes).unwrap();
        prop_assert_eq!(index.info().format_version, 2);
        prop_assert_eq!(index.to_parts(), parts.clone());
        index.verify().unwrap();
        prop_assert_eq!(
            index.info().sections.iter().filter(|s| s.optional).count(),
            usize::from(refine > 0)
        );
        // The view's codes are the items' codes (lists keep input order).
        let view = index.view();
        let mut filled = vec![0usize; n_lists];
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9);
        let lists: Vec<u32> = (0..n_items).map(|_| rng.random_range(0..n_lists as u32)).collect();
        for (item, &list) in lists.iter().enumerate() {
            let list = list as usize;
            let pos = filled[list];
            filled[list] += 1;
            for m in 0..n_subspaces {
                prop_assert_eq!(view.code(list, pos, m), codes[item * n_subspaces + m]);
            }
        }
        exercise(&index);
    }
}

/// Opens `bytes`, reporting a panic with `what`; exercises the index when it opens.
fn open_without_panic(bytes: &[u8], what: &dyn Fn() -> String) -> Result<Index, SearchError> {
    catch_unwind(AssertUnwindSafe(|| {
        let opened = Index::from_bytes(bytes);
        if let Ok(index) = &opened {
            exercise(index);
            let _ = index.verify();
        }
        opened
    }))
    .unwrap_or_else(|_| panic!("panic on {}", what()))
}

#[test]
fn every_truncation_is_an_error() {
    for file in small_files() {
        for len in 0..file.len() {
            let opened = open_without_panic(&file[..len], &|| format!("truncation to {len}"));
            assert!(opened.is_err(), "truncation to {len} bytes opened");
        }
    }
    // The mapped reader shares the parser; check it on a sample of lengths.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.poeem");
    let file = &small_files()[0];
    for len in (0..file.len()).step_by(61).chain([file.len() - 1]) {
        std::fs::write(&path, &file[..len]).unwrap();
        assert!(Index::open(&path).is_err(), "open of truncation to {len}");
        assert!(Index::read(&path).is_err(), "read of truncation to {len}");
    }
}

#[test]
fn every_single_byte_change_is_an_error_now_or_at_verify() {
    for file in small_files() {
        let mut bad = file.clone();
        for at in 0..file.len() {
            let original = file[at];
            for value in [original ^ 0x01, original ^ 0x80, 0x00, 0xff] {
                if value == original {
                    continue;
                }
                bad[at] = value;
                let opened = open_without_panic(&bad, &|| format!("byte {at} set to {value:#04x}"));
                if let Ok(index) = opened {
                    assert!(
                        index.verify().is_err(),
                        "byte {at} set to {value:#04x} opens and verifies"
                    );
                }
            }
            bad[at] = original;
        }
    }
}

/// The header and table fields, as (offset, width in bytes).
fn header_fields() -> Vec<(usize, usize)> {
    let mut fields = vec![
        (8, 4),
        (12, 4),
        (16, 8),
        (24, 8),
        (32, 8),
        (40, 8),
        (48, 8),
        (56, 4),
        (60, 4),
        (64, 4),
        (68, 4),
        (72, 8),
    ];
    for i in 0..8 {
        let at = entry_at(i);
        fields.extend([
            (at, 4),
            (at + 4, 4),
            (at + 8, 8),
            (at + 16, 8),
            (at + 24, 4),
            (at + 28, 4),
        ]);
    }
    fields
}

proptest! {
    #![proptest_config(prop_config(512, 0xC0FFEE))]

    /// Arbitrary values in any header or table field, with the header CRC made to match, give
    /// an error or a usable index, never a panic.
    #[test]
    fn arbitrary_header_fields_with_a_valid_crc_never_panic(
        field in 0usize..60,
        value in any::<u64>(),
        small in any::<bool>(),
    ) {
        let mut file = small_files().swap_remove(0);
        let fields = header_fields();
        let (at, width) = fields[field % fields.len()];
        let value = if small { value % 300 } else { value };
        if width == 4 {
            put_u32(&mut file, at, value as u32);
        } else {
            put_u64(&mut file, at, value);
        }
        if file.len() >= table_end(&file) + 4 {
            fix_header_crc(&mut file);
        }
        let _ = open_without_panic(&file, &|| format!("field at {at} set to {value}"));
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        keep_header in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if keep_header && bytes.len() >= 12 {
            bytes[..8].copy_from_slice(&MAGIC);
            put_u32(&mut bytes, 8, 1);
        }
        let opened = open_without_panic(&bytes, &|| "random bytes".to_owned());
        prop_assert!(opened.is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Specific corruptions.

fn golden_bytes() -> Vec<u8> {
    encode_index(&golden_parts().0).unwrap()
}

fn open_err(bytes: &[u8]) -> SearchError {
    Index::from_bytes(bytes).expect_err("the file should be rejected")
}

fn verify_err(bytes: &[u8]) -> SearchError {
    Index::from_bytes(bytes)
        .expect("the file should open")
        .verify()
        .expect_err("verify should fail")
}

#[test]
fn bad_magic_is_not_an_index() {
    let mut file = golden_bytes();
    file[0] = b'X';
    assert!(matches!(open_err(&file), SearchError::NotAnIndex { found } if found[0] == b'X'));
    assert!(matches!(open_err(b"hello"), SearchError::NotAnIndex { .. }));
    assert!(matches!(open_err(b""), SearchError::Truncated { .. }));
    assert!(matches!(open_err(b"POEEMI"), SearchError::Truncated { .. }));
}

#[test]
fn future_and_zero_versions_are_unsupported() {
    for version in [0, 3, u32::MAX] {
        let mut file = golden_bytes();
        put_u32(&mut file, 8, version);
        assert!(matches!(
            open_err(&file),
            SearchError::UnsupportedVersion { found, min: 1, max: 2 } if found == version
        ));
        // Version checks come before the CRC, so a fixed CRC changes nothing.
        fix_header_crc(&mut file);
        assert!(matches!(
            open_err(&file),
            SearchError::UnsupportedVersion { .. }
        ));
    }
}

#[test]
fn a_changed_header_fails_its_checksum() {
    let mut file = golden_bytes();
    put_u64(&mut file, 16, 7);
    assert!(matches!(
        open_err(&file),
        SearchError::ChecksumMismatch {
            section: "header",
            ..
        }
    ));
}

#[test]
fn header_fields_are_checked() {
    let cases: [(usize, u32, &str); 4] = [
        (60, 3, "metric"),
        (64, 16, "block_size"),
        (68, 2, "code_width"),
        (80, 1, "reserved"),
    ];
    for (at, value, name) in cases {
        let mut file = golden_bytes();
        put_u32(&mut file, at, value);
        fix_header_crc(&mut file);
        assert!(
            matches!(open_err(&file), SearchError::InvalidHeader { field, .. } if field == name),
            "{name}"
        );
    }
    let mut file = golden_bytes();
    put_u32(&mut file, 56, 17);
    fix_header_crc(&mut file);
    assert!(matches!(
        open_err(&file),
        SearchError::InvalidParameter { name: "n_bits", .. }
    ));
    let mut file = golden_bytes();
    put_u64(&mut file, 16, u64::MAX);
    fix_header_crc(&mut file);
    assert!(matches!(
        open_err(&file),
        SearchError::Overflow {
            what: "padded dimension"
        }
    ));
    let mut file = golden_bytes();
    put_u64(&mut file, 48, GOLDEN_ITEMS as u64 + 1);
    fix_header_crc(&mut file);
    assert!(matches!(
        open_err(&file),
        SearchError::DimensionMismatch {
            what: "items in the lists",
            ..
        }
    ));
}

/// Changes one field of the table entry of `kind` and fixes the header CRC.
fn patch_entry(file: &mut [u8], kind: SectionKind, field: usize, value: u64) {
    let at = entry_at(entry_of(file, kind)) + field;
    if field == 8 || field == 16 {
        put_u64(file, at, value);
    } else {
        put_u32(file, at, value as u32);
    }
    fix_header_crc(file);
}

fn placement_reason(e: SearchError) -> (&'static str, &'static str) {
    match e {
        SearchError::BadSectionPlacement {
            section, reason, ..
        } => (section, reason),
        other => panic!("expected BadSectionPlacement, got {other:?}"),
    }
}

#[test]
fn a_misaligned_section_is_rejected() {
    let mut file = golden_bytes();
    let offset = section_range(&file, SectionKind::Codebooks).start as u64;
    patch_entry(&mut file, SectionKind::Codebooks, 8, offset + 8);
    let (section, reason) = placement_reason(open_err(&file));
    assert_eq!(section, "codebooks");
    assert!(reason.contains("aligned"), "{reason}");
}

#[test]
fn overlapping_sections_are_rejected() {
    let mut file = golden_bytes();
    let offset = section_range(&file, SectionKind::ListOffsets).start as u64;
    patch_entry(&mut file, SectionKind::ListSizes, 8, offset);
    let (_, reason) = placement_reason(open_err(&file));
    assert!(reason.contains("overlaps"), "{reason}");
    // A section inside the header and table.
    let mut file = golden_bytes();
    patch_entry(&mut file, SectionKind::ListSizes, 8, 64);
    let (section, reason) = placement_reason(open_err(&file));
    assert_eq!(section, "list_sizes");
    assert!(reason.contains("header"), "{reason}");
}

#[test]
fn a_section_past_the_end_of_the_file_is_rejected() {
    let mut file = golden_bytes();
    let past = (file.len() as u64).next_multiple_of(64) + 64;
    patch_entry(&mut file, SectionKind::Metadata, 8, past);
    let (section, reason) = placement_reason(open_err(&file));
    assert_eq!(section, "metadata");
    assert!(reason.contains("past the end"), "{reason}");
    // An offset and length whose sum overflows.
    let mut file = golden_bytes();
    patch_entry(&mut file, SectionKind::Codes, 16, u64::MAX - 10);
    let (_, reason) = placement_reason(open_err(&file));
    assert!(reason.contains("past the end"), "{reason}");
    // Cutting the last byte leaves the codes section short.
    let file = golden_bytes();
    let (section, _) = placement_reason(open_err(&file[..file.len() - 1]));
    assert_eq!(section, "codes");
}

#[test]
fn gaps_and_trailing_bytes_are_rejected() {
    let mut file = golden_bytes();
    let codes = section_range(&file, SectionKind::Codes);
    patch_entry(&mut file, SectionKind::Codes, 8, codes.start as u64 + 64);
    file.extend_from_slice(&[0; 64]);
    let (section, reason) = placement_reason(open_err(&file));
    assert_eq!(section, "codes");
    assert!(reason.contains("boundary"), "{reason}");

    let mut file = golden_bytes();
    file.push(0);
    assert!(matches!(
        open_err(&file),
        SearchError::BadSectionTable { .. }
    ));
}

#[test]
fn non_monotone_list_offsets_are_rejected() {
    let mut raw = RawFile::split(&golden_bytes());
    // [0, 64, 64, 96] becomes [0, 64, 32, 96]: list 1 would end before it starts.
    put_u64(raw.section(SectionKind::ListOffsets), 16, 32);
    assert!(matches!(
        open_err(&raw.assemble()),
        SearchError::BadList { list: 1, reason } if reason.contains("decrease")
    ));
    // Sizes that disagree with the offsets.
    let mut raw = RawFile::split(&golden_bytes());
    put_u64(raw.section(SectionKind::ListSizes), 0, 30);
    assert!(matches!(
        open_err(&raw.assemble()),
        SearchError::BadList { list: 0, .. }
    ));
}

#[test]
fn a_wrong_section_size_is_rejected() {
    let mut raw = RawFile::split(&golden_bytes());
    raw.section(SectionKind::Codebooks).truncate(508);
    assert!(matches!(
        open_err(&raw.assemble()),
        SearchError::SectionSize {
            section: "codebooks",
            expected: 512,
            found: 508
        }
    ));
    let mut raw = RawFile::split(&golden_bytes());
    raw.section(SectionKind::Ids).extend_from_slice(&[0; 8]);
    assert!(matches!(
        open_err(&raw.assemble()),
        SearchError::SectionSize {
            section: "ids",
            expected: 768,
            found: 776
        }
    ));
    let mut raw = RawFile::split(&golden_bytes());
    raw.section(SectionKind::Rotation).pop();
    assert!(matches!(
        open_err(&raw.assemble()),
        SearchError::SectionSize {
            section: "rotation",
            ..
        }
    ));
}

#[test]
fn checksums_of_small_sections_are_checked_at_open_and_of_ids_and_codes_by_verify() {
    let file = golden_bytes();
    for kind in [
        SectionKind::Rotation,
        SectionKind::CoarseCentroids,
        SectionKind::Codebooks,
        SectionKind::ListOffsets,
        SectionKind::ListSizes,
        SectionKind::Metadata,
    ] {
        let mut bad = file.clone();
        bad[section_range(&file, kind).start] ^= 0x10;
        assert!(
            matches!(open_err(&bad), SearchError::ChecksumMismatch { section, .. } if section == kind.name()),
            "{}",
            kind.name()
        );
    }
    for kind in [SectionKind::Ids, SectionKind::Codes] {
        let mut bad = file.clone();
        bad[section_range(&file, kind).end - 1] ^= 0x01;
        assert!(
            matches!(verify_err(&bad), SearchError::ChecksumMismatch { section, .. } if section == kind.name()),
            "{}",
            kind.name()
        );
    }
}

#[test]
fn nonzero_padding_is_caught_by_verify() {
    let mut file = golden_bytes();
    let pad = table_end(&file) + 4;
    assert!(pad < section_range(&file, SectionKind::Rotation).start);
    file[pad] = 1;
    let (_, reason) = placement_reason(verify_err(&file));
    assert!(reason.contains("padding"), "{reason}");
}

#[test]
fn missing_required_sections_are_rejected() {
    for kind in SectionKind::ALL.into_iter().filter(|k| k.is_required()) {
        let mut raw = RawFile::split(&golden_bytes());
        raw.sections.retain(|s| s.kind != kind.code());
        assert!(
            matches!(
                open_err(&raw.assemble()),
                SearchError::BadSectionTable { section, reason }
                    if section == kind.name() && reason.contains("missing")
            ),
            "{}",
            kind.name()
        );
    }
    // The rotation is optional: without it the view has the identity.
    let mut raw = RawFile::split(&golden_bytes());
    raw.sections
        .retain(|s| s.kind != SectionKind::Rotation.code());
    let index = Index::from_bytes(&raw.assemble()).unwrap();
    assert!(index.view().rotation().is_none());
    index.verify().unwrap();
}

#[test]
fn duplicated_sections_are_rejected() {
    let mut raw = RawFile::split(&golden_bytes());
    let sizes = raw.section(SectionKind::ListSizes).clone();
    raw.sections.push(RawSection {
        kind: SectionKind::ListSizes.code(),
        flags: 0,
        bytes: sizes,
    });
    assert!(matches!(
        open_err(&raw.assemble()),
        SearchError::BadSectionTable { section, reason }
            if section == "list_sizes" && reason.contains("twice")
    ));
}

#[test]
fn unknown_sections_need_the_optional_flag() {
    let extra = |flags| {
        let mut raw = RawFile::split(&golden_bytes());
        raw.sections.insert(
            2,
            RawSection {
                kind: 99,
                flags,
                bytes: b"written by a future version".to_vec(),
            },
        );
        raw.assemble()
    };
    assert!(matches!(
        open_err(&extra(0)),
        SearchError::BadSectionTable { section, .. } if section == "kind 99"
    ));
    assert!(matches!(
        open_err(&extra(2)),
        SearchError::BadSectionTable { reason, .. } if reason.contains("flag")
    ));

    let file = extra(FLAG_OPTIONAL);
    let index = Index::from_bytes(&file).expect("an unknown optional section is ignored");
    assert_eq!(index.to_parts(), golden_parts().0);
    index.verify().unwrap();
    let unknown = &index.info().sections[2];
    assert_eq!(
        (unknown.kind, unknown.name, unknown.optional),
        (99, "unknown", true)
    );
    // Its bytes are still covered by verify.
    let mut bad = file.clone();
    bad[unknown.offset as usize] ^= 1;
    assert!(matches!(
        verify_err(&bad),
        SearchError::ChecksumMismatch {
            section: "unknown",
            ..
        }
    ));
}

/// Both golden files re-save byte for byte: opening and writing again changes nothing, the
/// metadata's unknown keys included.
#[test]
fn golden_files_re_save_byte_for_byte() {
    for path in [golden_path(), golden_v2_path()] {
        let bytes = std::fs::read(&path).unwrap();
        let index = Index::open(&path).unwrap();
        assert!(index.metadata().builder.is_none());
        assert_eq!(index.metadata().extra.len(), 3);
        assert_eq!(encode_index(&index.to_parts()).unwrap(), bytes);
    }
}

/// Typed members and unknown keys (any JSON, nested, negative and float numbers, `null`) come
/// back from a file as they went in, and the section holds them as one compact JSON object
/// with sorted keys.
#[test]
fn metadata_with_unknown_keys_round_trips() {
    let text = r#"{"builder":"tests/format.rs","coarse_level":true,"crate_version":"9.9.9","created":1700000000,"distortion":0.125,"future_key":{"list":[1,-2,3.5,null,"x",[]],"nested":{"flag":false}},"relative_distortion":null,"rotation":"learned","z":-7}"#;
    let (mut parts, ..) = golden_parts();
    parts.metadata = meta(serde_json::from_str(text).unwrap());
    assert_eq!(parts.metadata.builder.as_deref(), Some("tests/format.rs"));
    assert_eq!(parts.metadata.created, Some(1_700_000_000));
    assert_eq!(parts.metadata.coarse_level, Some(true));
    assert!(parts.metadata.relative_distortion.unwrap().is_nan());
    assert_eq!(
        parts.metadata.extra["z"],
        poeem_search::MetadataValue::Int(-7)
    );
    let bytes = encode_index(&parts).unwrap();
    let mut raw = RawFile::split(&bytes);
    assert_eq!(raw.section(SectionKind::Metadata), text.as_bytes());
    let index = Index::from_bytes(&bytes).unwrap();
    assert_eq!(index.metadata(), &parts.metadata);
    assert_eq!(
        index.metadata().extra["future_key"].get("nested"),
        parts.metadata.extra["future_key"].get("nested")
    );
    assert_eq!(encode_index(&index.to_parts()).unwrap(), bytes);
}

/// A known key holding a value of another type is an error that names the key, not a panic.
#[test]
fn a_known_metadata_key_of_the_wrong_type_is_rejected() {
    for (text, key) in [
        (&br#"{"created":"yesterday"}"#[..], "created"),
        (br#"{"builder":42}"#, "builder"),
        (br#"{"coarse_level":1}"#, "coarse_level"),
        (br#"{"distortion":[0.5]}"#, "distortion"),
        (br#"{"name":"ok","created":-3}"#, "created"),
    ] {
        let mut raw = RawFile::split(&golden_bytes());
        *raw.section(SectionKind::Metadata) = text.to_vec();
        let err = open_err(&raw.assemble());
        let SearchError::BadMetadata { reason } = &err else {
            panic!("{err:?}");
        };
        assert!(reason.contains(&format!("\"{key}\"")), "{reason}");
        assert!(
            err.to_string().starts_with("metadata section: key"),
            "{err}"
        );
    }
}

#[test]
fn bad_metadata_is_rejected() {
    for text in [&b"[1, 2]"[..], b"{\"a\": ", b"\xff\xfe{}", b""] {
        let mut raw = RawFile::split(&golden_bytes());
        *raw.section(SectionKind::Metadata) = text.to_vec();
        assert!(matches!(
            open_err(&raw.assemble()),
            SearchError::BadMetadata { .. }
        ));
    }
}

#[test]
fn verify_checks_codes_and_padding_slots() {
    // Golden codes are 4-bit, one byte each; list 0 starts the codes section.
    let mut raw = RawFile::split(&golden_bytes());
    raw.section(SectionKind::Codes)[0] = 0x1f;
    assert!(matches!(
        verify_err(&raw.assemble()),
        SearchError::CodeOutOfRange {
            list: 0,
            item: 0,
            subspace: 0,
            code: 31,
            n_codewords: 16
        }
    ));
    // Slot 35 of list 0 (block 1, lane 3) is padding.
    let mut raw = RawFile::split(&golden_bytes());
    raw.section(SectionKind::Codes)[(4 * BLOCK) + 3] = 1;
    assert!(matches!(
        verify_err(&raw.assemble()),
        SearchError::BadList { list: 0, reason } if reason.contains("code")
    ));
    let mut raw = RawFile::split(&golden_bytes());
    put_u64(raw.section(SectionKind::Ids), 40 * 8, 7);
    assert!(matches!(
        verify_err(&raw.assemble()),
        SearchError::BadList { list: 0, reason } if reason.contains("PADDING_ID")
    ));
    // Two-byte codes: 9 bits allow codes below 512.
    let (wide, _) = random_parts(params(1, 1, 2, 9, Metric::L2), false, 3, 11);
    let mut raw = RawFile::split(&encode_index(&wide).unwrap());
    let list = if wide.list_sizes[0] > 0 { 0 } else { 1 };
    let start = wide.list_offsets[list] as usize * wide.params.slot_bytes();
    raw.section(SectionKind::Codes)[start..start + 2].copy_from_slice(&512u16.to_le_bytes());
    assert!(matches!(
        verify_err(&raw.assemble()),
        SearchError::CodeOutOfRange {
            code: 512,
            n_codewords: 512,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------------
// Writing.

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn writes_replace_the_file_atomically_and_leave_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.poeem");
    let (a, ..) = golden_parts();
    let (b, _) = random_parts(params(3, 3, 2, 8, Metric::Cosine), true, 10, 5);
    write_index(&path, &a).unwrap();
    write_index(&path, &b).unwrap();
    assert_eq!(Index::open(&path).unwrap().to_parts(), b);
    assert_eq!(dir_entries(dir.path()), ["index.poeem"]);
}

#[test]
fn a_failed_write_keeps_the_old_file_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.poeem");
    let (good, ..) = golden_parts();
    write_index(&path, &good).unwrap();
    let before = std::fs::read(&path).unwrap();

    // Inconsistent parts are rejected before any file is touched.
    let mut bad = good.clone();
    bad.codes.pop();
    assert!(write_index(&path, &bad).is_err());

    // A rename over a directory fails after the temporary file was written.
    let target_dir = dir.path().join("a-directory");
    std::fs::create_dir(&target_dir).unwrap();
    assert!(matches!(
        write_index(&target_dir, &good),
        Err(SearchError::Io { .. })
    ));
    assert!(target_dir.is_dir());

    // A directory that does not exist.
    let missing = dir.path().join("no-such-dir").join("index.poeem");
    assert!(matches!(
        write_index(&missing, &good),
        Err(SearchError::Io { .. })
    ));

    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(dir_entries(dir.path()), ["a-directory", "index.poeem"]);
}

#[test]
fn opening_a_missing_file_or_a_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.poeem");
    assert!(matches!(Index::open(&missing), Err(SearchError::Io { .. })));
    assert!(matches!(Index::read(&missing), Err(SearchError::Io { .. })));
    assert!(Index::open(dir.path()).is_err());
    assert!(Index::read(dir.path()).is_err());
    let empty = dir.path().join("empty.poeem");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        Index::open(&empty),
        Err(SearchError::Truncated { .. })
    ));
}

#[test]
fn an_index_is_shared_by_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Index>();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.poeem");
    write_index(&path, &golden_parts().0).unwrap();
    let index = Index::open(&path).unwrap();
    let sums: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let view = index.view();
                    (0..3)
                        .map(|l| {
                            view.list(l)
                                .codes
                                .iter()
                                .map(|&c| u64::from(c))
                                .sum::<u64>()
                        })
                        .sum()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(sums.windows(2).all(|w| w[0] == w[1]));
}

/// Item keys travel in the optional `item_keys` section: written after the codes with the
/// optional flag, read back equal by both readers, checked by `verify`, carried by
/// `to_parts`; keys must be unique and name every item id; any byte change in the section is
/// caught by opening, by `verify`, or leaves the keys readable.
#[test]
fn item_keys_round_trip_in_their_optional_section() {
    let (golden, lists, codes, _) = golden_parts();
    let ids: Vec<u64> = (0..GOLDEN_ITEMS as u64).rev().collect();
    let mut parts = IndexParts::from_item_codes(
        golden.params,
        golden.rotation.clone(),
        golden.coarse_centroids.clone(),
        golden.codebooks.clone(),
        &lists,
        &codes,
        &ids,
        golden.metadata.clone(),
    )
    .unwrap();
    let keys: Vec<String> = (0..GOLDEN_ITEMS)
        .map(|i| format!("Film \"{i}\", ü\t{}", "x".repeat(i % 3)))
        .collect();
    parts.item_keys = Some(ItemKeys::new(&keys).unwrap());
    let bytes = encode_index(&parts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.poeem");
    write_index(&path, &parts).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    for index in [
        Index::open(&path).unwrap(),
        Index::from_bytes(&bytes).unwrap(),
    ] {
        index.verify().unwrap();
        let view = index.item_keys().expect("the index has keys");
        assert_eq!(view.to_vec().unwrap(), keys);
        assert_eq!(view.get(7).unwrap(), keys[7]);
        assert_eq!(index.to_parts(), parts);
        let section = index.info().sections.into_iter().last().unwrap();
        assert_eq!(
            (section.name, section.kind, section.optional),
            ("item_keys", 10, true)
        );
    }
    // An index without keys has none.
    assert!(
        Index::from_bytes(&encode_index(&golden).unwrap())
            .unwrap()
            .item_keys()
            .is_none()
    );

    // Every item id needs a key; keys are unique.
    let mut short = parts.clone();
    short.item_keys = Some(ItemKeys::new(&keys[..GOLDEN_ITEMS - 1]).unwrap());
    let err = encode_index(&short).unwrap_err();
    assert!(err.to_string().contains("has no key"), "{err}");
    assert!(
        ItemKeys::new(&["a", "b", "a"])
            .unwrap_err()
            .to_string()
            .contains("repeats")
    );

    // Single-byte changes inside the section.
    let index = Index::from_bytes(&bytes).unwrap();
    let entry = index.info().sections.into_iter().last().unwrap();
    for at in entry.offset as usize..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x41;
        if let Ok(index) = Index::from_bytes(&bad) {
            assert!(index.verify().is_err(), "byte {at}");
        }
    }
}
