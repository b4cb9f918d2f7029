//! The network's phase-2 setup ceremony for one model, as a state machine: the node feeds
//! it gossip, fetched and verified steps and the time, and does what it returns (contribute,
//! fetch, publish, install). Every node runs it, validator or not, and reaches the same
//! keys; only validators with stake contribute and vote.
//!
//! - **Order.** The participants are the genesis validators with stake, in genesis order:
//!   slot k is the k-th one's. The genesis is in every envelope's network id, so the order
//!   is signed by the network itself.
//! - **A slot.** Its contributor builds a step on the state every node holds (the initial
//!   parameters, which each node derives from the model and the `.ptau`, then each accepted
//!   step) and announces its hash. Each validator fetches it, checks it
//!   ([`provnet_kernels::ceremony::verify_step`]) and votes once for that step; a validator
//!   votes to skip the slot when the step is invalid, or when none verified within
//!   `slot_ms` of the slot opening for it.
//! - **Decision.** The first outcome with votes of at least 2/3 of stake decides the slot:
//!   accepted (every node moves to the step's state, which it verified itself) or skipped
//!   (the state stays). A round whose votes are all in without a quorum, or which has run
//!   for two slots' time, is voted again (round r + 1: accept if the step verified by then,
//!   else skip), up to [`MAX_ROUNDS`] rounds; then the ceremony fails.
//! - **Beacon.** After the last slot every node applies the same beacon: blake3 of the
//!   genesis hash and the last state, hashed 2^exp times.
//! - **Final.** Validators publish the final state and its vk ids; a node installs the keys
//!   once validators with 2/3 of stake name the same final state as its own.
//!
//! Safe while validators with more than 2/3 of stake follow these rules; whatever the rest
//! do, no node installs keys that it did not verify step by step.

use std::collections::{BTreeMap, HashMap, HashSet};

use provnet_kernels::ceremony::{self, Transcript};
use provnet_wire::ceremony::{Accepted, ByteBuf, CeremonyBody, Hash32, MAX_ROUNDS};
use provnet_wire::PublicKey;

/// One participant: a validator and its stake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Participant {
    pub key: PublicKey,
    pub stake: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CeremonyParams {
    /// When slot 0 opens (Unix ms).
    pub start_ms: u64,
    /// How long a contributor has, from its slot's opening.
    pub slot_ms: u64,
    /// The beacon's hash iterations: 2^this.
    pub beacon_iterations_exp: u32,
    /// The network's genesis hash, mixed into the beacon.
    pub genesis: Hash32,
}

/// What the node should do.
#[derive(Debug)]
pub enum Action {
    /// Our slot is open: build a contribution on `base` and hand it back with
    /// [`Ceremony::contributed`].
    Contribute { slot: usize, base: Box<Transcript> },
    /// Fetch the step `step` (`len` bytes), from any of `from`, verify it on `base`
    /// ([`Transcript::accept`]) and hand the result to [`Ceremony::checked`].
    Fetch {
        slot: usize,
        step: Hash32,
        len: u64,
        from: Vec<PublicKey>,
        base: Box<Transcript>,
    },
    /// Publish this (signed by the node).
    Publish(CeremonyBody),
    /// The ceremony is over: every slot decided, the beacon applied, the final state
    /// named by validators with 2/3 of stake.
    Done(Box<Finished>),
}

/// The ceremony's result.
#[derive(Clone, Debug)]
pub struct Finished {
    pub transcript: Transcript,
    pub vk_ids: Vec<Hash32>,
    /// Per slot: the contributor and whether its step was accepted.
    pub slots: Vec<(PublicKey, bool)>,
    pub beacon: Vec<u8>,
}

/// Why a message was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CeremonyRefusal {
    #[error("the sender is not a participant")]
    NotAParticipant,
    #[error("only slot {slot}'s contributor may announce its step")]
    NotTheContributor { slot: usize },
    #[error("no slot {slot}")]
    NoSuchSlot { slot: usize },
    #[error("a second, different vote for slot {slot} round {round}")]
    Equivocation { slot: usize, round: u32 },
    #[error("a second, different step for slot {slot}")]
    SecondStep { slot: usize },
    #[error("a final state naming {got} segments, the model has {want}")]
    WrongSegments { got: usize, want: usize },
}

/// A slot's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Outcome {
    Accept(Accepted),
    Skip,
}

pub struct Ceremony {
    model_id: Hash32,
    params: CeremonyParams,
    participants: Vec<Participant>,
    total: u128,
    me: Option<usize>,
    /// The state the open slot builds on.
    current: Transcript,
    current_id: Hash32,
    /// Decided slots, in order.
    decided: Vec<bool>,
    round: u32,
    round_opened_ms: u64,
    /// When the open slot opened for this node (its contributor's deadline counts from
    /// here).
    slot_opened_ms: Option<u64>,
    /// The contributor's announcement per slot: (prev, step, len).
    announced: HashMap<usize, (Hash32, Hash32, u64)>,
    /// Steps verified on the open slot's base, by hash: the state they lead to.
    verified: HashMap<Hash32, Transcript>,
    invalid: HashSet<Hash32>,
    /// Steps being fetched or checked.
    fetching: HashSet<Hash32>,
    contributing: bool,
    /// Votes by (slot, round), then voter: the outcome and the state voted on.
    votes: BTreeMap<(usize, u32), BTreeMap<usize, (Hash32, Outcome)>>,
    finals: BTreeMap<usize, (Hash32, Vec<Hash32>)>,
    beacon: Option<(Vec<u8>, Transcript, Vec<Hash32>)>,
    done: bool,
    /// The open slot ran out of rounds.
    gave_up: bool,
}

/// The beacon value after the last slot: anyone recomputes it.
pub fn beacon_value(genesis: &Hash32, model_id: &Hash32, last_state: &Hash32) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(b"provnet ceremony beacon value v1");
    h.update(genesis);
    h.update(model_id);
    h.update(last_state);
    h.finalize().as_bytes().to_vec()
}

impl Ceremony {
    /// A ceremony from its initial parameters. `me`: this node's key (it contributes and
    /// votes if it is a participant).
    pub fn new(
        initial: Transcript,
        participants: Vec<Participant>,
        params: CeremonyParams,
        me: PublicKey,
    ) -> Ceremony {
        let participants: Vec<Participant> =
            participants.into_iter().filter(|p| p.stake > 0).collect();
        let total = participants.iter().map(|p| p.stake as u128).sum();
        let me = participants.iter().position(|p| p.key == me);
        Ceremony {
            model_id: initial.model_id,
            current_id: initial.state_id(),
            current: initial,
            params,
            total,
            me,
            participants,
            decided: Vec::new(),
            round: 0,
            round_opened_ms: 0,
            slot_opened_ms: None,
            announced: HashMap::new(),
            verified: HashMap::new(),
            invalid: HashSet::new(),
            fetching: HashSet::new(),
            contributing: false,
            votes: BTreeMap::new(),
            finals: BTreeMap::new(),
            beacon: None,
            done: false,
            gave_up: false,
        }
    }

    /// The slot being decided (the number of slots once all are).
    pub fn slot(&self) -> usize {
        self.decided.len()
    }

    pub fn slots(&self) -> usize {
        self.participants.len()
    }

    /// Whether this node contributes and votes.
    pub fn participates(&self) -> bool {
        self.me.is_some()
    }

    fn quorum(&self, stake: u128) -> bool {
        self.total > 0 && stake * 3 >= self.total * 2
    }

    fn open(&self) -> bool {
        !self.done && self.slot() < self.slots()
    }

    /// Casts our vote for the open slot's round, once.
    fn vote(&mut self, out: &mut Vec<Action>, outcome: Outcome) {
        let Some(me) = self.me else { return };
        let (slot, round) = (self.slot(), self.round);
        let entry = self.votes.entry((slot, round)).or_default();
        if entry.contains_key(&me) {
            return;
        }
        entry.insert(me, (self.current_id, outcome));
        let accept = match outcome {
            Outcome::Accept(a) => Some(a),
            Outcome::Skip => None,
        };
        out.push(Action::Publish(CeremonyBody::Vote {
            slot: slot as u32,
            round,
            prev: self.current_id,
            accept,
        }));
    }

    fn my_vote(&self) -> Option<Outcome> {
        let me = self.me?;
        self.votes
            .get(&(self.slot(), self.round))
            .and_then(|v| v.get(&me))
            .map(|(_, o)| *o)
    }

    /// Moves time on: opens slots, asks for our contribution, votes to skip when a slot's
    /// time is up, starts a new round when one is stuck.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if now_ms < self.params.start_ms {
            return out;
        }
        if !self.open() {
            self.finish(&mut out);
            return out;
        }
        let slot = self.slot();
        let opened = *self.slot_opened_ms.get_or_insert(now_ms);
        if self.round_opened_ms == 0 {
            self.round_opened_ms = now_ms;
        }
        if self.me == Some(slot) && !self.contributing && self.round == 0 {
            self.contributing = true;
            out.push(Action::Contribute {
                slot,
                base: Box::new(self.current.clone()),
            });
        }
        // A fetch that failed is tried again.
        self.want(&mut out, slot);
        let slot_ms = self.params.slot_ms.max(1);
        if now_ms >= opened.saturating_add(slot_ms) && self.my_vote().is_none() {
            let ready = self.verified_step_for(slot);
            self.vote(&mut out, ready.map_or(Outcome::Skip, Outcome::Accept));
        }
        self.decide(&mut out);
        if self.slot() != slot || !self.open() {
            return out;
        }
        // A round that cannot decide any more, or has run two slots' time, is voted again:
        // unless some round has a quorum already (a step we are still fetching).
        let all_in = self
            .votes
            .get(&(slot, self.round))
            .is_some_and(|v| v.len() == self.participants.len());
        let stuck = now_ms >= self.round_opened_ms.saturating_add(2 * slot_ms);
        if (all_in || stuck) && self.my_vote().is_some() && self.quorum_outcome().is_none() {
            if self.round + 1 >= MAX_ROUNDS {
                self.gave_up = true;
                return out;
            }
            self.round += 1;
            self.round_opened_ms = now_ms;
            let ready = self.verified_step_for(slot);
            self.vote(&mut out, ready.map_or(Outcome::Skip, Outcome::Accept));
            self.decide(&mut out);
        }
        out
    }

    /// Whether the ceremony ran out of rounds on a slot.
    pub fn failed(&self) -> Option<String> {
        (self.open() && self.gave_up).then(|| {
            format!(
                "slot {} found no 2/3 of stake in {MAX_ROUNDS} rounds",
                self.slot()
            )
        })
    }

    fn verified_step_for(&self, slot: usize) -> Option<Accepted> {
        let (prev, step, _) = self.announced.get(&slot)?;
        if *prev != self.current_id {
            return None;
        }
        let next = self.verified.get(step)?;
        Some(Accepted {
            step: *step,
            next: next.state_id(),
        })
    }

    /// A message from `sender` (already checked by the gate: a validator's signature).
    pub fn on_message(
        &mut self,
        sender: &PublicKey,
        body: &CeremonyBody,
    ) -> Result<Vec<Action>, CeremonyRefusal> {
        let who = self
            .participants
            .iter()
            .position(|p| p.key == *sender)
            .ok_or(CeremonyRefusal::NotAParticipant)?;
        let mut out = Vec::new();
        match body {
            CeremonyBody::Step {
                slot,
                prev,
                step,
                len,
            } => {
                let slot = *slot as usize;
                if slot >= self.slots() {
                    return Err(CeremonyRefusal::NoSuchSlot { slot });
                }
                if slot != who {
                    return Err(CeremonyRefusal::NotTheContributor { slot });
                }
                match self.announced.get(&slot) {
                    Some(a) if *a == (*prev, *step, *len) => return Ok(out),
                    Some(_) => return Err(CeremonyRefusal::SecondStep { slot }),
                    None => {}
                }
                self.announced.insert(slot, (*prev, *step, *len));
                self.want(&mut out, slot);
            }
            CeremonyBody::Vote {
                slot,
                round,
                prev,
                accept,
            } => {
                let slot = *slot as usize;
                if slot >= self.slots() {
                    return Err(CeremonyRefusal::NoSuchSlot { slot });
                }
                let outcome = accept.map_or(Outcome::Skip, Outcome::Accept);
                let entry = self.votes.entry((slot, *round)).or_default();
                match entry.get(&who) {
                    Some(v) if *v == (*prev, outcome) => return Ok(out),
                    Some(_) => {
                        return Err(CeremonyRefusal::Equivocation {
                            slot,
                            round: *round,
                        })
                    }
                    None => {}
                }
                entry.insert(who, (*prev, outcome));
                self.decide(&mut out);
            }
            CeremonyBody::Final { state, vk_ids } => {
                let want = self.current.segments.len();
                if vk_ids.len() != want {
                    return Err(CeremonyRefusal::WrongSegments {
                        got: vk_ids.len(),
                        want,
                    });
                }
                let ids = vk_ids
                    .iter()
                    .map(|v| {
                        let mut a = [0u8; 32];
                        a.copy_from_slice(v);
                        a
                    })
                    .collect();
                self.finals.insert(who, (*state, ids));
                self.finish(&mut out);
            }
        }
        Ok(out)
    }

    /// Asks for the open slot's announced step when we do not hold a verdict on it yet.
    fn want(&mut self, out: &mut Vec<Action>, slot: usize) {
        if slot != self.slot() || !self.open() {
            return;
        }
        let Some(&(prev, step, len)) = self.announced.get(&slot) else {
            return;
        };
        if prev != self.current_id {
            // Built on another state: invalid for this slot (a validator votes skip).
            if self.my_vote().is_none() && self.me.is_some() {
                self.vote(out, Outcome::Skip);
            }
            return;
        }
        self.fetch(out, step, len);
    }

    /// Asks for a step of the open slot (`len` 0: not announced to us, so unknown) from
    /// its contributor and every validator that voted for it, unless we hold a verdict on
    /// it or are fetching it.
    fn fetch(&mut self, out: &mut Vec<Action>, step: Hash32, len: u64) {
        if self.verified.contains_key(&step)
            || self.invalid.contains(&step)
            || !self.fetching.insert(step)
        {
            return;
        }
        let slot = self.slot();
        let mut from = vec![self.participants[slot].key];
        for ((_, _), votes) in self.votes.range((slot, 0)..=(slot, MAX_ROUNDS)) {
            for (who, (_, o)) in votes {
                let key = self.participants[*who].key;
                if matches!(o, Outcome::Accept(a) if a.step == step) && !from.contains(&key) {
                    from.push(key);
                }
            }
        }
        out.push(Action::Fetch {
            slot,
            step,
            len,
            from,
            base: Box::new(self.current.clone()),
        });
    }

    /// Our own contribution for our slot: `bytes` hash to `step`, `next` is the state.
    pub fn contributed(
        &mut self,
        slot: usize,
        step: Hash32,
        len: u64,
        next: Transcript,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if slot != self.slot() || self.me != Some(slot) {
            return out;
        }
        let prev = self.current_id;
        self.announced.insert(slot, (prev, step, len));
        let a = Accepted {
            step,
            next: next.state_id(),
        };
        self.verified.insert(step, next);
        out.push(Action::Publish(CeremonyBody::Step {
            slot: slot as u32,
            prev,
            step,
            len,
        }));
        self.vote(&mut out, Outcome::Accept(a));
        self.decide(&mut out);
        out
    }

    /// The verdict on a fetched step: the state it leads to, or why it is refused (or
    /// could not be fetched: `fetched` false, so it may be asked for again).
    pub fn checked(
        &mut self,
        slot: usize,
        step: Hash32,
        result: Result<Transcript, String>,
        fetched: bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        self.fetching.remove(&step);
        if slot != self.slot() {
            return out;
        }
        match result {
            Ok(next) => {
                let a = Accepted {
                    step,
                    next: next.state_id(),
                };
                self.verified.insert(step, next);
                if self.my_vote().is_none() {
                    self.vote(&mut out, Outcome::Accept(a));
                }
            }
            Err(_) if !fetched => {}
            Err(_) => {
                self.invalid.insert(step);
                if self.my_vote().is_none() {
                    self.vote(&mut out, Outcome::Skip);
                }
            }
        }
        self.decide(&mut out);
        out
    }

    /// Decides the open slot if any of its rounds has a quorum on our current state.
    /// The open slot's outcome with a quorum on our current state, in its earliest round
    /// that has one.
    fn quorum_outcome(&self) -> Option<Outcome> {
        let slot = self.slot();
        let mut tally: HashMap<Outcome, u128> = HashMap::new();
        for votes in self
            .votes
            .range((slot, 0)..=(slot, MAX_ROUNDS))
            .map(|(_, v)| v)
        {
            tally.clear();
            for (who, (prev, o)) in votes {
                if *prev == self.current_id {
                    *tally.entry(*o).or_default() += self.participants[*who].stake as u128;
                }
            }
            if let Some((o, _)) = tally.iter().find(|(_, s)| self.quorum(**s)) {
                return Some(*o);
            }
        }
        None
    }

    /// Decides the open slot, and any after it, whose outcome has a quorum (an accepted
    /// step once we verified it ourselves).
    fn decide(&mut self, out: &mut Vec<Action>) {
        while self.open() {
            let slot = self.slot();
            let Some(decision) = self.quorum_outcome() else {
                return;
            };
            match decision {
                Outcome::Accept(a) => {
                    // We move only to a state we verified ourselves.
                    let Some(next) = self.verified.get(&a.step) else {
                        // A quorum verified a step we have not: fetch it from them.
                        let len = self
                            .announced
                            .get(&slot)
                            .filter(|(_, step, _)| *step == a.step)
                            .map_or(0, |(_, _, len)| *len);
                        self.fetch(out, a.step, len);
                        return;
                    };
                    if next.state_id() != a.next {
                        return;
                    }
                    self.current = self.verified.remove(&a.step).expect("just found");
                    self.current_id = a.next;
                    self.decided.push(true);
                }
                Outcome::Skip => self.decided.push(false),
            }
            self.round = 0;
            self.round_opened_ms = 0;
            self.slot_opened_ms = None;
            self.verified.clear();
            self.invalid.clear();
            self.fetching.clear();
            self.contributing = false;
            if !self.open() {
                self.finish(out);
                return;
            }
            // A step for the next slot may be here already.
            let next_slot = self.slot();
            self.want(out, next_slot);
        }
    }

    /// After the last slot: the beacon, our final message, and done once 2/3 of stake
    /// name our final state.
    fn finish(&mut self, out: &mut Vec<Action>) {
        if self.done || self.slot() < self.slots() {
            return;
        }
        if self.beacon.is_none() {
            let value = beacon_value(&self.params.genesis, &self.model_id, &self.current_id);
            let t = match ceremony::beacon(&self.current, &value, self.params.beacon_iterations_exp)
            {
                Ok(t) => t,
                Err(_) => return,
            };
            let vk_ids: Vec<Hash32> = t
                .segments
                .iter()
                .map(provnet_kernels::ModelKeys::embedded_vk_id)
                .collect();
            if let Some(me) = self.me {
                self.finals.insert(me, (t.state_id(), vk_ids.clone()));
                out.push(Action::Publish(CeremonyBody::Final {
                    state: t.state_id(),
                    vk_ids: vk_ids.iter().map(|v| ByteBuf::from(v.to_vec())).collect(),
                }));
            }
            self.beacon = Some((value, t, vk_ids));
        }
        let Some((value, t, vk_ids)) = &self.beacon else {
            return;
        };
        let state = t.state_id();
        let stake: u128 = self
            .finals
            .iter()
            .filter(|(_, (s, ids))| *s == state && ids == vk_ids)
            .map(|(who, _)| self.participants[*who].stake as u128)
            .sum();
        if !self.quorum(stake) {
            return;
        }
        self.done = true;
        let mut slots = Vec::new();
        for (i, accepted) in self.decided.iter().enumerate() {
            slots.push((self.participants[i].key, *accepted));
        }
        out.push(Action::Done(Box::new(Finished {
            transcript: t.clone(),
            vk_ids: vk_ids.clone(),
            slots,
            beacon: value.clone(),
        })));
    }

    /// For a status line: slot, round, slots decided (accepted, skipped).
    pub fn progress(&self) -> (usize, u32, usize, usize) {
        let accepted = self.decided.iter().filter(|a| **a).count();
        (
            self.slot(),
            self.round,
            accepted,
            self.decided.len() - accepted,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provnet_kernels::ptau::Ptau;
    use provnet_kernels::{import, ImportOptions, Model};
    use std::path::Path;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kernels/fixtures")
            .join(name)
    }

    fn initial() -> Transcript {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        import(&fixture("dense_16.onnx"), &dir, &ImportOptions::default()).unwrap();
        let model = Model::load(&dir).unwrap();
        let mut ptau = Ptau::open(&fixture("pot14_final.ptau")).unwrap();
        ceremony::initial(&model, &mut ptau, "pot14").unwrap()
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Behaviour {
        Honest,
        /// Contributes a step whose H query was moved wrongly, and votes for it.
        Garbage,
        /// Says nothing at all.
        Silent,
    }

    /// Runs a ceremony among nodes in one process: gossip reaches everyone, fetches are
    /// served from what was contributed. Returns each node's result (None: not done).
    fn run(behaviours: &[Behaviour], observers: usize) -> Vec<Option<Finished>> {
        run_staked(behaviours, &vec![100; behaviours.len()], observers).0
    }

    /// [`run`] with stakes; also says, per node, why it failed (if it did).
    fn run_staked(
        behaviours: &[Behaviour],
        stakes: &[u64],
        observers: usize,
    ) -> (Vec<Option<Finished>>, Vec<Option<String>>) {
        let t0 = initial();
        let keys: Vec<PublicKey> = (0..behaviours.len() + observers)
            .map(|i| [i as u8 + 1; 32])
            .collect();
        let participants: Vec<Participant> = behaviours
            .iter()
            .enumerate()
            .map(|(i, _)| Participant {
                key: keys[i],
                stake: stakes[i],
            })
            .collect();
        let params = CeremonyParams {
            start_ms: 1_000,
            slot_ms: 1_000,
            beacon_iterations_exp: 2,
            genesis: [9; 32],
        };
        let mut nodes: Vec<Ceremony> = keys
            .iter()
            .map(|k| Ceremony::new(t0.clone(), participants.clone(), params, *k))
            .collect();
        let behaviour = |i: usize| behaviours.get(i).copied().unwrap_or(Behaviour::Honest);
        let mut blobs: HashMap<Hash32, Vec<u8>> = HashMap::new();
        let mut done: Vec<Option<Finished>> = vec![None; nodes.len()];
        let mut queue: Vec<(usize, Action)> = Vec::new();
        let mut now = 0;
        let live = |nodes: &[Ceremony], done: &[Option<Finished>]| {
            done.iter().enumerate().any(|(i, d)| {
                d.is_none() && behaviour(i) != Behaviour::Silent && nodes[i].failed().is_none()
            })
        };
        while now < 60_000 && live(&nodes, &done) {
            now += 100;
            for (i, n) in nodes.iter_mut().enumerate() {
                if behaviour(i) != Behaviour::Silent {
                    queue.extend(n.tick(now).into_iter().map(|a| (i, a)));
                }
            }
            while let Some((i, action)) = queue.pop() {
                match action {
                    Action::Publish(body) => {
                        for (j, n) in nodes.iter_mut().enumerate() {
                            if j != i && behaviour(j) != Behaviour::Silent {
                                let acts = n.on_message(&keys[i], &body).unwrap();
                                queue.extend(acts.into_iter().map(|a| (j, a)));
                            }
                        }
                    }
                    Action::Contribute { slot, base } => {
                        let next = ceremony::contribute(&base, "x", b"").unwrap();
                        let mut step = next.last_step().unwrap();
                        if behaviour(i) == Behaviour::Garbage {
                            step.segments[0].h_query.swap(0, 1);
                        }
                        let bytes = step.to_bytes();
                        let hash = *blake3::hash(&bytes).as_bytes();
                        let next = base.apply(&step).unwrap();
                        blobs.insert(hash, bytes.clone());
                        let acts = nodes[i].contributed(slot, hash, bytes.len() as u64, next);
                        queue.extend(acts.into_iter().map(|a| (i, a)));
                    }
                    Action::Fetch {
                        slot, step, base, ..
                    } => {
                        let bytes = blobs.get(&step).expect("contributed").clone();
                        let r = base
                            .accept(&bytes)
                            .map(|(t, _)| t)
                            .map_err(|e| e.to_string());
                        let acts = nodes[i].checked(slot, step, r, true);
                        queue.extend(acts.into_iter().map(|a| (i, a)));
                    }
                    Action::Done(f) => done[i] = Some(*f),
                }
            }
        }
        let failed = nodes.iter().map(Ceremony::failed).collect();
        (done, failed)
    }

    fn agree(done: &[Option<Finished>], who: &[usize]) -> Finished {
        let first = done[who[0]].clone().expect("done");
        for &i in who {
            let f = done[i]
                .as_ref()
                .unwrap_or_else(|| panic!("node {i} is not done"));
            assert_eq!(f.vk_ids, first.vk_ids, "node {i} disagrees");
            assert_eq!(f.transcript.state_id(), first.transcript.state_id());
        }
        ceremony::verify(&initial(), &first.transcript).unwrap();
        first
    }

    #[test]
    fn honest_validators_and_an_observer_reach_the_same_keys() {
        use Behaviour::*;
        let done = run(&[Honest, Honest, Honest], 1);
        let f = agree(&done, &[0, 1, 2, 3]);
        assert!(f.slots.iter().all(|(_, accepted)| *accepted));
        // Three contributions and the beacon.
        assert_eq!(f.transcript.contributions.len(), 4);
        assert!(f.transcript.final_beacon().is_some());
    }

    #[test]
    fn a_garbage_step_is_skipped_and_the_ceremony_still_finishes() {
        use Behaviour::*;
        let done = run(&[Honest, Garbage, Honest], 1);
        // The garbage validator, outvoted on its own slot, follows the others' decision.
        let f = agree(&done, &[0, 1, 2, 3]);
        let accepted: Vec<bool> = f.slots.iter().map(|(_, a)| *a).collect();
        assert_eq!(accepted, [true, false, true]);
        assert_eq!(f.transcript.contributions.len(), 3);
    }

    #[test]
    fn a_silent_validator_under_a_third_of_stake_is_skipped_at_its_deadline() {
        use Behaviour::*;
        let done = run(&[Honest, Silent, Honest], 0);
        let f = agree(&done, &[0, 2]);
        let accepted: Vec<bool> = f.slots.iter().map(|(_, a)| *a).collect();
        assert_eq!(accepted, [true, false, true]);
    }

    #[test]
    fn a_silent_third_of_stake_stalls_the_ceremony_and_it_fails_clearly() {
        use Behaviour::*;
        // The silent validator holds half the stake: no outcome reaches 2/3 without it.
        let (done, failed) = run_staked(&[Honest, Honest, Silent], &[100, 100, 200], 0);
        assert!(done.iter().all(Option::is_none));
        for i in [0, 1] {
            let why = failed[i].as_deref().expect("gave up");
            assert!(why.contains("slot 0") && why.contains("rounds"), "{why}");
        }
    }

    #[test]
    fn outsiders_wrong_contributors_and_double_votes_are_refused() {
        let t0 = initial();
        let p = |k: u8| Participant {
            key: [k; 32],
            stake: 1,
        };
        let params = CeremonyParams {
            start_ms: 0,
            slot_ms: 1_000,
            beacon_iterations_exp: 0,
            genesis: [0; 32],
        };
        let mut c = Ceremony::new(t0, vec![p(1), p(2), p(3)], params, [7; 32]);
        assert!(!c.participates());
        let step = CeremonyBody::Step {
            slot: 0,
            prev: [0; 32],
            step: [1; 32],
            len: 10,
        };
        assert_eq!(
            c.on_message(&[9; 32], &step).unwrap_err(),
            CeremonyRefusal::NotAParticipant
        );
        assert_eq!(
            c.on_message(&[2; 32], &step).unwrap_err(),
            CeremonyRefusal::NotTheContributor { slot: 0 }
        );
        let vote = |accept| CeremonyBody::Vote {
            slot: 0,
            round: 0,
            prev: [0; 32],
            accept,
        };
        c.on_message(&[2; 32], &vote(None)).unwrap();
        c.on_message(&[2; 32], &vote(None)).unwrap();
        let other = Some(Accepted {
            step: [1; 32],
            next: [2; 32],
        });
        assert_eq!(
            c.on_message(&[2; 32], &vote(other)).unwrap_err(),
            CeremonyRefusal::Equivocation { slot: 0, round: 0 }
        );
        let far = CeremonyBody::Vote {
            slot: 3,
            round: 0,
            prev: [0; 32],
            accept: None,
        };
        assert_eq!(
            c.on_message(&[2; 32], &far).unwrap_err(),
            CeremonyRefusal::NoSuchSlot { slot: 3 }
        );
    }
}
