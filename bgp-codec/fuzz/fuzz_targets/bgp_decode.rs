//! The BGP message decoder on arbitrary bytes: framing a stream of messages and decoding each must never panic, and
//! whatever decodes as an OPEN must encode and decode back to itself (in the encoder's normal form: it always sends the
//! four-octet AS capability).
#![no_main]

use edgelb_bgp_codec::{self as wire, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(n)) = wire::frame(rest) {
        if let Ok(Message::Open(mut o)) = wire::decode(&rest[..n]) {
            o.caps.as4 = Some(o.asn);
            let again = wire::open(&o);
            assert_eq!(wire::decode(&again), Ok(Message::Open(o)));
        }
        rest = &rest[n..];
    }
    let _ = wire::decode(data);
});
