//! Feeds arbitrary bytes to the index-file parser. An input that opens must verify or fail
//! cleanly, report consistent info, and support reading every list through the view: no input
//! may panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poeem_search::Index;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = Index::from_bytes(data) else {
        return;
    };
    let _ = index.verify();
    let info = index.info();
    assert_eq!(info.file_size, data.len() as u64);
    assert_eq!(info.params, *index.params());
    assert!(index.metadata().is_object());

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
    std::hint::black_box((checksum, &out, &rotated));
    let _ = index.to_parts();
});
