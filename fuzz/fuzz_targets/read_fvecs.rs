//! Feeds arbitrary bytes to the `.fvecs` reader: no input may panic, and a file that reads is
//! a whole number of rows (see `poeem::fuzzing::fvecs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| poeem::fuzzing::fvecs(data));
