//! An IPsec connection as erebus uses it: what a swanctl.conf `connections.<name>` block and its
//! `secrets` say, with every file already read. [`crate::swanctl`] builds it from the text.

use core::fmt;
use core::time::Duration;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use erebus_sansio::tunnel::IpNet;
use zeroize::Zeroizing;

use crate::proposal::Proposal;

/// Secret bytes (a PSK, a password, a key file's contents): zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// How one side authenticates (`local.auth` / `remote.auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// A pre-shared key (`psk`).
    Psk,
    /// A certificate and its private key (`pubkey`, `rsa`, `ecdsa`, `ed25519`).
    Pubkey,
    /// EAP-MSCHAPv2 (`eap-mschapv2`), the client's side only.
    EapMschapv2,
}

/// The local (client) side of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSide {
    /// How we authenticate.
    pub auth: AuthMethod,
    /// Our IKE identity (`id`); `None`: our address, as strongSwan does.
    pub id: Option<String>,
    /// The EAP identity (`eap_id`); `None`: the IKE identity.
    pub eap_id: Option<String>,
    /// Our certificates (`certs`), as DER or PEM bytes, first is ours.
    pub certs: Vec<Secret>,
    /// Our private key for `pubkey`, as PEM or DER bytes, from `secrets` or the
    /// swanctl directories.
    pub private_key: Option<Secret>,
}

/// The remote (server) side of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSide {
    /// How the server authenticates.
    pub auth: AuthMethod,
    /// The identity the server must prove (`id`); `None`: any (`%any`).
    pub id: Option<String>,
    /// Trust anchors for the server's certificate (`cacerts`), PEM or DER bytes.
    pub cacerts: Vec<Secret>,
}

/// A CHILD_SA (`children.<name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildConfig {
    /// Its name, for messages.
    pub name: String,
    /// The networks to reach (`remote_ts`); empty means everything (`0.0.0.0/0`).
    pub remote_ts: Vec<IpNet>,
    /// ESP proposals, in order; swanctl's default when the file has none.
    pub esp_proposals: Vec<Proposal>,
    /// Rekey the CHILD_SA after this long (`rekey_time`, default 1 h; zero: never).
    pub rekey_time: Duration,
    /// Hard lifetime (`life_time`, default `rekey_time` + 10 %).
    pub life_time: Duration,
    /// The anti-replay window of inbound ESP, in packets (`replay_window`, default
    /// [`DEFAULT_REPLAY_WINDOW`]).
    pub replay_window: u32,
}

/// The anti-replay window when the configuration sets none: libipsec's 128 packets, more
/// than strongSwan's kernel default of 32, since a user-space path reorders more.
pub const DEFAULT_REPLAY_WINDOW: u32 = 128;

/// One connection of a swanctl.conf, with its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The connection's name in `connections`.
    pub name: String,
    /// Server host names or addresses (`remote_addrs`), tried in order.
    pub remote_addrs: Vec<String>,
    /// The server's IKE port (`remote_port`, default 500). 4500 starts IKE there directly.
    pub remote_port: u16,
    /// Virtual IPs to request (`vips`); `0.0.0.0` asks the server for any.
    pub vips: Vec<Ipv4Addr>,
    /// IKE proposals, in order.
    pub proposals: Vec<Proposal>,
    /// The client's side.
    pub local: LocalSide,
    /// The server's side.
    pub remote: RemoteSide,
    /// The CHILD_SAs; the first is the one erebus establishes.
    pub children: Vec<ChildConfig>,
    /// Send a liveness check after this long without traffic from the server (`dpd_delay`;
    /// zero: never).
    pub dpd_delay: Duration,
    /// Rekey the IKE_SA after this long (`rekey_time`, default 4 h; zero: never).
    pub rekey_time: Duration,
    /// Keep trying a server this many times (`keyingtries`; 0: for ever).
    pub keyingtries: u32,
    /// The PSK for our identity pair, from `secrets { ike-* }`.
    pub psk: Option<Secret>,
    /// The EAP password for our EAP identity, from `secrets { eap-* }`.
    pub eap_password: Option<Secret>,
}

/// A warning for an option that is accepted but ignored, naming the file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The file the option is in (the configuration or an included file).
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// The option's dotted path, such as `connections.home.mobike`.
    pub key: String,
    /// Why it is ignored.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: line {}: {}: {}",
            self.file.display(),
            self.line,
            self.key,
            self.message
        )
    }
}
