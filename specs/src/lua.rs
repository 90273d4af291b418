//! `%{lua:...}`: embedded Lua 5.4 with the parts of rpm's Lua API that macro files use.
//!
//! One Lua state lives as long as the [`Engine`] (so modules loaded with `require` and
//! globals persist between chunks of one spec, as in rpm). The `rpm` and `macros` globals
//! are rebuilt for every chunk as scoped functions borrowing the engine, so Lua can call
//! back into macro expansion without any shared ownership.

use std::cell::RefCell;

use mlua::{Function, Lua, MultiValue, Table, Value as LValue};

use crate::macros::Engine;

/// The per-engine Lua state.
#[derive(Debug, Clone)]
pub struct LuaState {
    lua: Lua,
}

struct PrintBuf(Vec<String>);

fn new_state(path: &str, contain: Option<&crate::macros::Containment>) -> Result<LuaState, String> {
    let lua = Lua::new();
    if let Some(c) = contain {
        lua.set_memory_limit(c.lua_memory)
            .map_err(|e| e.to_string())?;
        // no processes, no writes: only what reading a spec needs
        let locked = || -> mlua::Result<()> {
            let os: Table = lua.globals().get("os")?;
            let io: Table = lua.globals().get("io")?;
            let deny = lua.create_function(|_, ()| -> mlua::Result<()> {
                Err(mlua::Error::runtime("not permitted while reading a spec"))
            })?;
            for f in ["execute", "remove", "rename", "tmpname", "exit"] {
                os.set(f, deny.clone())?;
            }
            for f in ["popen", "output", "lines", "write"] {
                io.set(f, deny.clone())?;
            }
            let real_open: Function = io.get("open")?;
            io.set(
                "open",
                lua.create_function(move |_, (p, m): (String, Option<String>)| {
                    let m = m.unwrap_or_else(|| "r".into());
                    if m.contains(['w', 'a', '+']) {
                        return Err(mlua::Error::runtime("not permitted while reading a spec"));
                    }
                    real_open.call::<MultiValue>((p, m))
                })?,
            )?;
            Ok(())
        };
        locked().map_err(|e| e.to_string())?;
    }
    let setup = || -> mlua::Result<()> {
        let package: Table = lua.globals().get("package")?;
        package.set("path", path)?;
        package.set("cpath", "")?;
        lua.set_app_data(PrintBuf(Vec::new()));
        let print = lua.create_function(|lua, args: MultiValue| {
            let mut parts = Vec::new();
            for v in args.iter() {
                let s: String = match v {
                    LValue::String(s) => s.to_string_lossy(),
                    LValue::Integer(i) => i.to_string(),
                    LValue::Number(n) => lua_number(*n),
                    LValue::Nil => "nil".into(),
                    LValue::Boolean(b) => b.to_string(),
                    other => format!("{}: {:p}", other.type_name(), other.to_pointer()),
                };
                parts.push(s);
            }
            if let Some(mut pb) = lua.app_data_mut::<PrintBuf>()
                && let Some(top) = pb.0.last_mut()
            {
                top.push_str(&parts.join("\t"));
            }
            Ok(())
        })?;
        lua.globals().set("print", print)?;
        // posix: the calls macro files make
        let posix = lua.create_table()?;
        posix.set(
            "getenv",
            lua.create_function(|_, k: String| Ok(std::env::var(k).ok()))?,
        )?;
        posix.set(
            "uname",
            lua.create_function(|_, fmt: String| {
                let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let mut out = String::new();
                let mut it = fmt.chars();
                while let Some(c) = it.next() {
                    if c != '%' {
                        out.push(c);
                        continue;
                    }
                    match it.next() {
                        Some('s') => out.push_str("Linux"),
                        Some('r') => out.push_str(rel.trim()),
                        Some('n') => out.push_str(host.trim()),
                        Some('m') => out.push_str(std::env::consts::ARCH),
                        Some('%') => out.push('%'),
                        Some(o) => out.push(o),
                        None => {}
                    }
                }
                Ok(out)
            })?,
        )?;
        posix.set(
            "access",
            lua.create_function(|_, (p, _m): (String, Option<String>)| {
                Ok(std::path::Path::new(&p).exists())
            })?,
        )?;
        posix.set(
            "stat",
            lua.create_function(|lua, (p, sel): (String, Option<String>)| {
                let Ok(md) = std::fs::metadata(&p) else {
                    return Ok(LValue::Nil);
                };
                let ty = if md.is_dir() {
                    "directory"
                } else if md.is_file() {
                    "regular"
                } else {
                    "other"
                };
                match sel.as_deref() {
                    Some("type") => Ok(LValue::String(lua.create_string(ty)?)),
                    Some("size") => Ok(LValue::Integer(md.len() as i64)),
                    _ => {
                        let t = lua.create_table()?;
                        t.set("type", ty)?;
                        t.set("size", md.len() as i64)?;
                        Ok(LValue::Table(t))
                    }
                }
            })?,
        )?;
        posix.set(
            "dir",
            lua.create_function(|lua, p: Option<String>| {
                let t = lua.create_table()?;
                if let Ok(rd) = std::fs::read_dir(p.unwrap_or_else(|| ".".into())) {
                    let mut names: Vec<String> = rd
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.push(".".into());
                    names.push("..".into());
                    for (i, n) in names.into_iter().enumerate() {
                        t.set(i + 1, n)?;
                    }
                }
                Ok(t)
            })?,
        )?;
        lua.globals().set("posix", posix.clone())?;
        for t in ["sources", "patches", "source_nums", "patch_nums"] {
            lua.globals().set(t, lua.create_table()?)?;
        }
        let loaded: Table = package.get("loaded")?;
        loaded.set("posix", posix)?;
        Ok(())
    };
    setup().map_err(|e| e.to_string())?;
    Ok(LuaState { lua })
}

/// Appends to the `sources`/`patches` and `source_nums`/`patch_nums` Lua tables, as rpm
/// does for every `SourceN:`/`PatchN:` tag.
pub(crate) fn add_source(
    eng: &mut Engine,
    is_patch: bool,
    path: &str,
    num: u32,
) -> Result<(), String> {
    if eng.lua.is_none() {
        // most specs never run Lua: keep the entries until a Lua state is needed
        eng.pending_sources.push((is_patch, path.to_string(), num));
        return Ok(());
    }
    let lua = eng
        .lua
        .as_ref()
        .map(|l| l.lua.clone())
        .ok_or("no lua state")?;
    let go = || -> mlua::Result<()> {
        let g = lua.globals();
        let (a, b) = if is_patch {
            ("patches", "patch_nums")
        } else {
            ("sources", "source_nums")
        };
        for (k, v) in [
            (a, LValue::String(lua.create_string(path)?)),
            (b, LValue::Integer(i64::from(num))),
        ] {
            let t: Table = match g.get::<LValue>(k)? {
                LValue::Table(t) => t,
                _ => {
                    let t = lua.create_table()?;
                    g.set(k, t.clone())?;
                    t
                }
            };
            t.raw_set(t.raw_len() + 1, v)?;
        }
        Ok(())
    };
    go().map_err(|e| e.to_string())
}

fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.1}")
    } else {
        format!("{n}")
    }
}

/// Runs a chunk; `cur` is the enclosing parametric macro (name, opts, argv) for `opt`/`arg`.
pub(crate) fn run(
    eng: &mut Engine,
    script: &str,
    cur: Option<(String, Option<String>, Vec<String>)>,
) -> Result<String, String> {
    if eng.lua.is_none() {
        eng.lua = Some(new_state(
            &eng.cfg.lua_path,
            eng.cfg.containment.as_deref(),
        )?);
        for (is_patch, path, num) in std::mem::take(&mut eng.pending_sources) {
            add_source(eng, is_patch, &path, num)?;
        }
    }
    let lua = eng
        .lua
        .as_ref()
        .map(|l| l.lua.clone())
        .ok_or("no lua state")?;
    let name = cur
        .as_ref()
        .map(|c| c.0.clone())
        .unwrap_or_else(|| "<lua>".into());
    let chunk_src = format!("local opt, arg = ...;{script}");
    let func = match lua.load(&chunk_src).set_name(name.clone()).into_function() {
        Ok(f) => f,
        Err(e) => return Err(format!("invalid syntax in lua script: {}", clean_err(&e))),
    };
    // opt / arg tables
    let opt = lua.create_table().map_err(|e| e.to_string())?;
    let argt = lua.create_table().map_err(|e| e.to_string())?;
    if let Some((mname, opts, argv)) = &cur {
        let (found, operands) = match opts {
            Some(o) => crate::macros::getopt(argv, o)
                .map_err(|c| format!("Unknown option {c} in {mname}({o})"))?,
            None => (Vec::new(), argv.iter().skip(1).cloned().collect()),
        };
        for (c, a) in found {
            opt.set(c.to_string(), a.unwrap_or_default())
                .map_err(|e| e.to_string())?;
        }
        for (i, a) in operands.into_iter().enumerate() {
            argt.set(i + 1, a).map_err(|e| e.to_string())?;
        }
    }
    if let Some(mut pb) = lua.app_data_mut::<PrintBuf>() {
        pb.0.push(String::new());
    }
    if let Some(c) = eng.cfg.containment.as_deref() {
        let deadline = std::time::Instant::now() + c.lua_timeout;
        lua.set_hook(
            mlua::HookTriggers::new().every_nth_instruction(10_000),
            move |_, _| {
                if std::time::Instant::now() > deadline {
                    return Err(mlua::Error::runtime("lua script exceeded its time limit"));
                }
                Ok(mlua::VmState::Continue)
            },
        )
        .map_err(|e| e.to_string())?;
    }
    let cell = RefCell::new(eng);
    let globals = lua.globals();
    let prev_rpm: LValue = globals.get("rpm").unwrap_or(LValue::Nil);
    let prev_macros: LValue = globals.get("macros").unwrap_or(LValue::Nil);
    let result = lua.scope(|scope| {
        let rpm = lua.create_table()?;
        rpm.set(
            "expand",
            scope.create_function(|_, s: String| {
                let mut e = cell.borrow_mut();
                e.expand_nested(&s).map_err(|_| mlua::Error::runtime("error expanding macro"))
            })?,
        )?;
        rpm.set(
            "define",
            scope.create_function(|_, s: String| {
                let mut e = cell.borrow_mut();
                // rpm.define always defines at level 0, even inside a parametric macro
                if e.define_str(&s, 0) { Ok(()) } else { Err(mlua::Error::runtime("error defining macro")) }
            })?,
        )?;
        rpm.set(
            "undefine",
            scope.create_function(|_, s: String| {
                cell.borrow_mut().table.pop(&s);
                Ok(())
            })?,
        )?;
        rpm.set(
            "isdefined",
            scope.create_function(|_, s: String| {
                let e = cell.borrow();
                let d = e.table.get(&s);
                Ok((d.is_some(), d.is_some_and(|d| d.opts.is_some())))
            })?,
        )?;
        rpm.set(
            "vercmp",
            lua.create_function(|_, (a, b): (String, String)| {
                let ea = crate::vercmp::Evr::parse(&a);
                let eb = crate::vercmp::Evr::parse(&b);
                Ok(ea.compare(&eb) as i32)
            })?,
        )?;
        rpm.set(
            "expr",
            lua.create_function(|_, s: String| {
                crate::expr::eval(&s, None).map(|v| v.render()).map_err(mlua::Error::runtime)
            })?,
        )?;
        rpm.set(
            "splitargs",
            lua.create_function(|lua, s: String| {
                let t = lua.create_table()?;
                for (i, w) in s.split_whitespace().enumerate() {
                    t.set(i + 1, w)?;
                }
                Ok(t)
            })?,
        )?;
        rpm.set(
            "unsplitargs",
            lua.create_function(|_, t: Table| {
                let v: Vec<String> = t.sequence_values::<String>().collect::<mlua::Result<_>>()?;
                Ok(v.join(" "))
            })?,
        )?;
        rpm.set(
            "ver",
            lua.create_function(|lua, s: String| {
                let e = crate::vercmp::Evr::parse(&s);
                let t = lua.create_table()?;
                t.set("e", e.epoch.clone())?;
                t.set("v", e.version.clone())?;
                t.set("r", e.release.clone())?;
                t.set("evr", s)?;
                Ok(t)
            })?,
        )?;
        let macros = lua.create_table()?;
        let mt = lua.create_table()?;
        mt.set(
            "__index",
            scope.create_function(|lua, (_t, k): (Table, String)| {
                let parametric = {
                    let e = cell.borrow();
                    match e.table.get(&k) {
                        None if crate::macros::is_builtin_with_arg(&k) => true,
                        None => return Ok(LValue::Nil),
                        Some(d) => d.opts.is_some(),
                    }
                };
                if parametric {
                    // a callable that expands the macro with arguments
                    let name = k.clone();
                    let f: Function = lua.load(
                        "local name, call = ...; return function(a) if type(a) == 'table' then return call(name, a) elseif a == nil then return call(name, {}) else return rpm.expand('%{' .. name .. ' ' .. tostring(a) .. '}') end end",
                    ).call((name, lua.globals().get::<Function>("__keel_call")?))?;
                    Ok(LValue::Function(f))
                } else {
                    let mut e = cell.borrow_mut();
                    let v = e
                        .expand_nested(&format!("%{{{k}}}"))
                        .map_err(|_| mlua::Error::runtime("error expanding macro"))?;
                    Ok(LValue::String(lua.create_string(&v)?))
                }
            })?,
        )?;
        mt.set(
            "__newindex",
            scope.create_function(|_, (_t, k, v): (Table, String, Option<String>)| {
                let mut e = cell.borrow_mut();
                match v {
                    None => e.table.pop(&k),
                    Some(b) => {
                        e.define_str(&format!("{k} {b}"), 0);
                    }
                }
                Ok(())
            })?,
        )?;
        macros.set_metatable(Some(mt))?;
        lua.globals().set(
            "__keel_call",
            scope.create_function(|_, (name, args): (String, Table)| {
                let v: Vec<String> = args.sequence_values::<String>().collect::<mlua::Result<_>>()?;
                cell.borrow_mut()
                    .call_with_args(&name, v)
                    .map_err(|_| mlua::Error::runtime("error expanding macro"))
            })?,
        )?;
        lua.globals().set("rpm", rpm)?;
        lua.globals().set("macros", macros)?;
        let rets: MultiValue = func.call((opt, argt))?;
        // values returned by the chunk are printed, as rpm does
        let mut extra = Vec::new();
        for v in rets.iter() {
            extra.push(match v {
                LValue::String(s) => s.to_string_lossy(),
                LValue::Integer(i) => i.to_string(),
                LValue::Number(n) => lua_number(*n),
                LValue::Boolean(b) => b.to_string(),
                LValue::Nil => "nil".into(),
                o => o.type_name().to_string(),
            });
        }
        Ok(extra)
    });
    let _ = globals.set("rpm", prev_rpm);
    let _ = globals.set("macros", prev_macros);
    let _ = globals.set("__keel_call", LValue::Nil);
    let printed = lua
        .app_data_mut::<PrintBuf>()
        .and_then(|mut pb| pb.0.pop())
        .unwrap_or_default();
    match result {
        Ok(extra) => {
            let mut s = printed;
            if !extra.is_empty() {
                s.push_str(&extra.join("\t"));
            }
            Ok(s)
        }
        Err(e) => Err(format!("lua script failed: {}", clean_err(&e))),
    }
}

fn clean_err(e: &mlua::Error) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use crate::macros::{Engine, EngineConfig, LEVEL_CMDLINE, MacroTable};

    #[test]
    fn lua_print_expand_define_and_args() {
        let mut e = Engine::new(MacroTable::new(), EngineConfig::default());
        e.define_str("foo bar", LEVEL_CMDLINE);
        assert_eq!(
            e.expand("%{lua: print(rpm.expand('%foo')) print('x')}")
                .unwrap(),
            "barx"
        );
        e.expand("%{lua: rpm.define('baz 7')}").unwrap();
        assert_eq!(e.expand("%baz").unwrap(), "7");
        e.define_str(
            "y(p:) %{lua: print(opt.p or 'nil'); print(#arg)}",
            LEVEL_CMDLINE,
        );
        assert_eq!(e.expand("%y -p 7 a b").unwrap(), "72");
        assert_eq!(e.expand("%{lua: print(macros.foo)}").unwrap(), "bar");
        assert_eq!(
            e.expand("%{lua: print(rpm.vercmp('1.0', '1.1'))}").unwrap(),
            "-1"
        );
        assert!(e.expand("%{lua: error('boom')}").is_err());
        assert!(e.expand("%{lua: this is not lua}").is_err());
    }
}
