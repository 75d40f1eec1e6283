//! IPv4 header (RFC 791) with options and fragment fields.
//!
//! `check_len` validates version, IHL and total length against the buffer; after it succeeds no accessor panics
//! and [`Ipv4Packet::payload`] is exactly the bytes the total-length field covers (Ethernet padding excluded).

use super::checksum;
use super::{get_u16, set_u16, ParseError};

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Don't Fragment flag (RFC 791 §3.1).
pub const FLAG_DF: u16 = 0x4000;
/// More Fragments flag (RFC 791 §3.1).
pub const FLAG_MF: u16 = 0x2000;
/// Offset of the checksum field, for callers that patch it incrementally.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;
/// Offset of the source address.
pub const SRC_OFFSET: usize = field::SRC.start;
/// Offset of the destination address.
pub const DST_OFFSET: usize = field::DST.start;

/// A view of an IPv4 header and its payload.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    /// Wrap and check.
    ///
    /// # Errors
    /// See [`Ipv4Packet::check_len`].
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }

    /// Validate version, IHL and total length.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] when the buffer is shorter than the header or the total length;
    /// [`ParseError::BadVersion`] unless version is 4; [`ParseError::BadHeaderLen`] when IHL < 5;
    /// [`ParseError::BadTotalLen`] when the total length is below the header length.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let b = self.buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(ParseError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(ParseError::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(ParseError::BadHeaderLen);
        }
        let total = usize::from(get_u16(b, field::TOTAL_LEN));
        if total < hl {
            return Err(ParseError::BadTotalLen);
        }
        if b.len() < total {
            return Err(ParseError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Version (4 after `check_len`).
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// DSCP and ECN byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.buf.as_ref()[field::DSCP_ECN]
    }
    /// Total length field.
    pub fn total_len(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::TOTAL_LEN)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::IDENT)
    }
    /// Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }
    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        get_u16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x1fff) << 3
    }
    /// True for any fragment (MF set or offset non-zero).
    pub fn is_fragment(&self) -> bool {
        get_u16(self.buf.as_ref(), field::FLAGS_FRAG) & (FLAG_MF | 0x1fff) != 0
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }
    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field::PROTOCOL]
    }
    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::CHECKSUM)
    }
    /// Source address.
    pub fn src(&self) -> [u8; 4] {
        let b = self.buf.as_ref();
        [b[12], b[13], b[14], b[15]]
    }
    /// Destination address.
    pub fn dst(&self) -> [u8; 4] {
        let b = self.buf.as_ref();
        [b[16], b[17], b[18], b[19]]
    }
    /// Options (bytes between the fixed header and the payload).
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }
    /// Payload as covered by the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buf.as_ref()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Set version 4 and the header length in bytes (a multiple of 4, 20 to 60).
    pub fn set_version_and_header_len(&mut self, hl: usize) {
        self.buf.as_mut()[field::VER_IHL] = 0x40 | ((hl / 4) as u8 & 0x0f);
    }
    /// Set DSCP/ECN.
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buf.as_mut()[field::DSCP_ECN] = v;
    }
    /// Set total length.
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::TOTAL_LEN, v);
    }
    /// Set identification.
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::IDENT, v);
    }
    /// Set flags (DF/MF bits) and fragment offset in bytes (a multiple of 8).
    pub fn set_flags_frag(&mut self, df: bool, mf: bool, offset: u16) {
        let v = (if df { FLAG_DF } else { 0 }) | (if mf { FLAG_MF } else { 0 }) | ((offset >> 3) & 0x1fff);
        set_u16(self.buf.as_mut(), field::FLAGS_FRAG, v);
    }
    /// Set TTL.
    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[field::TTL] = v;
    }
    /// Set protocol.
    pub fn set_protocol(&mut self, v: u8) {
        self.buf.as_mut()[field::PROTOCOL] = v;
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::CHECKSUM, v);
    }
    /// Set source address.
    pub fn set_src(&mut self, a: [u8; 4]) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&a);
    }
    /// Set destination address.
    pub fn set_dst(&mut self, a: [u8; 4]) {
        self.buf.as_mut()[field::DST].copy_from_slice(&a);
    }
    /// Recompute the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buf.as_ref()[..hl]);
        self.set_checksum(c);
    }
    /// Decrement TTL and patch the checksum incrementally (RFC 1624). Returns the new TTL.
    pub fn decrement_ttl(&mut self) -> u8 {
        let b = self.buf.as_mut();
        let old = get_u16(b, field::TTL);
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let new = get_u16(b, field::TTL);
        let c = checksum::update16(get_u16(b, field::CHECKSUM), old, new);
        set_u16(b, field::CHECKSUM, c);
        b[field::TTL]
    }
    /// Mutable payload as covered by the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buf.as_mut()[hl..tl]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::hex;

    // 198.18.0.1 -> 198.19.0.1, TCP, id 0x1234, DF, TTL 64, one NOP+EOL option word, 4 payload bytes.
    const PKT: &str = "4600001c 12344000 4006 0000 c6120001 c6130001 01000000 deadbeef";

    fn pkt() -> Vec<u8> {
        let mut b = hex(PKT);
        let c = checksum::checksum(&b[..24]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn decode() {
        let b = pkt();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.src(), [198, 18, 0, 1]);
        assert_eq!(p.dst(), [198, 19, 0, 1]);
        assert_eq!(p.options(), &[1, 0, 0, 0]);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn fragment_fields() {
        let mut b = pkt();
        b[6..8].copy_from_slice(&(FLAG_MF | 185).to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
    }

    #[test]
    fn encode_over_marker() {
        let mut b = [0xa5u8; 29];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version_and_header_len(24);
        p.set_dscp_ecn(0);
        p.set_total_len(28);
        p.set_ident(0x1234);
        p.set_flags_frag(true, false, 0);
        p.set_ttl(64);
        p.set_protocol(6);
        p.set_src([198, 18, 0, 1]);
        p.set_dst([198, 19, 0, 1]);
        b[20..24].copy_from_slice(&[1, 0, 0, 0]);
        b[24..28].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        Ipv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        let mut want = pkt();
        want.push(0xa5);
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn overlong_buffer_payload_excludes_padding() {
        let mut b = pkt();
        b.extend_from_slice(&[0; 10]);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
    }

    #[test]
    fn malformed() {
        let b = pkt();
        assert_eq!(Ipv4Packet::new_checked(&b[..19]).unwrap_err(), ParseError::Truncated);
        assert_eq!(Ipv4Packet::new_checked(&b[..27]).unwrap_err(), ParseError::Truncated);
        let mut v = b.clone();
        v[0] = 0x66;
        assert_eq!(Ipv4Packet::new_checked(&v[..]).unwrap_err(), ParseError::BadVersion);
        let mut v = b.clone();
        v[0] = 0x44;
        assert_eq!(Ipv4Packet::new_checked(&v[..]).unwrap_err(), ParseError::BadHeaderLen);
        let mut v = b.clone();
        v[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(Ipv4Packet::new_checked(&v[..]).unwrap_err(), ParseError::BadTotalLen);
        let mut v = b.clone();
        v[0] = 0x4f; // IHL 60 > buffer
        assert!(Ipv4Packet::new_checked(&v[..]).is_err());
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut b = pkt();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_ttl(), 63);
        assert!(p.verify_checksum());
    }
}
