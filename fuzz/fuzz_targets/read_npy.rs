//! Feeds arbitrary bytes to the `.npy` readers (vectors and ids): no input may panic, and
//! vectors read have whole rows of a positive dimension (see `poeem::fuzzing::npy`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| poeem::fuzzing::npy(data));
