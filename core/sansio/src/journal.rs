//! The session journal: every [`Input`] a driver gave a machine, with its `now`, in order.
//!
//! A journal together with the seed and the configuration is enough to replay a session byte
//! for byte, because inputs are the only source of nondeterminism a machine has. Drivers write
//! it with [`encode`] when asked to record; tests read it back with [`JournalReader`], which
//! borrows from the bytes and treats them as untrusted.
//!
//! # Format
//!
//! The file starts with [`MAGIC`]. Each record is a tag byte, `now` as big-endian `u64`
//! microseconds, then fields by tag (all big-endian): connection ids `u64`, listener ids `u32`,
//! byte strings as a `u32` length and the bytes, socket addresses as a family byte (4 or 6),
//! the 4 or 16 address bytes and the port as `u16`, transport errors as one byte
//! ([`TransportError::code`]).
//!
//! | tag | input |
//! |---|---|
//! | 0 | `Timeout` |
//! | 1 | `Close` |
//! | 2 | `Transport Connected(remote address)` |
//! | 3 | `Transport Data(from address, bytes)` |
//! | 4 | `Transport Closed(error)` |
//! | 5 | `Local conn Accepted(listener)` |
//! | 6 | `Local conn Data(bytes)` |
//! | 7 | `Local conn ReadClosed` |
//! | 8 | `Local conn WriteBlocked` |
//! | 9 | `Local conn Writable` |
//! | 10 | `Local conn Reset` |
//! | 11 | `Transport Data(from address, bytes)`, held: handled together with the next input |
//!
//! A driver drains the machine after every input, except after a held one: a batch of
//! datagrams read at once is recorded as held inputs and a last ordinary one, and the machine
//! is drained once, after the batch ([`JournalReader::held`]).

use core::fmt;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::io::{ConnId, Input, ListenerId, LocalEvent, TransportError, TransportEvent};
use crate::time::Instant;

/// The first bytes of every journal: a name and a format version.
pub const MAGIC: &[u8; 16] = b"EREBUS-JOURNAL\x00\x02";

/// Appends `input` to a journal being written.
pub fn encode(input: &Input<'_>, out: &mut Vec<u8>) {
    encode_with(input, false, out);
}

/// Appends `input` to a journal being written, as handled together with the next input,
/// without a drain between. Only transport data can be held; other inputs are written as by
/// [`encode`].
pub fn encode_held(input: &Input<'_>, out: &mut Vec<u8>) {
    encode_with(input, true, out);
}

fn encode_with(input: &Input<'_>, held: bool, out: &mut Vec<u8>) {
    let (tag, rest): (u8, Option<(ConnId, Option<Field<'_>>)>) = match *input {
        Input::Timeout { .. } => (0, None),
        Input::Close { .. } => (1, None),
        Input::Transport { event, .. } => {
            let now = input.now().as_micros().to_be_bytes();
            match event {
                TransportEvent::Connected { remote } => {
                    out.push(2);
                    out.extend_from_slice(&now);
                    put_addr(remote, out);
                }
                TransportEvent::Data { from, bytes } => {
                    out.push(if held { 11 } else { 3 });
                    out.extend_from_slice(&now);
                    put_addr(from, out);
                    put_bytes(bytes, out);
                }
                TransportEvent::Closed { error } => {
                    out.push(4);
                    out.extend_from_slice(&now);
                    out.push(error.code());
                }
            }
            return;
        }
        Input::Local { conn, event, .. } => match event {
            LocalEvent::Accepted { listener } => (5, Some((conn, Some(Field::Listener(listener))))),
            LocalEvent::Data(bytes) => (6, Some((conn, Some(Field::Bytes(bytes))))),
            LocalEvent::ReadClosed => (7, Some((conn, None))),
            LocalEvent::WriteBlocked => (8, Some((conn, None))),
            LocalEvent::Writable => (9, Some((conn, None))),
            LocalEvent::Reset => (10, Some((conn, None))),
        },
    };
    out.push(tag);
    out.extend_from_slice(&input.now().as_micros().to_be_bytes());
    if let Some((conn, field)) = rest {
        out.extend_from_slice(&conn.0.to_be_bytes());
        match field {
            Some(Field::Listener(listener)) => out.extend_from_slice(&listener.0.to_be_bytes()),
            Some(Field::Bytes(bytes)) => put_bytes(bytes, out),
            None => {}
        }
    }
}

enum Field<'a> {
    Listener(ListenerId),
    Bytes(&'a [u8]),
}

fn put_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn put_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    // Inputs are bounded by socket reads, far below 4 GiB; saturate rather than wrap.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes.get(..len as usize).unwrap_or(bytes));
}

/// Why a journal could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// The bytes do not start with [`MAGIC`].
    NotAJournal,
    /// A record at this byte offset is cut short.
    Truncated {
        /// Offset of the record.
        offset: usize,
    },
    /// A record at this byte offset has an unknown tag.
    UnknownTag {
        /// Offset of the record.
        offset: usize,
        /// The tag found.
        tag: u8,
    },
    /// A socket address with a family byte other than 4 or 6.
    BadAddress {
        /// Where the record starts.
        offset: usize,
    },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAJournal => f.write_str("not an erebus journal (bad magic)"),
            Self::Truncated { offset } => write!(f, "journal record at byte {offset} is truncated"),
            Self::UnknownTag { offset, tag } => {
                write!(f, "journal record at byte {offset} has unknown tag {tag}")
            }
            Self::BadAddress { offset } => {
                write!(
                    f,
                    "journal record at byte {offset} has a bad socket address"
                )
            }
        }
    }
}

impl std::error::Error for JournalError {}

/// Reads the inputs of a journal in order, borrowing their bytes.
#[derive(Debug)]
pub struct JournalReader<'a> {
    bytes: &'a [u8],
    offset: usize,
    failed: bool,
    held: bool,
}

impl<'a> JournalReader<'a> {
    /// Starts reading a journal.
    ///
    /// # Errors
    ///
    /// [`JournalError::NotAJournal`] when the magic is missing.
    pub fn new(bytes: &'a [u8]) -> Result<Self, JournalError> {
        if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
            return Err(JournalError::NotAJournal);
        }
        Ok(Self {
            bytes,
            offset: MAGIC.len(),
            failed: false,
            held: false,
        })
    }

    fn take(&mut self, n: usize, record: usize) -> Result<&'a [u8], JournalError> {
        let end = self
            .offset
            .checked_add(n)
            .ok_or(JournalError::Truncated { offset: record })?;
        let slice = self
            .bytes
            .get(self.offset..end)
            .ok_or(JournalError::Truncated { offset: record })?;
        self.offset = end;
        Ok(slice)
    }

    fn u64(&mut self, record: usize) -> Result<u64, JournalError> {
        let mut raw = [0; 8];
        raw.copy_from_slice(self.take(8, record)?);
        Ok(u64::from_be_bytes(raw))
    }

    fn u32(&mut self, record: usize) -> Result<u32, JournalError> {
        let mut raw = [0; 4];
        raw.copy_from_slice(self.take(4, record)?);
        Ok(u32::from_be_bytes(raw))
    }

    fn addr(&mut self, record: usize) -> Result<SocketAddr, JournalError> {
        let family = self.take(1, record)?.first().copied().unwrap_or_default();
        let ip = match family {
            4 => {
                let mut raw = [0; 4];
                raw.copy_from_slice(self.take(4, record)?);
                IpAddr::V4(Ipv4Addr::from(raw))
            }
            6 => {
                let mut raw = [0; 16];
                raw.copy_from_slice(self.take(16, record)?);
                IpAddr::V6(Ipv6Addr::from(raw))
            }
            _ => return Err(JournalError::BadAddress { offset: record }),
        };
        let mut port = [0; 2];
        port.copy_from_slice(self.take(2, record)?);
        Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
    }

    fn bytes(&mut self, record: usize) -> Result<&'a [u8], JournalError> {
        let len = self.u32(record)? as usize;
        self.take(len, record)
    }

    /// Whether the input last read was held: the machine handled the next input before it was
    /// drained.
    pub const fn held(&self) -> bool {
        self.held
    }

    fn record(&mut self) -> Result<Input<'a>, JournalError> {
        let record = self.offset;
        let tag = self.take(1, record)?.first().copied().unwrap_or_default();
        self.held = tag == 11;
        let now = Instant::from_micros(self.u64(record)?);
        let input = match tag {
            0 => Input::Timeout { now },
            1 => Input::Close { now },
            2 => Input::Transport {
                now,
                event: TransportEvent::Connected {
                    remote: self.addr(record)?,
                },
            },
            3 | 11 => {
                let from = self.addr(record)?;
                Input::Transport {
                    now,
                    event: TransportEvent::Data {
                        from,
                        bytes: self.bytes(record)?,
                    },
                }
            }
            4 => {
                let code = self.take(1, record)?.first().copied().unwrap_or_default();
                Input::Transport {
                    now,
                    event: TransportEvent::Closed {
                        error: TransportError::from_code(code),
                    },
                }
            }
            5..=10 => {
                let conn = ConnId(self.u64(record)?);
                let event = match tag {
                    5 => LocalEvent::Accepted {
                        listener: ListenerId(self.u32(record)?),
                    },
                    6 => LocalEvent::Data(self.bytes(record)?),
                    7 => LocalEvent::ReadClosed,
                    8 => LocalEvent::WriteBlocked,
                    9 => LocalEvent::Writable,
                    _ => LocalEvent::Reset,
                };
                Input::Local { now, conn, event }
            }
            tag => {
                return Err(JournalError::UnknownTag {
                    offset: record,
                    tag,
                });
            }
        };
        Ok(input)
    }
}

impl<'a> Iterator for JournalReader<'a> {
    type Item = Result<Input<'a>, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.bytes.len() {
            return None;
        }
        let result = self.record();
        self.failed = result.is_err();
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Input<'static>> {
        let t = Instant::from_micros;
        vec![
            Input::Timeout { now: t(1) },
            Input::Transport {
                now: t(2),
                event: TransportEvent::Connected {
                    remote: "192.0.2.1:1194".parse().unwrap(),
                },
            },
            Input::Transport {
                now: t(3),
                event: TransportEvent::Data {
                    from: "[2001:db8::1]:4500".parse().unwrap(),
                    bytes: b"\x38datagram",
                },
            },
            Input::Local {
                now: t(4),
                conn: ConnId(7),
                event: LocalEvent::Accepted {
                    listener: ListenerId(1),
                },
            },
            Input::Local {
                now: t(5),
                conn: ConnId(7),
                event: LocalEvent::Data(b"GET / HTTP/1.1"),
            },
            Input::Local {
                now: t(6),
                conn: ConnId(7),
                event: LocalEvent::ReadClosed,
            },
            Input::Local {
                now: t(7),
                conn: ConnId(7),
                event: LocalEvent::WriteBlocked,
            },
            Input::Local {
                now: t(8),
                conn: ConnId(7),
                event: LocalEvent::Writable,
            },
            Input::Local {
                now: t(9),
                conn: ConnId(7),
                event: LocalEvent::Reset,
            },
            Input::Transport {
                now: t(10),
                event: TransportEvent::Closed {
                    error: TransportError::Unresolved,
                },
            },
            Input::Close { now: t(u64::MAX) },
        ]
    }

    #[test]
    fn a_bad_address_family_is_an_error() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(2);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&[5, 1, 2, 3, 4, 0, 1]);
        assert_eq!(
            JournalReader::new(&bytes).unwrap().next(),
            Some(Err(JournalError::BadAddress { offset: 16 }))
        );
    }

    #[test]
    fn round_trip() {
        let inputs = sample();
        let mut bytes = MAGIC.to_vec();
        for input in &inputs {
            encode(input, &mut bytes);
        }
        let read: Vec<_> = JournalReader::new(&bytes)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, inputs);
    }

    #[test]
    fn held_inputs_read_back_as_held() {
        let inputs = sample();
        let mut bytes = MAGIC.to_vec();
        let mut expected_held = Vec::new();
        for input in &inputs {
            let data = matches!(
                input,
                Input::Transport {
                    event: TransportEvent::Data { .. },
                    ..
                }
            );
            encode_held(input, &mut bytes);
            expected_held.push(data);
        }
        let mut reader = JournalReader::new(&bytes).unwrap();
        let mut read = Vec::new();
        let mut held = Vec::new();
        while let Some(input) = reader.next() {
            read.push(input.unwrap());
            held.push(reader.held());
        }
        assert_eq!(read, inputs);
        assert_eq!(held, expected_held);
        assert!(held.contains(&true));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(
            JournalReader::new(b"nope").unwrap_err(),
            JournalError::NotAJournal
        );
        let mut bytes = MAGIC.to_vec();
        encode(&sample()[2], &mut bytes);
        let cut = &bytes[..bytes.len() - 1];
        let mut reader = JournalReader::new(cut).unwrap();
        assert_eq!(
            reader.next(),
            Some(Err(JournalError::Truncated { offset: 16 }))
        );
        assert_eq!(reader.next(), None);
        let mut unknown = MAGIC.to_vec();
        unknown.extend_from_slice(&[99, 0, 0, 0, 0, 0, 0, 0, 0]);
        let first = JournalReader::new(&unknown).unwrap().next();
        assert_eq!(
            first,
            Some(Err(JournalError::UnknownTag {
                offset: 16,
                tag: 99
            }))
        );
        // A length field near u32::MAX must not overflow or allocate.
        let mut huge = MAGIC.to_vec();
        huge.push(3);
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&[4, 192, 0, 2, 1, 0, 53]);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            JournalReader::new(&huge).unwrap().next(),
            Some(Err(_))
        ));
    }
}
