//! Signed action-cache entries.
//!
//! An action-cache entry on a shared remote is a claim ("building this key gave these
//! outputs"), and anyone who can write to the remote can make one. So trusted writers sign
//! their entries with ed25519 and readers accept only entries signed by a key they trust;
//! everything else is a miss, reported and counted.
//!
//! # The entry format (version 1)
//!
//! ```text
//! "KEELAC\0\x01"                 8 bytes: magic and version
//! action key                     32 hash bytes, u64 LE size
//! record length, record          u64 LE, bytes (keel-store's serialized ActionRecord)
//! blob count, blobs              u32 LE, then per blob: 32 BLAKE3 bytes, u64 LE size,
//!                                32 SHA-256 bytes (see crate::DigestMap)
//! signer public key              32 bytes
//! signature                      64 bytes, ed25519 over CONTEXT followed by every byte
//!                                above, the public key included
//! ```
//!
//! The key is inside the signed bytes, so an entry cannot be replayed under another key.
//!
//! # Key files
//!
//! A key file holds one 32-byte key as 64 hex digits or as standard base64 (44 characters);
//! blank lines and lines starting with `#` are ignored. A secret key file holds the ed25519
//! seed; a trusted-keys file holds any number of public keys, one per line.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use keel_store::{ActionKey, BlobDigest};

use crate::error::{RemoteError, Result};
use crate::tier::hex;

const MAGIC: &[u8; 8] = b"KEELAC\0\x01";
/// Domain separation: a signature over an entry is never a valid signature of anything else.
const CONTEXT: &[u8] = b"keel-remote action-cache entry v1\0";

/// An action-cache entry: the record plus the SHA-256 of every blob it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: ActionKey,
    /// keel-store's serialized `ActionRecord`.
    pub record: Vec<u8>,
    /// Each blob the record names, with its SHA-256.
    pub blobs: Vec<(BlobDigest, [u8; 32])>,
}

/// A writer's secret key.
pub struct SigningKeyPair {
    key: SigningKey,
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("public", &hex(self.key.verifying_key().as_bytes()))
            .finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    /// From the 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> SigningKeyPair {
        SigningKeyPair {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SigningKeyPair> {
        let mut seed = [0u8; 32];
        let path = Path::new("/dev/urandom");
        std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
            .map_err(|e| RemoteError::io("read", path, e))?;
        Ok(SigningKeyPair::from_seed(seed))
    }

    /// Reads a secret key file (see the module docs for the format).
    pub fn load(path: &Path) -> Result<SigningKeyPair> {
        let keys = read_key_file(path)?;
        match keys.as_slice() {
            [k] => Ok(SigningKeyPair::from_seed(*k)),
            _ => Err(RemoteError::Config(format!(
                "secret key file {} must hold exactly one key, found {}",
                path.display(),
                keys.len()
            ))),
        }
    }

    /// The seed as hex, for writing a secret key file.
    pub fn seed_hex(&self) -> String {
        hex(self.key.as_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// Encodes and signs an entry.
    pub fn sign(&self, entry: &Entry) -> Vec<u8> {
        let mut out = body(entry);
        out.extend_from_slice(self.key.verifying_key().as_bytes());
        let sig = self.key.sign(&signed_message(&out));
        out.extend_from_slice(&sig.to_bytes());
        out
    }
}

/// A public key readers may trust.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex(self.0.as_bytes()))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(self.0.as_bytes()))
    }
}

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey> {
        VerifyingKey::from_bytes(bytes).map(PublicKey).map_err(|e| {
            RemoteError::Config(format!("invalid ed25519 public key {}: {e}", hex(bytes)))
        })
    }

    /// Parses one key written as hex or base64.
    pub fn parse(s: &str) -> Result<PublicKey> {
        PublicKey::from_bytes(&parse_key(s)?)
    }
}

/// The keys whose entries a reader accepts.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    pub fn new(keys: Vec<PublicKey>) -> TrustedKeys {
        TrustedKeys { keys }
    }

    /// Reads a trusted-keys file: one public key per line.
    pub fn load(path: &Path) -> Result<TrustedKeys> {
        let keys = read_key_file(path)?
            .iter()
            .map(PublicKey::from_bytes)
            .collect::<Result<Vec<_>>>()?;
        Ok(TrustedKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in the order given.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Checks an entry read for `key`. Only [`Verdict::Valid`] may be used.
    pub fn verify(&self, key: &ActionKey, bytes: &[u8]) -> Verdict {
        let Some(parsed) = parse(bytes) else {
            return Verdict::Malformed;
        };
        let Parsed {
            entry,
            signed,
            signer,
            signature,
        } = parsed;
        if entry.key != *key || entry.key.size() != key.size() {
            return Verdict::WrongKey;
        }
        let Ok(signer) = VerifyingKey::from_bytes(&signer) else {
            return Verdict::Forged;
        };
        if !self.keys.iter().any(|k| k.0 == signer) {
            return Verdict::UntrustedKey(PublicKey(signer));
        }
        let sig = Signature::from_bytes(&signature);
        match signer.verify_strict(&signed_message(signed), &sig) {
            Ok(()) => Verdict::Valid(entry),
            Err(_) => Verdict::Forged,
        }
    }
}

/// What checking an entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a trusted key over exactly these bytes.
    Valid(Entry),
    /// Not an entry in this format (truncated, unsigned, garbage).
    Malformed,
    /// A well-formed entry for another action key.
    WrongKey,
    /// Signed by a key that is not trusted.
    UntrustedKey(PublicKey),
    /// The signature does not match the bytes.
    Forged,
}

impl Verdict {
    /// A word for reports.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Valid(_) => "valid",
            Verdict::Malformed => "malformed or unsigned",
            Verdict::WrongKey => "made for another action key",
            Verdict::UntrustedKey(_) => "signed by an untrusted key",
            Verdict::Forged => "signature does not match",
        }
    }
}

/// The blobs an entry names, without checking its signature: for tiers that list them to
/// the server (so it keeps them alive), never for deciding what to trust.
pub fn peek_blobs(bytes: &[u8]) -> Option<Vec<(BlobDigest, [u8; 32])>> {
    parse(bytes).map(|p| p.entry.blobs)
}

fn body(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(100 + entry.record.len() + entry.blobs.len() * 72);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(entry.key.hash());
    out.extend_from_slice(&entry.key.size().to_le_bytes());
    out.extend_from_slice(&(entry.record.len() as u64).to_le_bytes());
    out.extend_from_slice(&entry.record);
    let n = u32::try_from(entry.blobs.len()).expect("an action names fewer than 2^32 blobs");
    out.extend_from_slice(&n.to_le_bytes());
    for (d, sha) in &entry.blobs {
        out.extend_from_slice(d.hash());
        out.extend_from_slice(&d.size().to_le_bytes());
        out.extend_from_slice(sha);
    }
    out
}

fn signed_message(signed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + signed.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(signed);
    m
}

struct Parsed<'a> {
    entry: Entry,
    /// Every byte the signature covers (after the context).
    signed: &'a [u8],
    signer: [u8; 32],
    signature: [u8; 64],
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

fn parse(bytes: &[u8]) -> Option<Parsed<'_>> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(8)? != MAGIC {
        return None;
    }
    let key = ActionKey::from_parts(c.array()?, c.u64()?);
    let len = usize::try_from(c.u64()?).ok()?;
    let record = c.take(len)?.to_vec();
    let n = u32::from_le_bytes(c.array()?);
    let mut blobs = Vec::new();
    for _ in 0..n {
        let d = BlobDigest::from_parts(c.array()?, c.u64()?);
        blobs.push((d, c.array()?));
    }
    let signer: [u8; 32] = c.array()?;
    let signed = &bytes[..c.pos];
    let signature: [u8; 64] = c.array()?;
    if c.pos != bytes.len() {
        return None;
    }
    Some(Parsed {
        entry: Entry { key, record, blobs },
        signed,
        signer,
        signature,
    })
}

fn parse_key(s: &str) -> Result<[u8; 32]> {
    let s = s.trim();
    let bad =
        || RemoteError::Config("a key must be 64 hex digits or 44 characters of base64".into());
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>>>()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| bad())?
    };
    bytes.try_into().map_err(|_| bad())
}

fn read_key_file(path: &Path) -> Result<Vec<[u8; 32]>> {
    let text = std::fs::read_to_string(path).map_err(|e| RemoteError::io("read", path, e))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| {
            parse_key(l)
                .map_err(|e| RemoteError::Config(format!("{}: key {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            key: ActionKey::of_bytes(b"some action"),
            record: b"a record".to_vec(),
            blobs: vec![(BlobDigest::of_bytes(b"out"), [7; 32])],
        }
    }

    fn writer(n: u8) -> SigningKeyPair {
        SigningKeyPair::from_seed([n; 32])
    }

    #[test]
    fn a_valid_entry_is_accepted_and_round_trips() {
        let w = writer(1);
        let trusted = TrustedKeys::new(vec![w.public()]);
        let e = entry();
        assert_eq!(trusted.verify(&e.key, &w.sign(&e)), Verdict::Valid(e));
    }

    #[test]
    fn an_entry_signed_by_an_untrusted_key_is_refused() {
        let e = entry();
        let trusted = TrustedKeys::new(vec![writer(1).public()]);
        let v = trusted.verify(&e.key, &writer(2).sign(&e));
        assert_eq!(v, Verdict::UntrustedKey(writer(2).public()));
        assert_eq!(
            TrustedKeys::default()
                .verify(&e.key, &writer(1).sign(&e))
                .reason(),
            "signed by an untrusted key"
        );
    }

    #[test]
    fn a_forged_entry_is_refused() {
        let w = writer(1);
        let trusted = TrustedKeys::new(vec![w.public()]);
        let e = entry();
        let good = w.sign(&e);
        // Rewrite one byte of the record ("a record" -> "A record") keeping the signature.
        let mut forged = good.clone();
        let at = good.windows(8).position(|x| x == b"a record").unwrap();
        forged[at] = b'A';
        assert_eq!(trusted.verify(&e.key, &forged), Verdict::Forged);
        // Point a blob at other bytes.
        let mut forged = good.clone();
        let sha_at = good.len() - 64 - 32 - 32;
        forged[sha_at] ^= 1;
        assert_eq!(trusted.verify(&e.key, &forged), Verdict::Forged);
        // Swap in the trusted public key over another key's signature.
        let other = writer(2).sign(&e);
        let mut forged = other.clone();
        let pk_at = other.len() - 64 - 32;
        forged[pk_at..pk_at + 32].copy_from_slice(w.public().0.as_bytes());
        assert_eq!(trusted.verify(&e.key, &forged), Verdict::Forged);
    }

    #[test]
    fn unsigned_truncated_and_misdirected_entries_are_refused() {
        let w = writer(1);
        let trusted = TrustedKeys::new(vec![w.public()]);
        let e = entry();
        let good = w.sign(&e);
        assert_eq!(
            trusted.verify(&e.key, &good[..good.len() - 64]),
            Verdict::Malformed
        );
        assert_eq!(
            trusted.verify(&e.key, &good[..good.len() - 1]),
            Verdict::Malformed
        );
        assert_eq!(trusted.verify(&e.key, b"not an entry"), Verdict::Malformed);
        assert_eq!(
            trusted.verify(&e.key, &[good.clone(), vec![0]].concat()),
            Verdict::Malformed
        );
        let other = ActionKey::of_bytes(b"another action");
        assert_eq!(trusted.verify(&other, &good), Verdict::WrongKey);
    }

    #[test]
    fn generated_keys_differ_and_reload_from_their_seed() {
        let (a, b) = (
            SigningKeyPair::generate().unwrap(),
            SigningKeyPair::generate().unwrap(),
        );
        assert_ne!(a.public(), b.public());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, a.seed_hex()).unwrap();
        assert_eq!(SigningKeyPair::load(&path).unwrap().public(), a.public());
    }

    #[test]
    fn key_files_take_hex_or_base64_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(9);
        let pk = w.public();
        let b64 = base64::engine::general_purpose::STANDARD.encode(pk.0.as_bytes());
        let path = dir.path().join("trusted");
        std::fs::write(&path, format!("# CI main\n{pk}\n\n{b64}\n")).unwrap();
        let t = TrustedKeys::load(&path).unwrap();
        assert_eq!(t.keys, vec![pk, pk]);
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{}\n", w.seed_hex())).unwrap();
        assert_eq!(SigningKeyPair::load(&secret).unwrap().public(), pk);
        std::fs::write(&path, "zz\n").unwrap();
        let err = TrustedKeys::load(&path).unwrap_err().to_string();
        assert!(err.contains("key 1"), "{err}");
        assert!(!format!("{w:?}").contains(&w.seed_hex()));
    }
}
