//! The miner registry (the metagraph): a fixed number of slots, each a uid held by one
//! hotkey since an epoch. Only registered miners are proved for, scored and weighted, so a
//! key farm holds at most the slots it keeps paying for, and loses them to newcomers once
//! its immunity runs out and its weight is the lowest.
//!
//! Registration pays with proof of work (checked at the gate and again here) for the
//! current or previous epoch. When every slot is taken, a newcomer replaces the non-immune
//! miner with the lowest incentive in the last consensus (ties: the newer registration,
//! so a key farm churns its own slots before an established miner's, then the smaller
//! key), so the rule is the same on every node that saw the same registrations in the
//! same order.
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
}

impl RegisterRefusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            RegisterRefusal::AlreadyRegistered(_) => "already_registered",
            RegisterRefusal::NotEnoughWork { .. } => "not_enough_work",
            RegisterRefusal::Stale(_) => "stale_registration",
            RegisterRefusal::AllImmune(_) => "all_immune",
        }
    }
}

/// What a registration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    pub uid: u16,
    /// The miner it replaced, if the slots were full.
    pub replaced: Option<PublicKey>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metagraph {
    pub params: RegistryParams,
    slots: BTreeMap<u16, Slot>,
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

    /// Takes `hotkey`'s registration `r`, received in epoch `now_epoch`, with the genesis
    /// id `genesis` the work covers. `incentive` is each miner's share in the last
    /// consensus (missing: 0), which decides who is replaced when the slots are full.
    pub fn register(
        &mut self,
        hotkey: &PublicKey,
        r: &Register,
        genesis: &[u8; 8],
        now_epoch: u64,
        incentive: &BTreeMap<PublicKey, f64>,
    ) -> Result<Registered, RegisterRefusal> {
        if let Some(&uid) = self.by_key.get(hotkey) {
            return Err(RegisterRefusal::AlreadyRegistered(uid));
        }
        if r.epoch > now_epoch || r.epoch.saturating_add(1) < now_epoch {
            return Err(RegisterRefusal::Stale(r.epoch));
        }
        let (bits, need) = (r.work_bits(genesis, hotkey), self.params.work_bits);
        if bits < need {
            return Err(RegisterRefusal::NotEnoughWork { bits, need });
        }
        let (uid, replaced) = match self.free_uid() {
            Some(uid) => (uid, None),
            None => {
                let immunity = self.params.immunity_epochs;
                let victim = self
                    .slots
                    .values()
                    .filter(|s| s.registered_epoch.saturating_add(immunity) <= now_epoch)
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
            registered_epoch: now_epoch,
        });
        Ok(Registered { uid, replaced })
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

    /// A registration from gossip: the slot it took, or why not (counted).
    pub fn on_register(
        &mut self,
        hotkey: &PublicKey,
        r: &Register,
        now_ms: u64,
    ) -> crate::store::Result<Result<Registered, RegisterRefusal>> {
        let incentive = match self.store.last_consensus_epoch()? {
            Some(e) => self
                .store
                .consensus(e)?
                .map(|o| o.incentive)
                .unwrap_or_default(),
            None => BTreeMap::new(),
        };
        let now_epoch = self.epochs.of(now_ms);
        let done = self
            .graph
            .register(hotkey, r, &self.genesis, now_epoch, &incentive);
        match &done {
            Ok(_) => self.store.put_metagraph(&self.graph)?,
            Err(e) => *self.refused.entry(e.as_str().into()).or_default() += 1,
        }
        Ok(done)
    }
}
