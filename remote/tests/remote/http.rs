//! `HttpTier` against a real nginx/WebDAV, and against scripted faults.

use std::time::{Duration, Instant};

use keel_remote::http::{Credentials, Secret};
use keel_remote::{BlobSource, DigestFunction, RemoteError, Tier};
use keel_store::{ActionKey, BlobDigest};
use sha2::{Digest as _, Sha256};

use crate::support::{Nginx, Scripted, dead_port, response, tier, truncated};

fn blob(n: usize) -> (Vec<u8>, BlobDigest) {
    let bytes: Vec<u8> = (0..n).map(|i| (i * 7 + i / 251) as u8).collect();
    let d = BlobDigest::of_bytes(&bytes);
    (bytes, d)
}

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn put_then_get_round_trips_with_blake3_paths() {
    let nginx = Nginx::start();
    let t = tier(&nginx.url(), |c| {
        c.digest_function = DigestFunction::Blake3;
        c.instance = Some("ci".into());
    });
    let (bytes, d) = blob(300_000);
    let (_, absent) = blob(10);
    t.put_blob(&d, BlobSource::Bytes(&bytes)).unwrap();
    assert_eq!(
        std::fs::read(nginx.file(&format!("ci/cas/{}", d.to_hex()))).unwrap(),
        bytes
    );
    assert_eq!(t.has_blobs(&[d, absent]).unwrap(), vec![true, false]);
    let mut out = Vec::new();
    assert!(t.get_blob(&d, &mut out).unwrap());
    assert_eq!(out, bytes);
    assert!(!t.get_blob(&absent, &mut Vec::new()).unwrap());

    let key = ActionKey::of_bytes(b"action");
    assert_eq!(t.get_action(&key).unwrap(), None);
    t.put_action(&key, b"entry bytes").unwrap();
    assert_eq!(
        t.get_action(&key).unwrap().as_deref(),
        Some(&b"entry bytes"[..])
    );

    let s = t.stats().snapshot();
    assert_eq!(
        (s.cas_hits, s.cas_misses, s.ac_hits, s.ac_misses),
        (1, 1, 1, 1)
    );
    assert_eq!(s.uploads, 2);
    assert_eq!(s.bytes_up, 300_000 + 11);
    assert_eq!(s.bytes_down, 300_000 + 11);
    assert_eq!((s.errors, s.verify_failures, s.warnings), (0, 0, 0));
    let heads = nginx
        .requests()
        .iter()
        .filter(|r| r.starts_with("HEAD "))
        .count();
    assert_eq!(heads, 2, "the missing check uses HEAD");
}

#[test]
fn sha256_paths_are_the_sha256_of_the_bytes() {
    let nginx = Nginx::start();
    let t = tier(&nginx.url(), |_| {});
    let (bytes, d) = blob(5000);
    t.put_blob(&d, BlobSource::Bytes(&bytes)).unwrap();
    let path = nginx.file(&format!("cas/{}", sha_hex(&bytes)));
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    let mut out = Vec::new();
    assert!(t.get_blob(&d, &mut out).unwrap());
    assert_eq!(out, bytes);

    // A tier that never learned the SHA-256 cannot fetch, and says so.
    let fresh = tier(&nginx.url(), |_| {});
    let err = fresh.get_blob(&d, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, RemoteError::UnknownSha256 { .. }), "{err}");
    assert_eq!(fresh.has_blobs(&[d]).unwrap(), vec![false]);
}

#[test]
fn a_corrupted_blob_on_the_server_is_detected_and_counted() {
    let nginx = Nginx::start();
    let t = tier(&nginx.url(), |c| c.digest_function = DigestFunction::Blake3);
    let (bytes, d) = blob(70_000);
    t.put_blob(&d, BlobSource::Bytes(&bytes)).unwrap();
    let path = nginx.file(&format!("cas/{}", d.to_hex()));
    let mut bad = bytes.clone();
    bad[12_345] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();

    let mut out = Vec::new();
    let err = t.get_blob(&d, &mut out).unwrap_err();
    assert!(matches!(err, RemoteError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/cas/{}", nginx.url(), d.to_hex())),
        "{msg}"
    );
    assert!(out.is_empty(), "unverified bytes were handed out");
    assert_eq!(t.stats().snapshot().verify_failures, 1);

    // Same for a blob replaced by a longer one.
    std::fs::write(&path, [bytes.as_slice(), b"x"].concat()).unwrap();
    assert!(matches!(
        t.get_blob(&d, &mut out).unwrap_err(),
        RemoteError::Corrupt { .. }
    ));
    assert!(out.is_empty());
    assert_eq!(t.stats().snapshot().verify_failures, 2);
    // A corrupt blob says nothing about the server's health.
    assert!(!t.is_disabled());
}

#[test]
fn a_dead_server_fails_fast_and_opens_the_breaker_once() {
    let url = format!("http://127.0.0.1:{}", dead_port());
    let t = tier(&url, |c| {
        c.retries = 1;
        c.breaker_threshold = 3;
    });
    let key = ActionKey::of_bytes(b"k");
    let started = Instant::now();
    for _ in 0..3 {
        let err = t.get_action(&key).unwrap_err();
        assert!(matches!(err, RemoteError::Transport { .. }), "{err}");
        assert!(err.to_string().contains(&url), "{err}");
    }
    assert!(t.is_disabled());
    for _ in 0..5 {
        assert!(matches!(
            t.get_action(&key).unwrap_err(),
            RemoteError::Disabled { .. }
        ));
        assert!(matches!(
            t.put_action(&key, b"x").unwrap_err(),
            RemoteError::Disabled { .. }
        ));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let s = t.stats().snapshot();
    assert_eq!(s.warnings, 1);
    assert_eq!(s.errors, 3);
    assert_eq!(s.retries, 3);
}

#[test]
fn a_hanging_server_is_bounded_by_the_timeout() {
    let server = Scripted::start(vec![None]);
    let t = tier(&server.url(), |c| {
        c.io_timeout = Duration::from_millis(300);
        c.retries = 1;
    });
    let started = Instant::now();
    let err = t.get_action(&ActionKey::of_bytes(b"k")).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RemoteError::Transport { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(server.seen.lock().unwrap().len(), 2, "one retry");
}

#[test]
fn a_5xx_then_success_is_retried() {
    let (bytes, d) = blob(1000);
    let server = Scripted::start(vec![
        response("503 Service Unavailable", b"busy"),
        response("500 Internal Server Error", b""),
        response("200 OK", &bytes),
    ]);
    let t = tier(&server.url(), |c| {
        c.digest_function = DigestFunction::Blake3;
        c.retries = 2;
    });
    let mut out = Vec::new();
    assert!(t.get_blob(&d, &mut out).unwrap());
    assert_eq!(out, bytes);
    let s = t.stats().snapshot();
    assert_eq!((s.retries, s.errors, s.cas_hits), (2, 0, 1));
    let seen = server.seen.lock().unwrap();
    assert!(
        seen.iter()
            .all(|r| r.head.starts_with(&format!("GET /cas/{} ", d.to_hex())))
    );
}

#[test]
fn a_truncated_body_is_detected_and_never_handed_out() {
    let (bytes, d) = blob(1000);
    let server = Scripted::start(vec![truncated(1000, &bytes[..600])]);
    let t = tier(&server.url(), |c| {
        c.digest_function = DigestFunction::Blake3;
        c.retries = 1;
    });
    let mut out = Vec::new();
    let err = t.get_blob(&d, &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            RemoteError::Truncated { .. } | RemoteError::Transport { .. }
        ),
        "{err}"
    );
    assert!(out.is_empty());
    assert_eq!(server.seen.lock().unwrap().len(), 2, "retried once");

    // A server that announces the right length but sends a short blob is caught by size.
    let short = Scripted::start(vec![response("200 OK", &bytes[..600])]);
    let t = tier(&short.url(), |c| {
        c.digest_function = DigestFunction::Blake3;
        c.retries = 0;
    });
    let err = t.get_blob(&d, &mut out).unwrap_err();
    assert!(
        matches!(err, RemoteError::Truncated { got: 600, .. }),
        "{err}"
    );
    assert!(out.is_empty());

    // An action-cache entry cut short is refused too.
    let cut = Scripted::start(vec![truncated(50, b"0123456789")]);
    let t = tier(&cut.url(), |c| c.retries = 0);
    assert!(t.get_action(&ActionKey::of_bytes(b"k")).is_err());
}

#[test]
fn http_507_stops_uploads_with_one_warning() {
    let nginx = Nginx::start();
    let t = tier(&format!("{}/full", nginx.url()), |c| {
        c.digest_function = DigestFunction::Blake3
    });
    let (a, da) = blob(100);
    let (b, db) = blob(200);
    let err = t.put_blob(&da, BlobSource::Bytes(&a)).unwrap_err();
    assert!(matches!(err, RemoteError::UploadRefused { .. }), "{err}");
    assert!(err.to_string().contains("507"), "{err}");
    assert!(t.put_blob(&db, BlobSource::Bytes(&b)).is_err());
    assert!(t.put_action(&ActionKey::of_bytes(b"k"), b"e").is_err());
    let is_put = |r: &String| r.starts_with("PUT ");
    let reqs = nginx.requests_until(|r| r.iter().any(is_put));
    assert_eq!(
        reqs.iter().filter(|r| is_put(r)).count(),
        1,
        "no upload after the 507"
    );
    let s = t.stats().snapshot();
    assert_eq!((s.warnings, s.uploads), (1, 0));
    // Downloads go on.
    assert_eq!(t.has_blobs(&[da]).unwrap(), vec![false]);
    assert!(!t.is_disabled());
}

#[test]
fn read_only_mode_never_puts() {
    let nginx = Nginx::start();
    let t = tier(&nginx.url(), |c| c.read_only = true);
    let (bytes, d) = blob(100);
    assert!(matches!(
        t.put_blob(&d, BlobSource::Bytes(&bytes)).unwrap_err(),
        RemoteError::UploadRefused { .. }
    ));
    assert!(t.put_action(&ActionKey::of_bytes(b"k"), b"e").is_err());
    assert_eq!(t.get_action(&ActionKey::of_bytes(b"k")).unwrap(), None);
    assert!(
        nginx.requests().iter().all(|r| !r.starts_with("PUT ")),
        "{:?}",
        nginx.requests()
    );
    assert!(!nginx.file("cas").exists() && !nginx.file("ac").exists());
}

#[test]
fn uploads_over_the_size_limit_are_not_sent() {
    let server = Scripted::start(vec![response("200 OK", b"")]);
    let t = tier(&server.url(), |c| c.max_upload_size = Some(99));
    let (bytes, d) = blob(100);
    let err = t.put_blob(&d, BlobSource::Bytes(&bytes)).unwrap_err();
    assert!(err.to_string().contains("limit of 99"), "{err}");
    assert!(server.seen.lock().unwrap().is_empty());
    let small = &bytes[..99];
    t.put_blob(&BlobDigest::of_bytes(small), BlobSource::Bytes(small))
        .unwrap();
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].head.starts_with("PUT /cas/"), "{}", seen[0].head);
    assert_eq!(seen[0].body, small);
}

#[test]
fn credentials_are_sent_but_never_printed() {
    let server = Scripted::start(vec![response("403 Forbidden", b"")]);
    let t = tier(&server.url(), |c| {
        c.credentials = Credentials::Bearer(Secret::new("s3cr3t-token"));
        c.retries = 0;
    });
    let err = t.get_action(&ActionKey::of_bytes(b"k")).unwrap_err();
    assert!(
        matches!(err, RemoteError::Status { status: 403, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cr3t"));
    assert!(!format!("{err:?} {t:?}").contains("s3cr3t"));
    let seen = server.seen.lock().unwrap();
    let head = seen[0].head.to_ascii_lowercase();
    assert!(
        head.contains("authorization: bearer s3cr3t-token\r\n"),
        "{head}"
    );
    drop(seen);

    // Basic credentials in the URL are moved out of it.
    let server = Scripted::start(vec![response("401 Unauthorized", b"")]);
    let url = format!("http://bob:hunter2@127.0.0.1:{}/base", server.port);
    let t = tier(&url, |c| c.retries = 0);
    let err = t.get_action(&ActionKey::of_bytes(b"k")).unwrap_err();
    let printed = format!("{err} {err:?} {t:?} {}", t.name());
    assert!(
        !printed.contains("hunter2") && !printed.contains("bob"),
        "{printed}"
    );
    assert!(printed.contains(&format!("http://127.0.0.1:{}/base/ac/", server.port)));
    let seen = server.seen.lock().unwrap();
    let head = seen[0].head.to_ascii_lowercase();
    assert!(
        head.contains("authorization: basic ym9iomh1bnrlcji=\r\n"),
        "{head}"
    );
}
