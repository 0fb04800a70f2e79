//! Checking a branch's tree at bounded cost, for the pre-receive hook,
//! `source/validate` and bundle import alike. Files are checked one at a
//! time; each file's size comes from its object header before any content
//! is read, so a blob that compresses a gigabyte into a small pack is
//! refused unread. Trees may reuse subtrees, so a small pack can name
//! billions of paths: the walk stops at a number of entries.

use super::doc::{SpecDoc, README_PATH, SPEC_PATH};
use super::validate::{check_spec_doc, content_finding, path_finding, Finding};
use crate::types::Registry;
use git2::{ObjectType, Oid, Repository, Tree};
use std::collections::HashMap;

/// README.md and `.triform/spec.yaml` are read by the server (versions,
/// the readme op): at most what a REST body may carry.
pub const MAX_SERVED_FILE_BYTES: u64 = crate::config::BODY_LIMIT as u64;
/// Files and folders one walk visits.
pub const MAX_TREE_ENTRIES: usize = 100_000;
/// A branch's distinct files may add up to this many times the push cap:
/// a pack of a few MiB can hold thousands of large, compressible files,
/// and each one read costs its full size.
pub const TREE_BYTES_PER_PUSH_CAP: u64 = 10;
/// Longest path, in bytes (as PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// Findings listed; the rest are counted.
const MAX_FINDINGS: usize = 100;

/// `.triform/spec.yaml` as the walk found it.
enum SpecFile {
    Missing,
    /// Too large or unreadable: already a finding.
    Refused,
    Read(Vec<u8>),
}

/// What one walk of a tree found.
pub struct TreeScan {
    pub files: usize,
    findings: Vec<Finding>,
    spec: SpecFile,
    readme: Option<Vec<u8>>,
    /// Bytes of content still allowed to be read.
    budget: u64,
}

/// A branch checked against every rule a push must pass.
pub struct BranchCheck {
    pub files: usize,
    pub findings: Vec<Finding>,
    /// The parsed spec.yaml, when it parses.
    pub doc: Option<SpecDoc>,
    /// README.md's content (at most [`MAX_SERVED_FILE_BYTES`]).
    pub readme: Option<Vec<u8>>,
}

fn finding(file: &str, rule: &'static str, message: String) -> Finding {
    Finding {
        file: file.to_string(),
        rule,
        message,
    }
}

/// Walks `tree` depth first, one level of trees held at a time. Single
/// files over `max_file_bytes` (the push cap) are refused unread, and
/// once the files read add up to [`TREE_BYTES_PER_PUSH_CAP`] times that,
/// the rest are refused unread too.
pub fn scan_tree(repo: &Repository, tree: &Tree, max_file_bytes: u64) -> TreeScan {
    let mut scan = TreeScan {
        files: 0,
        findings: Vec::new(),
        spec: SpecFile::Missing,
        readme: None,
        budget: max_file_bytes.saturating_mul(TREE_BYTES_PER_PUSH_CAP),
    };
    let odb = match repo.odb() {
        Ok(o) => o,
        Err(e) => {
            let f = finding(
                "/",
                "unreadable-object",
                format!("cannot open objects: {e}"),
            );
            scan.findings.push(f);
            return scan;
        }
    };
    // Content findings by blob: a file repeated under many names is read once.
    let mut read: HashMap<Oid, Option<String>> = HashMap::new();
    let mut stack: Vec<(String, Tree, usize)> = vec![(String::new(), tree.clone(), 0)];
    let mut entries = 0usize;
    while let Some((prefix, tree, next)) = stack.last_mut() {
        let Some((path, id, kind)) = tree.get(*next).map(|entry| {
            let name = String::from_utf8_lossy(entry.name_bytes());
            (format!("{prefix}{name}"), entry.id(), entry.kind())
        }) else {
            stack.pop();
            continue;
        };
        *next += 1;
        entries += 1;
        if entries > MAX_TREE_ENTRIES {
            scan.findings.push(finding(
                "/",
                "tree-limit",
                format!("the tree has more than {MAX_TREE_ENTRIES} files and folders"),
            ));
            break;
        }
        if path.len() > MAX_PATH_BYTES {
            let shown = crate::error::shown(&path);
            scan.findings.push(finding(
                &shown,
                "path-limit",
                format!("the path is longer than {MAX_PATH_BYTES} bytes"),
            ));
            continue;
        }
        match kind {
            Some(ObjectType::Tree) => match repo.find_tree(id) {
                Ok(t) => stack.push((format!("{path}/"), t, 0)),
                Err(e) => scan.findings.push(finding(
                    &path,
                    "unreadable-object",
                    format!("the folder cannot be read: {e}"),
                )),
            },
            Some(ObjectType::Blob) => {
                scan.files += 1;
                check_blob(repo, &odb, &path, id, max_file_bytes, &mut read, &mut scan);
            }
            // A submodule's commit: nothing here to read.
            _ => {}
        }
    }
    if scan.findings.len() > MAX_FINDINGS {
        let more = scan.findings.len() - MAX_FINDINGS;
        scan.findings.truncate(MAX_FINDINGS);
        let f = finding("…", "more-findings", format!("{more} more finding(s)"));
        scan.findings.push(f);
    }
    scan
}

/// A file over the push limit, or a README.md or spec.yaml over 1 MiB.
fn size_finding(path: &str, size: u64, served: bool, max_file_bytes: u64) -> Option<Finding> {
    if size > max_file_bytes {
        return Some(finding(
            path,
            "file-too-large",
            format!(
                "the file is {size} bytes; no file may be larger than {max_file_bytes} \
                 bytes (the push limit)"
            ),
        ));
    }
    (served && size > MAX_SERVED_FILE_BYTES).then(|| {
        finding(
            path,
            "file-too-large",
            format!(
                "the file is {size} bytes; {README_PATH} and {SPEC_PATH} may be at most \
                 {MAX_SERVED_FILE_BYTES} bytes (1 MiB, as over the REST API)"
            ),
        )
    })
}

fn check_blob(
    repo: &Repository,
    odb: &git2::Odb,
    path: &str,
    id: Oid,
    max_file_bytes: u64,
    read: &mut HashMap<Oid, Option<String>>,
    scan: &mut TreeScan,
) {
    let served = path == SPEC_PATH || path == README_PATH;
    if path == SPEC_PATH {
        scan.spec = SpecFile::Refused;
    }
    if let Some(f) = path_finding(path) {
        scan.findings.push(f);
        return;
    }
    let unreadable = |e: git2::Error| {
        finding(
            path,
            "unreadable-object",
            format!("the object cannot be read: {}", e.message()),
        )
    };
    let size = match odb.read_header(id) {
        Ok((size, _)) => size as u64,
        Err(e) => return scan.findings.push(unreadable(e)),
    };
    if let Some(f) = size_finding(path, size, served, max_file_bytes) {
        return scan.findings.push(f);
    }
    if !served {
        if let Some(known) = read.get(&id) {
            if let Some(message) = known {
                let f = finding(path, "secret-material", message.clone());
                scan.findings.push(f);
            }
            return;
        }
    }
    if size > scan.budget {
        let budget = max_file_bytes.saturating_mul(TREE_BYTES_PER_PUSH_CAP);
        return scan.findings.push(finding(
            path,
            "tree-too-large",
            format!(
                "not read: the branch's files add up to more than {budget} bytes \
                 ({TREE_BYTES_PER_PUSH_CAP} times the push limit)"
            ),
        ));
    }
    scan.budget -= size;
    // At most one blob (no larger than the push cap) in memory at a time.
    let blob = match repo.find_blob(id) {
        Ok(b) => b,
        Err(e) => return scan.findings.push(unreadable(e)),
    };
    let found = content_finding(path, blob.content());
    read.insert(id, found.as_ref().map(|f| f.message.clone()));
    if let Some(f) = found {
        scan.findings.push(f);
    }
    if path == SPEC_PATH {
        scan.spec = SpecFile::Read(blob.content().to_vec());
    } else if path == README_PATH {
        scan.readme = Some(blob.content().to_vec());
    }
}

impl TreeScan {
    /// Adds the spec.yaml rules: it parses, passes its type's schema and,
    /// with `expect`, keeps the element's (type, slug).
    pub fn check(self, types: &Registry, expect: Option<(&str, &str)>) -> BranchCheck {
        let (doc, mut findings) = match &self.spec {
            SpecFile::Refused => (None, Vec::new()),
            SpecFile::Missing => check_spec_doc(None, types, expect),
            SpecFile::Read(bytes) => check_spec_doc(Some(bytes), types, expect),
        };
        findings.extend(self.findings);
        BranchCheck {
            files: self.files,
            findings,
            doc,
            readme: self.readme,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::FileMode;

    fn repo() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        (dir, repo)
    }

    fn tree_of(repo: &Repository, entries: &[(&str, Oid, FileMode)]) -> Oid {
        let mut b = repo.treebuilder(None).unwrap();
        for (name, id, mode) in entries {
            b.insert(name, *id, (*mode).into()).unwrap();
        }
        b.write().unwrap()
    }

    fn rules(scan: &TreeScan) -> Vec<(String, &'static str)> {
        scan.findings
            .iter()
            .map(|f| (f.file.clone(), f.rule))
            .collect()
    }

    #[test]
    fn a_tree_bomb_stops_at_the_entry_cap() {
        let (_d, repo) = repo();
        let blob = repo.blob(b"x").unwrap();
        let mut t = tree_of(&repo, &[("f", blob, FileMode::Blob)]);
        // 2^24 paths from 25 small trees.
        for _ in 0..24 {
            t = tree_of(&repo, &[("a", t, FileMode::Tree), ("b", t, FileMode::Tree)]);
        }
        let scan = scan_tree(&repo, &repo.find_tree(t).unwrap(), 1 << 20);
        assert_eq!(rules(&scan), [("/".to_string(), "tree-limit")]);
        assert!(scan.files < MAX_TREE_ENTRIES);
    }

    #[test]
    fn sizes_come_before_content() {
        let (_d, repo) = repo();
        let big = repo.blob(&vec![b'a'; 5000]).unwrap();
        let readme = repo.blob(&vec![b'r'; (1 << 20) + 1]).unwrap();
        let key = repo.blob(b"-----BEGIN PRIVATE KEY-----").unwrap();
        let spec = repo.blob(b"element_type: websocket\n").unwrap();
        let triform = tree_of(&repo, &[("spec.yaml", spec, FileMode::Blob)]);
        let t = tree_of(
            &repo,
            &[
                (".triform", triform, FileMode::Tree),
                ("README.md", readme, FileMode::Blob),
                ("asset.bin", big, FileMode::Blob),
                ("a.txt", key, FileMode::Blob),
                ("b.txt", key, FileMode::Blob),
            ],
        );
        let scan = scan_tree(&repo, &repo.find_tree(t).unwrap(), (1 << 20) + 10);
        assert_eq!(scan.files, 5);
        assert_eq!(
            rules(&scan),
            [
                ("README.md".to_string(), "file-too-large"),
                ("a.txt".into(), "secret-material"),
                ("b.txt".into(), "secret-material"),
            ]
        );
        assert!(scan.findings[0].message.contains("at most 1048576 bytes"));
        assert!(matches!(scan.spec, SpecFile::Read(_)));
        assert!(scan.readme.is_none(), "an oversized README is not read");
        let scan = scan_tree(&repo, &repo.find_tree(t).unwrap(), 4000);
        let too_large: Vec<_> = rules(&scan)
            .into_iter()
            .filter(|(_, r)| *r == "file-too-large")
            .map(|(f, _)| f)
            .collect();
        assert_eq!(too_large, ["README.md", "asset.bin"]);
    }

    #[test]
    fn files_add_up_to_a_budget() {
        let (_d, repo) = repo();
        let entries: Vec<(String, Oid)> = (0..15u8)
            .map(|i| (format!("f{i:02}"), repo.blob(&vec![i; 900]).unwrap()))
            .collect();
        let same = entries[0].1;
        let mut all: Vec<(&str, Oid, FileMode)> = entries
            .iter()
            .map(|(n, id)| (n.as_str(), *id, FileMode::Blob))
            .collect();
        all.push(("same", same, FileMode::Blob));
        let t = tree_of(&repo, &all);
        // 1000 bytes a file, 10,000 in all: eleven distinct files fit.
        let scan = scan_tree(&repo, &repo.find_tree(t).unwrap(), 1000);
        let over: Vec<_> = rules(&scan)
            .into_iter()
            .filter(|(_, r)| *r == "tree-too-large")
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            over,
            ["f11", "f12", "f13", "f14"],
            "a repeated file counts once"
        );
    }
}
