//! icmp (in progress).
