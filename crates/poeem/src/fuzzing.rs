//! The properties the fuzz targets (`fuzz/fuzz_targets/`) and `cargo xtask fuzz-smoke` check on
//! arbitrary bytes, kept here so that both run exactly the same code.
//!
//! Each function feeds `data` to a parser that reads files users give: it must return a value or
//! an error and never panic, and what it returns must be consistent. A failed assertion or any
//! other panic is a bug.

use crate::build::{ReferenceFile, encode_reference, parse_reference};
use crate::io::{parse_fvecs, parse_ids, parse_npy};
use crate::search::Metric;

/// `.npy` bytes as vectors and as ids.
pub fn npy(data: &[u8]) {
    if let Ok(vectors) = parse_npy(data) {
        assert!(vectors.dim > 0, "vectors of dimension 0");
        assert_eq!(vectors.data.len() % vectors.dim, 0, "a partial row");
    }
    let _ = parse_ids(data);
}

/// `.fvecs` bytes: every row is `4 + 4·dim` bytes, so the file's length is a whole number of
/// rows.
pub fn fvecs(data: &[u8]) {
    if let Ok(vectors) = parse_fvecs(data) {
        assert!(vectors.dim > 0, "vectors of dimension 0");
        assert_eq!(
            data.len(),
            vectors.len() * (4 + 4 * vectors.dim),
            "bytes left over"
        );
    }
}

/// Bytes of a reference-implementation index file: a file that reads writes back to the same
/// bytes, and an import under each metric gives parts whose view validates.
pub fn reference(data: &[u8]) {
    if let Ok(file) = ReferenceFile::from_bytes(data) {
        let written = encode_reference(&file).expect("a file that reads can be written");
        assert_eq!(written, data, "the reference format does not round-trip");
    }
    for metric in [Metric::InnerProduct, Metric::L2, Metric::Cosine] {
        if let Ok(import) = parse_reference(data, metric) {
            let view = import.parts.view().expect("imported parts are consistent");
            assert_eq!(view.params().metric, metric);
            assert_eq!(
                import.parts.params.n_items + import.n_dropped_zero_norm,
                import.n_read
            );
        }
    }
}
