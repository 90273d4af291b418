//! The tree config, `keel.toml`, at the root of a distribution tree.
//!
//! Found with `-C DIR`, else by searching upwards from the current directory, like cargo
//! finds `Cargo.toml`. Unknown keys are errors that name the key, so a typo never silently
//! does nothing.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

pub const FILE_NAME: &str = "keel.toml";

/// `keel.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeConfig {
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub specs: SpecsSection,
    #[serde(default)]
    pub toolchain: ToolchainSection,
    #[serde(default)]
    pub bootstrap: BootstrapSection,
    #[serde(default)]
    pub sources: SourcesSection,
    #[serde(default)]
    pub remote: crate::build::remote::RemoteSection,
    #[serde(default)]
    pub images: ImagesSection,
    #[serde(default)]
    pub build: BuildSection,
}

/// `[build]`: how rpmbuild builds the tree's packages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// Run `%check` sections [default: true]; false is `rpmbuild --nocheck` (the toolkit's
    /// `RUN_CHECK=n`), part of every `rpm:` key.
    #[serde(default = "yes")]
    pub check: bool,
    /// What `/bin/sh` is in every build root (`/bin/bash`: Azure Linux's scripts use bash
    /// under `#!/bin/sh`, and Debian's is dash), a path inside the root; part of every
    /// `srpm:` and `rpm:` key [default: the toolchain's own].
    pub sh: Option<PathBuf>,
    /// An rpmrc in the build root read after rpm's own (`/usr/lib/rpm/azl/rpmrc`, which
    /// `azurelinux-rpm-macros` installs): where `%optflags` comes from, which no macro
    /// file can set (rpm sets it from rpmrc after reading them: tried with and without
    /// `--target`). Part of every
    /// `srpm:` and `rpm:` key.
    pub rcfile: Option<PathBuf>,
    /// Seconds one rpmbuild may run before it is stopped and counted as failed [default:
    /// 3600]. Not part of any key: it decides whether a build finishes, not what it makes.
    #[serde(default = "an_hour")]
    pub timeout: u64,
}

fn an_hour() -> u64 {
    3600
}

impl Default for BuildSection {
    fn default() -> Self {
        BuildSection {
            check: true,
            sh: None,
            rcfile: None,
            timeout: an_hour(),
        }
    }
}

impl BuildSection {
    /// The build root's settings as keys see them (`sh`, `rcfile`; unset ones absent).
    pub fn build_root(&self) -> std::collections::BTreeMap<String, String> {
        [("sh", &self.sh), ("rcfile", &self.rcfile)]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v.as_ref()?.to_string_lossy().into_owned())))
            .collect()
    }
}

/// `[images]`: the images `keel build` makes, each an action of the build.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesSection {
    /// Azure Linux image configs (JSON), relative to the tree root. Each is the action
    /// `image:<file stem>`, published to `out/images/<file stem>/`.
    #[serde(default)]
    pub configs: Vec<PathBuf>,
    /// Which `SystemConfigs` entry to install, by image (file stem) [default: the first].
    #[serde(default)]
    pub systems: std::collections::BTreeMap<String, String>,
    /// External repositories: directories of prebuilt RPMs (the distribution's base, a
    /// vendor's packages), relative to the tree root, that images take a package from
    /// when no package of the tree provides it.
    #[serde(default)]
    pub repos: Vec<PathBuf>,
}

/// `[sources]`: where sources not kept in the tree come from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesSection {
    /// Base URLs (http, https, file) tried in order; a source is `URL/<file name>`.
    #[serde(default)]
    pub mirrors: Vec<String>,
}

/// `[specs]`: where the specs are and how to read them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecsSection {
    /// Directories searched for `*.spec`, relative to the tree root.
    #[serde(default = "default_spec_dirs")]
    pub dirs: Vec<PathBuf>,
    /// Macro files (globs, relative to the tree root) loaded in order after the host's, as
    /// `rpmspec --load` does.
    #[serde(default)]
    pub macro_files: Vec<String>,
    /// Whether to read the host's rpm macro files (when present).
    #[serde(default = "yes")]
    pub host_macros: bool,
    /// Macros defined after the macro files, as `-D 'name value'`.
    #[serde(default)]
    pub defines: std::collections::BTreeMap<String, String>,
    /// The shell `%(...)` runs in (Azure Linux parses with bash as /bin/sh).
    pub shell: Option<String>,
    /// Lua's `package.path` for `require` in `%{lua:}` (`?` is the module path).
    pub lua_path: Option<String>,
    /// The target, `cpu-os` [default: the host].
    pub target: Option<String>,
    /// Lua modules of the tree that `require` finds by name when `lua_path` has none:
    /// module name -> file relative to the tree root (Azure Linux's `azl.srpm.python` is
    /// `SPECS/azurelinux-rpm-macros/python.lua`, installed by its macros package).
    #[serde(default)]
    pub lua_modules: std::collections::BTreeMap<String, PathBuf>,
    /// Define `%<prefix>_<spec>_version`, `_release` (without the dist tag) and `_epoch`
    /// for every spec of the tree (`<spec>`: its file name without `.spec`, `-` as `_`),
    /// as Azure Linux's toolkit does for specs that name another's version
    /// (`%azl_kernel_version`); Azure Linux uses `azl`.
    pub version_macros: Option<String>,
}

impl Default for SpecsSection {
    fn default() -> Self {
        SpecsSection {
            dirs: default_spec_dirs(),
            macro_files: Vec::new(),
            host_macros: true,
            defines: Default::default(),
            shell: None,
            lua_path: None,
            target: None,
            lua_modules: Default::default(),
            version_macros: None,
        }
    }
}

fn default_spec_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("SPECS")]
}

fn yes() -> bool {
    true
}

/// `[toolchain]`: the build root.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolchainSection {
    /// A list of the build root's RPM file names (like Azure Linux's
    /// `toolkit/resources/manifests/package/toolchain_x86_64.txt`), relative to the tree.
    pub manifest: Option<PathBuf>,
    /// A worker chroot to build in instead of the host's own `/usr`, `/etc`…: a directory
    /// or a tarball (`.tar`, `.tar.gz`, `.tar.xz`, `.tar.zst`), relative to the tree.
    pub root: Option<PathBuf>,
    /// Or a directory of toolchain RPMs, whose payloads make the root.
    pub rpms: Option<PathBuf>,
    /// Packages of the tree the build root carries, which the root itself lacks (Azure
    /// Linux's `azurelinux-rpm-macros` on a Debian host): built first and layered into
    /// every other build, as if each spec had `BuildRequires: NAME`.
    #[serde(default)]
    pub from_tree: Vec<String>,
}

/// `[bootstrap]`: prebuilt packages that break build cycles.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSection {
    /// RPM file names (`name-version-release.arch.rpm`) of the seed.
    #[serde(default)]
    pub seed: Vec<String>,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The store directory, relative to the tree root.
    pub dir: Option<PathBuf>,
}

/// A loaded tree: its root directory and its config.
#[derive(Debug)]
pub struct Tree {
    pub root: PathBuf,
    pub config: TreeConfig,
}

impl Tree {
    /// Loads `keel.toml` from `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Tree> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let config: TreeConfig =
            toml::from_str(&text).with_context(|| format!("failed to parse {}", path.display()))?;
        Ok(Tree {
            root: dir.to_owned(),
            config,
        })
    }

    /// The tree for `-C DIR`, else the nearest `keel.toml` above the current directory.
    pub fn find(explicit: Option<&Path>) -> anyhow::Result<Option<Tree>> {
        if let Some(dir) = explicit {
            if !dir.join(FILE_NAME).is_file() {
                anyhow::bail!("{} has no {FILE_NAME}", dir.display());
            }
            return Tree::load(dir).map(Some);
        }
        let cwd = std::env::current_dir().context("failed to read the current directory")?;
        for dir in cwd.ancestors() {
            if dir.join(FILE_NAME).is_file() {
                return Tree::load(dir).map(Some);
            }
        }
        Ok(None)
    }
}

/// The store directory: `--store`/`KEEL_STORE`, else `keel.toml`'s `store.dir`, else
/// `$XDG_CACHE_HOME/keel`, else `~/.cache/keel`.
pub fn store_dir(flag: Option<&Path>, tree: Option<&Tree>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    if let Some(t) = tree
        && let Some(d) = &t.config.store.dir
    {
        return Ok(t.root.join(d));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("keel"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
        "cannot choose a store directory: none of --store, KEEL_STORE, keel.toml's store.dir, XDG_CACHE_HOME or HOME is set",
    )?;
    Ok(PathBuf::from(home).join(".cache").join("keel"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<TreeConfig>("[store]\ndirr = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("dirr"), "{err}");
    }

    #[test]
    fn images_are_named_and_checked_strictly() {
        let c: TreeConfig = toml::from_str(
            "[images]\nconfigs = [\"imageconfigs/a.json\"]\nsystems = { a = \"Standard\" }\n",
        )
        .unwrap();
        assert_eq!(c.images.configs, [Path::new("imageconfigs/a.json")]);
        assert_eq!(c.images.systems["a"], "Standard");
        let err = toml::from_str::<TreeConfig>("[images]\nconfig = []\n").unwrap_err();
        assert!(err.to_string().contains("config"), "{err}");
    }

    #[test]
    fn flag_beats_tree_config() {
        let tree = Tree {
            root: "/t".into(),
            config: toml::from_str("[store]\ndir = \"cache\"").unwrap(),
        };
        assert_eq!(
            store_dir(Some(Path::new("/s")), Some(&tree)).unwrap(),
            Path::new("/s")
        );
        assert_eq!(store_dir(None, Some(&tree)).unwrap(), Path::new("/t/cache"));
    }
}
