//! An OCI image layout (image-spec v1.1) written natively: `oci-layout`, `index.json`
//! and `blobs/sha256/` holding one gzip layer of the root, its config and the manifest.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::tar::TarWriter;
use crate::Error;

/// Forwards writes while hashing them with SHA-256 and counting bytes.
struct Hashing<W: Write> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W: Write>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        sha: Sha256::new(),
        len: 0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` as a blob; returns its `sha256:` digest and size.
fn put_blob(blobs: &Path, bytes: &[u8]) -> Result<(String, u64), Error> {
    let h = hex(&Sha256::digest(bytes));
    let p = blobs.join(&h);
    fs::write(&p, bytes).map_err(Error::io("write", &p))?;
    Ok((format!("sha256:{h}"), bytes.len() as u64))
}

/// The OCI name of an rpm architecture.
fn oci_arch(rpm_arch: &str) -> &str {
    match rpm_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes an OCI image layout of `root` into directory `out` (created; must not exist),
/// tagged `tag`, for `arch` (an rpm architecture), created at `sde`.
pub fn write_oci_layout(
    root: &Path,
    out: &Path,
    tag: &str,
    arch: &str,
    sde: u64,
) -> Result<(), Error> {
    let blobs = out.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(Error::io("create directory", &blobs))?;
    let tmp = blobs.join(".layer.tmp");
    let file = fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
    let compressed = hashing(BufWriter::new(file));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(compressed, flate2::Compression::default());
    let mut t = TarWriter::new(hashing(gz), sde);
    t.append_tree(root)?;
    let io = |what| Error::io(what, &tmp);
    let plain = t.finish().map_err(io("write"))?;
    let diff_id = format!("sha256:{}", hex(&plain.sha.finalize()));
    let mut compressed = plain.inner.finish().map_err(io("write"))?;
    compressed.flush().map_err(io("write"))?;
    let layer_digest = hex(&compressed.sha.finalize());
    let layer_size = compressed.len;
    let layer_path = blobs.join(&layer_digest);
    fs::rename(&tmp, &layer_path).map_err(Error::io("rename into", &layer_path))?;

    let created = super::rfc3339(sde);
    let config = json!({
        "architecture": oci_arch(arch),
        "os": "linux",
        "created": created,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "keel image"}],
    });
    let (config_digest, config_size) = put_blob(
        &blobs,
        &serde_json::to_vec(&config).expect("JSON values serialize"),
    )?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer_size,
        }],
    });
    let (manifest_digest, manifest_size) = put_blob(
        &blobs,
        &serde_json::to_vec(&manifest).expect("JSON values serialize"),
    )?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    let write = |name: &str, bytes: Vec<u8>| -> Result<(), Error> {
        let p = out.join(name);
        fs::write(&p, bytes).map_err(Error::io("write", &p))
    };
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())?;
    write(
        "index.json",
        serde_json::to_vec(&index).expect("JSON values serialize"),
    )?;
    Ok(())
}
