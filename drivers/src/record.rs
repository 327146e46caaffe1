//! Session recording: a tap that sees every input a driver gives the machine (with its `now`)
//! and every datagram the machine sends, so a user's session can be replayed in a test.

use erebus_sansio::io::Input;

/// Receives what a driver feeds to and takes from its machine, in order.
pub trait Tap {
    /// An input, just before the machine handles it.
    fn input(&mut self, input: &Input<'_>);
    /// Bytes the machine sent on the transport.
    fn transmit(&mut self, bytes: &[u8]);
}
