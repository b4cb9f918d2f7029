//! Epochs are wall-clock aligned (epoch `e` runs from `e * length` ms after the Unix epoch),
//! so every node agrees on them without talking. Epoch `e`'s weights are committed in the
//! first half of `e + 1`, revealed in its second half, and every node runs consensus for `e`
//! shortly after `e + 2` begins.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epochs {
    pub length_ms: u64,
}

impl Epochs {
    pub fn new(length_ms: u64) -> Epochs {
        Epochs {
            length_ms: length_ms.max(1),
        }
    }

    pub fn of(&self, now_ms: u64) -> u64 {
        now_ms / self.length_ms
    }

    pub fn start(&self, epoch: u64) -> u64 {
        epoch.saturating_mul(self.length_ms)
    }

    /// Commits for `epoch` are accepted from the start of `epoch + 1` until this time.
    pub fn commit_deadline(&self, epoch: u64) -> u64 {
        self.start(epoch.saturating_add(1))
            .saturating_add(self.length_ms / 2)
    }

    /// Validators reveal `epoch`'s weights from this time.
    pub fn reveal_from(&self, epoch: u64) -> u64 {
        self.commit_deadline(epoch)
    }

    /// Registrations whose work is for `epoch` are heard until this time, when every node
    /// applies them as one batch (a tenth of an epoch, at most 2 s, into `epoch + 1`: the
    /// slack for gossip to reach everyone).
    pub fn registrations_at(&self, epoch: u64) -> u64 {
        self.start(epoch.saturating_add(1))
            .saturating_add((self.length_ms / 10).min(2_000))
    }

    /// Reveals for `epoch` are accepted until this time, when consensus for it runs.
    pub fn consensus_at(&self, epoch: u64) -> u64 {
        self.start(epoch.saturating_add(2))
            .saturating_add((self.length_ms / 10).min(2_000))
    }
}
