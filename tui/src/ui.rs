//! Drawing: a pure function of [`App`]. Same state, same screen: what the snapshot tests
//! rely on.

use provnet_wire::status::LogLine;
use provnet_wire::{ChallengeStatus, MinerRanking, NodeStatus};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Bar, BarChart, BarGroup, Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Tabs,
    Wrap,
};
use ratatui::Frame;

use crate::app::{App, Conn, SortKey, Tab};

const WIDE: u16 = 120;

pub fn render(app: &App, f: &mut Frame) {
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    render_header(app, f, header);
    let titles: Vec<Line> = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| Line::from(format!("{} {}", i + 1, t.title())))
        .collect();
    f.render_widget(
        Tabs::new(titles)
            .select(app.tab.index())
            .highlight_style(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))
            .divider("|"),
        tabs,
    );
    match app.status() {
        None => render_waiting(app, f, body),
        Some(s) => match app.tab {
            Tab::Rankings => render_rankings(app, s, f, body),
            Tab::Rewards => render_rewards(app, s, f, body),
            Tab::Challenges => render_challenges(app, s, f, body),
            Tab::Disputes => render_disputes(app, s, f, body),
            Tab::Peers => render_peers(app, s, f, body),
            Tab::Log => render_log(app, s, f, body),
        },
    }
    render_footer(app, f, footer);
    if app.detail {
        if let (Some(s), Some(m)) = (app.status(), app.selected_miner()) {
            render_detail(s, m, f);
        }
    }
    if app.help {
        render_help(f);
    }
}

fn render_header(app: &App, f: &mut Frame, area: Rect) {
    let src = app.source();
    let (dot, conn) = match &src.conn {
        Conn::Connecting => (
            Span::styled("◌", Style::new().fg(Color::Yellow)),
            "connecting".to_string(),
        ),
        Conn::Live => (
            Span::styled("●", Style::new().fg(Color::Green)),
            "live".into(),
        ),
        Conn::Disconnected { error, since_ms } => (
            Span::styled("✕", Style::new().fg(Color::Red)),
            format!(
                "disconnected {} ago, retrying: {error}",
                age(app.now_ms.saturating_sub(*since_ms))
            ),
        ),
    };
    let node = if app.sources.len() > 1 {
        format!(" [{}/{}, n: next]", app.current + 1, app.sources.len())
    } else {
        String::new()
    };
    let first = vec![
        Span::styled("provnet ", Style::new().bold()),
        dot,
        Span::raw(format!(" {} {conn}{node}", src.label)),
    ];
    let second = match &src.status {
        Some(s) => {
            let roles = if s.roles.is_empty() {
                "relay".to_string()
            } else {
                s.roles.join("+")
            };
            let left = s.epoch_ends_ms.saturating_sub(app.now_ms.max(s.at_ms));
            let left = if left == 0 {
                "ended".to_string()
            } else {
                format!("{:.1} s left", left as f64 / 1e3)
            };
            let genesis = if s.genesis.is_empty() {
                "dev".to_string()
            } else {
                s.genesis.chars().take(8).collect()
            };
            let when = match &s.ceremony {
                Some(c) => format!("setup ceremony: {c}"),
                None => format!("epoch {} ({left})", s.epoch),
            };
            Line::from(vec![
                Span::styled(roles, Style::new().fg(Color::Cyan).bold()),
                Span::raw(format!(
                    "  key {}  net {}/{genesis}  {when}  {} peers",
                    short(&s.public_key),
                    s.netuid,
                    s.gossip.connected_peers
                )),
            ])
        }
        None => Line::from("no status yet"),
    };
    f.render_widget(Paragraph::new(vec![Line::from(first), second]), area);
}

fn render_footer(app: &App, f: &mut Frame, area: Rect) {
    let keys = match app.tab {
        Tab::Rankings => format!(
            "q quit  ? help  Tab next  ↑↓/jk select  Enter detail  s sort ({}{})",
            app.sort.title(),
            if app.reversed { ", reversed" } else { "" }
        ),
        _ => "q quit  ? help  Tab/Shift-Tab switch  ↑↓/jk select".to_string(),
    };
    let keys = if app.sources.len() > 1 {
        format!("{keys}  n/p node")
    } else {
        keys
    };
    f.render_widget(
        Paragraph::new(keys).style(Style::new().fg(Color::DarkGray)),
        area,
    );
}

fn render_waiting(app: &App, f: &mut Frame, area: Rect) {
    let msg = match &app.source().conn {
        Conn::Disconnected { error, .. } => {
            format!(
                "cannot reach {}: {error}\nretrying every second",
                app.source().label
            )
        }
        _ => format!("connecting to {} ...", app.source().label),
    };
    f.render_widget(
        Paragraph::new(msg)
            .alignment(Alignment::Center)
            .wrap(Wrap { trim: true })
            .block(Block::new().borders(Borders::TOP)),
        area,
    );
}

/// A block titled `title`, marked stale when the link is down.
fn panel<'a>(app: &App, title: String) -> Block<'a> {
    let stale = matches!(app.source().conn, Conn::Disconnected { .. });
    let b = Block::new()
        .borders(Borders::TOP)
        .title(Line::from(title).bold());
    if stale {
        b.title(Line::from(" stale: last data before the link dropped ").red())
    } else {
        b
    }
}

fn table_state(app: &App, tab: Tab) -> TableState {
    TableState::default().with_selected(Some(app.selected[tab.index()]))
}

/// Marks the selected row without relying on colour (plain terminals, screen readers).
const MARK: &str = "› ";

fn highlight() -> Style {
    Style::new()
        .bg(Color::DarkGray)
        .add_modifier(Modifier::BOLD)
}

fn render_rankings(app: &App, s: &NodeStatus, f: &mut Frame, area: Rect) {
    let Some(v) = &s.validator else {
        let text = match &s.miner {
            Some(m) => format!(
                "This node mines; rankings are a validator's.\n\n\
                 proved {}  failed {}  expired {}  published {}\n\
                 queue {}/{}  in flight {}  threads {}  backend {}\n\
                 prove p50 {}  p95 {}",
                m.proved,
                m.failed,
                m.dropped_expired,
                m.published,
                m.queue_depth,
                m.queue_capacity,
                m.in_flight,
                m.threads,
                if m.backend.is_empty() {
                    "?"
                } else {
                    &m.backend
                },
                ms(m.prove_ms_p50),
                ms(m.prove_ms_p95)
            ),
            None => "No rankings: this node does not validate.".into(),
        };
        f.render_widget(
            Paragraph::new(text).block(panel(app, " Rankings ".into())),
            area,
        );
        return;
    };
    let wide = area.width >= WIDE;
    let trend_w: usize = if wide { 16 } else { 8 };
    let arrow = |k: SortKey| {
        if k == app.sort {
            if app.reversed {
                "▲"
            } else {
                "▼"
            }
        } else {
            ""
        }
    };
    let mut head: Vec<String> = vec![
        format!("miner{}", arrow(SortKey::Miner)),
        format!("weight{}", arrow(SortKey::Weight)),
        format!("cons{}", arrow(SortKey::Consensus)),
        format!("score{}", arrow(SortKey::Score)),
        format!("ok{}", arrow(SortKey::Valid)),
        format!("bad{}", arrow(SortKey::Invalid)),
        format!("p50/p95 ms{}", arrow(SortKey::Latency)),
    ];
    let mut widths = vec![
        Constraint::Length(if wide { 16 } else { 8 }),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(trend_w as u16),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(11),
    ];
    if wide {
        head.push("bytes".into());
        widths.push(Constraint::Length(5));
    }
    head.push(format!("epoch{}", arrow(SortKey::Reward)));
    head.push(format!("total{}", arrow(SortKey::Total)));
    widths.push(Constraint::Length(7));
    widths.push(Constraint::Length(8));
    let trend = &app.source().trend;
    let rows: Vec<Row> = app
        .rankings()
        .into_iter()
        .map(|r| {
            let bad = r.invalid + r.copied + r.replayed + r.late;
            let spark = trend
                .get(&r.miner)
                .map(|t| sparkline(t.iter().copied(), trend_w))
                .unwrap_or_default();
            let mut cells = vec![
                Cell::from(if wide {
                    r.miner.chars().take(16).collect::<String>()
                } else {
                    short(&r.miner)
                }),
                Cell::from(format!("{:.3}", r.weight as f64 / 65535.0)),
                Cell::from(format!("{:.2}", r.consensus)),
                Cell::from(spark).fg(Color::Green),
                Cell::from(r.valid.to_string()),
                Cell::from(bad.to_string()).fg(if bad > 0 { Color::Red } else { Color::Reset }),
                Cell::from(format!(
                    "{}/{}",
                    num(r.latency_ms_p50),
                    num(r.latency_ms_p95)
                )),
            ];
            if wide {
                cells.push(Cell::from(
                    r.proof_bytes.map_or("-".into(), |b| b.to_string()),
                ));
            }
            cells.push(Cell::from(amount(r.reward_last_epoch)));
            cells.push(Cell::from(amount(r.reward_total)));
            Row::new(cells)
        })
        .collect();
    let title = format!(
        " Rankings: {} miners, {} verified, queue {}, last weights epoch {} ",
        v.rankings.len(),
        v.verified,
        v.verify_queue,
        v.last_committed_epoch.map_or("-".into(), |e| e.to_string())
    );
    let table = Table::new(rows, widths)
        .header(Row::new(head).style(Style::new().bold().underlined()))
        .row_highlight_style(highlight())
        .highlight_symbol(MARK)
        .highlight_symbol(MARK)
        .block(panel(app, title));
    f.render_stateful_widget(table, area, &mut table_state(app, Tab::Rankings));
}

fn render_detail(s: &NodeStatus, m: &MinerRanking, f: &mut Frame) {
    let area = centered(f.area(), 90, 80);
    f.render_widget(Clear, area);
    let block = Block::bordered().title(Line::from(" Miner (Esc closes) ").bold());
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [facts, list] = Layout::vertical([Constraint::Length(5), Constraint::Min(1)]).areas(inner);
    let lines = vec![
        Line::from(m.miner.clone()),
        Line::from(format!(
            "uid {}  score {:.3}  weight {:.3}  consensus {:.3}  incentive {:.3}",
            m.uid.map_or("-".into(), |u| u.to_string()),
            m.score,
            m.weight as f64 / 65535.0,
            m.consensus,
            m.incentive
        )),
        Line::from(format!(
            "valid {}  invalid {}  copied {}  replayed {}  late {}",
            m.valid, m.invalid, m.copied, m.replayed, m.late
        )),
        Line::from(format!(
            "latency p50/p95 {}/{} ms  verified p50 {} ms  proof {} B",
            num(m.latency_ms_p50),
            num(m.latency_ms_p95),
            num(m.verified_ms_p50),
            m.proof_bytes.map_or("-".into(), |b| b.to_string())
        )),
        Line::from(format!(
            "rewards: last epoch {}  total {}",
            amount(m.reward_last_epoch),
            amount(m.reward_total)
        )),
    ];
    f.render_widget(Paragraph::new(lines), facts);
    let rows: Vec<Row> = m
        .recent_proofs
        .iter()
        .rev()
        .map(|p| {
            let color = if p.outcome == "valid" {
                Color::Green
            } else {
                Color::Red
            };
            Row::new(vec![
                Cell::from(age(s.at_ms.saturating_sub(p.at_ms))),
                Cell::from(p.challenge.clone()),
                Cell::from(p.outcome.clone()).fg(color),
                Cell::from(num(p.latency_ms)),
                Cell::from(p.detail.clone()),
            ])
        })
        .collect();
    let empty = rows.is_empty();
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(16),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["age", "challenge", "outcome", "ms", "why"]).style(Style::new().bold()))
    .block(Block::new().borders(Borders::TOP).title(if empty {
        " no proofs from it since this validator started "
    } else {
        " recent proofs, newest first "
    }));
    f.render_widget(table, list);
}

fn render_rewards(app: &App, s: &NodeStatus, f: &mut Frame, area: Rect) {
    let Some(l) = &s.ledger else {
        f.render_widget(
            Paragraph::new("No ledger: this node runs without a genesis.")
                .block(panel(app, " Rewards ".into())),
            area,
        );
        return;
    };
    let [top, chart, bottom] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(6),
        Constraint::Length((area.height / 3).clamp(4, 12)),
    ])
    .areas(area);
    let last = l.recent.last();
    let split = match last {
        Some(e) => {
            let total = (e.owner + e.miners + e.validators + e.unallocated).max(1) as f64;
            let pc = |x: u64| 100.0 * x as f64 / total;
            format!(
                "epoch {}: owner {} ({:.0}%)  miners {} ({:.0}%)  validators {} ({:.0}%)  unallocated {}  revealed by {}",
                e.epoch,
                amount(e.owner),
                pc(e.owner),
                amount(e.miners),
                pc(e.miners),
                amount(e.validators),
                pc(e.validators),
                amount(e.unallocated),
                e.revealed_by.len()
            )
        }
        None => "no epoch has reached consensus yet".into(),
    };
    let totals = format!(
        "paid so far: owner {}  miners {}  validators {}",
        amount(l.owner_total),
        amount(l.miner_totals.values().sum()),
        amount(l.validator_totals.values().sum())
    );
    f.render_widget(
        Paragraph::new(vec![Line::from(split), Line::from(totals)])
            .wrap(Wrap { trim: true })
            .block(panel(app, " Rewards per epoch ".into())),
        top,
    );
    // Three bars per epoch (owner, miners, validators), as many recent epochs as fit.
    let per_group: u16 = 3 * 2 + 2;
    let fit = ((chart.width.saturating_sub(2)) / per_group).max(1) as usize;
    let groups: Vec<BarGroup> = l
        .recent
        .iter()
        .skip(l.recent.len().saturating_sub(fit))
        .map(|e| {
            BarGroup::new(vec![
                Bar::new(e.owner / 1_000_000)
                    .text_value("")
                    .style(Style::new().fg(Color::Magenta)),
                Bar::new(e.miners / 1_000_000)
                    .text_value("")
                    .style(Style::new().fg(Color::Green)),
                Bar::new(e.validators / 1_000_000)
                    .text_value("")
                    .style(Style::new().fg(Color::Cyan)),
            ])
            .label(Line::from(format!("{}", e.epoch % 10_000)))
        })
        .collect();
    let mut bars = BarChart::grouped(groups)
        .bar_width(2)
        .bar_gap(0)
        .group_gap(2)
        .block(Block::new().borders(Borders::TOP).title(Line::from(vec![
            Span::raw(" emission per epoch (millions; epoch mod 10000): "),
            Span::styled("owner ", Style::new().fg(Color::Magenta)),
            Span::styled("miners ", Style::new().fg(Color::Green)),
            Span::styled("validators ", Style::new().fg(Color::Cyan)),
        ])));
    if let Some(max) = l
        .recent
        .iter()
        .map(|e| e.owner.max(e.miners).max(e.validators) / 1_000_000)
        .max()
    {
        bars = bars.max(max.max(1));
    }
    f.render_widget(bars, chart);
    let rows: Vec<Row> = l
        .validator_totals
        .iter()
        .map(|(v, total)| {
            let last = last.and_then(|e| e.dividends.get(v)).copied().unwrap_or(0);
            Row::new(vec![
                Cell::from(short(v)),
                Cell::from(amount(last)),
                Cell::from(amount(*total)),
            ])
        })
        .collect();
    f.render_stateful_widget(
        Table::new(
            rows,
            [
                Constraint::Length(10),
                Constraint::Length(14),
                Constraint::Length(14),
            ],
        )
        .header(Row::new(["validator", "dividends", "total"]).style(Style::new().bold()))
        .row_highlight_style(highlight())
        .highlight_symbol(MARK)
        .highlight_symbol(MARK)
        .block(
            Block::new()
                .borders(Borders::TOP)
                .title(" dividends per validator "),
        ),
        bottom,
        &mut table_state(app, Tab::Rewards),
    );
}

/// The challenges this node has seen, newest first: a validator's, else a challenger's.
pub fn challenges(s: &NodeStatus) -> Vec<&ChallengeStatus> {
    let list = match (&s.validator, &s.challenger) {
        (Some(v), _) => &v.recent_challenges,
        (None, Some(c)) => &c.recent,
        _ => return Vec::new(),
    };
    let mut v: Vec<&ChallengeStatus> = list.iter().collect();
    v.sort_by(|a, b| b.received_ms.cmp(&a.received_ms).then(a.id.cmp(&b.id)));
    v
}

fn render_challenges(app: &App, s: &NodeStatus, f: &mut Frame, area: Rect) {
    let list = challenges(s);
    let open = list.iter().filter(|c| c.status == "open").count();
    let rows: Vec<Row> = list
        .iter()
        .map(|c| {
            let st = if c.status == "open" {
                let left = c.deadline_ms.saturating_sub(s.at_ms);
                format!("open {:.1}s", left as f64 / 1e3)
            } else if c.valid == 0 {
                "no valid proof".into()
            } else {
                "closed".into()
            };
            let color = match (c.status.as_str(), c.valid) {
                ("open", _) => Color::Yellow,
                (_, 0) => Color::Red,
                _ => Color::Reset,
            };
            Row::new(vec![
                Cell::from(c.id.chars().take(8).collect::<String>()),
                Cell::from(format!("{}/{}", short(&c.model), c.segment)),
                Cell::from(age(s.at_ms.saturating_sub(c.received_ms))),
                Cell::from(format!("{}/{}", c.valid, c.proofs)),
                Cell::from(num(c.fastest_ms)),
                Cell::from(st).fg(color),
            ])
        })
        .collect();
    let title = format!(" Challenges: {} shown, {open} open ", list.len());
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Min(8),
        ],
    )
    .header(
        Row::new(["id", "model/seg", "age", "valid/all", "fastest", "status"])
            .style(Style::new().bold().underlined()),
    )
    .row_highlight_style(highlight())
    .highlight_symbol(MARK)
    .block(panel(app, title));
    f.render_stateful_widget(table, area, &mut table_state(app, Tab::Challenges));
}

fn render_peers(app: &App, s: &NodeStatus, f: &mut Frame, area: Rect) {
    let wide = area.width >= WIDE;
    let rows: Vec<Row> = s
        .peers
        .iter()
        .map(|p| {
            let score = p.gossip_score.map_or("-".into(), |x| format!("{x:.1}"));
            let color = if p.gossip_score.is_some_and(|x| x < 0.0) {
                Color::Red
            } else {
                Color::Reset
            };
            Row::new(vec![
                Cell::from(if wide {
                    p.peer_id.clone()
                } else {
                    p.peer_id
                        .chars()
                        .rev()
                        .take(10)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect()
                }),
                Cell::from(if p.roles.is_empty() {
                    "-".into()
                } else {
                    p.roles.join("+")
                }),
                Cell::from(p.address.clone()),
                Cell::from(age(s.at_ms.saturating_sub(p.connected_since_ms))),
                Cell::from(score).fg(color),
            ])
        })
        .collect();
    let title = format!(
        " Peers: {} connected, {} listening addresses ",
        s.gossip.connected_peers,
        s.gossip.listen_addrs.len()
    );
    let table = Table::new(
        rows,
        [
            Constraint::Length(if wide { 52 } else { 10 }),
            Constraint::Length(if wide { 26 } else { 17 }),
            Constraint::Min(16),
            Constraint::Length(6),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new(["peer", "roles", "address", "age", "score"])
            .style(Style::new().bold().underlined()),
    )
    .row_highlight_style(highlight())
    .highlight_symbol(MARK)
    .block(panel(app, title));
    f.render_stateful_widget(table, area, &mut table_state(app, Tab::Peers));
}

/// Disputes, newest first: open ones with their round, clock and the cut range left;
/// finished ones with the segment, the verdict and what was slashed.
fn render_disputes(app: &App, s: &NodeStatus, f: &mut Frame, area: Rect) {
    let Some(c) = &s.court else {
        let p = Paragraph::new("this node keeps no court (no genesis)")
            .block(panel(app, " Disputes ".to_string()));
        f.render_widget(p, area);
        return;
    };
    let wide = area.width >= WIDE;
    let rows: Vec<Row> = c
        .disputes
        .iter()
        .map(|d| {
            let open = d.final_verdict.is_none() && d.stage != "abandoned";
            let clock = match d.deadline_ms {
                Some(t) if open => format!("{:.1}s", t.saturating_sub(s.at_ms) as f64 / 1e3),
                _ => "-".into(),
            };
            let range = if open && d.hi > d.lo {
                format!("{}..{}", d.lo, d.hi)
            } else {
                "-".into()
            };
            let verdict = d
                .final_verdict
                .clone()
                .or_else(|| d.verdict.clone().map(|v| format!("{v} (not final)")))
                .unwrap_or_else(|| "-".into());
            let color = match d.final_verdict.as_deref() {
                Some("claimant_wrong") | Some("timeout_claimant") | Some("both_wrong") => {
                    Color::Red
                }
                Some(_) => Color::Green,
                None => Color::Yellow,
            };
            let mut cells = vec![Cell::from(short(&d.claim))];
            if wide {
                cells.push(Cell::from(short(&d.claimant)));
                cells.push(Cell::from(short(&d.challenger)));
            }
            cells.extend([
                Cell::from(d.stage.clone()),
                Cell::from(range),
                Cell::from(clock),
                Cell::from(d.segment.map_or("-".into(), |k| k.to_string())),
                Cell::from(verdict).fg(color),
                Cell::from(d.slashed.to_string()),
                Cell::from(d.ms_to_verdict.map_or("-".into(), |ms| format!("{ms}"))),
            ]);
            Row::new(cells)
        })
        .collect();
    let title = format!(
        " Disputes: {} open, {} shown; claims {} open of {}; burned {}{} ",
        c.disputes_open,
        c.disputes.len(),
        c.claims_open,
        c.claims_total,
        c.burned,
        c.balance
            .map_or(String::new(), |b| format!("; balance {b}"))
    );
    let mut widths = vec![Constraint::Length(9)];
    let mut header = vec!["claim"];
    if wide {
        widths.extend([Constraint::Length(10), Constraint::Length(10)]);
        header.extend(["claimant", "challenger"]);
    }
    widths.extend([
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Min(14),
        Constraint::Length(7),
        Constraint::Length(6),
    ]);
    header.extend([
        "stage",
        "cuts left",
        "clock",
        "segment",
        "verdict",
        "slashed",
        "ms",
    ]);
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().bold().underlined()))
        .row_highlight_style(highlight())
        .highlight_symbol(MARK)
        .block(panel(app, title));
    f.render_stateful_widget(table, area, &mut table_state(app, Tab::Disputes));
}

/// Warnings from the node's log and messages its gossip layer refused, newest first.
pub fn log_lines(s: &NodeStatus) -> Vec<LogLine> {
    let mut v: Vec<LogLine> = s.log.clone();
    v.extend(s.gossip.recent_rejections.iter().map(|r| LogLine {
        at_ms: r.at_ms,
        level: "REJECT".into(),
        target: r.topic.clone(),
        message: format!("{} from {}: {}", r.reason, short_peer(&r.peer), r.detail),
    }));
    v.sort_by_key(|l| std::cmp::Reverse(l.at_ms));
    v
}

fn render_log(app: &App, s: &NodeStatus, f: &mut Frame, area: Rect) {
    let lines = log_lines(s);
    let counts: Vec<String> = s
        .gossip
        .received
        .rejected
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let title = format!(
        " Log: warnings and rejections ({}) ",
        if counts.is_empty() {
            "none rejected".to_string()
        } else {
            format!("rejected: {}", counts.join(", "))
        }
    );
    let rows: Vec<Row> = lines
        .iter()
        .map(|l| {
            let color = match l.level.as_str() {
                "ERROR" => Color::Red,
                "WARN" => Color::Yellow,
                _ => Color::Magenta,
            };
            Row::new(vec![
                Cell::from(age(s.at_ms.saturating_sub(l.at_ms))),
                Cell::from(l.level.clone()).fg(color),
                Cell::from(l.target.clone()),
                Cell::from(l.message.clone()),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(12),
            Constraint::Min(20),
        ],
    )
    .header(Row::new(["age", "level", "where", "what"]).style(Style::new().bold().underlined()))
    .row_highlight_style(highlight())
    .highlight_symbol(MARK)
    .block(panel(app, title));
    f.render_stateful_widget(table, area, &mut table_state(app, Tab::Log));
}

fn render_help(f: &mut Frame) {
    let full = f.area();
    let (w, h) = (70.min(full.width), 13.min(full.height));
    let area = Rect::new(
        full.x + (full.width - w) / 2,
        full.y + (full.height - h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, area);
    let text = vec![
        Line::from("Tab / Shift-Tab, ←→ h l   switch tab (or its number, 1-5)"),
        Line::from("↑↓ j k, g G               move the selection"),
        Line::from("s / S                     sort rankings: next column / reverse"),
        Line::from("Enter / Esc               open / close a miner's detail"),
        Line::from("n / p                     next / previous node (devnet)"),
        Line::from("?                         this help"),
        Line::from("q, Ctrl-C                 quit"),
        Line::from(""),
        Line::from("Weights are of 65535 shown as 0-1; rewards in emission units."),
    ];
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" Keys (? or Esc closes) ")),
        area,
    );
}

/// A `pct_x` by `pct_y` rectangle in the middle of `r`.
fn centered(r: Rect, pct_x: u16, pct_y: u16) -> Rect {
    let [_, v, _] = Layout::vertical([
        Constraint::Percentage((100 - pct_y) / 2),
        Constraint::Percentage(pct_y),
        Constraint::Percentage((100 - pct_y) / 2),
    ])
    .areas(r);
    let [_, h, _] = Layout::horizontal([
        Constraint::Percentage((100 - pct_x) / 2),
        Constraint::Percentage(pct_x),
        Constraint::Percentage((100 - pct_x) / 2),
    ])
    .areas(v);
    h
}

/// The last `width` samples as block characters scaled to their own range.
pub fn sparkline(samples: impl Iterator<Item = f64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let v: Vec<f64> = samples.collect();
    let v = &v[v.len().saturating_sub(width)..];
    let hi = v.iter().copied().fold(0.0_f64, f64::max);
    if hi <= 0.0 {
        return "▁".repeat(v.len());
    }
    v.iter()
        .map(|x| BARS[((x / hi) * 7.0).round().clamp(0.0, 7.0) as usize])
        .collect()
}

/// First 8 hex characters of a key.
fn short(hex: &str) -> String {
    hex.chars().take(8).collect()
}

/// The distinguishing tail of a libp2p peer id.
fn short_peer(id: &str) -> String {
    let n = id.chars().count();
    id.chars().skip(n.saturating_sub(8)).collect()
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.0}"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1} ms"))
}

fn age(ms: u64) -> String {
    match ms {
        0..=59_999 => format!("{}s", ms / 1000),
        60_000..=3_599_999 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

/// An emission amount, with a unit suffix so columns stay narrow.
fn amount(x: u64) -> String {
    match x {
        0..=9_999 => x.to_string(),
        10_000..=9_999_999 => format!("{:.1}k", x as f64 / 1e3),
        10_000_000..=999_999_999 => format!("{:.1}M", x as f64 / 1e6),
        _ => format!("{:.2}G", x as f64 / 1e9),
    }
}
