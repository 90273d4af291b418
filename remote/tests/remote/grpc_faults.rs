//! `GrpcTier` against a stand-in server, for what a real server cannot be made to do on
//! demand: offer BLAKE3 (BuildGrid offers SHA-256 only), serve corrupted bytes, run out of
//! space. Everything else is tested against the real BuildGrid in `grpc.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use keel_remote::grpc::proto;
use keel_remote::grpc::{GrpcConfig, GrpcTier};
use keel_remote::signing::{SigningKeyPair, TrustedKeys};
use keel_remote::{
    BlobSource, DigestFunction, DigestMap, Mode, Remote, RemoteConfig, RemoteError, Tier,
};
use keel_store::{ActionKey, BlobDigest};
use tonic::codegen::{BoxFuture, Service, http};

#[derive(Default)]
struct State {
    offered: Vec<i32>,
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    ac: Mutex<HashMap<String, proto::ActionResult>>,
    /// Flip a byte of every blob served.
    corrupt: bool,
    /// Answer uploads with RESOURCE_EXHAUSTED.
    full: bool,
    updates: AtomicUsize,
}

/// A tower service answering a few unary calls of the API from `State`.
#[derive(Clone)]
struct Fake(Arc<State>);

/// Adapts a function to tonic's unary service.
struct Handler<F>(F);

impl<Req, Resp, F> Service<tonic::Request<Req>> for Handler<F>
where
    F: FnMut(Req) -> Result<Resp, tonic::Status>,
{
    type Response = tonic::Response<Resp>;
    type Error = tonic::Status;
    type Future = std::future::Ready<Result<tonic::Response<Resp>, tonic::Status>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<Req>) -> Self::Future {
        std::future::ready((self.0)(req.into_inner()).map(tonic::Response::new))
    }
}

async fn unary<Req, Resp>(
    req: http::Request<tonic::body::Body>,
    f: impl FnMut(Req) -> Result<Resp, tonic::Status>,
) -> http::Response<tonic::body::Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
    grpc.unary(Handler(f), req).await
}

impl Service<http::Request<tonic::body::Body>> for Fake {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let s = self.0.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            let service = path.rsplit('/').nth(1).unwrap_or("").to_owned();
            let method = path.rsplit('/').next().unwrap_or("").to_owned();
            Ok(match (service.as_str(), method.as_str()) {
                (_, "GetCapabilities") => {
                    unary(req, |_: proto::GetCapabilitiesRequest| {
                        Ok(proto::ServerCapabilities {
                            cache_capabilities: Some(proto::CacheCapabilities {
                                digest_functions: s.offered.clone(),
                                action_cache_update_capabilities: Some(
                                    proto::ActionCacheUpdateCapabilities {
                                        update_enabled: true,
                                    },
                                ),
                                max_batch_total_size_bytes: 4 << 20,
                            }),
                        })
                    })
                    .await
                }
                (_, "FindMissingBlobs") => {
                    unary(req, |r: proto::FindMissingBlobsRequest| {
                        let blobs = s.blobs.lock().unwrap();
                        Ok(proto::FindMissingBlobsResponse {
                            missing_blob_digests: r
                                .blob_digests
                                .into_iter()
                                .filter(|d| !blobs.contains_key(&d.hash))
                                .collect(),
                        })
                    })
                    .await
                }
                (_, "BatchUpdateBlobs") => {
                    unary(req, |r: proto::BatchUpdateBlobsRequest| {
                        s.updates.fetch_add(1, Ordering::SeqCst);
                        if s.full {
                            return Err(tonic::Status::resource_exhausted("disk full"));
                        }
                        let mut blobs = s.blobs.lock().unwrap();
                        let mut responses = Vec::new();
                        for item in r.requests {
                            let d = item.digest.unwrap();
                            blobs.insert(d.hash.clone(), item.data);
                            responses.push(proto::BatchUpdateResult {
                                digest: Some(d),
                                status: Some(proto::Status::default()),
                            });
                        }
                        Ok(proto::BatchUpdateBlobsResponse { responses })
                    })
                    .await
                }
                (_, "BatchReadBlobs") => {
                    unary(req, |r: proto::BatchReadBlobsRequest| {
                        let blobs = s.blobs.lock().unwrap();
                        let responses = r
                            .digests
                            .into_iter()
                            .map(|d| match blobs.get(&d.hash) {
                                Some(data) => {
                                    let mut data = data.clone();
                                    if s.corrupt {
                                        data[0] ^= 1;
                                    }
                                    proto::BatchReadResult {
                                        digest: Some(d),
                                        data,
                                        status: Some(proto::Status::default()),
                                    }
                                }
                                None => proto::BatchReadResult {
                                    digest: Some(d),
                                    data: Vec::new(),
                                    status: Some(proto::Status {
                                        code: 5,
                                        message: "not found".into(),
                                    }),
                                },
                            })
                            .collect();
                        Ok(proto::BatchReadBlobsResponse { responses })
                    })
                    .await
                }
                (_, "UpdateActionResult") => {
                    unary(req, |r: proto::UpdateActionResultRequest| {
                        let result = r.action_result.unwrap_or_default();
                        s.ac.lock()
                            .unwrap()
                            .insert(r.action_digest.unwrap().hash, result.clone());
                        Ok(result)
                    })
                    .await
                }
                (_, "GetActionResult") => {
                    unary(req, |r: proto::GetActionResultRequest| {
                        s.ac.lock()
                            .unwrap()
                            .get(&r.action_digest.unwrap().hash)
                            .cloned()
                            .ok_or_else(|| tonic::Status::not_found("no such action"))
                    })
                    .await
                }
                _ => tonic::Status::unimplemented(path).into_http(),
            })
        })
    }
}

/// The stand-in on 127.0.0.1:<random>, running on its own runtime.
struct StandIn {
    url: String,
    state: Arc<State>,
    _rt: tokio::runtime::Runtime,
}

fn stand_in(state: State) -> StandIn {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = Arc::new(state);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("grpc://{}", listener.local_addr().unwrap());
    let svc = Fake(state.clone());
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .serve_with_incoming(
                svc,
                tokio_stream::wrappers::TcpListenerStream::new(listener),
            )
            .await
    });
    StandIn {
        url,
        state,
        _rt: rt,
    }
}

fn tier(s: &StandIn, map: Arc<DigestMap>) -> GrpcTier {
    let mut c = GrpcConfig::new(&s.url);
    c.retries = 1;
    c.backoff = Duration::from_millis(10);
    GrpcTier::connect(c, map).unwrap()
}

#[test]
fn blake3_is_used_when_the_server_offers_it() {
    let s = stand_in(State {
        offered: vec![proto::SHA256, proto::BLAKE3],
        ..State::default()
    });
    let trusted = || TrustedKeys::new(vec![SigningKeyPair::from_seed([3; 32]).public()]);
    let map = Arc::new(DigestMap::default());
    let t = tier(&s, map.clone());
    assert_eq!(t.digest_function(), DigestFunction::Blake3);
    let a = Remote::new(
        RemoteConfig {
            mode: Mode::ReadWrite,
            trusted: trusted(),
            signer: Some(SigningKeyPair::from_seed([3; 32])),
            jobs: 2,
        },
        map,
        vec![Arc::new(t)],
    )
    .unwrap();
    let bytes = b"an output built once".to_vec();
    let d = BlobDigest::of_bytes(&bytes);
    let key = ActionKey::of_bytes(b"blake3 action");
    a.put_action(&key, b"rec", &[(d, BlobSource::Bytes(&bytes))])
        .unwrap();
    // The server names the blob by its BLAKE3, and the entry lists it as an output file.
    assert!(s.state.blobs.lock().unwrap().contains_key(&d.to_hex()));
    let ac = s.state.ac.lock().unwrap();
    let result = &ac[&key.to_hex()];
    assert_eq!(result.output_files[0].path, d.to_hex());
    assert_eq!(
        result.output_files[0].digest.as_ref().unwrap().hash,
        d.to_hex()
    );
    drop(ac);

    let map_b = Arc::new(DigestMap::default());
    let b = Remote::new(
        RemoteConfig {
            mode: Mode::ReadOnly,
            trusted: trusted(),
            signer: None,
            jobs: 2,
        },
        map_b.clone(),
        vec![Arc::new(tier(&s, map_b))],
    )
    .unwrap();
    let e = b.get_action(&key).expect("hit");
    let mut out = Vec::new();
    assert!(b.fetch_blob(&e.blobs[0].0, &mut out));
    assert_eq!(out, bytes);
}

#[test]
fn a_corrupted_blob_from_a_grpc_server_is_refused_and_counted() {
    let s = stand_in(State {
        offered: vec![proto::BLAKE3],
        corrupt: true,
        ..State::default()
    });
    let t = tier(&s, Arc::new(DigestMap::default()));
    let bytes = vec![42u8; 5000];
    let d = BlobDigest::of_bytes(&bytes);
    t.put_blob(&d, BlobSource::Bytes(&bytes)).unwrap();
    let mut out = Vec::new();
    let err = t.get_blob(&d, &mut out).unwrap_err();
    assert!(matches!(err, RemoteError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&s.url), "{err}");
    assert!(out.is_empty());
    assert_eq!(t.stats().snapshot().verify_failures, 1);
}

#[test]
fn resource_exhausted_stops_grpc_uploads_with_one_warning() {
    let s = stand_in(State {
        offered: vec![proto::SHA256],
        full: true,
        ..State::default()
    });
    let t = tier(&s, Arc::new(DigestMap::default()));
    for i in 0..3u8 {
        let bytes = vec![i; 100];
        let err = t
            .put_blob(&BlobDigest::of_bytes(&bytes), BlobSource::Bytes(&bytes))
            .unwrap_err();
        assert!(matches!(err, RemoteError::UploadRefused { .. }), "{err}");
    }
    assert_eq!(
        s.state.updates.load(Ordering::SeqCst),
        1,
        "no upload after the first refusal"
    );
    let st = t.stats().snapshot();
    assert_eq!((st.warnings, st.uploads), (1, 0));
    assert!(!t.is_disabled(), "reads go on");
}
