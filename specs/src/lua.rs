//! `%{lua:...}`: embedded Lua 5.4 with the parts of rpm's Lua API that macro files use.
//!
//! One Lua state serves an [`Engine`] for as long as it lives (so modules loaded with
//! `require` and globals persist between chunks of one spec, as in rpm). The `rpm` and
//! `macros` globals are rebuilt for every chunk as scoped functions borrowing the engine, so
//! Lua can call back into macro expansion without any shared ownership.
//!
//! # Reusing states between specs
//!
//! Creating a state, opening its libraries and compiling the same chunks and modules again
//! for every spec was a fifth of reading a whole tree. So when an engine is dropped its state
//! goes back to a small per-thread pool, and the next spec read on that thread takes it, after
//! a reset that gives it the view of a fresh state:
//!
//! - the globals table, every table held in a global when the state was made (the standard
//!   libraries, `posix`, `sources`, ...), `package.loaded`, `package.searchers`,
//!   `package.preload` and the string metatable get back exactly the keys and values they
//!   had right after setup (so the next spec sees neither the globals nor the `require`d
//!   modules of the last one, and its `sources` table is empty);
//! - those tables get back their metatables (`_G` loses any a spec gave it), the garbage
//!   collector is restarted and hooks are removed.
//!
//! What survives is only what cannot be observed: compiled chunks, cached by chunk name and
//! text, and compiled modules, cached by `package.path` and module name (a `require` in the
//! next spec runs the module's main chunk again, so module-level state starts fresh). If the
//! reset fails in any way, the state is dropped instead of pooled.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use mlua::{Function, Lua, MultiValue, Table, Value as LValue};

use crate::macros::Engine;

/// Chunks compiled per state before the cache is emptied (a bound for long-running processes).
const CHUNK_CACHE_MAX: usize = 4096;
/// States kept per thread.
const POOL_MAX: usize = 2;

/// What makes two states interchangeable: the module path and the containment setup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PoolKey {
    path: String,
    /// Modules `require` finds by name (see [`EngineConfig::lua_modules`]).
    modules: Vec<(String, std::path::PathBuf)>,
    /// `Some(memory limit)` when contained (no processes, no writes).
    contained: Option<usize>,
}

/// A state with its caches; lives in the pool between specs.
struct Inner {
    lua: Lua,
    key: PoolKey,
    /// Compiled chunks by `name \0 source`.
    chunks: HashMap<String, Function>,
    /// `function(name, call)` returning the callable for a parametric macro in `macros`.
    mkcall: Function,
    /// Restores the state after setup; returns true on success.
    reset: Function,
}

thread_local! {
    static POOL: RefCell<Vec<Inner>> = const { RefCell::new(Vec::new()) };
    /// States created on this thread (for tests of the pool).
    static CREATED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The per-engine Lua state; returned to this thread's pool when dropped.
pub struct LuaState {
    inner: Option<Inner>,
}

impl std::fmt::Debug for LuaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaState")
            .field("key", &self.inner.as_ref().map(|i| &i.key))
            .finish_non_exhaustive()
    }
}

impl Drop for LuaState {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if std::thread::panicking() {
            return;
        }
        inner.lua.remove_hook();
        inner.lua.set_app_data(PrintBuf(Vec::new()));
        // A pooled state must not keep a finished reading's scratch directory alive.
        inner.lua.remove_app_data::<CurrentScratch>();
        if !matches!(inner.reset.call::<bool>(()), Ok(true)) {
            return;
        }
        // `try_with`: during thread exit the pool is gone and the state is simply dropped.
        let _ = POOL.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut()
                && p.len() < POOL_MAX
            {
                p.push(inner);
            }
        });
    }
}

impl LuaState {
    fn inner(&self) -> Result<&Inner, String> {
        self.inner
            .as_ref()
            .ok_or_else(|| "no lua state".to_string())
    }
}

/// A state for `path` and `contain`: a pooled one when this thread has one, else a new one.
fn acquire(
    path: &str,
    modules: &std::collections::BTreeMap<String, std::path::PathBuf>,
    contain: Option<&crate::macros::Containment>,
) -> Result<LuaState, String> {
    let key = PoolKey {
        path: path.to_string(),
        modules: modules
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        contained: contain.map(|c| c.lua_memory),
    };
    let pooled = POOL
        .try_with(|p| {
            let mut p = p.try_borrow_mut().ok()?;
            let i = p.iter().position(|s| s.key == key)?;
            Some(p.swap_remove(i))
        })
        .ok()
        .flatten();
    let inner = match pooled {
        Some(i) => i,
        None => new_state(key, contain)?,
    };
    Ok(LuaState { inner: Some(inner) })
}

/// Adds a searcher for the modules of `EngineConfig::lua_modules` (its argument: module
/// name -> file), after the `package.path` one.
const MODULE_SEARCHER: &str = r#"
local files = ...
local loadfile, insert = loadfile, table.insert
insert(package.searchers, 3, function(name)
  local file = files[name]
  if not file then return "\n\tno module '" .. name .. "' in the tree's Lua modules" end
  local chunk, err = loadfile(file)
  if not chunk then error(err, 0) end
  return chunk, file
end)
"#;

/// Run once on a new state after setup: wraps the file searcher with a compiled-module
/// cache, snapshots the tables a spec could change and returns the function that restores
/// them. Everything it uses is captured in locals, so a spec cannot break the reset by
/// replacing globals.
const RESET_SETUP: &str = r#"
local G, next, type, rawset, pcall, setmetatable, getmetatable, collectgarbage =
    _G, next, type, rawset, pcall, setmetatable, getmetatable, collectgarbage
local package = package
local file_searcher = package.searchers[2]
local compiled = {}
package.searchers[2] = function(name)
  local key = tostring(package.path) .. "\0" .. tostring(name)
  local c = compiled[key]
  if c then return c[1], c[2] end
  local loader, extra = file_searcher(name)
  if type(loader) == "function" then compiled[key] = { loader, extra } end
  return loader, extra
end
local saved = {}
local function keep(t)
  if type(t) ~= "table" then return end
  local c = {}
  for k, v in next, t do c[k] = v end
  saved[#saved + 1] = { t, c, getmetatable(t) }
end
keep(G)
for _, v in next, G do
  if v ~= G then keep(v) end
end
keep(package.loaded)
keep(package.searchers)
keep(package.preload)
local smt = getmetatable("")
keep(smt)
return function()
  if getmetatable("") ~= smt then return false end
  -- a spec may have stopped the collector
  if not pcall(collectgarbage, "restart") then return false end
  for i = 1, #saved do
    local t, c, mt = saved[i][1], saved[i][2], saved[i][3]
    if getmetatable(t) ~= mt and not pcall(setmetatable, t, mt) then return false end
    local extra = {}
    for k in next, t do
      if c[k] == nil then extra[#extra + 1] = k end
    end
    for j = 1, #extra do rawset(t, extra[j], nil) end
    for k, v in next, c do rawset(t, k, v) end
  end
  return true
end
"#;

/// The callable `macros.NAME` for a parametric macro: a table argument is the argument
/// list, anything else is expanded as `%{NAME ARG}`.
const MKCALL: &str = "local name, call = ...; return function(a) if type(a) == 'table' then return call(name, a) elseif a == nil then return call(name, {}) else return rpm.expand('%{' .. name .. ' ' .. tostring(a) .. '}') end end";

struct PrintBuf(Vec<String>);

/// Numbers the names `os.tmpname` gives out, process-wide.
static TMPNAMES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The scratch directory of the reading a contained state runs a script for.
#[derive(Clone)]
struct CurrentScratch(Arc<crate::macros::Scratch>);

fn current_scratch(lua: &Lua) -> mlua::Result<Arc<crate::macros::Scratch>> {
    lua.app_data_ref::<CurrentScratch>()
        .map(|s| Arc::clone(&s.0))
        .ok_or_else(|| mlua::Error::runtime("not permitted while reading a spec"))
}

fn new_state(key: PoolKey, contain: Option<&crate::macros::Containment>) -> Result<Inner, String> {
    let path = key.path.as_str();
    let lua = Lua::new();
    let _ = CREATED.try_with(|c| c.set(c.get() + 1));
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
            for f in ["execute", "rename", "exit"] {
                os.set(f, deny.clone())?;
            }
            for f in ["popen", "output", "lines", "write"] {
                io.set(f, deny.clone())?;
            }
            // Writing only in the reading's scratch directory (see `Scratch`), which
            // `run` puts in the state's app data for each script.
            os.set(
                "tmpname",
                lua.create_function(|lua, ()| {
                    let scratch = current_scratch(lua)?;
                    let dir = scratch.dir().map_err(mlua::Error::runtime)?;
                    let n = TMPNAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let p = dir.join(format!("lua_{n:06}"));
                    std::fs::File::create(&p).map_err(mlua::Error::external)?;
                    Ok(p.to_string_lossy().into_owned())
                })?,
            )?;
            let real_remove: Function = os.get("remove")?;
            os.set(
                "remove",
                lua.create_function(move |lua, p: String| {
                    if !current_scratch(lua)?.holds(Path::new(&p)) {
                        return Err(mlua::Error::runtime("not permitted while reading a spec"));
                    }
                    real_remove.call::<MultiValue>(p)
                })?,
            )?;
            os.set(
                "getenv",
                lua.create_function(|_, k: String| Ok(crate::macros::spec_env(true, &k)))?,
            )?;
            let real_open: Function = io.get("open")?;
            io.set(
                "open",
                lua.create_function(move |lua, (p, m): (String, Option<String>)| {
                    let m = m.unwrap_or_else(|| "r".into());
                    if m.contains(['w', 'a', '+']) && !current_scratch(lua)?.holds(Path::new(&p)) {
                        return Err(mlua::Error::runtime("not permitted while reading a spec"));
                    }
                    real_open.call::<MultiValue>((p, m))
                })?,
            )?;
            Ok(())
        };
        locked().map_err(|e| e.to_string())?;
    }
    let contained = contain.is_some();
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
            lua.create_function(move |_, k: String| Ok(crate::macros::spec_env(contained, &k)))?,
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
        // Modules named one by one, after those on `package.path`: a tree's own
        // (Azure Linux's `azl.srpm.python` is SPECS/azurelinux-rpm-macros/python.lua,
        // which its macros package installs under /usr/lib/rpm/lua/azl/srpm/).
        if !key.modules.is_empty() {
            let files = lua.create_table()?;
            for (name, file) in &key.modules {
                files.set(name.as_str(), file.to_string_lossy().as_ref())?;
            }
            let add: Function = lua
                .load(MODULE_SEARCHER)
                .set_name("keel-modules")
                .into_function()?;
            add.call::<()>(files)?;
        }
        Ok(())
    };
    setup().map_err(|e| e.to_string())?;
    let reset: Function = lua
        .load(RESET_SETUP)
        .set_name("keel-reset")
        .call(())
        .map_err(|e| e.to_string())?;
    let mkcall = lua
        .load(MKCALL)
        .set_name("keel-macros")
        .into_function()
        .map_err(|e| e.to_string())?;
    Ok(Inner {
        lua,
        key,
        chunks: HashMap::new(),
        mkcall,
        reset,
    })
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
    let lua = match eng.lua.as_ref() {
        Some(l) => l.inner()?.lua.clone(),
        None => return Err("no lua state".into()),
    };
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
        eng.lua = Some(acquire(
            &eng.cfg.lua_path,
            &eng.cfg.lua_modules,
            eng.cfg.containment.as_deref(),
        )?);
        for (is_patch, path, num) in std::mem::take(&mut eng.pending_sources) {
            add_source(eng, is_patch, &path, num)?;
        }
    }
    let name = cur.as_ref().map_or("<lua>", |c| c.0.as_str());
    let state = eng
        .lua
        .as_mut()
        .and_then(|l| l.inner.as_mut())
        .ok_or("no lua state")?;
    let lua = state.lua.clone();
    let mkcall = state.mkcall.clone();
    let mut key = String::with_capacity(name.len() + 1 + script.len());
    key.push_str(name);
    key.push('\0');
    key.push_str(script);
    let func = match state.chunks.get(&key) {
        Some(f) => f.clone(),
        None => {
            let chunk_src = format!("local opt, arg = ...;{script}");
            let f = match lua.load(&chunk_src).set_name(name).into_function() {
                Ok(f) => f,
                Err(e) => return Err(format!("invalid syntax in lua script: {}", clean_err(&e))),
            };
            if state.chunks.len() >= CHUNK_CACHE_MAX {
                state.chunks.clear();
            }
            state.chunks.insert(key, f.clone());
            f
        }
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
        lua.set_app_data(CurrentScratch(Arc::clone(&c.scratch)));
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
                e.expand_nested(&s)
                    .map_err(|_| mlua::Error::runtime("error expanding macro"))
            })?,
        )?;
        rpm.set(
            "define",
            scope.create_function(|_, s: String| {
                let mut e = cell.borrow_mut();
                // rpm.define always defines at level 0, even inside a parametric macro
                if e.define_str(&s, 0) {
                    Ok(())
                } else {
                    Err(mlua::Error::runtime("error defining macro"))
                }
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
                crate::expr::eval(&s, None)
                    .map(|v| v.render())
                    .map_err(mlua::Error::runtime)
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
                    let f: Function =
                        mkcall.call((k, lua.globals().get::<Function>("__keel_call")?))?;
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
                let v: Vec<String> = args
                    .sequence_values::<String>()
                    .collect::<mlua::Result<_>>()?;
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

    /// Azure Linux's macros `require "azl.srpm.python"`, a file its macros package
    /// installs; a tree names such modules one by one.
    #[test]
    fn modules_named_by_the_tree_are_found_by_require() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("python.lua"),
            "return { name = function() return 'from-the-tree' end }\n",
        )
        .unwrap();
        let mut modules = std::collections::BTreeMap::new();
        modules.insert("azl.srpm.python".to_owned(), dir.path().join("python.lua"));
        let cfg = EngineConfig {
            lua_path: format!("{}/nothing/?.lua", dir.path().display()),
            lua_modules: modules,
            ..EngineConfig::default()
        };
        for _ in 0..2 {
            // Again from the pool: the searcher survives the reset between specs.
            let mut e = Engine::new(MacroTable::new(), cfg.clone());
            let out = e
                .expand("%{lua: print(require('azl.srpm.python').name())}")
                .unwrap();
            assert_eq!(out, "from-the-tree");
            assert!(e.expand("%{lua: require('azl.common')}").is_err());
        }
        // Without the map, nothing finds it.
        let plain = EngineConfig {
            lua_modules: Default::default(),
            ..cfg
        };
        let mut e = Engine::new(MacroTable::new(), plain);
        assert!(e.expand("%{lua: require('azl.srpm.python')}").is_err());
    }

    /// A pooled state must look fresh to the next spec: no globals, no changed library
    /// tables, no loaded modules and no module-level state from the previous one.
    #[test]
    fn a_reused_state_shows_nothing_of_the_previous_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("counter.lua"),
            "local n = 0\nreturn { inc = function() n = n + 1; return n end }\n",
        )
        .unwrap();
        let cfg = EngineConfig {
            lua_path: format!("{}/?.lua", dir.path().display()),
            ..EngineConfig::default()
        };
        let before = super::CREATED.with(|c| c.get());
        let mut first = Engine::new(MacroTable::new(), cfg.clone());
        crate::lua::add_source(&mut first, false, "a.tar.gz", 0).unwrap();
        let out = first
            .expand(
                "%{lua: leak = 1; string.leak = 2; table.insert = nil; \
                 setmetatable(_G, { __index = function() return 'x' end }); \
                 collectgarbage('stop'); \
                 local c = require 'counter'; c.extra = 1; print(c.inc(), c.inc(), #sources)}",
            )
            .unwrap();
        assert_eq!(out, "1\t2\t1");
        assert_eq!(first.expand("%{lua: print(#sources)}").unwrap(), "1");
        drop(first);
        let mut second = Engine::new(MacroTable::new(), cfg);
        let out = second
            .expand(
                "%{lua: print(tostring(leak), tostring(string.leak), type(table.insert), \
                 tostring(package.loaded.counter), #sources, rpm ~= nil, \
                 collectgarbage('isrunning')); \
                 local c = require 'counter'; print(c.inc(), tostring(c.extra))}",
            )
            .unwrap();
        assert_eq!(out, "nil\tnil\tfunction\tnil\t0\ttrue\ttrue1\tnil");
        assert_eq!(
            super::CREATED.with(|c| c.get()),
            before + 1,
            "the second engine reuses the first one's state"
        );
    }
}
