//! TCP header (RFC 9293 §3.1). After `check_len` no accessor panics.

use super::{get_u16, get_u32, set_u16, set_u32, ParseError};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;

/// TCP flag bits (RFC 9293 §3.1, RFC 3168).
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// A view of a TCP header and payload.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }
    /// Wrap and check.
    ///
    /// # Errors
    /// See [`TcpPacket::check_len`].
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }
    /// Check the fixed header and the data offset against the buffer.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] or [`ParseError::BadHeaderLen`] (data offset below 5).
    pub fn check_len(&self) -> Result<(), ParseError> {
        let b = self.buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let hl = usize::from(b[field::OFF] >> 4) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(ParseError::BadHeaderLen);
        }
        if b.len() < hl {
            return Err(ParseError::Truncated);
        }
        Ok(())
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::SRC_PORT)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::DST_PORT)
    }
    /// Sequence number.
    pub fn seq(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::SEQ)
    }
    /// Acknowledgement number.
    pub fn ack(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::ACK)
    }
    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::OFF] >> 4) * 4
    }
    /// Flag byte (CWR..FIN).
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }
    /// Window.
    pub fn window(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::WINDOW)
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::CHECKSUM)
    }
    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::URGENT)
    }
    /// Payload after the header and options.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Set source port.
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::SRC_PORT, v);
    }
    /// Set destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::DST_PORT, v);
    }
    /// Set sequence number.
    pub fn set_seq(&mut self, v: u32) {
        set_u32(self.buf.as_mut(), field::SEQ, v);
    }
    /// Set acknowledgement number.
    pub fn set_ack(&mut self, v: u32) {
        set_u32(self.buf.as_mut(), field::ACK, v);
    }
    /// Set header length in bytes (multiple of 4) and flags.
    pub fn set_header_len_flags(&mut self, hl: usize, flags: u8) {
        let b = self.buf.as_mut();
        b[field::OFF] = ((hl / 4) as u8) << 4;
        b[field::FLAGS] = flags;
    }
    /// Set window.
    pub fn set_window(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::WINDOW, v);
    }
    /// Set checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::CHECKSUM, v);
    }
    /// Set urgent pointer.
    pub fn set_urgent(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::URGENT, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::hex;

    const SYN: &str = "c350 0050 00000064 00000000 6002 ffff 1234 0000 020405b4";

    #[test]
    fn decode() {
        let b = hex(SYN);
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port(), t.seq(), t.ack()), (50000, 80, 100, 0));
        assert_eq!(t.header_len(), 24);
        assert_eq!(t.flags(), flags::SYN);
        assert_eq!((t.window(), t.checksum(), t.urgent()), (0xffff, 0x1234, 0));
        assert!(t.payload().is_empty());
    }

    #[test]
    fn encode_over_marker() {
        let mut b = [0xa5u8; 25];
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_src_port(50000);
        t.set_dst_port(80);
        t.set_seq(100);
        t.set_ack(0);
        t.set_header_len_flags(24, flags::SYN);
        t.set_window(0xffff);
        t.set_checksum(0x1234);
        t.set_urgent(0);
        b[20..24].copy_from_slice(&[2, 4, 5, 0xb4]);
        let mut want = hex(SYN);
        want.push(0xa5);
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn malformed() {
        let b = hex(SYN);
        assert_eq!(TcpPacket::new_checked(&b[..19]).unwrap_err(), ParseError::Truncated);
        assert_eq!(TcpPacket::new_checked(&b[..22]).unwrap_err(), ParseError::Truncated);
        let mut v = b.clone();
        v[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&v[..]).unwrap_err(), ParseError::BadHeaderLen);
        let mut long = b.clone();
        long.extend_from_slice(b"GET");
        assert_eq!(TcpPacket::new_checked(&long[..]).unwrap().payload(), b"GET");
    }
}
