//! The node's latest warnings and errors, kept in memory for its status (the TUI's Log tab).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use provnet_wire::status::LogLine;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept.
const KEEP: usize = 200;

/// A bounded buffer of WARN and ERROR events.
#[derive(Default)]
pub struct LogRing {
    lines: Mutex<VecDeque<LogLine>>,
}

impl LogRing {
    /// The process-wide ring the tracing layer feeds.
    pub fn global() -> Arc<LogRing> {
        static RING: OnceLock<Arc<LogRing>> = OnceLock::new();
        RING.get_or_init(Default::default).clone()
    }

    pub fn push(&self, line: LogLine) {
        let mut l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == KEEP {
            l.pop_front();
        }
        l.push_back(line);
    }

    /// The newest `n`, newest last.
    pub fn recent(&self, n: usize) -> Vec<LogLine> {
        let l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        l.iter().skip(l.len().saturating_sub(n)).cloned().collect()
    }
}

/// A tracing layer that copies WARN and ERROR events into a [`LogRing`].
pub struct RingLayer(pub Arc<LogRing>);

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut v = Fields::default();
        event.record(&mut v);
        let mut message = v.message;
        if !v.rest.is_empty() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(&v.rest);
        }
        self.0.push(LogLine {
            at_ms: provnet_wire::unix_ms(std::time::SystemTime::now()),
            level: level.as_str().to_string(),
            target: event.metadata().target().to_string(),
            message,
        });
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.rest.is_empty() {
                self.rest.push(' ');
            }
            let _ = write!(self.rest, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            if !self.rest.is_empty() {
                self.rest.push(' ');
            }
            let _ = write!(self.rest, "{}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn warnings_and_errors_are_kept_and_the_ring_is_bounded() {
        let ring = Arc::new(LogRing::default());
        let sub = tracing_subscriber::registry().with(RingLayer(ring.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::info!("not kept");
            tracing::warn!(target: "validator", peer = "p1", "bad proof");
            for i in 0..KEEP + 5 {
                tracing::error!(n = i, "flood");
            }
        });
        let all = ring.recent(usize::MAX);
        assert_eq!(all.len(), KEEP);
        assert_eq!(
            all.last().expect("some").message,
            format!("flood n={}", KEEP + 4)
        );
        assert!(all.iter().all(|l| l.message != "not kept"));
        let ring = Arc::new(LogRing::default());
        let sub = tracing_subscriber::registry().with(RingLayer(ring.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(target: "validator", peer = "p1", "bad proof");
        });
        let l = &ring.recent(1)[0];
        assert_eq!(
            (l.level.as_str(), l.target.as_str(), l.message.as_str()),
            ("WARN", "validator", "bad proof peer=p1")
        );
    }
}
