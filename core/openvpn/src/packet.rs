//! packet (in progress).
