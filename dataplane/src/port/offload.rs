//! Checksum offload seen from a port: frames a local stack sent with `CHECKSUM_PARTIAL` (veth, loopback, virtio with
//! offload) carry, in the TCP/UDP checksum field, only the folded pseudo-header sum; the "hardware" — here the port —
//! must finish it. AF_PACKET flags such frames (`TP_STATUS_CSUMNOTREADY`); AF_XDP does not, so [`is_partial`]
//! recognises them by that exact value (a corrupt checksum matches it with probability 1/65536).

use crate::wire::{checksum, ethernet, proto};

/// Where the L4 checksum of a frame is: (l3 offset, l4 offset, end, protocol, IPv4?).
fn l4_of(frame: &[u8]) -> Option<(usize, usize, usize, u8, bool)> {
    let l2 = ethernet::parse_l2(frame).ok()?;
    let l3 = l2.l3_offset;
    let (l4, end, p, v4) = match l2.ethertype {
        ethernet::ethertype::IPV4 if frame.len() >= l3 + 20 => {
            let hl = usize::from(frame[l3] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
            let frag = u16::from_be_bytes([frame[l3 + 6], frame[l3 + 7]]) & 0x3fff != 0;
            if frag {
                return None;
            }
            (l3 + hl, l3 + total, frame[l3 + 9], true)
        }
        ethernet::ethertype::IPV6 if frame.len() >= l3 + 40 => {
            let pl = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
            (l3 + 40, l3 + 40 + pl, frame[l3 + 6], false)
        }
        _ => return None,
    };
    let at = match p {
        proto::TCP => l4 + 16,
        proto::UDP => l4 + 6,
        _ => return None,
    };
    (end <= frame.len() && at + 2 <= end && l4 <= end)
        .then_some((l3, l4, end, p, v4))
        .map(|x| (x.0, x.1, x.2, x.3, x.4))
}

/// True when the frame's TCP/UDP checksum field holds exactly the folded pseudo-header sum (offload left it to us).
pub fn is_partial(frame: &[u8]) -> bool {
    let Some((l3, l4, end, p, v4)) = l4_of(frame) else { return false };
    let at = if p == proto::TCP { l4 + 16 } else { l4 + 6 };
    let field = u16::from_be_bytes([frame[at], frame[at + 1]]);
    let len = end - l4;
    let pseudo = if v4 {
        let s = [frame[l3 + 12], frame[l3 + 13], frame[l3 + 14], frame[l3 + 15]];
        let d = [frame[l3 + 16], frame[l3 + 17], frame[l3 + 18], frame[l3 + 19]];
        checksum::pseudo_v4(s, d, p, len as u16)
    } else {
        let mut s = [0u8; 16];
        s.copy_from_slice(&frame[l3 + 8..l3 + 24]);
        let mut d = [0u8; 16];
        d.copy_from_slice(&frame[l3 + 24..l3 + 40]);
        checksum::pseudo_v6(&s, &d, p, len as u32)
    };
    field == !checksum::finish(pseudo) && checksum::finish(checksum::sum(pseudo, &frame[l4..end])) != 0
}

/// Complete the TCP/UDP checksum of a frame a local stack sent with checksum offload (`CHECKSUM_PARTIAL`: the field
/// holds the folded pseudo-header sum; the device, here the port, sums the segment and stores the complement).
/// Returns false for frames it does not understand (left as they are).
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    let Ok(l2) = ethernet::parse_l2(frame) else { return false };
    let l3 = l2.l3_offset;
    let (l4, end, p) = match l2.ethertype {
        ethernet::ethertype::IPV4 if frame.len() >= l3 + 20 => {
            let hl = usize::from(frame[l3] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
            (l3 + hl, l3 + total, frame[l3 + 9])
        }
        ethernet::ethertype::IPV6 if frame.len() >= l3 + 40 => {
            let pl = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
            (l3 + 40, l3 + 40 + pl, frame[l3 + 6])
        }
        _ => return false,
    };
    let at = match p {
        proto::TCP => l4 + 16,
        proto::UDP => l4 + 6,
        _ => return false,
    };
    if end > frame.len() || at + 2 > end {
        return false;
    }
    let c = checksum::checksum(&frame[l4..end]);
    let c = if p == proto::UDP { checksum::udp_nonzero(c) } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::{complete_l4_checksum, is_partial};
    use crate::wire::build::{frame, Segment};
    use crate::wire::checksum::{finish, pseudo_v4, sum};
    use crate::wire::proto;

    /// A frame with a partial checksum (the folded pseudo-header sum, as a stack with offload leaves it) gets the
    /// checksum a full computation gives.
    #[test]
    fn completes_partial_checksums() {
        for p in [proto::TCP, proto::UDP] {
            let mut b = [0u8; 128];
            let seg = Segment {
                src: "198.18.0.10".parse().unwrap(),
                dst: "198.19.0.1".parse().unwrap(),
                proto: p,
                sport: 40000,
                dport: 80,
                tcp_flags: 2,
                payload: b"hello",
                ttl: 64,
            };
            let n = frame(&mut b, [2; 6], [4; 6], &seg).unwrap();
            let full = b[..n].to_vec();
            let at = if p == proto::TCP { 34 + 16 } else { 34 + 6 };
            let l4len = (n - 34) as u16;
            let partial = !finish(pseudo_v4([198, 18, 0, 10], [198, 19, 0, 1], p, l4len));
            b[at..at + 2].copy_from_slice(&partial.to_be_bytes());
            assert!(is_partial(&b[..n]), "a partial checksum is recognised");
            assert!(complete_l4_checksum(&mut b[..n]));
            assert!(!is_partial(&b[..n]), "a complete one is not");
            assert_eq!(&b[..n], &full[..], "protocol {p}");
            assert_eq!(finish(sum(pseudo_v4([198, 18, 0, 10], [198, 19, 0, 1], p, l4len), &b[34..n])), 0);
        }
        assert!(!complete_l4_checksum(&mut [0u8; 10]));
    }
}
