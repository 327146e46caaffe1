//! The client side of a SOCKS5 `CONNECT` handshake (RFC 1928, RFC 1929), as a sans-IO state
//! machine: what a program that uses erebus as a library speaks to the internal SOCKS5 front
//! end to open a stream through the tunnel. The caller moves the bytes.

use std::io;
use std::net::IpAddr;

/// Username and password for an internal front end when the client's
/// [`crate::ProxyConfig::auth`] is set (RFC 1929).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: Vec<u8>,
    password: Vec<u8>,
}

impl Credentials {
    /// Credentials; each part must be 1 to 255 bytes.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an empty or longer part.
    pub fn new(username: impl Into<Vec<u8>>, password: impl Into<Vec<u8>>) -> io::Result<Self> {
        let (username, password) = (username.into(), password.into());
        for part in [&username, &password] {
            if part.is_empty() || part.len() > 255 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "SOCKS5 usernames and passwords are 1 to 255 bytes",
                ));
            }
        }
        Ok(Self { username, password })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &String::from_utf8_lossy(&self.username))
            .finish_non_exhaustive()
    }
}

const VERSION: u8 = 5;
const METHOD_NONE: u8 = 0x00;
const METHOD_USER_PASS: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const COMMAND_CONNECT: u8 = 1;
const ATYP_IPV4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_IPV6: u8 = 4;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// Send the greeting, read the method selection.
    Greeting,
    /// Send username and password, read the status.
    Auth,
    /// Send the CONNECT request, read the reply's first four bytes.
    Request,
    /// Read the length of the bound name in the reply.
    BoundNameLength,
    /// Read (and ignore) the bound address and port.
    BoundAddress(usize),
    Done,
}

/// The client side of a SOCKS5 `CONNECT` handshake, without I/O: the caller alternates
/// [`Handshake::next`] (bytes to write, then how many to read) and [`Handshake::feed`].
///
/// Reply codes become [`io::Error`]s of these kinds: 0x05 `ConnectionRefused`; 0x04
/// `NotFound` when the destination is a name (the front end reports a name that does not
/// resolve this way) and `HostUnreachable` for an address; 0x06 `TimedOut`; 0x03
/// `NetworkUnreachable` (the tunnel is not up); 0x02 `PermissionDenied`; anything else
/// `Other`.
#[derive(Debug)]
pub struct Handshake {
    step: Step,
    request: Vec<u8>,
    destination: String,
    by_name: bool,
    credentials: Option<Credentials>,
}

impl Handshake {
    /// A handshake for a stream to `host:port`. `host` is an IP address or a name (resolved
    /// by the tunnel's DNS, at most 255 bytes).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for an empty or too long name, or port 0.
    pub fn new(host: &str, port: u16, credentials: Option<Credentials>) -> io::Result<Self> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
        if port == 0 {
            return Err(invalid("cannot connect to port 0"));
        }
        // An IPv6 address may come bracketed, as in URLs.
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let mut request = vec![VERSION, COMMAND_CONNECT, 0];
        let by_name = match bare.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                request.push(ATYP_IPV4);
                request.extend_from_slice(&ip.octets());
                false
            }
            Ok(IpAddr::V6(ip)) => {
                request.push(ATYP_IPV6);
                request.extend_from_slice(&ip.octets());
                false
            }
            Err(_) => {
                let name = host.as_bytes();
                let len = u8::try_from(name.len())
                    .ok()
                    .filter(|&len| len > 0)
                    .ok_or_else(|| invalid("a host name is 1 to 255 bytes"))?;
                request.extend_from_slice(&[ATYP_NAME, len]);
                request.extend_from_slice(name);
                true
            }
        };
        request.extend_from_slice(&port.to_be_bytes());
        Ok(Self {
            step: Step::Greeting,
            request,
            destination: format!("{host}:{port}"),
            by_name,
            credentials,
        })
    }

    /// What to do next: write the bytes (possibly none), then read exactly the given number
    /// of bytes and [`feed`](Self::feed) them. `None` once the stream is connected.
    pub fn next(&self) -> Option<(Vec<u8>, usize)> {
        match self.step {
            Step::Greeting => {
                let greeting = match self.credentials {
                    Some(_) => vec![VERSION, 2, METHOD_NONE, METHOD_USER_PASS],
                    None => vec![VERSION, 1, METHOD_NONE],
                };
                Some((greeting, 2))
            }
            Step::Auth => {
                let credentials = self.credentials.as_ref()?;
                let mut auth = vec![1];
                for part in [&credentials.username, &credentials.password] {
                    // `Credentials::new` bounds both parts to 255 bytes.
                    auth.push(u8::try_from(part.len()).unwrap_or(u8::MAX));
                    auth.extend_from_slice(part);
                }
                Some((auth, 2))
            }
            Step::Request => Some((self.request.clone(), 4)),
            Step::BoundNameLength => Some((Vec::new(), 1)),
            Step::BoundAddress(len) => Some((Vec::new(), len)),
            Step::Done => None,
        }
    }

    /// Takes the bytes [`next`](Self::next) asked for.
    ///
    /// # Errors
    ///
    /// The front end refused the connection (see the type's documentation for the kinds),
    /// or answered something that is not SOCKS5 ([`io::ErrorKind::InvalidData`]).
    pub fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        self.step = match (self.step, bytes) {
            (Step::Greeting, [VERSION, METHOD_NONE]) => Step::Request,
            (Step::Greeting, [VERSION, METHOD_USER_PASS]) if self.credentials.is_some() => {
                Step::Auth
            }
            (Step::Greeting, [VERSION, NO_ACCEPTABLE_METHOD]) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the internal SOCKS5 front end requires credentials",
                ));
            }
            (Step::Auth, [1, 0]) => Step::Request,
            (Step::Auth, [1, _]) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the internal SOCKS5 front end refused the credentials",
                ));
            }
            (Step::Request, [VERSION, 0, 0, atyp]) => match *atyp {
                ATYP_IPV4 => Step::BoundAddress(4 + 2),
                ATYP_IPV6 => Step::BoundAddress(16 + 2),
                ATYP_NAME => Step::BoundNameLength,
                _ => return Err(bad("SOCKS5 reply with an unknown address type")),
            },
            (Step::Request, [VERSION, code, 0, _]) => return Err(self.refusal(*code)),
            (Step::BoundNameLength, [len]) => Step::BoundAddress(usize::from(*len) + 2),
            (Step::BoundAddress(len), bound) if bound.len() == len => Step::Done,
            _ => return Err(bad("unexpected SOCKS5 answer from the internal front end")),
        };
        Ok(())
    }

    /// The error for reply `code`.
    fn refusal(&self, code: u8) -> io::Error {
        let destination = &self.destination;
        let (kind, why) = match code {
            0x05 => (io::ErrorKind::ConnectionRefused, "connection refused"),
            0x04 if self.by_name => (
                io::ErrorKind::NotFound,
                "the name does not resolve through the tunnel (or its host is unreachable)",
            ),
            0x04 => (io::ErrorKind::HostUnreachable, "host unreachable"),
            0x06 => (io::ErrorKind::TimedOut, "timed out"),
            0x03 => (io::ErrorKind::NetworkUnreachable, "the tunnel is not up"),
            0x02 => (io::ErrorKind::PermissionDenied, "not allowed"),
            _ => (io::ErrorKind::Other, "the connection failed"),
        };
        io::Error::new(kind, format!("{destination}: {why}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

    use super::*;

    /// Runs `handshake` against a scripted front end: each answer is fed for the next read.
    fn run(mut handshake: Handshake, answers: &[&[u8]]) -> (Vec<Vec<u8>>, io::Result<()>) {
        let mut sent = Vec::new();
        let mut answers = answers.iter();
        while let Some((bytes, want)) = handshake.next() {
            sent.push(bytes);
            let answer = answers
                .next()
                .expect("the handshake read more than scripted");
            assert_eq!(answer.len(), want, "read size");
            if let Err(e) = handshake.feed(answer) {
                return (sent, Err(e));
            }
        }
        assert!(answers.next().is_none(), "the handshake stopped early");
        (sent, Ok(()))
    }

    #[test]
    fn name_request_carries_the_name_for_remote_resolution() {
        let handshake = Handshake::new("web.erebus.test", 8080, None).unwrap();
        let (sent, result) = run(
            handshake,
            &[&[5, 0], &[5, 0, 0, 1], &[10, 8, 0, 2, 0x9c, 0x40]],
        );
        result.unwrap();
        assert_eq!(sent[0], [5, 1, 0]);
        let mut request = vec![5, 1, 0, 3, 15];
        request.extend_from_slice(b"web.erebus.test");
        request.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(sent[1], request);
        assert!(
            sent[2].is_empty(),
            "reading the bound address sends nothing"
        );
    }

    #[test]
    fn addresses_use_their_own_address_types() {
        let (sent, result) = run(
            Handshake::new("10.8.0.1", 80, None).unwrap(),
            &[&[5, 0], &[5, 0, 0, 4], &[0; 18]],
        );
        result.unwrap();
        assert_eq!(sent[1], [5, 1, 0, 1, 10, 8, 0, 1, 0, 80]);
        let (sent, result) = run(
            Handshake::new("[fd00::1]", 443, None).unwrap(),
            &[&[5, 0], &[5, 0, 0, 3], &[3], b"abc\x01\xbb"],
        );
        result.unwrap();
        let mut expected = vec![5, 1, 0, 4, 0xfd, 0];
        expected.extend_from_slice(&[0; 13]);
        expected.extend_from_slice(&[1, 1, 0xbb]);
        assert_eq!(sent[1], expected);
    }

    #[test]
    fn reply_codes_become_error_kinds() {
        let cases: [(&str, u8, io::ErrorKind); 7] = [
            ("10.8.0.1", 5, io::ErrorKind::ConnectionRefused),
            ("10.8.0.9", 4, io::ErrorKind::HostUnreachable),
            ("nowhere.erebus.test", 4, io::ErrorKind::NotFound),
            ("10.8.0.1", 6, io::ErrorKind::TimedOut),
            ("10.8.0.1", 3, io::ErrorKind::NetworkUnreachable),
            ("10.8.0.1", 2, io::ErrorKind::PermissionDenied),
            ("10.8.0.1", 1, io::ErrorKind::Other),
        ];
        for (host, code, kind) in cases {
            let handshake = Handshake::new(host, 80, None).unwrap();
            let (_, result) = run(handshake, &[&[5, 0], &[5, code, 0, 1]]);
            let error = result.unwrap_err();
            assert_eq!(error.kind(), kind, "reply {code} for {host}");
            assert!(error.to_string().starts_with(&format!("{host}:80: ")));
        }
    }

    #[test]
    fn credentials_are_sent_when_the_front_end_asks() {
        let credentials = Credentials::new("user", "secret").unwrap();
        let handshake = Handshake::new("10.8.0.1", 80, Some(credentials.clone())).unwrap();
        let (sent, result) = run(
            handshake,
            &[&[5, 2], &[1, 0], &[5, 0, 0, 1], &[0, 0, 0, 0, 0, 0]],
        );
        result.unwrap();
        assert_eq!(sent[0], [5, 2, 0, 2]);
        assert_eq!(sent[1], b"\x01\x04user\x06secret");
        let handshake = Handshake::new("10.8.0.1", 80, Some(credentials)).unwrap();
        let (_, result) = run(handshake, &[&[5, 2], &[1, 1]]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        // Without credentials a front end that demands them is refused, not answered.
        let handshake = Handshake::new("10.8.0.1", 80, None).unwrap();
        let (_, result) = run(handshake, &[&[5, 0xff]]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        let handshake = Handshake::new("10.8.0.1", 80, None).unwrap();
        let (_, result) = run(handshake, &[&[5, 2]]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn bad_destinations_and_answers_are_errors() {
        let long = "a".repeat(256);
        for (host, port) in [("", 80), (long.as_str(), 80), ("10.8.0.1", 0)] {
            let error = Handshake::new(host, port, None).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(Handshake::new(&"a".repeat(255), 80, None).is_ok());
        let mut handshake = Handshake::new("10.8.0.1", 80, None).unwrap();
        assert_eq!(
            handshake.feed(b"HT").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(Credentials::new("", "x").is_err());
        assert!(Credentials::new("x", vec![b'p'; 256]).is_err());
    }
}
