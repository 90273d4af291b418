//! Benchmarks of the content-addressed store (issue 2, "Measured").
//!
//! Every input is generated here, in a temporary directory (`TMPDIR` chooses where; it
//! should be a real disk, since puts fsync). Inputs are built lazily, the first time a
//! benchmark that needs them runs, so `cargo bench --bench store -- stat_cache` does not
//! write the 1 GiB file. Contents are pseudo-random, hence incompressible: the store keeps
//! them raw, as it does source tarballs.
//!
//! - `hash_1gib/threads/N`: [`keel_store::hash_file`] of a 1 GiB file (page cache warm) in a
//!   rayon pool of N threads. The whole-process comparison with `b3sum` is
//!   `benches/compare_b3sum.sh`.
//! - `small_blobs/put_one_of_10k`, `small_blobs/get_10k`: 10,000 blobs of 1–4 KiB put one
//!   by one into a fresh store (each put writes, fsyncs and renames one object, so the time
//!   is per put), and all 10,000 read back verified (the time is per 10,000).
//! - `big_blob/put_file_1gib`, `big_blob/write_blob_to_1gib`: one 1 GiB file into a fresh
//!   store, and back out into `io::sink()`.
//! - `stat_cache/hit_one_file`, `stat_cache/recheck_10k_files`: `stat_lookup` and
//!   `file_digest` of a settled, unchanged file, and `file_digest` over 10,000 of them.
//!
//! The `baseline_*` benchmarks beside them do the same I/O without the store (write, fsync
//! and rename a file; copy a file; read a file; `stat(2)`): the floor that the disk and
//! kernel set. On a shared, busy machine the ratio of a store operation to its baseline,
//! measured in the same run, says more than either number alone.
//!
//! Targets (issue 2): hashing at ≥ 90% of b3sum's throughput at the same thread count; a
//! stat-cache hit under 2 µs; re-checking 10,000 unchanged files under 50 ms. A benchmark
//! reports; it does not fail on a slow machine.

use std::cell::OnceCell;
use std::fs::File;
use std::hint::black_box;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use keel_store::{BlobDigest, RACY_WINDOW_NS, StatLookup, Store};
use tempfile::TempDir;

const GIB: u64 = 1 << 30;
const SMALL_BLOBS: usize = 10_000;
const SETTLED_FILES: usize = 10_000;

/// A xorshift64 stream: fast, deterministic, and incompressible enough for zstd's trial.
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Noise {
        // Never zero, or xorshift stays at zero.
        Noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// A 1 GiB file of noise, written through to the disk so that its writeback does not land
/// in the middle of a measurement.
struct BigFile {
    _dir: TempDir,
    path: PathBuf,
}

impl BigFile {
    fn create() -> BigFile {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("big.bin");
        let mut file = io::BufWriter::with_capacity(1 << 20, File::create(&path).expect("create"));
        let mut noise = Noise::new(1);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..(GIB >> 20) {
            noise.fill(&mut buf);
            file.write_all(&buf).expect("write the 1 GiB input");
        }
        let file = file.into_inner().expect("flush the 1 GiB input");
        file.sync_all().expect("sync the 1 GiB input");
        BigFile { _dir: dir, path }
    }
}

/// 10,000 blobs of 1–4 KiB.
fn small_blobs() -> Vec<Vec<u8>> {
    let mut noise = Noise::new(2);
    (0..SMALL_BLOBS)
        .map(|_| {
            let len = 1024 + (noise.next() % (3 * 1024 + 1)) as usize;
            let mut blob = vec![0u8; len];
            noise.fill(&mut blob);
            blob
        })
        .collect()
}

/// A fresh, empty store in its own temporary directory.
fn fresh_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = Store::open(&dir.path().join("store")).expect("open a fresh store");
    (dir, store)
}

/// 10,000 small files whose stat-cache entries are trusted: created, left to age past the
/// racy window (their ctime cannot be set back), then hashed once to record the entries.
struct SettledFiles {
    _dir: TempDir,
    store: Store,
    files: Vec<PathBuf>,
}

impl SettledFiles {
    fn create() -> SettledFiles {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("create the source directory");
        let mut noise = Noise::new(3);
        let files: Vec<PathBuf> = (0..SETTLED_FILES)
            .map(|i| {
                // A few hundred files per directory, like a source tree.
                let sub = src.join(format!("d{:02}", i / 250));
                if i % 250 == 0 {
                    std::fs::create_dir(&sub).expect("create a source subdirectory");
                }
                let path = sub.join(format!("f{i:05}.c"));
                let mut bytes = vec![0u8; 256 + (noise.next() % 4096) as usize];
                noise.fill(&mut bytes);
                std::fs::write(&path, &bytes).expect("write a source file");
                path
            })
            .collect();
        let racy = Duration::from_nanos(RACY_WINDOW_NS as u64);
        std::thread::sleep(racy + Duration::from_millis(100));
        let store = Store::open(&dir.path().join("store")).expect("open a fresh store");
        for f in &files {
            store.file_digest(f).expect("hash a source file");
        }
        for f in &files {
            let found = store.stat_lookup(f).expect("stat a source file");
            assert!(
                matches!(found, StatLookup::Hit(_)),
                "stat cache does not vouch for settled file {}",
                f.display()
            );
        }
        SettledFiles {
            _dir: dir,
            store,
            files,
        }
    }
}

/// Inputs shared between benchmarks, built on first use and removed when `main` returns.
#[derive(Default)]
struct Inputs {
    big: OnceCell<BigFile>,
    small: OnceCell<Vec<Vec<u8>>>,
    small_stored: OnceCell<(TempDir, Store, Vec<BlobDigest>)>,
    big_stored: OnceCell<(TempDir, Store, BlobDigest)>,
    settled: OnceCell<SettledFiles>,
}

impl Inputs {
    fn big(&self) -> &Path {
        &self.big.get_or_init(BigFile::create).path
    }

    fn small(&self) -> &[Vec<u8>] {
        self.small.get_or_init(small_blobs)
    }
}

fn hashing(c: &mut Criterion, inputs: &Inputs) {
    let mut g = c.benchmark_group("hash_1gib");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(GIB));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("build a rayon pool");
        g.bench_function(format!("threads/{threads}"), |b| {
            let path = inputs.big();
            b.iter(|| pool.install(|| keel_store::hash_file(path).expect("hash the input")));
        });
    }
    g.finish();
}

fn small(c: &mut Criterion, inputs: &Inputs) {
    let mut g = c.benchmark_group("small_blobs");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    // Each put fsyncs one object, which costs milliseconds on most disks: 10,000 of them
    // per criterion iteration would make ten samples take many minutes. So an iteration
    // is one put, walking through the 10,000 blobs into a store that starts empty and is
    // replaced by a fresh one (untimed) after the last of them: the mean over a sample is
    // the mean over stores holding 0 to 10,000 blobs, and 10,000 puts take 10,000 times it.
    let mut filling: Option<(TempDir, Store)> = None;
    let mut next = 0usize;
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_one_of_10k", |b| {
        let blobs = inputs.small();
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if next == 0 {
                    // Drop the full store before opening the next one.
                    filling = None;
                    filling = Some(fresh_store());
                }
                let (_, store) = filling.as_ref().expect("a store is open");
                let start = Instant::now();
                black_box(store.put_bytes(&blobs[next]).expect("put a small blob"));
                spent += start.elapsed();
                next = (next + 1) % blobs.len();
            }
            spent
        });
    });
    drop(filling);
    // The floor under a put: the same bytes written to a new file, fsynced and renamed,
    // with no hashing, compression decision or index.
    let mut filling: Option<TempDir> = None;
    let mut next = 0usize;
    g.bench_function("baseline_write_fsync_rename_one", |b| {
        let blobs = inputs.small();
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if next == 0 {
                    filling = None;
                    filling = Some(tempfile::tempdir().expect("create a temporary directory"));
                }
                let dir = filling.as_ref().expect("a directory is open").path();
                let tmp = dir.join(format!("tmp-{next}"));
                let dest = dir.join(format!("obj-{next}"));
                let start = Instant::now();
                write_fsync_rename(&blobs[next], &tmp, &dest);
                spent += start.elapsed();
                next = (next + 1) % blobs.len();
            }
            spent
        });
    });
    drop(filling);
    g.throughput(Throughput::Elements(SMALL_BLOBS as u64));
    g.bench_function("get_10k", |b| {
        let (_, store, digests) = inputs.small_stored.get_or_init(|| {
            let (dir, store) = fresh_store();
            let digests = inputs
                .small()
                .iter()
                .map(|blob| store.put_bytes(blob).expect("put a small blob"))
                .collect();
            (dir, store, digests)
        });
        b.iter(|| {
            for d in digests {
                black_box(store.read_blob(d).expect("read a small blob"));
            }
        });
    });
    g.finish();
}

fn big(c: &mut Criterion, inputs: &Inputs) {
    let mut g = c.benchmark_group("big_blob");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15))
        .throughput(Throughput::Bytes(GIB));
    g.bench_function("put_file_1gib", |b| {
        let path = inputs.big();
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (dir, store) = fresh_store();
                let start = Instant::now();
                black_box(store.put_file(path).expect("put the 1 GiB file"));
                spent += start.elapsed();
                drop(store);
                drop(dir);
            }
            spent
        });
    });
    // The floor under a put of a big file: copied through a buffer into a new file and
    // fsynced, with no hashing.
    g.bench_function("baseline_copy_fsync_1gib", |b| {
        let path = inputs.big();
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("create a temporary directory");
                let dest = dir.path().join("copy");
                let start = Instant::now();
                copy_fsync(path, &dest);
                spent += start.elapsed();
                drop(dir);
            }
            spent
        });
    });
    g.bench_function("write_blob_to_1gib", |b| {
        let (_, store, digest) = inputs.big_stored.get_or_init(|| {
            let (dir, store) = fresh_store();
            let digest = store.put_file(inputs.big()).expect("put the 1 GiB file");
            (dir, store, digest)
        });
        b.iter(|| {
            let n = store
                .write_blob_to(digest, &mut io::sink())
                .expect("read the 1 GiB blob");
            assert_eq!(n, GIB);
        });
    });
    // The floor under a read: the source file read once into `io::sink()`, unverified.
    g.bench_function("baseline_read_1gib", |b| {
        let path = inputs.big();
        b.iter(|| {
            let mut file = File::open(path).expect("open the 1 GiB file");
            let n = read_to_sink(&mut file);
            assert_eq!(n, GIB);
        });
    });
    g.finish();
}

fn stat_cache(c: &mut Criterion, inputs: &Inputs) {
    let mut g = c.benchmark_group("stat_cache");
    g.bench_function("hit_one_file/stat_lookup", |b| {
        let settled = inputs.settled.get_or_init(SettledFiles::create);
        let file = &settled.files[0];
        b.iter(|| {
            let found = settled.store.stat_lookup(black_box(file)).expect("stat");
            debug_assert!(matches!(found, StatLookup::Hit(_)));
            found
        });
    });
    // The floor under a hit: the stat(2) call that every lookup makes.
    g.bench_function("hit_one_file/baseline_stat", |b| {
        let settled = inputs.settled.get_or_init(SettledFiles::create);
        let file = &settled.files[0];
        b.iter(|| std::fs::metadata(black_box(file)).expect("stat"));
    });
    g.bench_function("hit_one_file/file_digest", |b| {
        let settled = inputs.settled.get_or_init(SettledFiles::create);
        let file = &settled.files[0];
        b.iter(|| settled.store.file_digest(black_box(file)).expect("digest"));
    });
    g.sample_size(20)
        .throughput(Throughput::Elements(SETTLED_FILES as u64));
    // The same on every core, as a build checks its inputs.
    g.bench_function("recheck_10k_files/file_digests_parallel", |b| {
        let settled = inputs.settled.get_or_init(SettledFiles::create);
        let paths: Vec<&Path> = settled.files.iter().map(PathBuf::as_path).collect();
        b.iter(|| {
            for d in settled.store.file_digests(&paths) {
                black_box(d.expect("digest"));
            }
        });
    });
    g.bench_function("recheck_10k_files/file_digest", |b| {
        let settled = inputs.settled.get_or_init(SettledFiles::create);
        b.iter(|| {
            for f in &settled.files {
                black_box(settled.store.file_digest(f).expect("digest"));
            }
        });
    });
    g.bench_function("recheck_10k_files/baseline_stat", |b| {
        let settled = inputs.settled.get_or_init(SettledFiles::create);
        b.iter(|| {
            for f in &settled.files {
                black_box(std::fs::metadata(f).expect("stat"));
            }
        });
    });
    g.finish();
}

fn write_fsync_rename(bytes: &[u8], tmp: &Path, dest: &Path) {
    let mut file = File::create(tmp).expect("create a temporary file");
    file.write_all(bytes).expect("write a temporary file");
    file.sync_data().expect("sync a temporary file");
    std::fs::rename(tmp, dest).expect("rename a temporary file");
}

fn copy_fsync(src: &Path, dest: &Path) {
    let mut from = File::open(src).expect("open the source");
    let mut to = File::create(dest).expect("create the copy");
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = io::Read::read(&mut from, &mut buf).expect("read the source");
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).expect("write the copy");
    }
    to.sync_data().expect("sync the copy");
}

fn read_to_sink(file: &mut File) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = io::Read::read(file, &mut buf).expect("read");
        if n == 0 {
            return total;
        }
        total += n as u64;
        black_box(&buf[..n]);
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let inputs = Inputs::default();
    hashing(&mut c, &inputs);
    small(&mut c, &inputs);
    big(&mut c, &inputs);
    stat_cache(&mut c, &inputs);
    // Removes the temporary directories before criterion's summary.
    drop(inputs);
    c.final_summary();
}
