//! The node's ed25519 identity key file: 64 hex characters, mode 0600.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;

/// Creates a new key file (never overwrites unless `force`); returns the key.
pub fn generate(path: &Path, force: bool) -> Result<SigningKey> {
    if path.exists() && !force {
        bail!(
            "{} already exists: refusing to overwrite a key (pass --force to replace it)",
            path.display()
        );
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".keygen-{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        writeln!(f, "{}", hex::encode(key.to_bytes()))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing key file {}", path.display()));
    }
    Ok(key)
}

/// Reads a key file written by [`generate`].
pub fn load(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading key file {} (make one with `provnet keygen --out FILE`)",
            path.display()
        )
    })?;
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| {
            format!(
                "{}: not an ed25519 secret key (64 hex characters)",
                path.display()
            )
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Parses 64 hex characters into 32 bytes.
pub fn hex32(what: &str, s: &str) -> Result<[u8; 32]> {
    hex::decode(s.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("{what} must be 64 hex characters (32 bytes), got '{s}'"))
}
