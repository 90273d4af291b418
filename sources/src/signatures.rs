//! `<pkg>.signatures.json`: the SHA-256 of every source of a spec, in Azure Linux's format
//! (`{"Signatures": {"file": "sha256hex"}}`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The signatures of one spec's sources: file name → lowercase SHA-256 hex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signatures {
    entries: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct OnDisk {
    #[serde(rename = "Signatures")]
    signatures: BTreeMap<String, String>,
}

/// Azure Linux's toolkit reads these files with Go's `encoding/json`, which matches an
/// object key to the `Signatures` field ignoring case and skips keys it does not know:
/// the tree has files spelled `signatures` (libsepol). Read them the same way, the last of
/// several matching keys winning as in Go.
impl<'de> Deserialize<'de> for OnDisk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OnDisk, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OnDisk;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object with a `Signatures` key")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OnDisk, A::Error> {
                let mut signatures = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key.eq_ignore_ascii_case("Signatures") {
                        signatures = Some(map.next_value()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                let signatures =
                    signatures.ok_or_else(|| serde::de::Error::missing_field("Signatures"))?;
                Ok(OnDisk { signatures })
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Whether `s` is 64 hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Signatures {
    /// An empty set of signatures.
    pub fn new() -> Signatures {
        Signatures::default()
    }

    /// Reads a signatures file. Digests are checked (64 hex digits) and kept lowercase.
    pub fn load(path: &Path) -> Result<Signatures, Error> {
        let text = fs::read_to_string(path).map_err(|source| Error::ReadSignatures {
            path: path.to_owned(),
            source,
        })?;
        Signatures::parse(&text, path)
    }

    /// Parses the text of a signatures file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Signatures, Error> {
        let raw: OnDisk = serde_json::from_str(text).map_err(|e| Error::ParseSignatures {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        let mut entries = BTreeMap::new();
        for (entry, value) in raw.signatures {
            if !is_sha256_hex(&value) {
                return Err(Error::BadDigest {
                    path: path.to_owned(),
                    entry,
                    value,
                });
            }
            entries.insert(entry, value.to_ascii_lowercase());
        }
        Ok(Signatures { entries })
    }

    /// Writes the signatures in the layout Azure Linux's files use (one-space indent,
    /// sorted, trailing newline), replacing `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let err = |source| Error::WriteSignatures {
            path: path.to_owned(),
            source,
        };
        let mut text = self.to_json();
        text.push('\n');
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".signatures-")
            .tempfile_in(dir)
            .map_err(err)?;
        tmp.write_all(text.as_bytes()).map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        Ok(())
    }

    /// The JSON text of the file, without the trailing newline.
    pub fn to_json(&self) -> String {
        let raw = OnDisk {
            signatures: self.entries.clone(),
        };
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        raw.serialize(&mut ser)
            .expect("a map of strings serializes");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// The expected SHA-256 of `file`, lowercase hex.
    pub fn get(&self, file: &str) -> Option<&str> {
        self.entries.get(file).map(String::as_str)
    }

    /// Sets the SHA-256 of `file`; returns whether anything changed. Panics on a value that
    /// is not 64 hex digits: callers pass digests they computed.
    pub fn set(&mut self, file: &str, sha256: &str) -> bool {
        assert!(is_sha256_hex(sha256), "`{sha256}` is not a SHA-256 digest");
        let value = sha256.to_ascii_lowercase();
        if self.entries.get(file) == Some(&value) {
            return false;
        }
        self.entries.insert(file.to_owned(), value);
        true
    }

    /// Removes the entry of `file`; returns whether there was one.
    pub fn remove(&mut self, file: &str) -> bool {
        self.entries.remove(file).is_some()
    }

    /// Every (file, digest), sorted by file name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// serde_json appends " at line L column C"; the error carries those as fields.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Signatures, Error> {
        Signatures::parse(text, Path::new("SPECS/x/x.signatures.json"))
    }

    const A: &str = "2889bbd778b144fab65b7ae8b846c4975648e72e3f21def011ce16328b0f5f49";

    #[test]
    fn reads_azure_layout_and_lowercases() {
        let s = parse(&format!(
            "{{\n \"Signatures\": {{\n  \"x-1.0.tar.gz\": \"{}\"\n }}\n}}\n",
            A.to_uppercase()
        ))
        .unwrap();
        assert_eq!(s.get("x-1.0.tar.gz"), Some(A));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn json_errors_name_file_line_and_column() {
        let err = parse("{\n \"Signatures\": {\n  \"a\": \"b\",\n }\n}").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("parse SPECS/x/x.signatures.json:4:2: "),
            "{msg}"
        );
        assert!(matches!(err, Error::ParseSignatures { line: 4, .. }));
    }

    #[test]
    fn wrong_shape_is_a_parse_error() {
        let msg = parse("{\"Sigs\": {}}").unwrap_err().to_string();
        assert!(msg.contains("missing field `Signatures`"), "{msg}");
        assert!(msg.contains("x.signatures.json:1:"), "{msg}");
        let msg = parse("{\"signatures\": [1]}").unwrap_err().to_string();
        assert!(msg.contains("x.signatures.json:1:"), "{msg}");
    }

    #[test]
    fn keys_match_ignoring_case_like_the_toolkit() {
        // SPECS/libsepol/libsepol.signatures.json spells it `signatures`; Go's
        // encoding/json, which the toolkit reads it with, ignores case and unknown keys.
        for key in ["signatures", "SIGNATURES", "sIgnatures"] {
            let s = parse(&format!(
                "{{\"{key}\": {{\"a.tar\": \"{A}\"}}, \"Other\": [1]}}"
            ))
            .unwrap();
            assert_eq!(s.get("a.tar"), Some(A), "{key}");
        }
    }

    #[test]
    fn bad_digests_name_the_entry() {
        for bad in ["abc", &A[..63], &format!("{}g", &A[..63]), &format!("{A}0")] {
            let text = format!("{{\"Signatures\": {{\"ok\": \"{A}\", \"bad.tar\": \"{bad}\"}}}}");
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains("entry `bad.tar`"), "{msg}");
            assert!(msg.contains(bad), "{msg}");
            assert!(msg.starts_with("SPECS/x/x.signatures.json: "), "{msg}");
        }
    }

    #[test]
    fn save_writes_azure_layout_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.signatures.json");
        let mut s = Signatures::new();
        assert!(s.set("x-1.0.tar.gz", A));
        assert!(!s.set("x-1.0.tar.gz", A));
        s.save(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("{{\n \"Signatures\": {{\n  \"x-1.0.tar.gz\": \"{A}\"\n }}\n}}\n")
        );
        assert_eq!(Signatures::load(&path).unwrap(), s);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn saved_signatures_read_back_the_same(
            entries in proptest::collection::btree_map("[^\\u{0}]{1,20}", "[0-9a-f]{64}", 0..5)
        ) {
            let mut s = Signatures::new();
            for (k, v) in &entries {
                s.set(k, v);
            }
            let back = parse(&s.to_json()).unwrap();
            proptest::prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let msg = Signatures::load(Path::new("/nonexistent/y.signatures.json"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("read /nonexistent/y.signatures.json: "),
            "{msg}"
        );
    }
}
