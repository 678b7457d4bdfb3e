//! Host OS layer (filled in below).
