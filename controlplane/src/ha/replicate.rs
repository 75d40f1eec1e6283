//! Flow replication between appliances, the wire side (sans I/O): the workers' new flows
//! ([`edgelb_dataplane::pipeline::replicate::FlowRecord`]) travel to the peer appliances in UDP datagrams of at most
//! [`MAX_RECORDS`] records, each datagram authenticated with HMAC-SHA-256 under a shared key (truncated to 16 bytes)
//! and numbered, so a forged, altered or replayed datagram is refused and counted. [`Outbox`] batches and bounds the
//! rate (a token bucket; what does not fit waits, and past its bound is dropped and counted), [`Inbox`] checks.
//!
//! A datagram: `ELBR`, version 1, kind (0 flows, 1 hello, 2 end of bulk), record count (u16), sender (u64, random per start),
//! sequence (u64), the records (60 bytes each), the tag. A record: family (4 or 6), protocol, state, 0, client port,
//! VIP port, backend port, 0 (u16), client, VIP and backend addresses (16 bytes each, IPv4 mapped). A hello (no
//! records) asks the peer to send every flow it tracks, then an end of bulk: a restarted appliance learns the flows
//! it may be given back before it announces its VIPs.

use edgelb_dataplane::pipeline::replicate::FlowRecord;
use ring::hmac;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Records per datagram (1 240 bytes with header and tag).
pub const MAX_RECORDS: usize = 20;
const HEADER: usize = 24;
const RECORD: usize = 60;
const TAG: usize = 16;
const MAGIC: &[u8; 4] = b"ELBR";
const VERSION: u8 = 1;

/// What a datagram carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// New flows.
    Flows(Vec<FlowRecord>),
    /// "I started: send me every flow you track."
    Hello,
    /// "That was every flow I track" (after the flows a hello asked for).
    BulkEnd,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Shorter than a header and a tag, or its length disagrees with its count.
    Length,
    /// Not `ELBR` version 1, or an unknown kind.
    Format,
    /// The tag does not match: another key, or altered on the way.
    Tag,
    /// A sequence number seen already (or older than the window): a replay.
    Replay,
    /// A record that does not hold together (family, address form).
    Record,
}

impl Refused {
    /// Every reason, for counters.
    pub const ALL: [Refused; 5] = [Refused::Length, Refused::Format, Refused::Tag, Refused::Replay, Refused::Record];

    /// Counter label.
    pub fn name(self) -> &'static str {
        match self {
            Refused::Length => "length",
            Refused::Format => "format",
            Refused::Tag => "tag",
            Refused::Replay => "replay",
            Refused::Record => "record",
        }
    }
}

/// The HMAC key from the configured secret (at least 16 bytes).
pub fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret)
}

/// One datagram.
pub fn encode(m: &Message, sender: u64, seq: u64, key: &hmac::Key) -> Vec<u8> {
    let (kind, records): (u8, &[FlowRecord]) = match m {
        Message::Flows(r) => (0, &r[..r.len().min(MAX_RECORDS)]),
        Message::Hello => (1, &[]),
        Message::BulkEnd => (2, &[]),
    };
    let mut out = Vec::with_capacity(HEADER + RECORD * records.len() + TAG);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    for r in records {
        out.extend_from_slice(&[if r.v4 { 4 } else { 6 }, r.proto, r.state, 0]);
        for p in [r.sport, r.dport, r.backend_port, 0] {
            out.extend_from_slice(&p.to_be_bytes());
        }
        out.extend_from_slice(&r.src);
        out.extend_from_slice(&r.dst);
        out.extend_from_slice(&r.backend);
    }
    let tag = hmac::sign(key, &out);
    out.extend_from_slice(&tag.as_ref()[..TAG]);
    out
}

/// A datagram's sender, sequence and message, once its length, format and tag check out (replays are the
/// [`Inbox`]'s to catch).
///
/// # Errors
/// [`Refused`].
pub fn decode(d: &[u8], key: &hmac::Key) -> Result<(u64, u64, Message), Refused> {
    if d.len() < HEADER + TAG {
        return Err(Refused::Length);
    }
    if &d[..4] != MAGIC || d[4] != VERSION || d[5] > 2 {
        return Err(Refused::Format);
    }
    let n = usize::from(u16::from_be_bytes([d[6], d[7]]));
    if n > MAX_RECORDS || d.len() != HEADER + n * RECORD + TAG || (d[5] != 0 && n != 0) {
        return Err(Refused::Length);
    }
    let (body, tag) = d.split_at(d.len() - TAG);
    let want = hmac::sign(key, body);
    // Constant-time comparison of the truncated tag.
    let diff = want.as_ref()[..TAG].iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(Refused::Tag);
    }
    let u64_at = |o: usize| u64::from_be_bytes(d[o..o + 8].try_into().unwrap_or([0; 8]));
    let (sender, seq) = (u64_at(8), u64_at(16));
    match d[5] {
        1 => return Ok((sender, seq, Message::Hello)),
        2 => return Ok((sender, seq, Message::BulkEnd)),
        _ => {}
    }
    let mut records = Vec::with_capacity(n);
    for i in 0..n {
        let r = &d[HEADER + i * RECORD..HEADER + (i + 1) * RECORD];
        let a16 = |o: usize| <[u8; 16]>::try_from(&r[o..o + 16]).unwrap_or([0; 16]);
        let p16 = |o: usize| u16::from_be_bytes([r[o], r[o + 1]]);
        let v4 = match r[0] {
            4 => true,
            6 => false,
            _ => return Err(Refused::Record),
        };
        let (src, dst, backend) = (a16(12), a16(28), a16(44));
        let mapped = |a: &[u8; 16]| a[..10] == [0; 10] && a[10..12] == [0xff, 0xff];
        if v4 != mapped(&src) || v4 != mapped(&dst) || v4 != mapped(&backend) {
            return Err(Refused::Record);
        }
        records.push(FlowRecord {
            v4,
            proto: r[1],
            state: r[2],
            src,
            dst,
            sport: p16(4),
            dport: p16(6),
            backend,
            backend_port: p16(8),
        });
    }
    Ok((sender, seq, Message::Flows(records)))
}

/// Replay protection per sender: a sequence number is accepted once, within a window of the last 64 behind the
/// highest seen (UDP may reorder).
#[derive(Debug, Default)]
pub struct Inbox {
    /// Per sender: the highest sequence number seen and a bitmap of the 64 before it.
    seen: HashMap<u64, (u64, u64)>,
    /// Refused datagrams by reason.
    pub refused: [u64; Refused::ALL.len()],
    /// Datagrams accepted.
    pub accepted: u64,
}

impl Inbox {
    /// Check a datagram; `Ok` once per (sender, sequence).
    ///
    /// # Errors
    /// [`Refused`], counted.
    pub fn accept(&mut self, d: &[u8], key: &hmac::Key) -> Result<(u64, Message), Refused> {
        let r = decode(d, key).and_then(|(sender, seq, m)| self.fresh(sender, seq).map(|()| (sender, m)));
        match &r {
            Ok(_) => self.accepted += 1,
            Err(e) => self.refused[Refused::ALL.iter().position(|x| x == e).unwrap_or(0)] += 1,
        }
        r
    }

    fn fresh(&mut self, sender: u64, seq: u64) -> Result<(), Refused> {
        let Some((top, bits)) = self.seen.get_mut(&sender) else {
            self.seen.insert(sender, (seq, 0));
            return Ok(());
        };
        if seq > *top {
            let shift = seq - *top;
            // The old top moves into the window (bit shift-1), unless it falls out of it.
            *bits = match shift {
                1..=63 => (*bits << shift) | (1 << (shift - 1)),
                64 => 1 << 63,
                _ => 0,
            };
            *top = seq;
            return Ok(());
        }
        let back = *top - seq;
        if back == 0 || back > 64 || *bits & (1 << (back - 1)) != 0 {
            return Err(Refused::Replay);
        }
        *bits |= 1 << (back - 1);
        Ok(())
    }
}

/// Batching and a rate bound for what goes out.
#[derive(Debug)]
pub struct Outbox {
    sender: u64,
    seq: u64,
    /// Records to send; `None` marks the end of a bulk send.
    pending: std::collections::VecDeque<Option<FlowRecord>>,
    /// Records per second at most.
    rate: u32,
    tokens: f64,
    last: Instant,
    /// Records waiting at most; past that the newest are dropped.
    bound: usize,
    /// Records dropped for the bound.
    pub dropped: u64,
    /// Records sent.
    pub sent: u64,
}

impl Outbox {
    /// `sender` identifies this start of the appliance; `rate` records per second at most, `bound` waiting at most.
    pub fn new(sender: u64, rate: u32, bound: usize, now: Instant) -> Self {
        Outbox {
            sender,
            seq: 0,
            pending: std::collections::VecDeque::new(),
            rate: rate.max(1),
            tokens: f64::from(rate.max(1)) / 10.0,
            last: now,
            bound,
            dropped: 0,
            sent: 0,
        }
    }

    /// Queue records to send.
    pub fn push(&mut self, r: FlowRecord) {
        if self.pending.len() >= self.bound {
            self.dropped += 1;
        } else {
            self.pending.push_back(Some(r));
        }
    }

    /// Mark the end of a bulk send: an end-of-bulk datagram follows the records queued before it.
    pub fn push_end(&mut self) {
        self.pending.push_back(None);
    }

    /// Records waiting.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    /// The next sequence number (for a hello).
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// This start's sender id.
    pub fn sender(&self) -> u64 {
        self.sender
    }

    /// The datagrams the rate allows now (each to go to every peer).
    pub fn due(&mut self, now: Instant, key: &hmac::Key) -> Vec<Vec<u8>> {
        let dt = now.saturating_duration_since(self.last).min(Duration::from_secs(1));
        self.last = now;
        let cap = f64::from(self.rate) / 10.0 + MAX_RECORDS as f64;
        self.tokens = (self.tokens + dt.as_secs_f64() * f64::from(self.rate)).min(cap);
        let mut out = Vec::new();
        loop {
            if self.pending.front() == Some(&None) {
                self.pending.pop_front();
                let seq = self.next_seq();
                out.push(encode(&Message::BulkEnd, self.sender, seq, key));
                continue;
            }
            if self.pending.is_empty() || self.tokens < 1.0 {
                break;
            }
            let mut batch = Vec::new();
            while batch.len() < MAX_RECORDS.min(self.tokens as usize) {
                match self.pending.front() {
                    Some(Some(r)) => {
                        batch.push(*r);
                        self.pending.pop_front();
                    }
                    _ => break,
                }
            }
            self.tokens -= batch.len() as f64;
            self.sent += batch.len() as u64;
            let seq = self.next_seq();
            out.push(encode(&Message::Flows(batch), self.sender, seq, key));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u16, v4: bool) -> FlowRecord {
        let a = |last: u8| {
            if v4 {
                let mut x = [0u8; 16];
                x[10] = 0xff;
                x[11] = 0xff;
                x[12..].copy_from_slice(&[198, 18, 0, last]);
                x
            } else {
                let mut x = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last];
                x[15] = last;
                x
            }
        };
        FlowRecord {
            v4,
            proto: 6,
            state: 1,
            src: a(10),
            dst: a(1),
            sport: 1000 + i,
            dport: 80,
            backend: a(20),
            backend_port: 8080,
        }
    }

    #[test]
    fn round_trip_both_families_and_hello() {
        let k = key(b"0123456789abcdef0123");
        let m = Message::Flows((0..MAX_RECORDS as u16).map(|i| rec(i, i % 2 == 0)).collect());
        let d = encode(&m, 7, 9, &k);
        assert_eq!(d.len(), HEADER + MAX_RECORDS * RECORD + TAG);
        assert!(d.len() <= 1280, "fits any IPv6 link");
        assert_eq!(decode(&d, &k), Ok((7, 9, m)));
        assert_eq!(decode(&encode(&Message::Hello, 7, 10, &k), &k), Ok((7, 10, Message::Hello)));
    }

    #[test]
    fn altered_foreign_cut_and_replayed_datagrams_are_refused() {
        let k = key(b"0123456789abcdef0123");
        let d = encode(&Message::Flows(vec![rec(1, true), rec(2, false)]), 1, 1, &k);
        for i in 0..d.len() {
            let mut x = d.clone();
            x[i] ^= 0x01;
            assert!(decode(&x, &k).is_err(), "a flipped bit at {i} went through");
        }
        assert_eq!(decode(&d, &key(b"another key, not ours")), Err(Refused::Tag));
        for n in 0..d.len() {
            assert!(decode(&d[..n], &k).is_err(), "cut at {n}");
        }
        let mut inbox = Inbox::default();
        assert!(inbox.accept(&d, &k).is_ok());
        assert_eq!(inbox.accept(&d, &k), Err(Refused::Replay));
        // Reordered within the window: accepted once each.
        let later = encode(&Message::Hello, 1, 5, &k);
        let between = encode(&Message::Hello, 1, 3, &k);
        assert!(inbox.accept(&later, &k).is_ok());
        assert!(inbox.accept(&between, &k).is_ok());
        assert_eq!(inbox.accept(&between, &k), Err(Refused::Replay));
        let ancient = encode(&Message::Hello, 1, 100, &k);
        assert!(inbox.accept(&ancient, &k).is_ok());
        assert_eq!(inbox.accept(&encode(&Message::Hello, 1, 30, &k), &k), Err(Refused::Replay), "behind the window");
        // Another sender (a restarted peer) starts afresh.
        assert!(inbox.accept(&encode(&Message::Hello, 2, 1, &k), &k).is_ok());
        assert_eq!(inbox.refused[Refused::ALL.iter().position(|r| *r == Refused::Replay).unwrap()], 3);
    }

    #[test]
    fn the_end_of_a_bulk_follows_its_records() {
        let k = key(b"0123456789abcdef0123");
        let t0 = Instant::now();
        let mut o = Outbox::new(3, 100_000, 500, t0);
        for i in 0..45 {
            o.push(rec(i, true));
        }
        o.push_end();
        o.push(rec(99, false));
        let kinds: Vec<Message> =
            o.due(t0 + Duration::from_millis(10), &k).iter().map(|d| decode(d, &k).unwrap().2).collect();
        let shape: Vec<String> = kinds
            .iter()
            .map(|m| match m {
                Message::Flows(r) => format!("flows {}", r.len()),
                Message::Hello => "hello".into(),
                Message::BulkEnd => "end".into(),
            })
            .collect();
        assert_eq!(shape, ["flows 20", "flows 20", "flows 5", "end", "flows 1"]);
    }

    #[test]
    fn the_outbox_batches_and_bounds_the_rate() {
        let k = key(b"0123456789abcdef0123");
        let t0 = Instant::now();
        let mut o = Outbox::new(3, 1000, 500, t0);
        for i in 0..700 {
            o.push(rec(i, true));
        }
        assert_eq!((o.waiting(), o.dropped), (500, 200), "bounded");
        // At 1000 records/s, one second passes: about 1000 go, in datagrams of at most 20.
        let mut sent = 0;
        for ms in 1..=1000u64 {
            for d in o.due(t0 + Duration::from_millis(ms), &k) {
                let (_, _, m) = decode(&d, &k).unwrap();
                let Message::Flows(r) = m else { panic!("flows") };
                assert!(r.len() <= MAX_RECORDS);
                sent += r.len();
            }
        }
        assert_eq!(sent, 500, "all 500 went within the second");
        for i in 0..5000 {
            o.push(rec(i as u16, true));
        }
        let mut more = 0;
        for ms in 1001..=1500u64 {
            more += o.due(t0 + Duration::from_millis(ms), &k).len();
        }
        let recs = o.sent - 500;
        assert!((400..=620).contains(&recs), "half a second at 1000/s sent {recs} records in {more} datagrams");
    }
}
