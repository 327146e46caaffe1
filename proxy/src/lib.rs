//! Local proxy front ends (HTTP/1.1, SOCKS5, port forwards) as sans-IO state machines, shared
//! by every driver.

#![forbid(unsafe_code)]
