//! Envelope decoding and gossip validation on arbitrary bytes: must never panic, and must
//! never accept what it cannot have verified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provnet_wire::{Gate, GateConfig, Kind, Message, Network, Topic, Verdict};

/// The seeds in corpus/gate are sealed at this time (see examples/fuzz_seeds.rs).
const NOW: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // Payload decoding on its own, since random bytes rarely get past the signature.
    let kind = Kind::ALL[usize::from(first) % Kind::ALL.len()];
    if let Ok(msg) = Message::decode(kind, rest) {
        let _ = msg.check(NOW);
        let again = msg.encode().expect("a decoded message re-encodes");
        assert_eq!(again, rest, "decoding accepted a non-canonical payload");
    }
    // The whole gate, on each topic.
    let mut gate = Gate::new(Network::dev(7), [0; 32], GateConfig::default());
    let topic = Topic::ALL[usize::from(first >> 4) % Topic::ALL.len()];
    if let Verdict::Accept(v) = gate.check(topic, data, NOW) {
        // Only sealed seeds get here; their signature verified, so they re-verify.
        let env = provnet_wire::Envelope::decode(data).expect("accepted bytes decode");
        assert!(env.verify().is_ok());
        assert_eq!(env.sender, v.sender);
    }
    // Same bytes after the seed's first byte, so seeds exercise the gate too.
    let _ = gate.check(topic, rest, NOW);
});
