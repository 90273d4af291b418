//! Typed digests.
//!
//! Every digest in keel is a BLAKE3 hash plus the size of what it covers, tagged with a
//! zero-sized kind so that a blob's digest, a tree's digest and an action key can never be
//! passed where another is expected. A blob's digest is the plain BLAKE3 of its bytes — what
//! `b3sum` prints and what the Remote Execution API calls a BLAKE3 digest. Every derived
//! digest hashes under its own BLAKE3 derive-key context, so two kinds never collide even
//! on identical bytes.

use std::fmt;
use std::fs::File;
use std::hash::Hash;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A kind of digest: says how its bytes are hashed and how it is named in messages.
pub trait DigestKind: Send + Sync + 'static {
    /// The BLAKE3 derive-key context, or `None` for the plain hash (blobs only).
    const CONTEXT: Option<&'static str>;
    /// A short lowercase name used in error messages ("blob", "tree", …).
    const NAME: &'static str;
}

macro_rules! digest_kind {
    ($(#[$doc:meta])* $ty:ident, $ctx:expr, $name:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty {}
        impl DigestKind for $ty {
            const CONTEXT: Option<&'static str> = $ctx;
            const NAME: &'static str = $name;
        }
    };
}

digest_kind!(
    /// The bytes of a file or any other opaque content: plain BLAKE3.
    BlobKind, None, "blob");
digest_kind!(
    /// A directory manifest (see [`crate::Tree`]).
    TreeKind, Some("keel-store 2026-11-27 tree manifest v1"), "tree");
digest_kind!(
    /// The key of an action: a hash of every input that can change its output.
    ActionKeyKind, Some("keel-store 2026-11-27 action key v1"), "action key");
digest_kind!(
    /// A stored action-cache record (see [`crate::ActionRecord`]).
    RecordKind, Some("keel-store 2026-11-27 action record v1"), "action record");

/// A BLAKE3 digest of `size` bytes of content of kind `K`.
pub struct Digest<K: DigestKind> {
    hash: [u8; 32],
    size: u64,
    _kind: PhantomData<K>,
}

/// The digest of a blob: the plain BLAKE3 of its bytes.
pub type BlobDigest = Digest<BlobKind>;
/// The digest of a tree manifest.
pub type TreeDigest = Digest<TreeKind>;
/// An action key.
pub type ActionKey = Digest<ActionKeyKind>;
/// The digest of an action-cache record.
pub type RecordDigest = Digest<RecordKind>;

impl<K: DigestKind> Digest<K> {
    /// A digest from its parts, as read back from an index or the command line.
    pub const fn from_parts(hash: [u8; 32], size: u64) -> Self {
        Digest {
            hash,
            size,
            _kind: PhantomData,
        }
    }

    /// Hashes `bytes` the way this kind hashes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut h = DigestHasher::<K>::new();
        h.update(bytes);
        h.finalize()
    }

    /// The 32 hash bytes.
    pub const fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The size in bytes of what was hashed.
    pub const fn size(&self) -> u64 {
        self.size
    }

    /// The full lowercase hex of the hash, as `b3sum` prints it.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in &self.hash {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }

    /// The first 12 hex digits, for human output.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }

    /// Parses 64 hex digits (the size is unknown and set to 0; use [`Digest::from_parts`]
    /// when it is known).
    pub fn parse_hex(s: &str) -> Result<Self, ParseDigestError> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(ParseDigestError {
                input: s.to_owned(),
            });
        }
        let mut hash = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or_else(|| ParseDigestError {
                input: s.to_owned(),
            })?;
            let lo = hex_val(pair[1]).ok_or_else(|| ParseDigestError {
                input: s.to_owned(),
            })?;
            hash[i] = (hi << 4) | lo;
        }
        Ok(Digest::from_parts(hash, 0))
    }

    /// Reinterprets the hash as another kind. Only for boundaries where the kind is known
    /// from context (an index that stores one kind per table); never to "convert" a hash.
    pub const fn cast<L: DigestKind>(self) -> Digest<L> {
        Digest {
            hash: self.hash,
            size: self.size,
            _kind: PhantomData,
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{input}` is not a digest (expected 64 hex digits)")]
pub struct ParseDigestError {
    input: String,
}

impl<K: DigestKind> FromStr for Digest<K> {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse_hex(s)
    }
}

// Manual impls: derives would put bounds on `K`.
impl<K: DigestKind> Clone for Digest<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: DigestKind> Copy for Digest<K> {}
impl<K: DigestKind> PartialEq for Digest<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}
impl<K: DigestKind> Eq for Digest<K> {}
impl<K: DigestKind> Hash for Digest<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.hash);
    }
}
impl<K: DigestKind> PartialOrd for Digest<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: DigestKind> Ord for Digest<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash.cmp(&other.hash)
    }
}
impl<K: DigestKind> fmt::Display for Digest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str(&self.short())
        } else {
            f.write_str(&self.to_hex())
        }
    }
}
impl<K: DigestKind> fmt::Debug for Digest<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", K::NAME, self.short(), self.size)
    }
}

impl<K: DigestKind> Serialize for Digest<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&format!("{}/{}", self.to_hex(), self.size))
        } else {
            (self.hash, self.size).serialize(s)
        }
    }
}
impl<'de, K: DigestKind> Deserialize<'de> for Digest<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let (hex, size) = s.split_once('/').unwrap_or((&s, "0"));
            let size = size.parse().map_err(serde::de::Error::custom)?;
            let digest = Digest::<K>::parse_hex(hex).map_err(serde::de::Error::custom)?;
            Ok(Digest::from_parts(digest.hash, size))
        } else {
            let (hash, size) = <([u8; 32], u64)>::deserialize(d)?;
            Ok(Digest::from_parts(hash, size))
        }
    }
}

/// Incremental hashing for one kind of digest.
pub struct DigestHasher<K: DigestKind> {
    inner: blake3::Hasher,
    size: u64,
    _kind: PhantomData<K>,
}

impl<K: DigestKind> fmt::Debug for DigestHasher<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DigestHasher<{}>({} bytes)", K::NAME, self.size)
    }
}

impl<K: DigestKind> Default for DigestHasher<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: DigestKind> DigestHasher<K> {
    pub fn new() -> Self {
        let inner = match K::CONTEXT {
            None => blake3::Hasher::new(),
            Some(ctx) => blake3::Hasher::new_derive_key(ctx),
        };
        DigestHasher {
            inner,
            size: 0,
            _kind: PhantomData,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.inner.update(bytes);
        self.size += bytes.len() as u64;
        self
    }

    /// Like [`DigestHasher::update`], spreading large inputs over rayon's threads.
    pub fn update_parallel(&mut self, bytes: &[u8]) -> &mut Self {
        // Below this, thread hand-off costs more than it saves (blake3's own advice is
        // 128 KiB).
        if bytes.len() >= 128 * 1024 && rayon::current_num_threads() > 1 {
            self.inner.update_rayon(bytes);
        } else {
            self.inner.update(bytes);
        }
        self.size += bytes.len() as u64;
        self
    }

    /// Hashes a length-prefixed field, so that adjacent fields cannot run together
    /// ("ab"+"c" and "a"+"bc" hash differently). For keys built from several inputs.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.update(&(bytes.len() as u64).to_le_bytes());
        self.update(bytes)
    }

    /// How many bytes have been hashed so far.
    pub fn size_so_far(&self) -> u64 {
        self.size
    }

    pub fn finalize(&self) -> Digest<K> {
        Digest::from_parts(*self.inner.finalize().as_bytes(), self.size)
    }
}

impl<K: DigestKind> io::Write for DigestHasher<K> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Files at least this large are hashed through memory maps, window by window.
const MMAP_THRESHOLD: u64 = 1 << 20;
/// The size of one mapped window. Windows are unmapped as soon as they are hashed, so the
/// resident set stays near this size however large the file is (mapping a whole multi-GiB
/// file would count every touched page against the process).
pub(crate) const WINDOW: usize = 16 << 20;

/// Calls `f` on the contents of `file` in order, in windows of at most [`WINDOW`] bytes,
/// through memory maps for large files and reads otherwise. Returns the number of bytes.
pub(crate) fn for_each_window(
    file: &File,
    len: u64,
    mut f: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    if len < MMAP_THRESHOLD {
        let mut buf = Vec::with_capacity(len as usize + 1);
        let mut reader = file;
        reader.read_to_end(&mut buf)?;
        f(&buf)?;
        return Ok(buf.len() as u64);
    }
    let mut offset = 0u64;
    while offset < len {
        let n = WINDOW.min((len - offset) as usize);
        // SAFETY: the map is read-only and dropped before the next window. Another process
        // truncating the file underneath would raise SIGBUS; keel only maps files it was
        // asked to hash, the same trade-off b3sum and ripgrep make.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(n)
                .map(file)?
        };
        let _ = map.advise(memmap2::Advice::Sequential);
        f(&map)?;
        offset += n as u64;
    }
    // A file that grew while it was hashed: take the rest through reads, so the digest
    // covers exactly the bytes that were seen.
    let mut rest = Vec::new();
    let mut reader = file;
    io::Seek::seek(&mut reader, io::SeekFrom::Start(offset))?;
    reader.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        f(&rest)?;
        offset += rest.len() as u64;
    }
    Ok(offset)
}

/// Hashes a file as a blob, using every rayon thread on large files.
pub fn hash_file(path: &Path) -> io::Result<BlobDigest> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut h = DigestHasher::<BlobKind>::new();
    for_each_window(&file, len, |w| {
        h.update_parallel(w);
        Ok(())
    })?;
    Ok(h.finalize())
}

/// Hashes everything `reader` yields as a blob.
pub fn hash_reader(mut reader: impl Read) -> io::Result<BlobDigest> {
    let mut h = DigestHasher::<BlobKind>::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_digest_is_plain_blake3() {
        // b3sum of the empty input and of "abc", as printed by b3sum 1.2.
        assert_eq!(
            BlobDigest::of_bytes(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            BlobDigest::of_bytes(b"abc").to_hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn kinds_hash_differently() {
        let b = BlobDigest::of_bytes(b"x");
        let t = TreeDigest::of_bytes(b"x");
        let a = ActionKey::of_bytes(b"x");
        assert_ne!(b.hash(), t.hash());
        assert_ne!(t.hash(), a.hash());
    }

    #[test]
    fn hex_round_trips() {
        let d = BlobDigest::of_bytes(b"hello");
        let parsed: BlobDigest = d.to_hex().parse().unwrap();
        assert_eq!(parsed, d);
        assert!("zz".parse::<BlobDigest>().is_err());
        assert!(d.to_hex()[..63].parse::<BlobDigest>().is_err());
    }

    #[test]
    fn fields_are_length_prefixed() {
        let mut a = DigestHasher::<ActionKeyKind>::new();
        a.field(b"ab").field(b"c");
        let mut b = DigestHasher::<ActionKeyKind>::new();
        b.field(b"a").field(b"bc");
        assert_ne!(a.finalize(), b.finalize());
    }

    #[test]
    fn file_hash_matches_bytes_hash_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Larger than one window and not a multiple of it.
        let data: Vec<u8> = (0..(WINDOW + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(hash_file(&path).unwrap(), BlobDigest::of_bytes(&data));
        assert_eq!(hash_file(&path).unwrap().size(), data.len() as u64);
        assert_eq!(hash_reader(&data[..]).unwrap(), BlobDigest::of_bytes(&data));
    }

    #[test]
    fn serde_forms() {
        let d = BlobDigest::of_bytes(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}/3\"", d.to_hex()));
        let back: BlobDigest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.size(), 3);
        let bin = bincode::serde::encode_to_vec(d, bincode::config::standard()).unwrap();
        let (back, _): (BlobDigest, _) =
            bincode::serde::decode_from_slice(&bin, bincode::config::standard()).unwrap();
        assert_eq!(back.size(), 3);
    }
}
