#!/usr/bin/env python3
"""Classifies the outcome of `keel build -k --json` over Azure Linux packages, one row each.

usage: azl-classify.py PACKAGES EVENTS GRAPH [--details FILE]
  PACKAGES  the packages asked for, one per line (mirror.py's packages.txt)
  EVENTS    keel build --json output (one event per line)
  GRAPH     keel graph --format json of the same tree (its unresolved BuildRequires: those
            are left to the host)

Each package is one of:
  built                 its rpm: action ran, was cut off or was cached;
  host lacks            its build failed on something the Debian host does not have: a
                        command, header, library, pkg-config module, Perl or Python module,
                        or an rpm macro package of Azure Linux's toolchain (%cmake is loaded
                        from the tree; %meson, systemd's and Java's macros are not);
                        A build that fails otherwise while a BuildRequires of its spec is
                        provided by nothing (left to the host) counts here too;
  host layout           it built, but Debian's perl or python installed files where the spec's
                        %files does not look (man pages as .1p, scripts in /usr/local/bin);
  package               it failed for a reason of its own (a compile error with this
                        compiler, a test suite);
  keel                  keel failed it (a setup error, an error that is not rpmbuild's);
  needs unbuilt package it needs a package of the tree that was not built: its sources are
                        not in the mirror, or it failed (named).
Prints the counts as a Markdown table; --details writes one line per package with the cause
and the log to read.
"""
import json
import re
import sys

HOST_LACKS = [
    (r"([\w./+-]+): command not found", "command {0}"),
    (r"sh: \d+: ([\w./+-]+): not found", "command {0}"),
    (r"make(?:\[\d+\])?: ([\w.+-]+): No such file or directory", "command {0}"),
    (r"module '([\w.]+)' not found", "Lua module {0}"),
    (r"Package '?([\w.+-]+)'?,? (?:was not found|not found)", "pkg-config {0}"),
    (r"No package '([\w.+-]+)' found", "pkg-config {0}"),
    (r"Dependency \"?([\w.+-]+)\"? not found", "meson dependency {0}"),
    (r"fatal error: ([\w./+-]+): No such file or directory", "header {0}"),
    (r"Can't locate ([\w/.]+) in @INC", "Perl module {0}"),
    (r"ModuleNotFoundError: No module named '([\w.]+)'", "Python module {0}"),
    (r"No module named '?([\w.]+)'?", "Python module {0}"),
    (r"cannot find -l([\w.+-]+)", "library -l{0}"),
    (r"You need to install the ([\w.-]+) package", "{0}"),
    (r"cannot compile a simple Fortran program", "a Fortran compiler"),
    (r"Could NOT find (\w+)", "CMake package {0}"),
    (r"checking for ([\w.+-]+)\.\.\. no\s*\nconfigure: error", "{0} (configure)"),
    (r"configure: error: ([^\n]{0,80})", "configure: {0}"),
    (r"File must begin with \"/\": (%\{\w+\})", "macro {0} (a macro package)"),
]
# An rpm macro left unexpanded at the start of a script line: bash reads `%cmake` as job
# control. Which one is read from the script line in the log.
UNEXPANDED = re.compile(r"^\+ (%\w+)", re.M)
LAYOUT = re.compile(r"File not found: /build/BUILDROOT/[^/]+(/\S+)")


def cause_of(error, log_text):
    """(class, detail) of a failed rpm: or srpm: action."""
    if "rpmbuild exited" not in error and "rpmbuild was killed" not in error:
        if "timed out" in error:
            return "package", "build timed out"
        return "keel", error.splitlines()[0][:160]
    text = log_text or error
    if "fg: no job control" in text:
        m = UNEXPANDED.search(text)
        macro = m.group(1) if m else "a macro"
        return "host lacks", f"macro {macro} (a macro package)"
    for pat, fmt in HOST_LACKS:
        m = re.search(pat, text)
        if m:
            return "host lacks", fmt.format(*m.groups())
    m = LAYOUT.search(text)
    if m:
        return "host layout", f"{m.group(1)} not installed there"
    tail = [l for l in text.splitlines() if l.strip() and not l.startswith("+")]
    return "package", (tail[-4] if len(tail) >= 4 else (tail[-1] if tail else "?"))[:160]


def main():
    args = sys.argv[1:]
    details = None
    if "--details" in args:
        i = args.index("--details")
        details = args[i + 1]
        del args[i:i + 2]
    packages_file, events_file, graph_file = args
    unresolved = {}
    for u in json.load(open(graph_file))["unresolved"]:
        if u["kind"] == "BuildRequires":
            unresolved.setdefault(u["spec"], []).append(u["dep"])
    wanted = [l.strip() for l in open(packages_file) if l.strip() and not l.startswith("#")]
    finished = {}
    for line in open(events_file):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "action_finished":
            finished[e["name"]] = e
    rows = {}

    def outcome(pkg, seen=()):
        """The row of `pkg`, following a failed dependency to its root."""
        if pkg in rows:
            return rows[pkg]
        rpm = finished.get(f"rpm:{pkg}")
        if rpm is None:
            return ("not planned", "no rpm: action (excluded from the plan: see keel's summary)", None)
        st = rpm["status"]
        if st in ("ran", "cut_off", "cached", "remote"):
            return ("built", "", None)
        if st == "failed":
            log = re.search(r"see (\S+\.log)", rpm["error"])
            log = log.group(1).rstrip(";") if log else None
            try:
                text = open(log, errors="replace").read() if log else ""
            except OSError:
                text = ""
            cls, why = cause_of(rpm["error"], text)
            if cls in ("package", "host layout") and pkg in unresolved:
                cls, why = "host lacks", "BuildRequires nobody provides: " + ", ".join(unresolved[pkg])
            return (cls, why, log)
        if st == "dependency_failed":
            dep = rpm["dep"]
            if dep.startswith("source:"):
                owner = dep.split(":", 1)[1].split("/", 1)[0]
                if owner == pkg:
                    return ("no sources", f"{dep.split('/', 1)[1]} is not in the mirror", None)
                return ("needs unbuilt package", f"{owner} (its sources are not in the mirror)", None)
            if dep.startswith("srpm:"):
                owner = dep.split(":", 1)[1]
                srpm = finished.get(dep, {})
                if owner == pkg:
                    cls, why = cause_of(srpm.get("error", ""), srpm.get("error", ""))
                    return (cls, "packing the SRPM: " + why, None)
                return ("needs unbuilt package", f"{owner} (its SRPM failed)", None)
            owner = dep.split(":", 1)[1]
            return ("needs unbuilt package", f"{owner} (its build failed)", None)
        return ("not built", st, None)

    for p in wanted:
        rows[p] = outcome(p)
    order = ["built", "host lacks", "host layout", "package", "keel",
             "needs unbuilt package", "no sources", "not planned", "not built"]
    counts = {k: 0 for k in order}
    for cls, _, _ in rows.values():
        counts[cls] = counts.get(cls, 0) + 1
    print(f"| outcome | packages (of {len(wanted)}) |")
    print("|---|---:|")
    for k in order:
        if counts.get(k):
            print(f"| {k} | {counts[k]} |")
    if details:
        with open(details, "w") as f:
            for p in wanted:
                cls, why, log = rows[p]
                f.write(f"{p}\t{cls}\t{why}\t{log or ''}\n")


if __name__ == "__main__":
    main()
