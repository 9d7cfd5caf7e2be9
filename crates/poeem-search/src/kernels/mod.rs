//! Scan kernels (filled in by their own change).
pub(crate) mod avx2;
pub(crate) mod scalar;
