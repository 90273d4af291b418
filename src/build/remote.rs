//! The shared remote cache of a build: `keel.toml`'s `[remote]` and the command line made
//! into keel-remote tiers, and the engine's [`RemoteCache`] over them.
//!
//! What goes over the wire for one action: the signed entry (keel-remote's format) whose
//! record is an *envelope* — the action record's bytes plus, for each tree output (the
//! repository metadata, an OCI layout), the blob holding the tree's manifest — and every
//! blob the record names. A reader checks the signature, decodes the record and checks
//! that it answers the key it asked for; anything less is a miss, and the action is built
//! locally.
//!
//! Fetching only what is needed: a hit is answered with its record alone, which is all
//! the engine needs to look up what depends on it. Outputs are downloaded (each blob
//! verified against its digest on the way into the store, trees rebuilt from their
//! manifests, and only then the record kept in the local action cache) when something
//! needs them: an action that runs here needs its dependencies' ([`SharedCache::ensure`]),
//! and `keel build` publishes what was asked for ([`SharedCache::materialize`], all side by
//! side). So looking up what depends on a hit downloads nothing, a hit's own
//! dependencies are never downloaded for it, and `keel build image:X` downloads the image
//! alone. An entry whose outputs cannot be had intact is refused from then on and the
//! build runs again to make it here.
//!
//! Logs are not shared: readers get the outputs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use keel_engine::{Action, RemoteCache, RemoteHit};
use keel_remote::grpc::{GrpcConfig, GrpcTier};
use keel_remote::http::{Credentials, HttpConfig, HttpTier};
use keel_remote::signing::{PublicKey, SigningKeyPair, TrustedKeys};
use keel_remote::{BlobSource, DigestMap, Mode, Remote, RemoteConfig, StatsSnapshot, Tier};
use keel_store::{
    ActionKey, ActionRecord, BlobDigest, CompressHint, ObjectRef, Store, Tree, TreeDigest,
};
use serde::{Deserialize, Serialize};

use crate::commands::store::human_bytes;
use crate::config::Tree as TreeConfigFile;

/// The environment variable naming the secret key file that signs what a read-write
/// build uploads (`--remote-signing-key`).
pub const ENV_SIGNING_KEY: &str = "KEEL_REMOTE_SIGNING_KEY";

/// `[remote]` in `keel.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    /// Remote caches tried in order after the local store: `http(s)://` (Bazel's HTTP
    /// cache protocol: nginx + WebDAV, bazel-remote…) or `grpc(s)://` (the Remote
    /// Execution API's cache services: BuildGrid, Buildbarn, BuildBuddy…).
    #[serde(default)]
    pub caches: Vec<String>,
    /// An instance name: a path prefix for HTTP caches, the instance for gRPC ones.
    pub instance: Option<String>,
    /// `read-only`, the only mode a tree can ask for. `read-write` is refused with a
    /// warning: a pull request can edit the tree, so writing is the command line's say
    /// alone (`--remote-read-write`, given by trusted CI).
    pub mode: Option<String>,
    /// Public keys (hex or base64) whose signed entries are accepted.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// A file of trusted public keys, one per line, relative to the tree.
    pub trusted_keys_file: Option<PathBuf>,
    /// Bound on connecting, in seconds (default 5).
    pub connect_timeout: Option<u64>,
    /// Bound on each request and on each read or write of a body, in seconds (default 30).
    pub timeout: Option<u64>,
    /// Bound on one whole transfer (a request and all of its body), in seconds (default
    /// 600): a server that trickles bytes just fast enough for `timeout` cannot hold a
    /// build forever.
    pub transfer_timeout: Option<u64>,
}

/// The command line's say over the remote cache (it wins over `keel.toml`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RemoteArgs {
    /// A remote cache to use after the local store (repeatable; replaces keel.toml's
    /// `remote.caches`): http(s)://… for Bazel's HTTP cache protocol, grpc(s)://… for
    /// the Remote Execution API
    #[arg(long = "remote-cache", value_name = "URL")]
    pub caches: Vec<String>,
    /// Upload what this build makes (trusted CI); needs a signing key
    #[arg(long)]
    pub remote_read_write: bool,
    /// The secret key file signing uploads [env: KEEL_REMOTE_SIGNING_KEY]
    #[arg(long, value_name = "FILE")]
    pub remote_signing_key: Option<PathBuf>,
    /// A file of public keys whose entries are trusted (adds to keel.toml's)
    #[arg(long, value_name = "FILE")]
    pub remote_trusted_keys: Option<PathBuf>,
    /// Build without any remote cache, whatever keel.toml says
    #[arg(long, conflicts_with = "caches")]
    pub no_remote: bool,
}

/// Whether a build's results may be shared through a remote cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploads {
    /// Real builds: a read-write build uploads them.
    Allowed,
    /// Never, for the reason given (the test executor's results are stand-ins).
    Never(&'static str),
}

/// The remote tiers of one build.
#[derive(Debug)]
pub struct SharedCache {
    remote: Remote,
    tmp: PathBuf,
    /// Bytes of verified blobs stored from the remote: what downloads were for.
    fetched: AtomicU64,
    /// Hits answered with their record alone, by key: their outputs are fetched only when
    /// something needs them (an action that runs here, or publishing).
    pending: Mutex<HashMap<ActionKey, Pending>>,
    /// Entries whose outputs could not be fetched intact: misses from now on.
    refused: Mutex<HashSet<ActionKey>>,
    /// Whether an entry was refused since [`SharedCache::take_refusals`] last asked.
    newly_refused: AtomicBool,
}

/// A remote hit whose outputs are still remote.
#[derive(Debug)]
struct Pending {
    name: String,
    record: ActionRecord,
    env: Envelope,
}

/// Opens the remote cache the tree and the command line ask for; `None` when there is
/// none. A tier that cannot be reached at all is left out with a warning; a configuration
/// mistake (a bad URL, a missing key file) is an error.
///
/// Writing comes from the command line only (`--remote-read-write`), never from the tree,
/// and the signing key is read only then: a pull request that edits `keel.toml`, built by
/// CI with `KEEL_REMOTE_SIGNING_KEY` set, can make nothing signed. `uploads` is whether
/// this build's results may be shared at all (the test executor's fakes may not): a
/// read-write build that may not upload is refused.
pub fn open(
    tree: &TreeConfigFile,
    args: &RemoteArgs,
    store: &Store,
    jobs: usize,
    uploads: Uploads,
) -> anyhow::Result<Option<Arc<SharedCache>>> {
    let section = &tree.config.remote;
    let urls = if args.no_remote {
        Vec::new()
    } else if args.caches.is_empty() {
        section.caches.clone()
    } else {
        args.caches.clone()
    };
    if urls.is_empty() {
        return Ok(None);
    }
    let toml = tree.root.join(crate::config::FILE_NAME);
    match section.mode.as_deref() {
        None | Some("read-only") => {}
        Some("read-write") => tracing::warn!(
            "{}: remote.mode = \"read-write\" is ignored (the cache is read-only): a tree \
             cannot make a build upload, since a pull request can edit it; trusted CI passes \
             --remote-read-write",
            toml.display()
        ),
        Some(other) => anyhow::bail!(
            "{}: remote.mode must be \"read-only\" or \"read-write\", not {other:?}",
            toml.display()
        ),
    }
    let mode = if args.remote_read_write {
        Mode::ReadWrite
    } else {
        Mode::ReadOnly
    };
    let mut trusted: Vec<PublicKey> = Vec::new();
    for k in &section.trusted_keys {
        trusted.push(PublicKey::parse(k).with_context(|| {
            format!(
                "{}: remote.trusted_keys",
                tree.root.join(crate::config::FILE_NAME).display()
            )
        })?);
    }
    let files = section
        .trusted_keys_file
        .as_ref()
        .map(|f| tree.root.join(f))
        .into_iter()
        .chain(args.remote_trusted_keys.clone());
    for f in files {
        let keys = TrustedKeys::load(&f)
            .with_context(|| format!("failed to read trusted keys {}", f.display()))?;
        trusted.extend_from_slice(keys.keys());
    }
    // A read-only build never loads a signing key, whatever the environment holds.
    let signing_path = match mode {
        Mode::ReadWrite => args
            .remote_signing_key
            .clone()
            .or_else(|| std::env::var_os(ENV_SIGNING_KEY).map(PathBuf::from)),
        Mode::ReadOnly => None,
    };
    let signer = match (&signing_path, mode) {
        (Some(p), _) => Some(
            SigningKeyPair::load(p)
                .with_context(|| format!("failed to load the signing key {}", p.display()))?,
        ),
        (None, Mode::ReadWrite) => anyhow::bail!(
            "a read-write remote cache signs what it uploads: give a secret key file with \
             --remote-signing-key or {ENV_SIGNING_KEY} (make one with `keel cache keygen FILE`)"
        ),
        (None, Mode::ReadOnly) => None,
    };
    if let (Mode::ReadWrite, Uploads::Never(why)) = (mode, uploads) {
        anyhow::bail!(
            "--remote-read-write: {why}, so nothing of this build may go to a remote cache \
             (drop --remote-read-write, or build with --no-remote)"
        );
    }
    if let Some(s) = &signer {
        // A writer trusts itself: it reads back what it wrote.
        trusted.push(s.public());
    }
    if trusted.is_empty() {
        tracing::warn!(
            "no trusted keys for the remote cache (remote.trusted_keys in keel.toml or \
             --remote-trusted-keys): every entry will be refused"
        );
    }
    let tmp = store.root().join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
    let timeouts = Timeouts {
        connect: Duration::from_secs(section.connect_timeout.unwrap_or(5)),
        io: Duration::from_secs(section.timeout.unwrap_or(30)),
        transfer: Duration::from_secs(section.transfer_timeout.unwrap_or(600)),
    };
    let map = Arc::new(DigestMap::default());
    let mut tiers: Vec<Arc<dyn Tier>> = Vec::new();
    for url in &urls {
        match tier(url, section.instance.as_deref(), mode, timeouts, &tmp, &map)? {
            Some(t) => tiers.push(t),
            None => continue,
        }
    }
    if tiers.is_empty() {
        return Ok(None);
    }
    let remote = Remote::new(
        RemoteConfig {
            mode,
            trusted: TrustedKeys::new(trusted),
            signer,
            jobs: jobs.clamp(4, 16),
        },
        map,
        tiers,
    )?;
    Ok(Some(Arc::new(SharedCache {
        remote,
        tmp,
        fetched: AtomicU64::new(0),
        pending: Mutex::default(),
        refused: Mutex::default(),
        newly_refused: AtomicBool::new(false),
    })))
}

/// The bounds on talking to a remote (see [`RemoteSection`]).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    io: Duration,
    transfer: Duration,
}

/// One tier for `url`; `None` (with a warning) when a gRPC server cannot be reached.
fn tier(
    url: &str,
    instance: Option<&str>,
    mode: Mode,
    Timeouts {
        connect,
        io,
        transfer,
    }: Timeouts,
    tmp: &Path,
    map: &Arc<DigestMap>,
) -> anyhow::Result<Option<Arc<dyn Tier>>> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "http" | "https" => {
            let mut c = HttpConfig::new(url);
            c.instance = instance.map(str::to_owned);
            c.credentials = credentials(url)?;
            c.connect_timeout = connect;
            c.io_timeout = io;
            c.transfer_timeout = transfer;
            c.read_only = mode == Mode::ReadOnly;
            c.temp_dir = tmp.to_owned();
            Ok(Some(Arc::new(HttpTier::new(c, map.clone())?)))
        }
        "grpc" | "grpcs" => {
            let mut c = GrpcConfig::new(url);
            c.instance = instance.unwrap_or_default().to_owned();
            if let Credentials::Bearer(t) = Credentials::from_env() {
                c.token = Some(t);
            }
            c.connect_timeout = connect;
            c.io_timeout = io;
            c.read_only = mode == Mode::ReadOnly;
            c.temp_dir = tmp.to_owned();
            match GrpcTier::connect(c, map.clone()) {
                Ok(t) => Ok(Some(Arc::new(t))),
                Err(keel_remote::RemoteError::Config(m)) => anyhow::bail!(m),
                Err(e) => {
                    tracing::warn!("remote cache {url} left out of this build: {e}");
                    Ok(None)
                }
            }
        }
        _ => anyhow::bail!(
            "remote cache URL {}: expected http://, https://, grpc:// or grpcs://",
            without_credentials(url)
        ),
    }
}

/// `url` with any `user:password@` replaced, fit for a message.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[end..]),
        None => url.to_owned(),
    }
}

/// Credentials for an HTTP cache: from the environment (`KEEL_REMOTE_TOKEN`, or
/// `KEEL_REMOTE_USER` + `KEEL_REMOTE_PASSWORD`), else from `$NETRC` or `~/.netrc`.
fn credentials(url: &str) -> anyhow::Result<Credentials> {
    let env = Credentials::from_env();
    if env != Credentials::None {
        return Ok(env);
    }
    let netrc = std::env::var_os("NETRC")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".netrc")));
    let Some(path) = netrc.filter(|p| p.is_file()) else {
        return Ok(Credentials::None);
    };
    let (endpoint, _) = keel_remote::http::Endpoint::parse(url, None)?;
    Ok(Credentials::from_netrc(&path, &endpoint.host)?.unwrap_or(Credentials::None))
}

const ENVELOPE_MAGIC: &[u8; 8] = b"KEELRE\0\x02";
/// Records are a few KiB; anything claiming more than this is refused, not inflated.
const MAX_RECORD: usize = 64 << 20;

/// What a remote entry's record field holds: the action record (zstd-compressed on the
/// wire: its key inputs are JSON, and entries are most of what a warm build downloads
/// besides the outputs) and the blob holding the manifest of each tree the record names.
#[derive(Debug, PartialEq)]
struct Envelope {
    record: Vec<u8>,
    trees: Vec<(TreeDigest, BlobDigest)>,
}

impl Envelope {
    fn encode(&self) -> Vec<u8> {
        let mut out = ENVELOPE_MAGIC.to_vec();
        out.extend((self.trees.len() as u32).to_le_bytes());
        for (t, b) in &self.trees {
            for (hash, size) in [(t.hash(), t.size()), (b.hash(), b.size())] {
                out.extend(hash);
                out.extend(size.to_le_bytes());
            }
        }
        out.extend(zstd::bulk::compress(&self.record, 19).expect("compressing to memory"));
        out
    }

    fn decode(bytes: &[u8]) -> Option<Envelope> {
        let rest = bytes.strip_prefix(ENVELOPE_MAGIC)?;
        let (n, mut rest) = rest.split_at_checked(4)?;
        let n = u32::from_le_bytes(n.try_into().ok()?) as usize;
        let mut trees = Vec::new();
        let mut part = || -> Option<([u8; 32], u64)> {
            let (h, r) = rest.split_at_checked(32)?;
            let (s, r) = r.split_at_checked(8)?;
            rest = r;
            Some((h.try_into().ok()?, u64::from_le_bytes(s.try_into().ok()?)))
        };
        for _ in 0..n {
            let (th, ts) = part()?;
            let (bh, bs) = part()?;
            trees.push((
                TreeDigest::from_parts(th, ts),
                BlobDigest::from_parts(bh, bs),
            ));
        }
        // Streamed, so memory follows the record's real size: a bulk decode would set
        // aside the whole limit for each of a build's entries.
        let mut record = Vec::new();
        zstd::stream::read::Decoder::new(rest)
            .ok()?
            .take(MAX_RECORD as u64 + 1)
            .read_to_end(&mut record)
            .ok()?;
        (record.len() <= MAX_RECORD).then_some(Envelope { record, trees })
    }
}

/// Fetched blobs this large are also kept plain until they are materialized: writing
/// them out again from the store (decompressing, hashing) is what it saves.
const PLAIN_COPY_MIN: u64 = 4 << 20;

/// Blobs above this are uploaded from a file rather than from memory.
const IN_MEMORY_UPLOAD: u64 = 16 << 20;

impl SharedCache {
    /// Each tier's name and counters so far, and the bytes of blobs stored from them.
    pub fn stats(&self) -> (Vec<(String, StatsSnapshot)>, u64) {
        (self.remote.stats(), self.fetched.load(Ordering::Relaxed))
    }

    /// Fetches into `store` whichever of `blobs` it lacks, side by side. Returns those that
    /// could not be had (a miss, or bytes that did not match: already reported).
    fn fetch_into(&self, store: &Store, blobs: &[BlobDigest]) -> HashSet<BlobDigest> {
        let missing: Vec<BlobDigest> = blobs
            .iter()
            .filter(|d| !store.contains_blob(d))
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // Straight into the store: hashed and compressed as they arrive, kept only if
        // they are the blobs named. What is fetched is about to be published or built
        // with: a large blob is also kept plain, for that to move into place.
        let got = self.remote.land_blobs(&missing, |d| {
            let ingest = store.ingest(CompressHint::Auto);
            if d.size() >= PLAIN_COPY_MIN {
                ingest.keep_plain()
            } else {
                ingest
            }
        });
        let mut failed = HashSet::new();
        for (d, landed) in missing.into_iter().zip(got) {
            if landed {
                self.fetched.fetch_add(d.size(), Ordering::Relaxed);
            } else {
                failed.insert(d);
            }
        }
        failed
    }

    /// Downloads what each record names (blobs, tree manifests and their files) into
    /// `store`, all records' blobs side by side. For each record, whether everything it
    /// names is now stored intact.
    fn fetch_records(&self, store: &Store, records: &[(&ActionRecord, &Envelope)]) -> Vec<bool> {
        let mut blobs = Vec::new();
        let mut ok = vec![true; records.len()];
        // (record, tree, manifest blob)
        let mut wanted_trees = Vec::new();
        for (i, (record, env)) in records.iter().enumerate() {
            let trees: BTreeMap<TreeDigest, BlobDigest> = env.trees.iter().copied().collect();
            for o in record.objects() {
                match o {
                    ObjectRef::Blob(d) => blobs.push(d),
                    ObjectRef::Tree(t) if store.contains_tree(&t) => {}
                    ObjectRef::Tree(t) => {
                        let Some(b) = trees.get(&t) else {
                            tracing::warn!(
                                "remote entry {} names tree {t} without its manifest",
                                record.key
                            );
                            ok[i] = false;
                            continue;
                        };
                        blobs.push(*b);
                        wanted_trees.push((i, t, *b));
                    }
                }
            }
        }
        let failed = self.fetch_into(store, &blobs);
        let mut files = Vec::new();
        let mut manifests = Vec::new();
        for (i, t, b) in wanted_trees {
            if failed.contains(&b) {
                ok[i] = false;
                continue;
            }
            match store
                .read_blob(&b)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| Ok(Tree::from_bytes(&bytes, &t)?))
            {
                Ok(tree) => {
                    files.extend(tree.blobs().copied());
                    manifests.push((i, t, tree));
                }
                Err(e) => {
                    tracing::warn!("remote tree manifest {t} refused: {e:#}");
                    ok[i] = false;
                }
            }
        }
        let failed_files = self.fetch_into(store, &files);
        for (i, t, tree) in manifests {
            if tree.blobs().any(|d| failed_files.contains(d)) {
                ok[i] = false;
            } else if let Err(e) = store.put_tree(&tree) {
                tracing::warn!("cannot store remote tree {t}: {e}");
                ok[i] = false;
            }
        }
        for (i, (record, _)) in records.iter().enumerate() {
            if record.objects().any(|o| match o {
                ObjectRef::Blob(d) => failed.contains(&d),
                ObjectRef::Tree(_) => false,
            }) {
                ok[i] = false;
            }
        }
        ok
    }

    /// Fetches the outputs of the remote hits among `keys` that are still remote and
    /// records them in the local action cache. An entry whose outputs cannot be had intact
    /// is refused (reported, and a miss from now on). `false` if any was.
    pub fn materialize(&self, store: &Store, keys: &[ActionKey]) -> bool {
        let todo: Vec<(ActionKey, Pending)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .filter_map(|k| pending.remove(k).map(|p| (*k, p)))
                .collect()
        };
        if todo.is_empty() {
            return true;
        }
        let records: Vec<(&ActionRecord, &Envelope)> =
            todo.iter().map(|(_, p)| (&p.record, &p.env)).collect();
        let got = self.fetch_records(store, &records);
        let mut all = true;
        for ((key, p), ok) in todo.iter().zip(got) {
            let ok = ok
                && match store.ac_put(&p.record) {
                    // As for a hit from the local store: `explain` and what later builds
                    // learn from the packages find it under its action's name.
                    Ok(_) => {
                        let _ = store.target_set(&p.name, key);
                        true
                    }
                    Err(e) => {
                        tracing::warn!("cannot record {}'s remote result locally: {e}", p.name);
                        false
                    }
                };
            if !ok {
                tracing::warn!(
                    "{}: the remote cache's outputs could not be fetched intact; building it here",
                    p.name
                );
                self.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(*key);
                self.newly_refused.store(true, Ordering::Relaxed);
                all = false;
            }
        }
        all
    }

    /// Makes the outputs of `records` (an action's dependencies) local, fetching those
    /// known only from the remote. `false` if any could not be had.
    pub fn ensure(&self, store: &Store, records: &[&ActionRecord]) -> bool {
        let keys: Vec<ActionKey> = records.iter().map(|r| r.key).collect();
        self.materialize(store, &keys)
    }

    /// Whether an entry was refused since the last call: the build must run again for
    /// those actions to be built here.
    pub fn take_refusals(&self) -> bool {
        self.newly_refused.swap(false, Ordering::Relaxed)
    }
}

/// The envelope and action record of a signed entry's record bytes for `key`, or why
/// they are refused: not a keel envelope, a record that does not decode (an output name
/// that would become a path outside its directory among them), or a record answering
/// another key.
fn decode_entry(bytes: &[u8], key: &ActionKey) -> Result<(Envelope, ActionRecord), String> {
    let env = Envelope::decode(bytes)
        .ok_or_else(|| format!("it is signed but not a keel record ({key})"))?;
    let record = ActionRecord::from_bytes(&env.record, &format!("remote entry {key}"))
        .map_err(|e| e.to_string())?;
    if record.key != *key {
        return Err(format!("it answers another key ({})", record.key));
    }
    Ok((env, record))
}

impl RemoteCache for SharedCache {
    fn lookup(&self, store: &Store, action: &Action, key: &ActionKey) -> Option<RemoteHit> {
        if self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
        {
            return None;
        }
        let entry = self.remote.get_action(key)?;
        let (env, record) = match decode_entry(&entry.record, key) {
            Ok(decoded) => decoded,
            Err(why) => {
                tracing::warn!("remote entry for {} refused: {why}", action.name);
                return None;
            }
        };
        // Outputs already here (another build's, or the same bytes from elsewhere): the
        // hit is local at once.
        let local = record.objects().all(|o| match o {
            ObjectRef::Blob(d) => store.contains_blob(&d),
            ObjectRef::Tree(t) => store.contains_tree(&t),
        });
        if local {
            if let Err(e) = store.ac_put(&record) {
                tracing::warn!("cannot record {}'s remote result locally: {e}", action.name);
                return None;
            }
            return Some(RemoteHit {
                record,
                local: true,
            });
        }
        // Otherwise the record alone: dependents can be looked up with it, and the bytes
        // are fetched only if something needs them (see `materialize`).
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                *key,
                Pending {
                    name: action.name.clone(),
                    record: record.clone(),
                    env,
                },
            );
        Some(RemoteHit {
            record,
            local: false,
        })
    }

    fn publish(&self, store: &Store, action: &Action, record: &ActionRecord) {
        if self.remote.mode() != Mode::ReadWrite {
            return;
        }
        if let Err(e) = self.upload(store, record) {
            tracing::warn!("{}: not shared with the remote cache: {e:#}", action.name);
        }
    }
}

impl SharedCache {
    fn upload(&self, store: &Store, record: &ActionRecord) -> anyhow::Result<()> {
        // The log stays here: no reader needs this machine's log of a build that worked.
        let record = &ActionRecord {
            log: None,
            ..record.clone()
        };
        let scratch = tempfile::Builder::new()
            .prefix("upload.")
            .tempdir_in(&self.tmp)?;
        let mut trees = Vec::new();
        let mut blobs: Vec<BlobDigest> = Vec::new();
        let mut manifests: Vec<(BlobDigest, Vec<u8>)> = Vec::new();
        for o in record.objects() {
            match o {
                ObjectRef::Blob(d) => blobs.push(d),
                ObjectRef::Tree(t) => {
                    let tree = store.get_tree(&t)?;
                    let bytes = tree.encode();
                    let b = BlobDigest::of_bytes(&bytes);
                    trees.push((t, b));
                    blobs.extend(tree.blobs().copied());
                    manifests.push((b, bytes));
                }
            }
        }
        blobs.sort();
        blobs.dedup();
        // Small blobs from memory, big ones from a file: re-readable either way, for retries.
        let mut held: Vec<(BlobDigest, Held)> = Vec::new();
        for d in &blobs {
            if d.size() <= IN_MEMORY_UPLOAD {
                held.push((*d, Held::Bytes(store.read_blob(d)?)));
            } else {
                let p = scratch.path().join(d.to_hex());
                store.materialize_blob(d, &p, 0o600)?;
                held.push((*d, Held::File(p)));
            }
        }
        for (b, bytes) in manifests {
            held.push((b, Held::Bytes(bytes)));
        }
        let sources: Vec<(BlobDigest, BlobSource<'_>)> = held
            .iter()
            .map(|(d, h)| {
                (
                    *d,
                    match h {
                        Held::Bytes(b) => BlobSource::Bytes(b),
                        Held::File(p) => BlobSource::Path(p),
                    },
                )
            })
            .collect();
        let env = Envelope {
            record: record.to_bytes(),
            trees,
        };
        self.remote
            .put_action(&record.key, &env.encode(), &sources)?;
        Ok(())
    }
}

enum Held {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// The counters of every build, per remote cache, kept in the store for `keel cache
/// stats`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatsFile {
    pub tiers: BTreeMap<String, TierTotals>,
}

/// One remote cache's totals, and its last build's.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct TierTotals {
    pub builds: u64,
    pub total: Counters,
    pub last: Counters,
}

/// The counters keel keeps of a remote cache.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub bytes_down: u64,
    /// Of `bytes_down`, the outputs the build stored (the rest: entries, and downloads
    /// that failed verification).
    #[serde(default)]
    pub output_bytes: u64,
    pub bytes_up: u64,
    pub uploads: u64,
    pub uploads_skipped: u64,
    pub verify_failures: u64,
    pub rejected_entries: u64,
    pub errors: u64,
}

impl From<StatsSnapshot> for Counters {
    fn from(s: StatsSnapshot) -> Counters {
        Counters {
            output_bytes: 0,
            hits: s.ac_hits,
            misses: s.ac_misses,
            bytes_down: s.bytes_down,
            bytes_up: s.bytes_up,
            uploads: s.uploads,
            uploads_skipped: s.uploads_skipped,
            verify_failures: s.verify_failures,
            rejected_entries: s.rejected_entries,
            errors: s.errors,
        }
    }
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.bytes_down += o.bytes_down;
        self.output_bytes += o.output_bytes;
        self.bytes_up += o.bytes_up;
        self.uploads += o.uploads;
        self.uploads_skipped += o.uploads_skipped;
        self.verify_failures += o.verify_failures;
        self.rejected_entries += o.rejected_entries;
        self.errors += o.errors;
    }

    /// "3 hits, 1 miss, 1.2 MiB down, 0 B up" and the trouble, if any.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} hit(s), {} miss(es), {} down ({} of outputs), {} up",
            self.hits,
            self.misses,
            human_bytes(self.bytes_down),
            human_bytes(self.output_bytes),
            human_bytes(self.bytes_up)
        );
        for (n, what) in [
            (
                self.verify_failures,
                "download(s) not matching their digest",
            ),
            (
                self.rejected_entries,
                "entry(ies) refused (unsigned or untrusted)",
            ),
            (self.errors, "failed request(s)"),
        ] {
            if n > 0 {
                s.push_str(&format!(", {n} {what}"));
            }
        }
        s
    }
}

pub fn stats_path(store_root: &Path) -> PathBuf {
    store_root.join("remote-stats.json")
}

/// One build's counters per remote: the tiers' own, with the output bytes stored (known
/// for the build as a whole: they are counted against the first tier).
pub fn build_counters(stats: &(Vec<(String, StatsSnapshot)>, u64)) -> Vec<(String, Counters)> {
    let (tiers, fetched) = stats;
    tiers
        .iter()
        .enumerate()
        .map(|(i, (name, snap))| {
            let mut c = Counters::from(*snap);
            if i == 0 {
                c.output_bytes = *fetched;
            }
            (name.clone(), c)
        })
        .collect()
}

/// Adds one build's counters to the store's totals.
pub fn record_stats(store_root: &Path, build: &[(String, Counters)]) {
    let path = stats_path(store_root);
    let mut file: StatsFile = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    for (name, c) in build {
        let t = file.tiers.entry(name.clone()).or_default();
        t.builds += 1;
        t.total.add(c);
        t.last = *c;
    }
    let tmp = path.with_extension("json.tmp");
    let ok = serde_json::to_vec_pretty(&file)
        .ok()
        .and_then(|b| std::fs::write(&tmp, b).ok())
        .and_then(|()| std::fs::rename(&tmp, &path).ok());
    if ok.is_none() {
        tracing::warn!(
            "could not save remote cache statistics to {}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_a_message() {
        assert_eq!(
            without_credentials("ftp://me:secret@cache.example/keel"),
            "ftp://***@cache.example/keel"
        );
        assert_eq!(
            without_credentials("ftp://cache.example/a@b"),
            "ftp://cache.example/a@b"
        );
    }

    /// A record for `key` with one output named `name`, enveloped and signed by `writer`
    /// as a read-write build would upload it.
    fn signed_entry(writer: &SigningKeyPair, key: ActionKey, name: &str) -> Vec<u8> {
        let blob = BlobDigest::of_bytes(b"#!/bin/sh\necho owned\n");
        let record = ActionRecord::new(
            key,
            vec![keel_store::ActionOutput {
                name: name.into(),
                object: ObjectRef::Blob(blob),
            }],
            "{}".into(),
        );
        let env = Envelope {
            record: record.to_bytes(),
            trees: Vec::new(),
        };
        writer.sign(&keel_remote::signing::Entry {
            key,
            record: env.encode(),
            blobs: vec![(blob, [7; 32])],
        })
    }

    #[test]
    fn signed_entries_with_output_names_outside_their_directory_are_refused() {
        let writer = SigningKeyPair::from_seed([9; 32]);
        let trusted = TrustedKeys::new(vec![writer.public()]);
        let key = ActionKey::from_parts([5; 32], 64);
        for bad in ["/etc/cron.d/keel", "../../.bashrc", "RPMS/../../x.rpm", ""] {
            let bytes = signed_entry(&writer, key, bad);
            // The signature is good: only the name gives the entry away.
            let keel_remote::signing::Verdict::Valid(entry) = trusted.verify(&key, &bytes) else {
                panic!("the crafted entry for {bad:?} is not validly signed");
            };
            let why = decode_entry(&entry.record, &key).expect_err(bad);
            assert!(why.contains("not a plain file name"), "{bad:?}: {why}");
            assert!(why.contains(&format!("{bad:?}")), "{bad:?}: {why}");
        }
        let bytes = signed_entry(&writer, key, "hello-1.0-1.x86_64.rpm");
        let keel_remote::signing::Verdict::Valid(entry) = trusted.verify(&key, &bytes) else {
            panic!("the crafted entry is not validly signed");
        };
        let (_, record) = decode_entry(&entry.record, &key).unwrap();
        assert_eq!(record.outputs[0].name, "hello-1.0-1.x86_64.rpm");
        assert!(decode_entry(&entry.record, &ActionKey::from_parts([6; 32], 64)).is_err());
    }

    #[test]
    fn envelopes_round_trip_and_garbage_is_refused() {
        let env = Envelope {
            record: b"record bytes".to_vec(),
            trees: vec![(
                TreeDigest::from_parts([1; 32], 10),
                BlobDigest::from_parts([2; 32], 20),
            )],
        };
        assert_eq!(Envelope::decode(&env.encode()), Some(env));
        assert_eq!(Envelope::decode(b"KEELRE\0\x02\x05\0\0\0short"), None);
        // Trees fine, record not zstd.
        assert_eq!(Envelope::decode(b"KEELRE\0\x02\0\0\0\0not zstd"), None);
        assert_eq!(Envelope::decode(b"something else"), None);
        // A record that inflates past the limit is refused, not inflated whole.
        let bomb = Envelope {
            record: vec![0; MAX_RECORD + 1],
            trees: Vec::new(),
        };
        assert_eq!(Envelope::decode(&bomb.encode()), None);
        let limit = Envelope {
            record: vec![0; MAX_RECORD],
            trees: Vec::new(),
        };
        assert_eq!(
            Envelope::decode(&limit.encode()).map(|e| e.record.len()),
            Some(MAX_RECORD)
        );
    }
}
