//! rpm's expression language, as used by `%if`, `%elif`, `%[...]` and `%{expr:...}`.
//!
//! Values are integers, strings and versions (`v"1.2"`); operators are `!`, unary `-`,
//! `* /`, `+ -` (`+` concatenates strings), comparisons, `&&`/`||` (which return an
//! operand, not a boolean) and the ternary `?:`. Both operands of a binary operator must
//! have the same type. Nesting is bounded so a hostile expression cannot overflow the stack.

use std::cmp::Ordering;

use crate::vercmp::{Evr, rpmvercmp};

/// A value of an rpm expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Str(String),
    Ver(String),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Int(i) => *i != 0,
            Value::Str(s) => !s.is_empty(),
            Value::Ver(_) => true,
        }
    }

    fn same_type(&self, o: &Value) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(o)
    }

    /// The value as `%[...]` prints it.
    pub fn render(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Str(s) | Value::Ver(s) => s.clone(),
        }
    }
}

const MAX_NESTING: usize = 256;

/// Expands macros found inside an expression (`%[...]`).
pub type Expander<'e> = &'e mut dyn FnMut(&str) -> Result<String, String>;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Str(String),
    Ver(String),
    Op(&'static str),
    Eof,
}

struct Parser<'a, 'e> {
    s: &'a [u8],
    pos: usize,
    tok: Tok,
    depth: usize,
    expand: Option<Expander<'e>>,
    discard: bool,
}

/// Evaluates an expression. With `expand`, macros inside the expression are expanded
/// lazily (the `%[...]` form); the error is the message rpm prints.
pub fn eval(src: &str, expand: Option<Expander<'_>>) -> Result<Value, String> {
    let mut p = Parser {
        s: src.as_bytes(),
        pos: 0,
        tok: Tok::Eof,
        depth: 0,
        expand,
        discard: false,
    };
    let err = |m: String| format!("{m}: {src}");
    p.next().map_err(err)?;
    let v = p.ternary().map_err(err)?;
    if p.tok != Tok::Eof {
        return Err(err("syntax error in expression".into()));
    }
    Ok(v)
}

/// Evaluates an expression as `%if` does.
pub fn eval_bool(src: &str) -> Result<bool, String> {
    eval(src, None).map(|v| v.truthy())
}

fn skip_macro(s: &[u8], mut i: usize) -> usize {
    // i points just after '%'
    match s.get(i) {
        Some(b'{') | Some(b'(') | Some(b'[') => {
            let (open, close) = match s[i] {
                b'{' => (b'{', b'}'),
                b'(' => (b'(', b')'),
                _ => (b'[', b']'),
            };
            let mut lvl = 0;
            while i < s.len() {
                if s[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if s[i] == close {
                    lvl -= 1;
                    if lvl <= 0 {
                        return i + 1;
                    }
                } else if s[i] == open {
                    lvl += 1;
                }
                i += 1;
            }
            s.len()
        }
        _ => {
            while i < s.len() && (s[i] == b'?' || s[i] == b'!') {
                i += 1;
            }
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
                i += 1;
            }
            i
        }
    }
}

impl Parser<'_, '_> {
    fn text(&mut self, raw: &str) -> Result<String, String> {
        if self.discard {
            return Ok(raw.to_string());
        }
        match self.expand.as_mut() {
            Some(f) if raw.contains('%') => f(raw),
            _ => Ok(raw.to_string()),
        }
    }

    fn next(&mut self) -> Result<(), String> {
        let s = self.s;
        while self.pos < s.len() && s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        if self.pos >= s.len() {
            self.tok = Tok::Eof;
            return Ok(());
        }
        let c = s[self.pos];
        let two = |a: u8| s.get(self.pos + 1) == Some(&a);
        let op: Option<(&'static str, usize)> = match c {
            b'+' => Some(("+", 1)),
            b'-' => Some(("-", 1)),
            b'*' => Some(("*", 1)),
            b'/' => Some(("/", 1)),
            b'(' => Some(("(", 1)),
            b')' => Some((")", 1)),
            b'?' => Some(("?", 1)),
            b':' => Some((":", 1)),
            b'<' if two(b'=') => Some(("<=", 2)),
            b'<' => Some(("<", 1)),
            b'>' if two(b'=') => Some((">=", 2)),
            b'>' => Some((">", 1)),
            b'=' if two(b'=') => Some(("==", 2)),
            b'=' => return Err("syntax error while parsing ==".into()),
            b'!' if two(b'=') => Some(("!=", 2)),
            b'!' => Some(("!", 1)),
            b'&' if two(b'&') => Some(("&&", 2)),
            b'&' => return Err("syntax error while parsing &&".into()),
            b'|' if two(b'|') => Some(("||", 2)),
            b'|' => return Err("syntax error while parsing ||".into()),
            _ => None,
        };
        if let Some((o, n)) = op {
            self.pos += n;
            self.tok = Tok::Op(o);
            return Ok(());
        }
        let expanding = self.expand.is_some();
        if c.is_ascii_digit() || (c == b'%' && expanding) {
            let st = self.pos;
            let mut i = st;
            while i < s.len() {
                if s[i] == b'%' && expanding {
                    i = skip_macro(s, i + 1);
                } else if s[i].is_ascii_digit() {
                    i += 1;
                } else {
                    break;
                }
            }
            let raw = String::from_utf8_lossy(&s[st..i]).into_owned();
            self.pos = i;
            let t = self.text(&raw)?;
            let t = t.trim();
            if t.parse::<i64>().is_err() {
                if expanding && t.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()) {
                    return Err("macro expansion returned a bare word, please use \"...\"".into());
                }
                return Err("macro expansion did not return an integer".into());
            }
            // atoi semantics: overflow wraps in C; saturate here.
            self.tok = Tok::Int(t.parse::<i64>().unwrap_or(i64::MAX) as i32 as i64);
            return Ok(());
        }
        if c == b'"' || (c == b'v' && two(b'"')) {
            let ver = c == b'v';
            let st = self.pos + if ver { 2 } else { 1 };
            let mut i = st;
            while i < s.len() {
                if s[i] == b'%' && expanding {
                    i = skip_macro(s, i + 1);
                } else if s[i] == b'"' {
                    break;
                } else {
                    i += 1;
                }
            }
            if i >= s.len() {
                return Err("unterminated string in expression".into());
            }
            let raw = String::from_utf8_lossy(&s[st..i]).into_owned();
            self.pos = i + 1;
            let t = self.text(&raw)?;
            self.tok = if ver { Tok::Ver(t) } else { Tok::Str(t) };
            return Ok(());
        }
        if c.is_ascii_alphabetic() {
            return Err("bare words are no longer supported, please use \"...\"".into());
        }
        Err("parse error in expression".into())
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err("expression nested too deeply".into());
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Value, String> {
        self.enter()?;
        let r = self.primary_inner();
        self.depth -= 1;
        r
    }

    fn primary_inner(&mut self) -> Result<Value, String> {
        match std::mem::replace(&mut self.tok, Tok::Eof) {
            Tok::Op("(") => {
                self.next()?;
                let v = self.ternary()?;
                if self.tok != Tok::Op(")") {
                    return Err("unmatched (".into());
                }
                self.next()?;
                Ok(v)
            }
            Tok::Int(i) => {
                self.next()?;
                Ok(Value::Int(i))
            }
            Tok::Str(s) => {
                self.next()?;
                Ok(Value::Str(s))
            }
            Tok::Ver(s) => {
                self.next()?;
                Ok(Value::Ver(s))
            }
            Tok::Op("-") => {
                self.next()?;
                match self.primary()? {
                    Value::Int(i) => Ok(Value::Int(-i)),
                    _ => Err("- only on numbers".into()),
                }
            }
            Tok::Op("!") => {
                self.next()?;
                let v = self.primary()?;
                Ok(Value::Int(i64::from(!v.truthy())))
            }
            Tok::Eof => Err("unexpected end of expression".into()),
            _ => Err("syntax error in expression".into()),
        }
    }

    fn muldiv(&mut self) -> Result<Value, String> {
        let mut v1 = self.primary()?;
        while let Tok::Op(op @ ("*" | "/")) = self.tok {
            self.next()?;
            let v2 = self.primary()?;
            if !v1.same_type(&v2) {
                return Err("types must match".into());
            }
            v1 = match (v1, v2) {
                (Value::Int(a), Value::Int(b)) => {
                    if op == "*" {
                        Value::Int(a.wrapping_mul(b))
                    } else if b == 0 {
                        if self.discard {
                            Value::Int(0)
                        } else {
                            return Err("division by zero".into());
                        }
                    } else {
                        Value::Int(a / b)
                    }
                }
                (Value::Ver(_), _) => return Err("* and / not supported for versions".into()),
                _ => return Err("* and / not supported for strings".into()),
            };
        }
        Ok(v1)
    }

    fn addsub(&mut self) -> Result<Value, String> {
        let mut v1 = self.muldiv()?;
        while let Tok::Op(op @ ("+" | "-")) = self.tok {
            self.next()?;
            let v2 = self.muldiv()?;
            if !v1.same_type(&v2) {
                return Err("types must match".into());
            }
            v1 = match (v1, v2) {
                (Value::Int(a), Value::Int(b)) => Value::Int(if op == "+" {
                    a.wrapping_add(b)
                } else {
                    a.wrapping_sub(b)
                }),
                (Value::Ver(_), _) => return Err("+ and - not supported for versions".into()),
                (Value::Str(a), Value::Str(b)) if op == "+" => Value::Str(a + &b),
                _ => return Err("- not supported for strings".into()),
            };
        }
        Ok(v1)
    }

    fn relational(&mut self) -> Result<Value, String> {
        let mut v1 = self.addsub()?;
        while let Tok::Op(op @ ("==" | "!=" | "<" | "<=" | ">" | ">=")) = self.tok {
            self.next()?;
            let v2 = self.addsub()?;
            if !v1.same_type(&v2) {
                return Err("types must match".into());
            }
            let ord = match (&v1, &v2) {
                (Value::Int(a), Value::Int(b)) => a.cmp(b),
                (Value::Str(a), Value::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
                (Value::Ver(a), Value::Ver(b)) => Evr::parse(a).compare(&Evr::parse(b)),
                _ => Ordering::Equal,
            };
            let r = match op {
                "==" => ord == Ordering::Equal,
                "!=" => ord != Ordering::Equal,
                "<" => ord == Ordering::Less,
                "<=" => ord != Ordering::Greater,
                ">" => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            };
            v1 = Value::Int(i64::from(r));
        }
        Ok(v1)
    }

    fn logical(&mut self) -> Result<Value, String> {
        let mut v1 = self.relational()?;
        while let Tok::Op(op @ ("&&" | "||")) = self.tok {
            let b1 = v1.truthy();
            let old = self.discard;
            if (op == "&&" && !b1) || (op == "||" && b1) {
                self.discard = true;
            }
            self.next()?;
            let v2 = self.relational()?;
            self.discard = old;
            if !v1.same_type(&v2) {
                return Err("types must match".into());
            }
            if (op == "&&" && b1) || (op == "||" && !b1) {
                v1 = v2;
            }
        }
        Ok(v1)
    }

    fn ternary(&mut self) -> Result<Value, String> {
        self.enter()?;
        let r = self.ternary_inner();
        self.depth -= 1;
        r
    }

    fn ternary_inner(&mut self) -> Result<Value, String> {
        let v1 = self.logical()?;
        if self.tok != Tok::Op("?") {
            return Ok(v1);
        }
        let cond = v1.truthy();
        let old = self.discard;
        if !cond {
            self.discard = true;
        }
        self.next()?;
        let a = self.ternary()?;
        if self.tok != Tok::Op(":") {
            return Err("syntax error in expression".into());
        }
        self.discard = old || cond;
        self.next()?;
        let b = self.ternary()?;
        self.discard = old;
        if !a.same_type(&b) {
            return Err("types must match".into());
        }
        Ok(if cond { a } else { b })
    }
}

/// Compares two version strings (used by `rpm.vercmp` too).
pub fn vercmp(a: &str, b: &str) -> Ordering {
    rpmvercmp(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str, want: &str) {
        assert_eq!(
            eval(src, None).map(|v| v.render()).unwrap_or_else(|e| e),
            want,
            "{src}"
        );
    }

    #[test]
    fn arithmetic_logic_and_versions() {
        check("1+2*3", "7");
        check("(1+2)*3", "9");
        check("1 && 3", "3");
        check("0 || 5", "5");
        check("1 ? 2 : 3", "2");
        check("\"a\" + \"b\"", "ab");
        check("v\"1.0\" == v\"1\"", "0");
        check("v\"1.2\" < v\"1.10\"", "1");
        check("v\"1.0~rc1\" < v\"1.0\"", "1");
        check("!0", "1");
        check("-3 + 1", "-2");
        check("\"a\" < \"b\"", "1");
        check("0 && 1/0", "0");
        assert!(
            eval("0 || \"x\"", None)
                .unwrap_err()
                .starts_with("types must match")
        );
        assert!(eval("foo", None).unwrap_err().starts_with("bare words"));
        assert!(eval("1/0", None).is_err());
        assert!(eval("(1", None).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let src = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(eval(&src, None).is_err());
        let src = format!("{}1", "!".repeat(100_000));
        assert!(eval(&src, None).is_err());
    }
}
