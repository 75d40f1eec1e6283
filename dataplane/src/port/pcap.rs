//! A port over capture files: receives the packets of a pcap file once, in order, and writes what it transmits
//! to another pcap file. For replaying captures through the pipeline and for golden-packet fixtures.

use super::{Burst, Port, PortStats};
use crate::packet::{MemBuf, PacketBuf};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::DataLink;
use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::Duration;

/// Errors opening or writing captures.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file could not be opened or created.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a readable Ethernet pcap.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Read every packet of an Ethernet pcap file.
///
/// # Errors
/// [`PcapError`] when the file cannot be read or is not Ethernet.
pub fn read_all(path: &Path) -> Result<Vec<Vec<u8>>, PcapError> {
    let p = path.display().to_string();
    let f = File::open(path).map_err(|source| PcapError::Io { path: p.clone(), source })?;
    let mut r = PcapReader::new(f).map_err(|e| PcapError::Format { path: p.clone(), message: e.to_string() })?;
    if r.header().datalink != DataLink::ETHERNET {
        return Err(PcapError::Format {
            path: p,
            message: format!("link type {:?}, want Ethernet", r.header().datalink),
        });
    }
    let mut out = Vec::new();
    while let Some(pkt) = r.next_packet() {
        let pkt = pkt.map_err(|e| PcapError::Format { path: p.clone(), message: e.to_string() })?;
        out.push(pkt.data.into_owned());
    }
    Ok(out)
}

/// Receives a capture's packets, writes transmitted ones to another capture.
pub struct PcapPort {
    name: String,
    input: VecDeque<Vec<u8>>,
    out: PcapWriter<BufWriter<File>>,
    stats: PortStats,
    ts: u64,
}

impl std::fmt::Debug for PcapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapPort").field("name", &self.name).field("stats", &self.stats).finish()
    }
}

impl PcapPort {
    /// Open `input` for receiving and create `output` for transmitting.
    ///
    /// # Errors
    /// [`PcapError`] when either file cannot be used.
    pub fn open(input: &Path, output: &Path) -> Result<Self, PcapError> {
        let pkts = read_all(input)?;
        let o = output.display().to_string();
        let f = File::create(output).map_err(|source| PcapError::Io { path: o.clone(), source })?;
        let out = PcapWriter::with_header(
            BufWriter::new(f),
            PcapHeader { datalink: DataLink::ETHERNET, ..PcapHeader::default() },
        )
        .map_err(|e| PcapError::Format { path: o, message: e.to_string() })?;
        Ok(Self { name: input.display().to_string(), input: pkts.into(), out, stats: PortStats::default(), ts: 0 })
    }
}

impl Port for PcapPort {
    type Buf = MemBuf;

    fn rx_burst(&mut self, out: &mut Burst<MemBuf>) -> usize {
        let mut n = 0;
        while !out.is_full() {
            let Some(p) = self.input.pop_front() else { break };
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += p.len() as u64;
            out.push(MemBuf::from_slice(&p));
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, pkts: &mut Burst<MemBuf>) -> usize {
        let n = pkts.len();
        for b in pkts.drain(..) {
            self.ts += 1;
            let d = b.data();
            let pkt = PcapPacket::new(Duration::from_micros(self.ts), d.len() as u32, d);
            if self.out.write_packet(&pkt).is_ok() {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += d.len() as u64;
            } else {
                self.stats.tx_dropped += 1;
            }
        }
        n
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    fn name(&self) -> &str {
        &self.name
    }
}
