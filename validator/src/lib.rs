//! provnet's validator: verification of every proof, scoring (per-challenge samples, moving
//! averages, epoch weights), commit-reveal of weights, and the Yuma-style consensus every
//! node runs at the end of an epoch to turn the validators' revealed weights and their stake
//! into miner incentives, validator dividends and the epoch's rewards. State lives in sled.
//!
//! No networking: the node feeds the [`Validator`] engine and the [`Ledger`] from gossip and
//! publishes what they return, passing the time in, so every rule can be tested directly.

pub mod ceremony;
pub mod consensus;
pub mod court;
pub mod engine;
pub mod epoch;
pub mod issue;
pub mod ledger;
pub mod pool;
pub mod queue;
pub mod registry;
pub mod score;
pub mod store;

pub use consensus::{yuma, Bonds, ConsensusParams, EpochOutcome, Rewards};
pub use engine::{
    EngineConfig, Proved, Refusal, Validator, Verdict, VerifyJob, VerifyPool, VerifyingModel,
};
pub use epoch::Epochs;
pub use issue::{IssueConfig, Issuer, RequestRefusal};
pub use ledger::{Ledger, LedgerConfig, LedgerRefusal, SyncReport};
pub use queue::VerifyQueue;
pub use registry::{
    Metagraph, MinerRegistry, Queued, RegisterRefusal, Registered, Registrar, RegistryParams, Slot,
};
pub use score::{challenge_samples, Outcome, ScoreParams, Scores};
pub use store::{Archived, Store, StoreError, ARCHIVE_EPOCHS};
