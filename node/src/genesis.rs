//! The network's genesis: a TOML file naming the netuid, the models in play (where they are
//! on this node, their content hash and verifying-key ids), the epoch length, the validator
//! set with stake, the challengers admitted to request proofs (with their quotas), emission
//! per epoch, and the scoring and consensus parameters.
//!
//! Its hash covers everything but the local model paths, so every node of one network gets
//! the same hash wherever it keeps its files. Envelopes carry the hash's first 8 bytes, and
//! nodes reject messages sealed for another genesis.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use provnet_kernels::{Model, ModelKeys};
use provnet_validator::court::CourtParams;
use provnet_validator::{ConsensusParams, RegistryParams, ScoreParams};
use serde::{Deserialize, Serialize};

use crate::identity::hex32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub netuid: u16,
    pub epoch_secs: u64,
    pub emission_per_epoch: u64,
    pub models: Vec<GenesisModel>,
    pub validators: Vec<GenesisValidator>,
    /// The challengers whose proof requests validators adopt. Nobody else's requests are
    /// forwarded. Left out of the hash's encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub challengers: Vec<GenesisChallenger>,
    /// Miners registered from the start (uids in this order); the rest register with
    /// proof of work. Left out of the hash's encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub miners: Vec<GenesisMiner>,
    /// Miner slots, immunity and the work a registration needs. Left out of the hash's
    /// encoding when at its defaults.
    #[serde(default, skip_serializing_if = "is_default_registry")]
    pub registration: RegistryParams,
    /// Epochs of weights, challenge logs and ledger records a node keeps in sled; older
    /// ones are pruned. Left out of the hash's encoding at its default.
    #[serde(
        default = "default_keep_epochs",
        skip_serializing_if = "is_default_keep"
    )]
    pub keep_epochs: u64,
    #[serde(default)]
    pub scoring: ScoreParams,
    #[serde(default)]
    pub consensus: ConsensusParams,
    /// Funded accounts: inference nodes and challengers lock their claims' and disputes'
    /// bonds from these balances; nobody else may post claims. Left out of the hash's
    /// encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<GenesisAccount>,
    /// Bonds, clocks and payouts of the dispute game. Left out of the hash's encoding at
    /// its defaults.
    #[serde(default, skip_serializing_if = "is_default_court")]
    pub disputes: CourtParams,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// Hex of the account's ed25519 public key (the node's key).
    pub hotkey: String,
    pub balance: u64,
}

fn is_default_court(p: &CourtParams) -> bool {
    *p == CourtParams::default()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisModel {
    pub name: String,
    /// The model directory on this node, relative to the genesis file. Not hashed.
    pub path: PathBuf,
    /// Hex of the model's content hash (`provnet model show`).
    pub model_id: String,
    /// Hex of each segment's verifying-key id, in segment order. Empty when the network's
    /// ceremony makes the keys.
    pub vk_ids: Vec<String>,
    /// The network's phase-2 ceremony for this model: its validators make the keys when
    /// the network starts (see `crate::ceremony_net`). Left out of the hash's encoding when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceremony: Option<GenesisCeremony>,
}

/// How the network runs a model's ceremony.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisCeremony {
    /// The phase-1 `.ptau` file on this node, relative to the genesis file. Not hashed.
    pub ptau: PathBuf,
    /// Hex of the blake3 of the `.ptau` file: every node derives the initial parameters
    /// from the same one.
    pub ptau_blake3: String,
    /// When the first slot opens (Unix ms).
    pub start_ms: u64,
    /// How long each validator has to contribute, from its slot's opening.
    #[serde(default = "default_slot_ms")]
    pub slot_ms: u64,
    /// The closing beacon is hashed 2^this times.
    #[serde(default = "default_beacon_exp")]
    pub beacon_iterations_exp: u32,
}

fn default_slot_ms() -> u64 {
    20_000
}

fn default_beacon_exp() -> u32 {
    10
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Hex of the validator's ed25519 public key.
    pub hotkey: String,
    pub stake: u64,
}

fn default_keep_epochs() -> u64 {
    256
}

fn is_default_keep(k: &u64) -> bool {
    *k == default_keep_epochs()
}

fn is_default_registry(p: &RegistryParams) -> bool {
    *p == RegistryParams::default()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisMiner {
    /// Hex of the miner's ed25519 public key.
    pub hotkey: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisChallenger {
    /// Hex of the challenger's ed25519 public key.
    pub hotkey: String,
    /// Requests each validator adopts from this challenger per epoch (the seam for fees or
    /// stake later: a quota bought rather than granted).
    pub quota_per_epoch: u32,
}

/// Most requests per epoch a genesis may grant one challenger.
pub const MAX_QUOTA_PER_EPOCH: u32 = 100_000;

impl Genesis {
    /// Reads and checks a genesis file, model directories included.
    pub fn load(path: &Path) -> Result<Genesis> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading genesis {}", path.display()))?;
        let mut g: Genesis =
            toml::from_str(&text).with_context(|| format!("parsing genesis {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for m in &mut g.models {
            if m.path.is_relative() {
                m.path = base.join(&m.path);
            }
            if let Some(c) = &mut m.ceremony {
                if c.ptau.is_relative() {
                    c.ptau = base.join(&c.ptau);
                }
            }
        }
        g.check()
            .with_context(|| format!("genesis {}", path.display()))?;
        Ok(g)
    }

    /// The hash every node of this network agrees on.
    pub fn hash(&self) -> [u8; 32] {
        let mut core = self.clone();
        for m in &mut core.models {
            m.path = PathBuf::new();
            if let Some(c) = &mut m.ceremony {
                c.ptau = PathBuf::new();
                // What the ceremony made is not part of what the network started from.
                m.vk_ids.clear();
            }
        }
        let bytes = provnet_wire::codec::encode(&core).expect("plain data encodes");
        let mut h = blake3::Hasher::new();
        h.update(b"provnet/genesis/v1");
        h.update(&bytes);
        *h.finalize().as_bytes()
    }

    /// The validators' keys.
    pub fn validator_keys(&self) -> Result<BTreeSet<[u8; 32]>> {
        self.validators
            .iter()
            .map(|v| hex32("validator hotkey", &v.hotkey))
            .collect()
    }

    /// The admitted challengers' keys, with their quotas.
    pub fn challenger_quotas(&self) -> Result<std::collections::BTreeMap<[u8; 32], u32>> {
        self.challengers
            .iter()
            .map(|c| Ok((hex32("challenger hotkey", &c.hotkey)?, c.quota_per_epoch)))
            .collect()
    }

    /// The funded accounts and their opening balances.
    pub fn account_balances(&self) -> Result<std::collections::BTreeMap<[u8; 32], u64>> {
        self.accounts
            .iter()
            .map(|a| Ok((hex32("account hotkey", &a.hotkey)?, a.balance)))
            .collect()
    }

    /// The genesis miners' keys, in uid order.
    pub fn miner_keys(&self) -> Result<Vec<[u8; 32]>> {
        self.miners
            .iter()
            .map(|m| hex32("miner hotkey", &m.hotkey))
            .collect()
    }

    /// Who may publish what: challenges from validators (which issue them) and admitted
    /// challengers (whose requests validators adopt); registrations with the genesis's
    /// work. Proof filtering by registration is the roles' to add (they keep the registry).
    pub fn admission(&self) -> Result<provnet_wire::Admission> {
        let validators = self.validator_keys()?;
        let mut keys = validators.clone();
        keys.extend(self.challenger_quotas()?.into_keys());
        Ok(provnet_wire::Admission {
            challengers: Some(keys.into_iter().collect()),
            validators: Some(validators.into_iter().collect()),
            registration: Some(provnet_wire::RegistrationRule {
                work_bits: self.registration.work_bits,
                epoch_ms: self.epoch_secs * 1000,
            }),
            miners: None,
            accounts: Some(self.account_balances()?.into_keys().collect()),
            disputers: Some(self.challenger_quotas()?.into_keys().collect()),
        })
    }

    fn check(&self) -> Result<()> {
        ensure!(self.epoch_secs > 0, "epoch_secs must be positive");
        ensure!(!self.validators.is_empty(), "no validators");
        let mut keys = BTreeSet::new();
        for v in &self.validators {
            let key = hex32("validator hotkey", &v.hotkey)?;
            ensure!(keys.insert(key), "validator {} is listed twice", v.hotkey);
        }
        ensure!(
            self.validators.iter().any(|v| v.stake > 0),
            "no validator has stake"
        );
        ensure!(
            (2..=1_000_000).contains(&self.keep_epochs),
            "keep_epochs must be 2 to 1000000"
        );
        let r = &self.registration;
        ensure!(
            (1..=provnet_wire::message::MAX_WEIGHTS as u16).contains(&r.max_miners),
            "registration.max_miners must be 1 to {}",
            provnet_wire::message::MAX_WEIGHTS
        );
        ensure!(
            r.work_bits <= 40,
            "registration.work_bits must be at most 40"
        );
        ensure!(
            self.miners.len() <= r.max_miners as usize,
            "{} genesis miners for {} slots",
            self.miners.len(),
            r.max_miners
        );
        let mut miners = BTreeSet::new();
        for m in &self.miners {
            let key = hex32("miner hotkey", &m.hotkey)?;
            ensure!(miners.insert(key), "miner {} is listed twice", m.hotkey);
        }
        let mut challengers = BTreeSet::new();
        for c in &self.challengers {
            let key = hex32("challenger hotkey", &c.hotkey)?;
            ensure!(
                challengers.insert(key),
                "challenger {} is listed twice",
                c.hotkey
            );
            ensure!(
                (1..=MAX_QUOTA_PER_EPOCH).contains(&c.quota_per_epoch),
                "challenger {}: quota_per_epoch must be 1 to {MAX_QUOTA_PER_EPOCH}",
                c.hotkey
            );
        }
        let mut accounts = BTreeSet::new();
        for a in &self.accounts {
            let key = hex32("account hotkey", &a.hotkey)?;
            ensure!(accounts.insert(key), "account {} is listed twice", a.hotkey);
        }
        let d = &self.disputes;
        ensure!(
            (2..=256).contains(&d.arity),
            "disputes.arity must be 2 to 256"
        );
        ensure!(
            u16::from(d.winner_percent) + u16::from(d.miner_percent) <= 100,
            "disputes.winner_percent and miner_percent must add up to at most 100"
        );
        ensure!(
            d.round_ms > 0 && d.leaf_ms > 0 && d.window_ms > 0,
            "disputes: window_ms, round_ms and leaf_ms must be positive"
        );
        ensure!(
            d.leaf_ms <= provnet_wire::message::MAX_CHALLENGE_TTL_MS,
            "disputes.leaf_ms must be at most {} (a challenge's longest deadline)",
            provnet_wire::message::MAX_CHALLENGE_TTL_MS
        );
        let c = &self.consensus;
        ensure!(
            c.owner_percent + c.miners_percent + c.validators_percent == 100,
            "consensus percentages must add up to 100"
        );
        ensure!(c.kappa > 0.0 && c.kappa <= 1.0, "kappa must be in (0, 1]");
        ensure!(
            c.bond_alpha > 0.0 && c.bond_alpha <= 1.0,
            "bond_alpha must be in (0, 1]"
        );
        let s = &self.scoring;
        ensure!(
            s.ema_alpha > 0.0 && s.ema_alpha <= 1.0,
            "ema_alpha must be in (0, 1]"
        );
        ensure!(!self.models.is_empty(), "no models");
        let mut ids = BTreeSet::new();
        for m in &self.models {
            ensure!(
                ids.insert(m.model_id.clone()),
                "model {} is listed twice",
                m.model_id
            );
            check_model(m).with_context(|| format!("model {}", m.name))?;
        }
        Ok(())
    }
}

fn check_model(m: &GenesisModel) -> Result<()> {
    let want = hex32("model_id", &m.model_id)?;
    let model = Model::load(&m.path)?;
    if model.id() != want {
        bail!(
            "{} holds model {}, not {}",
            m.path.display(),
            hex::encode(model.id()),
            m.model_id
        );
    }
    if let Some(c) = &m.ceremony {
        ensure!(
            m.vk_ids.is_empty(),
            "vk_ids must be empty: the network's ceremony makes this model's keys"
        );
        hex32("ceremony.ptau_blake3", &c.ptau_blake3)?;
        ensure!(
            (500..=3_600_000).contains(&c.slot_ms),
            "ceremony.slot_ms must be 500 to 3600000"
        );
        ensure!(
            c.beacon_iterations_exp <= 24,
            "ceremony.beacon_iterations_exp must be at most 24"
        );
        ensure!(
            c.ptau.is_file(),
            "ceremony.ptau: {} is not a file",
            c.ptau.display()
        );
        return Ok(());
    }
    ensure!(
        m.vk_ids.len() == model.segments.len(),
        "{} verifying-key ids for {} segments",
        m.vk_ids.len(),
        model.segments.len()
    );
    let keys = ModelKeys::open(&m.path, &model)?;
    for (i, vk) in m.vk_ids.iter().enumerate() {
        let have = keys.vk_id(i)?;
        if have != hex32("vk id", vk)? {
            bail!(
                "segment {i}: the keys in {} have vk id {}, the genesis says {vk}",
                m.path.display(),
                hex::encode(have)
            );
        }
    }
    Ok(())
}
