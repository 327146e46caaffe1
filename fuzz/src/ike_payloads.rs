//! `ike_payloads`: the bytes go through every IKE wire decoder of erebus-ipsec.
//!
//! - the whole input as an IKE message: [`Header::parse`], then [`split_chain`] of its
//!   payloads, each payload's body decoded by its own type's decoder;
//! - the input as a bare chain whose first payload type is the first byte;
//! - the input (after one type byte) as the body of every payload kind: [`decode_sa`],
//!   [`decode_ts`], [`decode_cp`], [`decode_delete`], [`Notify::parse`],
//!   [`IkeId::parse`], [`EapPacket::parse`].
//!
//! What decodes is encoded again and decoded once more: the second decoding must equal the
//! first (the encoders are what the session sends, so they must keep what they were given).

use erebus_ipsec::cert::IkeId;
use erebus_ipsec::eap::EapPacket;
use erebus_ipsec::wire::{
    self, HEADER_LEN, Header, Notify, decode_cp, decode_delete, decode_sa, decode_ts, payload,
    split_chain,
};

/// The harness.
pub fn run(data: &[u8]) {
    if let Ok(header) = Header::parse(data) {
        assert_eq!(header.length as usize, data.len());
        let mut again = Vec::new();
        header.write(&mut again);
        assert_eq!(
            Header::parse(&[&again[..], &data[HEADER_LEN..]].concat()),
            Ok(header)
        );
        chain(
            header.next_payload,
            data.get(HEADER_LEN..).unwrap_or_default(),
        );
    }
    if let Some((&first, rest)) = data.split_first() {
        chain(first, rest);
        body(first, rest);
        for kind in [
            payload::SA,
            payload::TSI,
            payload::CP,
            payload::DELETE,
            payload::NOTIFY,
            payload::IDR,
            payload::EAP,
        ] {
            if kind != first {
                body(kind, rest);
            }
        }
    }
}

/// Splits a chain and decodes each payload.
fn chain(first: u8, bytes: &[u8]) {
    let Ok(payloads) = split_chain(first, bytes) else {
        return;
    };
    let mut total = 0;
    for (i, p) in payloads.iter().enumerate() {
        total += p.body.len() + 4;
        if matches!(p.kind, payload::SK | payload::SKF) {
            assert_eq!(i + 1, payloads.len(), "a payload after SK");
        }
        body(p.kind, p.body);
    }
    if payloads
        .last()
        .is_none_or(|p| !matches!(p.kind, payload::SK | payload::SKF))
    {
        assert_eq!(total, bytes.len(), "the chain does not cover the bytes");
    }
}

/// Decodes one payload body of type `kind` and checks that encoding keeps it.
fn body(kind: u8, body: &[u8]) {
    match kind {
        payload::SA => {
            if let Ok(proposals) = decode_sa(body) {
                let encoded = wire::encode_sa(&proposals);
                assert_eq!(
                    decode_sa(&encoded).as_ref(),
                    Ok(&proposals),
                    "SA round trip"
                );
            }
        }
        payload::TSI | payload::TSR => {
            if let Ok(selectors) = decode_ts(body) {
                if selectors.len() <= usize::from(u8::MAX) {
                    let encoded = wire::encode_ts(&selectors);
                    assert_eq!(
                        decode_ts(&encoded).as_ref(),
                        Ok(&selectors),
                        "TS round trip"
                    );
                }
                for ts in &selectors {
                    let _ = ts.contains(ts.start);
                }
            }
        }
        payload::CP => {
            if let Ok((cfg_type, attributes)) = decode_cp(body) {
                let owned: Vec<(u16, Vec<u8>)> =
                    attributes.iter().map(|(k, v)| (*k, v.to_vec())).collect();
                let encoded = wire::encode_cp(cfg_type, &owned);
                assert_eq!(
                    decode_cp(&encoded),
                    Ok((cfg_type, attributes.clone())),
                    "CP round trip"
                );
            }
        }
        payload::DELETE => {
            if let Ok((protocol, spis)) = decode_delete(body) {
                let same_len = spis.windows(2).all(|w| w[0].len() == w[1].len());
                let short = spis.first().is_none_or(|s| s.len() <= usize::from(u8::MAX));
                // (A Delete of zero-length SPIs may list 65535 of them: decoded once, not three times.)
                if same_len && short && !spis.is_empty() && spis.len() <= 1024 {
                    let refs: Vec<&[u8]> = spis.iter().map(Vec::as_slice).collect();
                    let encoded = wire::encode_delete(protocol, &refs);
                    assert_eq!(
                        decode_delete(&encoded),
                        Ok((protocol, spis.clone())),
                        "Delete round trip"
                    );
                }
            }
        }
        payload::NOTIFY => {
            if let Ok(n) = Notify::parse(body) {
                let _ = wire::notify::name(n.kind);
                let encoded = Notify::encode(n.protocol, n.spi, n.kind, n.data);
                assert_eq!(Notify::parse(&encoded), Ok(n), "Notify round trip");
            }
        }
        payload::IDI | payload::IDR => {
            if let [id_type, _, _, _, data @ ..] = body {
                ike_id(*id_type, data);
            }
            if let Some((&id_type, data)) = body.split_first() {
                ike_id(id_type, data);
            }
        }
        payload::EAP => {
            if let Ok(packet) = EapPacket::parse(body)
                && let Some(eap_type) = packet.eap_type
                && let Ok(encoded) =
                    EapPacket::encode(packet.code, packet.identifier, eap_type, packet.type_data)
            {
                assert_eq!(EapPacket::parse(&encoded), Ok(packet), "EAP round trip");
            }
        }
        _ => {}
    }
}

/// An ID payload's identity: it parses to the same type and data, matches itself, and its
/// text reads back as a configured identity.
fn ike_id(id_type: u8, data: &[u8]) {
    let Ok(id) = IkeId::parse(id_type, data) else {
        return;
    };
    assert_eq!(id.id_type(), id_type, "{id:?}");
    assert_eq!(id.data(), data, "{id:?}");
    assert!(id.matches(&id), "{id:?} does not match itself");
    let text = id.to_string();
    let _ = IkeId::from_config(&text);
    let _ = erebus_ipsec::session::id_payload(&text);
}
