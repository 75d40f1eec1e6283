//! IPv6 header (RFC 8200 §3) and its extension-header chain (§4): hop-by-hop, routing, destination options,
//! fragment and AH.
//!
//! `check_len` validates the fixed header against the buffer; afterwards no accessor panics.
//! [`Ipv6Packet::walk`] follows the extension chain (at most [`MAX_EXT_HEADERS`]) and returns an error, never a
//! panic, when the chain is cut off or malformed.

use super::{get_u16, get_u32, proto, set_u16, set_u32, ParseError};

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Extension headers walked before giving up (RFC 8200 §4.1 recommends a small bound; RFC 7112 wants the chain
/// in the first fragment).
pub const MAX_EXT_HEADERS: usize = 8;
/// Length of a fragment extension header (RFC 8200 §4.5).
pub const FRAG_HEADER_LEN: usize = 8;
/// Offset of the source address.
pub const SRC_OFFSET: usize = field::SRC.start;
/// Offset of the destination address.
pub const DST_OFFSET: usize = field::DST.start;
/// Minimum link MTU for IPv6 (RFC 8200 §5).
pub const MIN_MTU: usize = 1280;

/// Fragment extension-header contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragInfo {
    /// Offset in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// Where the upper-layer header starts, what it is, and the fragment header if there was one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upper {
    /// Upper-layer protocol (TCP, UDP, ICMPv6, ...; `proto::NONE` for no next header).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Fragment header, if present.
    pub frag: Option<FragInfo>,
}

/// A view of an IPv6 header and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    /// Wrap and check.
    ///
    /// # Errors
    /// See [`Ipv6Packet::check_len`].
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }

    /// Validate version and payload length.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] when the buffer is shorter than 40 + payload length;
    /// [`ParseError::BadVersion`] unless version is 6; [`ParseError::BadTotalLen`] for a zero payload length with a
    /// non-empty payload (jumbograms, RFC 2675, are not supported).
    pub fn check_len(&self) -> Result<(), ParseError> {
        let b = self.buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(ParseError::BadVersion);
        }
        let pl = usize::from(get_u16(b, field::PAYLOAD_LEN));
        if b.len() < HEADER_LEN + pl {
            return Err(ParseError::Truncated);
        }
        if pl == 0 && b[field::NEXT_HEADER] == proto::HOPOPTS {
            return Err(ParseError::BadTotalLen);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
    /// Version (6 after `check_len`).
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[0] >> 4
    }
    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        ((get_u32(self.buf.as_ref(), field::VER_TC_FLOW) >> 20) & 0xff) as u8
    }
    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }
    /// Payload length.
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::PAYLOAD_LEN)
    }
    /// Next header of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[field::NEXT_HEADER]
    }
    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[field::HOP_LIMIT]
    }
    /// Source address.
    pub fn src(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::SRC]);
        a
    }
    /// Destination address.
    pub fn dst(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::DST]);
        a
    }
    /// Total length of header plus payload.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }
    /// Payload (extension headers included) as covered by the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.total_len()]
    }

    /// Walk the extension-header chain to the upper-layer header.
    ///
    /// A non-first fragment stops the walk at the fragment header: what follows is not a header.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] when an extension header is cut off; [`ParseError::BadExtHeader`] when hop-by-hop
    /// is not first or the chain is longer than [`MAX_EXT_HEADERS`].
    pub fn walk(&self) -> Result<Upper, ParseError> {
        let b = &self.buf.as_ref()[..self.total_len()];
        let mut nh = self.next_header();
        let mut off = HEADER_LEN;
        let mut frag = None;
        for i in 0..=MAX_EXT_HEADERS {
            let len = match nh {
                proto::HOPOPTS | proto::ROUTING | proto::DSTOPTS => {
                    if nh == proto::HOPOPTS && i != 0 {
                        return Err(ParseError::BadExtHeader);
                    }
                    if b.len() < off + 2 {
                        return Err(ParseError::Truncated);
                    }
                    (usize::from(b[off + 1]) + 1) * 8
                }
                proto::AH => {
                    if b.len() < off + 2 {
                        return Err(ParseError::Truncated);
                    }
                    // RFC 4302 §2.2: the header is at least 12 bytes (next header, length, reserved, SPI,
                    // sequence number), so its length field (32-bit words minus 2) is at least 1.
                    if b[off + 1] == 0 {
                        return Err(ParseError::BadExtHeader);
                    }
                    (usize::from(b[off + 1]) + 2) * 4
                }
                proto::FRAGMENT => {
                    if b.len() < off + FRAG_HEADER_LEN {
                        return Err(ParseError::Truncated);
                    }
                    let fo = get_u16(b, off + 2);
                    let info = FragInfo { offset: fo & 0xfff8, more: fo & 1 != 0, ident: get_u32(b, off + 4) };
                    frag = Some(info);
                    if info.offset != 0 {
                        return Ok(Upper { protocol: b[off], offset: off + FRAG_HEADER_LEN, frag });
                    }
                    FRAG_HEADER_LEN
                }
                _ => return Ok(Upper { protocol: nh, offset: off, frag }),
            };
            if b.len() < off + len {
                return Err(ParseError::Truncated);
            }
            nh = b[off];
            off += len;
        }
        Err(ParseError::BadExtHeader)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Set version 6, traffic class and flow label.
    pub fn set_ver_tc_flow(&mut self, tc: u8, flow: u32) {
        set_u32(self.buf.as_mut(), field::VER_TC_FLOW, (6 << 28) | (u32::from(tc) << 20) | (flow & 0x000f_ffff));
    }
    /// Set payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::PAYLOAD_LEN, v);
    }
    /// Set next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buf.as_mut()[field::NEXT_HEADER] = v;
    }
    /// Set hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buf.as_mut()[field::HOP_LIMIT] = v;
    }
    /// Set source address.
    pub fn set_src(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&a);
    }
    /// Set destination address.
    pub fn set_dst(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::DST].copy_from_slice(&a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::hex;

    const SRC: &str = "20010db8000000000000000000000001";
    const DST: &str = "20010db8000100000000000000000001";

    fn with_payload(nh: u8, payload: &str) -> Vec<u8> {
        let p = hex(payload);
        let mut b = hex(&format!("60000000 {:04x} {nh:02x} 40 {SRC} {DST}", p.len()));
        b.extend_from_slice(&p);
        b
    }

    #[test]
    fn decode_fixed() {
        let mut b = with_payload(proto::UDP, "0035 0035 0008 0000");
        b[1] = 0xa1; // traffic class 0x0a, flow label 0x1....
        b[2..4].copy_from_slice(&[0x23, 0x45]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x0a);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src()[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(p.walk().unwrap(), Upper { protocol: proto::UDP, offset: 40, frag: None });
    }

    #[test]
    fn walk_chain() {
        // hop-by-hop (8) -> routing (8+8) -> dstopts (8) -> fragment (first) -> TCP
        let b = with_payload(
            proto::HOPOPTS,
            "2b00 010400000000  3c01 000000000000 0000000000000000  2c00 0104 00000000  0600 0001 deadbeef  0050",
        );
        let up = Ipv6Packet::new_checked(&b[..]).unwrap().walk().unwrap();
        assert_eq!(up.protocol, proto::TCP);
        assert_eq!(up.offset, 40 + 8 + 16 + 8 + 8);
        assert_eq!(up.frag, Some(FragInfo { offset: 0, more: true, ident: 0xdeadbeef }));
    }

    #[test]
    fn non_first_fragment_stops() {
        let b = with_payload(proto::FRAGMENT, "1100 05a8 00000007 0102030405060708");
        let up = Ipv6Packet::new_checked(&b[..]).unwrap().walk().unwrap();
        assert_eq!(up.protocol, proto::UDP);
        assert_eq!(up.offset, 48);
        assert_eq!(up.frag, Some(FragInfo { offset: 1448, more: false, ident: 7 }));
    }

    #[test]
    fn malformed_chains() {
        // hop-by-hop after a destination-options header
        let b = with_payload(proto::DSTOPTS, "0000 010400000000 1100 010400000000");
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().walk(), Err(ParseError::BadExtHeader));
        // routing header claiming 16 bytes with 8 present
        let b = with_payload(proto::ROUTING, "0601 000000000000");
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().walk(), Err(ParseError::Truncated));
        // nine destination-options headers
        let b = with_payload(proto::DSTOPTS, &"3c00010400000000".repeat(9));
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().walk(), Err(ParseError::BadExtHeader));
        // an AH of length 0: 8 bytes, shorter than its 12-byte fixed part (RFC 4302 §2.2; found by the fuzzer)
        let b = with_payload(proto::AH, "1100 0000 00000001  0035 0035 0008 0000");
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().walk(), Err(ParseError::BadExtHeader));
        // the smallest valid AH (length 1: 12 bytes) is walked
        let b = with_payload(proto::AH, "1101 0000 00000001 00000001  0035 0035 0008 0000");
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().walk().unwrap().offset, 52);
    }

    #[test]
    fn malformed_fixed() {
        let b = with_payload(proto::UDP, "0035 0035 0008 0000");
        assert_eq!(Ipv6Packet::new_checked(&b[..39]).unwrap_err(), ParseError::Truncated);
        assert_eq!(Ipv6Packet::new_checked(&b[..47]).unwrap_err(), ParseError::Truncated);
        let mut v = b.clone();
        v[0] = 0x40;
        assert_eq!(Ipv6Packet::new_checked(&v[..]).unwrap_err(), ParseError::BadVersion);
        let mut long = b.clone();
        long.extend_from_slice(&[0; 6]);
        assert_eq!(Ipv6Packet::new_checked(&long[..]).unwrap().payload().len(), 8);
    }

    #[test]
    fn encode_over_marker() {
        let mut b = [0xa5u8; 41];
        let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
        p.set_ver_tc_flow(0, 0);
        p.set_payload_len(8);
        p.set_next_header(proto::UDP);
        p.set_hop_limit(64);
        p.set_src(hex(SRC).try_into().unwrap());
        p.set_dst(hex(DST).try_into().unwrap());
        let want = with_payload(proto::UDP, "0035 0035 0008 0000");
        assert_eq!(&b[..40], &want[..40]);
        assert_eq!(b[40], 0xa5);
    }
}
