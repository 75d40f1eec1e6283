//! ARP for Ethernet/IPv4 (RFC 826). Only the Ethernet/IPv4 form is accepted: `check_len` rejects other hardware
//! or protocol types, after which no accessor panics.

use super::{get_u16, set_u16, ParseError};

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;
/// ARP request (RFC 826).
pub const OP_REQUEST: u16 = 1;
/// ARP reply (RFC 826).
pub const OP_REPLY: u16 = 2;

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    /// Wrap and check.
    ///
    /// # Errors
    /// See [`ArpPacket::check_len`].
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }

    /// Check length and that this is Ethernet (1) / IPv4 (0x0800) with 6/4-byte addresses.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] under 28 bytes, [`ParseError::BadArp`] for other address types.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let b = self.buf.as_ref();
        if b.len() < LEN {
            return Err(ParseError::Truncated);
        }
        if get_u16(b, field::HTYPE) != 1
            || get_u16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(ParseError::BadArp);
        }
        Ok(())
    }

    /// Operation (request 1, reply 2).
    pub fn operation(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::OPER)
    }
    /// Sender hardware address.
    pub fn sender_mac(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[field::SHA]);
        m
    }
    /// Sender protocol address.
    pub fn sender_ip(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buf.as_ref()[field::SPA]);
        a
    }
    /// Target hardware address.
    pub fn target_mac(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[field::THA]);
        m
    }
    /// Target protocol address.
    pub fn target_ip(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buf.as_ref()[field::TPA]);
        a
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Write the fixed Ethernet/IPv4 type fields (htype, ptype, hlen, plen).
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buf.as_mut();
        set_u16(b, field::HTYPE, 1);
        set_u16(b, field::PTYPE, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }
    /// Set the operation.
    pub fn set_operation(&mut self, op: u16) {
        set_u16(self.buf.as_mut(), field::OPER, op);
    }
    /// Set sender MAC and IP.
    pub fn set_sender(&mut self, mac: [u8; 6], ip: [u8; 4]) {
        let b = self.buf.as_mut();
        b[field::SHA].copy_from_slice(&mac);
        b[field::SPA].copy_from_slice(&ip);
    }
    /// Set target MAC and IP.
    pub fn set_target(&mut self, mac: [u8; 6], ip: [u8; 4]) {
        let b = self.buf.as_mut();
        b[field::THA].copy_from_slice(&mac);
        b[field::TPA].copy_from_slice(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::hex;

    const REQ: &str = "0001 0800 06 04 0001 020000000001 c6120001 000000000000 c6130001";

    #[test]
    fn decode() {
        let b = hex(REQ);
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_mac(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(p.sender_ip(), [198, 18, 0, 1]);
        assert_eq!(p.target_mac(), [0; 6]);
        assert_eq!(p.target_ip(), [198, 19, 0, 1]);
    }

    #[test]
    fn encode_over_marker() {
        let mut b = [0xa5u8; 29];
        let mut p = ArpPacket::new_unchecked(&mut b[..]);
        p.set_ethernet_ipv4();
        p.set_operation(OP_REQUEST);
        p.set_sender([2, 0, 0, 0, 0, 1], [198, 18, 0, 1]);
        p.set_target([0; 6], [198, 19, 0, 1]);
        let mut want = hex(REQ);
        want.push(0xa5);
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn rejects_truncated_and_other_types() {
        let b = hex(REQ);
        assert_eq!(ArpPacket::new_checked(&b[..27]).unwrap_err(), ParseError::Truncated);
        let mut other = b.clone();
        other[5] = 16; // IPv6-length protocol address
        assert_eq!(ArpPacket::new_checked(&other[..]).unwrap_err(), ParseError::BadArp);
        let mut longer = b.clone();
        longer.extend_from_slice(&[0; 18]); // Ethernet padding is fine
        assert!(ArpPacket::new_checked(&longer[..]).is_ok());
    }
}
