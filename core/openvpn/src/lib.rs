//! The OpenVPN client protocol, sans-IO.

#![forbid(unsafe_code)]
