//! In-memory ports: a pair of bounded lock-free rings (`crossbeam` `ArrayQueue`). The port end is driven by a
//! worker; the [`MemPeer`] end is driven by a test, a generator or another port. Nothing allocates per packet:
//! buffers move between the rings by value (a boxed array each).

use super::{Burst, Port, PortStats};
use crate::packet::{MemBuf, PacketBuf};
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// The worker's end.
#[derive(Debug)]
pub struct MemPort {
    name: String,
    rx: Arc<ArrayQueue<MemBuf>>,
    tx: Arc<ArrayQueue<MemBuf>>,
    stats: PortStats,
}

/// The other end: inject packets the port will receive, collect packets it transmitted.
#[derive(Debug, Clone)]
pub struct MemPeer {
    rx: Arc<ArrayQueue<MemBuf>>,
    tx: Arc<ArrayQueue<MemBuf>>,
}

/// A port and its peer with rings of `depth` packets each way.
pub fn pair(name: &str, depth: usize) -> (MemPort, MemPeer) {
    let rx = Arc::new(ArrayQueue::new(depth));
    let tx = Arc::new(ArrayQueue::new(depth));
    (
        MemPort { name: name.to_string(), rx: rx.clone(), tx: tx.clone(), stats: PortStats::default() },
        MemPeer { rx, tx },
    )
}

impl MemPeer {
    /// Queue a packet for the port to receive. Gives the buffer back when the ring is full.
    ///
    /// # Errors
    /// The buffer, when the ring is full.
    pub fn inject(&self, buf: MemBuf) -> Result<(), MemBuf> {
        self.rx.push(buf)
    }
    /// Queue a copy of `bytes`. False when the ring is full.
    pub fn inject_bytes(&self, bytes: &[u8]) -> bool {
        self.rx.push(MemBuf::from_slice(bytes)).is_ok()
    }
    /// Take the next transmitted packet.
    pub fn collect(&self) -> Option<MemBuf> {
        self.tx.pop()
    }
}

impl Port for MemPort {
    type Buf = MemBuf;

    fn rx_burst(&mut self, out: &mut Burst<MemBuf>) -> usize {
        let mut n = 0;
        while !out.is_full() {
            let Some(b) = self.rx.pop() else { break };
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += b.data_len() as u64;
            out.push(b);
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, pkts: &mut Burst<MemBuf>) -> usize {
        // Only this port pushes to its tx ring, so the room can only grow while we push.
        let room = self.tx.capacity() - self.tx.len();
        let sent = room.min(pkts.len());
        for b in pkts.drain(..sent) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += b.data_len() as u64;
            if let Err(b) = self.tx.push(b) {
                self.stats.tx_dropped += 1;
                drop(b);
            }
        }
        sent
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_and_backpressure() {
        let (mut port, peer) = pair("m0", 4);
        for i in 0..5u8 {
            let ok = peer.inject_bytes(&[i; 60]);
            assert_eq!(ok, i < 4);
        }
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut burst), 4);
        assert_eq!(burst[3].data()[0], 3);
        burst.push(MemBuf::from_slice(&[9; 60]));
        assert_eq!(port.tx_burst(&mut burst), 4, "tx ring holds 4");
        assert_eq!(burst.len(), 1);
        assert_eq!(peer.collect().unwrap().data()[0], 0);
        let s = port.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.rx_bytes), (4, 4, 240));
    }
}
