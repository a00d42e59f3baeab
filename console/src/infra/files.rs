//! Files in the console's data directory: private (0700/0600) directory and files
//! written atomically, and the well-known paths (signing key, admin token, URL).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use zmesh_shared::SigningKey;

pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes a file readable by the owner only (created 0600, never briefly wider).
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

pub fn signing_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("signing.key")
}
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}
pub fn console_url_path(data_dir: &Path) -> PathBuf {
    data_dir.join("console.url")
}

/// Loads DATA_DIR/signing.key, creating it on first start.
pub fn load_or_create_signing_key(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = signing_key_path(data_dir);
    if path.exists() {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return SigningKey::from_base64(text.trim())
            .with_context(|| format!("{} is not a signing key", path.display()));
    }
    let key = SigningKey::generate();
    write_private_file(&path, format!("{}\n", key.to_base64()).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), public = %key.public_key(), "generated peer-map signing key");
    Ok(key)
}
