//! Versioned gossip topics: `/provnet/<netuid>/<name>/<version>`. The netuid in the name
//! keeps separate networks apart even when their nodes meet.

use crate::envelope::Kind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Challenge,
    Proof,
    Weights,
    Announce,
    Dispute,
    Ceremony,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::Challenge,
        Topic::Proof,
        Topic::Weights,
        Topic::Announce,
        Topic::Dispute,
        Topic::Ceremony,
    ];

    fn parts(self) -> (&'static str, u32) {
        match self {
            Topic::Challenge => ("challenge", 1),
            Topic::Proof => ("proof", 1),
            Topic::Weights => ("weights", 1),
            Topic::Announce => ("announce", 1),
            Topic::Dispute => ("dispute", 1),
            Topic::Ceremony => ("ceremony", 1),
        }
    }

    /// The topic string on network `netuid`.
    pub fn name(self, netuid: u16) -> String {
        let (name, version) = self.parts();
        format!("/provnet/{netuid}/{name}/{version}")
    }

    /// Reads a topic string back; `None` for anything this build does not speak.
    pub fn parse(s: &str) -> Option<(u16, Topic)> {
        let mut it = s.strip_prefix("/provnet/")?.split('/');
        let netuid = it.next()?.parse().ok()?;
        let (name, version) = (it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        let topic = Topic::ALL
            .into_iter()
            .find(|t| t.parts().0 == name && t.parts().1.to_string() == version)?;
        Some((netuid, topic))
    }

    /// The topic a kind travels on.
    pub fn of(kind: Kind) -> Topic {
        match kind {
            Kind::Challenge => Topic::Challenge,
            Kind::ProofSubmission => Topic::Proof,
            Kind::WeightsCommit | Kind::WeightsReveal => Topic::Weights,
            // Registrations say who a node is, like announcements.
            Kind::Announce | Kind::Register => Topic::Announce,
            Kind::Claim | Kind::DisputeOpen | Kind::DisputeReveal | Kind::Attestation => {
                Topic::Dispute
            }
            Kind::Ceremony => Topic::Ceremony,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.parts().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_names_do_not_parse() {
        for t in Topic::ALL {
            assert_eq!(Topic::parse(&t.name(7)), Some((7, t)));
        }
        assert_eq!(Topic::parse("/provnet/7/challenge/2"), None);
        assert_eq!(Topic::parse("/provnet/x/challenge/1"), None);
        assert_eq!(Topic::parse("/provnet/7/challenge/1/extra"), None);
        assert_eq!(Topic::parse("/other/7/challenge/1"), None);
    }
}
