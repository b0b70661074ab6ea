//! Receive buffer: one per connection side, reused for every request.

use std::io;

use crate::transport::Stream;

/// A byte buffer with a consumed prefix (`start`) and a filled end (`end`).
/// It grows only while a head does not fit (up to a cap), so body streaming
/// runs in a fixed amount of memory per connection.
pub struct RecvBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    cap: usize,
}

/// Reading into a full buffer that may not grow: the head is over its limit.
pub const BUFFER_FULL: io::ErrorKind = io::ErrorKind::OutOfMemory;

impl RecvBuf {
    pub fn new(initial: usize, cap: usize) -> RecvBuf {
        RecvBuf { data: vec![0; initial], start: 0, end: 0, cap: cap.max(initial) }
    }

    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once from `stream`, appending; `Ok(0)` is end of stream.
    pub async fn fill_from(&mut self, stream: &Stream) -> io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.data.len() < self.cap {
                let grown = (self.data.len() * 2).min(self.cap);
                self.data.resize(grown, 0);
            } else {
                return Err(BUFFER_FULL.into());
            }
        }
        let n = stream.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}
