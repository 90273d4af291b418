//! Bazel's HTTP cache protocol: `GET`/`PUT`/`HEAD` on `BASE[/INSTANCE]/ac/<hex>` and
//! `BASE[/INSTANCE]/cas/<hex>`.
//!
//! # Naming blobs on the wire
//!
//! The protocol names a CAS blob by the hex of a hash of its bytes; Bazel uses SHA-256,
//! keel's digests are BLAKE3. [`DigestFunction`] picks the path:
//!
//! - `blake3`: `cas/<blake3 hex>`. Works with any server that stores paths as given
//!   (nginx + WebDAV, S3/GCS behind the same paths) and needs no mapping; servers that
//!   check the SHA-256 of what is put (bazel-remote) refuse it.
//! - `sha256` (the default, what bazel-remote expects): `cas/<sha256 hex>`, computed from
//!   the bytes while uploading. The SHA-256 of every blob an action names travels inside
//!   its signed action-cache entry, so a reader on a fresh machine learns it from the entry
//!   (through the shared [`DigestMap`]) before fetching. Downloads are still verified
//!   against the BLAKE3 digest they were asked for.
//!
//! Action-cache entries are stored at `ac/<action key hex>` (64 hex digits, so servers that
//! check the shape of keys accept them). bazel-remote validates `ac/` uploads as
//! `ActionResult` protobufs unless started with `--disable_http_ac_validation`; keel's
//! entries are its own signed envelope, so that flag is required there.
//!
//! # Faults
//!
//! Every request has a connect timeout, a per-read/per-write timeout and an overall
//! deadline for the whole transfer (`transfer_timeout`: a server that trickles a byte
//! just before each read would time out never cuts the transfer off). Connection errors,
//! timeouts, cut-off bodies, 408, 429 and 5xx are retried `retries` times with exponential
//! backoff. After `breaker_threshold` consecutive failed operations the tier is disabled for
//! the rest of the process with one warning, and every later call fails at once with
//! [`RemoteError::Disabled`]. HTTP 507 (Insufficient Storage) stops uploads for the rest of
//! the process, also with one warning; downloads go on.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use keel_store::{ActionKey, BlobDigest};

use crate::error::{RemoteError, Result};
use crate::health::{Fail, Health, Policy, run_op};
use crate::tier::{
    BlobSource, DigestFunction, DigestMap, Landing, Stats, Tier, VerifyFailure, bump, hex,
    verified_read,
};

/// A secret string: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic ...`.
    Basic { user: String, password: Secret },
}

/// The environment variable holding a bearer token.
pub const ENV_TOKEN: &str = "KEEL_REMOTE_TOKEN";
/// The environment variables holding a user name and password for basic auth.
pub const ENV_USER: &str = "KEEL_REMOTE_USER";
pub const ENV_PASSWORD: &str = "KEEL_REMOTE_PASSWORD";

impl Credentials {
    /// From the environment: `KEEL_REMOTE_TOKEN` (bearer) first, else `KEEL_REMOTE_USER` and
    /// `KEEL_REMOTE_PASSWORD` (basic), else none.
    pub fn from_env() -> Credentials {
        Credentials::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Credentials::from_env`] over any lookup (testable without touching the process
    /// environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Credentials {
        if let Some(t) = var(ENV_TOKEN).filter(|t| !t.is_empty()) {
            return Credentials::Bearer(Secret(t));
        }
        match (var(ENV_USER), var(ENV_PASSWORD)) {
            (Some(user), Some(p)) if !user.is_empty() => Credentials::Basic {
                user,
                password: Secret(p),
            },
            _ => Credentials::None,
        }
    }

    /// From a netrc-style file: whitespace-separated `machine HOST login USER password PASS`
    /// entries (and `default`). A `login` of `bearer` makes the password a bearer token.
    /// `None` when no entry matches `host`.
    pub fn from_netrc(path: &Path, host: &str) -> Result<Option<Credentials>> {
        let text = std::fs::read_to_string(path).map_err(|e| RemoteError::io("read", path, e))?;
        Ok(parse_netrc(&text, host))
    }

    fn header(&self) -> Option<String> {
        match self {
            Credentials::None => None,
            Credentials::Bearer(t) => Some(format!("Bearer {}", t.expose())),
            Credentials::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose()))
            )),
        }
    }
}

fn parse_netrc(text: &str, host: &str) -> Option<Credentials> {
    let mut words = text.split_whitespace();
    let mut found = None;
    let mut current: Option<bool> = None; // Some(true) inside the matching entry
    let (mut login, mut password) = (None, None);
    let finish = |matching: Option<bool>,
                  login: &mut Option<String>,
                  password: &mut Option<String>| {
        match (matching, login.take(), password.take()) {
            (Some(true), Some(l), Some(p)) if l == "bearer" => Some(Credentials::Bearer(Secret(p))),
            (Some(true), Some(user), Some(p)) => Some(Credentials::Basic {
                user,
                password: Secret(p),
            }),
            _ => None,
        }
    };
    while let Some(w) = words.next() {
        match w {
            "machine" | "default" => {
                if let Some(c) = finish(current, &mut login, &mut password) {
                    found.get_or_insert(c);
                }
                current = Some(if w == "default" {
                    found.is_none()
                } else {
                    words.next() == Some(host)
                });
            }
            "login" => login = words.next().map(str::to_owned),
            "password" => password = words.next().map(str::to_owned),
            _ => {}
        }
    }
    if let Some(c) = finish(current, &mut login, &mut password) {
        found.get_or_insert(c);
    }
    found
}

/// A base URL split into the part that may be printed and the credentials it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port][/path][/instance]`, no trailing slash, no user info.
    pub base: String,
    pub host: String,
}

impl Endpoint {
    /// Parses `http[s]://[user[:password]@]host[:port][/path]` and an optional instance
    /// name. Credentials in the URL are returned separately, never kept in `base`.
    pub fn parse(url: &str, instance: Option<&str>) -> Result<(Endpoint, Credentials)> {
        let bad = |why: &str| RemoteError::Config(format!("remote cache URL: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected http:// or https://"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("expected http:// or https://"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if hostport.is_empty() {
            return Err(bad("no host"));
        }
        let creds = match userinfo {
            None => Credentials::None,
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                Credentials::Basic {
                    user: user.to_owned(),
                    password: Secret(pass.to_owned()),
                }
            }
        };
        let mut base = format!("{scheme}://{hostport}{}", path.trim_end_matches('/'));
        if let Some(i) = instance
            .map(|i| i.trim_matches('/'))
            .filter(|i| !i.is_empty())
        {
            base.push('/');
            base.push_str(i);
        }
        let host = hostport
            .rsplit_once(':')
            .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            .map_or(hostport, |(h, _)| h)
            .to_owned();
        Ok((Endpoint { base, host }, creds))
    }
}

/// Settings of an [`HttpTier`].
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Base URL; user info in it becomes basic-auth credentials.
    pub url: String,
    /// An instance name appended to the base URL's path.
    pub instance: Option<String>,
    pub digest_function: DigestFunction,
    /// Used when the URL carries none.
    pub credentials: Credentials,
    pub connect_timeout: Duration,
    /// Bound on waiting for a response and on each read or write of a body.
    pub io_timeout: Duration,
    /// Bound on one whole transfer, from connecting to the body's last byte (each retry
    /// has its own).
    pub transfer_timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first backoff; doubled after each retry.
    pub backoff: Duration,
    /// Consecutive failed operations after which the tier is disabled for the process.
    pub breaker_threshold: u32,
    /// Never upload (pull requests, developers).
    pub read_only: bool,
    /// Blobs larger than this are not uploaded.
    pub max_upload_size: Option<u64>,
    /// Where downloads are staged while they are verified.
    pub temp_dir: PathBuf,
}

impl HttpConfig {
    pub fn new(url: impl Into<String>) -> HttpConfig {
        HttpConfig {
            url: url.into(),
            instance: None,
            digest_function: DigestFunction::Sha256,
            credentials: Credentials::None,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            transfer_timeout: Duration::from_secs(600),
            retries: 2,
            backoff: Duration::from_millis(200),
            breaker_threshold: 3,
            read_only: false,
            max_upload_size: None,
            temp_dir: std::env::temp_dir(),
        }
    }
}

/// A Bazel HTTP cache.
pub struct HttpTier {
    endpoint: Endpoint,
    auth: Option<String>,
    config: HttpConfig,
    agent: ureq::Agent,
    map: Arc<DigestMap>,
    health: Health,
    stats: Stats,
}

impl fmt::Debug for HttpTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTier")
            .field("base", &self.endpoint.base)
            .field("digest_function", &self.config.digest_function)
            .field("read_only", &self.config.read_only)
            .finish_non_exhaustive()
    }
}

impl HttpTier {
    /// A tier for `config`. `map` is shared with the other tiers of a [`crate::Remote`].
    pub fn new(config: HttpConfig, map: Arc<DigestMap>) -> Result<HttpTier> {
        let (endpoint, url_creds) = Endpoint::parse(&config.url, config.instance.as_deref())?;
        let creds = if url_creds == Credentials::None {
            &config.credentials
        } else {
            &url_creds
        };
        let auth = creds.header();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_send_request(Some(config.io_timeout))
            .timeout_recv_response(Some(config.io_timeout))
            .timeout_per_read(Some(config.io_timeout))
            .timeout_per_write(Some(config.io_timeout))
            .timeout_global(Some(config.transfer_timeout))
            .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(HttpTier {
            endpoint,
            auth,
            config,
            agent,
            map,
            health: Health::default(),
            stats: Stats::default(),
        })
    }

    /// Whether the breaker has opened.
    pub fn is_disabled(&self) -> bool {
        self.health.is_disabled()
    }

    fn ac_url(&self, key: &ActionKey) -> String {
        format!("{}/ac/{}", self.endpoint.base, key.to_hex())
    }

    fn cas_url(&self, d: &BlobDigest) -> Result<String> {
        let h = match self.config.digest_function {
            DigestFunction::Blake3 => d.to_hex(),
            DigestFunction::Sha256 => {
                hex(&self.map.get(d).ok_or_else(|| RemoteError::UnknownSha256 {
                    url: self.endpoint.base.clone(),
                    digest: d.to_hex(),
                })?)
            }
        };
        Ok(format!("{}/cas/{h}", self.endpoint.base))
    }

    fn request(
        &self,
        method: &'static str,
        url: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let r = match method {
            "HEAD" => self.agent.head(url),
            _ => self.agent.get(url),
        };
        match &self.auth {
            Some(a) => r.header("Authorization", a),
            None => r,
        }
    }

    fn transport(method: &'static str, url: &str, e: &ureq::Error) -> Fail {
        let message = match e {
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            e => e.to_string(),
        };
        Fail::Retry(RemoteError::Transport {
            method,
            url: url.to_owned(),
            message,
        })
    }

    fn status(method: &'static str, url: &str, status: u16) -> Fail {
        let e = RemoteError::Status {
            method,
            url: url.to_owned(),
            status,
        };
        match status {
            408 | 429 | 500..=506 | 508..=599 => Fail::Retry(e),
            _ => Fail::Fatal(e),
        }
    }

    /// Runs `op` with retries, backoff and the breaker.
    fn run<T>(&self, op: impl FnMut() -> Result<T, Fail>) -> Result<T> {
        run_op(
            &self.health,
            &self.stats,
            &self.endpoint.base,
            Policy {
                retry: keel_retry::Retry::new(self.config.retries, self.config.backoff),
                breaker_threshold: self.config.breaker_threshold,
            },
            op,
        )
    }

    fn check_upload(&self, size: u64) -> Result<()> {
        let refuse = |why: String| {
            Err(RemoteError::UploadRefused {
                url: self.endpoint.base.clone(),
                why,
            })
        };
        if self.config.read_only {
            return refuse("the remote is read-only".into());
        }
        if self.health.uploads_stopped() {
            return refuse("uploads stopped (the remote is full)".into());
        }
        if let Some(max) = self.config.max_upload_size.filter(|&m| size > m) {
            return refuse(format!("{size} bytes is over the upload limit of {max}"));
        }
        Ok(())
    }

    fn put(&self, url: &str, size: u64, source: BlobSource<'_>) -> Result<()> {
        self.run(|| {
            let mut body = source.open().map_err(Fail::Other)?;
            let mut req = self
                .agent
                .put(url)
                .header("Content-Length", size.to_string());
            if let Some(a) = &self.auth {
                req = req.header("Authorization", a);
            }
            let resp = req
                .send(ureq::SendBody::from_reader(&mut body))
                .map_err(|e| Self::transport("PUT", url, &e))?;
            match resp.status().as_u16() {
                200..=299 => Ok(()),
                507 => {
                    self.health.stop_uploads(
                        &self.endpoint.base,
                        "HTTP 507 Insufficient Storage",
                        &self.stats,
                    );
                    Err(Fail::Other(RemoteError::UploadRefused {
                        url: url.to_owned(),
                        why: "HTTP 507 Insufficient Storage".into(),
                    }))
                }
                413 => Err(Fail::Other(RemoteError::UploadRefused {
                    url: url.to_owned(),
                    why: "HTTP 413 Payload Too Large".into(),
                })),
                s => Err(Self::status("PUT", url, s)),
            }
        })?;
        bump(&self.stats.uploads, 1);
        bump(&self.stats.bytes_up, size);
        Ok(())
    }
}

/// The largest action-cache entry accepted.
const MAX_ENTRY: u64 = 64 << 20;

impl Tier for HttpTier {
    fn name(&self) -> &str {
        &self.endpoint.base
    }

    fn get_action(&self, key: &ActionKey) -> Result<Option<Vec<u8>>> {
        let url = self.ac_url(key);
        let got = self.run(|| {
            let resp = self
                .request("GET", &url)
                .call()
                .map_err(|e| Self::transport("GET", &url, &e))?;
            match resp.status().as_u16() {
                200 => {}
                404 => return Ok(None),
                s => return Err(Self::status("GET", &url, s)),
            }
            let announced = resp.body().content_length();
            let bytes = resp
                .into_body()
                .with_config()
                .limit(MAX_ENTRY)
                .read_to_vec()
                .map_err(|e| Self::transport("GET", &url, &e))?;
            if let Some(n) = announced.filter(|&n| n != bytes.len() as u64) {
                return Err(Fail::Retry(RemoteError::Truncated {
                    url: url.clone(),
                    expected: n,
                    got: bytes.len() as u64,
                }));
            }
            Ok(Some(bytes))
        })?;
        match &got {
            Some(b) => {
                bump(&self.stats.ac_hits, 1);
                bump(&self.stats.bytes_down, b.len() as u64);
            }
            None => bump(&self.stats.ac_misses, 1),
        }
        Ok(got)
    }

    fn put_action(&self, key: &ActionKey, entry: &[u8]) -> Result<()> {
        self.check_upload(entry.len() as u64)?;
        self.put(
            &self.ac_url(key),
            entry.len() as u64,
            BlobSource::Bytes(entry),
        )
    }

    fn has_blobs(&self, digests: &[BlobDigest]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(digests.len());
        for d in digests {
            let url = match self.cas_url(d) {
                Ok(u) => u,
                // Never uploaded from here and named by no entry read: as good as missing.
                Err(RemoteError::UnknownSha256 { .. }) => {
                    out.push(false);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let has = self.run(|| {
                let resp = self
                    .request("HEAD", &url)
                    .call()
                    .map_err(|e| Self::transport("HEAD", &url, &e))?;
                match resp.status().as_u16() {
                    200 => Ok(true),
                    404 => Ok(false),
                    s => Err(Self::status("HEAD", &url, s)),
                }
            })?;
            out.push(has);
        }
        Ok(out)
    }

    fn temp_dir(&self) -> &Path {
        &self.config.temp_dir
    }

    fn land_blob(&self, digest: &BlobDigest, landing: &mut dyn Landing) -> Result<bool> {
        let url = self.cas_url(digest)?;
        let found = self.run(|| {
            let resp = self
                .request("GET", &url)
                .call()
                .map_err(|e| Self::transport("GET", &url, &e))?;
            match resp.status().as_u16() {
                200 => {}
                404 => return Ok(false),
                s => return Err(Self::status("GET", &url, s)),
            }
            let mut body: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
            match verified_read(&url, digest, &mut body, landing, &self.stats) {
                Ok(Ok(_)) => Ok(true),
                Ok(Err(got)) => Err(Fail::Retry(RemoteError::Truncated {
                    url: url.clone(),
                    expected: digest.size(),
                    got,
                })),
                Err(VerifyFailure::Body(e)) => Err(Fail::Retry(RemoteError::Transport {
                    method: "GET",
                    url: url.clone(),
                    message: format!("reading the body: {e}"),
                })),
                Err(VerifyFailure::Local(e)) => Err(Fail::Other(e)),
            }
        })?;
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
        self.check_upload(digest.size())?;
        if self.config.digest_function == DigestFunction::Sha256 && self.map.get(digest).is_none() {
            self.map.insert(digest, source.sha256()?);
        }
        let url = self.cas_url(digest)?;
        self.put(&url, digest.size(), source)
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_strips_credentials_and_joins_instance() {
        let (e, c) =
            Endpoint::parse("https://bob:s3cret@cache.example:8443/base/", Some("main")).unwrap();
        assert_eq!(e.base, "https://cache.example:8443/base/main");
        assert_eq!(e.host, "cache.example");
        assert!(matches!(c, Credentials::Basic { ref user, .. } if user == "bob"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Endpoint::parse("ftp://x", None).is_err());
        assert!(Endpoint::parse("http://", None).is_err());
    }

    #[test]
    fn credentials_from_vars_prefer_the_token() {
        let vars = |k: &str| match k {
            ENV_TOKEN => Some("tok".to_owned()),
            ENV_USER => Some("u".to_owned()),
            ENV_PASSWORD => Some("p".to_owned()),
            _ => None,
        };
        let c = Credentials::from_vars(vars);
        assert_eq!(c, Credentials::Bearer(Secret::new("tok")));
        assert_eq!(c.header().unwrap(), "Bearer tok");
        assert!(!format!("{c:?}").contains("tok\""));
        let basic = Credentials::from_vars(|k| (k != ENV_TOKEN).then(|| "x".to_owned()));
        assert_eq!(basic.header().unwrap(), "Basic eDp4");
        assert_eq!(Credentials::from_vars(|_| None), Credentials::None);
    }

    #[test]
    fn netrc_entries_match_by_host() {
        let text = "machine other login a password b\n\
                    machine cache.example login bearer password T0K\n\
                    default login d password e\n";
        assert_eq!(
            parse_netrc(text, "cache.example"),
            Some(Credentials::Bearer(Secret::new("T0K")))
        );
        assert_eq!(
            parse_netrc(text, "other"),
            Some(Credentials::Basic {
                user: "a".into(),
                password: Secret::new("b")
            })
        );
        assert_eq!(
            parse_netrc(text, "elsewhere"),
            Some(Credentials::Basic {
                user: "d".into(),
                password: Secret::new("e")
            })
        );
        assert_eq!(parse_netrc("machine x login a password b", "y"), None);
    }
}
