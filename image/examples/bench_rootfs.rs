//! Assembling a root from many RPMs with keel versus `rpm --root … -i --nodeps`, side by
//! side on this machine: `cargo run -p keel-image --example bench_rootfs -- [PACKAGES]
//! [FILES] [BYTES]` (default 300 packages of 10 files of 170 KiB: about 500 MiB).
//!
//! Packages are generated with the `rpm` crate (zstd payloads, compressible data); both
//! sides start from the same files with an empty root on the same filesystem. Set
//! `KEEL_BENCH_RPMS=DIR` to keep the generated packages in `DIR` and reuse them in the
//! next run (when profiling).
//!
//! Where the roots go: run as root, the benchmark makes a fresh ext4 filesystem
//! (`mkfs.ext4` defaults, in a sparse file under /var/tmp) and loop-mounts it for the run.
//! A filesystem that has seen many deletions is no place to compare installers: ext4
//! without a journal (this machine's root filesystem) steps over every recently deleted
//! inode of a block group, one by one, on each file it creates, and that cost — the same
//! per file for both sides, and growing with every earlier run's deleted roots — swamps
//! the installers' own work. `KEEL_BENCH_DIR=DIR` puts the roots in `DIR` instead (any
//! filesystem, e.g. /var/tmp or /dev/shm), as does running unprivileged or without loop
//! devices.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use keel_image::rootfs::{RootfsOptions, assemble_rootfs};
use rpm::{BuildConfig, CompressionType, FileOptions, PackageBuilder};

fn main() {
    let arg = |i: usize, d: usize| -> usize {
        std::env::args()
            .nth(i)
            .map_or(d, |s| s.parse().expect("a number"))
    };
    let (n, files, bytes) = (arg(1, 300), arg(2, 10), arg(3, 170 * 1024));
    let fresh = match std::env::var_os("KEEL_BENCH_DIR") {
        Some(_) => None,
        None => FreshFs::make(),
    };
    let base = match (&fresh, std::env::var_os("KEEL_BENCH_DIR")) {
        (Some(fs), _) => fs.mountpoint.path().to_owned(),
        (None, Some(d)) => PathBuf::from(d),
        (None, None) => PathBuf::from("/var/tmp"),
    };
    println!(
        "roots in {} ({})",
        base.display(),
        if fresh.is_some() {
            "a fresh ext4 filesystem made for this run"
        } else {
            "an existing filesystem"
        }
    );
    let dir = tempfile::tempdir_in(&base).expect("a temporary directory");
    let rpm_dir =
        std::env::var_os("KEEL_BENCH_RPMS").map_or_else(|| dir.path().to_owned(), PathBuf::from);
    std::fs::create_dir_all(&rpm_dir).expect("a directory for the packages");
    let start = Instant::now();
    let mut rpms = Vec::new();
    for p in 0..n {
        let name = format!("pkg{p:04}");
        let path: PathBuf = rpm_dir.join(format!("{name}-{files}-{bytes}.rpm"));
        if path.exists() {
            let info = keel_toolchain::read_rpm(&path).expect("read back");
            rpms.push((path, info));
            continue;
        }
        let mut b = PackageBuilder::new(&name, "1.0", "MIT", "noarch", "bench");
        b.using_config(BuildConfig::default().compression(CompressionType::Zstd));
        for f in 0..files {
            // Cheap to make in an unoptimized build: a repeated block stamped with the
            // package and file numbers, so every file differs.
            let mut data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
            for chunk in data.chunks_mut(4096) {
                let stamp = [(p >> 8) as u8, p as u8, f as u8];
                let k = stamp.len().min(chunk.len());
                chunk[..k].copy_from_slice(&stamp[..k]);
            }
            b.with_file_contents(data, FileOptions::new(format!("/usr/share/{name}/f{f}")))
                .expect("add file");
        }
        b.build().expect("build").write_file(&path).expect("write");
        let info = keel_toolchain::read_rpm(&path).expect("read back");
        rpms.push((path, info));
    }
    let total = (n * files * bytes) as f64 / (1 << 20) as f64;
    println!(
        "generated {n} packages, {total:.0} MiB of files, in {:.1?}",
        start.elapsed()
    );
    // CPU seconds (user + system) of this process's threads, or of its waited-for children.
    let cpu = |who: i32| {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(u.ru_utime) + secs(u.ru_stime)
    };
    let sync = || {
        let _ = Command::new("sync").status();
    };

    // Three rounds, each side first in turn, best of each and the median of the
    // per-round ratios: the machine may be shared.
    let (mut keel, mut rpm) = (f64::MAX, f64::MAX);
    let mut ratios = Vec::new();
    let (mut keel_times, mut rpm_times) = (Vec::new(), Vec::new());
    let opts = RootfsOptions {
        sde: 1_700_000_000,
        jobs: std::env::var("KEEL_BENCH_JOBS").map_or(0, |j| j.parse().expect("a number")),
        ..RootfsOptions::default()
    };
    for round in 0..3 {
        let run_keel = || {
            sync();
            let keel_root = dir.path().join(format!("keel-root-{round}"));
            let (t, c) = (
                Instant::now(),
                cpu(libc::RUSAGE_SELF) + cpu(libc::RUSAGE_CHILDREN),
            );
            // Unpacking, owners and the rpm database (`rpm --justdb`), as for an image.
            assemble_rootfs(&keel_root, &rpms, &opts).expect("assemble");
            let c = cpu(libc::RUSAGE_SELF) + cpu(libc::RUSAGE_CHILDREN) - c;
            (t.elapsed().as_secs_f64(), c)
        };
        let run_rpm = || {
            sync();
            let rpm_root = dir.path().join(format!("rpm-root-{round}"));
            std::fs::create_dir_all(&rpm_root).expect("mkdir");
            let (t, c) = (Instant::now(), cpu(libc::RUSAGE_CHILDREN));
            let status = Command::new("rpm")
                .arg("--root")
                .arg(&rpm_root)
                .args(["--dbpath", "/var/lib/rpm", "--define", "_db_backend sqlite"])
                .args([
                    "-i",
                    "--nodeps",
                    "--noscripts",
                    "--ignorearch",
                    "--ignoreos",
                ])
                .args(rpms.iter().map(|(p, _)| p))
                .status()
                .expect("rpm runs");
            assert!(status.success());
            (t.elapsed().as_secs_f64(), cpu(libc::RUSAGE_CHILDREN) - c)
        };
        let ((k, kc), (r, rc)) = if round % 2 == 0 {
            let k = run_keel();
            (k, run_rpm())
        } else {
            let r = run_rpm();
            (run_keel(), r)
        };
        println!(
            "round {round}: keel (with the rpm database) {k:.2}s ({kc:.2}s CPU), \
             rpm -i --nodeps {r:.2}s ({rc:.2}s CPU): {:.1}x",
            r / k
        );
        keel = keel.min(k);
        rpm = rpm.min(r);
        ratios.push(r / k);
        keel_times.push(k);
        rpm_times.push(r);
    }
    // Roots are removed only now (or not at all, on a fresh filesystem): ext4 without a
    // journal scans past recently deleted inodes when it allocates new ones, so removing a
    // root would slow down whichever side runs next.
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "best of 3: keel {keel:.2}s, rpm -i {rpm:.2}s: {:.1}x; median of the rounds' ratios {:.1}x \
         (median times: keel {:.2}s, rpm -i {:.2}s)",
        rpm / keel,
        median(&mut ratios),
        median(&mut keel_times),
        median(&mut rpm_times),
    );
    if fresh.is_some() {
        // Unmounting discards the roots; deleting them file by file first is wasted time.
        let _ = dir.keep();
    }
}

/// A fresh ext4 filesystem in a sparse file, loop-mounted for one run and unmounted (and
/// its file removed) when dropped.
struct FreshFs {
    mountpoint: tempfile::TempDir,
    _image: tempfile::NamedTempFile,
}

impl FreshFs {
    /// `None` (and the reason on stderr) when it cannot be made here: not root, no loop
    /// devices, no mkfs.ext4.
    #[expect(clippy::print_stderr, reason = "a benchmark says why it falls back")]
    fn make() -> Option<FreshFs> {
        let image = tempfile::NamedTempFile::new_in("/var/tmp").ok()?;
        // Six roots of 500 MiB and their metadata; sparse, so only what is written is used.
        image.as_file().set_len(8 << 30).ok()?;
        let mountpoint = tempfile::tempdir_in("/var/tmp").ok()?;
        let run = |cmd: &mut Command| cmd.output().map(|o| o.status.success()).unwrap_or(false);
        if !run(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image.path()))
            || !run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(image.path())
                .arg(mountpoint.path()))
        {
            eprintln!(
                "cannot make and loop-mount a fresh ext4 filesystem here (needs root, \
                 mkfs.ext4 and a loop device); the roots go to /var/tmp"
            );
            return None;
        }
        Some(FreshFs {
            mountpoint,
            _image: image,
        })
    }
}

impl Drop for FreshFs {
    fn drop(&mut self) {
        // The roots go with the filesystem: no deleting them file by file.
        let _ = Command::new("umount").arg(self.mountpoint.path()).status();
    }
}
