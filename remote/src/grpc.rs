//! The Remote Execution API v2 cache services over gRPC: Capabilities, ActionCache,
//! ContentAddressableStorage (FindMissingBlobs, BatchUpdateBlobs, BatchReadBlobs) and
//! ByteStream for blobs too large for a batch.
//!
//! # Mapping keel onto the API
//!
//! - The digest function is negotiated from the server's `CacheCapabilities`: BLAKE3 when
//!   offered (Buildbarn, BuildBuddy, NativeLink), else SHA-256 (BuildGrid, bazel-remote),
//!   with the SHA-256 of blobs learned as for the HTTP tier (see [`crate::DigestMap`]).
//! - An action key is sent as the `action_digest` (its 64 hex digits and its size), whatever
//!   the digest function: it names the action, it is not the hash of an `Action` message.
//! - The action-cache value is an `ActionResult` whose `stdout_raw` is keel's signed entry
//!   (see [`crate::signing`]) and whose `output_files` list each blob the entry names (path
//!   = the blob's BLAKE3 hex, digest = its digest under the negotiated function), so servers
//!   that check or keep alive what an entry references do so for keel's blobs too.
//!
//! The messages are written by hand below (`prost` derives, field numbers as in
//! `build/bazel/remote/execution/v2/remote_execution.proto`, `google/bytestream` and
//! `google/rpc/status.proto`), only the fields keel uses: no `protoc` at build time.
//!
//! Calls run on a small private tokio runtime and are blocking from the caller's side, like
//! the rest of the [`Tier`] trait. Faults are handled as in the HTTP tier: timeouts,
//! retries with backoff on UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED (tonic's timeout) /
//! ABORTED / INTERNAL / UNKNOWN,
//! the breaker, and RESOURCE_EXHAUSTED on an upload stopping uploads.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keel_store::{ActionKey, BlobDigest};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{RemoteError, Result};
use crate::health::{Fail, Health, Policy, run_op};
use crate::http::Secret;
use crate::signing::peek_blobs;
use crate::tier::{
    BlobSource, DigestFunction, DigestMap, Landing, Stats, Tier, Verifier, bump, hex,
};

/// The messages of the API that keel uses, hand-written with the spec's field numbers
/// (public for tests and tools that talk to the same servers).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Digest {
        #[prost(string, tag = "1")]
        pub hash: String,
        #[prost(int64, tag = "2")]
        pub size_bytes: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OutputFile {
        #[prost(string, tag = "1")]
        pub path: String,
        #[prost(message, optional, tag = "2")]
        pub digest: Option<Digest>,
        #[prost(bool, tag = "4")]
        pub is_executable: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ActionResult {
        #[prost(message, repeated, tag = "2")]
        pub output_files: Vec<OutputFile>,
        #[prost(int32, tag = "4")]
        pub exit_code: i32,
        #[prost(bytes = "vec", tag = "5")]
        pub stdout_raw: Vec<u8>,
        #[prost(message, optional, tag = "6")]
        pub stdout_digest: Option<Digest>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetActionResultRequest {
        #[prost(string, tag = "1")]
        pub instance_name: String,
        #[prost(message, optional, tag = "2")]
        pub action_digest: Option<Digest>,
        #[prost(bool, tag = "3")]
        pub inline_stdout: bool,
        #[prost(int32, tag = "6")]
        pub digest_function: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdateActionResultRequest {
        #[prost(string, tag = "1")]
        pub instance_name: String,
        #[prost(message, optional, tag = "2")]
        pub action_digest: Option<Digest>,
        #[prost(message, optional, tag = "3")]
        pub action_result: Option<ActionResult>,
        #[prost(int32, tag = "5")]
        pub digest_function: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FindMissingBlobsRequest {
        #[prost(string, tag = "1")]
        pub instance_name: String,
        #[prost(message, repeated, tag = "2")]
        pub blob_digests: Vec<Digest>,
        #[prost(int32, tag = "3")]
        pub digest_function: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FindMissingBlobsResponse {
        #[prost(message, repeated, tag = "2")]
        pub missing_blob_digests: Vec<Digest>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchUpdateItem {
        #[prost(message, optional, tag = "1")]
        pub digest: Option<Digest>,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchUpdateBlobsRequest {
        #[prost(string, tag = "1")]
        pub instance_name: String,
        #[prost(message, repeated, tag = "2")]
        pub requests: Vec<BatchUpdateItem>,
        #[prost(int32, tag = "5")]
        pub digest_function: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchUpdateResult {
        #[prost(message, optional, tag = "1")]
        pub digest: Option<Digest>,
        #[prost(message, optional, tag = "2")]
        pub status: Option<Status>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchUpdateBlobsResponse {
        #[prost(message, repeated, tag = "1")]
        pub responses: Vec<BatchUpdateResult>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchReadBlobsRequest {
        #[prost(string, tag = "1")]
        pub instance_name: String,
        #[prost(message, repeated, tag = "2")]
        pub digests: Vec<Digest>,
        #[prost(int32, tag = "4")]
        pub digest_function: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchReadResult {
        #[prost(message, optional, tag = "1")]
        pub digest: Option<Digest>,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
        #[prost(message, optional, tag = "3")]
        pub status: Option<Status>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchReadBlobsResponse {
        #[prost(message, repeated, tag = "1")]
        pub responses: Vec<BatchReadResult>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetCapabilitiesRequest {
        #[prost(string, tag = "1")]
        pub instance_name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerCapabilities {
        #[prost(message, optional, tag = "1")]
        pub cache_capabilities: Option<CacheCapabilities>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CacheCapabilities {
        #[prost(int32, repeated, tag = "1")]
        pub digest_functions: Vec<i32>,
        #[prost(message, optional, tag = "2")]
        pub action_cache_update_capabilities: Option<ActionCacheUpdateCapabilities>,
        #[prost(int64, tag = "4")]
        pub max_batch_total_size_bytes: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ActionCacheUpdateCapabilities {
        #[prost(bool, tag = "1")]
        pub update_enabled: bool,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadRequest {
        #[prost(string, tag = "1")]
        pub resource_name: String,
        #[prost(int64, tag = "2")]
        pub read_offset: i64,
        #[prost(int64, tag = "3")]
        pub read_limit: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadResponse {
        #[prost(bytes = "vec", tag = "10")]
        pub data: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(string, tag = "1")]
        pub resource_name: String,
        #[prost(int64, tag = "2")]
        pub write_offset: i64,
        #[prost(bool, tag = "3")]
        pub finish_write: bool,
        #[prost(bytes = "vec", tag = "10")]
        pub data: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteResponse {
        #[prost(int64, tag = "1")]
        pub committed_size: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }

    /// `DigestFunction.Value`.
    pub const SHA256: i32 = 1;
    pub const BLAKE3: i32 = 9;
}

const CAPABILITIES: &str = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities";
const AC_GET: &str = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult";
const AC_UPDATE: &str = "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult";
const CAS_FIND: &str =
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs";
const CAS_READ: &str = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs";
const CAS_UPDATE: &str =
    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs";
const BS_READ: &str = "/google.bytestream.ByteStream/Read";
const BS_WRITE: &str = "/google.bytestream.ByteStream/Write";

/// Settings of a [`GrpcTier`].
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// `grpc://host:port` or `http://` (plain), `grpcs://` or `https://` (TLS).
    pub url: String,
    pub instance: String,
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<Secret>,
    pub connect_timeout: Duration,
    /// Bound on each unary call and on each message of a stream.
    pub io_timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub breaker_threshold: u32,
    pub read_only: bool,
    /// Blobs up to this size go through the batch calls, larger ones through ByteStream
    /// (capped by the server's `max_batch_total_size_bytes`).
    pub batch_limit: u64,
    pub temp_dir: PathBuf,
}

impl GrpcConfig {
    pub fn new(url: impl Into<String>) -> GrpcConfig {
        GrpcConfig {
            url: url.into(),
            instance: String::new(),
            token: None,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(200),
            breaker_threshold: 3,
            read_only: false,
            batch_limit: 1 << 20,
            temp_dir: std::env::temp_dir(),
        }
    }
}

/// A Remote Execution API cache.
pub struct GrpcTier {
    name: String,
    config: GrpcConfig,
    rt: tokio::runtime::Runtime,
    channel: Channel,
    function: DigestFunction,
    batch_limit: u64,
    update_enabled: bool,
    map: Arc<DigestMap>,
    health: Health,
    stats: Stats,
}

impl fmt::Debug for GrpcTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcTier")
            .field("name", &self.name)
            .field("instance", &self.config.instance)
            .field("digest_function", &self.function)
            .field("read_only", &self.config.read_only)
            .finish_non_exhaustive()
    }
}

impl GrpcTier {
    /// Connects and negotiates the digest function with `GetCapabilities` (retried like any
    /// call). An unreachable server is an error here: the caller builds without this tier.
    pub fn connect(config: GrpcConfig, map: Arc<DigestMap>) -> Result<GrpcTier> {
        let (uri, tls) = match config.url.split_once("://") {
            Some(("grpc" | "http", rest)) => (format!("http://{rest}"), false),
            Some(("grpcs" | "https", rest)) => (format!("https://{rest}"), true),
            _ => {
                return Err(RemoteError::Config(format!(
                    "remote cache URL {}: expected grpc://, grpcs://, http:// or https://",
                    config.url
                )));
            }
        };
        if uri.contains('@') {
            return Err(RemoteError::Config(
                "credentials in a gRPC URL are not supported; use KEEL_REMOTE_TOKEN".into(),
            ));
        }
        let name = format!(
            "{}{}",
            config.url.trim_end_matches('/'),
            instance_suffix(&config.instance)
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keel-remote-grpc")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Config(format!("start the gRPC runtime: {e}")))?;
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| RemoteError::Config(format!("remote cache URL {}: {e}", config.url)))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true);
        if tls {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_webpki_roots())
                .map_err(|e| RemoteError::Config(format!("TLS for {}: {e}", config.url)))?;
        }
        let channel = {
            let _guard = rt.enter();
            endpoint.connect_lazy()
        };
        let mut tier = GrpcTier {
            name,
            batch_limit: config.batch_limit,
            config,
            rt,
            channel,
            function: DigestFunction::Sha256,
            update_enabled: true,
            map,
            health: Health::default(),
            stats: Stats::default(),
        };
        let caps: proto::ServerCapabilities = tier.run(|| {
            tier.unary(
                "GetCapabilities",
                CAPABILITIES,
                proto::GetCapabilitiesRequest {
                    instance_name: tier.config.instance.clone(),
                },
            )
        })?;
        let cache = caps.cache_capabilities.unwrap_or_default();
        tier.function = compute_digest_function(&cache.digest_functions).ok_or_else(|| {
            RemoteError::Config(format!(
                "remote cache {} offers neither BLAKE3 nor SHA-256 (digest functions {:?})",
                tier.name, cache.digest_functions
            ))
        })?;
        if let Ok(max) = u64::try_from(cache.max_batch_total_size_bytes)
            && max > 0
        {
            // Leave room for the request's other fields.
            tier.batch_limit = tier.batch_limit.min(max.saturating_sub(4096));
        }
        tier.update_enabled = cache
            .action_cache_update_capabilities
            .is_none_or(|c| c.update_enabled);
        Ok(tier)
    }

    /// The digest function agreed with the server.
    pub fn digest_function(&self) -> DigestFunction {
        self.function
    }

    pub fn is_disabled(&self) -> bool {
        self.health.is_disabled()
    }

    fn function_code(&self) -> i32 {
        match self.function {
            DigestFunction::Blake3 => proto::BLAKE3,
            DigestFunction::Sha256 => proto::SHA256,
        }
    }

    fn wire(&self, d: &BlobDigest) -> Option<proto::Digest> {
        let hash = match self.function {
            DigestFunction::Blake3 => d.to_hex(),
            DigestFunction::Sha256 => hex(&self.map.get(d)?),
        };
        Some(proto::Digest {
            hash,
            size_bytes: i64::try_from(d.size()).ok()?,
        })
    }

    /// The ByteStream resource to read a blob from.
    fn resource(&self, d: &proto::Digest) -> String {
        format!(
            "{}{}",
            instance_prefix(&self.config.instance),
            blob_path(self.function, d)
        )
    }

    fn run<T>(&self, op: impl FnMut() -> Result<T, Fail>) -> Result<T> {
        run_op(
            &self.health,
            &self.stats,
            &self.name,
            Policy {
                retry: keel_retry::Retry::new(self.config.retries, self.config.backoff),
                breaker_threshold: self.config.breaker_threshold,
            },
            op,
        )
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout);
        if let Some(t) = &self.config.token
            && let Ok(v) = format!("Bearer {}", t.expose()).parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    fn fail(&self, call: &'static str, s: &tonic::Status) -> Fail {
        let e = RemoteError::Grpc {
            call,
            url: self.name.clone(),
            code: format!("{:?}", s.code()),
            message: s.message().to_owned(),
        };
        use tonic::Code::*;
        match s.code() {
            // CANCELLED is how tonic reports the client-side timeout of a request.
            Unavailable | DeadlineExceeded | Cancelled | Aborted | Internal | Unknown
            | ResourceExhausted => Fail::Retry(e),
            _ => Fail::Fatal(e),
        }
    }

    fn unary<Req, Resp>(
        &self,
        call: &'static str,
        path: &'static str,
        msg: Req,
    ) -> Result<Resp, Fail>
    where
        Req: prost::Message + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        self.unary_status(path, msg)
            .map_err(|s| self.fail(call, &s))
    }

    fn unary_status<Req, Resp>(&self, path: &'static str, msg: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let req = self.request(msg, self.config.io_timeout);
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        self.block_on(self.config.io_timeout, async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(req, PathAndQuery::from_static(path), codec)
                .await
                .map(tonic::Response::into_inner)
        })
    }

    /// Runs a call on the tier's runtime, bounded by `limit` on this side whatever the
    /// server does (a grpc-timeout header alone relies on the server to honour it).
    fn block_on<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.rt.block_on(async {
            tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {limit:?}"
                )))
            })
        })
    }

    /// Why an upload (of an action-cache entry if `entry`) must not be sent, if it must not.
    fn refuse_upload(&self, entry: bool) -> Result<()> {
        let why = if self.config.read_only {
            "the remote is read-only"
        } else if self.health.uploads_stopped() {
            "uploads stopped (the remote is full)"
        } else if entry && !self.update_enabled {
            "the server does not accept action-cache updates"
        } else {
            return Ok(());
        };
        Err(RemoteError::UploadRefused {
            url: self.name.clone(),
            why: why.into(),
        })
    }

    fn full(&self, call: &'static str, s: &tonic::Status) -> Fail {
        if s.code() == tonic::Code::ResourceExhausted {
            self.health
                .stop_uploads(&self.name, "RESOURCE_EXHAUSTED", &self.stats);
            return Fail::Other(RemoteError::UploadRefused {
                url: self.name.clone(),
                why: format!("{call}: RESOURCE_EXHAUSTED: {}", s.message()),
            });
        }
        self.fail(call, s)
    }

    fn read_stream(
        &self,
        digest: &BlobDigest,
        wire: &proto::Digest,
        landing: &mut dyn Landing,
    ) -> Result<bool, Fail> {
        let mut v = Verifier::new(landing, digest, &self.stats).map_err(Fail::Other)?;
        let req = self.request(
            proto::ReadRequest {
                resource_name: self.resource(wire),
                read_offset: 0,
                read_limit: 0,
            },
            stream_timeout(self.config.io_timeout, digest.size()),
        );
        let io_timeout = self.config.io_timeout;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let got: Result<Option<()>, tonic::Status> =
            self.block_on(stream_timeout(io_timeout, digest.size()), async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
                let codec =
                    tonic_prost::ProstCodec::<proto::ReadRequest, proto::ReadResponse>::default();
                let path = PathAndQuery::from_static(BS_READ);
                let mut stream = match grpc.server_streaming(req, path, codec).await {
                    Ok(r) => r.into_inner(),
                    Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
                    Err(s) => return Err(s),
                };
                loop {
                    let msg = tokio::time::timeout(io_timeout, stream.message())
                        .await
                        .map_err(|_| {
                            tonic::Status::deadline_exceeded("no data within the timeout")
                        })?;
                    match msg {
                        Ok(Some(m)) => {
                            v.update(&m.data)
                                .map_err(|e| tonic::Status::internal(format!("local: {e}")))?;
                            if v.too_long() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
                        Err(s) => return Err(s),
                    }
                }
                Ok(Some(()))
            });
        match got {
            Ok(None) => Ok(false),
            Ok(Some(())) => self.finish(v),
            Err(s) => Err(self.fail("ByteStream.Read", &s)),
        }
    }

    fn finish(&self, v: Verifier<'_>) -> Result<bool, Fail> {
        let url = self.name.clone();
        let expected = v.expected_size();
        match v.finish(&url) {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(got)) => Err(Fail::Retry(RemoteError::Truncated { url, expected, got })),
            Err(e) => Err(Fail::Other(e)),
        }
    }

    fn write_stream(
        &self,
        wire: &proto::Digest,
        size: u64,
        source: BlobSource<'_>,
    ) -> Result<(), Fail> {
        const CHUNK: usize = 256 * 1024;
        let resource = format!(
            "{}uploads/{}/{}",
            instance_prefix(&self.config.instance),
            upload_id(),
            blob_path(self.function, wire)
        );
        // The request stream must own its data: read the blob chunk by chunk as it is sent.
        let mut reader: Box<dyn Read + Send> = match source {
            BlobSource::Path(p) => Box::new(
                std::fs::File::open(p).map_err(|e| Fail::Other(RemoteError::io("open", p, e)))?,
            ),
            BlobSource::Bytes(b) => Box::new(std::io::Cursor::new(b.to_vec())),
        };
        let mut offset = 0u64;
        let mut first = true;
        let chunks = std::iter::from_fn(move || {
            if offset >= size && !first {
                return None;
            }
            let mut buf = vec![0u8; CHUNK.min(usize::try_from(size - offset).unwrap_or(CHUNK))];
            // A short read of a local file ends the stream early: the server then reports
            // the size mismatch, which is the right outcome for a blob that changed.
            let n = read_full(&mut reader, &mut buf).unwrap_or(0);
            buf.truncate(n);
            let req = proto::WriteRequest {
                resource_name: if first {
                    resource.clone()
                } else {
                    String::new()
                },
                write_offset: i64::try_from(offset).unwrap_or(i64::MAX),
                finish_write: offset + n as u64 >= size || n == 0,
                data: buf,
            };
            first = false;
            offset += n as u64;
            if n == 0 {
                offset = size;
            }
            Some(req)
        });
        let req = self.request(
            tokio_stream::iter(chunks),
            stream_timeout(self.config.io_timeout, size),
        );
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let resp: Result<proto::WriteResponse, tonic::Status> =
            self.block_on(stream_timeout(self.config.io_timeout, size), async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
                let codec =
                    tonic_prost::ProstCodec::<proto::WriteRequest, proto::WriteResponse>::default();
                let path = PathAndQuery::from_static(BS_WRITE);
                grpc.client_streaming(req, path, codec)
                    .await
                    .map(tonic::Response::into_inner)
            });
        match resp {
            Ok(r) if r.committed_size == wire.size_bytes || r.committed_size == -1 => Ok(()),
            Ok(r) => Err(Fail::Retry(RemoteError::Grpc {
                call: "ByteStream.Write",
                url: self.name.clone(),
                code: "committed size".into(),
                message: format!("{} of {} bytes", r.committed_size, wire.size_bytes),
            })),
            // The server already has it: fine.
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(self.full("ByteStream.Write", &s)),
        }
    }
}

/// The digest function to use with a server offering `offered`: BLAKE3 (keel's own, no
/// mapping) if offered, else SHA-256; an empty list means SHA-256 (servers from before the
/// field existed).
fn compute_digest_function(offered: &[i32]) -> Option<DigestFunction> {
    if offered.contains(&proto::BLAKE3) {
        Some(DigestFunction::Blake3)
    } else if offered.is_empty() || offered.contains(&proto::SHA256) {
        Some(DigestFunction::Sha256)
    } else {
        None
    }
}

/// `blobs/[blake3/]<hash>/<size>`: the API inserts the digest function's name in resource
/// names for every function but SHA-256 (and the other legacy ones).
fn blob_path(function: DigestFunction, d: &proto::Digest) -> String {
    let f = match function {
        DigestFunction::Blake3 => "blake3/",
        DigestFunction::Sha256 => "",
    };
    format!("blobs/{f}{}/{}", d.hash, d.size_bytes)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn instance_prefix(instance: &str) -> String {
    let i = instance.trim_matches('/');
    if i.is_empty() {
        String::new()
    } else {
        format!("{i}/")
    }
}

fn instance_suffix(instance: &str) -> String {
    let i = instance.trim_matches('/');
    if i.is_empty() {
        String::new()
    } else {
        format!(" (instance {i})")
    }
}

/// A streaming call may take longer than a unary one: allow the timeout plus a second
/// per MiB (a 1 MiB/s floor on throughput).
fn stream_timeout(io: Duration, size: u64) -> Duration {
    io + Duration::from_secs(size >> 20)
}

/// A unique id for a ByteStream upload, in UUID form as the API asks.
fn upload_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut seed = Vec::with_capacity(36);
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    seed.extend_from_slice(&now.as_nanos().to_le_bytes());
    let x = hex(&BlobDigest::of_bytes(&seed).hash()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

impl Tier for GrpcTier {
    fn name(&self) -> &str {
        &self.name
    }

    fn get_action(&self, key: &ActionKey) -> Result<Option<Vec<u8>>> {
        let req = proto::GetActionResultRequest {
            instance_name: self.config.instance.clone(),
            action_digest: Some(action_digest(key)),
            inline_stdout: true,
            digest_function: self.function_code(),
        };
        let got =
            self.run(
                || match self.unary_status::<_, proto::ActionResult>(AC_GET, req.clone()) {
                    Ok(r) => Ok(Some(r)),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                    Err(s) => Err(self.fail("GetActionResult", &s)),
                },
            )?;
        let entry = got.map(|r| r.stdout_raw).filter(|e| !e.is_empty());
        match &entry {
            Some(e) => {
                bump(&self.stats.ac_hits, 1);
                bump(&self.stats.bytes_down, e.len() as u64);
            }
            None => bump(&self.stats.ac_misses, 1),
        }
        Ok(entry)
    }

    fn put_action(&self, key: &ActionKey, entry: &[u8]) -> Result<()> {
        self.refuse_upload(true)?;
        let output_files = peek_blobs(entry)
            .unwrap_or_default()
            .iter()
            .filter_map(|(d, sha)| {
                self.map.insert(d, *sha);
                Some(proto::OutputFile {
                    path: d.to_hex(),
                    digest: Some(self.wire(d)?),
                    is_executable: false,
                })
            })
            .collect();
        let req = proto::UpdateActionResultRequest {
            instance_name: self.config.instance.clone(),
            action_digest: Some(action_digest(key)),
            action_result: Some(proto::ActionResult {
                output_files,
                exit_code: 0,
                stdout_raw: entry.to_vec(),
                stdout_digest: None,
            }),
            digest_function: self.function_code(),
        };
        self.run(|| {
            self.unary_status::<_, proto::ActionResult>(AC_UPDATE, req.clone())
                .map_err(|s| self.full("UpdateActionResult", &s))
        })?;
        bump(&self.stats.uploads, 1);
        bump(&self.stats.bytes_up, entry.len() as u64);
        Ok(())
    }

    fn has_blobs(&self, digests: &[BlobDigest]) -> Result<Vec<bool>> {
        let wires: Vec<Option<proto::Digest>> = digests.iter().map(|d| self.wire(d)).collect();
        let req = proto::FindMissingBlobsRequest {
            instance_name: self.config.instance.clone(),
            blob_digests: wires.iter().flatten().cloned().collect(),
            digest_function: self.function_code(),
        };
        if req.blob_digests.is_empty() {
            return Ok(vec![false; digests.len()]);
        }
        let resp: proto::FindMissingBlobsResponse =
            self.run(|| self.unary("FindMissingBlobs", CAS_FIND, req.clone()))?;
        let missing: std::collections::HashSet<(String, i64)> = resp
            .missing_blob_digests
            .into_iter()
            .map(|d| (d.hash, d.size_bytes))
            .collect();
        Ok(wires
            .iter()
            .map(|w| {
                w.as_ref()
                    .is_some_and(|w| !missing.contains(&(w.hash.clone(), w.size_bytes)))
            })
            .collect())
    }

    fn temp_dir(&self) -> &Path {
        &self.config.temp_dir
    }

    fn land_blob(&self, digest: &BlobDigest, landing: &mut dyn Landing) -> Result<bool> {
        let wire = self
            .wire(digest)
            .ok_or_else(|| RemoteError::UnknownSha256 {
                url: self.name.clone(),
                digest: digest.to_hex(),
            })?;
        let found = if digest.size() <= self.batch_limit {
            let req = proto::BatchReadBlobsRequest {
                instance_name: self.config.instance.clone(),
                digests: vec![wire.clone()],
                digest_function: self.function_code(),
            };
            self.run(|| {
                let resp: proto::BatchReadBlobsResponse =
                    self.unary("BatchReadBlobs", CAS_READ, req.clone())?;
                let Some(r) = resp.responses.into_iter().next() else {
                    return Err(Fail::Retry(RemoteError::Grpc {
                        call: "BatchReadBlobs",
                        url: self.name.clone(),
                        code: "empty response".into(),
                        message: String::new(),
                    }));
                };
                match r.status.as_ref().map_or(0, |s| s.code) {
                    0 => {}
                    5 => return Ok(false), // NOT_FOUND
                    code => {
                        let s = tonic::Status::new(
                            tonic::Code::from_i32(code),
                            r.status.map(|s| s.message).unwrap_or_default(),
                        );
                        return Err(self.fail("BatchReadBlobs", &s));
                    }
                }
                let mut v = Verifier::new(landing, digest, &self.stats).map_err(Fail::Other)?;
                v.update(&r.data).map_err(Fail::Other)?;
                self.finish(v)
            })?
        } else {
            self.run(|| self.read_stream(digest, &wire, landing))?
        };
        bump(
            if found {
                &self.stats.cas_hits
            } else {
                &self.stats.cas_misses
            },
            1,
        );
        Ok(found)
    }

    fn put_blob(&self, digest: &BlobDigest, source: BlobSource<'_>) -> Result<()> {
        self.refuse_upload(false)?;
        if self.function == DigestFunction::Sha256 && self.map.get(digest).is_none() {
            self.map.insert(digest, source.sha256()?);
        }
        let wire = self
            .wire(digest)
            .ok_or_else(|| RemoteError::Config(format!("blob {digest} is too large")))?;
        if digest.size() <= self.batch_limit {
            let mut data = Vec::with_capacity(usize::try_from(digest.size()).unwrap_or(0));
            source
                .open()?
                .read_to_end(&mut data)
                .map_err(|e| source.io_err(e))?;
            let req = proto::BatchUpdateBlobsRequest {
                instance_name: self.config.instance.clone(),
                requests: vec![proto::BatchUpdateItem {
                    digest: Some(wire.clone()),
                    data,
                }],
                digest_function: self.function_code(),
            };
            self.run(|| {
                let resp: proto::BatchUpdateBlobsResponse = self
                    .unary_status(CAS_UPDATE, req.clone())
                    .map_err(|s| self.full("BatchUpdateBlobs", &s))?;
                match resp.responses.first().and_then(|r| r.status.as_ref()) {
                    None => Ok(()),
                    Some(s) if s.code == 0 => Ok(()),
                    Some(s) => {
                        let s =
                            tonic::Status::new(tonic::Code::from_i32(s.code), s.message.clone());
                        Err(self.full("BatchUpdateBlobs", &s))
                    }
                }
            })?;
        } else {
            self.run(|| self.write_stream(&wire, digest.size(), source))?;
        }
        bump(&self.stats.uploads, 1);
        bump(&self.stats.bytes_up, digest.size());
        Ok(())
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn action_digest(key: &ActionKey) -> proto::Digest {
    proto::Digest {
        hash: key.to_hex(),
        size_bytes: i64::try_from(key.size()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake3_is_preferred_then_sha256() {
        use DigestFunction::*;
        let check =
            |offered: &[i32], expected| assert_eq!(compute_digest_function(offered), expected);
        check(&[proto::SHA256, proto::BLAKE3], Some(Blake3));
        check(&[proto::BLAKE3], Some(Blake3));
        check(&[proto::SHA256, 2, 8], Some(Sha256));
        check(&[], Some(Sha256));
        check(&[2, 3], None); // SHA-1 and MD5 only
    }

    #[test]
    fn resources_name_the_digest_function_except_sha256() {
        let d = proto::Digest {
            hash: "ab".into(),
            size_bytes: 12,
        };
        assert_eq!(blob_path(DigestFunction::Sha256, &d), "blobs/ab/12");
        assert_eq!(blob_path(DigestFunction::Blake3, &d), "blobs/blake3/ab/12");
        assert_eq!(instance_prefix(""), "");
        assert_eq!(instance_prefix("/main/"), "main/");
    }

    #[test]
    fn upload_ids_are_unique_uuids() {
        let (a, b) = (upload_id(), upload_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn messages_encode_with_the_specs_field_numbers() {
        use prost::Message as _;
        // Digest { hash: "ab" (field 1), size_bytes: 3 (field 2) }
        let d = proto::Digest {
            hash: "ab".into(),
            size_bytes: 3,
        };
        assert_eq!(d.encode_to_vec(), [0x0a, 2, b'a', b'b', 0x10, 3]);
        // ReadResponse.data is field 10 (tag 0x52).
        let r = proto::ReadResponse { data: vec![1] };
        assert_eq!(r.encode_to_vec(), [0x52, 1, 1]);
        // ActionResult.stdout_raw is field 5 (tag 0x2a).
        let a = proto::ActionResult {
            stdout_raw: vec![7],
            ..Default::default()
        };
        assert_eq!(a.encode_to_vec(), [0x2a, 1, 7]);
    }
}
