//! Zero-copy header views over any byte buffer.
//!
//! Every view wraps a `T: AsRef<[u8]>` (getters) or `T: AsRef<[u8]> + AsMut<[u8]>` (setters) and reads its fields by
//! byte offset; nothing is cast to a packed struct. Each view offers `new_unchecked`, `check_len` and `new_checked`.
//! The contract: **after `check_len` (or `new_checked`) succeeds, no getter or setter of that view panics**, whatever
//! the bytes are. Functions that walk variable-length structures (VLAN tags, IPv6 extension headers, options)
//! return [`ParseError`] rather than index out of bounds.

pub mod arp;
pub mod build;
pub mod checksum;
pub mod ethernet;
pub mod gue;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

/// The `ParseError` enum, its counter order (`ALL`, the declaration order), names and help from one table.
macro_rules! parse_errors {
    ($( $v:ident = $name:literal, $help:literal; )*) => {
        /// Why a header could not be parsed. Each variant maps one to one to a drop counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ParseError {
            $( #[doc = $help] $v, )*
        }

        impl ParseError {
            /// Every variant, in counter order (declaration order: `self as usize` is the index).
            pub const ALL: [ParseError; [$( $name ),*].len()] = [$( ParseError::$v ),*];

            /// Stable snake-case name, used for counter labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ParseError::$v => $name, )*
                }
            }

            /// One line saying what it means.
            pub const fn help(self) -> &'static str {
                match self {
                    $( ParseError::$v => $help, )*
                }
            }
        }
    };
}

parse_errors! {
    Truncated = "truncated", "The buffer ends before the header (or the length its fields announce) does.";
    BadVersion = "bad_version", "IP version field does not match the ethertype / next header that led here.";
    BadHeaderLen = "bad_header_len", "A header-length field is below its minimum (IPv4 IHL < 5, TCP data offset < 5).";
    BadTotalLen = "bad_total_len",
        "A total-length field disagrees with the header length or the buffer (IPv4 total length, UDP length).";
    BadExtHeader = "bad_ext_header",
        "An IPv6 extension header chain is malformed (hop-by-hop not first, too long a chain, a short header).";
    TooManyVlans = "too_many_vlans", "More than two VLAN tags.";
    BadArp = "bad_arp", "An ARP packet that is not Ethernet/IPv4.";
}

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
pub mod proto {
    /// IPv6 hop-by-hop options (RFC 8200 §4.3).
    pub const HOPOPTS: u8 = 0;
    /// ICMP for IPv4 (RFC 792).
    pub const ICMP: u8 = 1;
    /// IPv4 encapsulation (RFC 2003).
    pub const IPIP: u8 = 4;
    /// TCP (RFC 9293).
    pub const TCP: u8 = 6;
    /// UDP (RFC 768).
    pub const UDP: u8 = 17;
    /// IPv6 encapsulation (RFC 2473).
    pub const IPV6: u8 = 41;
    /// IPv6 routing header (RFC 8200 §4.4).
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header (RFC 8200 §4.5).
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (RFC 4302).
    pub const AH: u8 = 51;
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
    /// IPv6 no next header (RFC 8200 §4.7).
    pub const NONE: u8 = 59;
    /// IPv6 destination options (RFC 8200 §4.6).
    pub const DSTOPTS: u8 = 60;
}

#[inline(always)]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Parse a hex string (whitespace ignored) into bytes; test vectors only.
    pub fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
}
