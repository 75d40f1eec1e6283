//! Flow-table keys of both address families and the per-worker flow tables.

use super::*;

/// A flow-table key of one address family.
pub trait FamilyKey: FlowKey {
    /// Build from 16-byte (IPv4-mapped) addresses.
    fn make(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8) -> Self;
    /// Source address, 16-byte form.
    fn src16(&self) -> [u8; 16];
    /// Destination address, 16-byte form.
    fn dst16(&self) -> [u8; 16];
    /// Source port.
    fn sport(&self) -> u16;
    /// Destination port.
    fn dport(&self) -> u16;
    /// IP protocol.
    fn proto(&self) -> u8;
    /// This family's table.
    fn table(t: &mut FlowTables) -> &mut FlowTable<Self>;
    /// This family's table, to read.
    fn table_ref(t: &FlowTables) -> &FlowTable<Self>;
}

/// The flow tables of both families.
#[derive(Debug)]
pub struct FlowTables {
    pub(super) v4: FlowTable<KeyV4>,
    pub(super) v6: FlowTable<KeyV6>,
}

impl FlowTables {
    /// Prefetch for a parsed packet: stage 1 (meta lines or index buckets) or stage 2 (entries). VIP traffic looks
    /// up the forward table; anything else may be a reply, found through the reverse index.
    #[inline(always)]
    pub(super) fn prefetch(&self, p: &Pkt, stage2: bool) {
        fn go<K: FlowKey>(t: &FlowTable<K>, reverse: bool, stage2: bool, h: u64) {
            match (reverse, stage2) {
                (false, false) => t.prefetch_sigs(h),
                (false, true) => t.prefetch_entries(h),
                (true, false) => t.prefetch_reverse(h),
                (true, true) => t.prefetch_reverse_entries(h),
            }
        }
        let reverse = !matches!(p.class, Classified::Service(_));
        if p.v4 {
            go(&self.v4, reverse, stage2, p.hash);
        } else {
            go(&self.v6, reverse, stage2, p.hash);
        }
    }
}

impl FamilyKey for KeyV4 {
    #[inline(always)]
    fn make(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8) -> Self {
        KeyV4 {
            src: [src[12], src[13], src[14], src[15]],
            dst: [dst[12], dst[13], dst[14], dst[15]],
            sport,
            dport,
            proto,
        }
    }
    fn src16(&self) -> [u8; 16] {
        mapped(self.src)
    }
    fn dst16(&self) -> [u8; 16] {
        mapped(self.dst)
    }
    fn sport(&self) -> u16 {
        self.sport
    }
    fn dport(&self) -> u16 {
        self.dport
    }
    fn proto(&self) -> u8 {
        self.proto
    }
    fn table(t: &mut FlowTables) -> &mut FlowTable<Self> {
        &mut t.v4
    }
    fn table_ref(t: &FlowTables) -> &FlowTable<Self> {
        &t.v4
    }
}

impl FamilyKey for KeyV6 {
    #[inline(always)]
    fn make(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8) -> Self {
        KeyV6 { src: *src, dst: *dst, sport, dport, proto }
    }
    fn src16(&self) -> [u8; 16] {
        self.src
    }
    fn dst16(&self) -> [u8; 16] {
        self.dst
    }
    fn sport(&self) -> u16 {
        self.sport
    }
    fn dport(&self) -> u16 {
        self.dport
    }
    fn proto(&self) -> u8 {
        self.proto
    }
    fn table(t: &mut FlowTables) -> &mut FlowTable<Self> {
        &mut t.v6
    }
    fn table_ref(t: &FlowTables) -> &FlowTable<Self> {
        &t.v6
    }
}
