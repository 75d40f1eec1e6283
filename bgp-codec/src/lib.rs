//! BGP-4 messages (RFC 4271) with the parts an announce-only speaker needs: capabilities (RFC 5492) for
//! multiprotocol IPv4/IPv6 unicast (RFC 4760), four-octet AS numbers (RFC 6793), route refresh (RFC 2918) and
//! graceful restart (RFC 4724); UPDATE path attributes ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, COMMUNITIES
//! (RFC 1997), LARGE_COMMUNITY (RFC 8092), MP_REACH_NLRI / MP_UNREACH_NLRI.
//!
//! Decoding never panics: every malformed input is an [`Error`] carrying the NOTIFICATION code and subcode to send
//! (RFC 4271 section 6), or — for a malformed path attribute of a received UPDATE — a treat-as-withdraw count
//! (RFC 7606), since this speaker installs nothing it receives.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Message types.
pub mod kind {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH.
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Header length; maximum message length.
pub const HEADER: usize = 19;
/// Maximum message length (without the extended-message capability).
pub const MAX_LEN: usize = 4096;
/// AS_TRANS (RFC 6793): the 2-octet stand-in for a 4-octet AS.
pub const AS_TRANS: u16 = 23456;
/// The well-known GRACEFUL_SHUTDOWN community (RFC 8326).
pub const GRACEFUL_SHUTDOWN: u32 = 0xffff_0000;

/// Address family of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    /// IPv4 unicast.
    Ipv4,
    /// IPv6 unicast.
    Ipv6,
}

impl Afi {
    /// The AFI number.
    pub fn number(self) -> u16 {
        match self {
            Afi::Ipv4 => 1,
            Afi::Ipv6 => 2,
        }
    }
    fn from_number(n: u16) -> Option<Self> {
        match n {
            1 => Some(Afi::Ipv4),
            2 => Some(Afi::Ipv6),
            _ => None,
        }
    }
}

/// SAFI unicast.
pub const SAFI_UNICAST: u8 = 1;

/// A decoding error: the NOTIFICATION to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (NOTIFICATION {code}/{subcode})")]
pub struct Error {
    /// Error code.
    pub code: u8,
    /// Subcode.
    pub subcode: u8,
    /// Data for the NOTIFICATION.
    pub data: Vec<u8>,
    /// What was wrong, for logs.
    pub reason: String,
}

fn err(code: u8, subcode: u8, data: &[u8], reason: impl Into<String>) -> Error {
    Error { code, subcode, data: data.to_vec(), reason: reason.into() }
}

/// NOTIFICATION codes and subcodes used here.
pub mod notify {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// Connection not synchronised (bad marker).
    pub const HEADER_SYNC: u8 = 1;
    /// Bad message length.
    pub const HEADER_LENGTH: u8 = 2;
    /// Bad message type.
    pub const HEADER_TYPE: u8 = 3;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// Unsupported version number.
    pub const OPEN_VERSION: u8 = 1;
    /// Bad peer AS.
    pub const OPEN_PEER_AS: u8 = 2;
    /// Bad BGP identifier.
    pub const OPEN_BGP_ID: u8 = 3;
    /// Unsupported optional parameter.
    pub const OPEN_OPTIONAL: u8 = 4;
    /// Unacceptable hold time.
    pub const OPEN_HOLD_TIME: u8 = 6;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Malformed attribute list.
    pub const UPDATE_MALFORMED: u8 = 1;
    /// Invalid network field.
    pub const UPDATE_NETWORK: u8 = 10;
    /// Hold Timer Expired.
    pub const HOLD_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// Cease: administrative shutdown.
    pub const CEASE_SHUTDOWN: u8 = 2;
    /// Cease: connection collision resolution.
    pub const CEASE_COLLISION: u8 = 7;
    /// Cease: peer de-configured.
    pub const CEASE_DECONFIGURED: u8 = 3;
    /// Cease: administrative reset.
    pub const CEASE_RESET: u8 = 4;
    /// Cease subcode: BFD Down (RFC 9384).
    pub const CEASE_BFD_DOWN: u8 = 10;
}

/// Graceful restart as advertised: restart time (seconds), the restarting flag, and per family whether forwarding
/// state was kept.
pub type GracefulRestart = (u16, bool, Vec<(Afi, bool)>);

/// Capabilities we send and understand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Multiprotocol families.
    pub families: Vec<Afi>,
    /// Four-octet AS number (always sent).
    pub as4: Option<u32>,
    /// Route refresh.
    pub route_refresh: bool,
    /// Graceful restart: restart time (seconds), restarting flag, and per family whether forwarding was kept.
    pub graceful_restart: Option<GracefulRestart>,
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// AS (the 4-octet one when the capability is present).
    pub asn: u32,
    /// Hold time in seconds (0 or >= 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities.
    pub caps: Capabilities,
}

/// A route announcement's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// AS path (our AS for eBGP, empty for iBGP).
    pub as_path: Vec<u32>,
    /// Next hop (IPv4 for IPv4 routes; IPv6 for IPv6 routes).
    pub next_hop: Option<IpAddr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// Communities (RFC 1997).
    pub communities: Vec<u32>,
    /// Large communities (RFC 8092).
    pub large_communities: Vec<(u32, u32, u32)>,
}

/// A prefix.
pub type Prefix = (IpAddr, u8);

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE: what we keep of one (we install nothing): counts of announced and withdrawn prefixes, and of
    /// malformed attributes treated as withdraw (RFC 7606).
    Update {
        /// Prefixes announced (IPv4 NLRI and MP_REACH).
        announced: usize,
        /// Prefixes withdrawn.
        withdrawn: usize,
        /// Attributes found malformed and handled as treat-as-withdraw.
        treat_as_withdraw: usize,
        /// An End-of-RIB marker (RFC 4724).
        end_of_rib: Option<Afi>,
    },
    /// NOTIFICATION.
    Notification {
        /// Code.
        code: u8,
        /// Subcode.
        subcode: u8,
        /// Data.
        data: Vec<u8>,
    },
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH for a family.
    RouteRefresh(Option<Afi>),
}

fn header(out: &mut Vec<u8>, kind: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0, kind]);
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u16;
    out[at + 16..at + 18].copy_from_slice(&len.to_be_bytes());
}

/// Encode an OPEN.
pub fn open(o: &Open) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    let at = header(&mut v, kind::OPEN);
    v.push(4);
    let my_as = u16::try_from(o.asn).unwrap_or(AS_TRANS);
    v.extend_from_slice(&my_as.to_be_bytes());
    v.extend_from_slice(&o.hold_time.to_be_bytes());
    v.extend_from_slice(&o.bgp_id.octets());
    let mut caps: Vec<u8> = Vec::new();
    let mut cap = |code: u8, value: &[u8]| {
        caps.push(code);
        caps.push(value.len() as u8);
        caps.extend_from_slice(value);
    };
    for f in &o.caps.families {
        let n = f.number().to_be_bytes();
        cap(1, &[n[0], n[1], 0, SAFI_UNICAST]);
    }
    if o.caps.route_refresh {
        cap(2, &[]);
    }
    if let Some((time, restarting, fams)) = &o.caps.graceful_restart {
        let flags_time = (if *restarting { 0x8000u16 } else { 0 }) | (time & 0x0fff);
        let mut val = flags_time.to_be_bytes().to_vec();
        for (f, fwd) in fams {
            val.extend_from_slice(&f.number().to_be_bytes());
            val.push(SAFI_UNICAST);
            val.push(if *fwd { 0x80 } else { 0 });
        }
        cap(64, &val);
    }
    cap(65, &o.caps.as4.unwrap_or(o.asn).to_be_bytes());
    // One optional parameter of type 2 (capabilities) holding all of them.
    v.push((caps.len() + 2) as u8);
    v.push(2);
    v.push(caps.len() as u8);
    v.extend_from_slice(&caps);
    finish(&mut v, at);
    v
}

/// Encode a KEEPALIVE.
pub fn keepalive() -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER);
    let at = header(&mut v, kind::KEEPALIVE);
    finish(&mut v, at);
    v
}

/// Encode a NOTIFICATION.
pub fn notification(code: u8, subcode: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + 2 + data.len());
    let at = header(&mut v, kind::NOTIFICATION);
    v.push(code);
    v.push(subcode);
    v.extend_from_slice(&data[..data.len().min(MAX_LEN - HEADER - 2)]);
    finish(&mut v, at);
    v
}

/// Longest shutdown communication (RFC 9003 §2: its length is one octet).
pub const MAX_SHUTDOWN_COMMUNICATION: usize = 255;

/// Encode a Cease NOTIFICATION with `subcode` (administrative shutdown or reset) carrying `text` as its shutdown
/// communication (RFC 9003 §2): one length octet, then the UTF-8 text, cut at a character boundary to at most
/// [`MAX_SHUTDOWN_COMMUNICATION`] octets.
pub fn cease_with_communication(subcode: u8, text: &str) -> Vec<u8> {
    let mut end = text.len().min(MAX_SHUTDOWN_COMMUNICATION);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut data = Vec::with_capacity(1 + end);
    data.push(end as u8);
    data.extend_from_slice(&text.as_bytes()[..end]);
    notification(notify::CEASE, subcode, &data)
}

/// The shutdown communication of a Cease / administrative shutdown or reset NOTIFICATION's data (RFC 9003 §2):
/// `Some(text)` when the data is a length octet and that much UTF-8 (extra octets after it are ignored, as the RFC
/// asks), `None` when there is none or it is malformed (a length past the data, invalid UTF-8).
pub fn shutdown_communication(data: &[u8]) -> Option<&str> {
    let (&len, rest) = data.split_first()?;
    if len == 0 {
        return None;
    }
    std::str::from_utf8(rest.get(..usize::from(len))?).ok()
}

fn prefix_bytes(out: &mut Vec<u8>, (addr, len): &Prefix) {
    out.push(*len);
    let n = usize::from(*len).div_ceil(8);
    match addr {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n.min(4)]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n.min(16)]),
    }
}

fn attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.push(flags | 0x10);
        out.push(code);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.push(flags);
        out.push(code);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
}

const WELL_KNOWN: u8 = 0x40;
const OPTIONAL: u8 = 0x80;
const OPTIONAL_TRANSITIVE: u8 = 0xc0;

/// Encode an UPDATE announcing `prefixes` (all of one family) with `a`. IPv4 goes in the classic NLRI field with
/// NEXT_HOP; IPv6 in MP_REACH_NLRI. Peers are assumed to have the 4-octet AS capability (we require it).
pub fn announce(afi: Afi, prefixes: &[Prefix], a: &Attributes) -> Vec<u8> {
    let mut v = Vec::with_capacity(128);
    let at = header(&mut v, kind::UPDATE);
    v.extend_from_slice(&0u16.to_be_bytes()); // no withdrawn routes
    let mut attrs = Vec::new();
    attr(&mut attrs, WELL_KNOWN, 1, &[0]); // ORIGIN IGP
    let mut path = Vec::new();
    if !a.as_path.is_empty() {
        path.push(2); // AS_SEQUENCE
        path.push(a.as_path.len() as u8);
        for asn in &a.as_path {
            path.extend_from_slice(&asn.to_be_bytes());
        }
    }
    attr(&mut attrs, WELL_KNOWN, 2, &path);
    if afi == Afi::Ipv4 {
        if let Some(IpAddr::V4(nh)) = a.next_hop {
            attr(&mut attrs, WELL_KNOWN, 3, &nh.octets());
        }
    }
    if let Some(m) = a.med {
        attr(&mut attrs, OPTIONAL, 4, &m.to_be_bytes());
    }
    if let Some(lp) = a.local_pref {
        attr(&mut attrs, WELL_KNOWN, 5, &lp.to_be_bytes());
    }
    if !a.communities.is_empty() {
        let c: Vec<u8> = a.communities.iter().flat_map(|c| c.to_be_bytes()).collect();
        attr(&mut attrs, OPTIONAL_TRANSITIVE, 8, &c);
    }
    if !a.large_communities.is_empty() {
        let c: Vec<u8> = a
            .large_communities
            .iter()
            .flat_map(|(g, l1, l2)| [g.to_be_bytes(), l1.to_be_bytes(), l2.to_be_bytes()].concat())
            .collect();
        attr(&mut attrs, OPTIONAL_TRANSITIVE, 32, &c);
    }
    if afi == Afi::Ipv6 {
        let mut mp = Vec::new();
        mp.extend_from_slice(&Afi::Ipv6.number().to_be_bytes());
        mp.push(SAFI_UNICAST);
        let nh = match a.next_hop {
            Some(IpAddr::V6(nh)) => nh,
            _ => Ipv6Addr::UNSPECIFIED,
        };
        mp.push(16);
        mp.extend_from_slice(&nh.octets());
        mp.push(0); // reserved
        for p in prefixes {
            prefix_bytes(&mut mp, p);
        }
        attr(&mut attrs, OPTIONAL, 14, &mp);
    }
    v.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    v.extend_from_slice(&attrs);
    if afi == Afi::Ipv4 {
        for p in prefixes {
            prefix_bytes(&mut v, p);
        }
    }
    finish(&mut v, at);
    v
}

/// Encode an UPDATE withdrawing `prefixes` (all of one family).
pub fn withdraw(afi: Afi, prefixes: &[Prefix]) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    let at = header(&mut v, kind::UPDATE);
    if afi == Afi::Ipv4 {
        let mut w = Vec::new();
        for p in prefixes {
            prefix_bytes(&mut w, p);
        }
        v.extend_from_slice(&(w.len() as u16).to_be_bytes());
        v.extend_from_slice(&w);
        v.extend_from_slice(&0u16.to_be_bytes());
    } else {
        v.extend_from_slice(&0u16.to_be_bytes());
        let mut mp = Vec::new();
        mp.extend_from_slice(&Afi::Ipv6.number().to_be_bytes());
        mp.push(SAFI_UNICAST);
        for p in prefixes {
            prefix_bytes(&mut mp, p);
        }
        let mut attrs = Vec::new();
        attr(&mut attrs, OPTIONAL, 15, &mp);
        v.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        v.extend_from_slice(&attrs);
    }
    finish(&mut v, at);
    v
}

/// Encode an End-of-RIB marker for `afi` (RFC 4724): an empty UPDATE for IPv4, an empty MP_UNREACH for IPv6.
pub fn end_of_rib(afi: Afi) -> Vec<u8> {
    withdraw(afi, &[])
}

/// Bytes of the next whole message at the front of `buf`, or `Ok(None)` when more bytes are needed.
///
/// # Errors
/// A header error (bad marker, length, type).
pub fn frame(buf: &[u8]) -> Result<Option<usize>, Error> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[..16] != [0xff; 16] {
        return Err(err(notify::HEADER, notify::HEADER_SYNC, &[], "bad marker"));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let t = buf[18];
    let min = match t {
        kind::OPEN => 29,
        kind::UPDATE => 23,
        kind::NOTIFICATION => 21,
        kind::KEEPALIVE => 19,
        kind::ROUTE_REFRESH => 23,
        _ => return Err(err(notify::HEADER, notify::HEADER_TYPE, &[t], format!("message type {t}"))),
    };
    if len < min || len > MAX_LEN || (t == kind::KEEPALIVE && len != HEADER) {
        return Err(err(
            notify::HEADER,
            notify::HEADER_LENGTH,
            &(len as u16).to_be_bytes(),
            format!("length {len} for type {t}"),
        ));
    }
    Ok((buf.len() >= len).then_some(len))
}

/// Decode one whole message (as delimited by [`frame`]).
///
/// # Errors
/// The NOTIFICATION to send.
pub fn decode(msg: &[u8]) -> Result<Message, Error> {
    let len = frame(msg)?.ok_or_else(|| err(notify::HEADER, notify::HEADER_LENGTH, &[], "truncated message"))?;
    let body = &msg[HEADER..len];
    match msg[18] {
        kind::OPEN => decode_open(body).map(Message::Open),
        kind::UPDATE => decode_update(body),
        kind::NOTIFICATION => Ok(Message::Notification { code: body[0], subcode: body[1], data: body[2..].to_vec() }),
        kind::KEEPALIVE => Ok(Message::Keepalive),
        kind::ROUTE_REFRESH => {
            // AFI, reserved, SAFI: only unicast (SAFI 1) of a known AFI is a family we may have.
            let afi = u16::from_be_bytes([body[0], body[1]]);
            Ok(Message::RouteRefresh(Afi::from_number(afi).filter(|_| body[3] == 1)))
        }
        t => Err(err(notify::HEADER, notify::HEADER_TYPE, &[t], format!("message type {t}"))),
    }
}

fn decode_open(b: &[u8]) -> Result<Open, Error> {
    let bad_len = || err(notify::HEADER, notify::HEADER_LENGTH, &[], "OPEN shorter than its parameters");
    if b[0] != 4 {
        return Err(err(notify::OPEN, notify::OPEN_VERSION, &4u16.to_be_bytes(), format!("BGP version {}", b[0])));
    }
    let as2 = u16::from_be_bytes([b[1], b[2]]);
    let hold_time = u16::from_be_bytes([b[3], b[4]]);
    if hold_time == 1 || hold_time == 2 {
        return Err(err(notify::OPEN, notify::OPEN_HOLD_TIME, &[], format!("hold time {hold_time}")));
    }
    let bgp_id = Ipv4Addr::new(b[5], b[6], b[7], b[8]);
    if bgp_id.is_unspecified() {
        return Err(err(notify::OPEN, notify::OPEN_BGP_ID, &[], "BGP identifier 0.0.0.0"));
    }
    let plen = usize::from(b[9]);
    let params = b.get(10..10 + plen).ok_or_else(bad_len)?;
    let mut caps = Capabilities::default();
    let mut i = 0;
    while i < params.len() {
        let (t, l) = (params[i], usize::from(*params.get(i + 1).ok_or_else(bad_len)?));
        let v = params.get(i + 2..i + 2 + l).ok_or_else(bad_len)?;
        i += 2 + l;
        if t != 2 {
            return Err(err(notify::OPEN, notify::OPEN_OPTIONAL, &[], format!("optional parameter {t}")));
        }
        let mut j = 0;
        while j < v.len() {
            let (code, cl) = (v[j], usize::from(*v.get(j + 1).ok_or_else(bad_len)?));
            let cv = v.get(j + 2..j + 2 + cl).ok_or_else(bad_len)?;
            j += 2 + cl;
            match (code, cl) {
                (1, 4) if cv[3] == SAFI_UNICAST => {
                    if let Some(f) = Afi::from_number(u16::from_be_bytes([cv[0], cv[1]])) {
                        caps.families.push(f);
                    }
                }
                (2, 0) | (128, 0) => caps.route_refresh = true,
                (64, n) if n >= 2 => {
                    let ft = u16::from_be_bytes([cv[0], cv[1]]);
                    let fams = cv[2..]
                        .chunks_exact(4)
                        .filter_map(|c| {
                            Afi::from_number(u16::from_be_bytes([c[0], c[1]])).map(|f| (f, c[3] & 0x80 != 0))
                        })
                        .collect();
                    caps.graceful_restart = Some((ft & 0x0fff, ft & 0x8000 != 0, fams));
                }
                (65, 4) => caps.as4 = Some(u32::from_be_bytes([cv[0], cv[1], cv[2], cv[3]])),
                _ => {} // capabilities we do not use are ignored (RFC 5492)
            }
        }
    }
    let asn = caps.as4.unwrap_or(u32::from(as2));
    Ok(Open { asn, hold_time, bgp_id, caps })
}

fn count_prefixes(mut b: &[u8], max_len: u8) -> Result<usize, ()> {
    let mut n = 0;
    while !b.is_empty() {
        let l = b[0];
        if l > max_len {
            return Err(());
        }
        let bytes = usize::from(l).div_ceil(8);
        b = b.get(1 + bytes..).ok_or(())?;
        n += 1;
    }
    Ok(n)
}

fn decode_update(b: &[u8]) -> Result<Message, Error> {
    let malformed = |why: &str| err(notify::UPDATE, notify::UPDATE_MALFORMED, &[], why.to_string());
    let wl = usize::from(u16::from_be_bytes([b[0], b[1]]));
    let wd = b.get(2..2 + wl).ok_or_else(|| malformed("withdrawn routes beyond the message"))?;
    let withdrawn_v4 =
        count_prefixes(wd, 32).map_err(|_| err(notify::UPDATE, notify::UPDATE_NETWORK, &[], "bad withdrawn prefix"))?;
    let al_at = 2 + wl;
    let al = b.get(al_at..al_at + 2).ok_or_else(|| malformed("no attribute length"))?;
    let al = usize::from(u16::from_be_bytes([al[0], al[1]]));
    let attrs = b.get(al_at + 2..al_at + 2 + al).ok_or_else(|| malformed("attributes beyond the message"))?;
    let nlri = &b[al_at + 2 + al..];
    let announced_v4 =
        count_prefixes(nlri, 32).map_err(|_| err(notify::UPDATE, notify::UPDATE_NETWORK, &[], "bad NLRI prefix"))?;
    let (mut announced, mut withdrawn, mut taw) = (announced_v4, withdrawn_v4, 0);
    let mut end_of_rib = None;
    let mut i = 0;
    while i < attrs.len() {
        let flags = attrs[i];
        let code = *attrs.get(i + 1).ok_or_else(|| malformed("attribute header cut"))?;
        let (len, hl) = if flags & 0x10 != 0 {
            let l = attrs.get(i + 2..i + 4).ok_or_else(|| malformed("attribute length cut"))?;
            (usize::from(u16::from_be_bytes([l[0], l[1]])), 4)
        } else {
            (usize::from(*attrs.get(i + 2).ok_or_else(|| malformed("attribute length cut"))?), 3)
        };
        // An attribute running past the list makes the whole list unparseable: session reset is all RFC 7606 leaves.
        let v = attrs.get(i + hl..i + hl + len).ok_or_else(|| malformed("attribute beyond the list"))?;
        i += hl + len;
        match code {
            14 => {
                // MP_REACH_NLRI: AFI, SAFI, next-hop length, next hop, reserved, NLRI.
                let ok = (|| {
                    let afi = Afi::from_number(u16::from_be_bytes([*v.first()?, *v.get(1)?]))?;
                    let nhl = usize::from(*v.get(3)?);
                    let nl = v.get(5 + nhl..)?;
                    count_prefixes(nl, if afi == Afi::Ipv4 { 32 } else { 128 }).ok()
                })();
                match ok {
                    Some(n) => announced += n,
                    None => taw += 1,
                }
            }
            15 => {
                let ok = (|| {
                    let afi = Afi::from_number(u16::from_be_bytes([*v.first()?, *v.get(1)?]))?;
                    let n = count_prefixes(v.get(3..)?, if afi == Afi::Ipv4 { 32 } else { 128 }).ok()?;
                    Some((afi, n))
                })();
                match ok {
                    Some((afi, 0)) if attrs.len() == hl + len && nlri.is_empty() && wd.is_empty() => {
                        end_of_rib = Some(afi)
                    }
                    Some((_, n)) => withdrawn += n,
                    None => taw += 1,
                }
            }
            1 if len != 1 || v[0] > 2 => taw += 1,
            3 if len != 4 => taw += 1,
            4 | 5 if len != 4 => taw += 1,
            8 if len % 4 != 0 => taw += 1,
            32 if len % 12 != 0 => taw += 1,
            _ => {}
        }
    }
    if b.len() == 4 && wl == 0 && al == 0 {
        end_of_rib = Some(Afi::Ipv4);
    }
    Ok(Message::Update { announced, withdrawn, treat_as_withdraw: taw, end_of_rib })
}

/// A community written `ASN:VALUE` (16 bits each).
pub fn parse_community(s: &str) -> Option<u32> {
    let (a, v) = s.split_once(':')?;
    let (a, v): (u16, u16) = (a.trim().parse().ok()?, v.trim().parse().ok()?);
    Some((u32::from(a) << 16) | u32::from(v))
}

/// A large community written `ASN:DATA1:DATA2` (32 bits each).
pub fn parse_large_community(s: &str) -> Option<(u32, u32, u32)> {
    let v: Vec<u32> = s.split(':').map(|x| x.trim().parse().ok()).collect::<Option<_>>()?;
    match v.as_slice() {
        [g, a, b] => Some((*g, *a, *b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cease_carries_a_length_prefixed_shutdown_communication() {
        let m = cease_with_communication(notify::CEASE_SHUTDOWN, "edgelb stopping");
        // Header (19), code, subcode, length octet, 15 octets of text.
        assert_eq!(m.len(), 19 + 2 + 1 + 15);
        assert_eq!(u16::from_be_bytes([m[16], m[17]]) as usize, m.len());
        assert_eq!(&m[19..22], &[notify::CEASE, notify::CEASE_SHUTDOWN, 15]);
        assert_eq!(&m[22..], b"edgelb stopping");
        match decode(&m).unwrap() {
            Message::Notification { code: 6, subcode: 2, data } => {
                assert_eq!(shutdown_communication(&data), Some("edgelb stopping"))
            }
            other => panic!("{other:?}"),
        }
        // Longer than 255 octets: cut at a character boundary (each 'é' is two octets).
        let long = "é".repeat(200);
        let m = cease_with_communication(notify::CEASE_RESET, &long);
        assert_eq!(m[21], 254);
        assert_eq!(shutdown_communication(&m[21..]), Some(&long[..254]));
        // Malformed communications are not text.
        assert_eq!(shutdown_communication(&[]), None);
        assert_eq!(shutdown_communication(&[0]), None);
        assert_eq!(shutdown_communication(&[5, b'a', b'b']), None);
        assert_eq!(shutdown_communication(&[2, 0xff, 0xfe]), None);
        assert_eq!(shutdown_communication(b"\x02okextra"), Some("ok"));
    }

    #[test]
    fn route_refresh_names_a_family_only_for_unicast() {
        let rr = |afi: u16, safi: u8| {
            let mut m = vec![0xff; 16];
            m.extend_from_slice(&23u16.to_be_bytes());
            m.push(kind::ROUTE_REFRESH);
            m.extend_from_slice(&afi.to_be_bytes());
            m.extend_from_slice(&[0, safi]);
            decode(&m).unwrap()
        };
        assert_eq!(rr(1, 1), Message::RouteRefresh(Some(Afi::Ipv4)));
        assert_eq!(rr(2, 1), Message::RouteRefresh(Some(Afi::Ipv6)));
        assert_eq!(rr(1, 128), Message::RouteRefresh(None));
        assert_eq!(rr(25, 65), Message::RouteRefresh(None));
    }

    #[test]
    fn open_round_trip() {
        let o = Open {
            asn: 4_200_000_001,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(198, 18, 255, 1),
            caps: Capabilities {
                families: vec![Afi::Ipv4, Afi::Ipv6],
                as4: Some(4_200_000_001),
                route_refresh: true,
                graceful_restart: Some((120, true, vec![(Afi::Ipv4, true), (Afi::Ipv6, true)])),
            },
        };
        let b = open(&o);
        assert_eq!(frame(&b).unwrap(), Some(b.len()));
        assert_eq!(u16::from_be_bytes([b[20], b[21]]), AS_TRANS, "a 4-octet AS goes as AS_TRANS in the fixed field");
        assert_eq!(decode(&b).unwrap(), Message::Open(o));
    }

    #[test]
    fn updates_count_what_they_carry() {
        let a = Attributes {
            as_path: vec![65001],
            next_hop: Some("198.18.255.1".parse().unwrap()),
            med: Some(10),
            local_pref: None,
            communities: vec![GRACEFUL_SHUTDOWN],
            large_communities: vec![(65001, 1, 2)],
        };
        let v4 = announce(Afi::Ipv4, &[("198.19.0.1".parse().unwrap(), 32), ("198.19.0.2".parse().unwrap(), 32)], &a);
        assert_eq!(
            decode(&v4).unwrap(),
            Message::Update { announced: 2, withdrawn: 0, treat_as_withdraw: 0, end_of_rib: None }
        );
        let a6 = Attributes { next_hop: Some("2001:db8:ff::1".parse().unwrap()), ..a.clone() };
        let v6 = announce(Afi::Ipv6, &[("2001:db8:100::1".parse().unwrap(), 128)], &a6);
        assert_eq!(
            decode(&v6).unwrap(),
            Message::Update { announced: 1, withdrawn: 0, treat_as_withdraw: 0, end_of_rib: None }
        );
        let w6 = withdraw(Afi::Ipv6, &[("2001:db8:100::1".parse().unwrap(), 128)]);
        assert_eq!(
            decode(&w6).unwrap(),
            Message::Update { announced: 0, withdrawn: 1, treat_as_withdraw: 0, end_of_rib: None }
        );
        assert!(matches!(decode(&end_of_rib(Afi::Ipv4)).unwrap(), Message::Update { end_of_rib: Some(Afi::Ipv4), .. }));
        assert!(matches!(decode(&end_of_rib(Afi::Ipv6)).unwrap(), Message::Update { end_of_rib: Some(Afi::Ipv6), .. }));
    }

    #[test]
    fn malformed_input_is_an_error_or_treat_as_withdraw_never_a_panic() {
        let mut b = keepalive();
        b[0] = 0;
        assert_eq!(decode(&b).unwrap_err().code, notify::HEADER);
        let mut b = keepalive();
        b[18] = 9;
        assert_eq!(decode(&b).unwrap_err().subcode, notify::HEADER_TYPE);
        // An ORIGIN of length 2: treat-as-withdraw, not a reset.
        let mut u = announce(Afi::Ipv4, &[("198.19.0.1".parse().unwrap(), 32)], &Attributes::default());
        let origin_len_at = HEADER + 2 + 2 + 2;
        u[origin_len_at] = 1;
        u[origin_len_at + 1] = 7; // ORIGIN value 7
        assert!(matches!(decode(&u).unwrap(), Message::Update { treat_as_withdraw: 1, .. }));
        // Every truncation and every single-byte corruption of valid messages decodes or errors, never panics.
        let a = Attributes {
            as_path: vec![1],
            next_hop: Some("198.18.0.1".parse().unwrap()),
            communities: vec![1],
            ..Default::default()
        };
        for m in
            [keepalive(), notification(6, 2, b"bye"), announce(Afi::Ipv4, &[("198.19.0.0".parse().unwrap(), 24)], &a)]
        {
            for cut in 0..m.len() {
                let _ = frame(&m[..cut]);
                let _ = decode(&m[..cut]);
            }
            for i in 0..m.len() {
                for x in [0u8, 1, 0x7f, 0x80, 0xff] {
                    let mut c = m.clone();
                    c[i] = x;
                    let _ = decode(&c);
                }
            }
        }
    }
}
