//! The TUI's state: what it knows of each node it watches, and where the operator is.
//! Rendering ([`crate::ui`]) only reads it; input ([`crate::input`]) and the status feed
//! ([`App::on_feed`]) are the only writers.

use std::collections::{BTreeMap, VecDeque};

use provnet_wire::{MinerRanking, NodeStatus};

/// Score samples kept per miner for its trend.
pub const TREND_LEN: usize = 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Rankings,
    Rewards,
    Challenges,
    Disputes,
    Peers,
    Log,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Rankings,
        Tab::Rewards,
        Tab::Challenges,
        Tab::Disputes,
        Tab::Peers,
        Tab::Log,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Rankings => "Rankings",
            Tab::Rewards => "Rewards",
            Tab::Challenges => "Challenges",
            Tab::Disputes => "Disputes",
            Tab::Peers => "Peers",
            Tab::Log => "Log",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).expect("listed")
    }
}

/// Columns the rankings sort by (`s` cycles through them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Weight,
    Consensus,
    Score,
    Valid,
    Invalid,
    Latency,
    Reward,
    Total,
    Miner,
}

impl SortKey {
    pub const ALL: [SortKey; 9] = [
        SortKey::Weight,
        SortKey::Consensus,
        SortKey::Score,
        SortKey::Valid,
        SortKey::Invalid,
        SortKey::Latency,
        SortKey::Reward,
        SortKey::Total,
        SortKey::Miner,
    ];

    pub fn title(self) -> &'static str {
        match self {
            SortKey::Weight => "weight",
            SortKey::Consensus => "consensus",
            SortKey::Score => "score",
            SortKey::Valid => "valid",
            SortKey::Invalid => "bad",
            SortKey::Latency => "p50",
            SortKey::Reward => "epoch reward",
            SortKey::Total => "total reward",
            SortKey::Miner => "miner",
        }
    }

    /// The natural order: biggest first for amounts, fastest first for latency, A-Z for keys.
    fn descending(self) -> bool {
        !matches!(self, SortKey::Latency | SortKey::Miner | SortKey::Invalid)
    }

    fn compare(self, a: &MinerRanking, b: &MinerRanking) -> std::cmp::Ordering {
        let lat = |r: &MinerRanking| r.latency_ms_p50.unwrap_or(f64::INFINITY);
        let bad = |r: &MinerRanking| r.invalid + r.copied + r.replayed + r.late;
        match self {
            SortKey::Weight => a.weight.cmp(&b.weight),
            SortKey::Consensus => a.consensus.total_cmp(&b.consensus),
            SortKey::Score => a.score.total_cmp(&b.score),
            SortKey::Valid => a.valid.cmp(&b.valid),
            SortKey::Invalid => bad(a).cmp(&bad(b)),
            SortKey::Latency => lat(a).total_cmp(&lat(b)),
            SortKey::Reward => a.reward_last_epoch.cmp(&b.reward_last_epoch),
            SortKey::Total => a.reward_total.cmp(&b.reward_total),
            SortKey::Miner => a.miner.cmp(&b.miner),
        }
    }
}

/// The link to one node's admin endpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Conn {
    Connecting,
    Live,
    /// The last attempt failed; the feed keeps retrying.
    Disconnected {
        error: String,
        since_ms: u64,
    },
}

/// What the feed delivers for one node.
#[derive(Clone, Debug)]
pub enum Feed {
    Status(Box<NodeStatus>),
    Error(String),
}

/// One watched node.
#[derive(Clone, Debug)]
pub struct Source {
    /// What the operator typed (`127.0.0.1:PORT`) or the devnet's node name and address.
    pub label: String,
    pub conn: Conn,
    /// The last snapshot received (kept while disconnected, shown as stale).
    pub status: Option<NodeStatus>,
    /// Score samples per miner (hex key), oldest first.
    pub trend: BTreeMap<String, VecDeque<f64>>,
    last_at_ms: u64,
}

impl Source {
    pub fn new(label: impl Into<String>) -> Source {
        Source {
            label: label.into(),
            conn: Conn::Connecting,
            status: None,
            trend: BTreeMap::new(),
            last_at_ms: 0,
        }
    }
}

/// Everything on screen derives from this.
#[derive(Clone, Debug)]
pub struct App {
    pub sources: Vec<Source>,
    pub current: usize,
    pub tab: Tab,
    pub sort: SortKey,
    /// Flip the sort's natural order.
    pub reversed: bool,
    /// Selected row per tab.
    pub selected: [usize; Tab::ALL.len()],
    /// The selected miner's detail is open (Rankings).
    pub detail: bool,
    pub help: bool,
    pub quit: bool,
    /// Wall clock for ages and countdowns (set by the run loop; fixed in tests).
    pub now_ms: u64,
}

impl App {
    pub fn new(labels: Vec<String>) -> App {
        App {
            sources: labels.into_iter().map(Source::new).collect(),
            current: 0,
            tab: Tab::Rankings,
            sort: SortKey::Weight,
            reversed: false,
            selected: [0; Tab::ALL.len()],
            detail: false,
            help: false,
            quit: false,
            now_ms: 0,
        }
    }

    pub fn source(&self) -> &Source {
        &self.sources[self.current]
    }

    pub fn status(&self) -> Option<&NodeStatus> {
        self.source().status.as_ref()
    }

    /// A feed update for source `i`.
    pub fn on_feed(&mut self, i: usize, feed: Feed, now_ms: u64) {
        let Some(src) = self.sources.get_mut(i) else {
            return;
        };
        match feed {
            Feed::Status(s) => {
                // A fresh snapshot (not the same one polled twice) adds one trend sample.
                if s.at_ms != src.last_at_ms {
                    src.last_at_ms = s.at_ms;
                    for r in s.validator.iter().flat_map(|v| &v.rankings) {
                        let t = src.trend.entry(r.miner.clone()).or_default();
                        if t.len() == TREND_LEN {
                            t.pop_front();
                        }
                        t.push_back(r.score);
                    }
                }
                src.status = Some(*s);
                src.conn = Conn::Live;
            }
            Feed::Error(error) => {
                let since_ms = match &src.conn {
                    Conn::Disconnected { since_ms, .. } => *since_ms,
                    _ => now_ms,
                };
                src.conn = Conn::Disconnected { error, since_ms };
            }
        }
        self.clamp_selection();
    }

    /// The current node's rankings in the chosen order.
    pub fn rankings(&self) -> Vec<&MinerRanking> {
        let mut v: Vec<&MinerRanking> = self
            .status()
            .and_then(|s| s.validator.as_ref())
            .map(|v| v.rankings.iter().collect())
            .unwrap_or_default();
        let desc = self.sort.descending() != self.reversed;
        v.sort_by(|a, b| {
            let o = self.sort.compare(a, b).then_with(|| a.miner.cmp(&b.miner));
            if desc {
                o.reverse()
            } else {
                o
            }
        });
        v
    }

    /// The miner whose detail Enter opens.
    pub fn selected_miner(&self) -> Option<&MinerRanking> {
        self.rankings()
            .get(self.selected[Tab::Rankings.index()])
            .copied()
    }

    /// Rows in the current tab's list (what the selection moves over).
    pub fn rows(&self, tab: Tab) -> usize {
        let Some(s) = self.status() else { return 0 };
        match tab {
            Tab::Rankings => s.validator.as_ref().map_or(0, |v| v.rankings.len()),
            Tab::Rewards => s.ledger.as_ref().map_or(0, |l| l.recent.len()),
            Tab::Challenges => crate::ui::challenges(s).len(),
            Tab::Disputes => s.court.as_ref().map_or(0, |c| c.disputes.len()),
            Tab::Peers => s.peers.len(),
            Tab::Log => crate::ui::log_lines(s).len(),
        }
    }

    pub(crate) fn clamp_selection(&mut self) {
        for t in Tab::ALL {
            let n = self.rows(t);
            let sel = &mut self.selected[t.index()];
            *sel = (*sel).min(n.saturating_sub(1));
        }
        if self.tab != Tab::Rankings || self.selected_miner().is_none() {
            self.detail = false;
        }
    }
}
