//! Keys to actions, and actions to [`App`] state. Nothing here draws.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::app::{App, SortKey, Tab};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    NextTab,
    PrevTab,
    /// Jump to the tab numbered in the tab bar (0-based here).
    GoTo(usize),
    Up,
    Down,
    Top,
    Bottom,
    NextSort,
    ReverseSort,
    Open,
    Close,
    Help,
    NextNode,
    PrevNode,
    Quit,
}

/// The action a key press means, if any.
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Tab => Action::NextTab,
        KeyCode::Char(c @ '1'..='5') => Action::GoTo(c as usize - '1' as usize),
        KeyCode::BackTab => Action::PrevTab,
        KeyCode::Right | KeyCode::Char('l') => Action::NextTab,
        KeyCode::Left | KeyCode::Char('h') => Action::PrevTab,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Home | KeyCode::Char('g') => Action::Top,
        KeyCode::End | KeyCode::Char('G') => Action::Bottom,
        KeyCode::Char('s') => Action::NextSort,
        KeyCode::Char('S') => Action::ReverseSort,
        KeyCode::Enter => Action::Open,
        KeyCode::Esc => Action::Close,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('n') => Action::NextNode,
        KeyCode::Char('p') => Action::PrevNode,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}

impl App {
    pub fn on_key(&mut self, key: KeyEvent) {
        if let Some(a) = action(key) {
            self.apply(a);
        }
    }

    pub fn apply(&mut self, a: Action) {
        // An open overlay takes the keys that would otherwise move under it.
        if self.help {
            match a {
                Action::Quit => self.quit = true,
                Action::Help | Action::Close | Action::Open => self.help = false,
                _ => {}
            }
            return;
        }
        let n = Tab::ALL.len();
        let row = self.tab.index();
        match a {
            Action::Quit => self.quit = true,
            Action::Help => self.help = true,
            Action::NextTab => {
                self.tab = Tab::ALL[(row + 1) % n];
                self.detail = false;
            }
            Action::GoTo(i) => {
                self.tab = Tab::ALL[i.min(n - 1)];
                self.detail = false;
            }
            Action::PrevTab => {
                self.tab = Tab::ALL[(row + n - 1) % n];
                self.detail = false;
            }
            Action::Up => self.selected[row] = self.selected[row].saturating_sub(1),
            Action::Down => self.selected[row] += 1,
            Action::Top => self.selected[row] = 0,
            Action::Bottom => self.selected[row] = usize::MAX,
            Action::NextSort if self.tab == Tab::Rankings => {
                let i = SortKey::ALL.iter().position(|k| *k == self.sort);
                self.sort = SortKey::ALL[(i.expect("listed") + 1) % SortKey::ALL.len()];
                self.reversed = false;
            }
            Action::ReverseSort if self.tab == Tab::Rankings => self.reversed = !self.reversed,
            Action::NextSort | Action::ReverseSort => {}
            Action::Open => self.detail = self.tab == Tab::Rankings,
            Action::Close => self.detail = false,
            Action::NextNode | Action::PrevNode => {
                let k = self.sources.len();
                self.current = if a == Action::NextNode {
                    (self.current + 1) % k
                } else {
                    (self.current + k - 1) % k
                };
                self.detail = false;
            }
        }
        self.clamp_selection();
    }
}
