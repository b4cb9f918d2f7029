//! provnet's validator. Today: scoring (per-challenge samples, moving averages, epoch
//! weights) and the Yuma-style consensus every node runs at the end of an epoch to turn the
//! validators' revealed weights and their stake into miner incentives, validator dividends
//! and the epoch's rewards.
//!
//! Depends on `provnet-wire` (keys, weights) only: no networking, no storage, no proving,
//! so every rule here is a pure function that tests can drive directly.

pub mod consensus;
pub mod score;

pub use consensus::{yuma, Bonds, ConsensusParams, EpochOutcome, Rewards};
pub use score::{challenge_samples, Outcome, ScoreParams, Scores};
