//! tcp (in progress).
