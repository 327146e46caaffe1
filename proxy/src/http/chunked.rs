//! A streaming reader of the chunked transfer coding (RFC 9112 §7.1) that finds where a chunked
//! body ends without changing a byte of it.
//!
//! The proxy forwards chunked bodies verbatim, extensions and trailers included, so the next
//! hop sees exactly what the sender wrote. It still has to know where the body ends, and it has
//! to be strict about it: two parsers that disagree on framing are how requests get smuggled,
//! so bare LFs, oversized numbers and malformed trailer lines are errors, not guesses.

/// Longest chunk-size line (size and extensions) accepted.
const MAX_LINE: usize = 4096;
/// Most bytes of trailer fields accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub(crate) enum ChunkError {
    /// The chunk size is not hexadecimal, or does not fit in 64 bits.
    #[error("invalid chunk size")]
    Size,
    /// A chunk-size line, a chunk's end or a trailer line does not end in CRLF.
    #[error("chunk framing is not terminated by CRLF")]
    LineEnd,
    /// A chunk extension holds a control character or is too long.
    #[error("invalid chunk extension")]
    Extension,
    /// A trailer line is not a field, or the trailers are too long.
    #[error("invalid trailer field")]
    Trailer,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Expecting the first hex digit of a chunk size.
    SizeStart,
    /// In the chunk size; `digits` read so far.
    Size { value: u64, digits: u8 },
    /// In extensions (or whitespace before them), up to the CR.
    Extension { value: u64 },
    /// Read the CR of the size line.
    SizeLf { value: u64 },
    /// In chunk data; bytes left.
    Data { left: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// In a trailer line.
    TrailerLine { colon: bool },
    /// Read the CR of a trailer line.
    TrailerLf,
    /// Read the CR of the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
}

/// Where in a chunked body the reader is.
#[derive(Clone, Debug)]
pub(crate) struct Chunked {
    state: State,
    line_len: usize,
    trailer_len: usize,
}

impl Chunked {
    pub(crate) fn new() -> Self {
        Self {
            state: State::SizeStart,
            line_len: 0,
            trailer_len: 0,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads as much of `input` as belongs to the body and returns how many bytes that was;
    /// it stops right after the body's last byte. Bytes it returned as read stay part of the
    /// body even when a later call fails.
    pub(crate) fn advance(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            if let State::Data { left } = self.state {
                let available = input.len() - at;
                let take = usize::try_from(left).map_or(available, |left| left.min(available));
                at += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            let Some(&byte) = input.get(at) else { break };
            self.state = self.step(byte)?;
            at += 1;
        }
        Ok(at)
    }

    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::SizeStart => {
                let digit = hex(byte).ok_or(ChunkError::Size)?;
                self.line_len = 1;
                State::Size {
                    value: digit,
                    digits: 1,
                }
            }
            State::Size { value, digits } => {
                self.line_len += 1;
                if let Some(digit) = hex(byte) {
                    // Sixteen hex digits fill 64 bits; more cannot be a real length.
                    if digits >= 16 {
                        return Err(ChunkError::Size);
                    }
                    State::Size {
                        value: (value << 4) | digit,
                        digits: digits + 1,
                    }
                } else {
                    match byte {
                        b'\r' => State::SizeLf { value },
                        b';' | b' ' | b'\t' => State::Extension { value },
                        b'\n' => return Err(ChunkError::LineEnd),
                        _ => return Err(ChunkError::Size),
                    }
                }
            }
            State::Extension { value } => {
                self.line_len += 1;
                if self.line_len > MAX_LINE {
                    return Err(ChunkError::Extension);
                }
                match byte {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err(ChunkError::LineEnd),
                    b'\t' => State::Extension { value },
                    0..=0x1f | 0x7f => return Err(ChunkError::Extension),
                    _ => State::Extension { value },
                }
            }
            State::SizeLf { value } => match byte {
                b'\n' if value == 0 => State::TrailerStart,
                b'\n' => State::Data { left: value },
                _ => return Err(ChunkError::LineEnd),
            },
            State::Data { .. } | State::Done => self.state,
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::LineEnd),
            },
            State::DataLf => match byte {
                b'\n' => State::SizeStart,
                _ => return Err(ChunkError::LineEnd),
            },
            State::TrailerStart => match byte {
                b'\r' => State::FinalLf,
                // A trailer line must start with a field name: no obsolete line folding.
                b'\n' | b' ' | b'\t' | b':' => return Err(ChunkError::Trailer),
                _ => self.trailer_byte(byte, false)?,
            },
            State::TrailerLine { colon } => match byte {
                b'\r' if colon => State::TrailerLf,
                b'\r' | b'\n' => return Err(ChunkError::Trailer),
                _ => self.trailer_byte(byte, colon)?,
            },
            State::TrailerLf => match byte {
                b'\n' => State::TrailerStart,
                _ => return Err(ChunkError::LineEnd),
            },
            State::FinalLf => match byte {
                b'\n' => State::Done,
                _ => return Err(ChunkError::LineEnd),
            },
        })
    }

    fn trailer_byte(&mut self, byte: u8, colon: bool) -> Result<State, ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(ChunkError::Trailer);
        }
        if matches!(byte, 0..=0x08 | 0x0a..=0x1f | 0x7f) {
            return Err(ChunkError::Trailer);
        }
        Ok(State::TrailerLine {
            colon: colon || byte == b':',
        })
    }
}

fn hex(byte: u8) -> Option<u64> {
    match byte {
        b'0'..=b'9' => Some(u64::from(byte - b'0')),
        b'a'..=b'f' => Some(u64::from(byte - b'a') + 10),
        b'A'..=b'F' => Some(u64::from(byte - b'A') + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<(usize, bool), ChunkError> {
        let mut reader = Chunked::new();
        let used = reader.advance(body)?;
        Ok((used, reader.is_done()))
    }

    #[test]
    fn finds_the_end_of_a_simple_body() {
        let body = b"5\r\nhello\r\n0\r\n\r\nNEXT";
        assert_eq!(whole(body), Ok((body.len() - 4, true)));
    }

    #[test]
    fn accepts_extensions_and_trailers() {
        let body = b"5;name=\"v a\"\r\nhello\r\n3 ; x\r\nabc\r\n0;last\r\nX-Sum: 1\r\nY: 2\r\n\r\n";
        assert_eq!(whole(body), Ok((body.len(), true)));
    }

    #[test]
    fn byte_at_a_time_agrees_with_whole() {
        let body = b"A\r\n0123456789\r\n1f\r\n0123456789012345678901234567890\r\n0\r\nT: x\r\n\r\n";
        let mut reader = Chunked::new();
        let mut used = 0;
        for byte in body.chunks(1) {
            used += reader.advance(byte).unwrap();
        }
        assert_eq!(used, body.len());
        assert!(reader.is_done());
    }

    #[test]
    fn incomplete_body_is_not_done() {
        assert_eq!(whole(b"5\r\nhel"), Ok((6, false)));
        assert_eq!(whole(b"0\r\n"), Ok((3, false)));
        assert_eq!(whole(b"0\r\nX: y\r\n"), Ok((9, false)));
    }

    #[test]
    fn refuses_bad_framing() {
        assert_eq!(whole(b"x\r\n"), Err(ChunkError::Size));
        assert_eq!(whole(b"5\nhello"), Err(ChunkError::LineEnd));
        assert_eq!(whole(b"5\r\nhelloX"), Err(ChunkError::LineEnd));
        assert_eq!(whole(b"5\r\nhello\r\r"), Err(ChunkError::LineEnd));
        assert_eq!(whole(b"5;a\x01\r\n"), Err(ChunkError::Extension));
        assert_eq!(whole(b"11111111111111111\r\n"), Err(ChunkError::Size));
        assert_eq!(whole(b"0\r\nnocolon\r\n"), Err(ChunkError::Trailer));
        assert_eq!(whole(b"0\r\n folded: x\r\n"), Err(ChunkError::Trailer));
        assert_eq!(whole(b"0\r\n\n"), Err(ChunkError::Trailer));
    }

    #[test]
    fn sixteen_digit_sizes_are_read_without_overflow() {
        let mut reader = Chunked::new();
        assert_eq!(reader.advance(b"ffffffffffffffff\r\nab"), Ok(20));
        assert!(!reader.is_done());
    }
}
