//! `GrpcTier` against a real BuildGrid.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_remote::grpc::{GrpcConfig, GrpcTier};
use keel_remote::signing::{SigningKeyPair, TrustedKeys};
use keel_remote::{
    BlobSource, DigestFunction, DigestMap, Mode, Remote, RemoteConfig, RemoteError, Tier,
};
use keel_store::{ActionKey, BlobDigest};

use crate::support::{buildgrid, dead_port};

fn tier(map: Arc<DigestMap>, f: impl FnOnce(&mut GrpcConfig)) -> GrpcTier {
    let mut c = GrpcConfig::new(buildgrid().url());
    c.batch_limit = 256 * 1024;
    c.backoff = Duration::from_millis(10);
    f(&mut c);
    GrpcTier::connect(c, map).unwrap()
}

fn blob(n: usize, seed: u8) -> (Vec<u8>, BlobDigest) {
    let bytes: Vec<u8> = (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect();
    let d = BlobDigest::of_bytes(&bytes);
    (bytes, d)
}

#[test]
fn buildgrid_negotiates_sha256_and_round_trips_batch_and_bytestream_blobs() {
    let map = Arc::new(DigestMap::default());
    let t = tier(map.clone(), |_| {});
    assert_eq!(t.digest_function(), DigestFunction::Sha256);
    let (small, ds) = blob(10_000, 1);
    let (large, dl) = blob(3 << 20, 2); // over the batch limit: ByteStream
    let (_, absent) = blob(77, 3);
    t.put_blob(&ds, BlobSource::Bytes(&small)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large");
    std::fs::write(&path, &large).unwrap();
    t.put_blob(&dl, BlobSource::Path(&path)).unwrap();
    map.insert(&absent, [0xab; 32]);
    assert_eq!(
        t.has_blobs(&[ds, dl, absent]).unwrap(),
        vec![true, true, false]
    );

    // A fresh tier that learned the SHA-256s reads them back, verified.
    let map2 = Arc::new(DigestMap::default());
    map2.insert(&ds, map.get(&ds).unwrap());
    map2.insert(&dl, map.get(&dl).unwrap());
    map2.insert(&absent, [0xab; 32]);
    let r = tier(map2, |_| {});
    let mut out = Vec::new();
    assert!(r.get_blob(&ds, &mut out).unwrap());
    assert_eq!(out, small);
    out.clear();
    assert!(r.get_blob(&dl, &mut out).unwrap());
    assert!(out == large, "the ByteStream download differs");
    assert!(!r.get_blob(&absent, &mut Vec::new()).unwrap());
    let s = r.stats().snapshot();
    assert_eq!((s.cas_hits, s.cas_misses, s.verify_failures), (2, 1, 0));
    assert_eq!(s.bytes_down, (small.len() + large.len()) as u64);
    assert_eq!(
        t.stats().snapshot().bytes_up,
        (small.len() + large.len()) as u64
    );
}

#[test]
fn buildgrid_action_cache_round_trips_signed_entries_from_machine_a_to_b() {
    let signer = SigningKeyPair::from_seed([5; 32]);
    let trusted = || TrustedKeys::new(vec![SigningKeyPair::from_seed([5; 32]).public()]);
    let map = Arc::new(DigestMap::default());
    let a = Remote::new(
        RemoteConfig {
            mode: Mode::ReadWrite,
            trusted: trusted(),
            signer: Some(signer),
            jobs: 4,
        },
        map.clone(),
        vec![Arc::new(tier(map, |_| {}))],
    )
    .unwrap();
    let outs: Vec<_> = (0..8)
        .map(|i| {
            blob(
                1000 * (i + 1) + if i == 7 { 600_000 } else { 0 },
                40 + i as u8,
            )
        })
        .collect();
    let src: Vec<_> = outs
        .iter()
        .map(|(b, d)| (*d, BlobSource::Bytes(b)))
        .collect();
    let key = ActionKey::of_bytes(b"grpc action");
    let rep = a.put_action(&key, b"the record", &src).unwrap();
    assert!(rep[0].entry_written, "{rep:?}");
    assert_eq!(rep[0].uploaded + rep[0].skipped, 8);

    let map_b = Arc::new(DigestMap::default());
    let b = Remote::new(
        RemoteConfig {
            mode: Mode::ReadOnly,
            trusted: trusted(),
            signer: None,
            jobs: 4,
        },
        map_b.clone(),
        vec![Arc::new(tier(map_b, |c| c.read_only = true))],
    )
    .unwrap();
    let entry = b.get_action(&key).expect("hit");
    assert_eq!(entry.record, b"the record");
    let dir = tempfile::tempdir().unwrap();
    let wanted: Vec<_> = entry.blobs.iter().map(|(d, _)| *d).collect();
    for ((bytes, _), got) in outs.iter().zip(b.fetch_blobs(&wanted, dir.path())) {
        assert!(std::fs::read(got.expect("fetched")).unwrap() == *bytes);
    }
    assert_eq!(b.get_action(&ActionKey::of_bytes(b"never built")), None);

    // An untrusting reader refuses the same entry.
    let map_c = Arc::new(DigestMap::default());
    let c = Remote::new(
        RemoteConfig {
            mode: Mode::ReadOnly,
            trusted: TrustedKeys::new(vec![SigningKeyPair::from_seed([6; 32]).public()]),
            signer: None,
            jobs: 1,
        },
        map_c.clone(),
        vec![Arc::new(tier(map_c, |_| {}))],
    )
    .unwrap();
    assert_eq!(c.get_action(&key), None);
    assert_eq!(c.stats()[0].1.rejected_entries, 1);
}

#[test]
fn buildgrid_read_only_tier_never_writes() {
    let map = Arc::new(DigestMap::default());
    let t = tier(map.clone(), |c| c.read_only = true);
    let (bytes, d) = blob(500, 9);
    let err = t.put_blob(&d, BlobSource::Bytes(&bytes)).unwrap_err();
    assert!(matches!(err, RemoteError::UploadRefused { .. }), "{err}");
    assert!(t.put_action(&ActionKey::of_bytes(b"ro"), b"x").is_err());
    assert_eq!(t.has_blobs(&[d]).unwrap(), vec![false]);
    assert_eq!(t.get_action(&ActionKey::of_bytes(b"ro")).unwrap(), None);
}

#[test]
fn an_instance_without_an_action_cache_is_an_error_not_a_hang() {
    let t = tier(Arc::new(DigestMap::default()), |c| {
        c.instance = "ro".into();
        c.retries = 0;
    });
    let err = t.get_action(&ActionKey::of_bytes(b"k")).unwrap_err();
    assert!(matches!(err, RemoteError::Grpc { .. }), "{err}");
    assert!(err.to_string().contains(&buildgrid().url()), "{err}");
}

#[test]
fn a_dead_grpc_server_fails_fast() {
    let url = format!("grpc://127.0.0.1:{}", dead_port());
    let mut c = GrpcConfig::new(&url);
    c.retries = 1;
    c.backoff = Duration::from_millis(10);
    c.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = GrpcTier::connect(c, Arc::new(DigestMap::default())).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains(&url), "{err}");
}

#[test]
fn a_hanging_grpc_server_is_bounded_by_the_timeout() {
    // A stand-in for a wedged server: accepts connections and never says anything.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let url = format!("grpc://127.0.0.1:{port}");
    let mut c = GrpcConfig::new(&url);
    c.retries = 1;
    c.backoff = Duration::from_millis(10);
    c.io_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = GrpcTier::connect(c, Arc::new(DigestMap::default())).unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // tonic reports its own client-side timeout as CANCELLED "Timeout expired".
    let msg = err.to_string();
    assert!(
        msg.contains("Timeout expired") || msg.contains("no answer within"),
        "{msg}"
    );
}

/// A landing that, like the store's, spreads its work over rayon while a download runs.
struct ParallelLanding {
    place: std::path::PathBuf,
    bytes: Vec<u8>,
}

impl keel_remote::Landing for ParallelLanding {
    fn place(&self) -> &std::path::Path {
        &self.place
    }
    fn start(&mut self) -> std::io::Result<()> {
        self.bytes.clear();
        Ok(())
    }
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        use rayon::prelude::*;
        let sums: Vec<u64> = chunk
            .par_chunks(4096)
            .map(|c| {
                std::thread::sleep(Duration::from_micros(200));
                c.iter().map(|&b| u64::from(b)).sum()
            })
            .collect();
        assert_eq!(sums.len(), chunk.len().div_ceil(4096));
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }
    fn finish(&mut self, _expected: &BlobDigest) -> std::io::Result<BlobDigest> {
        Ok(BlobDigest::of_bytes(&self.bytes))
    }
}

/// Downloads used to run on a rayon pool and block on the tier's runtime there: a landing
/// that used rayon let the waiting worker steal a second download and enter the runtime
/// again from the same thread, and tokio panicked ("Cannot start a runtime from within a
/// runtime").
#[test]
fn parallel_downloads_into_landings_that_use_rayon_all_land() {
    let map = Arc::new(DigestMap::default());
    let t = tier(map.clone(), |_| {});
    let blobs: Vec<(Vec<u8>, BlobDigest)> = (0..32)
        .map(|i| blob(if i % 2 == 0 { 400_000 } else { 50_000 }, 40 + i as u8))
        .collect();
    for (bytes, d) in &blobs {
        t.put_blob(d, BlobSource::Bytes(bytes)).unwrap();
    }
    let r = Remote::new(
        RemoteConfig {
            mode: Mode::ReadOnly,
            trusted: TrustedKeys::new(vec![]),
            signer: None,
            jobs: 8,
        },
        map.clone(),
        vec![Arc::new(tier(map, |_| {}))],
    )
    .unwrap();
    let digests: Vec<BlobDigest> = blobs.iter().map(|(_, d)| *d).collect();
    let dir = tempfile::tempdir().unwrap();
    // The old failure needed a particular interleaving: give it several chances.
    for _ in 0..4 {
        let landed = r.land_blobs(&digests, |d| ParallelLanding {
            place: dir.path().join(d.to_hex()),
            bytes: Vec::new(),
        });
        assert_eq!(landed, vec![true; blobs.len()]);
    }
}
