//! API key material: generation, hashing and the first-start bootstrap (spec §1.2, §16.2).
//!
//! Only the SHA-256 of a key is stored. Keys carry 238 bits of randomness, so a fast hash is
//! enough: there is nothing to brute-force that a slow hash would protect.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use paddock_protocol::ids::{new_api_key, new_id, prefix};
use paddock_protocol::scope;
use paddock_protocol::time::now_unix;
use paddock_store::{KeyRecord, Store, StoreError};
use sha2::{Digest, Sha256};

/// Characters of the key shown as its `prefix` (`pdk_` + 4).
const PREFIX_LEN: usize = 8;

/// The stored hash of a key's text.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A freshly made key: its record (to store) and its text (to show once).
pub struct NewKey {
    pub record: KeyRecord,
    pub text: String,
}

/// Makes a new key for `account_id` with `scopes`.
pub fn make_key(
    account_id: &str,
    name: &str,
    scopes: Vec<String>,
    expires_at: Option<i64>,
) -> NewKey {
    let text = new_api_key();
    let record = KeyRecord {
        id: new_id(prefix::KEY),
        account_id: account_id.to_owned(),
        name: name.to_owned(),
        prefix: text[..PREFIX_LEN].to_owned(),
        hash: hash_key(&text),
        scopes,
        created_at: now_unix(),
        last_used_at: None,
        expires_at,
        revoked_at: None,
    };
    NewKey { record, text }
}

/// On an empty database: creates the `default` account and an `admin` key, writes the key to
/// `admin_key_path` (mode 0600) and returns its text. Returns `None` when the database already
/// has accounts.
pub async fn bootstrap(
    store: &dyn Store,
    admin_key_path: &Path,
) -> Result<Option<String>, BootstrapError> {
    let Some(account) = store
        .bootstrap_default_account(&new_id(prefix::ACCOUNT), now_unix())
        .await?
    else {
        return Ok(None);
    };
    let key = make_key(&account.id, "admin", vec![scope::ADMIN.to_owned()], None);
    write_secret_file(admin_key_path, &format!("{}\n", key.text))?;
    store.create_key(&key.record).await?;
    Ok(Some(key.text))
}

/// Why the first-start bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not write the admin key file: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `contents` to `path`, readable and writable by the owner only.
pub fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::fs::OpenOptions;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
