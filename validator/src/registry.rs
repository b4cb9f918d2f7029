//! The miner registry (the metagraph): a fixed number of slots, each a uid held by one
//! hotkey since an epoch. Only registered miners are proved for, scored and weighted, so a
//! key farm holds at most the slots it keeps paying for, and loses them to newcomers once
//! its immunity runs out and its weight is the lowest.
//!
//! Registration pays with proof of work (checked at the gate and again here) for the
//! current epoch (or the previous one, until its batch is applied). Registrations are not
//! applied as they arrive, since arrival order differs from node to node: those whose work
//! is for epoch `e` are collected, and every node applies them as one batch at
//! [`Epochs::registrations_at`]`(e)`, in the order of their work hashes (most work first).
//! When every slot is taken, a newcomer replaces the non-immune miner with the lowest
//! incentive in the consensus of epoch `e - 2` (the last one every node has run by then;
//! ties: the newer registration, so a key farm churns its own slots before an established
//! miner's, then the smaller key). Nodes that heard the same registrations in time thus
//! hold the same metagraph. A batch keeps at most `max_miners` registrations, those with
//! the most work.
//!
//! [`Epochs::registrations_at`]: crate::Epochs::registrations_at
//!
//! [`MinerRegistry`] is the seam for settling on chain (subtensor's metagraph) instead.

use std::collections::{BTreeMap, HashMap};

use provnet_wire::{PublicKey, Register};
use serde::{Deserialize, Serialize};

/// The genesis's registration rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryParams {
    /// Miner slots.
    pub max_miners: u16,
    /// Epochs after registering during which a miner cannot be replaced.
    pub immunity_epochs: u64,
    /// Leading zero bits of work a registration needs (about `2^bits` hashes).
    pub work_bits: u32,
}

impl Default for RegistryParams {
    fn default() -> Self {
        RegistryParams {
            max_miners: 256,
            immunity_epochs: 4,
            work_bits: 16,
        }
    }
}

/// One miner slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub uid: u16,
    pub hotkey: PublicKey,
    pub registered_epoch: u64,
}

/// Who holds the miner slots. The embedded [`Metagraph`] implements it from gossip; a chain
/// client would read subtensor's.
pub trait MinerRegistry {
    fn uid(&self, miner: &PublicKey) -> Option<u16>;
    /// Every occupied slot, by uid.
    fn slots(&self) -> Vec<Slot>;
    fn is_registered(&self, miner: &PublicKey) -> bool {
        self.uid(miner).is_some()
    }
}

/// Why a registration was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterRefusal {
    #[error("already registered as uid {0}")]
    AlreadyRegistered(u16),
    #[error("{bits} bits of work, {need} needed")]
    NotEnoughWork { bits: u32, need: u32 },
    #[error("the work is for epoch {0}, which is not the current or the previous one")]
    Stale(u64),
    #[error("all {0} slots are held by miners still immune")]
    AllImmune(u16),
    #[error("this epoch's batch already holds {0} registrations with more work")]
    BatchFull(u16),
}

impl RegisterRefusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            RegisterRefusal::AlreadyRegistered(_) => "already_registered",
            RegisterRefusal::NotEnoughWork { .. } => "not_enough_work",
            RegisterRefusal::Stale(_) => "stale_registration",
            RegisterRefusal::AllImmune(_) => "all_immune",
            RegisterRefusal::BatchFull(_) => "batch_full",
        }
    }
}

/// What a registration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    pub hotkey: PublicKey,
    pub uid: u16,
    /// The miner it replaced, if the slots were full.
    pub replaced: Option<PublicKey>,
}

/// A registration waiting for its epoch's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The epoch its work is for.
    pub epoch: u64,
    /// When its batch is applied (Unix ms).
    pub applies_at_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metagraph {
    pub params: RegistryParams,
    slots: BTreeMap<u16, Slot>,
    /// Registrations heard, by the epoch their work is for: hotkey to work hash.
    #[serde(default)]
    pending: BTreeMap<u64, BTreeMap<PublicKey, [u8; 32]>>,
    /// The last epoch whose batch was applied.
    #[serde(default)]
    applied_through: Option<u64>,
    #[serde(skip)]
    by_key: HashMap<PublicKey, u16>,
}

impl Metagraph {
    pub fn new(params: RegistryParams) -> Metagraph {
        Metagraph {
            params,
            ..Default::default()
        }
    }

    /// Rebuilds the key index after loading.
    pub fn reindex(&mut self) {
        self.by_key = self.slots.values().map(|s| (s.hotkey, s.uid)).collect();
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Registers a genesis miner in `epoch` (the network's first on this node): no work,
    /// immune like any newcomer.
    pub fn seed(&mut self, hotkey: PublicKey, epoch: u64) -> Option<u16> {
        if let Some(&uid) = self.by_key.get(&hotkey) {
            return Some(uid);
        }
        let uid = self.free_uid()?;
        self.put(Slot {
            uid,
            hotkey,
            registered_epoch: epoch,
        });
        Some(uid)
    }

    /// Hears `hotkey`'s registration `r` in epoch `now_epoch`, with the genesis id
    /// `genesis` the work covers: it waits for its epoch's batch ([`Metagraph::apply`]).
    /// Returns the registration it pushed out of a full batch (the one with the least
    /// work), if any.
    pub fn queue(
        &mut self,
        hotkey: &PublicKey,
        r: &Register,
        genesis: &[u8; 8],
        now_epoch: u64,
    ) -> Result<Option<PublicKey>, RegisterRefusal> {
        if let Some(&uid) = self.by_key.get(hotkey) {
            return Err(RegisterRefusal::AlreadyRegistered(uid));
        }
        let applied = self.applied_through.is_some_and(|a| a >= r.epoch);
        if r.epoch > now_epoch || r.epoch.saturating_add(1) < now_epoch || applied {
            return Err(RegisterRefusal::Stale(r.epoch));
        }
        let (bits, need) = (r.work_bits(genesis, hotkey), self.params.work_bits);
        if bits < need {
            return Err(RegisterRefusal::NotEnoughWork { bits, need });
        }
        let hash = r.work_hash(genesis, hotkey);
        let cap = usize::from(self.params.max_miners.max(1));
        let batch = self.pending.entry(r.epoch).or_default();
        let mut pushed_out = None;
        match batch.get(hotkey) {
            Some(h) if *h <= hash => return Ok(None),
            Some(_) => {}
            None if batch.len() >= cap => {
                let (least, worst) = batch
                    .iter()
                    .max_by_key(|(_, h)| **h)
                    .map(|(k, h)| (*k, *h))
                    .expect("a full batch is not empty");
                if worst <= hash {
                    return Err(RegisterRefusal::BatchFull(self.params.max_miners));
                }
                batch.remove(&least);
                pushed_out = Some(least);
            }
            None => {}
        }
        batch.insert(*hotkey, hash);
        Ok(pushed_out)
    }

    /// Applies every batch whose time has come (`ready(e)`: the batch for epoch `e` may be
    /// applied), oldest first, each in the order of its work hashes. `incentive(e)` is each
    /// miner's share in the consensus that decides who batch `e` replaces. Returns what
    /// each registration did.
    pub fn apply(
        &mut self,
        ready: impl Fn(u64) -> bool,
        incentive: impl Fn(u64) -> BTreeMap<PublicKey, f64>,
    ) -> Vec<Result<Registered, RegisterRefusal>> {
        let mut done = Vec::new();
        while let Some((&epoch, _)) = self.pending.first_key_value() {
            if !ready(epoch) {
                break;
            }
            let batch = self.pending.remove(&epoch).unwrap_or_default();
            let mut order: Vec<(PublicKey, [u8; 32])> = batch.into_iter().collect();
            order.sort_by_key(|(k, h)| (*h, *k));
            let weights = incentive(epoch);
            for (hotkey, _) in order {
                done.push(self.admit(&hotkey, epoch.saturating_add(1), &weights));
            }
            self.applied_through = Some(epoch);
        }
        done
    }

    /// Whether `hotkey`'s registration waits for a batch.
    pub fn is_pending(&self, hotkey: &PublicKey) -> bool {
        self.pending.values().any(|b| b.contains_key(hotkey))
    }

    /// Registrations waiting for a batch.
    pub fn pending(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }

    /// Gives `hotkey` a slot from epoch `epoch` on: a free one, or the one of the
    /// non-immune miner with the lowest `incentive`.
    fn admit(
        &mut self,
        hotkey: &PublicKey,
        epoch: u64,
        incentive: &BTreeMap<PublicKey, f64>,
    ) -> Result<Registered, RegisterRefusal> {
        if let Some(&uid) = self.by_key.get(hotkey) {
            return Err(RegisterRefusal::AlreadyRegistered(uid));
        }
        let (uid, replaced) = match self.free_uid() {
            Some(uid) => (uid, None),
            None => {
                let immunity = self.params.immunity_epochs;
                let victim = self
                    .slots
                    .values()
                    .filter(|s| s.registered_epoch.saturating_add(immunity) <= epoch)
                    .min_by(|a, b| {
                        let w = |s: &Slot| incentive.get(&s.hotkey).copied().unwrap_or(0.0);
                        w(a).total_cmp(&w(b))
                            .then(b.registered_epoch.cmp(&a.registered_epoch))
                            .then(a.hotkey.cmp(&b.hotkey))
                    })
                    .copied()
                    .ok_or(RegisterRefusal::AllImmune(self.params.max_miners))?;
                self.by_key.remove(&victim.hotkey);
                (victim.uid, Some(victim.hotkey))
            }
        };
        self.put(Slot {
            uid,
            hotkey: *hotkey,
            registered_epoch: epoch,
        });
        Ok(Registered {
            hotkey: *hotkey,
            uid,
            replaced,
        })
    }

    fn free_uid(&self) -> Option<u16> {
        (0..self.params.max_miners).find(|u| !self.slots.contains_key(u))
    }

    fn put(&mut self, s: Slot) {
        self.by_key.insert(s.hotkey, s.uid);
        self.slots.insert(s.uid, s);
    }
}

impl MinerRegistry for Metagraph {
    fn uid(&self, miner: &PublicKey) -> Option<u16> {
        self.by_key.get(miner).copied()
    }

    fn slots(&self) -> Vec<Slot> {
        self.slots.values().copied().collect()
    }
}

/// The embedded registry as a node keeps it: the [`Metagraph`] in the store, fed
/// registrations from gossip, replacing by the last consensus's incentive.
pub struct Registrar {
    graph: Metagraph,
    store: crate::Store,
    genesis: [u8; 8],
    epochs: crate::Epochs,
    refused: BTreeMap<String, u64>,
}

impl Registrar {
    /// Loads the metagraph, or starts one with the genesis miners (in their order, uids
    /// from 0, registered in the epoch of `now_ms`).
    pub fn open(
        store: crate::Store,
        params: RegistryParams,
        genesis_miners: &[PublicKey],
        genesis: [u8; 8],
        epochs: crate::Epochs,
        now_ms: u64,
    ) -> crate::store::Result<Registrar> {
        let graph = match store.metagraph()? {
            Some(mut g) => {
                g.params = params;
                g.reindex();
                g
            }
            None => {
                let mut g = Metagraph::new(params);
                for m in genesis_miners {
                    g.seed(*m, epochs.of(now_ms));
                }
                store.put_metagraph(&g)?;
                g
            }
        };
        Ok(Registrar {
            graph,
            store,
            genesis,
            epochs,
            refused: BTreeMap::new(),
        })
    }

    pub fn graph(&self) -> &Metagraph {
        &self.graph
    }

    pub fn refused(&self) -> &BTreeMap<String, u64> {
        &self.refused
    }

    /// A registration from gossip (or this node's own): queued for its epoch's batch, or
    /// why not (counted).
    pub fn on_register(
        &mut self,
        hotkey: &PublicKey,
        r: &Register,
        now_ms: u64,
    ) -> crate::store::Result<Result<Queued, RegisterRefusal>> {
        let queued = self
            .graph
            .queue(hotkey, r, &self.genesis, self.epochs.of(now_ms));
        match queued {
            Ok(pushed_out) => {
                if pushed_out.is_some() {
                    self.count(&RegisterRefusal::BatchFull(self.graph.params.max_miners));
                }
                self.store.put_metagraph(&self.graph)?;
                Ok(Ok(Queued {
                    epoch: r.epoch,
                    applies_at_ms: self.epochs.registrations_at(r.epoch),
                }))
            }
            Err(e) => {
                self.count(&e);
                Ok(Err(e))
            }
        }
    }

    /// Applies the batches whose time has come; returns the registrations that took a
    /// slot (those that could not are counted).
    pub fn tick(&mut self, now_ms: u64) -> crate::store::Result<Vec<Registered>> {
        if self.graph.pending.is_empty() {
            return Ok(Vec::new());
        }
        let epochs = self.epochs;
        let store = &self.store;
        // Batch `e` replaces by the consensus of `e - 2`: it ran shortly after `e` began,
        // well before the batch, on every node that was up.
        let incentive = |e: u64| {
            e.checked_sub(2)
                .and_then(|c| store.consensus(c).ok().flatten())
                .map(|o| o.incentive)
                .unwrap_or_default()
        };
        let done = self
            .graph
            .apply(|e| epochs.registrations_at(e) <= now_ms, incentive);
        if done.is_empty() {
            return Ok(Vec::new());
        }
        self.store.put_metagraph(&self.graph)?;
        let mut taken = Vec::new();
        for d in done {
            match d {
                Ok(r) => taken.push(r),
                Err(e) => self.count(&e),
            }
        }
        Ok(taken)
    }

    fn count(&mut self, e: &RegisterRefusal) {
        *self.refused.entry(e.as_str().into()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> PublicKey {
        [i; 32]
    }

    #[test]
    fn nodes_that_hear_a_batch_in_different_orders_hold_the_same_metagraph() {
        let genesis = [9u8; 8];
        let params = RegistryParams {
            max_miners: 4,
            immunity_epochs: 0,
            work_bits: 4,
        };
        let mut a = Metagraph::new(params.clone());
        for i in 0..4 {
            a.seed(key(i), 0);
        }
        let mut b = a.clone();
        // Six newcomers for four full slots: who gets in, and whom they replace, must not
        // depend on arrival order.
        let regs: Vec<(PublicKey, Register)> = (10..16)
            .map(|i| (key(i), Register::solve(&genesis, &key(i), 5, 4, 0)))
            .collect();
        // A batch keeps the four with the most work, whatever came first.
        let full = |g: &mut Metagraph, k: &PublicKey, r: &Register| match g.queue(k, r, &genesis, 5)
        {
            Ok(_) | Err(RegisterRefusal::BatchFull(4)) => {}
            Err(e) => panic!("{e}"),
        };
        for (k, r) in &regs {
            full(&mut a, k, r);
        }
        for (k, r) in regs.iter().rev() {
            full(&mut b, k, r);
        }
        assert_eq!((a.pending(), b.pending()), (4, 4));
        let incentive = |_| BTreeMap::from([(key(0), 0.5), (key(1), 0.3), (key(2), 0.2)]);
        let ra = a.apply(|e| e <= 5, incentive);
        let rb = b.apply(|e| e <= 5, incentive);
        assert_eq!(ra, rb);
        assert_eq!(a.slots(), b.slots());
        assert_eq!(a.pending(), 0);
        // Immunity 0: every newcomer takes a slot, the first the one of the genesis miner
        // without incentive (later ones may take an earlier newcomer's: same everywhere).
        assert!(ra.iter().all(|r| r.is_ok()), "{ra:?}");
        assert_eq!(ra[0].as_ref().expect("ok").replaced, Some(key(3)));
        // The batch is closed: more work for epoch 5 is stale.
        let late = Register::solve(&genesis, &key(20), 5, 4, 0);
        assert_eq!(
            a.queue(&key(20), &late, &genesis, 5),
            Err(RegisterRefusal::Stale(5))
        );
    }
}
