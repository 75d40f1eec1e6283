//! ICMPv4 (RFC 792, RFC 1191) and ICMPv6 (RFC 4443) messages. Both share the 8-byte layout
//! type / code / checksum / rest-of-header, so one view serves both; the constants say which family a type is for.
//!
//! Error messages carry the offending packet's IP header and at least 8 bytes of its payload
//! ([`IcmpPacket::data`]); callers parse that embedded header with the IPv4/IPv6 views. After `check_len` no accessor
//! panics.

use super::{get_u16, set_u16, ParseError};

/// Header length (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 2;

/// ICMPv4 types and codes (RFC 792, RFC 1191).
pub mod v4 {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 3;
    /// Code of destination unreachable: fragmentation needed and DF set (RFC 1191 §4).
    pub const CODE_FRAG_NEEDED: u8 = 4;
    /// Source quench (deprecated, RFC 6633) — still an error message carrying a header.
    pub const SOURCE_QUENCH: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;

    /// True for the error types that embed the offending IP header.
    pub const fn is_error(t: u8) -> bool {
        matches!(t, DEST_UNREACH | SOURCE_QUENCH | TIME_EXCEEDED | PARAM_PROBLEM)
    }
}

/// ICMPv6 types (RFC 4443, RFC 4861).
pub mod v6 {
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbor solicitation (RFC 4861 §4.3).
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement (RFC 4861 §4.4).
    pub const NEIGHBOR_ADVERT: u8 = 136;

    /// True for the error types (type < 128, RFC 4443 §2.1).
    pub const fn is_error(t: u8) -> bool {
        t < 128
    }

    /// True for neighbour discovery messages handled by the slow path.
    pub const fn is_ndp(t: u8) -> bool {
        matches!(t, ROUTER_SOLICIT..=NEIGHBOR_ADVERT | 137)
    }
}

/// A view of an ICMP (v4 or v6) message.
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }
    /// Wrap and check.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] under 8 bytes.
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }
    /// Check the 8-byte header fits.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] under 8 bytes.
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buf.as_ref().len() < HEADER_LEN {
            Err(ParseError::Truncated)
        } else {
            Ok(())
        }
    }
    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    /// Code.
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), CHECKSUM_OFFSET)
    }
    /// Echo identifier (bytes 4..6).
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buf.as_ref(), 4)
    }
    /// Echo sequence number (bytes 6..8).
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buf.as_ref(), 6)
    }
    /// Next-hop MTU of an ICMPv4 fragmentation-needed message (RFC 1191 §4, bytes 6..8).
    pub fn next_hop_mtu_v4(&self) -> u16 {
        get_u16(self.buf.as_ref(), 6)
    }
    /// MTU of an ICMPv6 packet-too-big message (RFC 4443 §3.2, bytes 4..8).
    pub fn mtu_v6(&self) -> u32 {
        super::get_u32(self.buf.as_ref(), 4)
    }
    /// Data after the 8-byte header (the embedded packet of an error message).
    pub fn data(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Set type and code.
    pub fn set_type_code(&mut self, t: u8, c: u8) {
        let b = self.buf.as_mut();
        b[0] = t;
        b[1] = c;
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), CHECKSUM_OFFSET, v);
    }
    /// Set the 4 rest-of-header bytes.
    pub fn set_rest(&mut self, r: [u8; 4]) {
        self.buf.as_mut()[4..8].copy_from_slice(&r);
    }
    /// Mutable data after the header.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::hex;

    #[test]
    fn decode_echo_and_errors() {
        let b = hex("0800 f7fd 0001 0001 6869");
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.msg_type(), p.code(), p.checksum()), (v4::ECHO_REQUEST, 0, 0xf7fd));
        assert_eq!((p.echo_ident(), p.echo_seq()), (1, 1));
        assert_eq!(p.data(), b"hi");
        let b = hex("0304 0000 0000 05dc 45");
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert!(v4::is_error(p.msg_type()));
        assert_eq!(p.next_hop_mtu_v4(), 1500);
        let b = hex("0200 0000 000005dc");
        assert_eq!(IcmpPacket::new_checked(&b[..]).unwrap().mtu_v6(), 1500);
        assert!(v6::is_error(v6::PACKET_TOO_BIG) && !v6::is_error(v6::ECHO_REQUEST));
        assert!(v6::is_ndp(v6::NEIGHBOR_SOLICIT));
    }

    #[test]
    fn encode_over_marker() {
        let mut b = [0xa5u8; 9];
        let mut p = IcmpPacket::new_unchecked(&mut b[..]);
        p.set_type_code(v4::ECHO_REPLY, 0);
        p.set_checksum(0xbeef);
        p.set_rest([0, 1, 0, 2]);
        assert_eq!(&b[..], &hex("0000 beef 0001 0002 a5")[..]);
    }

    #[test]
    fn truncated() {
        assert_eq!(IcmpPacket::new_checked(&[8u8, 0, 0, 0, 0, 0, 0][..]).unwrap_err(), ParseError::Truncated);
    }
}
