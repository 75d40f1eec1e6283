//! UDP header (RFC 768). `check_len` validates the length field against the buffer (the buffer is the IP payload);
//! after it succeeds no accessor panics.

use super::{get_u16, set_u16, ParseError};

/// UDP header length.
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 6;

/// A view of a UDP header and payload.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }
    /// Wrap and check.
    ///
    /// # Errors
    /// See [`UdpPacket::check_len`].
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }
    /// Check the header and the length field.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] under 8 bytes or when the length field exceeds the buffer;
    /// [`ParseError::BadTotalLen`] when the length field is below 8.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let b = self.buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        let l = usize::from(get_u16(b, 4));
        if l < HEADER_LEN {
            return Err(ParseError::BadTotalLen);
        }
        if l > b.len() {
            return Err(ParseError::Truncated);
        }
        Ok(())
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), 0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), 2)
    }
    /// Length field (header + payload).
    pub fn len(&self) -> u16 {
        get_u16(self.buf.as_ref(), 4)
    }
    /// True when the length field covers only the header.
    pub fn is_empty(&self) -> bool {
        self.len() as usize == HEADER_LEN
    }
    /// Checksum field (0: none, IPv4 only).
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), CHECKSUM_OFFSET)
    }
    /// Payload as covered by the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Set source port.
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 0, v);
    }
    /// Set destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 2, v);
    }
    /// Set length field.
    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), 4, v);
    }
    /// Set checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), CHECKSUM_OFFSET, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::hex;

    #[test]
    fn decode() {
        let b = hex("d431 0035 000b 1a2b 616263");
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len(), u.checksum()), (54321, 53, 11, 0x1a2b));
        assert_eq!(u.payload(), b"abc");
        assert!(!u.is_empty());
    }

    #[test]
    fn encode_over_marker() {
        let mut b = [0xa5u8; 9];
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_src_port(54321);
        u.set_dst_port(53);
        u.set_len(8);
        u.set_checksum(0x1a2b);
        assert_eq!(&b[..], &hex("d431 0035 0008 1a2b a5")[..]);
    }

    #[test]
    fn malformed() {
        assert_eq!(UdpPacket::new_checked(&hex("d4310035000b")[..]).unwrap_err(), ParseError::Truncated);
        assert_eq!(UdpPacket::new_checked(&hex("d431 0035 000c 0000 6162")[..]).unwrap_err(), ParseError::Truncated);
        assert_eq!(UdpPacket::new_checked(&hex("d431 0035 0007 0000")[..]).unwrap_err(), ParseError::BadTotalLen);
        // Overlong buffer: payload follows the length field, not the buffer.
        let b = hex("d431 0035 0009 0000 61 000000");
        assert_eq!(UdpPacket::new_checked(&b[..]).unwrap().payload(), b"a");
    }
}
