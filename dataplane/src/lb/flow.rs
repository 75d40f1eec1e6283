//! Flow keys and the flow hash used by Maglev, and the keys of the affinity and fragment tables.
//!
//! A flow is named by protocol and both endpoints as the packet carries them. The *flow hash* that picks a backend is
//! computed from the client-to-VIP direction only and with the stable hash of [`super::hash`], so every appliance
//! picks the same backend for the same flow.

use super::conntrack::FlowKey;
use super::hash::{fmix64, mix};

/// IPv4 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct KeyV4 {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Source port (ICMP: echo identifier).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

/// IPv6 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct KeyV6 {
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

#[inline(always)]
fn ports_word(sport: u16, dport: u16, proto: u8) -> u64 {
    (u64::from(sport) << 32) | (u64::from(dport) << 16) | u64::from(proto)
}

impl FlowKey for KeyV4 {
    const EMPTY: Self = KeyV4 { src: [0; 4], dst: [0; 4], sport: 0, dport: 0, proto: 0 };
    #[inline(always)]
    fn hash(&self) -> u64 {
        let a = (u64::from(u32::from_be_bytes(self.src)) << 32) | u64::from(u32::from_be_bytes(self.dst));
        fmix64(mix(mix(0x4c42_0004, a), ports_word(self.sport, self.dport, self.proto)))
    }
}

#[inline(always)]
fn addr_words(a: &[u8; 16]) -> (u64, u64) {
    let (hi, lo) = a.split_at(8);
    (
        u64::from_be_bytes([hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7]]),
        u64::from_be_bytes([lo[0], lo[1], lo[2], lo[3], lo[4], lo[5], lo[6], lo[7]]),
    )
}

impl FlowKey for KeyV6 {
    const EMPTY: Self = KeyV6 { src: [0; 16], dst: [0; 16], sport: 0, dport: 0, proto: 0 };
    #[inline(always)]
    fn hash(&self) -> u64 {
        let (s0, s1) = addr_words(&self.src);
        let (d0, d1) = addr_words(&self.dst);
        let h = mix(mix(mix(mix(0x4c42_0006, s0), s1), d0), d1);
        fmix64(mix(h, ports_word(self.sport, self.dport, self.proto)))
    }
}

/// ClientIP affinity key: service and client address (IPv4 mapped into IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct AffinityKey {
    /// Client address.
    pub client: [u8; 16],
    /// Stable service id.
    pub service: u32,
}

impl FlowKey for AffinityKey {
    const EMPTY: Self = AffinityKey { client: [0; 16], service: 0 };
    fn hash(&self) -> u64 {
        let (a, b) = addr_words(&self.client);
        fmix64(mix(mix(mix(0x4c42_00af, a), b), u64::from(self.service)))
    }
}

/// Fragment-table key (RFC 791 §3.2 / RFC 8200 §4.5: a datagram is named by source, destination, protocol and
/// identification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct FragKey {
    /// Source address (IPv4 mapped).
    pub src: [u8; 16],
    /// Destination address (IPv4 mapped).
    pub dst: [u8; 16],
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub ident: u32,
    /// Upper-layer protocol.
    pub proto: u8,
}

impl FlowKey for FragKey {
    const EMPTY: Self = FragKey { src: [0; 16], dst: [0; 16], ident: 0, proto: 0 };
    fn hash(&self) -> u64 {
        let (s0, s1) = addr_words(&self.src);
        let (d0, d1) = addr_words(&self.dst);
        fmix64(mix(
            mix(mix(mix(mix(0x4c42_00f4, s0), s1), d0), d1),
            (u64::from(self.ident) << 8) | u64::from(self.proto),
        ))
    }
}

/// Map an IPv4 address into the IPv4-mapped IPv6 form (RFC 4291 §2.5.5.2).
#[inline(always)]
pub fn mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

/// True for an IPv4-mapped address (`::ffff:0:0/96`): the form the tables give IPv4 addresses, and one RFC 6890
/// (table 20) allows as neither source nor destination of a datagram.
#[inline(always)]
pub fn is_mapped(a: &[u8; 16]) -> bool {
    a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_every_field() {
        let k = KeyV4 { src: [198, 18, 0, 1], dst: [198, 19, 0, 1], sport: 40000, dport: 80, proto: 6 };
        let variants = [
            KeyV4 { src: [198, 18, 0, 2], ..k },
            KeyV4 { dst: [198, 19, 0, 2], ..k },
            KeyV4 { sport: 40001, ..k },
            KeyV4 { dport: 81, ..k },
            KeyV4 { proto: 17, ..k },
            KeyV4 { sport: 80, dport: 40000, ..k },
        ];
        for v in variants {
            assert_ne!(k.hash(), v.hash(), "{v:?}");
        }
        assert_eq!(std::mem::size_of::<KeyV4>(), 14);
        assert_eq!(std::mem::size_of::<KeyV6>(), 38);
    }

    /// Memory per tracked flow, everything counted (meta lines, slots, reverse index, the 1/8 headroom), for a table
    /// made for 1 M flows: IPv4 46.1 bytes (32 a slot, 10.1 of index), IPv6 73.1 (56 a slot).
    #[test]
    fn bytes_per_tracked_flow() {
        use crate::lb::conntrack::FlowTable;
        let n = 1_000_000;
        let v4 = FlowTable::<KeyV4>::with_reverse(n).bytes() as f64 / n as f64;
        assert!(v4 <= 46.5, "IPv4: {v4:.1} bytes per flow");
        let v6 = FlowTable::<KeyV6>::with_reverse(n).bytes() as f64 / n as f64;
        assert!(v6 <= 73.5, "IPv6: {v6:.1} bytes per flow");
    }

    #[test]
    fn entry_sizes() {
        use crate::lb::conntrack::FlowTable;
        // Bytes of table memory per slot, signatures and padding included.
        assert_eq!(FlowTable::<KeyV4>::bytes_per_slot(), (32, 8));
        assert_eq!(FlowTable::<KeyV6>::bytes_per_slot(), (56, 8));
    }
}
