//! The repository's fixtures (`tests/fixtures/`), found from this crate's own directory, so that
//! no test builds their paths by hand.

use std::path::{Path, PathBuf};

/// The repository's root (the workspace's directory, this crate's parent).
#[must_use]
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// `tests/fixtures/`.
#[must_use]
pub fn root() -> PathBuf {
    repo().join("tests/fixtures")
}

/// The fixture environments root, `tests/fixtures/commcare-cloud/environments/` (an
/// `--environments` directory).
#[must_use]
pub fn environments() -> PathBuf {
    root().join("commcare-cloud/environments")
}

/// The directory of the fixture environment `name` (`environments()/<name>`).
#[must_use]
pub fn environment(name: &str) -> PathBuf {
    environments().join(name)
}

/// What commcare-cloud writes for the fixture environments, as `tests/golden/regenerate` records
/// it: `tests/fixtures/golden/`, one directory per environment.
#[must_use]
pub fn golden_root() -> PathBuf {
    root().join("golden")
}

/// The golden files of the fixture environment `env`: `tests/fixtures/golden/<env>/`.
#[must_use]
pub fn golden(env: &str) -> PathBuf {
    golden_root().join(env)
}

/// Ansible vault files and their password: `tests/fixtures/ansible-vault/`.
#[must_use]
pub fn ansible_vault() -> PathBuf {
    root().join("ansible-vault")
}

/// A test-only CA (`ca.pem`) and a certificate for `localhost` and 127.0.0.1 (`server.pem`,
/// `server.key`): `tests/fixtures/tls/`.
#[must_use]
pub fn tls() -> PathBuf {
    root().join("tls")
}
