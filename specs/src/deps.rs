//! Dependencies: `N [op EVR]` and rich (boolean) dependencies, parsed as rpm's spec parser
//! does and rendered as rpm renders them (`%{REQUIRENEVRS}`).

/// rpm's dependency sense flags (the subset a spec can produce).
pub mod sense {
    pub const LESS: u32 = 1 << 1;
    pub const GREATER: u32 = 1 << 2;
    pub const EQUAL: u32 = 1 << 3;
    pub const POSTTRANS: u32 = 1 << 5;
    pub const PRETRANS: u32 = 1 << 7;
    pub const INTERP: u32 = 1 << 8;
    pub const SCRIPT_PRE: u32 = 1 << 9;
    pub const SCRIPT_POST: u32 = 1 << 10;
    pub const SCRIPT_PREUN: u32 = 1 << 11;
    pub const SCRIPT_POSTUN: u32 = 1 << 12;
    pub const SCRIPT_VERIFY: u32 = 1 << 13;
    pub const RPMLIB: u32 = 1 << 24;
    pub const META: u32 = 1 << 29;
    pub const SENSEMASK: u32 = LESS | GREATER | EQUAL;
}

/// A dependency as stored in a package header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dep {
    /// The name, or the normalized text of a rich dependency (`(a or b)`).
    pub name: String,
    pub flags: u32,
    pub evr: String,
    /// The parsed tree when this is a rich dependency.
    pub rich: Option<Box<Rich>>,
}

/// A rich dependency tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rich {
    Simple {
        name: String,
        flags: u32,
        evr: String,
    },
    Op {
        op: RichOp,
        operands: Vec<Rich>,
    },
}

/// Operators of rich dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RichOp {
    And,
    Or,
    If,
    IfElse,
    Unless,
    UnlessElse,
    With,
    Without,
}

impl Dep {
    /// `N op EVR` as rpm prints it.
    pub fn nevr(&self) -> String {
        let mut s = self.name.clone();
        if self.flags & sense::SENSEMASK != 0 {
            s.push(' ');
            if self.flags & sense::LESS != 0 {
                s.push('<');
            }
            if self.flags & sense::GREATER != 0 {
                s.push('>');
            }
            if self.flags & sense::EQUAL != 0 {
                s.push('=');
            }
        }
        if !self.evr.is_empty() {
            s.push(' ');
            s.push_str(&self.evr);
        }
        s
    }
}

/// Parses a comparison operator.
pub fn parse_sense(s: &str) -> u32 {
    match s {
        "<" => sense::LESS,
        ">" => sense::GREATER,
        "=" | "==" => sense::EQUAL,
        "<=" | "=<" => sense::LESS | sense::EQUAL,
        ">=" | "=>" => sense::GREATER | sense::EQUAL,
        _ => 0,
    }
}

fn is_white(c: char) -> bool {
    c.is_ascii_whitespace() || c == ','
}

/// Parses a dependency field (`a, b >= 1, (c or d)`) into dependencies with `base` flags.
pub fn parse_field(field: &str, base: u32, allow_rich: bool) -> Result<Vec<Dep>, String> {
    parse_field_ctx(field, base, allow_rich, RichContext::Requires)
}

/// Which kind of dependency a rich dependency appears in: rpm forbids `if` in negative
/// contexts (Conflicts, Supplements, Enhances) and `unless` in positive ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RichContext {
    Requires,
    Conflicts,
}

/// [`parse_field`] with the rich dependency context of the tag.
pub fn parse_field_ctx(
    field: &str,
    base: u32,
    allow_rich: bool,
    context: RichContext,
) -> Result<Vec<Dep>, String> {
    let mut out = Vec::new();
    let mut rest = field;
    loop {
        rest = rest.trim_start_matches(is_white);
        if rest.is_empty() {
            break;
        }
        if rest.starts_with('(') {
            if !allow_rich {
                return Err("No rich dependencies allowed for this type".into());
            }
            let (tree, text, used) = parse_rich_for(rest, context)?;
            out.push(Dep {
                name: text,
                flags: base & !sense::SENSEMASK,
                evr: String::new(),
                rich: Some(Box::new(tree)),
            });
            rest = &rest[used..];
            continue;
        }
        let end = rest.find(is_white).unwrap_or(rest.len());
        let name = &rest[..end];
        let mut after = rest[end..].trim_start_matches(is_white);
        let mut flags = base & !sense::SENSEMASK;
        let mut evr = String::new();
        let oend = after.find(is_white).unwrap_or(after.len());
        let sense = if oend > 0 {
            parse_sense(&after[..oend])
        } else {
            0
        };
        if sense != 0 {
            flags |= sense;
            let v = after[oend..].trim_start_matches(is_white);
            let vend = v.find(is_white).unwrap_or(v.len());
            if vend == 0 {
                return Err("Version required".into());
            }
            evr = v[..vend].to_string();
            after = &v[vend..];
        }
        check_dep(name, &evr)?;
        out.push(Dep {
            name: name.to_string(),
            flags,
            evr,
            rich: None,
        });
        rest = after;
    }
    Ok(out)
}

fn check_dep(name: &str, evr: &str) -> Result<(), String> {
    let c = name.chars().next().unwrap_or('_');
    if c.is_ascii() && !(c.is_ascii_alphanumeric() || c == '_' || c == '/') {
        return Err("Dependency tokens must begin with alpha-numeric, '_' or '/'".into());
    }
    if !evr.is_empty() && name.starts_with('/') {
        return Err("Versioned file name not permitted".into());
    }
    Ok(())
}

fn op_word(w: &str) -> Option<RichOp> {
    Some(match w {
        "and" => RichOp::And,
        "or" => RichOp::Or,
        "if" => RichOp::If,
        "unless" => RichOp::Unless,
        "with" => RichOp::With,
        "without" => RichOp::Without,
        _ => return None,
    })
}

fn op_str(op: RichOp) -> &'static str {
    match op {
        RichOp::And => "and",
        RichOp::Or => "or",
        RichOp::If | RichOp::IfElse => "if",
        RichOp::Unless | RichOp::UnlessElse => "unless",
        RichOp::With => "with",
        RichOp::Without => "without",
    }
}

/// Parses one rich dependency starting at `(`; returns the tree, its normalized text and the
/// number of bytes consumed.
pub fn parse_rich(s: &str) -> Result<(Rich, String, usize), String> {
    parse_rich_for(s, RichContext::Requires)
}

const CHECK: u32 = 1;
const NO_WITH: u32 = 2;
const NO_AND: u32 = 4;
const NO_OR: u32 = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum RawOp {
    Single,
    And,
    Or,
    If,
    Unless,
    Else,
    With,
    Without,
}

fn context_check(op: RawOp, check: u32) -> Result<(), String> {
    if matches!(op, RawOp::With | RawOp::Without) && check & NO_WITH != 0 {
        return Err("Illegal ops in with/without".into());
    }
    if check & CHECK == 0 {
        return Ok(());
    }
    if matches!(op, RawOp::And | RawOp::If) && check & NO_AND != 0 {
        return Err("Illegal context for 'unless', please use 'or' instead".into());
    }
    if matches!(op, RawOp::Or | RawOp::Unless) && check & NO_OR != 0 {
        return Err("Illegal context for 'if', please use 'and' instead".into());
    }
    Ok(())
}

/// Parses one rich dependency for a tag of the given context.
pub fn parse_rich_for(s: &str, context: RichContext) -> Result<(Rich, String, usize), String> {
    let mut p = RichParser {
        s: s.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let mut check = CHECK;
    let (tree, text) = p.group(&mut check)?;
    match context {
        RichContext::Conflicts => context_check(RawOp::Or, check)?,
        RichContext::Requires => context_check(RawOp::And, check)?,
    }
    Ok((tree, text, p.pos))
}

struct RichParser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl RichParser<'_> {
    fn skip(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn word(&mut self) -> String {
        let st = self.pos;
        let mut lvl = 0i32;
        while self.pos < self.s.len() {
            let c = self.s[self.pos];
            if c.is_ascii_whitespace() {
                break;
            }
            if c == b'(' {
                lvl += 1;
            } else if c == b')' {
                if lvl == 0 {
                    break;
                }
                lvl -= 1;
            }
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[st..self.pos]).into_owned()
    }

    fn group(&mut self, checkp: &mut u32) -> Result<(Rich, String), String> {
        let mut check = *checkp;
        let mut firstop = RawOp::Single;
        let mut lastop = RawOp::Single;
        self.depth += 1;
        if self.depth > 128 {
            return Err("Rich dependency nested too deeply".into());
        }
        // at '('
        self.pos += 1;
        let mut operands = Vec::new();
        let mut text = String::from("(");
        let mut op: Option<RichOp> = None;
        let mut else_seen = false;
        loop {
            self.skip();
            if self.pos >= self.s.len() {
                return Err("Unterminated rich dependency".into());
            }
            // operand
            let (t, txt) = if self.s[self.pos] == b'(' {
                let mut sub = check & CHECK;
                let r = self.group(&mut sub)?;
                if matches!(lastop, RawOp::If | RawOp::Unless) {
                    sub &= !(NO_AND | NO_OR);
                }
                check |= sub;
                r
            } else {
                let name = self.word();
                if name.is_empty() {
                    return Err("Missing argument to rich dependency op".into());
                }
                self.skip();
                let save = self.pos;
                let opw = self.word();
                let sense = parse_sense(&opw);
                let (flags, evr) = if sense != 0 {
                    self.skip();
                    let evr = self.word();
                    if evr.is_empty() {
                        return Err("Version required".into());
                    }
                    (sense, evr)
                } else {
                    self.pos = save;
                    (0, String::new())
                };
                check_dep(&name, &evr)?;
                let d = Dep {
                    name: name.clone(),
                    flags,
                    evr: evr.clone(),
                    rich: None,
                };
                (Rich::Simple { name, flags, evr }, d.nevr())
            };
            operands.push(t);
            text.push_str(&txt);
            self.skip();
            if self.pos >= self.s.len() {
                return Err("Unterminated rich dependency".into());
            }
            if self.s[self.pos] == b')' {
                self.pos += 1;
                text.push(')');
                break;
            }
            let w = self.word();
            let raw = match w.as_str() {
                "and" => RawOp::And,
                "or" => RawOp::Or,
                "if" => RawOp::If,
                "unless" => RawOp::Unless,
                "else" => RawOp::Else,
                "with" => RawOp::With,
                "without" => RawOp::Without,
                _ => RawOp::Single,
            };
            if firstop == RawOp::Single {
                firstop = raw;
            }
            lastop = raw;
            if w == "else" {
                if else_seen || !matches!(op, Some(RichOp::If) | Some(RichOp::Unless)) {
                    return Err(format!("Invalid rich dependency operator: {w}"));
                }
                else_seen = true;
                op = Some(if op == Some(RichOp::If) {
                    RichOp::IfElse
                } else {
                    RichOp::UnlessElse
                });
                text.push_str(" else ");
                continue;
            }
            let Some(o) = op_word(&w) else {
                return Err(format!("Unknown rich dependency op '{w}'"));
            };
            match op {
                None => op = Some(o),
                Some(prev) if prev == o && matches!(o, RichOp::And | RichOp::Or | RichOp::With) => {
                }
                Some(_) => return Err("Cannot chain different ops".into()),
            }
            text.push(' ');
            text.push_str(op_str(o));
            text.push(' ');
        }
        self.depth -= 1;
        context_check(firstop, check)?;
        if firstop == RawOp::If {
            check |= NO_OR;
        }
        if firstop == RawOp::Unless {
            check |= NO_AND;
        }
        if matches!(lastop, RawOp::And | RawOp::Or) {
            check &= !(NO_AND | NO_OR);
        }
        if !matches!(
            lastop,
            RawOp::Single | RawOp::With | RawOp::Without | RawOp::Or
        ) {
            check |= NO_WITH;
        }
        *checkp |= check;
        let tree = match op {
            None => operands.pop().ok_or("Empty rich dependency")?,
            Some(op) => Rich::Op { op, operands },
        };
        Ok((tree, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_and_versioned() {
        let d = parse_field("a, b >= 1.0-2  c=1 d < 2:3", 0, true).unwrap();
        let n: Vec<String> = d.iter().map(Dep::nevr).collect();
        assert_eq!(n, vec!["a", "b >= 1.0-2", "c=1", "d < 2:3"]);
        assert!(parse_field("b >=", 0, true).is_err());
        assert!(parse_field("-x", 0, true).is_err());
    }

    #[test]
    fn rich_trees() {
        let d = parse_field("(foo   or bar >= 2) (x if y else z)", 0, true).unwrap();
        assert_eq!(d[0].name, "(foo or bar >= 2)");
        assert_eq!(d[1].name, "(x if y else z)");
        match d[1].rich.as_deref() {
            Some(Rich::Op {
                op: RichOp::IfElse,
                operands,
            }) => assert_eq!(operands.len(), 3),
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_field("(a or b and c)", 0, true).is_err());
        assert!(parse_field("(g unless h)", 0, true).is_err());
        assert!(parse_field_ctx("(g unless h)", 0, true, RichContext::Conflicts).is_ok());
        assert!(parse_field_ctx("(g if h)", 0, true, RichContext::Conflicts).is_err());
        assert!(parse_field("(a or b", 0, true).is_err());
        assert!(parse_field("(a or b)", 0, false).is_err());
        let deep = format!("{}a{}", "(".repeat(1000), ")".repeat(1000));
        assert!(parse_field(&deep, 0, true).is_err());
    }
}
