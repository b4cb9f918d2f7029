//! The interactive loop: feed threads in, keys in, a frame out, until `q`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratatui::crossterm::event::{self, Event};

use crate::app::App;
use crate::{client, ui};

pub struct Options {
    /// How often each node is polled.
    pub refresh: Duration,
    /// Leave on our own at this instant (the devnet's end), if set.
    pub until: Option<Instant>,
}

/// One node to watch: what to call it, and its admin endpoint (`host:port`).
pub struct Target {
    pub label: String,
    pub addr: String,
}

/// Runs the TUI on the terminal until the operator quits (or `until` passes). The terminal
/// is restored on every exit path, panics included.
pub fn run(targets: Vec<Target>, opts: Options) -> std::io::Result<()> {
    if targets.is_empty() {
        return Err(std::io::Error::other("no node to watch"));
    }
    // Bounded: a feed thread that gets ahead of the screen waits for it.
    let (tx, rx) = mpsc::sync_channel(64);
    let stop = Arc::new(AtomicBool::new(false));
    let feeds = client::spawn_feeds(
        targets.iter().map(|t| t.addr.clone()).collect(),
        opts.refresh,
        tx,
        stop.clone(),
    );
    let mut app = App::new(targets.into_iter().map(|t| t.label).collect());
    let result = ratatui::try_init().and_then(|mut terminal| loop {
        app.now_ms = now_ms();
        while let Ok((i, feed)) = rx.try_recv() {
            app.on_feed(i, feed, app.now_ms);
        }
        terminal.draw(|f| ui::render(&app, f))?;
        if app.quit || opts.until.is_some_and(|u| Instant::now() >= u) {
            return Ok(());
        }
        if event::poll(Duration::from_millis(200))? {
            if let Event::Key(k) = event::read()? {
                app.on_key(k);
            }
        }
    });
    ratatui::restore();
    stop.store(true, Ordering::Relaxed);
    for f in feeds {
        let _ = f.join();
    }
    result
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
