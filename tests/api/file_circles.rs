//! No import circles between the files of src/: `layers.rs` holds the
//! modules to their floors, this holds the files inside a module apart,
//! so a loop such as `hub.rs` → `peers.rs` → `shared_history.rs` →
//! `hub.rs` cannot come back. A name a `mod.rs` re-exports counts as an
//! import of the file that defines it.

use crate::layers::sources;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

/// `runtime/hub/history.rs` is `runtime::hub::history`, `runtime/mod.rs`
/// is `runtime`; the crate roots are not modules here.
fn module_path(rel: &Path) -> Option<ModPath> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    match last.strip_suffix(".rs")? {
        "lib" | "main" if parts.is_empty() => return None,
        "mod" => {}
        stem => parts.push(stem.to_string()),
    }
    Some(parts)
}

/// The file's code without its unit tests (they may reach anywhere) and
/// without comments (a doc link names a path but imports nothing).
fn code_of(text: &str) -> String {
    let code = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines()
        .map(|l| l.split_once("//").map_or(l, |(c, _)| c))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits `s` at the commas outside braces.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `a::{b, c::{d as e}}` as whole paths, each with the name it brings:
/// (`a::b`, `b`), (`a::c::d`, `e`).
fn expand(prefix: &str, tree: &str, out: &mut Vec<(String, String)>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let close = tree.rfind('}').unwrap_or(tree.len());
        let head = &tree[..open];
        for part in split_top(&tree[open + 1..close]) {
            expand(&format!("{prefix}{head}"), part, out);
        }
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim())),
        None => (tree, None),
    };
    let full = match path {
        "self" => prefix.trim_end_matches("::").to_string(),
        p => format!("{prefix}{p}"),
    };
    let name = alias
        .map(str::to_string)
        .unwrap_or_else(|| full.rsplit("::").next().unwrap_or("").to_string());
    out.push((full, name));
}

/// The `use` declarations of `code`: (whole path, name brought, `pub`).
fn uses(code: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let line_start = rest[..i].rfind('\n').map_or(0, |n| n + 1);
        let lead = rest[line_start..i].trim();
        let after = &rest[i + 4..];
        let decl =
            lead.is_empty() || lead == "pub" || (lead.starts_with("pub(") && lead.ends_with(')'));
        let starts_word = rest[..i].chars().last().is_none_or(char::is_whitespace);
        let Some(end) = after.find(';') else { break };
        if decl && starts_word {
            let flat = after[..end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let mut paths = Vec::new();
            expand("", &flat, &mut paths);
            out.extend(paths.into_iter().map(|(p, n)| (p, n, !lead.is_empty())));
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    out
}

/// `crate::…` and `super::…` paths written in the code itself.
fn inline_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for root in ["crate::", "super::"] {
        for (i, _) in code.match_indices(root) {
            let before = code[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.trim_end_matches(':').to_string());
        }
    }
    out
}

/// The path from the crate root that `path`, written in module `here`,
/// names; None for another crate's.
fn absolute(here: &ModPath, path: &str, modules: &BTreeMap<ModPath, PathBuf>) -> Option<ModPath> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (mut base, mut i) = match segs.first()? {
        &"crate" => (Vec::new(), 1),
        &"self" => (here.clone(), 1),
        &"super" => (here.clone(), 0),
        first => {
            let mut child = here.clone();
            child.push(first.to_string());
            if !modules.contains_key(&child) {
                return None;
            }
            (here.clone(), 0)
        }
    };
    while segs.get(i) == Some(&"super") {
        base.pop();
        i += 1;
    }
    base.extend(segs[i..].iter().map(|s| s.to_string()));
    Some(base)
}

struct Tree {
    /// Module path → its file.
    modules: BTreeMap<ModPath, PathBuf>,
    /// Per module, what its `pub use` lines bring: name → whole path.
    reexports: BTreeMap<ModPath, BTreeMap<String, ModPath>>,
}

impl Tree {
    /// The file that defines what `path` names: the longest module prefix,
    /// followed through the re-exports of that module.
    fn file_of(&self, path: &[String], depth: usize) -> Option<&PathBuf> {
        let n = (1..=path.len())
            .rev()
            .find(|n| self.modules.contains_key(&path[..*n]))?;
        let module = &path[..n];
        if let (Some(item), true) = (path.get(n), depth < 8) {
            if let Some(target) = self.reexports.get(module).and_then(|r| r.get(item)) {
                let mut next = target.clone();
                next.extend(path[n + 1..].iter().cloned());
                if next != path {
                    return self.file_of(&next, depth + 1);
                }
            }
        }
        self.modules.get(module)
    }
}

/// Each import circle between files, as its files.
fn circles(root: &Path) -> Vec<Vec<String>> {
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut tree = Tree {
        modules: BTreeMap::new(),
        reexports: BTreeMap::new(),
    };
    let mut code = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        if let Some(m) = module_path(rel) {
            tree.modules.insert(m.clone(), rel.to_path_buf());
            let text = std::fs::read_to_string(f).unwrap();
            code.insert(m, code_of(&text));
        }
    }
    for (m, c) in &code {
        for (path, name, public) in uses(c) {
            if let (true, Some(abs)) = (public, absolute(m, &path, &tree.modules)) {
                tree.reexports
                    .entry(m.clone())
                    .or_default()
                    .insert(name, abs);
            }
        }
    }
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (m, c) in &code {
        let from = tree.modules[m].clone();
        // A `pub use` passes a name on; whoever takes it imports its file.
        let written = uses(c).into_iter().filter(|u| !u.2).map(|u| u.0);
        for path in written.chain(inline_paths(c)) {
            let Some(abs) = absolute(m, &path, &tree.modules) else {
                continue;
            };
            let Some(to) = tree.file_of(&abs, 0) else {
                continue;
            };
            // A submodule may use what its parent declares it beside.
            let parent = tree.modules.get(&m[..m.len() - 1]);
            if *to != from && Some(to) != parent {
                edges.entry(from.clone()).or_default().insert(to.clone());
            }
        }
    }
    strongly_connected(&edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.iter().map(|p| p.display().to_string()).collect())
        .collect()
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct S<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, (usize, usize)>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a PathBuf) {
        let n = s.index.len();
        s.index.insert(v, (n, n));
        s.stack.push(v);
        s.on.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.index[v].1.min(s.index[w].1);
                s.index.get_mut(v).unwrap().1 = low;
            } else if s.on.contains(w) {
                let low = s.index[v].1.min(s.index[w].0);
                s.index.get_mut(v).unwrap().1 = low;
            }
        }
        if s.index[v].0 == s.index[v].1 {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            comp.sort();
            s.out.push(comp);
        }
    }
    let mut s = S {
        edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_two_files_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = circles(root);
    assert!(found.is_empty(), "import circles between files: {found:#?}");
}

#[test]
fn the_check_sees_a_circle_through_a_reexport() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("rt/hub")).unwrap();
    let write = |p: &str, s: &str| std::fs::write(src.join(p), s).unwrap();
    write("lib.rs", "pub mod rt;\n");
    write(
        "rt/mod.rs",
        "mod hub;\nmod peers;\nmod key;\npub use hub::Hub;\npub use key::{Key, Other as Renamed};\n",
    );
    // hub.rs → peers.rs by a use, peers.rs → hub.rs through mod.rs's
    // re-export: a circle. key.rs is named through a renamed re-export
    // and by an inline path, and imports nothing back: no circle.
    write("rt/hub.rs", "use super::peers::Peers;\npub struct Hub;\n");
    write(
        "rt/peers.rs",
        "use crate::rt::{Hub, Renamed};\nfn f() { crate::rt::key::g(); }\n",
    );
    write("rt/key.rs", "pub struct Key;\npub struct Other;\npub fn g() {}\n#[cfg(test)]\nmod tests { use crate::rt::peers::x; }\n");
    let found = circles(dir.path());
    assert_eq!(
        found,
        vec![vec!["rt/hub.rs".to_string(), "rt/peers.rs".to_string()]],
        "{found:#?}"
    );
}
