//! Generic UDP Encapsulation (draft-ietf-intarea-gue-09 §3).
//!
//! Variant 0 carries a 4-byte header (version 2 bits, control flag, 5-bit Hlen in 32-bit words of optional fields,
//! protocol / control type, flags) before the inner packet. Variant 1 (§4) puts the inner IPv4/IPv6 packet directly
//! after the UDP header; its first two bits are `01`. The appliance sends variant 0 with no optional fields and the
//! inner IP protocol (4 or 41) as the protocol; [`parse`] accepts both variants.

use super::ParseError;

/// Length of the variant-0 base header.
pub const HEADER_LEN: usize = 4;
/// Conventional GUE port (used by the Linux FOU/GUE implementation and Katran's examples); configurable per VIP.
pub const DEFAULT_PORT: u16 = 6080;

/// What [`parse`] found in a GUE payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gue {
    /// GUE variant (0 or 1).
    pub variant: u8,
    /// Control message (C bit) — only in variant 0.
    pub control: bool,
    /// Inner protocol (IP protocol number: 4 for IPv4, 41 for IPv6) or control type.
    pub protocol: u8,
    /// Offset of the inner packet from the start of the GUE header.
    pub inner_offset: usize,
}

/// Parse the start of a UDP payload as GUE.
///
/// # Errors
/// [`ParseError::Truncated`] when the header or its optional fields are cut off; [`ParseError::BadVersion`] for
/// variants 2 and 3 (reserved) and for a variant-1 packet whose first nibble is neither 4 nor 6.
pub fn parse(b: &[u8]) -> Result<Gue, ParseError> {
    let first = *b.first().ok_or(ParseError::Truncated)?;
    match first >> 6 {
        0 => {
            if b.len() < HEADER_LEN {
                return Err(ParseError::Truncated);
            }
            let hlen = usize::from(first & 0x1f) * 4;
            if b.len() < HEADER_LEN + hlen {
                return Err(ParseError::Truncated);
            }
            Ok(Gue { variant: 0, control: first & 0x20 != 0, protocol: b[1], inner_offset: HEADER_LEN + hlen })
        }
        1 => match first >> 4 {
            4 => Ok(Gue { variant: 1, control: false, protocol: super::proto::IPIP, inner_offset: 0 }),
            6 => Ok(Gue { variant: 1, control: false, protocol: super::proto::IPV6, inner_offset: 0 }),
            _ => Err(ParseError::BadVersion),
        },
        _ => Err(ParseError::BadVersion),
    }
}

/// Write a variant-0 data header with no optional fields and no flags.
///
/// # Panics
/// When `b` is shorter than [`HEADER_LEN`]; callers size the buffer first.
pub fn emit(b: &mut [u8], protocol: u8) {
    b[..HEADER_LEN].copy_from_slice(&[0, protocol, 0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto;

    #[test]
    fn decode_variants() {
        assert_eq!(
            parse(&[0x00, 4, 0, 0, 0x45]).unwrap(),
            Gue { variant: 0, control: false, protocol: proto::IPIP, inner_offset: 4 }
        );
        assert_eq!(parse(&[0x02, 41, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x60]).unwrap().inner_offset, 12);
        assert!(parse(&[0x20, 1, 0, 0]).unwrap().control);
        assert_eq!(parse(&[0x45, 0]).unwrap().protocol, proto::IPIP);
        assert_eq!(parse(&[0x60]).unwrap().protocol, proto::IPV6);
    }

    #[test]
    fn malformed() {
        assert_eq!(parse(&[]), Err(ParseError::Truncated));
        assert_eq!(parse(&[0, 4, 0]), Err(ParseError::Truncated));
        assert_eq!(parse(&[0x01, 4, 0, 0, 1]), Err(ParseError::Truncated));
        assert_eq!(parse(&[0x80, 4, 0, 0]), Err(ParseError::BadVersion));
        assert_eq!(parse(&[0x50, 4, 0, 0]), Err(ParseError::BadVersion));
    }

    #[test]
    fn encode_over_marker() {
        let mut b = [0xa5u8; 5];
        emit(&mut b, proto::IPV6);
        assert_eq!(b, [0, 41, 0, 0, 0xa5]);
    }
}
