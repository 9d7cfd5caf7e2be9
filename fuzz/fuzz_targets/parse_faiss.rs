//! Feeds arbitrary bytes to the faiss-file reader. An input that parses must be a valid poeem
//! index (its parts validate and encode), searchable at every nprobe, and write back as a faiss
//! file that parses to the same index: no input may panic, read out of bounds, or allocate
//! more than its declared lengths allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poeem_faiss::{encode_faiss, parse_faiss};
use poeem_search::{SearchIndex, SearchParams, Searcher, encode_index};

fuzz_target!(|data: &[u8]| {
    let Ok((parts, _summary)) = parse_faiss(data) else {
        return;
    };
    let view = parts.view().expect("a parsed index is valid");
    encode_index(&parts).expect("a parsed index encodes");
    let p = *view.params();
    let index = SearchIndex::new(view);
    let mut searcher = Searcher::new(&index);
    let query = vec![0.25f32; p.dim];
    let (mut ids, mut scores) = ([0i64; 3], [0f32; 3]);
    let _ = searcher.search_one(&query, &SearchParams::new(3, p.n_lists), &mut ids, &mut scores);
    let bytes = encode_faiss(&view).expect("ids came from a faiss file, so they fit");
    let (again, _) = parse_faiss(&bytes).expect("an exported index parses");
    assert_eq!(again.params, parts.params);
    assert_eq!(again.codes, parts.codes);
    assert_eq!(again.ids, parts.ids);
});
