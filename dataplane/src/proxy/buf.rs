//! Receive buffer: one per connection side, reused for every request.

use std::cell::RefCell;
use std::io;

use crate::pool::DecayingPool;

/// A byte buffer with a consumed prefix (`start`) and a filled end (`end`).
/// It grows only while a head does not fit (up to a cap), so body streaming
/// runs in a fixed amount of memory per connection.
pub struct RecvBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    cap: usize,
    initial: usize,
}

/// Reading into a full buffer that may not grow: the head is over its limit.
pub const BUFFER_FULL: io::ErrorKind = io::ErrorKind::OutOfMemory;

/// Storage of released buffers, per shard thread: idle keep-alive
/// connections hold no buffer, and the next busy one reuses a released one
/// instead of allocating (and zeroing) a fresh one.
const POOL_LIMIT: usize = 4096;

thread_local! {
    static POOL: RefCell<DecayingPool> = const { RefCell::new(DecayingPool::new(POOL_LIMIT)) };
    static STATE_POOL: RefCell<DecayingPool<ConnState>> = const { RefCell::new(DecayingPool::new(STATE_POOL_LIMIT)) };
    static RESPONSE_HEAD_POOL: RefCell<DecayingPool<crate::http1::ResponseHead>> =
        const { RefCell::new(DecayingPool::new(STATE_POOL_LIMIT)) };
}

/// Frees this shard's pooled buffers that went unused since the last call
/// (see `DecayingPool`); the shard's periodic sweep calls it.
pub fn trim_pools() {
    POOL.with_borrow_mut(DecayingPool::trim);
    let _ = SCRATCH_POOL.try_with(|p| p.borrow_mut().trim());
    let _ = STATE_POOL.try_with(|p| p.borrow_mut().trim());
    let _ = RESPONSE_HEAD_POOL.try_with(|p| p.borrow_mut().trim());
}

/// Puts `item` back into one of this shard's pools.  `try_with` and
/// `try_borrow_mut`: something dropped while the thread's locals are torn
/// down, or from inside a pool operation, is simply freed.
fn give_back_to<T: 'static>(pool: &'static std::thread::LocalKey<RefCell<DecayingPool<T>>>, item: T) {
    let _ = pool.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.push(item);
        }
    });
}

/// Most connection states a shard keeps for reuse.
const STATE_POOL_LIMIT: usize = 1024;
/// A state whose storage grew past this (a huge head) is freed, not pooled.
const STATE_KEEP_MAX: usize = 32 * 1024;

/// The storage an HTTP/1 connection task grows while serving requests: the
/// request head's arenas, the encode buffer and the header-mutation
/// scratch.  A parked connection gives it back and the next connection task
/// to start (a new or resumed one) takes it, already grown and warm in the
/// cache, instead of allocating and regrowing it (about forty allocations
/// per resumed connection before).  Pooled like the buffers above, so a
/// burst's peak is freed by the sweep.
#[derive(Default)]
pub(crate) struct ConnState {
    pub head: crate::http1::RequestHead,
    pub out: Vec<u8>,
    pub mutations: crate::router::mutate::Scratch,
}

impl ConnState {
    /// A pooled state, or a fresh one.
    pub fn take() -> ConnState {
        STATE_POOL
            .with_borrow_mut(|p| p.pop_where(|_| true))
            .unwrap_or_else(|| ConnState { out: Vec::with_capacity(1024), ..ConnState::default() })
    }

    /// Gives the storage back for the next connection task.
    pub fn give_back(mut self) {
        if self.head.storage_capacity() + self.out.capacity() > STATE_KEEP_MAX {
            return;
        }
        self.head.clear();
        self.out.clear();
        give_back_to(&STATE_POOL, self);
    }
}

/// A buffer whose owner ends (a closed connection, a finished HTTP/2
/// stream's bridge) gives its storage back like an idle one: an HTTP/2
/// stream uses two of them, and allocating and zeroing 32 KiB per stream
/// made the allocator fault pages in and purge them again under load.
impl Drop for RecvBuf {
    fn drop(&mut self) {
        self.recycle();
    }
}

impl RecvBuf {
    /// A buffer that takes its storage (`initial` bytes) on first use.
    pub fn new(initial: usize, cap: usize) -> RecvBuf {
        RecvBuf { data: Vec::new(), start: 0, end: 0, cap: cap.max(initial), initial }
    }

    /// Gives the storage back to the shard's pool when nothing is buffered.
    pub fn release(&mut self) {
        if !self.is_empty() || self.data.is_empty() {
            return;
        }
        self.recycle();
    }

    /// Hands the storage to the shard's pool whatever it holds (the owner is
    /// done with the bytes).
    fn recycle(&mut self) {
        let data = std::mem::take(&mut self.data);
        if !data.is_empty() && data.len() == self.initial {
            give_back_to(&POOL, data);
        }
        (self.start, self.end) = (0, 0);
    }

    fn acquire(&mut self) {
        let initial = self.initial;
        let reused = POOL.with_borrow_mut(|p| p.pop_where(|b| b.len() == initial));
        self.data = reused.unwrap_or_else(|| vec![0; initial]);
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

    /// Appends bytes read elsewhere (a sniffed protocol preface, an HTTP/2
    /// stream's translated head), growing past the cap if it must: the
    /// parser's limits still judge them.
    pub fn prefill(&mut self, bytes: &[u8]) {
        if self.data.is_empty() {
            self.acquire();
        }
        let end = self.end + bytes.len();
        if end > self.data.len() {
            self.data.resize(end, 0);
        }
        self.data[self.end..end].copy_from_slice(bytes);
        self.end = end;
    }

    /// Reads once from `stream`, appending; `Ok(0)` is end of stream.
    ///
    /// A buffer without storage (new, or [`RecvBuf::release`]d) takes some
    /// from the shard's pool only once `stream` is readable: the pool hands
    /// out the buffer given back last, still in cache, where one taken
    /// before the wait would go cold while the peer worked (with a few
    /// hundred exchanges in flight, the kernel's copy into it then missed the
    /// cache line by line).
    pub async fn fill_from<S: crate::tunnel::Duplex + ?Sized>(&mut self, stream: &S) -> io::Result<usize> {
        if self.data.is_empty() {
            std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await;
            self.acquire();
        }
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
        let n = std::future::poll_fn(|cx| stream.poll_read(cx, &mut self.data[self.end..])).await?;
        self.end += n;
        Ok(n)
    }
}

/// A response head borrowed from the shard's pool for one HTTP/2 stream's
/// bridge (which parses the HTTP/1.1 response the manager wrote): its field
/// arenas come grown and warm instead of growing from empty for every
/// stream, which cost about eight reallocations per stream.  Given back
/// (emptied) on drop; pooled like the connection states, so a burst's peak
/// is freed by the shard's sweep.
pub struct PooledResponseHead(crate::http1::ResponseHead);

impl PooledResponseHead {
    pub fn take() -> PooledResponseHead {
        let reused = RESPONSE_HEAD_POOL.with_borrow_mut(|p| p.pop_where(|_| true));
        PooledResponseHead(reused.unwrap_or_default())
    }
}

impl std::ops::Deref for PooledResponseHead {
    type Target = crate::http1::ResponseHead;
    fn deref(&self) -> &crate::http1::ResponseHead {
        &self.0
    }
}

impl std::ops::DerefMut for PooledResponseHead {
    fn deref_mut(&mut self) -> &mut crate::http1::ResponseHead {
        &mut self.0
    }
}

impl Drop for PooledResponseHead {
    fn drop(&mut self) {
        let mut head = std::mem::take(&mut self.0);
        if head.storage_capacity() > STATE_KEEP_MAX {
            return;
        }
        head.clear();
        give_back_to(&RESPONSE_HEAD_POOL, head);
    }
}

/// Most scratch buffers a shard keeps for reuse; more in use at once are
/// allocated and freed normally.
const SCRATCH_POOL_LIMIT: usize = 1024;
/// A scratch buffer that grew past this is freed rather than pooled, so one
/// huge head does not pin memory for the life of the shard.
const SCRATCH_KEEP_MAX: usize = 16 * 1024;

thread_local! {
    static SCRATCH_POOL: RefCell<DecayingPool> = const { RefCell::new(DecayingPool::new(SCRATCH_POOL_LIMIT)) };
}

/// An empty byte buffer borrowed from the shard's pool for the length of one
/// exchange (e.g. an encoded response head, which must live across awaits and
/// so cannot use a `thread_local` borrow).  Given back on drop: in steady state
/// taking one allocates nothing, and idle connections hold none.
pub struct ScratchBuf(Vec<u8>);

impl ScratchBuf {
    pub fn take() -> ScratchBuf {
        let reused = SCRATCH_POOL.with_borrow_mut(|p| p.pop_where(|_| true));
        ScratchBuf(reused.unwrap_or_else(|| Vec::with_capacity(512)))
    }
}

impl std::ops::Deref for ScratchBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for ScratchBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for ScratchBuf {
    fn drop(&mut self) {
        let mut data = std::mem::take(&mut self.0);
        if data.capacity() > SCRATCH_KEEP_MAX {
            return;
        }
        data.clear();
        give_back_to(&SCRATCH_POOL, data);
    }
}

#[cfg(test)]
mod tests {
    /// A connection task that ends gives its grown storage to the next one
    /// (emptied); storage grown past the keep limit is freed instead.
    #[test]
    fn connection_state_is_reused_emptied_and_huge_state_is_not_kept() {
        use super::ConnState;
        let mut state = ConnState::take();
        state.head.headers.append("x-big", &[b'a'; 3000]);
        state.out.extend_from_slice(&[1; 4000]);
        let (values, out) = (state.head.storage_capacity(), state.out.capacity());
        state.give_back();
        let again = ConnState::take();
        assert!(again.head.headers.is_empty() && again.out.is_empty());
        assert_eq!((again.head.storage_capacity(), again.out.capacity()), (values, out));
        let mut huge = again;
        huge.out.reserve(64 * 1024);
        huge.give_back();
        assert!(ConnState::take().out.capacity() < 64 * 1024, "an oversized state is freed");
    }

    /// A bridge's response head goes back emptied with its grown storage,
    /// and the next stream's head takes it; an oversized one is freed.
    #[test]
    fn a_pooled_response_head_comes_back_empty_and_grown() {
        use super::PooledResponseHead;
        let mut head = PooledResponseHead::take();
        head.status = 200;
        for i in 0..12 {
            head.headers.append(format!("x-field-{i}").as_str(), b"some value");
        }
        let grown = head.storage_capacity();
        drop(head);
        let again = PooledResponseHead::take();
        assert_eq!((again.status, again.headers.is_empty()), (0, true));
        assert_eq!(again.storage_capacity(), grown);
        let mut huge = again;
        huge.headers.append("x-big", &[b'a'; 64 * 1024]);
        drop(huge);
        assert!(PooledResponseHead::take().storage_capacity() < 64 * 1024, "an oversized head is freed");
    }

    /// A buffer whose owner ends while it still holds bytes (an HTTP/2
    /// stream's bridge after its response) goes back to the pool too, and
    /// the next buffer of that size takes the same storage.
    #[test]
    fn a_dropped_buffer_is_pooled_whatever_it_holds() {
        use super::RecvBuf;
        let mut first = RecvBuf::new(16 * 1024, 64 * 1024);
        first.prefill(b"HTTP/1.1 200 OK\r\n");
        let storage = first.filled().as_ptr();
        drop(first);
        // Were it freed, the allocator would hand this one its memory.
        let same_size = vec![0u8; 16 * 1024];
        let mut next = RecvBuf::new(16 * 1024, 64 * 1024);
        next.prefill(b"GET / HTTP/1.1\r\n");
        assert_eq!(next.filled().as_ptr(), storage, "the dropped buffer's storage is reused");
        assert_eq!(next.filled(), b"GET / HTTP/1.1\r\n");
        let mut other_size = RecvBuf::new(4 * 1024, 64 * 1024);
        other_size.prefill(b"x");
        assert_ne!(other_size.filled().as_ptr(), storage);
        drop(same_size);
    }
}
