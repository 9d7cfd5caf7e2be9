//! The Poeem indexing layer (filled in by its own change).
