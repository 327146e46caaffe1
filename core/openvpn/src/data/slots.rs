//! The data-channel keys of one TLS session, by key id: OpenVPN's `key_state` slots.
//!
//! A session has at most three data keys at once:
//!
//! - the **primary**: the key every packet is sent with;
//! - a **secondary**: a key a renegotiation just produced, already accepted on receive but not
//!   yet sent with (OpenVPN peers keep sending on the old key for about a minute after a
//!   renegotiation; the session decides when to switch);
//! - a **lame duck**: the previous primary after a switch, still accepted on receive until an
//!   expiry time the session gives (OpenVPN's `tran-window`, 3600 s by default), so packets the
//!   peer sent before it switched are not lost.
//!
//! Received packets go to whichever key their key id names; a key id that names none of them is
//! dropped as [`DropReason::UnknownKey`] (or [`DropReason::NotReady`] before the first key).
//! Key ids run 0 for the first key, then 1..=7 and back to 1 on each renegotiation, so the three
//! slots never share one.

use core::fmt;
use core::ops::Range;

use erebus_sansio::Instant;
use erebus_sansio::tunnel::{DropReason, Overhead};

use crate::packet::{DataHeader, KeyId};

use super::{DataChannel, DropCounts, SealError};

/// Why a key could not be placed in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    /// The channel has no header, hence no key id: it is not a TLS-mode channel.
    #[error("the channel has no key id (no data header)")]
    NoKeyId,
    /// The new key has the key id of the primary key.
    #[error("key id {0} is already the primary key")]
    SameKeyId(u8),
    /// There is no primary key to renegotiate from.
    #[error("no primary key yet")]
    NoPrimary,
    /// There is no secondary key to promote.
    #[error("no secondary key to promote")]
    NoSecondary,
}

/// A previous primary key, accepted on receive until `expires`.
#[derive(Clone)]
struct LameDuck {
    channel: DataChannel,
    expires: Instant,
}

/// The data-channel keys of one TLS session. See the [module documentation](self).
#[derive(Clone, Default)]
pub struct DataKeys {
    primary: Option<DataChannel>,
    secondary: Option<DataChannel>,
    lame_duck: Option<LameDuck>,
    /// Drops counted here (no key for the packet, no header) plus those of discarded keys.
    drops: DropCounts,
}

impl DataKeys {
    /// No keys yet: everything received is dropped as [`DropReason::NotReady`] and nothing can
    /// be sent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is a key to send with.
    pub const fn is_ready(&self) -> bool {
        self.primary.is_some()
    }

    /// Makes `channel` the only key, discarding any other: the first key of a session (key id
    /// 0, once the push has arrived) or the first key after a reconnection.
    ///
    /// # Errors
    ///
    /// [`SlotError::NoKeyId`] when the channel has no header.
    pub fn set_primary(&mut self, channel: DataChannel) -> Result<(), SlotError> {
        channel.key_id().ok_or(SlotError::NoKeyId)?;
        self.retire_secondary();
        self.retire_lame_duck();
        if let Some(old) = self.primary.replace(channel) {
            self.retire(&old);
        }
        Ok(())
    }

    /// Adds the key a renegotiation produced as the secondary: packets under its key id are
    /// accepted from now on, while sending stays on the primary until
    /// [`DataKeys::promote`]. Replaces an earlier secondary, and a lame duck with the same key
    /// id (key ids wrap after 7).
    ///
    /// # Errors
    ///
    /// [`SlotError::NoKeyId`], [`SlotError::NoPrimary`], or [`SlotError::SameKeyId`] when the
    /// key id is the primary's.
    pub fn install_secondary(&mut self, channel: DataChannel) -> Result<(), SlotError> {
        let key_id = channel.key_id().ok_or(SlotError::NoKeyId)?;
        let primary = self
            .primary
            .as_ref()
            .and_then(DataChannel::key_id)
            .ok_or(SlotError::NoPrimary)?;
        if primary == key_id {
            return Err(SlotError::SameKeyId(key_id.get()));
        }
        if self.lame_duck_key_id() == Some(key_id) {
            self.retire_lame_duck();
        }
        self.retire_secondary();
        self.secondary = Some(channel);
        Ok(())
    }

    /// Switches sending to the secondary key: it becomes the primary, and the old primary
    /// becomes the lame duck, accepted on receive until `lame_duck_expires` (replacing any
    /// older lame duck).
    ///
    /// # Errors
    ///
    /// [`SlotError::NoSecondary`] when no renegotiated key is waiting.
    pub fn promote(&mut self, lame_duck_expires: Instant) -> Result<(), SlotError> {
        let secondary = self.secondary.take().ok_or(SlotError::NoSecondary)?;
        if let Some(old) = self.primary.replace(secondary) {
            self.retire_lame_duck();
            self.lame_duck = Some(LameDuck {
                channel: old,
                expires: lame_duck_expires,
            });
        }
        Ok(())
    }

    /// [`DataKeys::install_secondary`] then [`DataKeys::promote`]: the new key sends at once.
    ///
    /// # Errors
    ///
    /// As [`DataKeys::install_secondary`].
    pub fn rotate(
        &mut self,
        channel: DataChannel,
        lame_duck_expires: Instant,
    ) -> Result<(), SlotError> {
        self.install_secondary(channel)?;
        self.promote(lame_duck_expires)
    }

    /// Discards every key (drop counts are kept): the session ended or restarts.
    pub fn clear(&mut self) {
        self.retire_secondary();
        self.retire_lame_duck();
        if let Some(old) = self.primary.take() {
            self.retire(&old);
        }
    }

    /// When the lame duck expires, if there is one: the session should call
    /// [`DataKeys::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lame_duck.as_ref().map(|duck| duck.expires)
    }

    /// Discards the lame duck once `now` reached its expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .lame_duck
            .as_ref()
            .is_some_and(|duck| now >= duck.expires)
        {
            self.retire_lame_duck();
        }
    }

    /// The key id packets are sent with.
    pub fn primary_key_id(&self) -> Option<KeyId> {
        self.primary.as_ref().and_then(DataChannel::key_id)
    }

    /// The key id of the secondary key, if one waits.
    pub fn secondary_key_id(&self) -> Option<KeyId> {
        self.secondary.as_ref().and_then(DataChannel::key_id)
    }

    /// The key id of the lame duck, if one is kept.
    pub fn lame_duck_key_id(&self) -> Option<KeyId> {
        self.lame_duck
            .as_ref()
            .and_then(|duck| duck.channel.key_id())
    }

    /// The primary key's channel.
    pub const fn primary(&self) -> Option<&DataChannel> {
        self.primary.as_ref()
    }

    /// Whether the primary key has sent enough packets that the session should renegotiate
    /// now ([`DataChannel::needs_rekey`]). After the last packet id, sealing fails with
    /// [`SealError::PacketIdExhausted`] until a new key is promoted.
    pub fn needs_rekey(&self) -> bool {
        self.primary.as_ref().is_some_and(DataChannel::needs_rekey)
    }

    /// Bytes needed around an inner packet to seal it with the primary key; `None` before the
    /// first key ([`super::DataConfig::overhead`] gives the same figure without a key).
    pub fn overhead(&self) -> Option<Overhead> {
        self.primary.as_ref().map(DataChannel::overhead)
    }

    /// Every drop so far: those of the live keys, of the keys already discarded, and of packets
    /// no key took.
    pub fn drops(&self) -> DropCounts {
        let mut total = self.drops;
        for channel in [
            self.primary.as_ref(),
            self.secondary.as_ref(),
            self.lame_duck.as_ref().map(|duck| &duck.channel),
        ]
        .into_iter()
        .flatten()
        {
            total = total.merged(channel.drops());
        }
        total
    }

    /// Seals the inner packet at `buf[inner]` with the primary key ([`DataChannel::seal`]).
    ///
    /// # Errors
    ///
    /// [`SealError::NoKey`] before the first key, otherwise as [`DataChannel::seal`].
    pub fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, SealError> {
        self.primary
            .as_mut()
            .ok_or(SealError::NoKey)?
            .seal(now, buf, inner)
    }

    /// Opens the data packet in `packet` in place with the key its key id names
    /// ([`DataChannel::open`]) and returns where the payload lies.
    ///
    /// # Errors
    ///
    /// The [`DropReason`], which is also counted: [`DropReason::NotReady`] before the first
    /// key, [`DropReason::UnknownKey`] for a key id no live key has (an expired lame duck is
    /// discarded here), [`DropReason::Malformed`] for a packet that is no data packet, or the
    /// key's own reason.
    pub fn open(&mut self, now: Instant, packet: &mut [u8]) -> Result<Range<usize>, DropReason> {
        self.handle_timeout(now);
        let result = self.route(packet).and_then(|slot| {
            let channel = match slot {
                Slot::Primary => self.primary.as_mut(),
                Slot::Secondary => self.secondary.as_mut(),
                Slot::LameDuck => self.lame_duck.as_mut().map(|duck| &mut duck.channel),
            };
            channel
                .ok_or(DropReason::UnknownKey)
                .map(|channel| channel.open(now, packet))
        });
        match result {
            // The channel counted its own drop.
            Ok(opened) => opened,
            Err(reason) => {
                self.drops.record(reason);
                Err(reason)
            }
        }
    }

    /// Which slot the packet's key id names.
    fn route(&self, packet: &[u8]) -> Result<Slot, DropReason> {
        let header = DataHeader::parse(packet).map_err(|_| DropReason::Malformed)?;
        if self.primary.is_none() {
            return Err(DropReason::NotReady);
        }
        let key_id = Some(header.key_id());
        if self.primary_key_id() == key_id {
            Ok(Slot::Primary)
        } else if self.secondary_key_id() == key_id {
            Ok(Slot::Secondary)
        } else if self.lame_duck_key_id() == key_id {
            Ok(Slot::LameDuck)
        } else {
            Err(DropReason::UnknownKey)
        }
    }

    /// Keeps the drop counts of a discarded key.
    fn retire(&mut self, channel: &DataChannel) {
        self.drops = self.drops.merged(channel.drops());
    }

    fn retire_secondary(&mut self) {
        if let Some(old) = self.secondary.take() {
            self.retire(&old);
        }
    }

    fn retire_lame_duck(&mut self) {
        if let Some(old) = self.lame_duck.take() {
            self.retire(&old.channel);
        }
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Primary,
    Secondary,
    LameDuck,
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys")
            .field("primary", &self.primary)
            .field("secondary", &self.secondary)
            .field("lame_duck", &self.lame_duck_key_id())
            .field(
                "lame_duck_expires",
                &self.lame_duck.as_ref().map(|d| d.expires),
            )
            .field("drops", &self.drops())
            .finish()
    }
}
