//! p2p (in progress).
