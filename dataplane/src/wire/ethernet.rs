//! Ethernet II frames (IEEE 802.3) with up to two VLAN tags (IEEE 802.1Q C-tag, 802.1ad S-tag).
//!
//! [`EthernetFrame`] views the 14-byte untagged header; [`parse_l2`] walks the tags and says where the L3 header
//! starts. After `check_len` succeeds no accessor panics; `parse_l2` returns an error instead of indexing past the end.

use super::{get_u16, set_u16, ParseError};

/// Ethertypes used by the appliance (IEEE registry).
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP (RFC 826).
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag still sent by some switches.
    pub const QINQ_LEGACY: u16 = 0x9100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const HEADER_LEN: usize = 14;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::HEADER_LEN;
/// Length of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;

/// A MAC address.
pub type Mac = [u8; 6];

/// The broadcast MAC address.
pub const BROADCAST: Mac = [0xff; 6];

/// A view of an Ethernet II header.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap without checking; accessors may panic until `check_len` succeeds.
    pub const fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    /// Wrap and check the length.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] when the buffer is shorter than 14 bytes.
    pub fn new_checked(buf: T) -> Result<Self, ParseError> {
        let f = Self::new_unchecked(buf);
        f.check_len()?;
        Ok(f)
    }

    /// Check that the fixed header fits.
    ///
    /// # Errors
    /// [`ParseError::Truncated`] when the buffer is shorter than 14 bytes.
    pub fn check_len(&self) -> Result<(), ParseError> {
        if self.buf.as_ref().len() < field::HEADER_LEN {
            Err(ParseError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Destination MAC.
    pub fn dst(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[field::DST]);
        m
    }

    /// Source MAC.
    pub fn src(&self) -> Mac {
        let mut m = [0; 6];
        m.copy_from_slice(&self.buf.as_ref()[field::SRC]);
        m
    }

    /// The outermost ethertype (a TPID when the frame is tagged).
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::ETHERTYPE)
    }

    /// Bytes after the 14-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[field::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Set the destination MAC.
    pub fn set_dst(&mut self, m: Mac) {
        self.buf.as_mut()[field::DST].copy_from_slice(&m);
    }

    /// Set the source MAC.
    pub fn set_src(&mut self, m: Mac) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&m);
    }

    /// Set the outermost ethertype.
    pub fn set_ethertype(&mut self, t: u16) {
        set_u16(self.buf.as_mut(), field::ETHERTYPE, t);
    }
}

/// What [`parse_l2`] found: where L3 starts, its ethertype, and the VLAN tags (outer first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct L2Info {
    /// Offset of the L3 header.
    pub l3_offset: usize,
    /// Ethertype of the L3 payload (after all tags).
    pub ethertype: u16,
    /// Number of VLAN tags (0 to 2).
    pub vlan_count: u8,
    /// TCI of each tag (PCP, DEI, VID), outer first; unused entries are 0.
    pub vlan_tci: [u16; 2],
}

impl L2Info {
    /// VLAN ID of the innermost tag, if the frame is tagged.
    pub fn inner_vid(&self) -> Option<u16> {
        match self.vlan_count {
            0 => None,
            n => Some(self.vlan_tci[usize::from(n) - 1] & 0x0fff),
        }
    }
}

/// Walk the Ethernet header and up to two VLAN tags.
///
/// # Errors
/// [`ParseError::Truncated`] when a header or tag is cut off; [`ParseError::TooManyVlans`] on a third tag.
pub fn parse_l2(buf: &[u8]) -> Result<L2Info, ParseError> {
    if buf.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let mut info = L2Info { l3_offset: HEADER_LEN, ethertype: get_u16(buf, field::ETHERTYPE), ..L2Info::default() };
    while matches!(info.ethertype, ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_LEGACY) {
        if info.vlan_count == 2 {
            return Err(ParseError::TooManyVlans);
        }
        let at = info.l3_offset;
        if buf.len() < at + VLAN_TAG_LEN {
            return Err(ParseError::Truncated);
        }
        info.vlan_tci[usize::from(info.vlan_count)] = get_u16(buf, at);
        info.ethertype = get_u16(buf, at + 2);
        info.vlan_count += 1;
        info.l3_offset += VLAN_TAG_LEN;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testutil::hex;

    #[test]
    fn decode_untagged() {
        let b = hex("020000000002 020000000001 0800 45");
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.dst(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.payload(), &[0x45]);
        let l2 = parse_l2(&b).unwrap();
        assert_eq!((l2.l3_offset, l2.ethertype, l2.vlan_count, l2.inner_vid()), (14, 0x0800, 0, None));
    }

    #[test]
    fn decode_qinq() {
        let b = hex("ffffffffffff 020000000001 88a8 0064 8100 a0c8 86dd");
        let l2 = parse_l2(&b).unwrap();
        assert_eq!(l2.l3_offset, 22);
        assert_eq!(l2.ethertype, ethertype::IPV6);
        assert_eq!(l2.vlan_count, 2);
        assert_eq!(l2.vlan_tci, [100, 0xa0c8]);
        assert_eq!(l2.inner_vid(), Some(200));
    }

    #[test]
    fn three_tags_rejected() {
        let b = hex("ffffffffffff 020000000001 88a8 0001 8100 0002 8100 0003 0800");
        assert_eq!(parse_l2(&b), Err(ParseError::TooManyVlans));
    }

    #[test]
    fn truncated() {
        assert_eq!(parse_l2(&hex("ffffffffffff0200000000")), Err(ParseError::Truncated));
        assert_eq!(parse_l2(&hex("ffffffffffff 020000000001 8100 00")), Err(ParseError::Truncated));
        assert!(EthernetFrame::new_checked(&[0u8; 13][..]).is_err());
    }

    #[test]
    fn encode_over_marker() {
        let mut b = [0xa5u8; 15];
        let mut f = EthernetFrame::new_checked(&mut b[..]).unwrap();
        f.set_dst([1, 2, 3, 4, 5, 6]);
        f.set_src([7, 8, 9, 10, 11, 12]);
        f.set_ethertype(ethertype::ARP);
        assert_eq!(&b[..], &hex("010203040506 0708090a0b0c 0806 a5")[..]);
    }
}
