//! The action cache: action key -> the record of what running the action produced.
//!
//! Records are objects like any other (`actions/` in the store), verified on every read;
//! the sled index only maps a key to the newest record's digest. Because the record files
//! are the truth and each record carries its own key, a lost or damaged index is rebuilt by
//! scanning them — which also recovers entries a killed process had not flushed yet.
//!
//! A hit requires the record to be intact and every object it names to be present;
//! anything less is a miss (with a warning), so a damaged store degrades to a rebuild.

use std::fs;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::digest::{ActionKey, BlobDigest, RecordDigest, RecordKind, TreeDigest};
use crate::error::{Result, StoreError};
use crate::object::{CompressHint, ObjectKind};
use crate::store::{Store, now_millis};

const RECORD_FORMAT: u8 = 1;
const INDEX_VALUE_FORMAT: u8 = 1;

/// An object an action produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObjectRef {
    Blob(BlobDigest),
    Tree(TreeDigest),
}

/// One named output of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutput {
    pub name: String,
    pub object: ObjectRef,
}

/// What running an action produced, and what it was run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The key this record answers.
    pub key: ActionKey,
    pub outputs: Vec<ActionOutput>,
    pub exit_code: i32,
    pub duration_ms: u64,
    /// When the record was made (milliseconds since the epoch); the newest record of a key
    /// wins when the index is rebuilt.
    pub created_unix_ms: u64,
    /// The action's key inputs as JSON, so that a later miss can say which input changed.
    pub inputs_json: String,
    /// The action's log, if it kept one.
    pub log: Option<BlobDigest>,
}

impl ActionRecord {
    /// A record made now.
    pub fn new(key: ActionKey, outputs: Vec<ActionOutput>, inputs_json: String) -> ActionRecord {
        ActionRecord {
            key,
            outputs,
            exit_code: 0,
            duration_ms: 0,
            created_unix_ms: now_millis(),
            inputs_json,
            log: None,
        }
    }

    /// The record's canonical bytes, as stored (and as shared with remote caches).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// A record from [`ActionRecord::to_bytes`]'s output (for example one read from a
    /// remote cache). Malformed bytes are an error naming `what` (where they came from).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<ActionRecord> {
        ActionRecord::decode_as(bytes, || what.to_owned())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_FORMAT];
        out.extend(
            bincode::serde::encode_to_vec(self, bincode::config::standard())
                .expect("records always encode"),
        );
        out
    }

    fn decode(bytes: &[u8], digest: &RecordDigest) -> Result<ActionRecord> {
        ActionRecord::decode_as(bytes, || digest.to_hex())
    }

    fn decode_as(bytes: &[u8], name: impl Fn() -> String) -> Result<ActionRecord> {
        let bad = |why: String| StoreError::Decode {
            what: "action record",
            digest: name(),
            why,
        };
        match bytes.split_first() {
            Some((&RECORD_FORMAT, rest)) => {
                let record: ActionRecord =
                    bincode::serde::decode_from_slice(rest, bincode::config::standard())
                        .map(|(r, _)| r)
                        .map_err(|e| bad(e.to_string()))?;
                // Records come from other machines: a name is checked before anything
                // can make it a path.
                if let Some(o) = record
                    .outputs
                    .iter()
                    .find(|o| !crate::tree::is_safe_output_name(&o.name))
                {
                    return Err(bad(format!(
                        "output name {:?} is not a plain file name (absolute, `..`, `/` or empty)",
                        o.name
                    )));
                }
                Ok(record)
            }
            Some((v, _)) => Err(bad(format!("unknown record format {v}"))),
            None => Err(bad("empty record".into())),
        }
    }

    /// Every object the record names, its log included.
    pub fn objects(&self) -> impl Iterator<Item = ObjectRef> + '_ {
        self.outputs
            .iter()
            .map(|o| o.object)
            .chain(self.log.map(ObjectRef::Blob))
    }
}

fn index_value(d: &RecordDigest) -> Vec<u8> {
    let mut v = Vec::with_capacity(41);
    v.push(INDEX_VALUE_FORMAT);
    v.extend_from_slice(d.hash());
    v.extend_from_slice(&d.size().to_le_bytes());
    v
}

pub(crate) fn parse_index_value(v: &[u8]) -> Option<RecordDigest> {
    if v.len() != 41 || v[0] != INDEX_VALUE_FORMAT {
        return None;
    }
    let hash: [u8; 32] = v[1..33].try_into().ok()?;
    let size = u64::from_le_bytes(v[33..41].try_into().ok()?);
    Some(RecordDigest::from_parts(hash, size))
}

impl Store {
    /// Records the result of an action. Every object it names must already be stored (a
    /// remote tier uploads in the same order: objects first, then the record).
    pub fn ac_put(&self, record: &ActionRecord) -> Result<RecordDigest> {
        if let Some(o) = record
            .outputs
            .iter()
            .find(|o| !crate::tree::is_safe_output_name(&o.name))
        {
            return Err(StoreError::Invalid(format!(
                "action record for {} has output name {:?}, which is not a plain file name",
                record.key, o.name
            )));
        }
        for obj in record.objects() {
            let present = match obj {
                ObjectRef::Blob(d) => self.has_object(ObjectKind::Blob, &d),
                ObjectRef::Tree(d) => self.has_object(ObjectKind::Tree, &d),
            };
            if !present {
                return Err(StoreError::Invalid(format!(
                    "action record for {} names {obj:?}, which is not in the store",
                    record.key
                )));
            }
        }
        let bytes = record.encode();
        let digest =
            self.put_object::<RecordKind>(ObjectKind::Record, CompressHint::Auto, |w| {
                w.write(&bytes)
            })?;
        self.ac
            .insert(record.key.hash(), index_value(&digest))
            .map_err(|e| self.index_err(e))?;
        Ok(digest)
    }

    /// Looks an action up. `None` when it was never recorded, or when its record or any
    /// object the record names is missing or damaged (the entry is then dropped).
    pub fn ac_get(&self, key: &ActionKey) -> Result<Option<ActionRecord>> {
        let found = self.ac.get(key.hash()).map_err(|e| self.index_err(e))?;
        let result = match found.as_deref().map(parse_index_value) {
            None => None,
            Some(None) => {
                tracing::warn!(key = %key, "unreadable action-cache index entry; treating as a miss");
                self.ac_forget(key);
                None
            }
            Some(Some(rd)) => self.load_record(key, &rd),
        };
        let c = if result.is_some() {
            &self.counters.ac_hits
        } else {
            &self.counters.ac_misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        Ok(result)
    }

    fn load_record(&self, key: &ActionKey, rd: &RecordDigest) -> Option<ActionRecord> {
        let record = match self.read_record(rd) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "action record unusable; treating as a miss");
                self.ac_forget(key);
                return None;
            }
        };
        if record.key != *key {
            tracing::warn!(key = %key, record = %rd, "action record answers another key; treating as a miss");
            self.ac_forget(key);
            return None;
        }
        let missing = record.objects().find(|o| match o {
            ObjectRef::Blob(d) => !self.has_object(ObjectKind::Blob, d),
            ObjectRef::Tree(d) => !self.has_object(ObjectKind::Tree, d),
        });
        if let Some(m) = missing {
            tracing::info!(key = %key, missing = ?m, "action output no longer stored; treating as a miss");
            self.ac_forget(key);
            return None;
        }
        Some(record)
    }

    /// Reads and decodes a record, verified.
    pub(crate) fn read_record(&self, rd: &RecordDigest) -> Result<ActionRecord> {
        ActionRecord::decode(&self.read_object(ObjectKind::Record, rd)?, rd)
    }

    fn ac_forget(&self, key: &ActionKey) {
        let _ = self.ac.remove(key.hash());
    }

    /// Rebuilds index entries from the record files: for each key, the newest intact record
    /// wins. Returns how many records were read.
    pub(crate) fn reindex_records(&self) -> Result<usize> {
        let mut n = 0;
        for found in self.list_kinds(&[ObjectKind::Record]) {
            let Ok(rd) = RecordDigest::parse_hex(&found.hex) else {
                continue;
            };
            let Ok(record) = self.read_record(&rd) else {
                continue; // Damaged ones were quarantined by the read.
            };
            n += 1;
            let current = self
                .ac
                .get(record.key.hash())
                .map_err(|e| self.index_err(e))?;
            let newer = match current.as_deref().and_then(parse_index_value) {
                None => true,
                Some(cur) if cur == rd => false,
                Some(cur) => match self.read_record(&cur) {
                    Ok(c) => record.created_unix_ms > c.created_unix_ms,
                    Err(_) => true,
                },
            };
            if newer {
                self.ac
                    .insert(record.key.hash(), index_value(&rd))
                    .map_err(|e| self.index_err(e))?;
            }
        }
        Ok(n)
    }

    /// Names a set of objects as a GC root (for example "the newest build of tree X"):
    /// `gc` keeps them, and everything they reference, unless told otherwise. Replaces the
    /// root's previous set.
    pub fn set_root(&self, name: &str, objects: &[ObjectRef]) -> Result<()> {
        let value = bincode::serde::encode_to_vec(objects, bincode::config::standard())
            .expect("roots always encode");
        self.roots
            .insert(name.as_bytes(), value)
            .map_err(|e| self.index_err(e))?;
        Ok(())
    }

    /// Every root with its objects.
    pub fn roots(&self) -> Result<Vec<(String, Vec<ObjectRef>)>> {
        let mut out = Vec::new();
        for item in self.roots.iter() {
            let (k, v) = item.map_err(|e| self.index_err(e))?;
            let objs: Vec<ObjectRef> =
                bincode::serde::decode_from_slice(&v, bincode::config::standard())
                    .map(|(o, _)| o)
                    .unwrap_or_default();
            out.push((String::from_utf8_lossy(&k).into_owned(), objs));
        }
        Ok(out)
    }

    /// Remembers `key` as the newest build of `target` (a name the caller chooses, such as
    /// "rpm:bash"), so that a later build of the same target can find the record it
    /// replaces and say which input changed. Replaces the previous key.
    ///
    /// This is a hint, not the truth: it is not rebuilt from the record files when the
    /// index is lost, and the newest second of updates may be lost to a crash (the index
    /// is flushed periodically). A lost entry only means "no previous build known".
    pub fn target_set(&self, target: &str, key: &ActionKey) -> Result<()> {
        self.targets
            .insert(target.as_bytes(), index_value(&key.cast()))
            .map_err(|e| self.index_err(e))?;
        Ok(())
    }

    /// The key of the newest build of `target` recorded by [`Store::target_set`], if any.
    pub fn target_get(&self, target: &str) -> Result<Option<ActionKey>> {
        let found = self
            .targets
            .get(target.as_bytes())
            .map_err(|e| self.index_err(e))?;
        Ok(found
            .as_deref()
            .and_then(parse_index_value)
            .map(|d| d.cast()))
    }

    /// How many keys the action cache holds.
    pub fn ac_len(&self) -> usize {
        self.ac.len()
    }

    /// Removes index entries whose record file is gone (after gc or quarantine).
    pub(crate) fn prune_ac_index(&self) -> Result<usize> {
        let mut removed = 0;
        for item in self.ac.iter() {
            let (k, v) = item.map_err(|e| self.index_err(e))?;
            let gone = match parse_index_value(&v) {
                Some(rd) => !fs::exists(self.path_of(ObjectKind::Record, &rd)).unwrap_or(false),
                None => true,
            };
            if gone {
                self.ac.remove(k).map_err(|e| self.index_err(e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestHasher;

    fn key(n: u32) -> ActionKey {
        let mut h = DigestHasher::new();
        h.field(&n.to_le_bytes());
        h.finalize()
    }

    #[test]
    fn put_get_and_miss() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        assert_eq!(store.ac_get(&key(1)).unwrap(), None);
        let out = store.put_bytes(b"output").unwrap();
        let rec = ActionRecord::new(
            key(1),
            vec![ActionOutput {
                name: "o".into(),
                object: ObjectRef::Blob(out),
            }],
            "{}".into(),
        );
        store.ac_put(&rec).unwrap();
        assert_eq!(store.ac_get(&key(1)).unwrap(), Some(rec));
    }

    #[test]
    fn records_round_trip_through_bytes_and_garbage_is_named() {
        let out = BlobDigest::of_bytes(b"output");
        let mut rec = ActionRecord::new(
            key(7),
            vec![ActionOutput {
                name: "o".into(),
                object: ObjectRef::Blob(out),
            }],
            "{\"a\":1}".into(),
        );
        rec.log = Some(BlobDigest::of_bytes(b"log"));
        let bytes = rec.to_bytes();
        assert_eq!(ActionRecord::from_bytes(&bytes, "here").unwrap(), rec);
        let err = ActionRecord::from_bytes(b"\x01garbage", "http://cache/ac/x").unwrap_err();
        assert!(err.to_string().contains("http://cache/ac/x"), "{err}");
        let err = ActionRecord::from_bytes(b"\x09", "there").unwrap_err();
        assert!(err.to_string().contains("unknown record format 9"), "{err}");
    }

    #[test]
    fn records_whose_output_names_leave_their_directory_are_refused() {
        let record = |name: &str| {
            ActionRecord::new(
                key(3),
                vec![ActionOutput {
                    name: name.into(),
                    object: ObjectRef::Blob(BlobDigest::of_bytes(b"payload")),
                }],
                "{}".into(),
            )
        };
        for bad in [
            "/etc/cron.d/evil",
            "../evil.rpm",
            "..",
            ".",
            "",
            "RPMS/../../evil",
            "sub/dir.rpm",
            "nul\0byte",
        ] {
            let err =
                ActionRecord::from_bytes(&record(bad).to_bytes(), "remote entry k").expect_err(bad);
            let msg = err.to_string();
            assert!(
                msg.contains("remote entry k") && msg.contains("not a plain file name"),
                "{bad:?}: {msg}"
            );
        }
        for good in ["hello-1.0-1.x86_64.rpm", "keel:summary", "repodata", "a..b"] {
            let r = record(good);
            assert_eq!(ActionRecord::from_bytes(&r.to_bytes(), "x").unwrap(), r);
        }
        // A record already in the store with such a name is no hit either.
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        store.put_bytes(b"payload").unwrap();
        assert!(store.ac_put(&record("../evil")).is_err());
    }

    #[test]
    fn record_naming_missing_object_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let ghost = BlobDigest::of_bytes(b"never stored");
        let rec = ActionRecord::new(
            key(1),
            vec![ActionOutput {
                name: "o".into(),
                object: ObjectRef::Blob(ghost),
            }],
            "{}".into(),
        );
        assert!(store.ac_put(&rec).is_err());
    }

    #[test]
    fn missing_output_is_a_miss() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let out = store.put_bytes(b"output").unwrap();
        let rec = ActionRecord::new(
            key(1),
            vec![ActionOutput {
                name: "o".into(),
                object: ObjectRef::Blob(out),
            }],
            "{}".into(),
        );
        store.ac_put(&rec).unwrap();
        fs::remove_file(store.path_of(ObjectKind::Blob, &out)).unwrap();
        assert_eq!(store.ac_get(&key(1)).unwrap(), None);
    }

    #[test]
    fn lost_index_is_rebuilt_from_records() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("s");
        let out;
        {
            let store = Store::open(&root).unwrap();
            out = store.put_bytes(b"output").unwrap();
            let mut old = ActionRecord::new(key(7), vec![], "{\"v\":1}".into());
            old.created_unix_ms -= 1000;
            store.ac_put(&old).unwrap();
            let new = ActionRecord::new(
                key(7),
                vec![ActionOutput {
                    name: "o".into(),
                    object: ObjectRef::Blob(out),
                }],
                "{\"v\":2}".into(),
            );
            store.ac_put(&new).unwrap();
        }
        fs::remove_dir_all(root.join("index")).unwrap();
        let store = Store::open(&root).unwrap();
        let got = store
            .ac_get(&key(7))
            .unwrap()
            .expect("rebuilt from the record files");
        assert_eq!(got.inputs_json, "{\"v\":2}");
    }

    #[test]
    fn target_index_keeps_the_newest_key() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("s");
        {
            let store = Store::open(&root).unwrap();
            assert_eq!(store.target_get("rpm:bash").unwrap(), None);
            store.target_set("rpm:bash", &key(1)).unwrap();
            store.target_set("rpm:bash", &key(2)).unwrap();
            store.target_set("rpm:zsh", &key(3)).unwrap();
        }
        let store = Store::open(&root).unwrap();
        assert_eq!(store.target_get("rpm:bash").unwrap(), Some(key(2)));
        assert_eq!(store.target_get("rpm:zsh").unwrap(), Some(key(3)));
        assert_eq!(store.target_get("rpm:fish").unwrap(), None);
    }

    #[test]
    fn garbage_index_is_moved_aside_and_rebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("s");
        {
            let store = Store::open(&root).unwrap();
            store
                .ac_put(&ActionRecord::new(key(3), vec![], "{}".into()))
                .unwrap();
        }
        // Overwrite every file of the index with garbage.
        for e in walkdir::WalkDir::new(root.join("index"))
            .into_iter()
            .flatten()
        {
            if e.file_type().is_file() {
                fs::write(e.path(), b"\xffgarbage garbage garbage").unwrap();
            }
        }
        let store = Store::open(&root).unwrap();
        assert!(store.ac_get(&key(3)).unwrap().is_some());
    }
}
