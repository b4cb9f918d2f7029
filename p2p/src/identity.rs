//! One key, two names: the node's ed25519 signing key is also its libp2p identity, so a
//! PeerId and a hotkey name the same node.

use ed25519_dalek::SigningKey;
use libp2p::identity::{ed25519, Keypair, PublicKey};
use libp2p::PeerId;

/// The libp2p keypair for the node's ed25519 key.
pub fn keypair(key: &SigningKey) -> Keypair {
    let mut secret = key.to_bytes();
    Keypair::ed25519_from_bytes(&mut secret).expect("32 bytes is a valid ed25519 secret")
}

/// The PeerId of an ed25519 public key (hotkey); `None` when the bytes are no valid key.
pub fn peer_id(public_key: &[u8; 32]) -> Option<PeerId> {
    let pk = ed25519::PublicKey::try_from_bytes(public_key).ok()?;
    Some(PublicKey::from(pk).to_peer_id())
}

/// The ed25519 public key inside a PeerId, when it has one inline.
pub fn public_key(peer: &PeerId) -> Option<[u8; 32]> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None; // not an identity multihash
    }
    let pk = PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    Some(pk.try_into_ed25519().ok()?.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_and_hotkey_name_the_same_node() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let from_keypair = keypair(&key).public().to_peer_id();
        let hotkey = key.verifying_key().to_bytes();
        assert_eq!(peer_id(&hotkey), Some(from_keypair));
        assert_eq!(public_key(&from_keypair), Some(hotkey));
    }
}
