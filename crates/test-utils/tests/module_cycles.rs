//! No module of any workspace crate imports, directly or through others, a module that imports
//! it back. Run with `cargo test -p torc-test-utils --test module_cycles`; a failure names each
//! group of modules that reach each other, one cycle through them (e.g.
//! `api -> original -> api`) and the lines that make its edges. `MODULE_CYCLES_CRATES=DIR`
//! checks the crates under another directory (another checkout's `crates/`).
//!
//! What counts as an edge: module A uses an item *defined* in module B (A ≠ B), through a
//! `crate::`, `super::` or `self::` path, or a path starting at one of A's child modules, in a
//! `use` or anywhere in its code. A `pub use` re-export is not an edge: a path through it is
//! followed to the module that defines the item, so a facade (a crate root that re-exports its
//! modules' items) makes no cycle. A name that is neither a child module nor a re-export is
//! taken to be defined in the module the path reaches. Test code is left out: items under
//! `#[cfg(test)]` (a `mod tests` that uses `super::*` is not a cycle). Comments and string
//! literals are skipped.
//!
//! Modules are found as rustc finds them: from each crate root (`src/lib.rs`, `src/main.rs`,
//! `src/bin/*.rs`), following `mod x;` (and `#[path = "..."]`); inline `mod x { ... }` blocks
//! count as part of the file that holds them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One module: its path (`rack::tasks`, `` for the root), its file, its children.
struct Module {
    path: Vec<String>,
    file: PathBuf,
    children: BTreeMap<String, usize>,
    /// `pub use` re-exports: exported name → the full path it names (from the crate root).
    reexports: BTreeMap<String, Vec<String>>,
    /// Paths the module's code uses (from the crate root), with the line they are on.
    uses: Vec<(Vec<String>, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String, usize),
    Colons,
    Open,
    Close,
    Comma,
    Star,
    Semi,
    Other(char),
}

/// Source code with comments, string and char literals blanked (newlines kept for line numbers).
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            'raw: while j < b.len() {
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break 'raw;
                }
                blank(&mut out, b[j]);
                j += 1;
            }
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = b.get(i) {
                    blank(&mut out, ch);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a), which is left alone.
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn tokens(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if is_ident(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            // `r#type` raw identifiers: the `r#` prefix is dropped.
            out.push(Tok::Ident(word, line));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push(Tok::Colons);
            i += 2;
        } else {
            out.push(match c {
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                '*' => Tok::Star,
                ';' => Tok::Semi,
                other => Tok::Other(other),
            });
            i += 1;
        }
    }
    out
}

/// Drops every item under `#[cfg(test)]` (the attribute, then the item up to its `;` or the
/// end of its first brace block).
fn without_tests(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let is_cfg_test = matches!(&toks[i], Tok::Other('#'))
            && matches!(toks.get(i + 1), Some(Tok::Other('[')))
            && matches!(toks.get(i + 2), Some(Tok::Ident(w, _)) if w == "cfg")
            && matches!(toks.get(i + 3), Some(Tok::Other('(')))
            && matches!(toks.get(i + 4), Some(Tok::Ident(w, _)) if w == "test")
            && matches!(toks.get(i + 5), Some(Tok::Other(')')))
            && matches!(toks.get(i + 6), Some(Tok::Other(']')));
        if !is_cfg_test {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        i += 7;
        let mut depth = 0usize;
        while i < toks.len() {
            match toks[i] {
                Tok::Open => depth += 1,
                Tok::Close => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                Tok::Semi if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

/// The `mod x;` declarations of a file (not inline modules, not test modules), with their
/// `#[path]` when they have one.
fn declared_mods(src: &str, toks: &[Tok]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let Tok::Ident(w, line) = t else { continue };
        if w != "mod" {
            continue;
        }
        let (Some(Tok::Ident(name, _)), Some(Tok::Semi)) = (toks.get(i + 1), toks.get(i + 2))
        else {
            continue;
        };
        // A `#[path = "..."]` on the line(s) just above (the stripped text lost the string).
        let lines: Vec<&str> = src.lines().collect();
        let mut path = None;
        let mut l = *line as isize - 2;
        while l >= 0 {
            let text = lines[l as usize].trim();
            if !text.starts_with("#[") {
                break;
            }
            if let Some(rest) = text.strip_prefix("#[path = \"") {
                path = rest.split('"').next().map(str::to_string);
            }
            l -= 1;
        }
        out.push((name.clone(), path));
    }
    out
}

/// The paths a token stream names: each a list of segments as written (`crate`, `super`,
/// `self` or a first identifier included), with its line. Use trees are expanded.
fn paths(toks: &[Tok]) -> Vec<(Vec<String>, usize, bool)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts = match &toks[i] {
            Tok::Ident(_, _) => {
                matches!(toks.get(i + 1), Some(Tok::Colons))
                    && !matches!(i.checked_sub(1).map(|j| &toks[j]), Some(Tok::Colons))
            }
            _ => false,
        };
        if !starts {
            i += 1;
            continue;
        }
        // Is this path the head of a `pub use` (a re-export)?
        let reexport = is_pub_use(toks, i);
        let mut found = Vec::new();
        let end = tree(toks, i, Vec::new(), &mut found);
        let line = match &toks[i] {
            Tok::Ident(_, l) => *l,
            _ => 0,
        };
        for p in found {
            out.push((p, line, reexport));
        }
        i = end.max(i + 1);
    }
    out
}

fn is_pub_use(toks: &[Tok], i: usize) -> bool {
    let word = |j: usize| match toks.get(j) {
        Some(Tok::Ident(w, _)) => Some(w.as_str()),
        _ => None,
    };
    if i >= 1 && word(i - 1) == Some("use") {
        // `pub use`, `pub(crate) use`, `pub(super) use`.
        if i >= 2 && word(i - 2) == Some("pub") {
            return true;
        }
        if i >= 5 && matches!(toks[i - 2], Tok::Other(')')) && word(i - 5) == Some("pub") {
            return true;
        }
    }
    false
}

/// Parses a use tree (or a plain path) at `i`; pushes each full path; returns the index after.
fn tree(
    toks: &[Tok],
    mut i: usize,
    mut prefix: Vec<String>,
    found: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(i) {
            Some(Tok::Ident(w, _)) => {
                prefix.push(w.clone());
                i += 1;
                if matches!(toks.get(i), Some(Tok::Colons)) {
                    i += 1;
                    continue;
                }
                found.push(prefix);
                return i;
            }
            Some(Tok::Open) => {
                i += 1;
                loop {
                    match toks.get(i) {
                        Some(Tok::Close) => return i + 1,
                        Some(Tok::Comma) => i += 1,
                        None => return i,
                        _ => {
                            let before = i;
                            i = tree(toks, i, prefix.clone(), found);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            Some(Tok::Star) => {
                found.push(prefix);
                return i + 1;
            }
            _ => {
                if !prefix.is_empty() {
                    found.push(prefix);
                }
                return i;
            }
        }
    }
}

struct Crate {
    name: String,
    modules: Vec<Module>,
}

fn load_crate(dir: &Path) -> Vec<Crate> {
    let name = std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("name = \"")
                    .map(|r| r.trim_end_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| dir.display().to_string());
    let mut roots = Vec::new();
    for root in ["src/lib.rs", "src/main.rs"] {
        if dir.join(root).exists() {
            roots.push(dir.join(root));
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "rs") {
                roots.push(e.path());
            }
        }
    }
    roots
        .into_iter()
        .map(|root| Crate {
            name: format!(
                "{name} ({})",
                root.strip_prefix(dir).unwrap_or(&root).display()
            ),
            modules: load_modules(&root),
        })
        .collect()
}

fn load_modules(root: &Path) -> Vec<Module> {
    let mut modules: Vec<Module> = Vec::new();
    let mut raw: Vec<Vec<(Vec<String>, usize, bool)>> = Vec::new();
    let mut queue = vec![(Vec::<String>::new(), root.to_path_buf(), None::<usize>)];
    while let Some((path, file, parent)) = queue.pop() {
        let Ok(src) = std::fs::read_to_string(&file) else {
            panic!("{}: cannot read", file.display());
        };
        let stripped = strip(&src);
        let toks = without_tests(tokens(&stripped));
        let index = modules.len();
        if let Some(p) = parent {
            let name = path.last().cloned().unwrap_or_default();
            modules[p].children.insert(name, index);
        }
        let here = file.parent().unwrap_or(Path::new("")).to_path_buf();
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let mod_rs = matches!(stem, "mod" | "lib" | "main") || parent.is_none();
        let dir = if mod_rs {
            here.clone()
        } else {
            here.join(stem)
        };
        for (name, attr) in declared_mods(&src, &toks) {
            let child_file = match attr {
                Some(p) => here.join(p),
                None => {
                    let flat = dir.join(format!("{name}.rs"));
                    if flat.exists() {
                        flat
                    } else {
                        dir.join(&name).join("mod.rs")
                    }
                }
            };
            let mut child = path.clone();
            child.push(name);
            queue.push((child, child_file, Some(index)));
        }
        raw.push(paths(&toks));
        modules.push(Module {
            path,
            file,
            children: BTreeMap::new(),
            reexports: BTreeMap::new(),
            uses: Vec::new(),
        });
    }
    // Make every path absolute (from the crate root), and note re-exports.
    for (m, found) in raw.into_iter().enumerate() {
        for (p, line, reexport) in found {
            let Some(abs) = absolute(&modules, m, &p) else {
                continue;
            };
            if reexport {
                if let Some(last) = abs.last() {
                    modules[m].reexports.insert(last.clone(), abs.clone());
                }
            } else {
                modules[m].uses.push((abs, line));
            }
        }
    }
    modules
}

/// `p` as written in module `m`, from the crate root; `None` when it starts elsewhere (another
/// crate, a local name, a type's associated item).
fn absolute(modules: &[Module], m: usize, p: &[String]) -> Option<Vec<String>> {
    let mut base = modules[m].path.clone();
    let mut rest = p;
    match p.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &p[1..];
        }
        Some("self") => rest = &p[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some(first) if modules[m].children.contains_key(first) => {}
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The module that defines what `abs` names, following child modules and re-exports.
fn resolve(modules: &[Module], abs: &[String], depth: usize) -> usize {
    let mut at = 0; // the root is loaded first
    for (i, seg) in abs.iter().enumerate() {
        if let Some(&child) = modules[at].children.get(seg) {
            at = child;
            continue;
        }
        if depth < 16
            && let Some(target) = modules[at].reexports.get(seg)
            && target.as_slice() != &abs[..=i]
        {
            let mut full = target.clone();
            full.extend(abs[i + 1..].iter().cloned());
            return resolve(modules, &full, depth + 1);
        }
        break;
    }
    at
}

fn name(m: &Module) -> String {
    if m.path.is_empty() {
        "crate".to_string()
    } else {
        m.path.join("::")
    }
}

/// Each group of modules that reach each other (a strongly connected component of more than
/// one module), and a shortest cycle through its first module by name (first = last).
fn cycles(
    edges: &BTreeMap<usize, BTreeSet<usize>>,
    names: &[String],
) -> Vec<(Vec<usize>, Vec<usize>)> {
    let n = names.len();
    // Tarjan's strongly connected components; in each component of more than one module,
    // report one cycle through its smallest module (enough to name the problem).
    struct T<'a> {
        edges: &'a BTreeMap<usize, BTreeSet<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in t.edges.get(&v).into_iter().flatten() {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    // A shortest cycle through the component's first module, by breadth-first search.
    t.out
        .into_iter()
        .map(|comp| {
            let members: BTreeSet<usize> = comp.iter().copied().collect();
            let start = *members
                .iter()
                .min_by_key(|&&m| names[m].clone())
                .expect("non-empty");
            let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
            let mut frontier = vec![start];
            'bfs: while !frontier.is_empty() {
                let mut next = Vec::new();
                for v in frontier {
                    for &w in edges.get(&v).into_iter().flatten() {
                        if !members.contains(&w) {
                            continue;
                        }
                        if w == start {
                            prev.insert(start, v);
                            break 'bfs;
                        }
                        if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(w) {
                            e.insert(v);
                            next.push(w);
                        }
                    }
                }
                frontier = next;
            }
            let mut cycle = vec![start];
            let mut at = prev[&start];
            while at != start {
                cycle.push(at);
                at = prev[&at];
            }
            cycle.push(start);
            cycle.reverse();
            let mut members: Vec<usize> = members.into_iter().collect();
            members.sort_by_key(|&m| names[m].clone());
            (members, cycle)
        })
        .collect()
}

/// The cycles of one crate: per group of modules that reach each other, its key
/// (`crate: a, b, c`) and a description of one cycle with the lines that make its edges.
fn crate_cycles(krate: &Crate) -> Vec<(String, String)> {
    let mods = &krate.modules;
    let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let mut why: BTreeMap<(usize, usize), (usize, String)> = BTreeMap::new();
    for (a, m) in mods.iter().enumerate() {
        for (abs, line) in &m.uses {
            let b = resolve(mods, abs, 0);
            if a != b {
                edges.entry(a).or_default().insert(b);
                let mut written = abs.clone();
                if written.last().is_some_and(|l| l == "self") {
                    written.pop();
                }
                why.entry((a, b))
                    .or_insert((*line, format!("crate::{}", written.join("::"))));
            }
        }
    }
    let names: Vec<String> = mods.iter().map(name).collect();
    cycles(&edges, &names)
        .into_iter()
        .map(|(members, cycle)| {
            let members: Vec<&str> = members.iter().map(|&i| names[i].as_str()).collect();
            let key = format!("{}: {}", krate.name, members.join(", "));
            let path: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
            let mut text = format!("{key}\n  e.g. {}", path.join(" -> "));
            for pair in cycle.windows(2) {
                let (line, path) = &why[&(pair[0], pair[1])];
                text.push_str(&format!(
                    "\n    {}:{line} uses {path}",
                    shown(&mods[pair[0]].file)
                ));
            }
            (key, text)
        })
        .collect()
}

/// A file's path from the workspace root (`crates/dns/src/tcp.rs`).
fn shown(file: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    match (file.canonicalize(), root.canonicalize()) {
        (Ok(f), Ok(r)) => f.strip_prefix(&r).unwrap_or(&f).display().to_string(),
        _ => file.display().to_string(),
    }
}

/// The workspace's crates; `MODULE_CYCLES_CRATES=DIR` checks another checkout's instead.
fn workspace_crates() -> Vec<PathBuf> {
    let crates = std::env::var_os("MODULE_CYCLES_CRATES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .expect("the workspace's crates directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn no_module_imports_itself_back_in_any_crate() {
    let mut found = Vec::new();
    let (mut modules, mut crates) = (0, 0);
    for dir in workspace_crates() {
        for krate in load_crate(&dir) {
            crates += 1;
            modules += krate.modules.len();
            found.extend(crate_cycles(&krate));
        }
    }
    assert!(
        modules > 50,
        "the check found only {modules} modules: is it reading the workspace?"
    );
    println!(
        "{modules} modules checked in {crates} crate targets; groups of modules that import \
         each other: {}",
        found.len()
    );
    let found: Vec<&str> = found.iter().map(|(_, text)| text.as_str()).collect();
    assert!(
        found.is_empty(),
        "modules that import each other (A -> B: A uses an item defined in B):\n{}",
        found.join("\n")
    );
}

/// The checker itself: a known cycle is found, a facade and test modules are not cycles.
#[test]
fn the_checker_finds_a_cycle_and_ignores_facades_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"probe\"\n",
    )
    .unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "//! crate::c::Z in a comment\nmod a;\nmod b;\nmod c;\npub use a::A;\npub use b::{B, inner::I};\n",
    )
    .unwrap();
    // a uses b through the root's re-export; b uses c; c uses a: a -> b::inner -> c -> a.
    std::fs::write(src.join("a.rs"), "use crate::I;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub mod inner;\npub struct B;\n").unwrap();
    std::fs::write(
        src.join("b/inner.rs"),
        "pub struct I(crate::c::C);\n#[cfg(test)]\nmod tests { use super::*; use crate::A; }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub struct C;\nfn f() -> &'static str { let _ = 'x'; \"crate::b::B\" }\nimpl C { fn g(_: crate::A) {} }\n",
    )
    .unwrap();
    let krates = load_crate(dir.path());
    let found = crate_cycles(&krates[0]);
    assert_eq!(found.len(), 1, "{found:?}");
    let (key, text) = &found[0];
    assert_eq!(key, "probe (src/lib.rs): a, b::inner, c");
    assert!(text.contains("e.g. a -> b::inner -> c -> a"), "{text}");
    assert!(text.contains("c.rs:3 uses crate::A"), "{text}");

    // Without c's use of A, nothing: the root's re-exports and inner's tests are no edges.
    std::fs::write(src.join("c.rs"), "pub struct C;\n").unwrap();
    let krates = load_crate(dir.path());
    assert_eq!(crate_cycles(&krates[0]), Vec::new());
}
