//! rpm's version comparison: `rpmvercmp` on single version strings and EVR comparison.

use std::cmp::Ordering;

/// Compares two version (or release) strings the way rpm's `rpmvercmp` does.
///
/// Strings are split into alternating runs of digits and letters; everything else is a
/// separator. `~` sorts before anything (even the end of the string), `^` sorts after the
/// end of the string but before anything else. Numeric runs compare as numbers (leading
/// zeros ignored) and are newer than alphabetic runs.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let a = a.as_bytes();
    let b = b.as_bytes();
    let (mut i, mut j) = (0usize, 0usize);
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        // Tilde: sorts before everything else.
        let at = a.get(i) == Some(&b'~');
        let bt = b.get(j) == Some(&b'~');
        if at || bt {
            if !at {
                return Ordering::Greater;
            }
            if !bt {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // Caret: like the end of the string, except that it is newer than the real end.
        let ac = a.get(i) == Some(&b'^');
        let bc = b.get(j) == Some(&b'^');
        if ac || bc {
            if i >= a.len() {
                return Ordering::Less;
            }
            if j >= b.len() {
                return Ordering::Greater;
            }
            if !ac {
                return Ordering::Greater;
            }
            if !bc {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let run = |s: &[u8], mut k: usize| {
            let st = k;
            while k < s.len()
                && (if numeric {
                    s[k].is_ascii_digit()
                } else {
                    s[k].is_ascii_alphabetic()
                })
            {
                k += 1;
            }
            (st, k)
        };
        let (s1, e1) = run(a, i);
        let (s2, e2) = run(b, j);
        if s2 == e2 {
            // Segments of different types: numeric is newer.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let mut x = &a[s1..e1];
        let mut y = &b[s2..e2];
        if numeric {
            while x.first() == Some(&b'0') {
                x = &x[1..];
            }
            while y.first() == Some(&b'0') {
                y = &y[1..];
            }
            match x.len().cmp(&y.len()) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match x.cmp(y) {
            Ordering::Equal => {}
            o => return o,
        }
        i = e1;
        j = e2;
    }
    let ae = i >= a.len();
    let be = j >= b.len();
    match (ae, be) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, _) => Ordering::Greater,
    }
}

/// An epoch-version-release triple as written in a dependency (`[E:]V[-R]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evr {
    pub epoch: Option<String>,
    pub version: String,
    pub release: Option<String>,
}

impl Evr {
    /// Splits `E:V-R` the way rpm's `rpmdsParseEVR` does.
    pub fn parse(s: &str) -> Evr {
        let (epoch, rest) = match s.find(|c: char| !c.is_ascii_digit()) {
            Some(p) if s.as_bytes()[p] == b':' => (Some(s[..p].to_string()), &s[p + 1..]),
            _ => (None, s),
        };
        let (version, release) = match rest.rfind('-') {
            Some(p) => (rest[..p].to_string(), Some(rest[p + 1..].to_string())),
            None => (rest.to_string(), None),
        };
        Evr {
            epoch,
            version,
            release,
        }
    }

    /// Compares two EVRs; a missing epoch is 0, a missing release on either side is ignored.
    pub fn compare(&self, other: &Evr) -> Ordering {
        let e = |x: &Option<String>| {
            x.as_deref()
                .filter(|s| !s.is_empty())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match e(&self.epoch).cmp(&e(&other.epoch)) {
            Ordering::Equal => {}
            o => return o,
        }
        match rpmvercmp(&self.version, &other.version) {
            Ordering::Equal => {}
            o => return o,
        }
        match (&self.release, &other.release) {
            (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => rpmvercmp(a, b),
            _ => Ordering::Equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Cases from rpm's own test suite (tests/rpmvercmp.at).
    const CASES: &[(&str, &str, i32)] = &[
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0", "1.0", 1),
        ("2.0.1", "2.0.1", 0),
        ("2.0", "2.0.1", -1),
        ("2.0.1", "2.0", 1),
        ("2.0.1a", "2.0.1a", 0),
        ("2.0.1a", "2.0.1", 1),
        ("2.0.1", "2.0.1a", -1),
        ("5.5p1", "5.5p1", 0),
        ("5.5p1", "5.5p2", -1),
        ("5.5p2", "5.5p1", 1),
        ("5.5p10", "5.5p10", 0),
        ("5.5p1", "5.5p10", -1),
        ("5.5p10", "5.5p1", 1),
        ("10xyz", "10.1xyz", -1),
        ("10.1xyz", "10xyz", 1),
        ("xyz10", "xyz10", 0),
        ("xyz10", "xyz10.1", -1),
        ("xyz10.1", "xyz10", 1),
        ("xyz.4", "xyz.4", 0),
        ("xyz.4", "8", -1),
        ("8", "xyz.4", 1),
        ("xyz.4", "2", -1),
        ("2", "xyz.4", 1),
        ("5.5p2", "5.6p1", -1),
        ("5.6p1", "5.5p2", 1),
        ("5.6p1", "6.5p1", -1),
        ("6.5p1", "5.6p1", 1),
        ("6.0.rc1", "6.0", 1),
        ("6.0", "6.0.rc1", -1),
        ("10b2", "10a1", 1),
        ("10a2", "10b2", -1),
        ("1.0aa", "1.0aa", 0),
        ("1.0a", "1.0aa", -1),
        ("1.0aa", "1.0a", 1),
        ("10.0001", "10.0001", 0),
        ("10.0001", "10.1", 0),
        ("10.1", "10.0001", 0),
        ("10.0001", "10.0039", -1),
        ("10.0039", "10.0001", 1),
        ("4.999.9", "5.0", -1),
        ("5.0", "4.999.9", 1),
        ("20101121", "20101121", 0),
        ("20101121", "20101122", -1),
        ("20101122", "20101121", 1),
        ("2_0", "2_0", 0),
        ("2.0", "2_0", 0),
        ("2_0", "2.0", 0),
        ("a", "a", 0),
        ("a+", "a+", 0),
        ("a+", "a_", 0),
        ("a_", "a+", 0),
        ("+a", "+a", 0),
        ("+a", "_a", 0),
        ("_a", "+a", 0),
        ("+_", "+_", 0),
        ("_+", "+_", 0),
        ("_+", "_+", 0),
        ("+", "_", 0),
        ("_", "+", 0),
        ("1.0~rc1", "1.0~rc1", 0),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0~rc2", "1.0~rc1", 1),
        ("1.0~rc1~git123", "1.0~rc1~git123", 0),
        ("1.0~rc1~git123", "1.0~rc1", -1),
        ("1.0~rc1", "1.0~rc1~git123", 1),
        ("1.0^", "1.0^", 0),
        ("1.0^", "1.0", 1),
        ("1.0", "1.0^", -1),
        ("1.0^git1", "1.0^git1", 0),
        ("1.0^git1", "1.0", 1),
        ("1.0", "1.0^git1", -1),
        ("1.0^git1", "1.0^git2", -1),
        ("1.0^git2", "1.0^git1", 1),
        ("1.0^git1", "1.01", -1),
        ("1.01", "1.0^git1", 1),
        ("1.0^20160101", "1.0^20160101", 0),
        ("1.0^20160101", "1.0.1", -1),
        ("1.0.1", "1.0^20160101", 1),
        ("1.0^20160101^git1", "1.0^20160101^git1", 0),
        ("1.0^20160102", "1.0^20160101^git1", 1),
        ("1.0^20160101^git1", "1.0^20160102", -1),
        ("1.0~rc1^git1", "1.0~rc1^git1", 0),
        ("1.0~rc1^git1", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc1^git1", -1),
        ("1.0^git1~pre", "1.0^git1~pre", 0),
        ("1.0^git1", "1.0^git1~pre", 1),
        ("1.0^git1~pre", "1.0^git1", -1),
    ];

    #[test]
    fn rpm_test_suite_cases() {
        for &(a, b, want) in CASES {
            let got = match rpmvercmp(a, b) {
                Ordering::Less => -1,
                Ordering::Equal => 0,
                Ordering::Greater => 1,
            };
            assert_eq!(got, want, "rpmvercmp({a:?}, {b:?})");
        }
    }

    #[test]
    fn evr_epochs_and_missing_release() {
        let c = |a: &str, b: &str| Evr::parse(a).compare(&Evr::parse(b));
        assert_eq!(c("1:1.0", "2.0"), Ordering::Greater);
        assert_eq!(c("0:1.0", "1.0"), Ordering::Equal);
        assert_eq!(c("1.0-1", "1.0"), Ordering::Equal);
        assert_eq!(c("1.0-1", "1.0-2"), Ordering::Less);
        assert_eq!(Evr::parse("3:1.2-4").epoch.as_deref(), Some("3"));
        assert_eq!(Evr::parse("1.2-4.azl3").release.as_deref(), Some("4.azl3"));
    }
}
