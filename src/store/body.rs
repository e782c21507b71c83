//! How dossier bodies (the national payload and its history, JSON) are kept: compressed with
//! zstd, with a dictionary trained on the province's own first dossiers once there are enough
//! of them. The JSON of one dossier repeats the same keys, agencies, procedures, officers and
//! texts as every other one, which a dictionary holds once: a body of ~3.6 KB is kept in ~0.3
//! KB (docs/BENCHMARKS.md, "Database size").
//!
//! The SQL stays readable: every connection the daemon opens has two functions,
//! `body_pack(text)` (what to store) and `body_text(column)` (what was stored, as text), and
//! bodies written as plain text by earlier versions are read as they are. A dictionary is
//! never replaced or removed: the bodies compressed with it name it.
//!
//! A packed body: `[1][dictionary: u8, 0 for none][length of the text: u32 LE][zstd frame]`.
//! Sealed under `store.key_file` (`store::seal`), after compression:
//! `[2][dictionary][the key's tag: 4 bytes][nonce: 24][XChaCha20-Poly1305 of (length ‖ frame)]`,
//! the first six bytes authenticated with it. A dictionary is trained from bodies with their
//! personal fields blanked (it holds the province's agencies and procedures, not its people),
//! and is sealed too when there is a key.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rusqlite::{Connection, OptionalExtension, functions::FunctionFlags, types::ValueRef};
use zstd::bulk::{Compressor, Decompressor};

use super::seal::{Keys, SealKey, hex};

/// The compression level: zstd's default, which with a dictionary costs a few microseconds
/// per body (higher levels save ~15 % more for several times the CPU).
const LEVEL: i32 = 3;
/// Bodies (payloads and histories) in the database before a dictionary is trained from them.
pub(crate) const TRAIN_AFTER: i64 = 2_000;
/// Bodies sampled for the training (half payloads, half histories), and the dictionary's size.
/// 2,000 samples train as good a dictionary as 4,000 (179.6 and 179.5 bytes a body on 6,000
/// others of the simulator's; 1,000: 178.4) in half the memory.
const TRAIN_SAMPLES: i64 = 2_000;
const DICTIONARY_BYTES: usize = 64 * 1024;
const FORMAT: u8 = 1;
const SEALED: u8 = 2;
const HEADER: usize = 6;
/// A body longer than this is refused rather than allocated on the word of a corrupt header.
const MAX_TEXT: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("a body of {0} bytes is more than can be kept")]
    TooLarge(usize),
    #[error("a stored dossier body is damaged: {0}")]
    Damaged(String),
    #[error("a stored dossier body names dictionary {0}, which this database does not have")]
    NoDictionary(u8),
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
    #[error(
        "a stored dossier body is sealed with key {0}, which is not loaded: set store.key_file (or store.previous_key_file) to its key"
    )]
    NoKey(String),
    #[error(
        "a stored dossier body does not open with the key that should: it was altered, or the key file was"
    )]
    WrongKey,
    #[error("{0}")]
    Seal(String),
}

struct Inner {
    /// The dictionary new bodies are compressed with (0: none) and its compressor.
    current: u8,
    compressor: Compressor<'static>,
    decompressors: HashMap<u8, Decompressor<'static>>,
    /// A training failed: not tried again by this process.
    gave_up: bool,
}

pub(crate) fn fail(e: BodyError) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(e))
}

/// One database's compression state: its dictionaries, and the contexts that use them; and
/// the keys bodies are sealed with.
pub(crate) struct Codec {
    inner: Mutex<Inner>,
    keys: Keys,
}

/// `[SEALED][dictionary][key tag]` ‖ nonce ‖ ciphertext of `plain`, the header authenticated:
/// the one sealed form, of bodies and of dictionaries (0 for their "dictionary").
fn seal(key: &SealKey, dictionary: u8, plain: &[u8]) -> Result<Vec<u8>, BodyError> {
    let mut out = vec![SEALED, dictionary];
    out.extend_from_slice(&key.tag());
    let sealed = key.seal(&out, plain).map_err(BodyError::Seal)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The plain bytes of a [`seal`]ed blob, with the key its header names.
fn unseal(keys: &Keys, blob: &[u8]) -> Result<Vec<u8>, BodyError> {
    let (header, sealed) =
        blob.split_at_checked(HEADER).ok_or_else(|| BodyError::Damaged(format!("{} bytes", blob.len())))?;
    let tag = &header[2..];
    let key = keys.by_tag(tag).ok_or_else(|| BodyError::NoKey(hex(tag)))?;
    key.open(header, sealed).ok_or(BodyError::WrongKey)
}

fn compressor(dictionary: Option<&[u8]>) -> std::io::Result<Compressor<'static>> {
    let mut c = match dictionary {
        Some(d) => Compressor::with_dictionary(LEVEL, d)?,
        None => Compressor::new(LEVEL)?,
    };
    // The header carries the length and the dictionary; zstd need not repeat them.
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))?;
    c.set_parameter(zstd::zstd_safe::CParameter::DictIdFlag(false))?;
    Ok(c)
}

impl Codec {
    /// The codec of the database `conn` is open on: its dictionaries, if it has any (an older
    /// schema has none).
    pub(crate) fn load(conn: &Connection, keys: &Keys) -> rusqlite::Result<Arc<Codec>> {
        let has_table = conn
            .query_row("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'body_dict'", [], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        let mut dictionaries: Vec<(u8, Vec<u8>)> = Vec::new();
        if has_table {
            let mut stmt = conn.prepare("SELECT id, dict FROM body_dict ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            for (id, dict) in rows {
                let id =
                    u8::try_from(id).map_err(|_| fail(BodyError::Damaged(format!("dictionary id {id}"))))?;
                dictionaries.push((id, open_dictionary(&dict, keys).map_err(fail)?));
            }
        }
        let build = || -> Result<Inner, BodyError> {
            let mut decompressors = HashMap::new();
            decompressors.insert(0, Decompressor::new()?);
            for (id, dict) in &dictionaries {
                decompressors.insert(*id, Decompressor::with_dictionary(dict)?);
            }
            let (current, compressor) = match dictionaries.last() {
                Some((id, dict)) => (*id, compressor(Some(dict))?),
                None => (0, compressor(None)?),
            };
            Ok(Inner { current, compressor, decompressors, gave_up: false })
        };
        Ok(Arc::new(Codec { inner: Mutex::new(build().map_err(fail)?), keys: keys.clone() }))
    }

    /// Whether a stored value is a body sealed with the current key (what `rekey` leaves).
    pub(crate) fn sealed_current(&self, stored: ValueRef) -> bool {
        match (stored, &self.keys.sealing) {
            (ValueRef::Blob(b), Some(key)) => b.len() > HEADER && b[0] == SEALED && b[2..HEADER] == key.tag(),
            (_, None) => true,
            _ => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pack(&self, text: &str) -> Result<Vec<u8>, BodyError> {
        if text.len() > MAX_TEXT {
            return Err(BodyError::TooLarge(text.len()));
        }
        let (frame, dictionary) = {
            let mut inner = self.lock();
            (inner.compressor.compress(text.as_bytes())?, inner.current)
        };
        let length = (text.len() as u32).to_le_bytes();
        let Some(key) = &self.keys.sealing else {
            let mut out = Vec::with_capacity(HEADER + frame.len());
            out.push(FORMAT);
            out.push(dictionary);
            out.extend_from_slice(&length);
            out.extend_from_slice(&frame);
            return Ok(out);
        };
        let mut plain = Vec::with_capacity(4 + frame.len());
        plain.extend_from_slice(&length);
        plain.extend_from_slice(&frame);
        seal(key, dictionary, &plain)
    }

    pub(crate) fn unpack(&self, packed: &[u8]) -> Result<String, BodyError> {
        let (header, frame) = packed
            .split_at_checked(HEADER)
            .ok_or_else(|| BodyError::Damaged(format!("{} bytes", packed.len())))?;
        let opened;
        let (len, frame) = match header[0] {
            FORMAT => (u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize, frame),
            SEALED => {
                opened = unseal(&self.keys, packed)?;
                let (length, frame) =
                    opened.split_at_checked(4).ok_or_else(|| BodyError::Damaged("sealed length".into()))?;
                (u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize, frame)
            }
            other => return Err(BodyError::Damaged(format!("format {other}"))),
        };
        if len > MAX_TEXT {
            return Err(BodyError::Damaged(format!("length {len}")));
        }
        let mut inner = self.lock();
        let d = inner.decompressors.get_mut(&header[1]).ok_or(BodyError::NoDictionary(header[1]))?;
        let text = d.decompress(frame, len)?;
        if text.len() != len {
            return Err(BodyError::Damaged(format!("{} bytes where {len} were kept", text.len())));
        }
        String::from_utf8(text).map_err(|e| BodyError::Damaged(e.to_string()))
    }

    /// A stored body as text (what `body_text` gives in SQL): a packed blob, or text written
    /// by a version before compression.
    pub(crate) fn text(&self, stored: ValueRef) -> Result<Option<String>, BodyError> {
        match stored {
            ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
            ValueRef::Blob(b) => self.unpack(b).map(Some),
            ValueRef::Null => Ok(None),
            _ => Err(BodyError::Damaged("not a body".into())),
        }
    }

    /// Whether a dictionary is still to be trained (none yet, and no training failed).
    pub(crate) fn wants_training(&self) -> bool {
        let inner = self.lock();
        inner.current == 0 && !inner.gave_up
    }

    pub(crate) fn give_up_training(&self) {
        self.lock().gave_up = true;
    }

    /// Trains a dictionary from the bodies already stored, once there are [`TRAIN_AFTER`] of
    /// them (None before: one count), and stores it in `body_dict`, inside the caller's write
    /// transaction. The caller [`Codec::adopt`]s it once that transaction is committed; the
    /// bodies before it stay as they are until rewritten.
    pub(crate) fn train(&self, tx: &Connection) -> rusqlite::Result<Option<(u8, Vec<u8>)>> {
        let stored: i64 =
            tx.prepare_cached("SELECT n FROM counts WHERE name = 'dossier'")?.query_row([], |r| r.get(0))?;
        if stored < TRAIN_AFTER {
            return Ok(None);
        }
        // The most recent bodies: what the province files now, read into one buffer (the
        // trainer's input) rather than a string each: the training's memory is a peak of the
        // daemon's (docs/BENCHMARKS.md §12).
        let mut text = Vec::new();
        let mut sizes = Vec::new();
        {
            let mut stmt = tx.prepare("SELECT payload, history FROM body ORDER BY rowid DESC LIMIT ?1")?;
            let mut rows = stmt.query([TRAIN_SAMPLES / 2])?;
            while let Some(row) = rows.next()? {
                for column in 0..2 {
                    let body = self.text(row.get_ref(column)?).map_err(fail)?.unwrap_or_default();
                    // The dictionary is a copy of what it was trained on: never of a person.
                    let body = if column == 0 { blank_personal(&body) } else { body };
                    text.extend_from_slice(body.as_bytes());
                    sizes.push(body.len());
                }
            }
        }
        let samples = sizes.len();
        let dictionary =
            zstd::dict::from_continuous(&text, &sizes, DICTIONARY_BYTES).map_err(|e| fail(e.into()))?;
        drop(text);
        let id: i64 = tx.query_row(
            "INSERT INTO body_dict (id, dict, created_at, samples)
             VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM body_dict), ?1, unixepoch(), ?2)
             RETURNING id",
            rusqlite::params![self.seal_dictionary(&dictionary).map_err(fail)?, samples as i64],
            |r| r.get(0),
        )?;
        let id = u8::try_from(id).map_err(|_| fail(BodyError::Damaged(format!("dictionary id {id}"))))?;
        tracing::info!(
            event = "body_dictionary_trained",
            samples,
            bytes = dictionary.len(),
            "dossier bodies are compressed with a dictionary from now on"
        );
        Ok(Some((id, dictionary)))
    }

    /// Compresses new bodies with dictionary `id` (committed to `body_dict`) from now on.
    pub(crate) fn adopt(&self, id: u8, dictionary: &[u8]) -> Result<(), BodyError> {
        let decompressor = Decompressor::with_dictionary(dictionary)?;
        let compressor = compressor(Some(dictionary))?;
        let mut inner = self.lock();
        inner.decompressors.insert(id, decompressor);
        inner.compressor = compressor;
        inner.current = id;
        Ok(())
    }
}

/// A stored dictionary, opened.
pub(crate) struct Dictionary {
    pub(crate) bytes: Vec<u8>,
    /// Sealed with the current key already.
    pub(crate) sealed_current: bool,
}

impl Codec {
    /// A dictionary as `body_dict` holds it, opened with the keys.
    pub(crate) fn open_dictionary(&self, stored: &[u8]) -> Result<Dictionary, BodyError> {
        let sealed_current = self.keys.sealing.is_some() && self.sealed_current(ValueRef::Blob(stored));
        Ok(Dictionary { bytes: open_dictionary(stored, &self.keys)?, sealed_current })
    }

    /// A dictionary as stored: sealed like a body when there is a key.
    pub(crate) fn seal_dictionary(&self, dictionary: &[u8]) -> Result<Vec<u8>, BodyError> {
        match &self.keys.sealing {
            Some(key) => seal(key, 0, dictionary),
            None => Ok(dictionary.to_vec()),
        }
    }
}

/// A stored dictionary's bytes: as they are (a zstd dictionary begins with its magic number,
/// 0x37), or opened.
fn open_dictionary(stored: &[u8], keys: &Keys) -> Result<Vec<u8>, BodyError> {
    if stored.first() != Some(&SEALED) {
        return Ok(stored.to_vec());
    }
    unseal(keys, stored)
}

/// A payload with its personal fields blanked, for training (not JSON: as it is).
fn blank_personal(payload: &str) -> String {
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(payload) {
        Ok(mut map) => {
            for (field, value) in map.iter_mut() {
                if crate::domain::personal::is_personal(field) {
                    *value = serde_json::Value::String(String::new());
                }
            }
            serde_json::to_string(&map).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// Gives `conn` the functions `body_pack(text)` and `body_text(column)` for `codec`.
pub(crate) fn register(conn: &Connection, codec: Arc<Codec>) -> rusqlite::Result<()> {
    // body_pack's output changes once a dictionary is trained: not deterministic.
    let packing = Arc::clone(&codec);
    conn.create_scalar_function("body_pack", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let text = ctx.get_raw(0).as_str().map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?;
        packing.pack(text).map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
    })?;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("body_text", 1, flags, move |ctx| codec.text(ctx.get_raw(0)).map_err(fail))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str =
        r#"{"MaHoSo":"000.00.15.H58-261115-0001","ChuHoSo":"Đặng Văn Hải","TrangThaiHoSo":"2"}"#;

    fn db() -> (tempfile::TempDir, crate::store::Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_body_comes_back_as_it_went_in_and_plain_text_still_reads() {
        let (_dir, store) = db();
        let (text, kind, plain): (String, String, String) = store
            .read(|c| {
                c.query_row(
                    "SELECT body_text(body_pack(?1)), typeof(body_pack(?1)), body_text(?1)",
                    [PAYLOAD],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .unwrap();
        assert_eq!((text.as_str(), kind.as_str(), plain.as_str()), (PAYLOAD, "blob", PAYLOAD));
        let null: Option<String> =
            store.read(|c| c.query_row("SELECT body_text(NULL)", [], |r| r.get(0))).unwrap();
        assert_eq!(null, None);
    }

    #[test]
    fn a_damaged_body_is_an_error_not_a_panic() {
        let (_dir, store) = db();
        for blob in [
            &b""[..],
            &[1, 0, 5],
            &[2, 0, 3, 0, 0, 0, 1],
            &[1, 9, 3, 0, 0, 0, 1, 2, 3],
            &[1, 0, 255, 255, 255, 255, 0],
        ] {
            let got = store.read(|c| c.query_row("SELECT body_text(?1)", [blob], |r| r.get::<_, String>(0)));
            assert!(got.is_err(), "{blob:?}");
        }
    }

    /// Once enough bodies are stored a dictionary is trained; bodies written before and after
    /// it read back, after a reopen too, and the later ones are much smaller.
    #[test]
    fn a_dictionary_is_trained_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let body = |i: i64| {
            (
                format!(
                    r#"{{"MaHoSo":"000.00.15.H58-2611{:02}-{i:04}","ChuHoSo":"Nguyễn Văn {i}","DonViXuLy":"Sở Tư pháp","TenTTHC":"Đăng ký khai sinh","TrangThaiHoSo":"{}"}}"#,
                    i % 28 + 1,
                    i % 10
                ),
                format!(
                    r#"[{{"NguoiXuLy":"Cán bộ {}","NoiDungXuLy":"Tiếp nhận hồ sơ","TrangThai":"2"}}]"#,
                    i % 7
                ),
            )
        };
        let insert = |store: &crate::store::Store, from: i64, to: i64| {
            store
                .write(|tx| {
                    for i in from..to {
                        let (p, h) = body(i);
                        tx.execute(
                            "INSERT INTO dossier (mahoso, version, updated_at, seen_at, payload_hash, status, procedure, history_len)
                             VALUES (?1, 1, 0, 0, 0, 2, 'p', 1)",
                            [format!("H{i}")],
                        )?;
                        tx.execute(
                            "INSERT INTO body (mahoso, payload, history) VALUES (?1, body_pack(?2), body_pack(?3))",
                            rusqlite::params![format!("H{i}"), p, h],
                        )?;
                    }
                    Ok(())
                })
                .unwrap()
        };
        let size = |store: &crate::store::Store, i: i64| -> i64 {
            store
                .read(|c| {
                    c.query_row(
                        "SELECT length(payload) FROM body WHERE mahoso = ?1",
                        [format!("H{i}")],
                        |r| r.get(0),
                    )
                })
                .unwrap()
        };
        let store = crate::store::Store::open(&path).unwrap();
        insert(&store, 0, TRAIN_AFTER - 1);
        assert!(!store.train_body_dictionary().unwrap(), "too few bodies yet");
        insert(&store, TRAIN_AFTER - 1, TRAIN_AFTER);
        assert!(store.train_body_dictionary().unwrap());
        assert!(!store.train_body_dictionary().unwrap(), "trained once");
        insert(&store, TRAIN_AFTER, TRAIN_AFTER + 10);
        let (before, after) = (size(&store, 5), size(&store, TRAIN_AFTER + 5));
        assert!(after * 2 < before, "with the dictionary {after} bytes, without {before}");
        drop(store);
        let store = crate::store::Store::open(&path).unwrap();
        assert!(!store.train_body_dictionary().unwrap(), "the dictionary is kept");
        for i in [0, 5, TRAIN_AFTER + 5] {
            let got: (String, String) = store
                .read(|c| {
                    c.query_row(
                        "SELECT body_text(payload), body_text(history) FROM body WHERE mahoso = ?1",
                        [format!("H{i}")],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                })
                .unwrap();
            assert_eq!(got, body(i), "{i}");
        }
        let ro = crate::store::open_read_only(&path).unwrap();
        crate::store::read_bodies(&ro, &crate::store::Keys::default()).unwrap();
        let got: String = ro
            .query_row(
                "SELECT body_text(payload) FROM body WHERE mahoso = ?1",
                [format!("H{}", TRAIN_AFTER + 5)],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(got, body(TRAIN_AFTER + 5).0, "read-only connections read them too");
    }
}
