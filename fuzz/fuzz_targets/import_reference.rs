//! Feeds arbitrary bytes to the importer of the reference implementation's index files: no input
//! may panic, a file that reads writes back to the same bytes, and imports under every metric
//! give consistent parts (see `poeem::fuzzing::reference`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| poeem::fuzzing::reference(data));
