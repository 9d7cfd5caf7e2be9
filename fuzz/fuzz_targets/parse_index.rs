//! Feeds arbitrary bytes to the index-file parser, both as they are and with their checksums
//! repaired (so that mutations reach the checks behind the CRCs). An input that opens must
//! verify or fail cleanly, report consistent info, and support reading every list through the
//! view (refinement data included) and a search: no input may panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poeem_search::Index;

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut repaired = data.to_vec();
    if repair_checksums(&mut repaired) {
        check(&repaired);
    }
});

fn check(data: &[u8]) {
    let Ok(index) = Index::from_bytes(data) else {
        return;
    };
    let _ = index.verify();
    let info = index.info();
    assert_eq!(info.file_size, data.len() as u64);
    assert_eq!(info.params, *index.params());
    // The typed metadata gives back the entries it was read from.
    let metadata = index.metadata();
    let again = poeem_search::IndexMetadata::from_map(metadata.to_map())
        .expect("metadata that opened re-reads");
    assert_eq!(&again, metadata);

    let view = index.view();
    let p = *view.params();
    let mut out = vec![0.0f32; p.dim];
    let mut rotated = vec![0.0f32; p.padded_dim];
    let mut checksum = 0u64;
    for list in 0..p.n_lists {
        let l = view.list(list);
        checksum ^= l.ids.iter().fold(0, |acc, &id| acc ^ id);
        checksum ^= l.codes.iter().map(|&c| u64::from(c)).sum::<u64>();
        let len = l.len();
        for pos in [0, len / 2, len.saturating_sub(1)] {
            if pos < len {
                for m in 0..p.n_subspaces {
                    checksum ^= u64::from(view.code(list, pos, m));
                }
                view.reconstruct(list, pos, &mut out);
                view.reconstruct_rotated(list, pos, &mut rotated);
            }
        }
    }
    // Refinement data (optional section): every slot decodes.
    if let Some(refine) = view.refine() {
        let width = if refine.kind() == poeem_search::RefineKind::Pq8 {
            p.padded_dim
        } else {
            p.dim
        };
        let mut refined = vec![0.0f32; width];
        for slot in 0..view.slot_ids().len() {
            refine.decode(slot, &mut refined);
            let _ = view.locate_slot(slot);
        }
        std::hint::black_box(&refined);
    }
    // A search reads every probed code through the scan kernels (fast-scan included) and, with
    // refinement data, re-ranks.
    let search = poeem_search::SearchIndex::new(view);
    let query = vec![0.5f32; p.dim];
    let (mut ids, mut scores) = ([0i64; 4], [0f32; 4]);
    let _ = poeem_search::Searcher::new(&search).search_one(
        &query,
        &poeem_search::SearchParams::new(4, 2).with_rerank_factor(2),
        &mut ids,
        &mut scores,
    );
    std::hint::black_box((checksum, &out, &rotated));
    let _ = index.to_parts();
}

/// Rewrites every in-bounds section CRC and then the header CRC, following
/// docs/index-format.md; returns false when the bytes are too short to hold a table.
fn repair_checksums(data: &mut [u8]) -> bool {
    const HEADER_LEN: usize = 96;
    const ENTRY_LEN: usize = 32;
    let u64_at = |data: &[u8], at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&data[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if data.len() < HEADER_LEN {
        return false;
    }
    let count = u32::from_le_bytes([data[12], data[13], data[14], data[15]]) as usize;
    let table_end = HEADER_LEN + count * ENTRY_LEN;
    if table_end + 4 > data.len() {
        return false;
    }
    for i in 0..count {
        let at = HEADER_LEN + i * ENTRY_LEN;
        let (offset, length) = (u64_at(data, at + 8), u64_at(data, at + 16));
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(length).ok())
            .and_then(|(o, l)| Some(o..o.checked_add(l)?));
        if let Some(crc) = range.and_then(|r| data.get(r)).map(crc32fast::hash) {
            data[at + 24..at + 28].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&data[..table_end]);
    data[table_end..table_end + 4].copy_from_slice(&crc.to_le_bytes());
    true
}
