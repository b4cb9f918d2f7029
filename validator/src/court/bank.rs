//! Balances and bonds. A claim or a dispute locks its bond out of the sender's balance;
//! a verdict settles the bonds it decides in one transaction: paid back, paid to the
//! winner and to the miner whose proof decided, and the rest burned, so a self-dispute
//! always loses money.
//!
//! [`Bonds`] is the seam for a chain: the embedded [`Bank`] keeps the accounts in sled,
//! funded by the genesis; a subtensor adapter would lock and pay on chain instead.

use std::collections::BTreeMap;

use provnet_wire::PublicKey;
use serde::{Deserialize, Serialize};

use crate::store::{tx_error, Result, Store};

/// What a settlement does with bonds that [`Bonds::lock`] holds: every held amount is
/// paid out or burned, to the unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// The bonds it ends (their ids, as locked).
    pub bonds: Vec<[u8; 32]>,
    pub pay: Vec<(PublicKey, u64)>,
    pub burn: u64,
}

/// Where bonds are held. The embedded [`Bank`] implements it; a chain client would too.
pub trait Bonds {
    fn balance(&self, account: &PublicKey) -> Result<u64>;
    /// Moves `amount` out of `account`'s balance into a bond held as `id`. `Ok(false)` when
    /// the balance is short or `id` is already held (nothing changes).
    fn lock(&mut self, id: &[u8; 32], account: &PublicKey, amount: u64) -> Result<bool>;
    /// The bond held as `id`: who locked it, and how much.
    fn held(&self, id: &[u8; 32]) -> Result<Option<(PublicKey, u64)>>;
    /// Carries out `s` once, atomically, under the name `settlement` (a second call with
    /// the same name does nothing, so a restart can simply repeat it). Refused (`Ok(false)`)
    /// when a bond is not held or the amounts do not add up.
    fn settle(&mut self, settlement: &[u8; 32], s: &Settlement) -> Result<bool>;
    /// Units burned so far.
    fn burned(&self) -> Result<u64>;
}

/// The embedded accounts, in the node's sled: trees `bank` (account -> balance),
/// `bonds` (id -> (account, amount)) and `settled` (settlement name -> [`Settlement`]).
pub struct Bank {
    balances: sled::Tree,
    bonds: sled::Tree,
    settled: sled::Tree,
}

const BURNED: &[u8] = b"burned";
const FUNDED: &[u8] = b"funded";

fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

impl Bank {
    /// Opens the bank; on the first open, funds the genesis accounts.
    pub fn open(store: &Store, genesis: &BTreeMap<PublicKey, u64>) -> Result<Bank> {
        let bank = Bank {
            balances: store.tree("bank")?,
            bonds: store.tree("bonds")?,
            settled: store.tree("settled")?,
        };
        if bank.settled.get(FUNDED)?.is_none() {
            for (k, v) in genesis {
                bank.balances.insert(k, &be(*v))?;
            }
            bank.settled.insert(FUNDED, &[1u8][..])?;
        }
        Ok(bank)
    }

    /// Every account's bonds still held, in all.
    pub fn held_by(&self) -> Result<BTreeMap<PublicKey, u64>> {
        let mut out: BTreeMap<PublicKey, u64> = BTreeMap::new();
        for kv in self.bonds.iter() {
            let (_, v) = kv?;
            if let Ok((who, amount)) = serde_cbor::from_slice::<(PublicKey, u64)>(&v) {
                *out.entry(who).or_default() += amount;
            }
        }
        Ok(out)
    }

    /// Every account's balance.
    pub fn balances(&self) -> Result<BTreeMap<PublicKey, u64>> {
        self.balances
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let key = <[u8; 32]>::try_from(k.as_ref()).unwrap_or([0; 32]);
                Ok((key, read_u64(Some(v))))
            })
            .collect()
    }
}

impl Bonds for Bank {
    fn balance(&self, account: &PublicKey) -> Result<u64> {
        Ok(read_u64(self.balances.get(account)?))
    }

    fn lock(&mut self, id: &[u8; 32], account: &PublicKey, amount: u64) -> Result<bool> {
        use sled::Transactional;
        let held = serde_cbor::to_vec(&(account, amount)).expect("plain data");
        let done = (&self.balances, &self.bonds)
            .transaction(|(b, bonds)| {
                if bonds.get(id)?.is_some() {
                    return Ok(false);
                }
                let have = read_u64(b.get(account)?);
                if have < amount {
                    return Ok(false);
                }
                b.insert(&account[..], &be(have - amount))?;
                bonds.insert(&id[..], held.clone())?;
                Ok::<bool, sled::transaction::ConflictableTransactionError<()>>(true)
            })
            .map_err(tx_error)?;
        Ok(done)
    }

    fn held(&self, id: &[u8; 32]) -> Result<Option<(PublicKey, u64)>> {
        Store::get(&self.bonds, "bonds", id)
    }

    fn settle(&mut self, name: &[u8; 32], s: &Settlement) -> Result<bool> {
        use sled::Transactional;
        let record = serde_cbor::to_vec(s).expect("plain data");
        let done = (&self.balances, &self.bonds, &self.settled)
            .transaction(|(b, bonds, settled)| {
                if settled.get(name)?.is_some() {
                    return Ok(true);
                }
                let mut total = 0u64;
                for id in &s.bonds {
                    let Some(v) = bonds.get(id)? else {
                        return Ok(false);
                    };
                    let (_, amount): (PublicKey, u64) =
                        serde_cbor::from_slice(&v).unwrap_or(([0; 32], 0));
                    total = total.saturating_add(amount);
                }
                let out = s
                    .pay
                    .iter()
                    .map(|(_, v)| *v)
                    .fold(s.burn, u64::saturating_add);
                if out != total {
                    return Ok(false);
                }
                for id in &s.bonds {
                    bonds.remove(&id[..])?;
                }
                for (who, v) in &s.pay {
                    let have = read_u64(b.get(who)?);
                    b.insert(&who[..], &be(have.saturating_add(*v)))?;
                }
                let burned = read_u64(settled.get(BURNED)?);
                settled.insert(BURNED, &be(burned.saturating_add(s.burn)))?;
                settled.insert(&name[..], record.clone())?;
                Ok::<bool, sled::transaction::ConflictableTransactionError<()>>(true)
            })
            .map_err(tx_error)?;
        Ok(done)
    }

    fn burned(&self) -> Result<u64> {
        Ok(read_u64(self.settled.get(BURNED)?))
    }
}
