//! Azure Linux image configs (`toolkit/imageconfigs/*.json`) and their package lists.
//!
//! [`load_config`] reads a config, every package list it names (relative to the config's
//! directory, `{"packages": [...]}`) and every post-install script, so that an
//! [`ImageConfig`] holds all the bytes an image depends on and nothing needs the tree
//! afterwards.
//!
//! # Strictness
//!
//! A field keel does not implement is never ignored. The reader consumes each object
//! field by field; whatever is left is an error naming the file and the field's JSON path
//! (`SystemConfigs[0].AdditionalFiles`). Fields the Azure Linux toolkit knows but keel does
//! not implement yet are named as such ("not supported by keel"); they are accepted only
//! when they hold their zero value (`null`, `false`, `""`, `[]`, `{}` or an object of zero
//! values), which means the same as leaving them out. Values keel does not implement
//! (an `xfs` partition, a `tar.xz` artifact, an `mbr` table) are errors naming the value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Error;

/// A whole image config: the disks to make and the systems to install on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// `Disks`: a container config has one disk with artifacts only.
    pub disks: Vec<Disk>,
    /// `SystemConfigs`.
    pub systems: Vec<SystemConfig>,
}

impl ImageConfig {
    /// The system config named `name`.
    pub fn system(&self, name: &str) -> Option<&SystemConfig> {
        self.systems.iter().find(|s| s.name == name)
    }
}

/// The partition table of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionTableType {
    /// GUID partition table.
    Gpt,
}

/// `Disks[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `PartitionTableType`, when the disk has partitions.
    pub partition_table: Option<PartitionTableType>,
    /// `MaxSize`: the disk's size in MiB (0 when the disk has no partitions).
    pub max_size_mib: u64,
    /// `Artifacts`.
    pub artifacts: Vec<Artifact>,
    /// `Partitions`, in table order.
    pub partitions: Vec<Partition>,
}

/// What kind of file an artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArtifactKind {
    /// The root filesystem as a gzip-compressed tarball (`"Compression": "tar.gz"`).
    TarGz,
    /// The root filesystem as a zstd-compressed tarball (`"Compression": "tar.zst"`).
    TarZst,
    /// An OCI image layout directory with one layer (`"Type": "oci"`, a keel extension).
    Oci,
    /// A raw disk image (`"Type": "raw"`).
    Raw,
    /// A qcow2 disk image (`"Type": "qcow2"`).
    Qcow2,
    /// A fixed-size VHD (`"Type": "vhd"` or `"vhd-fixed"`; keel always writes fixed).
    Vhd,
    /// A VHDX disk image (`"Type": "vhdx"`).
    Vhdx,
    /// The root filesystem as a squashfs image (`"Type": "squashfs"`, a keel extension).
    Squashfs,
    /// An ISO 9660 image holding the squashfs root and the package repository
    /// (`"Type": "iso"`).
    Iso,
}

impl ArtifactKind {
    /// The file name extension keel gives the artifact.
    pub fn extension(self) -> &'static str {
        match self {
            ArtifactKind::TarGz => "tar.gz",
            ArtifactKind::TarZst => "tar.zst",
            ArtifactKind::Oci => "oci",
            ArtifactKind::Raw => "raw",
            ArtifactKind::Qcow2 => "qcow2",
            ArtifactKind::Vhd => "vhd",
            ArtifactKind::Vhdx => "vhdx",
            ArtifactKind::Squashfs => "squashfs",
            ArtifactKind::Iso => "iso",
        }
    }

    /// Whether the artifact is a partitioned disk.
    pub fn is_disk(self) -> bool {
        matches!(
            self,
            ArtifactKind::Raw | ArtifactKind::Qcow2 | ArtifactKind::Vhd | ArtifactKind::Vhdx
        )
    }
}

/// `Disks[].Artifacts[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `Name`: the file's base name.
    pub name: String,
    /// From `Type` and `Compression`.
    pub kind: ArtifactKind,
}

impl Artifact {
    /// `<name>.<extension>`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.name, self.kind.extension())
    }
}

/// A partition's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ext4, made with `mkfs.ext4 -d`.
    Ext4,
    /// FAT32 (`fat32` or `vfat`), made with `mkfs.vfat -F 32` and filled with mtools.
    Fat32,
    /// FAT16 (`fat16`).
    Fat16,
}

/// A partition flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionFlag {
    /// `esp`: an EFI system partition (its GPT type is the ESP's).
    Esp,
    /// `boot`: with `esp`, the same partition; alone, the legacy BIOS bootable attribute.
    Boot,
    /// `bios_grub`: a BIOS boot partition.
    BiosGrub,
}

/// `Disks[].Partitions[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// `ID`, matched by `PartitionSettings[].ID`.
    pub id: String,
    /// `Name`: the GPT partition name (the ID when absent).
    pub name: String,
    /// `Start` in MiB from the start of the disk.
    pub start_mib: u64,
    /// `End` in MiB; 0 means "to the end of the disk".
    pub end_mib: u64,
    /// `FsType`.
    pub fs: FsType,
    /// `Flags`.
    pub flags: Vec<PartitionFlag>,
}

/// `SystemConfigs[].PartitionSettings[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSetting {
    /// `ID` of the partition.
    pub id: String,
    /// `MountPoint` (`/`, `/boot/efi`; empty for a partition that is not mounted).
    pub mount_point: String,
    /// `MountOptions` for fstab (`defaults` when absent).
    pub mount_options: String,
}

/// `SystemConfigs[].Users[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `Name`.
    pub name: String,
    /// `UID`, or the next free id from 1000 when absent.
    pub uid: Option<u32>,
    /// `Password` with `PasswordHashed: true`: a crypt(3) hash put in `/etc/shadow`.
    pub password_hash: Option<String>,
    /// `HomeDirectory` (`/home/<name>`, `/root` for root, when absent).
    pub home: Option<String>,
    /// `StartupCommand`: the login shell (`/bin/bash` when absent).
    pub shell: Option<String>,
}

/// `SystemConfigs[].PostInstallScripts[]`, with the script's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallScript {
    /// `Path` as written, relative to the config's directory.
    pub path: String,
    /// `Args`, split on whitespace (the toolkit passes them through a shell).
    pub args: Vec<String>,
    /// The script's content.
    pub content: Vec<u8>,
}

/// `SystemConfigs[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemConfig {
    /// `Name`.
    pub name: String,
    /// `PackageLists` as written.
    pub package_lists: Vec<String>,
    /// Every package requested: each list's packages in order, then `Packages`, then the
    /// kernel of `KernelOptions.default`; duplicates removed, first occurrence kept.
    pub packages: Vec<String>,
    /// `KernelOptions.default`: the kernel package.
    pub kernel: Option<String>,
    /// `Hostname`, written to `/etc/hostname`.
    pub hostname: Option<String>,
    /// `PartitionSettings`.
    pub partition_settings: Vec<PartitionSetting>,
    /// `Users`.
    pub users: Vec<User>,
    /// `PostInstallScripts`.
    pub post_install_scripts: Vec<InstallScript>,
    /// `RemoveRpmDb`.
    pub remove_rpm_db: bool,
    /// `MaxRootSize` (a keel extension): the limit, in MiB, on the file data the image's
    /// packages may unpack into its root, all together; `None` for keel's default
    /// ([`crate::rootfs::DEFAULT_MAX_ROOT_BYTES`]).
    pub max_root_size_mib: Option<u64>,
}

/// Reads the config at `path` with its package lists and scripts.
pub fn load_config(path: &Path) -> Result<ImageConfig, Error> {
    let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
    parse_config(path, &bytes, &|rel| {
        let dir = path.parent().unwrap_or(Path::new("."));
        let p = dir.join(rel);
        std::fs::read(&p).map_err(Error::io("read", p))
    })
}

/// Parses config `bytes` (read from `file`, for messages), reading package lists and
/// scripts through `read_rel` (given the path as written, relative to the config's
/// directory).
pub fn parse_config(
    file: &Path,
    bytes: &[u8],
    read_rel: &dyn Fn(&str) -> Result<Vec<u8>, Error>,
) -> Result<ImageConfig, Error> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| Error::Config {
        file: file.to_owned(),
        field: "(document)".into(),
        message: format!("invalid JSON: {e}"),
    })?;
    let r = Reader { file };
    let mut top = r.object(value, "")?;
    let disks = r.list(top.take("Disks"), "Disks", |v, at| r.disk(v, at))?;
    let systems = r.list(top.take("SystemConfigs"), "SystemConfigs", |v, at| {
        r.system(v, at, read_rel)
    })?;
    r.finish(top, &[])?;
    if systems.is_empty() {
        return Err(r.err("SystemConfigs", "the config has no system config"));
    }
    for (i, s) in systems.iter().enumerate() {
        if systems[..i].iter().any(|o| o.name == s.name) {
            return Err(r.err(
                &format!("SystemConfigs[{i}].Name"),
                format!("a second system config is named {:?}", s.name),
            ));
        }
    }
    r.check_partitions(&disks, &systems)?;
    Ok(ImageConfig {
        file: file.to_owned(),
        disks,
        systems,
    })
}

/// Reads a package list file: `{"packages": [...]}`.
pub fn parse_package_list(file: &Path, bytes: &[u8]) -> Result<Vec<String>, Error> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| Error::Config {
        file: file.to_owned(),
        field: "(document)".into(),
        message: format!("invalid JSON: {e}"),
    })?;
    let r = Reader { file };
    let mut o = r.object(value, "")?;
    let pkgs = r.strings(o.take("packages"), "packages")?;
    // Azure Linux's lists carry comments; a comment configures nothing.
    r.string(o.take("_comment"))?;
    r.finish(o, &[])?;
    Ok(pkgs)
}

/// An object being consumed field by field.
struct Obj {
    at: String,
    fields: BTreeMap<String, Value>,
}

impl Obj {
    fn take(&mut self, key: &str) -> Field {
        let at = if self.at.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.at)
        };
        // `null` means absent, as in the toolkit's Go decoder.
        let v = self.fields.remove(key).filter(|v| !v.is_null());
        Field { at, value: v }
    }
}

struct Field {
    at: String,
    value: Option<Value>,
}

/// Whether `v` means the same as leaving the field out.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Reader<'a> {
    file: &'a Path,
}

impl Reader<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    fn object(&self, v: Value, at: &str) -> Result<Obj, Error> {
        match v {
            Value::Object(m) => Ok(Obj {
                at: at.to_owned(),
                fields: m.into_iter().collect(),
            }),
            other => Err(self.err(
                if at.is_empty() { "(document)" } else { at },
                format!("expected an object, found {}", type_name(&other)),
            )),
        }
    }

    /// Fails on any field left in `o`: `unsupported` lists the fields the toolkit knows
    /// but keel does not implement (accepted only with their zero value).
    fn finish(&self, o: Obj, unsupported: &[&str]) -> Result<(), Error> {
        for (k, v) in o.fields {
            let at = if o.at.is_empty() {
                k.clone()
            } else {
                format!("{}.{k}", o.at)
            };
            if unsupported.contains(&k.as_str()) {
                if is_zero(&v) {
                    continue;
                }
                return Err(self.err(&at, "this field is not supported by keel"));
            }
            return Err(self.err(&at, "unknown field"));
        }
        Ok(())
    }

    fn list<T>(
        &self,
        f: Field,
        _name: &str,
        mut each: impl FnMut(Value, &str) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        match f.value {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| each(v, &format!("{}[{i}]", f.at)))
                .collect(),
            Some(other) => Err(self.err(
                &f.at,
                format!("expected an array, found {}", type_name(&other)),
            )),
        }
    }

    fn string(&self, f: Field) -> Result<Option<String>, Error> {
        match f.value {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(
                &f.at,
                format!("expected a string, found {}", type_name(&other)),
            )),
        }
    }

    fn required(&self, f: Field) -> Result<String, Error> {
        let at = f.at.clone();
        match self.string(f)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(self.err(&at, "is required")),
        }
    }

    fn strings(&self, f: Field, _name: &str) -> Result<Vec<String>, Error> {
        self.list(f, "", |v, at| match v {
            Value::String(s) => Ok(s),
            other => Err(self.err(
                at,
                format!("expected a string, found {}", type_name(&other)),
            )),
        })
    }

    fn bool(&self, f: Field) -> Result<bool, Error> {
        match f.value {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(other) => Err(self.err(
                &f.at,
                format!("expected a boolean, found {}", type_name(&other)),
            )),
        }
    }

    fn u64(&self, f: Field) -> Result<u64, Error> {
        match f.value {
            None => Ok(0),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                self.err(&f.at, format!("expected a non-negative integer, found {n}"))
            }),
            Some(other) => Err(self.err(
                &f.at,
                format!("expected a number, found {}", type_name(&other)),
            )),
        }
    }

    fn disk(&self, v: Value, at: &str) -> Result<Disk, Error> {
        let mut o = self.object(v, at)?;
        let table_field = o.take("PartitionTableType");
        let table_at = table_field.at.clone();
        let partition_table = match self.string(table_field)?.as_deref() {
            None | Some("") => None,
            Some("gpt") => Some(PartitionTableType::Gpt),
            Some(other) => {
                return Err(self.err(
                    &table_at,
                    format!(
                        "partition table type {other:?} is not supported by keel (only \"gpt\")"
                    ),
                ));
            }
        };
        let max_size_mib = self.u64(o.take("MaxSize"))?;
        let artifacts = self.list(o.take("Artifacts"), "", |v, at| self.artifact(v, at))?;
        let partitions = self.list(o.take("Partitions"), "", |v, at| self.partition(v, at))?;
        self.finish(o, &["TargetDisk", "RawBinaries"])?;
        let has_disk_artifact = artifacts.iter().any(|a| a.kind.is_disk());
        if has_disk_artifact && partitions.is_empty() {
            return Err(self.err(
                &format!("{at}.Partitions"),
                "a disk artifact needs at least one partition",
            ));
        }
        if !partitions.is_empty() {
            if partition_table.is_none() {
                return Err(self.err(
                    &format!("{at}.PartitionTableType"),
                    "a disk with partitions needs a partition table type",
                ));
            }
            if max_size_mib == 0 {
                return Err(self.err(
                    &format!("{at}.MaxSize"),
                    "a disk with partitions needs a size",
                ));
            }
            let mut prev_end = 0;
            for (i, p) in partitions.iter().enumerate() {
                let pat = format!("{at}.Partitions[{i}]");
                if p.start_mib < prev_end.max(1) {
                    return Err(self.err(
                        &format!("{pat}.Start"),
                        format!("partition {:?} starts at {} MiB, before the end of the previous one or the table", p.id, p.start_mib),
                    ));
                }
                let end = if p.end_mib == 0 {
                    if i + 1 != partitions.len() {
                        return Err(self.err(
                            &format!("{pat}.End"),
                            "only the last partition may end at 0 (the end of the disk)",
                        ));
                    }
                    max_size_mib
                } else {
                    p.end_mib
                };
                if end <= p.start_mib || end > max_size_mib {
                    return Err(self.err(
                        &format!("{pat}.End"),
                        format!("partition {:?} ends at {end} MiB: not after its start or beyond the disk's {max_size_mib} MiB", p.id),
                    ));
                }
                if partitions[..i].iter().any(|q| q.id == p.id) {
                    return Err(self.err(
                        &format!("{pat}.ID"),
                        format!("duplicate partition ID {:?}", p.id),
                    ));
                }
                prev_end = end;
            }
        }
        Ok(Disk {
            partition_table,
            max_size_mib,
            artifacts,
            partitions,
        })
    }

    fn artifact(&self, v: Value, at: &str) -> Result<Artifact, Error> {
        let mut o = self.object(v, at)?;
        let name = self.required(o.take("Name"))?;
        check_file_name(&name).map_err(|m| self.err(&format!("{at}.Name"), m))?;
        let ty_f = o.take("Type");
        let ty_at = ty_f.at.clone();
        let ty = self.string(ty_f)?.unwrap_or_default();
        let comp_f = o.take("Compression");
        let comp_at = comp_f.at.clone();
        let comp = self.string(comp_f)?.unwrap_or_default();
        self.finish(o, &[])?;
        let kind = match (ty.as_str(), comp.as_str()) {
            ("", "tar.gz") => ArtifactKind::TarGz,
            ("", "tar.zst") => ArtifactKind::TarZst,
            ("", "") => return Err(self.err(at, "an artifact needs a Type or a Compression")),
            ("", other) => {
                return Err(self.err(
                    &comp_at,
                    format!("compression {other:?} is not supported by keel (tar.gz, tar.zst)"),
                ));
            }
            (_, c) if !c.is_empty() => {
                return Err(self.err(
                    &comp_at,
                    format!("compressing a {ty:?} artifact is not supported by keel"),
                ));
            }
            ("oci", _) => ArtifactKind::Oci,
            ("raw", _) => ArtifactKind::Raw,
            ("qcow2", _) => ArtifactKind::Qcow2,
            ("vhd" | "vhd-fixed", _) => ArtifactKind::Vhd,
            ("vhdx", _) => ArtifactKind::Vhdx,
            ("squashfs", _) => ArtifactKind::Squashfs,
            ("iso", _) => ArtifactKind::Iso,
            (other, _) => {
                return Err(self.err(
                    &ty_at,
                    format!("artifact type {other:?} is not supported by keel (raw, qcow2, vhd, vhd-fixed, vhdx, oci, squashfs, iso)"),
                ));
            }
        };
        Ok(Artifact { name, kind })
    }

    fn partition(&self, v: Value, at: &str) -> Result<Partition, Error> {
        let mut o = self.object(v, at)?;
        let id = self.required(o.take("ID"))?;
        let name = self.string(o.take("Name"))?.filter(|s| !s.is_empty());
        let start_mib = self.u64(o.take("Start"))?;
        let end_mib = self.u64(o.take("End"))?;
        let fs_f = o.take("FsType");
        let fs_at = fs_f.at.clone();
        let fs = match self.string(fs_f)?.as_deref() {
            Some("ext4") => FsType::Ext4,
            Some("fat32" | "vfat") => FsType::Fat32,
            Some("fat16") => FsType::Fat16,
            None | Some("") => return Err(self.err(&fs_at, "is required")),
            Some(other) => {
                return Err(self.err(
                    &fs_at,
                    format!(
                        "filesystem {other:?} is not supported by keel (ext4, fat32, vfat, fat16)"
                    ),
                ));
            }
        };
        let flags_f = o.take("Flags");
        let flags_at = flags_f.at.clone();
        let flags = self
            .strings(flags_f, "")?
            .into_iter()
            .enumerate()
            .map(|(i, f)| match f.as_str() {
                "esp" => Ok(PartitionFlag::Esp),
                "boot" => Ok(PartitionFlag::Boot),
                "bios_grub" | "grub" => Ok(PartitionFlag::BiosGrub),
                other => Err(self.err(
                    &format!("{flags_at}[{i}]"),
                    format!("partition flag {other:?} is not supported by keel (esp, boot, bios_grub, grub)"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.finish(o, &["Type", "TypeUUID", "Artifacts"])?;
        Ok(Partition {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            start_mib,
            end_mib,
            fs,
            flags,
        })
    }

    fn system(
        &self,
        v: Value,
        at: &str,
        read_rel: &dyn Fn(&str) -> Result<Vec<u8>, Error>,
    ) -> Result<SystemConfig, Error> {
        let mut o = self.object(v, at)?;
        let name = self.required(o.take("Name"))?;
        let lists_f = o.take("PackageLists");
        let lists_at = lists_f.at.clone();
        let package_lists = self.strings(lists_f, "")?;
        let mut packages: Vec<String> = Vec::new();
        for (i, list) in package_lists.iter().enumerate() {
            check_relative(list).map_err(|m| self.err(&format!("{lists_at}[{i}]"), m))?;
            let bytes = read_rel(list)?;
            let file = self.file.parent().unwrap_or(Path::new("")).join(list);
            packages.extend(parse_package_list(&file, &bytes)?);
        }
        packages.extend(self.strings(o.take("Packages"), "")?);
        let kernel_f = o.take("KernelOptions");
        let kernel_at = kernel_f.at.clone();
        let kernel = match kernel_f.value {
            None => None,
            Some(v) => {
                let mut k = self.object(v, &kernel_at)?;
                let default = self.string(k.take("default"))?.filter(|s| !s.is_empty());
                // Other keys name kernels for other boot flavours (`hyperv`…).
                if let Some((key, _)) = k.fields.iter().find(|(_, v)| !is_zero(v)) {
                    return Err(self.err(
                        &format!("{kernel_at}.{key}"),
                        "kernel options other than \"default\" are not supported by keel",
                    ));
                }
                default
            }
        };
        if let Some(k) = &kernel {
            packages.push(k.clone());
        }
        let mut seen = std::collections::HashSet::new();
        packages.retain(|p| seen.insert(p.clone()));
        let hostname = self.string(o.take("Hostname"))?.filter(|s| !s.is_empty());
        if let Some(h) = &hostname
            && (h.len() > 64
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
        {
            return Err(self.err(
                &format!("{at}.Hostname"),
                format!("{h:?} is not a valid host name"),
            ));
        }
        let partition_settings = self.list(o.take("PartitionSettings"), "", |v, at| {
            let mut p = self.object(v, at)?;
            let id = self.required(p.take("ID"))?;
            let mp_f = p.take("MountPoint");
            let mp_at = mp_f.at.clone();
            // An empty mount point is a partition that is not mounted (a BIOS boot one).
            let mount_point = self.string(mp_f)?.unwrap_or_default();
            if !mount_point.is_empty() && !mount_point.starts_with('/')
                || mount_point.split('/').any(|c| c == "..")
            {
                return Err(self.err(
                    &mp_at,
                    format!("mount point {mount_point:?} is not an absolute path"),
                ));
            }
            let mount_options = self
                .string(p.take("MountOptions"))?
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "defaults".into());
            self.finish(
                p,
                &[
                    "MountIdentifier",
                    "RemoveDocs",
                    "OverlayBaseImage",
                    "RdiffBaseImage",
                ],
            )?;
            Ok(PartitionSetting {
                id,
                mount_point,
                mount_options,
            })
        })?;
        let users = self.list(o.take("Users"), "", |v, at| self.user(v, at))?;
        let post_install_scripts = self.list(o.take("PostInstallScripts"), "", |v, at| {
            let mut s = self.object(v, at)?;
            let path_f = s.take("Path");
            let path_at = path_f.at.clone();
            let path = self.required(path_f)?;
            check_relative(&path).map_err(|m| self.err(&path_at, m))?;
            let args = self
                .string(s.take("Args"))?
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            self.finish(s, &[])?;
            let content = read_rel(&path)?;
            Ok(InstallScript {
                path,
                args,
                content,
            })
        })?;
        let remove_rpm_db = self.bool(o.take("RemoveRpmDb"))?;
        let max_f = o.take("MaxRootSize");
        let max_at = max_f.at.clone();
        let max_given = max_f.value.is_some();
        let max_root_size_mib = match self.u64(max_f)? {
            0 if max_given => {
                return Err(self.err(&max_at, "a root of less than 0 MiB holds nothing"));
            }
            0 => None,
            n => Some(n),
        };
        self.finish(
            o,
            &[
                "IsDefault",
                "IsKickStartBoot",
                "IsIsoInstall",
                "BootType",
                "EnableGrubMkconfig",
                "EnableSystemdFirstboot",
                "KernelCommandLine",
                "AdditionalFiles",
                "PreInstallScripts",
                "FinalizeImageScripts",
                "Networks",
                "PackageRepos",
                "Groups",
                "Encryption",
                "PreserveTdnfCache",
                "EnableHidepid",
                "DisableRpmDocs",
                "OverrideRpmLocales",
                "EnableSELinux",
            ],
        )?;
        Ok(SystemConfig {
            name,
            package_lists,
            packages,
            kernel,
            hostname,
            partition_settings,
            users,
            post_install_scripts,
            remove_rpm_db,
            max_root_size_mib,
        })
    }

    fn user(&self, v: Value, at: &str) -> Result<User, Error> {
        let mut o = self.object(v, at)?;
        let name_f = o.take("Name");
        let name_at = name_f.at.clone();
        let name = self.required(name_f)?;
        if name.len() > 32
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(self.err(&name_at, format!("{name:?} is not a valid user name")));
        }
        let uid_f = o.take("UID");
        let uid_at = uid_f.at.clone();
        let uid = match self.string(uid_f)?.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(
                s.parse::<u32>()
                    .map_err(|_| self.err(&uid_at, format!("{s:?} is not a numeric user id")))?,
            ),
        };
        let pw_f = o.take("Password");
        let pw_at = pw_f.at.clone();
        let password = self.string(pw_f)?.filter(|s| !s.is_empty());
        let hashed = self.bool(o.take("PasswordHashed"))?;
        let password_hash = match password {
            None => None,
            Some(_) if !hashed => {
                return Err(self.err(
                    &pw_at,
                    "plain-text passwords are not supported by keel; give a crypt(3) hash with \"PasswordHashed\": true",
                ));
            }
            Some(h) if h.contains(':') || h.contains('\n') => {
                return Err(self.err(&pw_at, "a password hash cannot hold ':' or a newline"));
            }
            Some(h) => Some(h),
        };
        let check_path = |f: Field| -> Result<Option<String>, Error> {
            let fat = f.at.clone();
            let v = self.string(f)?.filter(|s| !s.is_empty());
            if let Some(p) = &v
                && (!p.starts_with('/') || p.contains(':') || p.contains('\n'))
            {
                return Err(self.err(&fat, format!("{p:?} is not an absolute path without ':'")));
            }
            Ok(v)
        };
        let home = check_path(o.take("HomeDirectory"))?;
        let shell = check_path(o.take("StartupCommand"))?;
        self.finish(
            o,
            &[
                "PasswordExpiresDays",
                "SSHPubKeyPaths",
                "SSHPubKeys",
                "PrimaryGroup",
                "SecondaryGroups",
            ],
        )?;
        Ok(User {
            name,
            uid,
            password_hash,
            home,
            shell,
        })
    }

    /// Every `PartitionSettings` ID names a partition of the first disk, `/` is on an
    /// ext4 partition, and a vfat partition is mounted somewhere.
    fn check_partitions(&self, disks: &[Disk], systems: &[SystemConfig]) -> Result<(), Error> {
        if disks.len() > 1 {
            return Err(self.err("Disks", "more than one disk is not supported by keel"));
        }
        let parts: &[Partition] = disks
            .first()
            .map(|d| d.partitions.as_slice())
            .unwrap_or(&[]);
        for (si, s) in systems.iter().enumerate() {
            for (i, ps) in s.partition_settings.iter().enumerate() {
                let at = format!("SystemConfigs[{si}].PartitionSettings[{i}]");
                if !parts.iter().any(|p| p.id == ps.id) {
                    return Err(self.err(
                        &format!("{at}.ID"),
                        format!("no partition has ID {:?}", ps.id),
                    ));
                }
                if s.partition_settings[..i].iter().any(|o| {
                    o.id == ps.id || (!ps.mount_point.is_empty() && o.mount_point == ps.mount_point)
                }) {
                    return Err(self.err(
                        &at,
                        format!(
                            "partition {:?} or mount point {:?} is set twice",
                            ps.id, ps.mount_point
                        ),
                    ));
                }
            }
            if !parts.is_empty() {
                let root = s.partition_settings.iter().find(|p| p.mount_point == "/");
                let Some(root) = root else {
                    return Err(self.err(
                        &format!("SystemConfigs[{si}].PartitionSettings"),
                        "no partition is mounted at /",
                    ));
                };
                let fs = parts.iter().find(|p| p.id == root.id).map(|p| p.fs);
                if fs != Some(FsType::Ext4) {
                    return Err(self.err(
                        &format!("SystemConfigs[{si}].PartitionSettings"),
                        "the root partition must be ext4 in keel",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(format!("{name:?} is not a file name"));
    }
    Ok(())
}

fn check_relative(path: &str) -> Result<(), String> {
    if path.starts_with('/') || path.split('/').any(|c| c == "..") || path.contains('\0') {
        return Err(format!(
            "{path:?} must be a path inside the config's directory (relative, no '..')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    /// Parses `json` as a config in the fixtures directory (so package lists resolve).
    fn parse(json: &str) -> Result<ImageConfig, String> {
        let file = fixture("inline.json");
        parse_config(&file, json.as_bytes(), &|rel| {
            let p = fixture(rel);
            std::fs::read(&p).map_err(Error::io("read", p))
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_a_container_config() {
        let c = load_config(&fixture("container.json")).unwrap();
        assert!(c.disks[0].partitions.is_empty());
        let kinds: Vec<ArtifactKind> = c.disks[0].artifacts.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, [ArtifactKind::TarGz, ArtifactKind::Oci]);
        assert_eq!(c.disks[0].artifacts[0].file_name(), "core.tar.gz");
        let s = c.system("Standard").unwrap();
        assert_eq!(s.packages, ["filesystem", "base", "tzdata"]);
        assert!(s.remove_rpm_db);
        assert_eq!(s.post_install_scripts[0].args, ["--all", "--quiet"]);
        assert!(s.post_install_scripts[0].content.starts_with(b"#!/bin/sh"));
    }

    #[test]
    fn reads_a_disk_config() {
        let c = load_config(&fixture("disk.json")).unwrap();
        let d = &c.disks[0];
        assert_eq!(
            (d.partition_table, d.max_size_mib),
            (Some(PartitionTableType::Gpt), 64)
        );
        assert_eq!(
            d.partitions[0].flags,
            [PartitionFlag::Esp, PartitionFlag::Boot]
        );
        assert_eq!(
            (d.partitions[1].fs, d.partitions[1].end_mib),
            (FsType::Ext4, 0)
        );
        assert_eq!(d.artifacts[1].kind, ArtifactKind::Vhd);
        let s = &c.systems[0];
        assert_eq!(s.kernel.as_deref(), Some("kernel"));
        assert_eq!(s.packages, ["filesystem", "base", "kernel"]);
        assert_eq!(s.partition_settings[0].mount_options, "umask=0077");
        assert_eq!(s.partition_settings[1].mount_options, "defaults");
        assert_eq!(s.users[0].password_hash.as_deref(), Some("$6$keel$1234"));
        assert_eq!(s.hostname.as_deref(), Some("keel-test"));
    }

    #[test]
    fn unsupported_fields_are_named_with_the_file() {
        let err = load_config(&fixture("unsupported.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unsupported.json")
                && err.contains(
                    "SystemConfigs[0].AdditionalFiles: this field is not supported by keel"
                ),
            "{err}"
        );
    }

    #[test]
    fn max_root_size_is_read_in_mib_and_zero_is_refused() {
        let sys = |extra: &str| {
            format!(
                r#"{{"SystemConfigs": [{{"Name": "S", "PackageLists": ["packagelists/base.json"]{extra}}}]}}"#
            )
        };
        let c = parse(&sys(r#", "MaxRootSize": 2048"#)).unwrap();
        assert_eq!(c.systems[0].max_root_size_mib, Some(2048));
        let c = parse(&sys("")).unwrap();
        assert_eq!(c.systems[0].max_root_size_mib, None);
        check(
            &sys(r#", "MaxRootSize": 0"#),
            "SystemConfigs[0].MaxRootSize: a root of less than 0 MiB",
        );
        check(
            &sys(r#", "MaxRootSize": "big""#),
            "SystemConfigs[0].MaxRootSize: expected a number",
        );
    }

    fn check(json: &str, expected: &str) {
        let err = parse(json).unwrap_err();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }

    #[test]
    fn every_rejection_names_the_field() {
        let sys = |extra: &str| {
            format!(
                r#"{{"SystemConfigs": [{{"Name": "S", "PackageLists": ["packagelists/base.json"]{extra}}}]}}"#
            )
        };
        check(
            &sys(r#", "Colour": "red""#),
            "SystemConfigs[0].Colour: unknown field",
        );
        check(
            &sys(r#", "BootType": "efi""#),
            "SystemConfigs[0].BootType: this field is not supported",
        );
        check(
            &sys(r#", "KernelCommandLine": {"ExtraCommandLine": "console=ttyS0"}"#),
            "SystemConfigs[0].KernelCommandLine: this field is not supported",
        );
        check(
            &sys(r#", "Users": [{"Name": "a", "SSHPubKeys": ["k"]}]"#),
            "SystemConfigs[0].Users[0].SSHPubKeys: this field is not supported",
        );
        check(
            &sys(r#", "Users": [{"Name": "a", "Password": "plain"}]"#),
            "SystemConfigs[0].Users[0].Password: plain-text passwords",
        );
        check(
            &sys(r#", "KernelOptions": {"default": "kernel", "hyperv": "kernel-hv"}"#),
            "SystemConfigs[0].KernelOptions.hyperv",
        );
        check(
            &sys(r#", "PostInstallScripts": [{"Path": "../../etc/shadow"}]"#),
            "SystemConfigs[0].PostInstallScripts[0].Path",
        );
        check(
            &sys(r#", "Packages": "bash""#),
            "SystemConfigs[0].Packages: expected an array",
        );
        // Zero values mean "absent" and are accepted.
        parse(&sys(r#", "IsDefault": false, "Encryption": {"Enable": false, "Password": ""}, "Users": null"#)).unwrap();

        let disk = |d: &str| {
            format!(
                r#"{{"Disks": [{d}], "SystemConfigs": [{{"Name": "S", "PartitionSettings": [{{"ID": "root", "MountPoint": "/"}}]}}]}}"#
            )
        };
        let part = r#""Partitions": [{"ID": "root", "Start": 1, "End": 0, "FsType": "ext4"}]"#;
        parse(&disk(&format!(r#"{{"PartitionTableType": "gpt", "MaxSize": 16, {part}, "Artifacts": [{{"Name": "d", "Type": "raw"}}]}}"#))).unwrap();
        check(
            &disk(&format!(
                r#"{{"PartitionTableType": "mbr", "MaxSize": 16, {part}}}"#
            )),
            "Disks[0].PartitionTableType: partition table type \"mbr\"",
        );
        check(
            &disk(&format!(
                r#"{{"PartitionTableType": "gpt", "MaxSize": 16, {part}, "Artifacts": [{{"Name": "d", "Compression": "tar.xz"}}]}}"#
            )),
            "Disks[0].Artifacts[0].Compression: compression \"tar.xz\"",
        );
        check(
            &disk(&format!(
                r#"{{"PartitionTableType": "gpt", "MaxSize": 16, {part}, "Artifacts": [{{"Name": "d", "Type": "vmdk"}}]}}"#
            )),
            "Disks[0].Artifacts[0].Type: artifact type \"vmdk\"",
        );
        check(
            &disk(
                r#"{"PartitionTableType": "gpt", "MaxSize": 16, "Partitions": [{"ID": "root", "Start": 1, "End": 0, "FsType": "xfs"}]}"#,
            ),
            "Disks[0].Partitions[0].FsType: filesystem \"xfs\"",
        );
        check(
            &disk(
                r#"{"PartitionTableType": "gpt", "MaxSize": 16, "Partitions": [{"ID": "root", "Start": 1, "End": 40, "FsType": "ext4"}]}"#,
            ),
            "Disks[0].Partitions[0].End",
        );
        check(
            &disk(
                r#"{"PartitionTableType": "gpt", "MaxSize": 16, "TargetDisk": {"Type": "path", "Value": "/dev/sda"}, "Partitions": [{"ID": "root", "Start": 1, "End": 0, "FsType": "ext4"}]}"#,
            ),
            "Disks[0].TargetDisk: this field is not supported",
        );
        check(
            &disk(
                r#"{"PartitionTableType": "gpt", "MaxSize": 16, "Partitions": [{"ID": "root", "Start": 1, "End": 0, "FsType": "ext4", "Flags": ["dmroot"]}]}"#,
            ),
            "Disks[0].Partitions[0].Flags[0]: partition flag \"dmroot\"",
        );
    }

    #[test]
    fn package_lists_are_strict_too() {
        let f = Path::new("pl.json");
        assert_eq!(
            parse_package_list(f, br#"{"packages": ["a", "b"]}"#).unwrap(),
            ["a", "b"]
        );
        let err = parse_package_list(f, br#"{"packages": ["a"], "extra": 1}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "read image config pl.json: extra: unknown field"
        );
        let err = parse_package_list(f, b"{not json").unwrap_err();
        assert!(
            err.to_string()
                .contains("pl.json: (document): invalid JSON"),
            "{err}"
        );
    }
}
