//! Source rules: what a branch must not hold, and a spec.yaml
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
/// Files up to twice this are scanned whole for key material; of larger
/// ones, the first and the last this many bytes (where keys pasted into a
/// file or appended to an archive end up).
pub const SCAN_WINDOW: usize = 1 << 20;

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

/// Rules that look at a path alone. Names match whatever their case
/// (`.ENV`, `Node_Modules/`, `ID_RSA`): case-insensitive file systems
/// treat them as the same file.
pub fn path_finding(path: &str) -> Option<Finding> {
    let lower = path.to_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    let dirs: Vec<&str> = lower.split('/').collect();
    let dirs = &dirs[..dirs.len() - 1];
    let e = ext(name);
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
    if let Some(i) = dirs.iter().position(|d| GENERATED_DIRS.contains(d)) {
        let d = path.split('/').nth(i).unwrap_or_default();
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

/// Rules that look at a file's content: key material and tokens.
pub fn content_finding(path: &str, bytes: &[u8]) -> Option<Finding> {
    let (head, tail) = if bytes.len() <= 2 * SCAN_WINDOW {
        (bytes, &[][..])
    } else {
        (&bytes[..SCAN_WINDOW], &bytes[bytes.len() - SCAN_WINDOW..])
    };
    let (_, what) = SECRET_CONTENT
        .iter()
        .find(|(re, _)| re.is_match(head) || re.is_match(tail))?;
    Some(Finding {
        file: path.to_string(),
        rule: "secret-material",
        message: format!("the file appears to contain {what}"),
    })
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
        Err(e) => {
            // The finding names the file already.
            let said = e.message.strip_prefix(SPEC_PATH).unwrap_or(&e.message);
            return (None, vec![finding(said.trim_start().to_string())]);
        }
    };
    let mut out = Vec::new();
    if let Err(e) = crate::secrets::refuse_sealed(&doc.spec) {
        out.push(finding(e.message));
    }
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
            if let Err(e) = t.check_writable(&doc.spec) {
                out.push(finding(e.message));
            }
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

    /// The findings for files given as (path, content).
    fn check(files: &[(&str, &[u8])]) -> Vec<(String, &'static str)> {
        files
            .iter()
            .filter_map(|(p, c)| path_finding(p).or_else(|| content_finding(p, c)))
            .map(|f| (f.file, f.rule))
            .collect()
    }

    #[test]
    fn rules_name_file_and_rule() {
        let got = check(&[
            ("README.md", b"hello"),
            ("data/app.sqlite", b""),
            ("logs/x.txt", b""),
            ("web/node_modules/a.js", b""),
            ("target/debug/x", b""),
            (".env", b"A=1"),
            (".env.example", b"A="),
            ("keys/server.pem", b""),
            ("notes.txt", b"-----BEGIN OPENSSH PRIVATE KEY-----"),
            ("cfg.ini", b"key = AKIAABCDEFGHIJKLMNOP"),
        ]);
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
            ]
        );
    }

    #[test]
    fn names_match_whatever_their_case() {
        let got = check(&[
            (".ENV", b""),
            (".Env.Local", b""),
            (".ENV.EXAMPLE", b""),
            ("Node_Modules/x.js", b""),
            ("ID_RSA", b""),
            ("Keys/Server.PEM", b""),
            ("Logs/today.txt", b""),
            ("App.DB", b""),
            ("Readme.MD", b""),
        ]);
        assert_eq!(
            got,
            [
                (".ENV".to_string(), "secret-material"),
                (".Env.Local".into(), "secret-material"),
                ("Node_Modules/x.js".into(), "generated-output"),
                ("ID_RSA".into(), "secret-material"),
                ("Keys/Server.PEM".into(), "secret-material"),
                ("Logs/today.txt".into(), "runtime-data"),
                ("App.DB".into(), "runtime-data"),
            ]
        );
    }

    #[test]
    fn large_files_are_scanned_at_both_ends() {
        let key = b"-----BEGIN RSA PRIVATE KEY-----";
        let mut big = vec![b'a'; 3 << 20];
        let near_end = big.len() - 100;
        big[near_end..near_end + key.len()].copy_from_slice(key);
        assert!(content_finding("blob.txt", &big).is_some(), "near the end");
        let mut big = vec![b'a'; 3 << 20];
        big[10..10 + key.len()].copy_from_slice(key);
        assert!(
            content_finding("blob.txt", &big).is_some(),
            "near the start"
        );
        assert!(content_finding("blob.txt", &vec![b'a'; 3 << 20]).is_none());
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
