//! provnet's operator TUI.
pub mod app;
pub mod client;
pub mod input;
pub mod term;
pub mod ui;

pub use app::{App, Conn, Feed, SortKey, Tab};
pub use term::{run, Options, Target};
