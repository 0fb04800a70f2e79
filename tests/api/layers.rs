//! The map README's Layout draws, held against the code: every `crate::`
//! path in src/ points down the floors, only server.rs names cluster/,
//! and nothing below api/ knows HTTP or the WebSocket wire library but
//! the few edges [`WIRE_EDGES`] names.

use std::path::{Path, PathBuf};

/// Each top-level module's floor; an import must name a lower floor (or
/// its own module).
const FLOORS: &[(&str, u8)] = &[
    ("named", 0),
    ("clock", 0),
    ("ids", 0),
    ("json", 0),
    ("sync", 0),
    ("vars", 0),
    ("var_types", 0),
    ("webhook", 0),
    ("config", 0),
    ("error_codes", 1),
    ("event_kind", 1),
    ("error", 2),
    ("model", 3),
    ("secrets", 3),
    ("types", 4),
    ("store", 4),
    ("modifiers", 5),
    ("source", 5),
    ("events", 5),
    ("limits", 6),
    ("runtime", 7),
    ("cluster", 8),
    ("service", 9),
    ("api", 10),
    ("demo", 10),
    ("server", 11),
];

/// Crates that speak HTTP or the WebSocket wire; only these modules may
/// name them.
const WIRE_CRATES: &[&str] = &["axum::", "hyper::", "tungstenite::", "tokio_tungstenite::"];
const WIRE_MODULES: &[&str] = &["api", "server"];
/// The files below api/ that name the wire libraries: the driven link's
/// dialer and the outbound HTTP client, and the runtime's frames, whose
/// text is tungstenite's checked UTF-8 bytes (a broadcast hands every
/// socket the same bytes without checking them again for each).
const WIRE_EDGES: &[&str] = &["runtime/dial.rs", "runtime/fetch.rs", "runtime/frame.rs"];

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

/// Every `.rs` file under `dir`.
pub(crate) fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without its unit tests (they may reach anywhere).
fn code_of(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// The top-level module a path under src/ belongs to (`src/api/ops/x.rs`
/// is `api`); None for the crate roots.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Every `crate::name` the code names (in `use` lines and inline paths).
fn named_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `elementd_crate::` or `some_crate::` is not this crate.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

fn violations(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root.join("src")).unwrap().to_path_buf();
        let Some(module) = module_of(&rel) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let code = code_of(&text);
        let Some(own) = floor(&module) else {
            bad.push(format!(
                "{}: module '{module}' has no floor in the map",
                rel.display()
            ));
            continue;
        };
        for target in named_modules(code) {
            if target == module {
                continue;
            }
            match floor(&target) {
                None => bad.push(format!("{}: names crate::{target}, not on the map", rel.display())),
                Some(f) if f >= own => bad.push(format!(
                    "{}: {module} (floor {own}) names crate::{target} (floor {f}), which is not below it",
                    rel.display()
                )),
                Some(_) if target == "cluster" && module != "server" => bad.push(format!(
                    "{}: only server.rs names cluster/",
                    rel.display()
                )),
                Some(_) => {}
            }
        }
        let edge = WIRE_EDGES.iter().any(|e| rel == Path::new(e));
        if !WIRE_MODULES.contains(&module.as_str()) && !edge {
            for krate in WIRE_CRATES {
                let named = code.match_indices(krate).any(|(i, _)| {
                    code[..i]
                        .chars()
                        .last()
                        .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                });
                if named {
                    bad.push(format!(
                        "{}: {module} is below api/ and names {krate}",
                        rel.display()
                    ));
                }
            }
        }
    }
    bad
}

#[test]
fn every_import_points_down_the_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bad = violations(root);
    assert!(bad.is_empty(), "the code left the map:\n{}", bad.join("\n"));
}

#[test]
fn the_check_sees_an_arrow_back_up() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("store")).unwrap();
    std::fs::write(src.join("store/mod.rs"), "use crate::service::App;\n").unwrap();
    std::fs::write(src.join("model.rs"), "fn f() { axum::serve(); }\n").unwrap();
    std::fs::write(
        src.join("events.rs"),
        "use crate::model::Event;\n#[cfg(test)]\nmod tests { use crate::api::x; }\n",
    )
    .unwrap();
    let bad = violations(dir.path());
    assert_eq!(bad.len(), 2, "{bad:#?}");
    assert!(
        bad[0].contains("model.rs") && bad[0].contains("axum::"),
        "{bad:#?}"
    );
    assert!(
        bad[1].contains("store/mod.rs") && bad[1].contains("crate::service"),
        "{bad:#?}"
    );
}
