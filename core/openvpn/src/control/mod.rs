//! Building blocks of the TLS-mode control channel: control-packet wrapping (tls-auth,
//! tls-crypt), the key-method-2 messages, data-channel key derivation, and the text control
//! messages (PUSH_REPLY, AUTH_FAILED, ...).
//!
//! - [`wrap`]: tls-auth and tls-crypt over whole control packets, in place;
//! - [`keymethod`]: the key-method-2 messages, the options string and the peer-info text;
//! - [`prf`]: `key2` from the TLS exporter or the legacy PRF, and its split by direction;
//! - [`push`]: the text control messages, PUSH_REPLY and the `TunnelConfig` it gives;
//! - [`reliable`]: message ids, acknowledgements and retransmission of control packets.

pub mod keymethod;
pub mod prf;
pub mod push;
pub mod reliable;
pub mod wrap;
