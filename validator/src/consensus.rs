//! Yuma-style consensus, computed by every node from the same inputs with the same result.
//!
//! For stake S_v (normalised) and each validator's weights W[v][m] (each row normalised):
//! 1. consensus C_m: the stake-weighted median of column m. It is the largest weight that
//!    validators holding at least `kappa` of the stake give miner m, or more.
//! 2. clipping: W'[v][m] = min(W[v][m], C_m), so a minority cannot lift a miner alone.
//! 3. incentive I_m = sum_v S_v W'[v][m], normalised over miners.
//! 4. bonds: B = alpha * dB + (1 - alpha) * B_prev with dB[v][m] = S_v W'[v][m]. Both dB
//!    and B are normalised per miner (each column sums to 1).
//! 5. dividends D_v = sum_m B[v][m] I_m, normalised over validators.
//! 6. rewards: of each epoch's emission, 18% to the owner, 41% to miners by incentive and
//!    41% to validators by dividends. Amounts are integers that add up exactly (largest
//!    remainder). A pool with nobody to pay (no weights yet) is left unallocated.
//!
//! Every map is a BTreeMap and every sum runs in key order, so nodes on any IEEE-754
//! platform compute bit-identical floats and identical integer rewards.

use std::collections::BTreeMap;

use provnet_wire::{MinerWeight, PublicKey};
use serde::{Deserialize, Serialize};

/// Consensus parameters, from the network's genesis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusParams {
    /// Share of stake whose support sets a miner's consensus weight.
    pub kappa: f64,
    /// EMA rate of bonds.
    pub bond_alpha: f64,
    /// Parts per hundred of emission for the owner, miners and validators (sum 100).
    pub owner_percent: u64,
    pub miners_percent: u64,
    pub validators_percent: u64,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        ConsensusParams {
            kappa: 0.5,
            bond_alpha: 0.1,
            owner_percent: 18,
            miners_percent: 41,
            validators_percent: 41,
        }
    }
}

/// Bonds per validator, per miner (each miner's column sums to 1, or is empty).
pub type Bonds = BTreeMap<PublicKey, BTreeMap<PublicKey, f64>>;

/// One epoch's rewards, in the emission's integer unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewards {
    pub owner: u64,
    pub miners: BTreeMap<PublicKey, u64>,
    pub validators: BTreeMap<PublicKey, u64>,
    /// Emission nobody earned (no weights, or no stake).
    pub unallocated: u64,
}

impl Rewards {
    pub fn total(&self) -> u64 {
        self.owner
            + self.miners.values().sum::<u64>()
            + self.validators.values().sum::<u64>()
            + self.unallocated
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochOutcome {
    /// C_m per miner.
    pub consensus: BTreeMap<PublicKey, f64>,
    /// I_m per miner (sums to 1, or all 0).
    pub incentive: BTreeMap<PublicKey, f64>,
    /// D_v per validator (sums to 1, or all 0).
    pub dividends: BTreeMap<PublicKey, f64>,
    /// The bonds to carry into the next epoch.
    pub bonds: Bonds,
    pub rewards: Rewards,
}

/// Runs one epoch of consensus.
///
/// `stake`: the validator set. `weights`: each validator's revealed weights. Reveals from
/// keys outside the validator set are ignored, and a validator that revealed nothing counts
/// as weighting no one. `prev_bonds`: the previous epoch's bonds.
pub fn yuma(
    params: &ConsensusParams,
    stake: &BTreeMap<PublicKey, u64>,
    weights: &BTreeMap<PublicKey, Vec<MinerWeight>>,
    prev_bonds: &Bonds,
    emission: u64,
) -> EpochOutcome {
    let s = normalise(stake.iter().map(|(v, &st)| (*v, st as f64)).collect());
    let w: BTreeMap<PublicKey, BTreeMap<PublicKey, f64>> = s
        .keys()
        .map(|v| {
            let row = weights.get(v).map(|r| {
                r.iter().fold(BTreeMap::new(), |mut row, mw| {
                    *row.entry(mw.miner).or_insert(0.0) += f64::from(mw.weight);
                    row
                })
            });
            (*v, normalise(row.unwrap_or_default()))
        })
        .collect();
    let miners: Vec<PublicKey> = {
        let mut all: Vec<PublicKey> = w.values().flat_map(|r| r.keys().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all
    };

    let consensus: BTreeMap<PublicKey, f64> = miners
        .iter()
        .map(|m| {
            let column = s.iter().map(|(v, &sv)| (sv, cell(&w, v, m))).collect();
            (*m, weighted_median(column, params.kappa))
        })
        .collect();
    let clipped = |v: &PublicKey, m: &PublicKey| cell(&w, v, m).min(consensus[m]);

    let incentive = normalise(
        miners
            .iter()
            .map(|m| (*m, s.iter().map(|(v, sv)| sv * clipped(v, m)).sum()))
            .collect(),
    );

    let mut bonds: Bonds = BTreeMap::new();
    for m in &miners {
        let delta = normalise(s.iter().map(|(v, sv)| (*v, sv * clipped(v, m))).collect());
        let ema: BTreeMap<PublicKey, f64> = s
            .keys()
            .map(|v| {
                let prev = prev_bonds
                    .get(v)
                    .and_then(|r| r.get(m))
                    .copied()
                    .unwrap_or(0.0);
                let new = params.bond_alpha * delta.get(v).copied().unwrap_or(0.0)
                    + (1.0 - params.bond_alpha) * prev;
                (*v, new)
            })
            .collect();
        for (v, b) in normalise(ema) {
            if b > 0.0 {
                bonds.entry(v).or_default().insert(*m, b);
            }
        }
    }

    let dividends = normalise(
        s.keys()
            .map(|v| {
                let row = bonds.get(v);
                let d = incentive
                    .iter()
                    .map(|(m, i)| row.and_then(|r| r.get(m)).copied().unwrap_or(0.0) * i)
                    .sum();
                (*v, d)
            })
            .collect(),
    );

    let rewards = split(params, emission, &incentive, &dividends);
    EpochOutcome {
        consensus,
        incentive,
        dividends,
        bonds,
        rewards,
    }
}

fn cell(w: &BTreeMap<PublicKey, BTreeMap<PublicKey, f64>>, v: &PublicKey, m: &PublicKey) -> f64 {
    w.get(v).and_then(|r| r.get(m)).copied().unwrap_or(0.0)
}

/// Scales non-negative values to sum to 1; all zeros (or none) stay zeros.
fn normalise(mut values: BTreeMap<PublicKey, f64>) -> BTreeMap<PublicKey, f64> {
    let total: f64 = values.values().map(|x| x.max(0.0)).sum();
    for x in values.values_mut() {
        *x = if total > 0.0 { x.max(0.0) / total } else { 0.0 };
    }
    values
}

/// The largest value that holders of at least `kappa` of the (normalised) stake give, or
/// more. `column` is (stake, value) per validator.
fn weighted_median(mut column: Vec<(f64, f64)>, kappa: f64) -> f64 {
    column.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut support = 0.0;
    for (stake, value) in column {
        support += stake;
        if support >= kappa {
            return value;
        }
    }
    0.0
}

/// Splits `emission` by the percentages, then each pool by its shares.
fn split(
    params: &ConsensusParams,
    emission: u64,
    incentive: &BTreeMap<PublicKey, f64>,
    dividends: &BTreeMap<PublicKey, f64>,
) -> Rewards {
    let percent = params.owner_percent + params.miners_percent + params.validators_percent;
    let part = |p: u64| (u128::from(emission) * u128::from(p) / u128::from(percent.max(1))) as u64;
    let miners_pool = part(params.miners_percent);
    let validators_pool = part(params.validators_percent);
    let owner = emission - miners_pool - validators_pool;
    let (miners, m_left) = largest_remainder(miners_pool, incentive);
    let (validators, v_left) = largest_remainder(validators_pool, dividends);
    Rewards {
        owner,
        miners,
        validators,
        unallocated: m_left + v_left,
    }
}

/// Integer amounts proportional to `shares` that add up to `pool` exactly (or, when every
/// share is zero, nothing paid and the whole pool returned as unallocated).
fn largest_remainder(
    pool: u64,
    shares: &BTreeMap<PublicKey, f64>,
) -> (BTreeMap<PublicKey, u64>, u64) {
    let total: f64 = shares.values().sum();
    if pool == 0 || total <= 0.0 {
        return (BTreeMap::new(), pool);
    }
    let mut out = BTreeMap::new();
    let mut rest = Vec::new();
    let mut paid = 0u64;
    for (k, sh) in shares {
        let exact = pool as f64 * (sh / total);
        let floor = (exact.floor() as u64).min(pool - paid);
        paid += floor;
        out.insert(*k, floor);
        rest.push((exact - floor as f64, *k));
    }
    rest.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, k) in rest.iter().cycle().take((pool - paid) as usize) {
        *out.entry(*k).or_default() += 1;
    }
    out.retain(|_, v| *v > 0);
    (out, 0)
}
