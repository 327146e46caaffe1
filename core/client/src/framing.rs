//! Length-prefixed framing of outer packets on stream transports (OpenVPN over TCP, RFC 8229
//! for IKE and ESP): each packet is preceded by its length as a 16-bit big-endian integer.

/// Reassembles whole packets from arbitrary chunks of a stream.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
}

/// Why a stream cannot be deframed further.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZeroLengthFrame;

impl Deframer {
    /// Appends bytes read from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            // Compact occasionally so a long session does not grow the buffer without bound.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole packet, mutable so it can be decrypted in place, or `None` until more
    /// bytes arrive.
    ///
    /// # Errors
    ///
    /// A zero length prefix, which no protocol sends: the stream is out of sync.
    pub fn next_frame(&mut self) -> Result<Option<&mut [u8]>, ZeroLengthFrame> {
        let rest = self.buf.get(self.start..).unwrap_or_default();
        let Some(&[hi, lo]) = rest.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return Err(ZeroLengthFrame);
        }
        if rest.len() < 2 + len {
            return Ok(None);
        }
        let begin = self.start + 2;
        self.start = begin + len;
        Ok(self.buf.get_mut(begin..begin + len))
    }

    /// Forgets everything buffered (the stream was replaced).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

/// Writes the length prefix of a packet that occupies `buf[2..2 + len]`.
pub fn write_prefix(buf: &mut [u8], len: usize) -> Option<()> {
    let len = u16::try_from(len).ok()?;
    buf.get_mut(..2)?.copy_from_slice(&len.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_across_arbitrary_chunks() {
        let mut stream = Vec::new();
        for payload in [&b"one"[..], b"", b"three", &[7u8; 300]] {
            if payload.is_empty() {
                continue;
            }
            stream.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            stream.extend_from_slice(payload);
        }
        for chunk_len in [1, 2, 3, 7, 1000] {
            let mut deframer = Deframer::default();
            let mut frames = Vec::new();
            for chunk in stream.chunks(chunk_len) {
                deframer.push(chunk);
                while let Some(frame) = deframer.next_frame().unwrap() {
                    frames.push(frame.to_vec());
                }
            }
            assert_eq!(frames, [b"one".to_vec(), b"three".to_vec(), vec![7u8; 300]]);
        }
    }

    #[test]
    fn zero_length_is_an_error() {
        let mut deframer = Deframer::default();
        deframer.push(&[0, 0, 1]);
        assert_eq!(deframer.next_frame(), Err(ZeroLengthFrame));
    }
}
