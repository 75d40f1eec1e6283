//! The packet buffer the pipeline works on, whatever port it came from: a contiguous byte range with headroom in
//! front (for tunnel headers) and tailroom behind (for ICMP replies). In-memory ports implement it over a boxed
//! array, DPDK over an mbuf.

/// Headroom every port leaves in front of received data (DPDK's RTE_PKTMBUF_HEADROOM is 128 too).
pub const HEADROOM: usize = 128;
/// Data room after the headroom.
pub const DATA_ROOM: usize = 2048;

/// A packet buffer.
pub trait PacketBuf {
    /// The packet bytes.
    fn data(&self) -> &[u8];
    /// The packet bytes, mutably.
    fn data_mut(&mut self) -> &mut [u8];
    /// How many bytes [`PacketBuf::data`] holds (a buffer that knows it without building the slice says so).
    #[inline]
    fn data_len(&self) -> usize {
        self.data().len()
    }
    /// Grow the packet at the front by `n` bytes (contents unspecified). False when there is not enough headroom.
    fn prepend(&mut self, n: usize) -> bool;
    /// Remove `n` bytes from the front. False when the packet is shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Set the length, shrinking or growing at the tail. False when it exceeds the room.
    fn set_len(&mut self, len: usize) -> bool;
    /// Bytes that can be added at the tail.
    fn tailroom(&self) -> usize;
}

/// A heap buffer of fixed size, used by in-memory and pcap ports, tests and benchmarks.
#[derive(Clone)]
pub struct MemBuf {
    buf: Box<[u8; HEADROOM + DATA_ROOM]>,
    head: u16,
    len: u16,
}

impl std::fmt::Debug for MemBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemBuf").field("head", &self.head).field("len", &self.len).finish()
    }
}

impl Default for MemBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl MemBuf {
    /// An empty buffer with the standard headroom.
    pub fn new() -> Self {
        Self { buf: Box::new([0; HEADROOM + DATA_ROOM]), head: HEADROOM as u16, len: 0 }
    }

    /// Reset to empty and copy `data` in after the headroom; truncated to the data room.
    pub fn fill(&mut self, data: &[u8]) {
        let n = data.len().min(DATA_ROOM);
        self.head = HEADROOM as u16;
        self.len = n as u16;
        self.buf[HEADROOM..HEADROOM + n].copy_from_slice(&data[..n]);
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> Self {
        let mut b = Self::new();
        b.fill(data);
        b
    }
}

impl PacketBuf for MemBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[usize::from(self.head)..usize::from(self.head) + usize::from(self.len)]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[usize::from(self.head)..usize::from(self.head) + usize::from(self.len)]
    }
    #[inline]
    fn data_len(&self) -> usize {
        usize::from(self.len)
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > usize::from(self.head) {
            return false;
        }
        self.head -= n as u16;
        self.len += n as u16;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        if n > usize::from(self.len) {
            return false;
        }
        self.head += n as u16;
        self.len -= n as u16;
        true
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        if usize::from(self.head) + len > self.buf.len() {
            return false;
        }
        self.len = len as u16;
        true
    }
    #[inline]
    fn tailroom(&self) -> usize {
        self.buf.len() - usize::from(self.head) - usize::from(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_accounting() {
        // `data_len` is the slice's length after every change of room.
        let same = |b: &MemBuf| assert_eq!(b.data_len(), b.data().len());
        let mut b = MemBuf::from_slice(&[1, 2, 3]);
        assert_eq!(b.data(), &[1, 2, 3]);
        same(&b);
        assert!(b.prepend(HEADROOM));
        same(&b);
        assert!(!b.prepend(1));
        assert!(b.adj(HEADROOM));
        assert_eq!(b.data(), &[1, 2, 3]);
        same(&b);
        assert!(!b.adj(4));
        assert_eq!(b.tailroom(), DATA_ROOM - 3);
        assert!(b.set_len(DATA_ROOM));
        same(&b);
        assert!(!b.set_len(DATA_ROOM + 1));
        same(&b);
        let mut big = MemBuf::new();
        big.fill(&[0u8; DATA_ROOM + 10]);
        assert_eq!(big.data().len(), DATA_ROOM);
        same(&big);
        same(&MemBuf::new());
    }
}
