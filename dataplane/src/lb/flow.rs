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
    crate::stored_whole!();
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

/// An IPv6 5-tuple as a flow table stores it: the destination, a VIP that many flows share, by its number in the
/// table's shared addresses. 24 bytes instead of 38.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct StoredV6 {
    src: [u8; 16],
    dst: u16,
    sport: u16,
    dport: u16,
    proto: u8,
}

impl FlowKey for KeyV6 {
    const EMPTY: Self = KeyV6 { src: [0; 16], dst: [0; 16], sport: 0, dport: 0, proto: 0 };
    type Stored = StoredV6;
    const STORED_EMPTY: StoredV6 = StoredV6 { src: [0; 16], dst: 0, sport: 0, dport: 0, proto: 0 };
    #[inline(always)]
    fn shared(&self) -> Option<&[u8; 16]> {
        Some(&self.dst)
    }
    #[inline(always)]
    fn store(&self, id: u16) -> StoredV6 {
        StoredV6 { src: self.src, dst: id, sport: self.sport, dport: self.dport, proto: self.proto }
    }
    #[inline(always)]
    fn stored_id(s: &StoredV6) -> Option<u16> {
        Some(s.dst)
    }
    #[inline(always)]
    fn load(s: &StoredV6, addr: &[u8; 16]) -> Self {
        KeyV6 { src: s.src, dst: *addr, sport: s.sport, dport: s.dport, proto: s.proto }
    }
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
    crate::stored_whole!();
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
    crate::stored_whole!();
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

    /// Memory per tracked flow, everything counted (meta lines, slots, reverse index, the 1/8 headroom, IPv6's shared
    /// destinations), for a table made for 1 M flows: IPv4 48.4 bytes (32 a slot, 12.4 of index), IPv6 63.6 (44 a
    /// slot, 1.7 of destinations; the target is 64).
    #[test]
    fn bytes_per_tracked_flow() {
        use crate::lb::conntrack::FlowTable;
        let n = 1_000_000;
        let v4 = FlowTable::<KeyV4>::with_reverse(n).bytes() as f64 / n as f64;
        assert!(v4 <= 48.5, "IPv4: {v4:.1} bytes per flow");
        let v6 = FlowTable::<KeyV6>::with_reverse(n).bytes() as f64 / n as f64;
        assert!(v6 <= 64.0, "IPv6: {v6:.1} bytes per flow");
        eprintln!("IPv4 {v4:.1}, IPv6 {v6:.1} bytes per flow");
    }

    fn v6(src: u8, dst: u16, sport: u16) -> KeyV6 {
        let mut d = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        d[14..].copy_from_slice(&dst.to_be_bytes());
        let mut s = d;
        s[4] = 1;
        s[15] = src;
        KeyV6 { src: s, dst: d, sport, dport: 443, proto: 6 }
    }

    /// An IPv6 table keeps each destination once: every key comes back whole (from lookups, listings and after cuckoo
    /// moves, which rehash a resident from its stored form), and keys that differ only in their destination stay
    /// apart.
    #[test]
    fn ipv6_destinations_are_shared_and_come_back_whole() {
        use crate::lb::conntrack::{Entry, FlowTable, Lookup};
        let mut t = FlowTable::<KeyV6>::new(1000);
        let keys: Vec<KeyV6> = (0..1000u16).map(|i| v6(1, i % 7, 1000 + i / 7)).collect();
        for (i, k) in keys.iter().enumerate() {
            t.insert(*k, k.hash(), 0, Entry::new(1000, i as u32, 0, 2, 0), |_| 0).unwrap();
        }
        assert!(t.stats().moved > 0, "no cuckoo move: {:?}", t.stats());
        for (i, k) in keys.iter().enumerate() {
            let Lookup::Hit(_, e) = t.lookup(k, k.hash(), 1) else { panic!("{k:?} lost") };
            assert_eq!((e.key, e.value), (*k, i as u32));
            // The same source and ports to another destination: another flow.
            let other = KeyV6 { dst: v6(1, 100, 0).dst, ..*k };
            assert!(matches!(t.lookup(&other, other.hash(), 1), Lookup::Miss(None)));
        }
        let mut listed = 0;
        t.for_each_live(1, |_, e| {
            assert_eq!(keys[e.value as usize], e.key);
            listed += 1;
        });
        assert_eq!(listed, 1000);
    }

    /// Against a model, in a table of 16 slots whose flows go to 200 destinations over time: destinations outnumber
    /// the table's numbers for them many times over, so numbers are freed and reused, and every lookup still finds
    /// exactly the live flows, each with its own destination.
    #[test]
    fn ipv6_destination_numbers_are_reused() {
        use crate::lb::conntrack::{Entry, FlowTable, Lookup};
        use std::collections::HashMap;
        let mut t = FlowTable::<KeyV6>::new(8);
        assert_eq!(t.capacity(), 16);
        // By source, destination and source port: (expiry, value).
        type Id = ([u8; 16], [u8; 16], u16);
        let mut model: HashMap<Id, (u32, u32)> = HashMap::new();
        let id = |k: &KeyV6| (k.src, k.dst, k.sport);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut now = 0u32;
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += (x % 3) as u32;
            let k = v6((x >> 8) as u8 % 3, ((x >> 16) % 200) as u16, ((x >> 32) % 3) as u16);
            let found = match t.lookup(&k, k.hash(), now) {
                Lookup::Hit(_, e) => {
                    assert_eq!(e.key, k);
                    Some(e.value)
                }
                Lookup::Miss(_) => None,
            };
            let want = model.get(&id(&k)).filter(|(exp, _)| now < *exp).map(|(_, v)| *v);
            assert_eq!(found, want, "{k:?} at {now}");
            if found.is_none() {
                let exp = now + 1 + (x >> 40) as u32 % 40;
                let (_, displaced) = t
                    .insert(k, k.hash(), now, Entry::new(exp, i, 0, 2, 0), |_| super::super::conntrack::EVERY_SLOT)
                    .unwrap();
                if let Some(d) = displaced {
                    model.remove(&id(&d.key));
                }
                model.insert(id(&k), (exp, i));
            }
        }
        assert_eq!(t.stats().addresses_full, 0);
        let mut live = 0;
        t.for_each_live(now, |_, e| {
            assert_eq!(model.get(&id(&e.key)).map(|m| m.1), Some(e.value));
            live += 1;
        });
        assert_eq!(live, model.values().filter(|(exp, _)| now < *exp).count());
    }

    /// An insert that finds no slot gives back the number it took for a new destination: a full table refuses flows
    /// to ever more destinations as full (not as out of numbers), and takes one again once a slot is free.
    #[test]
    fn ipv6_refused_inserts_give_their_destination_back() {
        use crate::lb::conntrack::{Entry, FlowTable, InsertError, Lookup};
        let mut t = FlowTable::<KeyV6>::new(8);
        let mut slots = vec![];
        let mut refused = 0;
        for p in 0..1000 {
            let k = v6(1, 0, p);
            match t.insert(k, k.hash(), 0, Entry::new(1000, 0, 0, 2, 0), |_| 0) {
                Ok((slot, _)) => slots.push(slot),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(slots.len(), t.capacity(), "the table filled up");
        for d in 1..1000u16 {
            for p in 0..16 {
                let k = v6(1, d, p);
                match t.insert(k, k.hash(), 0, Entry::new(1000, 0, 0, 2, 0), |_| 0) {
                    Ok(_) => panic!("{k:?} found room in a full table"),
                    Err(e) => assert_eq!(e, InsertError::BucketFull, "{k:?}"),
                }
                refused += 1;
            }
        }
        assert_eq!((t.stats().insert_failed, t.stats().addresses_full), (refused, 0));
        t.remove_slot(slots[0]);
        let k = v6(1, 2000, 0);
        t.insert(k, k.hash(), 0, Entry::new(1000, 0, 0, 2, 0), |_| 0).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(matches!(t.lookup(&k, k.hash(), 1), Lookup::Hit(_, e) if e.key == k));
    }

    /// A table names a bounded number of destinations at once (65 535 for 600 000 flows and more): the next is
    /// refused and counted, and a destination let go makes room again.
    #[test]
    fn ipv6_destinations_beyond_the_limit_are_refused_and_counted() {
        use crate::lb::conntrack::{Entry, FlowTable, InsertError, Lookup, MAX_SHARED};
        assert_eq!(FlowTable::<KeyV6>::new(1_000).shared_capacity(), 256);
        assert_eq!(FlowTable::<KeyV6>::new(100).shared_capacity(), 113);
        assert_eq!(FlowTable::<KeyV4>::new(100).shared_capacity(), 0);
        let mut t = FlowTable::<KeyV6>::new(600_000);
        assert_eq!(t.shared_capacity(), MAX_SHARED);
        let key = |i: usize| {
            let mut k = v6(1, 0, 1);
            k.dst[12..].copy_from_slice(&(i as u32).to_be_bytes());
            k
        };
        let mut slots = vec![];
        for i in 0..MAX_SHARED {
            let k = key(i);
            slots.push(t.insert(k, k.hash(), 0, Entry::new(1000, 0, 0, 2, 0), |_| 0).unwrap().0);
        }
        let k = key(MAX_SHARED);
        assert_eq!(t.insert(k, k.hash(), 0, Entry::new(1000, 0, 0, 2, 0), |_| 0), Err(InsertError::AddressesFull));
        assert_eq!((t.stats().addresses_full, t.stats().insert_failed), (1, 1));
        // Another flow to a destination already named takes no new number.
        let same = KeyV6 { sport: 2, ..key(7) };
        t.insert(same, same.hash(), 0, Entry::new(1000, 0, 0, 2, 0), |_| 0).unwrap();
        t.remove_slot(slots[3]);
        t.insert(k, k.hash(), 0, Entry::new(1000, 0, 0, 2, 0), |_| 0).unwrap();
        assert!(matches!(t.lookup(&k, k.hash(), 1), Lookup::Hit(_, e) if e.key == k));
        assert!(matches!(t.lookup(&key(3), key(3).hash(), 1), Lookup::Miss(None)));
        assert!(matches!(t.lookup(&key(4), key(4).hash(), 1), Lookup::Hit(_, e) if e.key == key(4)));
    }

    #[test]
    fn entry_sizes() {
        use crate::lb::conntrack::FlowTable;
        // Bytes of table memory per slot, signatures and padding included.
        assert_eq!(FlowTable::<KeyV4>::bytes_per_slot(), (32, 8));
        assert_eq!(FlowTable::<KeyV6>::bytes_per_slot(), (44, 8));
    }
}
