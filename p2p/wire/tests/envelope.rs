//! Envelope and gate properties: round trips, tamper evidence, and every reject reason.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use provnet_wire::message::GROTH16_BN254_PROOF_LEN;
use provnet_wire::*;

const NETUID: u16 = 7;
const NET: Network = Network {
    netuid: NETUID,
    genesis: [0x5a; 8],
};
const NOW: u64 = 1_800_000_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn challenge(n: usize) -> Message {
    Message::Challenge(Challenge {
        model_id: [1; 32],
        segment: 0,
        input: (0..n as i64).map(|v| v * 977 - 4000).collect(),
        nonce: [2; 32],
        deadline_ms: NOW + 30_000,
        request: None,
    })
}

fn arb_key32() -> impl Strategy<Value = [u8; 32]> {
    prop::array::uniform32(any::<u8>())
}

fn arb_message() -> impl Strategy<Value = Message> {
    let tensor = prop::collection::vec(any::<i64>(), 1..64);
    prop_oneof![
        (
            arb_key32(),
            any::<u32>(),
            tensor.clone(),
            arb_key32(),
            1..MAX_TTL
        )
            .prop_map(|(model_id, segment, input, nonce, ttl)| Message::Challenge(
                Challenge {
                    model_id,
                    segment,
                    input,
                    nonce,
                    deadline_ms: NOW + ttl,
                    request: None,
                }
            )),
        (
            arb_key32(),
            arb_key32(),
            any::<u32>(),
            tensor,
            prop::collection::vec(any::<u8>(), GROTH16_BN254_PROOF_LEN)
        )
            .prop_map(|(challenge_id, model_id, segment, output, proof)| {
                Message::ProofSubmission(ProofSubmission {
                    challenge_id,
                    model_id,
                    segment,
                    vk_id: [9; 32],
                    system: ProofSystem::Groth16Bn254,
                    output,
                    proof,
                })
            }),
        (any::<u64>(), arb_key32()).prop_map(|(epoch, commitment)| Message::WeightsCommit(
            WeightsCommit { epoch, commitment }
        )),
        (
            any::<u64>(),
            arb_key32(),
            prop::collection::btree_map(arb_key32(), any::<u16>(), 0..20)
        )
            .prop_map(|(epoch, salt, w)| Message::WeightsReveal(WeightsReveal {
                epoch,
                salt,
                seen_commits: Vec::new(),
                weights: w
                    .into_iter()
                    .map(|(miner, weight)| MinerWeight { miner, weight })
                    .collect(),
            })),
        (
            prop::collection::btree_set(
                prop_oneof![
                    Just(Role::Challenger),
                    Just(Role::Miner),
                    Just(Role::Validator)
                ],
                0..3
            ),
            prop::collection::vec("[a-z0-9/.]{1,40}", 0..4),
            "[0-9.]{1,12}"
        )
            .prop_map(|(roles, listen_addrs, software_version)| Message::Announce(
                Announce {
                    roles: roles.into_iter().collect(),
                    listen_addrs,
                    software_version,
                }
            )),
    ]
}

const MAX_TTL: u64 = message::MAX_CHALLENGE_TTL_MS;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn envelopes_round_trip(msg in arb_message(), seed in any::<u8>(), seq in any::<u64>()) {
        let payload = msg.encode().unwrap();
        let env = Envelope::seal(&key(seed), NET, msg.kind(), NOW, seq, payload);
        let bytes = env.encode().unwrap();
        let back = Envelope::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &env);
        prop_assert!(back.verify().is_ok());
        prop_assert_eq!(back.message().unwrap(), msg);
    }

    #[test]
    fn flipping_any_byte_fails_verification(
        msg in arb_message(),
        pick in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let env = Envelope::seal(&key(3), NET, msg.kind(), NOW, 5, msg.encode().unwrap());
        let mut bytes = env.encode().unwrap();
        let i = pick.index(bytes.len());
        bytes[i] ^= mask;
        let verdict = Envelope::decode(&bytes).and_then(|e| e.verify());
        prop_assert!(verdict.is_err(), "byte {} ^ {:#x} still verifies", i, mask);
    }

    #[test]
    fn the_gate_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut gate = Gate::new(NET, [0; 32], GateConfig::default());
        let verdict = gate.check(Topic::Challenge, &bytes, NOW);
        prop_assert!(!matches!(verdict, Verdict::Accept(_)));
    }
}

fn sealed(key: &SigningKey, msg: &Message, ts: u64, seq: u64) -> Envelope {
    Envelope::seal(key, NET, msg.kind(), ts, seq, msg.encode().unwrap())
}

fn gate() -> Gate {
    Gate::new(
        NET,
        key(99).verifying_key().to_bytes(),
        GateConfig::default(),
    )
}

fn reason(v: Verdict) -> Option<RejectReason> {
    match v {
        Verdict::Reject(r, _) => Some(r),
        _ => None,
    }
}

#[test]
fn honest_messages_are_accepted_with_their_sender() {
    let mut g = gate();
    let msg = challenge(10);
    let bytes = sealed(&key(1), &msg, NOW, 1).encode().unwrap();
    match g.check(Topic::Challenge, &bytes, NOW + 5) {
        Verdict::Accept(v) => {
            assert_eq!(v.sender, key(1).verifying_key().to_bytes());
            assert_eq!(v.message, msg);
        }
        other => panic!("expected accept, got {other:?}"),
    }
    assert_eq!(g.counters().accepted, 1);
}

#[test]
fn each_bad_message_is_rejected_for_its_own_reason() {
    use RejectReason as R;
    let k = key(1);
    let msg = challenge(10);
    let good = sealed(&k, &msg, NOW, 1);
    let mut cases: Vec<(R, Topic, Vec<u8>)> = Vec::new();

    cases.push((
        R::Oversize,
        Topic::Challenge,
        vec![0u8; Kind::max_envelope() + 1],
    ));
    cases.push((R::Malformed, Topic::Challenge, b"\xff\x00garbage".to_vec()));
    let mut trailing = good.encode().unwrap();
    trailing.push(0);
    cases.push((R::Malformed, Topic::Challenge, trailing));
    let mut v2 = good.clone();
    v2.version = 2;
    v2.sign(&k);
    cases.push((R::WrongVersion, Topic::Challenge, v2.encode().unwrap()));
    let mut foreign = good.clone();
    foreign.netuid = NETUID + 1;
    foreign.sign(&k);
    cases.push((
        R::ForeignNetuid,
        Topic::Challenge,
        foreign.encode().unwrap(),
    ));
    let mut other_genesis = good.clone();
    other_genesis.genesis[7] ^= 1;
    other_genesis.sign(&k);
    cases.push((
        R::ForeignGenesis,
        Topic::Challenge,
        other_genesis.encode().unwrap(),
    ));
    cases.push((R::WrongTopic, Topic::Proof, good.encode().unwrap()));
    let big = Message::Announce(Announce {
        roles: vec![],
        listen_addrs: vec!["x".repeat(200); 40],
        software_version: "1".into(),
    });
    cases.push((
        R::Oversize,
        Topic::Announce,
        sealed(&k, &big, NOW, 2).encode().unwrap(),
    ));
    cases.push((
        R::Stale,
        Topic::Challenge,
        sealed(&k, &msg, NOW - 61_000, 3).encode().unwrap(),
    ));
    cases.push((
        R::FromFuture,
        Topic::Challenge,
        sealed(&k, &msg, NOW + 11_000, 4).encode().unwrap(),
    ));
    let mut forged = good.clone();
    forged.signature[10] ^= 1;
    cases.push((R::BadSignature, Topic::Challenge, forged.encode().unwrap()));
    let mut impostor = sealed(&key(2), &msg, NOW, 5);
    impostor.sender = k.verifying_key().to_bytes();
    cases.push((
        R::BadSignature,
        Topic::Challenge,
        impostor.encode().unwrap(),
    ));
    let short_proof = Message::ProofSubmission(ProofSubmission {
        challenge_id: [0; 32],
        model_id: [0; 32],
        segment: 0,
        vk_id: [0; 32],
        system: ProofSystem::Groth16Bn254,
        output: vec![1],
        proof: vec![0; 127],
    });
    cases.push((
        R::InvalidPayload,
        Topic::Proof,
        sealed(&k, &short_proof, NOW, 6).encode().unwrap(),
    ));
    let mut wrong_payload = sealed(&k, &short_proof, NOW, 7);
    wrong_payload.kind = Kind::Challenge;
    wrong_payload.sign(&k);
    cases.push((
        R::InvalidPayload,
        Topic::Challenge,
        wrong_payload.encode().unwrap(),
    ));

    let mut g = gate();
    for (want, topic, bytes) in cases {
        assert_eq!(
            reason(g.check(topic, &bytes, NOW)),
            Some(want),
            "case {want:?}"
        );
    }
    assert_eq!(g.counters().accepted, 0);
    assert_eq!(g.counters().rejected(R::Oversize), 2);
    assert_eq!(g.counters().rejected(R::BadSignature), 2);
}

#[test]
fn replays_are_rejected_but_late_arrivals_in_the_window_are_not() {
    let k = key(1);
    let mut g = gate();
    let check = |g: &mut Gate, seq: u64| {
        reason(g.check(
            Topic::Challenge,
            &sealed(&k, &challenge(3), NOW, seq).encode().unwrap(),
            NOW,
        ))
    };
    assert_eq!(check(&mut g, 100), None);
    assert_eq!(
        check(&mut g, 100),
        Some(RejectReason::Replay),
        "same sequence again"
    );
    assert_eq!(check(&mut g, 90), None, "reordered, still in the window");
    assert_eq!(check(&mut g, 90), Some(RejectReason::Replay));
    assert_eq!(check(&mut g, 5000), None);
    assert_eq!(
        check(&mut g, 101),
        Some(RejectReason::Replay),
        "too far behind to tell"
    );
    assert_eq!(g.counters().rejected(RejectReason::Replay), 3);
}

#[test]
fn a_sender_over_its_rate_is_rejected_until_tokens_refill() {
    let k = key(1);
    let cfg = GateConfig {
        rate_per_sec: 10.0,
        rate_burst: 5.0,
        ..GateConfig::default()
    };
    let mut g = Gate::new(NET, [0; 32], cfg);
    let mut seq = 0;
    let mut send = |g: &mut Gate, at: u64| {
        seq += 1;
        reason(g.check(
            Topic::Challenge,
            &sealed(&k, &challenge(3), NOW, seq).encode().unwrap(),
            at,
        ))
    };
    for _ in 0..5 {
        assert_eq!(send(&mut g, NOW), None);
    }
    assert_eq!(send(&mut g, NOW), Some(RejectReason::RateLimited));
    assert_eq!(
        send(&mut g, NOW + 100),
        None,
        "one token back after 100 ms at 10/s"
    );
    assert_eq!(send(&mut g, NOW + 100), Some(RejectReason::RateLimited));
}

#[test]
fn own_messages_and_expired_challenges_are_ignored_without_penalty() {
    let mut g = gate();
    let own = sealed(&key(99), &challenge(3), NOW, 1).encode().unwrap();
    assert_eq!(
        g.check(Topic::Challenge, &own, NOW),
        Verdict::Ignore(IgnoreReason::OwnMessage)
    );
    let late = sealed(&key(1), &challenge(3), NOW, 1).encode().unwrap();
    assert_eq!(
        g.check(Topic::Challenge, &late, NOW + 31_000),
        Verdict::Ignore(IgnoreReason::Expired)
    );
    assert_eq!(g.counters().total_rejected(), 0);
}

#[test]
fn signer_numbers_messages_upward_from_the_clock() {
    let mut s = Signer::new(key(1), NET, NOW);
    let a = Envelope::decode(&s.seal(&challenge(2), NOW).unwrap()).unwrap();
    let b = Envelope::decode(&s.seal(&challenge(2), NOW).unwrap()).unwrap();
    assert_eq!(a.sequence, NOW * 1000);
    assert_eq!(b.sequence, a.sequence + 1);
    // A restart a millisecond later starts above everything sent before.
    let mut again = Signer::new(key(1), NET, NOW + 1);
    let c = Envelope::decode(&again.seal(&challenge(2), NOW + 1).unwrap()).unwrap();
    assert!(c.sequence > b.sequence);
}

#[test]
fn weights_reveal_opens_only_its_own_commitment() {
    let reveal = WeightsReveal {
        epoch: 4,
        salt: [5; 32],
        seen_commits: Vec::new(),
        weights: vec![MinerWeight {
            miner: [1; 32],
            weight: 100,
        }],
    };
    let mut other = reveal.clone();
    other.weights[0].weight = 101;
    assert_ne!(reveal.commitment(), other.commitment());
    let mut resalted = reveal.clone();
    resalted.salt[0] = 6;
    assert_ne!(reveal.commitment(), resalted.commitment());
}

#[test]
fn reveals_vouch_for_commits_in_validator_order_and_old_reveals_still_decode() {
    use provnet_wire::{Kind, SeenCommit};
    let seen = |v: u8| SeenCommit {
        validator: [v; 32],
        commitment: [v; 32],
    };
    let reveal = |seen_commits: Vec<SeenCommit>| {
        Message::WeightsReveal(WeightsReveal {
            epoch: 4,
            salt: [5; 32],
            weights: vec![],
            seen_commits,
        })
    };
    assert!(reveal(vec![seen(1), seen(2)]).check(0).is_ok());
    for bad in [vec![seen(2), seen(1)], vec![seen(1), seen(1)]] {
        let e = reveal(bad).check(0).expect_err("refused").to_string();
        assert!(e.contains("seen commits are not sorted"), "{e}");
    }
    // A reveal from a node that predates `seen_commits` decodes with none.
    #[derive(serde::Serialize)]
    struct OldReveal {
        epoch: u64,
        #[serde(with = "serde_bytes")]
        salt: [u8; 32],
        weights: Vec<MinerWeight>,
    }
    let old = serde_cbor::ser::to_vec_packed(&OldReveal {
        epoch: 4,
        salt: [5; 32],
        weights: vec![],
    })
    .expect("encodes");
    assert_eq!(
        Message::decode(Kind::WeightsReveal, &old).expect("decodes"),
        reveal(vec![])
    );
}

#[test]
fn archived_envelopes_skip_the_age_window_but_nothing_else() {
    let g = gate();
    let commit = Message::WeightsCommit(WeightsCommit {
        epoch: 3,
        commitment: [4; 32],
    });
    // A day old: live gossip would refuse it as stale; a sync answer may carry it.
    let old = NOW - 86_400_000;
    let bytes = sealed(&key(1), &commit, old, 5).encode().unwrap();
    let v = g
        .check_archived(&bytes, NOW)
        .expect("an old signed commit opens");
    assert_eq!(
        (v.sender, v.timestamp_ms, &v.message),
        (key(1).verifying_key().to_bytes(), old, &commit)
    );
    let mut live = gate();
    assert_eq!(
        reason(live.check(Topic::Weights, &bytes, NOW)),
        Some(RejectReason::Stale)
    );
    // Checking twice is fine: no replay state is kept for archives.
    assert!(g.check_archived(&bytes, NOW).is_ok());

    let refused = |bytes: &[u8]| g.check_archived(bytes, NOW).unwrap_err().0;
    let mut forged = sealed(&key(1), &commit, old, 5);
    forged.signature[3] ^= 1;
    assert_eq!(
        refused(&forged.encode().unwrap()),
        RejectReason::BadSignature
    );
    let mut tampered = sealed(&key(1), &commit, old, 5);
    tampered.timestamp_ms += 1;
    assert_eq!(
        refused(&tampered.encode().unwrap()),
        RejectReason::BadSignature
    );
    let foreign = Envelope::seal(
        &key(1),
        Network::dev(NETUID + 1),
        commit.kind(),
        old,
        5,
        commit.encode().unwrap(),
    );
    assert_eq!(
        refused(&foreign.encode().unwrap()),
        RejectReason::ForeignNetuid
    );
    let future = sealed(&key(1), &commit, NOW + 60_000, 5);
    assert_eq!(refused(&future.encode().unwrap()), RejectReason::FromFuture);
    assert_eq!(refused(b"not an envelope"), RejectReason::Malformed);
}

#[test]
fn challenges_from_keys_the_genesis_does_not_admit_are_rejected_before_the_signature() {
    use std::collections::HashSet;
    let admitted = key(1);
    let admission = Admission {
        challengers: Some(HashSet::from([admitted.verifying_key().to_bytes()])),
        ..Default::default()
    };
    let mut g = gate().with_admission(admission);
    let msg = challenge(10);
    let ok = sealed(&admitted, &msg, NOW, 1).encode().unwrap();
    assert!(matches!(
        g.check(Topic::Challenge, &ok, NOW),
        Verdict::Accept(_)
    ));
    // 1,000 fresh keys, each with a validly signed challenge: every one refused.
    for seed in 0..1_000u32 {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&seed.to_le_bytes());
        bytes[31] = 0xee;
        let fresh = SigningKey::from_bytes(&bytes);
        let junk = sealed(&fresh, &msg, NOW, 1).encode().unwrap();
        assert_eq!(
            reason(g.check(Topic::Challenge, &junk, NOW)),
            Some(RejectReason::Unadmitted)
        );
    }
    // The sender is filtered before any signature work: a forged signature from an
    // unadmitted sender is refused as unadmitted, not as a bad signature.
    let mut forged = sealed(&key(7), &msg, NOW, 1);
    forged.signature[0] ^= 0xff;
    assert_eq!(
        reason(g.check(Topic::Challenge, &forged.encode().unwrap(), NOW)),
        Some(RejectReason::Unadmitted)
    );
    // Other kinds are not the admission's business.
    let announce = Message::Announce(Announce {
        roles: vec![],
        listen_addrs: vec![],
        software_version: "x".into(),
    });
    let a = sealed(&key(7), &announce, NOW, 2).encode().unwrap();
    assert!(matches!(
        g.check(Topic::Announce, &a, NOW),
        Verdict::Accept(_)
    ));
    assert_eq!(g.counters().rejected(RejectReason::Unadmitted), 1_001);
    // Sender state is only made for senders that pass: the flood took none.
    assert_eq!(g.senders_tracked(), 2);
}

#[test]
fn a_challenge_naming_a_request_round_trips_and_changes_its_id() {
    let Message::Challenge(plain) = challenge(4) else {
        unreachable!()
    };
    let adopted = Challenge {
        request: Some([5; 32]),
        ..plain.clone()
    };
    let who = [3u8; 32];
    assert_ne!(plain.id(&who), adopted.id(&who));
    for c in [plain, adopted] {
        let m = Message::Challenge(c);
        let bytes = m.encode().unwrap();
        assert_eq!(Message::decode(Kind::Challenge, &bytes).unwrap(), m);
    }
}

#[test]
fn registrations_need_their_work_and_proofs_need_a_slot() {
    use std::collections::HashSet;
    use std::sync::{Arc, RwLock};
    const EPOCH_MS: u64 = 10_000;
    let miners = Arc::new(RwLock::new(HashSet::new()));
    let admission = Admission {
        registration: Some(RegistrationRule {
            work_bits: 8,
            epoch_ms: EPOCH_MS,
        }),
        miners: Some(miners.clone()),
        ..Default::default()
    };
    let mut g = gate().with_admission(admission);
    let m = key(4);
    let mk = m.verifying_key().to_bytes();
    let epoch = NOW / EPOCH_MS;
    let reg = |r: Register, seq: u64| {
        sealed(&m, &Message::Register(r), NOW, seq)
            .encode()
            .unwrap()
    };

    // Without a slot, a miner's proofs are dropped unforwarded, without penalty.
    let proof = Message::ProofSubmission(ProofSubmission {
        challenge_id: [1; 32],
        model_id: [2; 32],
        segment: 0,
        vk_id: [3; 32],
        system: ProofSystem::Groth16Bn254,
        output: vec![1],
        proof: vec![0; GROTH16_BN254_PROOF_LEN],
    });
    let p = sealed(&m, &proof, NOW, 1).encode().unwrap();
    assert_eq!(
        g.check(Topic::Proof, &p, NOW),
        Verdict::Ignore(IgnoreReason::Unregistered)
    );
    // A registration with too little work is refused; old work is ignored; work for the
    // current epoch passes.
    let mut lazy = Register { epoch, nonce: 0 };
    while lazy.work_bits(&NET.genesis, &mk) >= 8 {
        lazy.nonce += 1;
    }
    assert_eq!(
        reason(g.check(Topic::Announce, &reg(lazy, 2), NOW)),
        Some(RejectReason::InvalidPayload)
    );
    let stale = Register::solve(&NET.genesis, &mk, epoch - 2, 8, 0);
    assert_eq!(
        g.check(Topic::Announce, &reg(stale, 3), NOW),
        Verdict::Ignore(IgnoreReason::Expired)
    );
    let ahead = Register::solve(&NET.genesis, &mk, epoch + 5, 8, 0);
    assert_eq!(
        reason(g.check(Topic::Announce, &reg(ahead, 4), NOW)),
        Some(RejectReason::InvalidPayload)
    );
    let good = Register::solve(&NET.genesis, &mk, epoch, 8, 0);
    assert!(matches!(
        g.check(Topic::Announce, &reg(good, 5), NOW),
        Verdict::Accept(_)
    ));
    // Work is bound to the key: another key cannot reuse it.
    let thief = key(5);
    let stolen = sealed(&thief, &Message::Register(good), NOW, 1)
        .encode()
        .unwrap();
    assert_eq!(
        reason(g.check(Topic::Announce, &stolen, NOW)),
        Some(RejectReason::InvalidPayload)
    );
    // Once it holds a slot, its proofs pass and a second registration is not forwarded.
    miners.write().unwrap().insert(mk);
    let p = sealed(&m, &proof, NOW, 6).encode().unwrap();
    assert!(matches!(g.check(Topic::Proof, &p, NOW), Verdict::Accept(_)));
    assert_eq!(
        g.check(Topic::Announce, &reg(good, 7), NOW),
        Verdict::Ignore(IgnoreReason::Registered)
    );
}

#[test]
fn weights_from_outside_the_validator_set_are_refused_unforwarded() {
    use std::collections::HashSet;
    let validator = key(1);
    let admission = Admission {
        validators: Some(HashSet::from([validator.verifying_key().to_bytes()])),
        ..Default::default()
    };
    let mut g = gate().with_admission(admission);
    let commit = Message::WeightsCommit(WeightsCommit {
        epoch: 3,
        commitment: [4; 32],
    });
    let ok = sealed(&validator, &commit, NOW, 1).encode().unwrap();
    assert!(matches!(
        g.check(Topic::Weights, &ok, NOW),
        Verdict::Accept(_)
    ));
    let outsider = sealed(&key(2), &commit, NOW, 1).encode().unwrap();
    assert_eq!(
        reason(g.check(Topic::Weights, &outsider, NOW)),
        Some(RejectReason::Unadmitted)
    );
}

#[test]
fn dispute_messages_come_only_from_the_keys_the_genesis_names_and_keep_their_shape() {
    use std::collections::HashSet;
    let (account, challenger, validator, outsider) = (key(1), key(2), key(3), key(4));
    let pk = |k: &SigningKey| k.verifying_key().to_bytes();
    let admission = Admission {
        accounts: Some(HashSet::from([pk(&account), pk(&challenger)])),
        disputers: Some(HashSet::from([pk(&challenger)])),
        validators: Some(HashSet::from([pk(&validator)])),
        ..Default::default()
    };
    let mut g = gate().with_admission(admission);
    let claim = Message::Claim(Claim {
        model_id: [1; 32],
        input: vec![1, 2, 3],
        output: vec![4],
        cuts: 9,
        trace_root: [2; 32],
        bond: 100,
        nonce: [3; 16],
    });
    let open = Message::DisputeOpen(DisputeOpen {
        claim_id: [5; 32],
        trace_root: [6; 32],
        bond: 100,
    });
    let reveal = |hashes: usize, proofs: usize| {
        Message::DisputeReveal(DisputeReveal {
            dispute_id: [7; 32],
            round: 0,
            hashes: vec![Digest([8; 32]); hashes],
            proofs: vec![vec![Digest([9; 32]); 3]; proofs],
        })
    };
    let attest = Message::Attestation(Attestation {
        dispute_id: [7; 32],
        verdict: DisputeVerdict::ClaimantWrong,
        segment: Some(3),
        prover: Some(Digest([1; 32])),
    });
    let mut seq = 0;
    let mut check = |k: &SigningKey, m: &Message| {
        seq += 1;
        let bytes = sealed(k, m, NOW, seq).encode().unwrap();
        // Every dispute kind travels on the dispute topic, and round-trips.
        let v = g.check(Topic::Dispute, &bytes, NOW);
        if let Verdict::Accept(got) = &v {
            assert_eq!(&got.message, m);
        }
        reason(v)
    };
    assert_eq!(check(&account, &claim), None);
    assert_eq!(check(&outsider, &claim), Some(RejectReason::Unadmitted));
    assert_eq!(check(&challenger, &open), None);
    assert_eq!(check(&account, &open), Some(RejectReason::Unadmitted));
    assert_eq!(check(&account, &reveal(4, 4)), None);
    assert_eq!(check(&account, &reveal(4096, 0)), None);
    assert_eq!(
        check(&outsider, &reveal(4, 4)),
        Some(RejectReason::Unadmitted)
    );
    assert_eq!(check(&validator, &attest), None);
    assert_eq!(check(&account, &attest), Some(RejectReason::Unadmitted));
    // Shapes: proofs that do not pair with the hashes, an empty reveal, a claim of one
    // cut.
    for bad in [
        reveal(4, 3),
        reveal(0, 0),
        Message::Claim(Claim {
            cuts: 1,
            ..match &claim {
                Message::Claim(c) => c.clone(),
                _ => unreachable!(),
            }
        }),
    ] {
        assert_eq!(
            check(&account, &bad),
            Some(RejectReason::InvalidPayload),
            "{bad:?}"
        );
    }
    // On another topic, a dispute message is refused as such.
    let bytes = sealed(&account, &claim, NOW, 99).encode().unwrap();
    assert_eq!(
        reason(g.check(Topic::Challenge, &bytes, NOW)),
        Some(RejectReason::WrongTopic)
    );
}
