//! Server certificate checks, AUTH signatures and our own signing, against the certificates and
//! AUTH payloads of the strongSwan captures (testvectors/ipsec/README.md).

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::net::Ipv4Addr;

use erebus_ipsec::cert::{CertError, IkeId, LocalSigner, ServerCheck, VerifiedPeer, ca_keyid};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../../testvectors/ipsec/", $name))
    };
}
const ECDSA_CA: &[u8] = fixture!("strongswan-ecdsa-ca.crt");
const ECDSA_SERVER: &[u8] = fixture!("strongswan-ecdsa-server.crt");
const RSA_CA: &[u8] = fixture!("strongswan-rsa-ca.crt");
const RSA_SERVER: &[u8] = fixture!("strongswan-rsa-server.crt");
const ED25519_CA: &[u8] = fixture!("strongswan-ed25519-ca.crt");
const ED25519_SERVER: &[u8] = fixture!("strongswan-ed25519-server.crt");

const P256_CERT: &[u8] = fixture!("test-only-client-p256.crt");
const P256_KEY: &[u8] = fixture!("test-only-client-p256.key");
const ED25519_CERT: &[u8] = fixture!("test-only-client-ed25519.crt");
const ED25519_KEY: &[u8] = fixture!("test-only-client-ed25519.key");
const RSA2048_CERT: &[u8] = fixture!("test-only-client-rsa2048.crt");
const RSA2048_KEY: &[u8] = fixture!("test-only-client-rsa2048.key");
const CODESIGNING_CERT: &[u8] = fixture!("test-only-codesigning-rsa2048.crt");

/// 2027-01-01 00:00:00 UTC: inside the captures' validity (2026-11-21 to 2036-11-18).
const NOW: u64 = 1_798_761_600;
/// 2037-01-01: after it.
const LATER: u64 = 2_114_380_800;
/// 2026-01-01: before it.
const EARLIER: u64 = 1_767_225_600;

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn der(pem: &[u8]) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

fn server_id() -> IkeId {
    IkeId::Fqdn("vpn.example.test".to_owned())
}

fn verified(ca: &[u8], server: &[u8]) -> VerifiedPeer {
    ServerCheck::new(&[ca], None)
        .unwrap()
        .verify(&der(server), &[], &server_id(), NOW)
        .unwrap()
}

#[test]
fn strongswan_server_certificates_verify() {
    for (ca, server) in [
        (ECDSA_CA, ECDSA_SERVER),
        (RSA_CA, RSA_SERVER),
        (ED25519_CA, ED25519_SERVER),
    ] {
        let peer = verified(ca, server);
        assert_eq!(
            peer.subject(),
            "C=XX, O=strongSwan test peer, CN=vpn.example.test"
        );
        assert_eq!(peer.certificate_der(), der(server));
    }
}

#[test]
fn ca_given_as_der_works_too() {
    let check = ServerCheck::new(&[&der(ECDSA_CA)], None).unwrap();
    check
        .verify(&der(ECDSA_SERVER), &[], &server_id(), NOW)
        .unwrap();
}

#[test]
fn several_cas_in_one_pem_and_in_several_files() {
    let both = [RSA_CA, ECDSA_CA].concat();
    let check = ServerCheck::new(&[&both], None).unwrap();
    check
        .verify(&der(ECDSA_SERVER), &[], &server_id(), NOW)
        .unwrap();
    check
        .verify(&der(RSA_SERVER), &[], &server_id(), NOW)
        .unwrap();
    let check = ServerCheck::new(&[b"junk", RSA_CA, ED25519_CA], None).unwrap();
    check
        .verify(&der(ED25519_SERVER), &[], &server_id(), NOW)
        .unwrap();
}

#[test]
fn no_readable_ca_is_an_error() {
    assert_eq!(
        ServerCheck::new(&[], None).unwrap_err(),
        CertError::NoCaCertificate
    );
    assert_eq!(
        ServerCheck::new(&[b"not a certificate"], None).unwrap_err(),
        CertError::NoCaCertificate
    );
}

#[test]
fn the_server_must_name_the_identity_it_sent() {
    let check = ServerCheck::new(&[ECDSA_CA], None).unwrap();
    let server = der(ECDSA_SERVER);
    let error = check
        .verify(&server, &[], &IkeId::Fqdn("other.example.test".into()), NOW)
        .unwrap_err();
    assert!(matches!(error, CertError::IdNotInCertificate { .. }));
    assert_eq!(
        error.to_string(),
        "the server's certificate (C=XX, O=strongSwan test peer, CN=vpn.example.test) does not \
         name other.example.test"
    );
    // The IP address SAN, the subject DN, case-insensitive names.
    for id in [
        IkeId::Ipv4(Ipv4Addr::new(198, 51, 100, 1)),
        IkeId::from_config("C=XX, O=strongSwan test peer, CN=vpn.example.test"),
        IkeId::Fqdn("VPN.Example.Test".into()),
    ] {
        check.verify(&server, &[], &id, NOW).unwrap();
    }
    for id in [
        IkeId::Ipv4(Ipv4Addr::new(198, 51, 100, 2)),
        IkeId::from_config("C=XX, O=strongSwan test peer, CN=other.example.test"),
        IkeId::Rfc822("vpn@example.test".into()),
        IkeId::KeyId(vec![1, 2, 3]),
        // A `*` from the wire is no wildcard.
        IkeId::from_config("C=XX, O=strongSwan test peer, CN=*"),
    ] {
        assert!(
            matches!(
                check.verify(&server, &[], &id, NOW),
                Err(CertError::IdNotInCertificate { .. })
            ),
            "{id} was accepted"
        );
    }
}

#[test]
fn the_identity_must_satisfy_remote_id() {
    let server = der(ECDSA_SERVER);
    let expected = IkeId::from_config("vpn.example.test");
    let check = ServerCheck::new(&[ECDSA_CA], Some(&expected)).unwrap();
    check.verify(&server, &[], &server_id(), NOW).unwrap();
    // strongSwan's default IDr is the subject DN: the certificate names remote.id too.
    let dn = IkeId::from_config("C=XX, O=strongSwan test peer, CN=vpn.example.test");
    check.verify(&server, &[], &dn, NOW).unwrap();
    // A wildcard remote.id.
    let check = ServerCheck::new(&[ECDSA_CA], Some(&IkeId::from_config("*.example.test"))).unwrap();
    check.verify(&server, &[], &server_id(), NOW).unwrap();

    // The certificate is valid for what the server sent, but that is not who we want.
    let check =
        ServerCheck::new(&[ECDSA_CA], Some(&IkeId::from_config("other.example.test"))).unwrap();
    let error = check.verify(&server, &[], &server_id(), NOW).unwrap_err();
    assert!(matches!(error, CertError::IdMismatch { .. }), "{error}");
    assert!(error.to_string().contains("other.example.test"), "{error}");
    let check = ServerCheck::new(
        &[ECDSA_CA],
        Some(&IkeId::from_config(
            "C=XX, O=strongSwan test peer, CN=other",
        )),
    )
    .unwrap();
    assert!(matches!(
        check.verify(&server, &[], &dn, NOW),
        Err(CertError::IdMismatch { .. })
    ));
}

#[test]
fn wrong_ca_is_refused() {
    for (ca, server) in [
        (RSA_CA, ECDSA_SERVER),
        (ECDSA_CA, RSA_SERVER),
        (ECDSA_CA, ED25519_SERVER),
    ] {
        let error = ServerCheck::new(&[ca], None)
            .unwrap()
            .verify(&der(server), &[], &server_id(), NOW)
            .unwrap_err();
        assert!(matches!(error, CertError::NotSignedByCa { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("is not signed by a configured CA (cacerts)"),
            "{error}"
        );
    }
}

#[test]
fn validity_period_is_enforced() {
    let check = ServerCheck::new(&[ECDSA_CA], None).unwrap();
    let error = check
        .verify(&der(ECDSA_SERVER), &[], &server_id(), LATER)
        .unwrap_err();
    assert!(matches!(error, CertError::Expired { .. }), "{error}");
    assert!(
        error.to_string().contains("expired on 2036-11-18"),
        "{error}"
    );
    let error = check
        .verify(&der(ECDSA_SERVER), &[], &server_id(), EARLIER)
        .unwrap_err();
    assert!(matches!(error, CertError::NotValidYet { .. }), "{error}");
    assert!(error.to_string().contains("check the clock"), "{error}");
}

#[test]
fn garbage_certificates_are_errors() {
    let check = ServerCheck::new(&[ECDSA_CA], None).unwrap();
    let server = der(ECDSA_SERVER);
    for len in [0, 1, 10, server.len() / 2, server.len() - 1] {
        assert!(
            check
                .verify(&server[..len], &[], &server_id(), NOW)
                .is_err()
        );
    }
    let mut flipped = server;
    let last = flipped.len() - 5;
    flipped[last] ^= 1; // inside the signature
    assert!(check.verify(&flipped, &[], &server_id(), NOW).is_err());
}

#[test]
fn extended_key_usage_rule() {
    // Only codeSigning: refused.
    let error = ServerCheck::new(&[CODESIGNING_CERT], None)
        .unwrap()
        .verify(
            &der(CODESIGNING_CERT),
            &[],
            &IkeId::Fqdn("codesigning.example.test".into()),
            NOW,
        )
        .unwrap_err();
    assert!(matches!(error, CertError::WrongPurpose { .. }), "{error}");
    // Only ikeIntermediate: accepted; only serverAuth: accepted; none (Ed25519 cert): accepted.
    ServerCheck::new(&[P256_CERT], None)
        .unwrap()
        .verify(
            &der(P256_CERT),
            &[],
            &IkeId::Fqdn("client.example.test".into()),
            NOW,
        )
        .unwrap();
    ServerCheck::new(&[RSA2048_CERT], None)
        .unwrap()
        .verify(
            &der(RSA2048_CERT),
            &[],
            &IkeId::Fqdn("rsa.example.test".into()),
            NOW,
        )
        .unwrap();
    ServerCheck::new(&[ED25519_CERT], None)
        .unwrap()
        .verify(
            &der(ED25519_CERT),
            &[],
            &IkeId::Fqdn("ed25519.example.test".into()),
            NOW,
        )
        .unwrap();
}

#[test]
fn rfc822_and_key_id_identities() {
    let check = ServerCheck::new(&[P256_CERT], None).unwrap();
    let cert = der(P256_CERT);
    check
        .verify(
            &cert,
            &[],
            &IkeId::Rfc822("Client@Example.test".into()),
            NOW,
        )
        .unwrap();
    check
        .verify(&cert, &[], &IkeId::Ipv4(Ipv4Addr::new(192, 0, 2, 7)), NOW)
        .unwrap();
    // SHA-1 of the SubjectPublicKeyInfo is one of the key IDs strongSwan uses.
    let keyid = ca_keyid(&cert).unwrap().to_vec();
    check.verify(&cert, &[], &IkeId::KeyId(keyid), NOW).unwrap();
}

// The AUTH payloads of the captures.

fn capture_auth(auth_hex: &str, octets_hex: &str) -> (u8, Vec<u8>, Vec<u8>) {
    let auth = hex(auth_hex);
    // AUTH payload body: method, 3 reserved bytes, data.
    (auth[0], auth[4..].to_vec(), hex(octets_hex))
}

fn check_capture_auth(ca: &[u8], server: &[u8], auth_hex: &str, octets_hex: &str, algid: &str) {
    let peer = verified(ca, server);
    let (method, data, octets) = capture_auth(auth_hex, octets_hex);
    assert_eq!(method, 14);
    let algid = hex(algid);
    assert_eq!(usize::from(data[0]), algid.len());
    assert_eq!(&data[1..=algid.len()], algid.as_slice());
    peer.verify_auth(method, &data, &octets).unwrap();

    // A flipped bit in the signed octets, or in the signature.
    let mut bad = octets.clone();
    bad[100] ^= 0x01;
    assert_eq!(
        peer.verify_auth(method, &data, &bad),
        Err(CertError::BadSignature)
    );
    let mut bad = data.clone();
    let last = bad.len() - 2;
    bad[last] ^= 0x10;
    assert!(peer.verify_auth(method, &bad, &octets).is_err());
    // Truncations never panic and never verify.
    for len in 0..data.len() {
        assert!(peer.verify_auth(method, &data[..len], &octets).is_err());
    }
}

#[test]
fn capture_ecdsa_auth_verifies() {
    check_capture_auth(
        ECDSA_CA,
        ECDSA_SERVER,
        include_str!("../../../testvectors/ipsec/strongswan-ecdsa-auth.hex"),
        include_str!("../../../testvectors/ipsec/strongswan-ecdsa-responder-octets.hex"),
        "300a06082a8648ce3d040302",
    );
}

#[test]
fn capture_rsa_auth_verifies() {
    check_capture_auth(
        RSA_CA,
        RSA_SERVER,
        include_str!("../../../testvectors/ipsec/strongswan-rsa-auth.hex"),
        include_str!("../../../testvectors/ipsec/strongswan-rsa-responder-octets.hex"),
        "300d06092a864886f70d01010b0500",
    );
}

#[test]
fn capture_ed25519_auth_verifies() {
    check_capture_auth(
        ED25519_CA,
        ED25519_SERVER,
        include_str!("../../../testvectors/ipsec/strongswan-ed25519-auth.hex"),
        include_str!("../../../testvectors/ipsec/strongswan-ed25519-responder-octets.hex"),
        "300506032b6570",
    );
}

#[test]
fn auth_from_another_key_does_not_verify() {
    // The ECDSA capture's AUTH checked with the RSA server's certificate.
    let peer = verified(RSA_CA, RSA_SERVER);
    let (method, data, octets) = capture_auth(
        include_str!("../../../testvectors/ipsec/strongswan-ecdsa-auth.hex"),
        include_str!("../../../testvectors/ipsec/strongswan-ecdsa-responder-octets.hex"),
    );
    assert!(matches!(
        peer.verify_auth(method, &data, &octets),
        Err(CertError::AuthKeyMismatch { .. })
    ));
    // Other methods.
    assert!(matches!(
        peer.verify_auth(2, &[0; 32], &octets),
        Err(CertError::UnsupportedAuth(_))
    ));
    assert!(matches!(
        peer.verify_auth(1, &[0; 384], &octets),
        Err(CertError::UnsupportedAuth(_))
    ));
}

#[test]
fn ecdsa_method_9_with_raw_signature() {
    // Convert the capture's DER ECDSA signature to raw r | s and check it as method 9.
    let peer = verified(ECDSA_CA, ECDSA_SERVER);
    let (_, data, octets) = capture_auth(
        include_str!("../../../testvectors/ipsec/strongswan-ecdsa-auth.hex"),
        include_str!("../../../testvectors/ipsec/strongswan-ecdsa-responder-octets.hex"),
    );
    let signature = &data[1 + usize::from(data[0])..];
    let raw = der_ecdsa_to_raw(signature, 32);
    peer.verify_auth(9, &raw, &octets).unwrap();
    let mut bad = raw.clone();
    bad[40] ^= 1;
    assert_eq!(
        peer.verify_auth(9, &bad, &octets),
        Err(CertError::BadSignature)
    );
    assert!(matches!(
        peer.verify_auth(9, &raw[..63], &octets),
        Err(CertError::BadAuth(_))
    ));
    // Method 10 needs a P-384 key.
    let mut raw384 = vec![0; 96];
    raw384[..64].copy_from_slice(&raw);
    assert!(matches!(
        peer.verify_auth(10, &raw384, &octets),
        Err(CertError::AuthKeyMismatch { .. })
    ));
}

/// `SEQUENCE { INTEGER r, INTEGER s }` (short lengths) to raw `r | s`.
fn der_ecdsa_to_raw(der: &[u8], half: usize) -> Vec<u8> {
    assert_eq!(der[0], 0x30);
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[at], 0x02);
        let len = usize::from(der[at + 1]);
        let value = &der[at + 2..at + 2 + len];
        let value = &value[value.len().saturating_sub(half)..];
        out.extend(std::iter::repeat_n(0, half - value.len()));
        out.extend_from_slice(value);
        at += 2 + len;
    }
    out
}

#[test]
fn rsa_pss_algorithm_identifier_is_parsed() {
    // RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32 (RFC 7427 Appendix A.4.3 style): the
    // parameters parse; the signature (garbage) does not verify with the RSA key.
    let peer = verified(RSA_CA, RSA_SERVER);
    let algid = hex("3041 0609 2a864886f70d01010a 3034 \
         a00f 300d 0609 608648016503040201 0500 \
         a11c 301a 0609 2a864886f70d010108 300d 0609 608648016503040201 0500 \
         a203 020120");
    let mut data = vec![u8::try_from(algid.len()).unwrap()];
    data.extend_from_slice(&algid);
    data.extend_from_slice(&[0x55; 384]);
    assert_eq!(
        peer.verify_auth(14, &data, b"octets"),
        Err(CertError::BadSignature)
    );
    // A salt length other than the hash length is not supported by ring.
    let mut other_salt = data.clone();
    let at = 1 + algid.len() - 1;
    other_salt[at] = 20;
    assert!(matches!(
        peer.verify_auth(14, &other_salt, b"octets"),
        Err(CertError::UnsupportedAuth(_))
    ));
    // The same AlgorithmIdentifier against an ECDSA key.
    let peer = verified(ECDSA_CA, ECDSA_SERVER);
    assert!(matches!(
        peer.verify_auth(14, &data, b"octets"),
        Err(CertError::AuthKeyMismatch { .. })
    ));
}

#[test]
fn unknown_algorithm_identifiers_are_refused() {
    let peer = verified(ECDSA_CA, ECDSA_SERVER);
    // sha1WithRSAEncryption.
    let algid = hex("300d06092a864886f70d0101050500");
    let mut data = vec![u8::try_from(algid.len()).unwrap()];
    data.extend_from_slice(&algid);
    data.extend_from_slice(&[0; 64]);
    assert!(matches!(
        peer.verify_auth(14, &data, b"x"),
        Err(CertError::UnsupportedAuth(_))
    ));
    // Not DER.
    assert!(matches!(
        peer.verify_auth(14, &[3, 0xff, 0xff, 0xff, 0], b"x"),
        Err(CertError::BadAuth(_))
    ));
}

// Our own certificate.

#[test]
fn local_signer_round_trip_p256() {
    let signer = LocalSigner::new(&[P256_CERT], P256_KEY).unwrap();
    assert_eq!(signer.certificate_der(), der(P256_CERT));
    assert!(signer.intermediates_der().is_empty());
    let octets = b"InitiatorSignedOctets for the test";
    let auth = signer.sign_auth(&[2, 3, 4], octets).unwrap();
    assert_eq!(&auth[..13], &hex("0c300a06082a8648ce3d040302")[..]);

    let peer = ServerCheck::new(&[P256_CERT], None)
        .unwrap()
        .verify(
            signer.certificate_der(),
            &[],
            &IkeId::Fqdn("client.example.test".into()),
            NOW,
        )
        .unwrap();
    peer.verify_auth(14, &auth, octets).unwrap();
    assert_eq!(
        peer.verify_auth(14, &auth, b"other octets"),
        Err(CertError::BadSignature)
    );
    // Our identity.
    let id = signer.subject_id();
    assert_eq!(id.id_type(), 9);
    assert_eq!(
        id,
        IkeId::parse(9, &id.data()).unwrap(),
        "the subject DN round-trips"
    );
    assert!(IkeId::from_config("C=XX, O=erebus test only, CN=client.example.test").matches(&id));
}

#[test]
fn local_signer_needs_a_hash_the_server_accepts() {
    let signer = LocalSigner::new(&[P256_CERT], P256_KEY).unwrap();
    let error = signer.sign_auth(&[3, 4], b"octets").unwrap_err();
    assert!(matches!(error, CertError::NoCommonHash { .. }), "{error}");
    // No SIGNATURE_HASH_ALGORITHMS at all: the key's own hash.
    assert!(signer.sign_auth(&[], b"octets").is_ok());
}

#[test]
fn local_signer_ed25519_and_rsa() {
    for (cert, key, name, algid, hashes) in [
        (
            ED25519_CERT,
            ED25519_KEY,
            "ed25519.example.test",
            "07300506032b6570",
            &[2u16, 5][..],
        ),
        (
            RSA2048_CERT,
            RSA2048_KEY,
            "rsa.example.test",
            "0f300d06092a864886f70d01010c0500",
            &[3, 4][..],
        ),
    ] {
        let signer = LocalSigner::new(&[cert], key).unwrap();
        let auth = signer.sign_auth(hashes, b"octets").unwrap();
        let algid = hex(algid);
        assert_eq!(&auth[..algid.len()], algid.as_slice(), "{name}");
        let peer = ServerCheck::new(&[cert], None)
            .unwrap()
            .verify(&der(cert), &[], &IkeId::Fqdn(name.into()), NOW)
            .unwrap();
        peer.verify_auth(14, &auth, b"octets").unwrap();
        // Deterministic signatures.
        assert_eq!(signer.sign_auth(hashes, b"octets").unwrap(), auth);
    }
    let signer = LocalSigner::new(&[ED25519_CERT], ED25519_KEY).unwrap();
    assert!(matches!(
        signer.sign_auth(&[2, 3, 4], b"octets"),
        Err(CertError::NoCommonHash { .. })
    ));
}

#[test]
fn local_signer_takes_der_too() {
    let key = PrivateKeyDer::from_pem_slice(P256_KEY).unwrap();
    let signer = LocalSigner::new(&[&der(P256_CERT)], key.secret_der()).unwrap();
    assert!(signer.sign_auth(&[2], b"x").is_ok());
}

#[test]
fn local_signer_refuses_a_key_of_another_certificate() {
    assert_eq!(
        LocalSigner::new(&[ECDSA_SERVER], P256_KEY).unwrap_err(),
        CertError::KeyMismatch
    );
    assert_eq!(
        LocalSigner::new(&[P256_CERT], ED25519_KEY).unwrap_err(),
        CertError::KeyMismatch
    );
    assert!(LocalSigner::new(&[], P256_KEY).is_err());
    assert!(LocalSigner::new(&[P256_CERT], b"junk").is_err());
    assert_eq!(
        LocalSigner::new(
            &[P256_CERT],
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        )
        .unwrap_err(),
        CertError::EncryptedKey
    );
}

#[test]
fn ca_keyid_matches_openssl_and_the_capture() {
    // `openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha1sum`
    for (ca, expected) in [
        (ECDSA_CA, "b95247daba62fdf50230b4d6b0b98f4be72589e2"),
        (RSA_CA, "4a7e2d8f4bfd0d37ce0e3eca1d24dcd1a7410392"),
        (ED25519_CA, "52afcaa47ff8e87ce820bb2393b55a78996efa7d"),
        (P256_CERT, "8e75049688d7bcb4ceddd7e946ee660ec46738d2"),
    ] {
        assert_eq!(ca_keyid(&der(ca)).unwrap().to_vec(), hex(expected));
    }
    // The ecdsa capture's CERTREQ (encoding 4) lists exactly that key ID.
    assert_eq!(
        hex("04b95247daba62fdf50230b4d6b0b98f4be72589e2")[1..],
        ca_keyid(&der(ECDSA_CA)).unwrap()
    );
    let both = [ECDSA_CA, RSA_CA].concat();
    assert_eq!(
        ServerCheck::new(&[&both], None).unwrap().ca_keyids(),
        vec![
            ca_keyid(&der(ECDSA_CA)).unwrap(),
            ca_keyid(&der(RSA_CA)).unwrap()
        ]
    );
    assert!(ca_keyid(b"junk").is_err());
}

// Identities.

#[test]
fn identities_from_config_follow_strongswan() {
    assert_eq!(
        IkeId::from_config("vpn.example.test"),
        IkeId::Fqdn("vpn.example.test".into())
    );
    assert_eq!(
        IkeId::from_config("198.51.100.1"),
        IkeId::Ipv4(Ipv4Addr::new(198, 51, 100, 1))
    );
    assert_eq!(
        IkeId::from_config("carol@example.test"),
        IkeId::Rfc822("carol@example.test".into())
    );
    assert_eq!(
        IkeId::from_config("@vpn.example.test"),
        IkeId::Fqdn("vpn.example.test".into())
    );
    assert_eq!(
        IkeId::from_config("@@carol.example.test"),
        IkeId::Rfc822("carol.example.test".into())
    );
    assert_eq!(
        IkeId::from_config("@#0102ab"),
        IkeId::KeyId(vec![1, 2, 0xab])
    );
    assert_eq!(
        IkeId::from_config("fqdn:carol@example.test"),
        IkeId::Fqdn("carol@example.test".into())
    );
    assert_eq!(IkeId::from_config("keyid:#0102"), IkeId::KeyId(vec![1, 2]));
    assert_eq!(IkeId::from_config("2001:db8::1").id_type(), 5);

    // A DN: the server's subject, in DER (PrintableString where possible; the certificate
    // uses UTF8String for O and CN, which matches all the same).
    let dn = IkeId::from_config("C=XX, O=strongSwan test peer, CN=vpn.example.test");
    assert_eq!(dn.id_type(), 9);
    assert_eq!(
        dn.data(),
        hex("3047 310b 3009 0603550406 1302 5858 \
             311d 301b 060355040a 1314 7374726f6e675377616e20746573742070656572 \
             3119 3017 0603550403 1310 76706e2e6578616d706c652e74657374")
    );
    assert_eq!(
        dn.to_string(),
        "\"C=XX, O=strongSwan test peer, CN=vpn.example.test\""
    );
    assert!(dn.matches(&IkeId::from_config(
        "/C=XX/O=strongSwan test peer/CN=VPN.example.test"
    )));
    assert!(dn.matches(&IkeId::from_config(
        "C=XX,O=strongSwan test peer,CN=vpn.example.test"
    )));
    assert!(!dn.matches(&IkeId::from_config("C=XX, CN=vpn.example.test")));
    assert!(IkeId::from_config("C=XX, O=*, CN=vpn.example.test").matches(&dn));
    assert!(!dn.matches(&IkeId::Fqdn("vpn.example.test".into())));
    // An escaped comma and a non-printable value (UTF8String).
    let odd = IkeId::from_config(r"O=Smith\, Jones, CN=Zoë");
    assert_eq!(odd.id_type(), 9);
    assert!(odd.to_string().contains("Zoë"), "{odd}");
    // Unknown attribute names: not a DN.
    assert_eq!(IkeId::from_config("XYZ=1").id_type(), 2);
}

#[test]
fn identities_on_the_wire() {
    for id in [
        IkeId::Ipv4(Ipv4Addr::new(10, 0, 0, 1)),
        IkeId::Fqdn("vpn.example.test".into()),
        IkeId::Rfc822("carol@example.test".into()),
        IkeId::KeyId(vec![0xde, 0xad]),
        IkeId::from_config("C=XX, CN=x"),
        IkeId::from_config("2001:db8::1"),
    ] {
        assert_eq!(IkeId::parse(id.id_type(), &id.data()).unwrap(), id);
    }
    // The capture's IDr: 02 000000 "vpn.example.test".
    assert_eq!(IkeId::parse(2, b"vpn.example.test").unwrap(), server_id());
    assert!(IkeId::parse(1, &[1, 2, 3]).is_err());
    assert!(IkeId::parse(5, &[0; 4]).is_err());
    assert!(IkeId::parse(2, &[0xff, 0xfe]).is_err());
    assert!(IkeId::parse(9, b"not der").is_err());
    assert!(IkeId::parse(12, b"").is_err());
}
