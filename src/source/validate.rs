//! Source rules (SPEC §6): what a branch must not hold, and a spec.yaml
//! that must parse and pass its type's schema. Each finding names the file
//! and the rule.

use super::doc::{SpecDoc, SPEC_PATH};
use crate::types::Registry;
use regex::bytes::Regex;
use serde::Serialize;
use std::sync::LazyLock;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub file: String,
    pub rule: &'static str,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.file, self.message, self.rule)
    }
}

/// One file of a tree: its path and its content, or why it could not be read.
pub struct TreeFile {
    pub path: String,
    pub content: Result<Vec<u8>, String>,
}

const RUNTIME_EXT: &[&str] = &[
    "db",
    "sqlite",
    "sqlite3",
    "db-wal",
    "db-shm",
    "db-journal",
    "log",
    "pid",
];
const GENERATED_DIRS: &[&str] = &[
    "target",
    "dist",
    "build",
    "node_modules",
    "__pycache__",
    ".next",
    ".venv",
    "venv",
];
const GENERATED_EXT: &[&str] = &["pyc", "o", "class", "so", "dylib", "dll", "exe"];
const SECRET_NAMES: &[&str] = &[
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    ".netrc",
    ".pgpass",
    "credentials",
];
const SECRET_EXT: &[&str] = &["pem", "key", "p12", "pfx", "jks", "keystore"];
const ENV_TEMPLATES: &[&str] = &[".env.example", ".env.sample", ".env.template"];
/// Files larger than this are not scanned for secrets.
const SCAN_LIMIT: usize = 1 << 20;

static SECRET_CONTENT: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----", "a private key"),
        (r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", "an AWS access key id"),
        (
            r"(?i)aws_secret_access_key\s*[=:]",
            "an AWS secret access key",
        ),
        (r"\bgh[pousr]_[A-Za-z0-9]{36}\b", "a GitHub token"),
        (r"\bxox[baprs]-[A-Za-z0-9-]{10,}", "a Slack token"),
    ]
    .into_iter()
    .map(|(re, what)| (Regex::new(re).expect("valid secret pattern"), what))
    .collect()
});

fn ext(name: &str) -> Option<&str> {
    name.rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty())
}

/// Rules that look at a path alone.
fn path_finding(path: &str) -> Option<Finding> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let dirs: Vec<&str> = path.split('/').collect();
    let dirs = &dirs[..dirs.len() - 1];
    let e = ext(name).map(str::to_ascii_lowercase);
    let e = e.as_deref();
    let f = |rule, message: String| {
        Some(Finding {
            file: path.to_string(),
            rule,
            message,
        })
    };
    if e.is_some_and(|e| RUNTIME_EXT.contains(&e)) || dirs.contains(&"logs") {
        return f(
            "runtime-data",
            "runtime data (databases, logs) does not belong in source".into(),
        );
    }
    if let Some(d) = dirs.iter().find(|d| GENERATED_DIRS.contains(d)) {
        return f(
            "generated-output",
            format!("generated output ({d}/) does not belong in source"),
        );
    }
    if e.is_some_and(|e| GENERATED_EXT.contains(&e)) {
        return f(
            "generated-output",
            "compiled output does not belong in source".into(),
        );
    }
    let env_file = name == ".env" || (name.starts_with(".env.") && !ENV_TEMPLATES.contains(&name));
    if env_file || SECRET_NAMES.contains(&name) || e.is_some_and(|e| SECRET_EXT.contains(&e)) {
        return f(
            "secret-material",
            "files of secrets (keys, .env, credentials) must not be committed".into(),
        );
    }
    None
}

/// Checks every file of a tree against the source rules.
pub fn check_files(files: &[TreeFile]) -> Vec<Finding> {
    let mut out = Vec::new();
    for file in files {
        if let Some(finding) = path_finding(&file.path) {
            out.push(finding);
            continue;
        }
        match &file.content {
            Err(e) => out.push(Finding {
                file: file.path.clone(),
                rule: "unreadable-object",
                message: format!("the object cannot be read: {e}"),
            }),
            Ok(bytes) if bytes.len() <= SCAN_LIMIT => {
                if let Some((_, what)) = SECRET_CONTENT.iter().find(|(re, _)| re.is_match(bytes)) {
                    out.push(Finding {
                        file: file.path.clone(),
                        rule: "secret-material",
                        message: format!("the file appears to contain {what}"),
                    });
                }
            }
            Ok(_) => {}
        }
    }
    out
}

/// Parses and checks spec.yaml. `expect` is the element's (type, slug),
/// which a push may not change.
pub fn check_spec_doc(
    text: Option<&[u8]>,
    types: &Registry,
    expect: Option<(&str, &str)>,
) -> (Option<SpecDoc>, Vec<Finding>) {
    let finding = |message: String| Finding {
        file: SPEC_PATH.into(),
        rule: "spec-yaml",
        message,
    };
    let Some(bytes) = text else {
        return (None, vec![finding("the file is missing".into())]);
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return (None, vec![finding("the file is not UTF-8".into())]);
    };
    let doc = match SpecDoc::parse(text) {
        Ok(d) => d,
        Err(e) => return (None, vec![finding(e.message)]),
    };
    let mut out = Vec::new();
    if let Some((ty, slug)) = expect {
        if doc.element_type != ty {
            out.push(finding(format!(
                "element_type is {ty} and cannot change to {}",
                doc.element_type
            )));
        }
        if doc.slug != slug {
            out.push(finding(format!(
                "slug is {slug} and cannot change to {}",
                doc.slug
            )));
        }
    }
    if doc.name.trim().is_empty() {
        out.push(finding("name must not be empty".into()));
    }
    match types.get(&doc.element_type) {
        Err(e) => out.push(finding(e.message)),
        Ok(t) => {
            if let Err(e) = t.check_spec(doc.spec.clone()) {
                if e.details.is_empty() {
                    out.push(finding(e.message));
                }
                out.extend(e.details.into_iter().map(finding));
            }
        }
    }
    (Some(doc), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8]) -> TreeFile {
        TreeFile {
            path: path.into(),
            content: Ok(content.to_vec()),
        }
    }

    #[test]
    fn rules_name_file_and_rule() {
        let files = vec![
            file("README.md", b"hello"),
            file("data/app.sqlite", b""),
            file("logs/x.txt", b""),
            file("web/node_modules/a.js", b""),
            file("target/debug/x", b""),
            file(".env", b"A=1"),
            file(".env.example", b"A="),
            file("keys/server.pem", b""),
            file("notes.txt", b"-----BEGIN OPENSSH PRIVATE KEY-----"),
            file("cfg.ini", b"key = AKIAABCDEFGHIJKLMNOP"),
            TreeFile {
                path: "broken".into(),
                content: Err("missing object".into()),
            },
        ];
        let got: Vec<_> = check_files(&files)
            .into_iter()
            .map(|f| (f.file, f.rule))
            .collect();
        assert_eq!(
            got,
            [
                ("data/app.sqlite".to_string(), "runtime-data"),
                ("logs/x.txt".into(), "runtime-data"),
                ("web/node_modules/a.js".into(), "generated-output"),
                ("target/debug/x".into(), "generated-output"),
                (".env".into(), "secret-material"),
                ("keys/server.pem".into(), "secret-material"),
                ("notes.txt".into(), "secret-material"),
                ("cfg.ini".into(), "secret-material"),
                ("broken".into(), "unreadable-object"),
            ]
        );
    }

    #[test]
    fn spec_doc_checks() {
        let types = Registry::load().unwrap();
        let good = b"element_type: websocket\nslug: chat\nname: Chat\nspec:\n  path: /x\n";
        let (doc, f) = check_spec_doc(Some(good), &types, Some(("websocket", "chat")));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(doc.unwrap().spec["path"], "/x");
        let (_, f) = check_spec_doc(Some(good), &types, Some(("websocket", "other")));
        assert_eq!(f.len(), 1);
        let bad = b"element_type: websocket\nslug: chat\nname: Chat\nspec:\n  path: 5\n";
        assert_eq!(
            check_spec_doc(Some(bad), &types, None).1[0].rule,
            "spec-yaml"
        );
        assert_eq!(check_spec_doc(None, &types, None).1.len(), 1);
        assert_eq!(check_spec_doc(Some(b"spec: ["), &types, None).1.len(), 1);
    }
}
