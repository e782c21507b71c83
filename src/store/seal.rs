//! The store's keys (docs/personal-data.md): the key that seals every stored dossier body
//! (`store.key_file`), and the key of the digests that replace personal fields once a dossier
//! no longer needs them. Neither is ever in the database: a copied file, a backup or a replica
//! carries ciphertext and digests that cannot be brute-forced without them.
//!
//! Both come from one secret: the key file's bytes (at least 32 of them, e.g.
//! `head -c 32 /dev/urandom`) are the HMAC-SHA256 key from which a sealing key, a digest key
//! and the key's public id are derived, each under its own label. Without a key file the digest
//! key is a random 32 bytes kept beside the database (`<database>.digest-key`, 0600).
//!
//! Sealing is XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): an authenticated cipher with
//! a 24-byte nonce, drawn at random for every body, long enough that random nonces never repeat
//! in practice; no hardware support needed (AES-GCM without AES-NI is slow and leaks timing).

use std::path::{Path, PathBuf};

use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit as _, Payload},
};
use hmac::{Hmac, KeyInit as _, Mac};
use sha2::Sha256;

/// Bytes a key file must hold at least.
pub const MIN_KEY_BYTES: usize = 32;
/// Bytes of the key's id carried by every sealed body, to pick the key that opens it.
pub(crate) const TAG_BYTES: usize = 4;
pub(crate) const NONCE_BYTES: usize = 24;
use crate::{
    domain::personal::{DIGEST_PREFIX, Digester},
    i18n::{Lang, Message},
};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("store.key_file: {}", .0.write(Lang::En))]
    File(Message),
    #[error(
        "store.key_file: {path} holds {len} bytes; a key is at least {MIN_KEY_BYTES} random bytes (head -c 32 /dev/urandom > FILE)"
    )]
    TooShort { path: PathBuf, len: usize },
    #[error("the digest key beside the database, {path}: {reason}")]
    DigestFile { path: PathBuf, reason: String },
}

impl KeyError {
    /// The problem as a message for the reader (without the key's name, which the
    /// configuration's report puts before it).
    pub(crate) fn message(&self) -> Message {
        match self {
            KeyError::File(m) => m.clone(),
            KeyError::TooShort { path, len } => Message::new("cfg-key-short")
                .text("path", path.display().to_string())
                .int("len", *len)
                .int("min", MIN_KEY_BYTES),
            KeyError::DigestFile { path, reason } => Message::new("cfg-digest-key")
                .text("path", path.display().to_string())
                .text("detail", reason.as_str()),
        }
    }
}

fn derive(secret: &[u8], label: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One sealing key: the cipher, and the id that names it (public: derived one-way).
#[derive(Clone)]
pub struct SealKey {
    cipher: XChaCha20Poly1305,
    id: [u8; 8],
    digest: DigestKey,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.id())
    }
}

impl SealKey {
    /// The key a key file holds (mode 0600 or stricter, at least [`MIN_KEY_BYTES`]).
    pub fn from_file(path: &Path) -> Result<SealKey, KeyError> {
        let secret = crate::secret::read_bytes(path).map_err(KeyError::File)?;
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort { path: path.to_path_buf(), len: secret.len() });
        }
        Ok(SealKey::from_secret(&secret))
    }

    pub(crate) fn from_secret(secret: &[u8]) -> SealKey {
        let cipher = XChaCha20Poly1305::new(&derive(secret, "dvc-sync seal v1").into());
        let id = derive(secret, "dvc-sync key id v1");
        SealKey {
            cipher,
            id: id[..8].try_into().unwrap_or_default(),
            digest: DigestKey::from_secret(&derive(secret, "dvc-sync digest v1")),
        }
    }

    /// The key's public id, as the database records the keys its bodies are sealed with.
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    pub(crate) fn tag(&self) -> [u8; TAG_BYTES] {
        [self.id[0], self.id[1], self.id[2], self.id[3]]
    }

    /// The digest key derived from this key.
    pub(crate) fn digest_key(&self) -> &DigestKey {
        &self.digest
    }

    /// `nonce ‖ ciphertext` of `plain`, bound to `header` (authenticated, not encrypted).
    pub(crate) fn seal(&self, header: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad: header })
            .map_err(|_| "the body could not be sealed".to_owned())?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plain bytes of `nonce ‖ ciphertext`, if this key sealed them under `header`.
    pub(crate) fn open(&self, header: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_BYTES)?;
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
        self.cipher.decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: header }).ok()
    }
}

/// The key of the digests that replace personal values: HMAC-SHA256, 16 bytes kept.
#[derive(Clone)]
pub struct DigestKey {
    key: [u8; 32],
    tag: String,
}

impl DigestKey {
    fn from_secret(key: &[u8; 32]) -> DigestKey {
        let tag = hex(&derive(key, "dvc-sync digest tag v1")[..4]);
        DigestKey { key: *key, tag }
    }

    /// The digest key kept beside the database when no key file is set: created (random, 0600)
    /// the first time it is needed.
    pub fn beside(database: &Path) -> Result<DigestKey, KeyError> {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut name = database.as_os_str().to_owned();
        name.push(".digest-key");
        let path = PathBuf::from(name);
        let fail = |reason: String| KeyError::DigestFile { path: path.clone(), reason };
        if !path.exists() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| fail(e.to_string()))?;
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(mut file) => {
                    file.write_all(&key).and_then(|_| file.sync_all()).map_err(|e| fail(e.to_string()))?;
                }
                // Another process made it first: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        let secret = crate::secret::read_bytes(&path).map_err(|m| fail(m.write(Lang::En)))?;
        if secret.len() < MIN_KEY_BYTES {
            return Err(fail(format!("{} bytes; remove it to have a new one made", secret.len())));
        }
        Ok(DigestKey::from_secret(&derive(&secret, "dvc-sync digest v1")))
    }
}

/// A digest in a stored payload: the prefix, the key's tag, and 16 bytes of HMAC-SHA256, in hex.
impl Digester for DigestKey {
    /// The digest of a personal value, by meaning: the text as the audit compares it (NFC,
    /// whitespace runs as one space, trimmed).
    fn digest(&self, meaning: &str) -> String {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(meaning.as_bytes());
        let out = mac.finalize().into_bytes();
        format!("{DIGEST_PREFIX}{}:{}", self.tag, hex(&out[..16]))
    }

    /// Whether `stored` is a digest made with this key (false for another key's: it cannot be
    /// compared, and is not).
    fn made(&self, stored: &str) -> bool {
        stored.strip_prefix(DIGEST_PREFIX).is_some_and(|rest| rest.starts_with(&self.tag))
    }
}

/// What the store opens its bodies with: the key new bodies are sealed with, the keys older
/// ones may be sealed with (a rotation under way), and the digest key.
#[derive(Clone, Default)]
pub struct Keys {
    pub sealing: Option<SealKey>,
    pub previous: Vec<SealKey>,
    /// None: made beside the database when first needed.
    pub digest: Option<DigestKey>,
}

impl Keys {
    /// The keys of a configuration: the digest key is the sealing key's when there is one.
    pub fn new(sealing: Option<SealKey>, previous: Option<SealKey>) -> Keys {
        let digest = sealing.as_ref().map(|k| k.digest_key().clone());
        Keys { sealing, previous: previous.into_iter().collect(), digest }
    }

    /// The key whose tag a sealed body carries.
    pub(crate) fn by_tag(&self, tag: &[u8]) -> Option<&SealKey> {
        self.sealing.iter().chain(&self.previous).find(|k| k.tag() == tag)
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&SealKey> {
        self.sealing.iter().chain(&self.previous).find(|k| k.id() == id)
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("sealing", &self.sealing).field("previous", &self.previous).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_opens_only_with_its_key_and_its_header() {
        let key = SealKey::from_secret(&[7; 32]);
        let other = SealKey::from_secret(&[8; 32]);
        let sealed = key.seal(b"head", b"Nguyen Van An").unwrap();
        assert_eq!(key.open(b"head", &sealed).as_deref(), Some(&b"Nguyen Van An"[..]));
        assert_eq!(other.open(b"head", &sealed), None, "another key");
        assert_eq!(key.open(b"hea?", &sealed), None, "another header");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(b"head", &flipped), None, "a flipped bit");
        assert_eq!(key.open(b"head", &sealed[..10]), None, "cut short");
        assert_ne!(key.seal(b"head", b"x").unwrap(), key.seal(b"head", b"x").unwrap(), "a nonce each");
        assert_ne!(key.id(), other.id());
    }

    #[test]
    fn digests_are_keyed_and_say_which_key_made_them() {
        let a = SealKey::from_secret(&[1; 32]).digest_key().clone();
        let b = SealKey::from_secret(&[2; 32]).digest_key().clone();
        let d = a.digest("079123456789");
        assert!(crate::domain::personal::is_digest(&d) && a.made(&d) && !b.made(&d), "{d}");
        assert_eq!(d, a.digest("079123456789"));
        assert_ne!(d, b.digest("079123456789"));
        assert!(!d.contains("079123456789"));
    }

    #[test]
    fn a_key_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, [9u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(SealKey::from_file(&path).unwrap_err().to_string().contains("readable by group or others"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(SealKey::from_file(&path).unwrap().id(), SealKey::from_secret(&[9; 32]).id());
        std::fs::write(&path, b"short").unwrap();
        assert!(SealKey::from_file(&path).unwrap_err().to_string().contains("at least 32"));
        assert!(
            SealKey::from_file(&dir.path().join("none")).unwrap_err().to_string().contains("store.key_file")
        );
    }

    #[test]
    fn the_digest_key_beside_the_database_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let a = DigestKey::beside(&db).unwrap();
        let b = DigestKey::beside(&db).unwrap();
        assert_eq!(a.digest("x"), b.digest("x"));
        let mode = std::fs::metadata(dir.path().join("s.db.digest-key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
