//! Body decoding: Content-Length, chunked (RFC 9112 §7.1) and
//! close-delimited bodies, as a byte-at-a-time-resumable state machine.
//!
//! Data is never copied: `Decoded::Data` borrows the caller's input.  The
//! chunked framing (size lines, extensions, CRLFs) is consumed as it arrives,
//! so an arbitrary split of the stream decodes identically.  Only the
//! trailer section is handed out whole — it is small, bounded, and callers
//! want it as one slice — so while it is incomplete `decode` consumes
//! nothing of it and asks for more (remembering how far it validated).

use super::headers::{is_field_vchar, is_tchar};
use super::{BodyKind, H1Error, Limits};

/// Hex digits allowed in a chunk-size (leading zeros included): 16 digits
/// fill a u64, so overflow is impossible and a stream of zeros cannot spin.
const MAX_CHUNK_SIZE_DIGITS: u8 = 16;
/// Bytes of chunk extensions allowed per chunk line.  Extensions are
/// ignored (RFC 9112 §7.1.1 lets recipients do so) but must be bounded, or a
/// peer could stream an endless size line.
const MAX_CHUNK_EXT_BYTES: u16 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Content-Length body with this many bytes left (> 0).
    Length(u64),
    /// Body runs to EOF.
    Close,
    /// In the chunk-size digits.
    Size {
        value: u64,
        digits: u8,
    },
    /// BWS after the size: only `;` (or more BWS) may follow.
    SizeWs {
        value: u64,
    },
    /// In a chunk extension.
    Ext {
        value: u64,
        len: u16,
    },
    /// Saw the CR ending the size line.
    SizeLf {
        value: u64,
    },
    /// In chunk data with this many bytes left (> 0).
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataCr,
    DataLf,
    /// After the last chunk: the trailer section.
    Trailers,
    /// All body bytes consumed; the next `decode` reports `End`.
    Finished,
    /// `End` reported.
    Done,
}

/// Incremental body decoder for one message.  Cheap to create; holds no
/// buffers.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    max_trailer_bytes: usize,
    /// How far into the (unconsumed) trailer section lines were validated.
    trailer_scan: usize,
}

/// One decoding event.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Body bytes (never empty), borrowed from the input.
    Data(&'a [u8]),
    /// End of body; `trailers` = raw validated trailer field lines (each
    /// ending CRLF), possibly empty, without the final empty line.
    End { trailers: &'a [u8] },
    /// Everything usable was consumed; call again with more bytes.
    NeedMore,
}

impl BodyDecoder {
    /// A decoder with the default limits (trailers up to 60 KiB).
    pub fn new(kind: BodyKind) -> BodyDecoder {
        BodyDecoder::with_limits(kind, &Limits::default())
    }

    /// Trailer sections are bounded by `limits.max_head_bytes`.
    pub fn with_limits(kind: BodyKind, limits: &Limits) -> BodyDecoder {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => State::Finished,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => State::Size { value: 0, digits: 0 },
            BodyKind::CloseDelimited => State::Close,
        };
        BodyDecoder { state, max_trailer_bytes: limits.max_head_bytes, trailer_scan: 0 }
    }

    /// True once every byte of the body has been consumed (a further
    /// `decode` returns `End` without consuming anything).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Finished | State::Done)
    }

    /// Bytes of the body still expected, when known (Content-Length bodies
    /// and the current chunk).
    pub fn remaining_hint(&self) -> Option<u64> {
        match self.state {
            State::Length(n) | State::Data(n) => Some(n),
            State::Finished | State::Done => Some(0),
            _ => None,
        }
    }

    /// Consumes from `input`; returns (bytes consumed, event).  The caller
    /// must drop the consumed bytes whatever the event (framing bytes are
    /// consumed even with `NeedMore`) and hand the rest back next time,
    /// followed by newly read bytes.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Decoded<'a>), H1Error> {
        let mut i = 0;
        loop {
            let b = match self.state {
                State::Length(left) => {
                    if input.is_empty() {
                        return Ok((0, Decoded::NeedMore));
                    }
                    let n = left.min(input.len() as u64) as usize;
                    self.state = if left == n as u64 { State::Finished } else { State::Length(left - n as u64) };
                    return Ok((n, Decoded::Data(&input[..n])));
                }
                State::Close => {
                    if input.is_empty() {
                        return Ok((0, Decoded::NeedMore));
                    }
                    return Ok((input.len(), Decoded::Data(input)));
                }
                State::Data(left) => {
                    if i == input.len() {
                        return Ok((i, Decoded::NeedMore));
                    }
                    let n = left.min((input.len() - i) as u64) as usize;
                    self.state = if left == n as u64 { State::DataCr } else { State::Data(left - n as u64) };
                    return Ok((i + n, Decoded::Data(&input[i..i + n])));
                }
                State::Trailers => return self.trailers(input, i),
                State::Finished | State::Done => {
                    self.state = State::Done;
                    return Ok((i, Decoded::End { trailers: b"" }));
                }
                _ => match input.get(i) {
                    Some(&b) => b,
                    None => return Ok((i, Decoded::NeedMore)),
                },
            };
            i += 1;
            self.state = self.framing_byte(b)?;
        }
    }

    /// One byte of chunk framing (RFC 9112 §7.1):
    /// `chunk-size [ chunk-ext ] CRLF chunk-data CRLF`.
    fn framing_byte(&self, b: u8) -> Result<State, H1Error> {
        Ok(match self.state {
            State::Size { value, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits == MAX_CHUNK_SIZE_DIGITS {
                        return Err(H1Error::BadChunk("chunk size too long"));
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    State::Size { value: value << 4 | d, digits: digits + 1 }
                }
                _ if digits == 0 => return Err(H1Error::BadChunk("invalid chunk size")),
                b'\r' => State::SizeLf { value },
                b';' => State::Ext { value, len: 0 },
                b' ' | b'\t' => State::SizeWs { value },
                b'\n' => return Err(H1Error::BadChunk("bare LF after chunk size")),
                _ => return Err(H1Error::BadChunk("invalid chunk size")),
            },
            // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
            State::SizeWs { value } => match b {
                b' ' | b'\t' => State::SizeWs { value },
                b';' => State::Ext { value, len: 0 },
                _ => return Err(H1Error::BadChunk("whitespace after chunk size")),
            },
            State::Ext { value, len } => match b {
                b'\r' => State::SizeLf { value },
                _ if len >= MAX_CHUNK_EXT_BYTES => return Err(H1Error::BadChunk("chunk extension too long")),
                // Names, values and quoted-strings are all made of these;
                // the content itself is ignored.
                b'\t' | 0x20..=0x7e | 0x80..=0xff => State::Ext { value, len: len + 1 },
                _ => return Err(H1Error::BadChunk("invalid byte in chunk extension")),
            },
            State::SizeLf { value } => match b {
                b'\n' if value == 0 => State::Trailers,
                b'\n' => State::Data(value),
                _ => return Err(H1Error::BadChunk("CR without LF in chunk size line")),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(H1Error::BadChunk("missing CRLF after chunk data")),
            },
            State::DataLf => match b {
                b'\n' => State::Size { value: 0, digits: 0 },
                _ => return Err(H1Error::BadChunk("missing CRLF after chunk data")),
            },
            s => unreachable!("framing_byte in state {s:?}"),
        })
    }

    /// `trailer-section CRLF` (RFC 9112 §7.1.2), validated like header
    /// fields (RFC 9112 §5) and bounded like a head.
    fn trailers<'a>(&mut self, input: &'a [u8], at: usize) -> Result<(usize, Decoded<'a>), H1Error> {
        let sec = &input[at..];
        let mut p = self.trailer_scan;
        if p > sec.len() {
            p = 0;
        }
        while let Some(off) = memchr::memchr2(b'\r', b'\n', &sec[p..]) {
            let j = p + off;
            if sec[j] == b'\n' {
                return Err(H1Error::BadTrailer("bare LF"));
            }
            match sec.get(j + 1) {
                None => break,
                Some(b'\n') => {}
                Some(_) => return Err(H1Error::BadTrailer("bare CR")),
            }
            let next = j + 2;
            let line = &sec[p..j];
            if line.is_empty() {
                self.state = State::Done;
                self.trailer_scan = 0;
                return Ok((at + next, Decoded::End { trailers: &sec[..p] }));
            }
            if next > self.max_trailer_bytes {
                return Err(H1Error::TrailersTooLarge);
            }
            check_trailer_line(line)?;
            p = next;
        }
        if sec.len() > self.max_trailer_bytes {
            return Err(H1Error::TrailersTooLarge);
        }
        self.trailer_scan = p;
        Ok((at, Decoded::NeedMore))
    }

    /// Call at EOF.  `Ok` for a close-delimited body (it ends here) or a body
    /// already complete; `IncompleteBody` if Content-Length or chunked
    /// framing promised more (RFC 9112 §8: an incomplete message).
    pub fn decode_eof(&mut self) -> Result<(), H1Error> {
        match self.state {
            State::Close | State::Finished | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(H1Error::IncompleteBody),
        }
    }
}

fn check_trailer_line(line: &[u8]) -> Result<(), H1Error> {
    if matches!(line[0], b' ' | b'\t') {
        return Err(H1Error::BadTrailer("obsolete line folding"));
    }
    let Some(colon) = memchr::memchr(b':', line) else {
        return Err(H1Error::BadTrailer("field without colon"));
    };
    if colon == 0 || !line[..colon].iter().all(|&b| is_tchar(b)) {
        return Err(H1Error::BadTrailer("invalid field name"));
    }
    if !line[colon + 1..].iter().all(|&b| is_field_vchar(b)) {
        return Err(H1Error::BadTrailer("invalid field value"));
    }
    Ok(())
}
