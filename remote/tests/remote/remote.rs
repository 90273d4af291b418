//! `Remote`: signed entries, trust, ordering and modes, over real nginx.

use std::sync::Arc;

use keel_remote::http::HttpTier;
use keel_remote::signing::{SigningKeyPair, TrustedKeys};
use keel_remote::{BlobSource, DigestFunction, DigestMap, Mode, Remote, RemoteConfig, Tier};
use keel_store::{ActionKey, BlobDigest};

use crate::support::{Nginx, count_warnings, dead_port, tier_with_map};

fn remote(url: &str, mode: Mode, signer: Option<u8>, trusted: &[u8]) -> Remote {
    let map = Arc::new(DigestMap::default());
    let t: HttpTier = tier_with_map(url, map.clone(), |c| c.read_only = mode == Mode::ReadOnly);
    remote_over(vec![Arc::new(t)], map, mode, signer, trusted)
}

fn remote_over(
    tiers: Vec<Arc<dyn Tier>>,
    map: Arc<DigestMap>,
    mode: Mode,
    signer: Option<u8>,
    trusted: &[u8],
) -> Remote {
    let config = RemoteConfig {
        mode,
        trusted: TrustedKeys::new(
            trusted
                .iter()
                .map(|&n| SigningKeyPair::from_seed([n; 32]).public())
                .collect(),
        ),
        signer: signer.map(|n| SigningKeyPair::from_seed([n; 32])),
        jobs: 4,
    };
    Remote::new(config, map, tiers).unwrap()
}

fn blobs(n: usize) -> Vec<(Vec<u8>, BlobDigest)> {
    (0..n)
        .map(|i| {
            let b = format!("output {i} ").repeat(i * 100 + 1).into_bytes();
            let d = BlobDigest::of_bytes(&b);
            (b, d)
        })
        .collect()
}

#[test]
fn machine_b_reads_what_machine_a_wrote() {
    let nginx = Nginx::start();
    let a = remote(&nginx.url(), Mode::ReadWrite, Some(1), &[1]);
    let outs = blobs(20);
    let key = ActionKey::of_bytes(b"build foo");
    let src: Vec<_> = outs
        .iter()
        .map(|(b, d)| (*d, BlobSource::Bytes(b)))
        .collect();
    let reports = a.put_action(&key, b"record of foo", &src).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (
            reports[0].uploaded,
            reports[0].skipped,
            reports[0].entry_written
        ),
        (20, 0, true)
    );
    // Blobs come before the entry naming them.
    let reqs = nginx.requests();
    let last_cas = reqs
        .iter()
        .rposition(|r| r.starts_with("PUT /cas/"))
        .unwrap();
    let ac = reqs.iter().position(|r| r.starts_with("PUT /ac/")).unwrap();
    assert!(last_cas < ac, "{reqs:?}");

    // A second write skips what the server has.
    let again = a.put_action(&key, b"record of foo", &src).unwrap();
    assert_eq!((again[0].uploaded, again[0].skipped), (0, 20));

    // Machine B: a fresh process, read-only, trusting A's key, no SHA-256 known yet.
    let b = remote(&nginx.url(), Mode::ReadOnly, None, &[1]);
    let entry = b.get_action(&key).expect("a hit");
    assert_eq!(entry.record, b"record of foo");
    assert_eq!(entry.blobs.len(), 20);
    let dir = tempfile::tempdir().unwrap();
    let wanted: Vec<BlobDigest> = entry.blobs.iter().map(|(d, _)| *d).collect();
    let got = b.fetch_blobs(&wanted, dir.path());
    for ((bytes, d), path) in outs.iter().zip(&got) {
        let path = path.as_ref().expect("fetched");
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), d.to_hex());
        assert_eq!(&std::fs::read(path).unwrap(), bytes);
    }
    let (_, s) = &b.stats()[0];
    assert_eq!((s.ac_hits, s.cas_hits, s.rejected_entries), (1, 20, 0));
    let total: u64 = outs.iter().map(|(b, _)| b.len() as u64).sum();
    assert!(
        s.bytes_down >= total && s.bytes_down < total + 10_000,
        "{s:?}"
    );
    assert!(b.put_action(&key, b"x", &[]).is_err(), "read-only");
}

#[test]
fn entries_from_untrusted_or_forged_writers_are_refused() {
    let nginx = Nginx::start();
    let key = ActionKey::of_bytes(b"build bar");
    let mallory = remote(&nginx.url(), Mode::ReadWrite, Some(66), &[66]);
    mallory.put_action(&key, b"evil record", &[]).unwrap();

    let reader = remote(&nginx.url(), Mode::ReadOnly, None, &[1]);
    assert_eq!(reader.get_action(&key), None);
    assert_eq!(reader.stats()[0].1.rejected_entries, 1);

    // A trusted entry rewritten on the server is refused too.
    let a = remote(&nginx.url(), Mode::ReadWrite, Some(1), &[1]);
    a.put_action(&key, b"good record", &[]).unwrap();
    assert!(reader.get_action(&key).is_some());
    let path = nginx.file(&format!("ac/{}", key.to_hex()));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(4).position(|w| w == b"good").unwrap();
    bytes[at..at + 4].copy_from_slice(b"evil");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(reader.get_action(&key), None);
    // And an unsigned one (the signature cut off).
    std::fs::write(&path, &bytes[..bytes.len() - 64]).unwrap();
    assert_eq!(reader.get_action(&key), None);
    assert_eq!(reader.stats()[0].1.rejected_entries, 3);
}

#[test]
fn a_failed_blob_upload_keeps_the_entry_off_the_server() {
    let nginx = Nginx::start();
    let map = Arc::new(DigestMap::default());
    let t = tier_with_map(&nginx.url(), map.clone(), |c| {
        c.digest_function = DigestFunction::Blake3;
        c.max_upload_size = Some(1000);
    });
    let r = remote_over(vec![Arc::new(t)], map, Mode::ReadWrite, Some(1), &[1]);
    let outs = blobs(3); // sizes 9, 909, 1809: the last is over the limit
    let src: Vec<_> = outs
        .iter()
        .map(|(b, d)| (*d, BlobSource::Bytes(b)))
        .collect();
    let key = ActionKey::of_bytes(b"k");
    let rep = r.put_action(&key, b"rec", &src).unwrap();
    assert_eq!(rep[0].uploaded, 2);
    assert!(!rep[0].entry_written);
    assert_eq!(rep[0].errors.len(), 1);
    assert!(!nginx.file(&format!("ac/{}", key.to_hex())).exists());
}

#[test]
fn a_dead_first_tier_falls_through_to_the_next() {
    let nginx = Nginx::start();
    let writer = remote(&nginx.url(), Mode::ReadWrite, Some(1), &[1]);
    let outs = blobs(2);
    let key = ActionKey::of_bytes(b"k");
    let src: Vec<_> = outs
        .iter()
        .map(|(b, d)| (*d, BlobSource::Bytes(b)))
        .collect();
    writer.put_action(&key, b"rec", &src).unwrap();

    let map = Arc::new(DigestMap::default());
    let dead = tier_with_map(
        &format!("http://127.0.0.1:{}", dead_port()),
        map.clone(),
        |c| c.retries = 0,
    );
    let live = tier_with_map(&nginx.url(), map.clone(), |c| c.read_only = true);
    let r = remote_over(
        vec![Arc::new(dead), Arc::new(live)],
        map,
        Mode::ReadOnly,
        None,
        &[1],
    );
    let e = r.get_action(&key).expect("served by the second tier");
    let mut out = Vec::new();
    assert!(r.fetch_blob(&e.blobs[1].0, &mut out));
    assert_eq!(out, outs[1].0);
    let stats = r.stats();
    assert_eq!(stats[0].1.errors, 2);
    assert_eq!((stats[1].1.ac_hits, stats[1].1.cas_hits), (1, 1));
}

#[test]
fn a_dead_tier_warns_a_bounded_number_of_times_then_goes_quiet() {
    let nginx = Nginx::start();
    let writer = remote(&nginx.url(), Mode::ReadWrite, Some(1), &[1]);
    let key = ActionKey::of_bytes(b"k");
    writer.put_action(&key, b"rec", &[]).unwrap();

    let map = Arc::new(DigestMap::default());
    let dead = tier_with_map(
        &format!("http://127.0.0.1:{}", dead_port()),
        map.clone(),
        |c| {
            c.retries = 0;
            c.breaker_threshold = 2;
        },
    );
    let live = tier_with_map(&nginx.url(), map.clone(), |_| {});
    let r = remote_over(
        vec![Arc::new(dead), Arc::new(live)],
        map,
        Mode::ReadOnly,
        None,
        &[1],
    );
    let (hits, warnings) =
        count_warnings(|| (0..20).filter(|_| r.get_action(&key).is_some()).count());
    assert_eq!(hits, 20, "every lookup is served by the live tier");
    // Two failed reads (a miss and a warning each), then one warning as the breaker opens.
    assert_eq!(warnings, 3);
    assert_eq!(r.stats()[0].1.warnings, 1);
}
