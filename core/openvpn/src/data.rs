//! data (in progress).
