//! A sans-IO stand-in for an OpenVPN 2.6 server, for tests: the reliability layer, rustls as
//! the TLS server with the test PKI, the server's side of key method 2, a PUSH_REPLY, data keys
//! from the TLS exporter (or the legacy PRF) and an AEAD data channel. It follows the 2.6
//! server's visible behaviour where the client depends on it, and nothing else.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use erebus_sansio::{Instant, Seed, SeededRng, UnixTime};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::control::keymethod::{ClientKeySource, ServerKeySource};
use crate::control::prf::{EKM_LABEL, Key2};
use crate::control::push::split_messages;
use crate::control::reliable::{MAX_PIGGYBACK_ACKS, Reliable};
use crate::control::wrap::{ControlWrap, ReplayId};
use crate::data::inband::{self, Payload};
use crate::data::{DataChannel, DataCipher, DataConfig, DataKeys, Key2Role};
use crate::packet::{
    AckList, ControlBody, ControlPacket, KeyId, Opcode, OpcodeByte, PeerId, SessionId,
};
use crate::replay::{PacketId, ReplayConfig, ReplayWindow};
use crate::tls::TlsProvider;

pub(crate) const CA: &[u8] = include_bytes!("../../../../testvectors/tls-pki/ca.crt");
pub(crate) const OTHER_CA: &[u8] = include_bytes!("../../../../testvectors/tls-pki/other-ca.crt");
pub(crate) const SERVER_CERT: &[u8] = include_bytes!("../../../../testvectors/tls-pki/server.crt");
pub(crate) const SERVER_KEY: &[u8] = include_bytes!("../../../../testvectors/tls-pki/server.key");
pub(crate) const CLIENT_CERT: &[u8] = include_bytes!("../../../../testvectors/tls-pki/client.crt");
pub(crate) const CLIENT_KEY: &[u8] =
    include_bytes!("../../../../testvectors/tls-pki/client.pkcs1.key");
/// A wall time inside the test certificates' validity.
pub(crate) const NOW_UNIX: u64 = 1_796_083_200;

/// How the fake server behaves.
#[derive(Clone, Debug)]
pub(crate) struct ServerBehaviour {
    /// Control-channel wrapping, server side.
    pub(crate) wrap: ControlWrap,
    /// Require and check a client certificate.
    pub(crate) require_client_cert: bool,
    /// Push right after the key exchange (a 2.6 server with `IV_PROTO` bit 2), or only on
    /// `PUSH_REQUEST`.
    pub(crate) push_unasked: bool,
    /// Never answer `PUSH_REQUEST`.
    pub(crate) ignore_push_requests: bool,
    /// The options after `PUSH_REPLY,`.
    pub(crate) push: String,
    /// The data cipher the push names (must agree with `push`).
    pub(crate) cipher: DataCipher,
    /// The pushed peer id, if any (must agree with `push`).
    pub(crate) peer_id: Option<u32>,
    /// Keys from the TLS exporter (`tls-ekm` in the push) or the legacy PRF.
    pub(crate) ekm: bool,
    /// Answer the key exchange with `AUTH_FAILED,<reason>` instead of a push.
    pub(crate) auth_failed: Option<String>,
    /// After a renegotiation, keep sending on the old key for this long (a 2.6 server waits
    /// about a minute).
    pub(crate) switch_delay: Duration,
    /// The options string in the server's key-method message.
    pub(crate) options: String,
}

impl ServerBehaviour {
    /// tls-crypt with `key`, AES-256-GCM, EKM, peer-id 0, pushing unasked.
    pub(crate) fn tls_crypt(key: &[u8; 256]) -> Self {
        Self {
            wrap: ControlWrap::Crypt(crate::control::wrap::TlsCrypt::server(key)),
            require_client_cert: true,
            push_unasked: true,
            ignore_push_requests: false,
            push: "dhcp-option DNS 10.8.0.1,route-gateway 10.8.0.1,topology subnet,ping 10,\
                   ping-restart 60,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,\
                   protocol-flags cc-exit tls-ekm,tun-mtu 1500"
                .into(),
            cipher: DataCipher::Aead(crate::data::AeadAlg::Aes256Gcm),
            peer_id: Some(0),
            ekm: true,
            auth_failed: None,
            switch_delay: Duration::from_secs(5),
            options: "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,\
                      keysize 128,key-method 2,tls-server"
                .into(),
        }
    }
}

/// One key id on the server.
struct ServerKey {
    key_id: KeyId,
    reliable: Reliable,
    tls: ServerConnection,
    tls_out: Vec<u8>,
    plaintext: Vec<u8>,
    client_keys: Option<ClientKeySource>,
    server_keys: ServerKeySource,
    key_method_sent: bool,
    pushed: bool,
    data_installed: bool,
}

/// What the client told the server in its key-method message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientHello {
    pub(crate) options: String,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) peer_info: String,
}

/// The fake server. Feed it client packets with [`FakeServer::receive`], take its packets
/// with [`FakeServer::poll_transmit`].
pub(crate) struct FakeServer {
    pub(crate) behaviour: ServerBehaviour,
    tls_config: Arc<ServerConfig>,
    rng: SeededRng,
    seed: Seed,
    sid: SessionId,
    client_sid: Option<SessionId>,
    replay_sent: u32,
    replay_in: ReplayWindow,
    keys: Vec<ServerKey>,
    pub(crate) data: DataKeys,
    switch_at: Option<Instant>,
    outbox: VecDeque<Vec<u8>>,
    /// Inner packets received over the data channel.
    pub(crate) inner: Vec<Vec<u8>>,
    /// Key ids of the inner packets received.
    pub(crate) inner_key_ids: Vec<u8>,
    /// Control messages received (`PUSH_REQUEST`, `EXIT`).
    pub(crate) messages: Vec<String>,
    /// Every key-method message received.
    pub(crate) hellos: Vec<ClientHello>,
    pub(crate) pings_received: u32,
    pub(crate) packets_dropped: u32,
    now: Instant,
}

fn server_tls_config(provider: &TlsProvider, require_client_cert: bool) -> Arc<ServerConfig> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(SERVER_CERT)
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).unwrap();
    let builder = ServerConfig::builder_with_details(
        Arc::clone(provider.crypto()),
        Arc::new(provider.wall_time().clone()),
    )
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .unwrap();
    let builder = if require_client_cert {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(CA).unwrap())
            .unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(provider.crypto()),
        )
        .build()
        .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

/// Reads an OpenVPN string (u16 length with NUL) at `*pos`.
fn read_string(buf: &[u8], pos: &mut usize) -> Option<String> {
    let len = usize::from(u16::from_be_bytes(
        buf.get(*pos..*pos + 2)?.try_into().ok()?,
    ));
    let bytes = buf.get(*pos + 2..*pos + 2 + len)?;
    *pos += 2 + len;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

/// Parses the client's key-method-2 message; returns it and its length.
fn parse_client_message(buf: &[u8]) -> Option<(ClientKeySource, ClientHello, usize)> {
    if buf.get(..5)? != [0, 0, 0, 0, 2] {
        return None;
    }
    let mut source = ClientKeySource {
        pre_master: [0; 48],
        random1: [0; 32],
        random2: [0; 32],
    };
    source.pre_master.copy_from_slice(buf.get(5..53)?);
    source.random1.copy_from_slice(buf.get(53..85)?);
    source.random2.copy_from_slice(buf.get(85..117)?);
    let mut pos = 117;
    let hello = ClientHello {
        options: read_string(buf, &mut pos)?,
        username: read_string(buf, &mut pos)?,
        password: read_string(buf, &mut pos)?,
        peer_info: read_string(buf, &mut pos)?,
    };
    Some((source, hello, pos))
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    if text.is_empty() {
        out.extend_from_slice(&[0, 0]);
        return;
    }
    out.extend_from_slice(&u16::try_from(text.len() + 1).unwrap().to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

impl FakeServer {
    pub(crate) fn new(behaviour: ServerBehaviour, seed: &Seed, now: Instant) -> Self {
        let provider = TlsProvider::new(&seed.child("server.tls"));
        provider.wall_time().set(UnixTime::from_secs(NOW_UNIX));
        let tls_config = server_tls_config(&provider, behaviour.require_client_cert);
        let mut rng = seed.child("server").rng();
        let sid = SessionId(rng.array());
        Self {
            behaviour,
            tls_config,
            rng,
            seed: seed.child("server.data"),
            sid,
            client_sid: None,
            replay_sent: 0,
            replay_in: ReplayWindow::new(ReplayConfig::default()),
            keys: Vec::new(),
            data: DataKeys::new(),
            switch_at: None,
            outbox: VecDeque::new(),
            inner: Vec::new(),
            inner_key_ids: Vec::new(),
            messages: Vec::new(),
            hellos: Vec::new(),
            pings_received: 0,
            packets_dropped: 0,
            now,
        }
    }

    fn new_key(&mut self, key_id: KeyId, reset: Opcode, now: Instant) -> ServerKey {
        let mut reliable = Reliable::default();
        reliable.queue(reset, Vec::new(), now);
        ServerKey {
            key_id,
            reliable,
            tls: ServerConnection::new(Arc::clone(&self.tls_config)).unwrap(),
            tls_out: Vec::new(),
            plaintext: Vec::new(),
            client_keys: None,
            server_keys: ServerKeySource {
                random1: self.rng.array(),
                random2: self.rng.array(),
            },
            key_method_sent: false,
            pushed: false,
            data_installed: false,
        }
    }

    /// The current key id of the control channel (the newest key state).
    pub(crate) fn control_key_id(&self) -> Option<KeyId> {
        self.keys.last().map(|k| k.key_id)
    }

    /// Starts a renegotiation from the server side.
    pub(crate) fn renegotiate(&mut self, now: Instant) {
        let Some(current) = self.keys.last() else {
            return;
        };
        let key_id = current.key_id.next();
        let key = self.new_key(key_id, Opcode::ControlSoftResetV1, now);
        self.keys.push(key);
    }

    /// Takes one packet from the client.
    pub(crate) fn receive(&mut self, now: Instant, packet: &[u8]) {
        self.now = self.now.max(now);
        let mut packet = packet.to_vec();
        let Some(&first) = packet.first() else {
            return;
        };
        let Ok(op) = OpcodeByte::parse(first) else {
            self.packets_dropped += 1;
            return;
        };
        if op.opcode.is_data() {
            return self.receive_data(now, &mut packet);
        }
        let Ok((replay, len)) = self.behaviour.wrap.unwrap(&mut packet) else {
            self.packets_dropped += 1;
            return;
        };
        let Ok(control) = ControlPacket::parse(&packet[..len]) else {
            self.packets_dropped += 1;
            return;
        };
        if let Some(r) = replay {
            let pid = PacketId {
                id: r.packet_id,
                time: r.time,
            };
            if self.replay_in.check(pid, now).is_err() {
                self.packets_dropped += 1;
                return;
            }
            self.replay_in.commit(pid, now);
        }
        let opcode = control.op.opcode;
        if opcode == Opcode::ControlHardResetClientV2 && self.client_sid.is_none() {
            self.client_sid = Some(control.session_id);
            let key = self.new_key(KeyId::ZERO, Opcode::ControlHardResetServerV2, now);
            self.keys.push(key);
        }
        if self.client_sid != Some(control.session_id) {
            self.packets_dropped += 1;
            return;
        }
        if !control.body.acks.is_empty() && control.body.remote_session_id != Some(self.sid) {
            self.packets_dropped += 1;
            return;
        }
        let key_id = control.op.key_id;
        if opcode == Opcode::ControlSoftResetV1
            && !self.keys.iter().any(|k| k.key_id == key_id)
            && self.keys.last().is_some_and(|k| k.key_id.next() == key_id)
        {
            let key = self.new_key(key_id, Opcode::ControlSoftResetV1, now);
            self.keys.push(key);
        }
        let Some(index) = self.keys.iter().position(|k| k.key_id == key_id) else {
            self.packets_dropped += 1;
            return;
        };
        let key = &mut self.keys[index];
        key.reliable.acknowledge(control.body.acks.as_slice(), now);
        if let Some(id) = control.body.message_id {
            key.reliable.receive(id, opcode, control.body.payload);
        }
        while let Some((opcode, payload)) = key.reliable.take_in_order() {
            if opcode == Opcode::ControlV1 {
                let mut rest = &payload[..];
                while !rest.is_empty() {
                    key.tls.read_tls(&mut rest).unwrap();
                    if key.tls.process_new_packets().is_err() {
                        break;
                    }
                }
            }
        }
        self.progress(index, now);
    }

    fn receive_data(&mut self, now: Instant, packet: &mut [u8]) {
        let key_id = packet[0] & 7;
        let Ok(range) = self.data.open(now, packet) else {
            self.packets_dropped += 1;
            return;
        };
        if self.data.secondary_key_id().map(KeyId::get) == Some(key_id) {
            // The client moved to the new key: follow at once.
            self.switch_at = Some(now);
        }
        match inband::classify(&packet[range.clone()]) {
            Payload::Ping => self.pings_received += 1,
            Payload::Occ(_) => {}
            Payload::Packet => {
                self.inner.push(packet[range].to_vec());
                self.inner_key_ids.push(key_id);
            }
        }
    }

    fn progress(&mut self, index: usize, now: Instant) {
        let behaviour = self.behaviour.clone();
        let mut install = None;
        let mut messages = Vec::new();
        {
            let key = &mut self.keys[index];
            let mut buf = Vec::new();
            let _ = key.tls.reader().read_to_end(&mut buf);
            key.plaintext.extend_from_slice(&buf);
            if key.client_keys.is_none()
                && let Some((source, hello, used)) = parse_client_message(&key.plaintext)
            {
                key.plaintext.drain(..used);
                key.client_keys = Some(source);
                self.hellos.push(hello);
            }
            if key.client_keys.is_some() {
                messages = split_messages(&mut key.plaintext);
            }
            if key.client_keys.is_some() && !key.key_method_sent && !key.tls.is_handshaking() {
                let mut out = vec![0, 0, 0, 0, 2];
                out.extend_from_slice(&key.server_keys.random1);
                out.extend_from_slice(&key.server_keys.random2);
                write_string(&mut out, &behaviour.options);
                out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                key.tls.writer().write_all(&out).unwrap();
                key.key_method_sent = true;
                if key.key_id != KeyId::ZERO {
                    install = Some(index);
                } else if let Some(reason) = &behaviour.auth_failed {
                    let text = format!("AUTH_FAILED,{reason}\0");
                    key.tls.writer().write_all(text.as_bytes()).unwrap();
                } else if behaviour.push_unasked {
                    install = Some(index);
                }
            }
        }
        for message in messages {
            if message == "PUSH_REQUEST"
                && !self.keys[index].pushed
                && self.keys[index].key_method_sent
                && behaviour.auth_failed.is_none()
                && !behaviour.ignore_push_requests
            {
                install = Some(index);
            }
            self.messages.push(message);
        }
        if let Some(index) = install {
            self.install_keys(index, now);
        }
        let key = &mut self.keys[index];
        while key.tls.wants_write() {
            key.tls.write_tls(&mut key.tls_out).unwrap();
        }
        while !key.tls_out.is_empty() && key.reliable.can_queue() {
            let take = key.tls_out.len().min(1100);
            let chunk: Vec<u8> = key.tls_out.drain(..take).collect();
            key.reliable.queue(Opcode::ControlV1, chunk, now);
        }
    }

    /// Derives the data key of key state `index` and, for key 0, pushes.
    fn install_keys(&mut self, index: usize, now: Instant) {
        let behaviour = self.behaviour.clone();
        let (client_sid, server_sid) = (self.client_sid.unwrap_or_default(), self.sid);
        let key = &mut self.keys[index];
        if key.data_installed {
            return;
        }
        key.data_installed = true;
        let key2 = if behaviour.ekm {
            Key2::from_bytes(
                key.tls
                    .export_keying_material([0u8; 256], EKM_LABEL, None)
                    .unwrap(),
            )
        } else {
            Key2::from_legacy_prf(
                key.client_keys.as_ref().unwrap(),
                &key.server_keys,
                client_sid.0,
                server_sid.0,
            )
        };
        let mut config = DataConfig::new(behaviour.cipher);
        config.peer_id = behaviour.peer_id.and_then(PeerId::new);
        let channel = DataChannel::from_key2(
            key2.as_bytes(),
            Key2Role::Server,
            key.key_id,
            &config,
            &self.seed,
        )
        .unwrap();
        if key.key_id == KeyId::ZERO {
            key.pushed = true;
            let text = format!("PUSH_REPLY,{}\0", behaviour.push);
            key.tls.writer().write_all(text.as_bytes()).unwrap();
            self.data.set_primary(channel).unwrap();
        } else {
            self.data.install_secondary(channel).unwrap();
            self.switch_at = Some(now + behaviour.switch_delay);
        }
    }

    /// Sends an inner packet (or a ping when `payload` is the ping magic) to the client;
    /// returns false before there are keys.
    pub(crate) fn send_data(&mut self, now: Instant, payload: &[u8]) -> bool {
        self.handle_timeout(now);
        let headroom = 64;
        let mut buf = vec![0u8; headroom + payload.len() + 32];
        buf[headroom..headroom + payload.len()].copy_from_slice(payload);
        match self
            .data
            .seal(now, &mut buf, headroom..headroom + payload.len())
        {
            Ok(range) => {
                self.outbox.push_back(buf[range].to_vec());
                true
            }
            Err(_) => false,
        }
    }

    /// Seals an inner packet and returns it instead of sending it.
    pub(crate) fn seal_data(&mut self, now: Instant, payload: &[u8]) -> Vec<u8> {
        assert!(self.send_data(now, payload));
        self.outbox.pop_back().unwrap()
    }

    /// Sends a control message (`RESTART`, `HALT`, ...) on the newest key.
    pub(crate) fn send_message(&mut self, now: Instant, text: &str) {
        let index = self.keys.len() - 1;
        let key = &mut self.keys[index];
        key.tls
            .writer()
            .write_all(format!("{text}\0").as_bytes())
            .unwrap();
        self.progress(index, now);
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.switch_at.is_some_and(|at| now >= at) {
            self.switch_at = None;
            if self.data.secondary_key_id().is_some() {
                self.data.promote(now + Duration::from_secs(3600)).unwrap();
            }
        }
        // Forget key states whose successor finished.
        while self.keys.len() > 1 && self.keys[1].data_installed {
            self.keys.remove(0);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.switch_at;
        for key in &self.keys {
            let candidates = [
                key.reliable.poll_timeout(),
                key.reliable.has_pending_acks().then_some(self.now),
            ];
            for at in candidates.into_iter().flatten() {
                next = Some(next.map_or(at, |n: Instant| n.min(at)));
            }
        }
        if !self.outbox.is_empty() {
            next = Some(self.now);
        }
        next
    }

    /// The next packet for the client.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.now = self.now.max(now);
        if let Some(packet) = self.outbox.pop_front() {
            return Some(packet);
        }
        let client_sid = self.client_sid?;
        for key in &mut self.keys {
            let message = key.reliable.next_due(now);
            let max = match message {
                Some(_) => MAX_PIGGYBACK_ACKS,
                None if key.reliable.has_pending_acks() => AckList::MAX,
                None => continue,
            };
            let acks = key.reliable.ack_list(max);
            let packet = ControlPacket {
                op: OpcodeByte {
                    opcode: message.map_or(Opcode::AckV1, |m| m.opcode),
                    key_id: key.key_id,
                },
                session_id: self.sid,
                body: ControlBody {
                    acks,
                    remote_session_id: (!acks.is_empty()).then_some(client_sid),
                    message_id: message.map(|m| m.message_id),
                    payload: message.map_or(&[][..], |m| m.payload),
                },
            };
            let mut buf = vec![0u8; packet.encoded_len() + 128];
            let len = packet.emit(&mut buf).unwrap();
            self.replay_sent += 1;
            let replay = ReplayId {
                packet_id: self.replay_sent,
                time: NOW_UNIX as u32,
            };
            let len = self.behaviour.wrap.wrap(replay, &mut buf, len).unwrap();
            buf.truncate(len);
            if let Some(id) = message.map(|m| m.message_id) {
                key.reliable.sent(id, now);
            }
            key.reliable.acks_sent(&acks);
            return Some(buf);
        }
        None
    }
}
