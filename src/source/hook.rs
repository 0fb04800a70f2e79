//! The pre-receive hook. `git receive-pack` runs it (through the script
//! in `<data>/hooks`, which execs `elementd hook pre-receive`) with the
//! pushed objects in quarantine; a non-zero exit rejects the whole push,
//! and what it prints reaches the `git` client as `remote:` lines.

use super::doc::SPEC_PATH;
use super::scan::scan_tree;
use crate::config::DEFAULT_MAX_PUSH_BYTES;
use crate::types::Registry;
use git2::{Oid, Repository};
use std::io::BufRead;

/// The script git runs; it only hands over to the elementd binary.
pub const SCRIPT: &str = "#!/bin/sh\nexec \"$ELEMENTD_HOOK_BIN\" hook pre-receive\n";

/// Ref updates one push may carry: only draft is accepted, so more than
/// a few is never a push that could succeed.
const MAX_REF_UPDATES: usize = 16;

/// Checks each pushed ref; returns the process exit code.
pub fn pre_receive() -> i32 {
    let input: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(|l| l.ok())
        .take(MAX_REF_UPDATES + 1)
        .collect();
    if input.len() > MAX_REF_UPDATES {
        eprintln!(
            "elementd: push rejected: more than {MAX_REF_UPDATES} refs in one push; \
             only draft accepts pushes"
        );
        return 1;
    }
    match check_push(&input) {
        Ok(()) => 0,
        Err(reasons) => {
            for r in reasons {
                eprintln!("elementd: {r}");
            }
            1
        }
    }
}

/// What the hook knows of the element being pushed to.
struct Push {
    ty: String,
    slug: String,
    circle: String,
    max_file_bytes: u64,
    types: Registry,
    repo: Repository,
}

fn check_push(lines: &[String]) -> Result<(), Vec<String>> {
    let push = Push {
        ty: std::env::var("ELEMENTD_ELEMENT_TYPE").unwrap_or_default(),
        slug: std::env::var("ELEMENTD_ELEMENT_SLUG").unwrap_or_default(),
        circle: std::env::var("ELEMENTD_ELEMENT_CIRCLE").unwrap_or_default(),
        // The server passes its push cap: no single file may be larger.
        max_file_bytes: std::env::var("ELEMENTD_MAX_PUSH_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_PUSH_BYTES),
        types: Registry::load().map_err(|e| vec![format!("internal error: {e}")])?,
        // open_from_env honours the quarantine object directories git sets.
        repo: Repository::open_from_env().map_err(|e| vec![format!("internal error: {e}")])?,
    };
    let reasons: Vec<String> = lines.iter().flat_map(|l| push.check_line(l)).collect();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

impl Push {
    /// One ref update (`old new refname`): only draft moves by push.
    fn check_line(&self, line: &str) -> Vec<String> {
        let mut parts = line.split_whitespace();
        let (Some(old), Some(new), Some(refname)) = (parts.next(), parts.next(), parts.next())
        else {
            return vec![];
        };
        let (Ok(old), Ok(new)) = (Oid::from_str(old), Oid::from_str(new)) else {
            return vec![format!("{refname}: malformed update")];
        };
        let (circle, slug) = (&self.circle, &self.slug);
        match refname {
            "refs/heads/draft" => self.check_draft(old, new),
            "refs/heads/demo" | "refs/heads/live" => vec![format!(
                "push to {refname} rejected: demo and live move only by promotion \
                 (POST /api/{circle}/{slug}/ops/source/promote)"
            )],
            other => vec![format!(
                "push to {other} rejected: only the draft branch accepts pushes"
            )],
        }
    }

    /// A draft update: a fast-forward whose tree passes the source rules.
    fn check_draft(&self, old: Oid, new: Oid) -> Vec<String> {
        let repo = &self.repo;
        if new.is_zero() {
            return vec!["deleting draft is not allowed".into()];
        }
        if !old.is_zero() && old != new && !repo.graph_descendant_of(new, old).unwrap_or(false) {
            return vec![
                "draft cannot be rewritten: force pushes are rejected; pull, merge and push again"
                    .into(),
            ];
        }
        let tree = match repo.find_commit(new).and_then(|c| c.tree()) {
            Ok(t) => t,
            Err(e) => return vec![format!("the pushed commit cannot be read: {e}")],
        };
        let checked = scan_tree(repo, &tree, self.max_file_bytes)
            .check(&self.types, Some((&self.ty, &self.slug)));
        let mut findings = checked.findings;
        let now_sensitive = checked.doc.as_ref().map(|d| is_sensitive(&d.spec));
        if !old.is_zero() && now_sensitive == Some(false) && was_sensitive(repo, old) {
            findings.push(super::validate::Finding {
                file: SPEC_PATH.into(),
                rule: "sensitive",
                message: "turning sensitive off is not done by push: an admin does it \
                          with ops/update (the sealed value is dropped, never shown)"
                    .into(),
            });
        }
        if findings.is_empty() {
            return vec![];
        }
        let mut out = vec![format!(
            "push to draft rejected: {} finding(s)",
            findings.len()
        )];
        out.extend(findings.iter().map(|f| format!("  {f}")));
        out
    }
}

fn is_sensitive(spec: &serde_json::Value) -> bool {
    spec.get("sensitive").and_then(serde_json::Value::as_bool) == Some(true)
}

/// Whether the spec.yaml of commit `at` marks its value sensitive (read
/// only if it is of a sane size: draft's spec.yaml passed the same rules).
fn was_sensitive(repo: &Repository, at: Oid) -> bool {
    let blob = repo
        .find_commit(at)
        .and_then(|c| c.tree())
        .and_then(|t| t.get_path(std::path::Path::new(SPEC_PATH)))
        .map(|e| e.id());
    let Ok(id) = blob else { return false };
    let small = repo
        .odb()
        .and_then(|o| o.read_header(id))
        .is_ok_and(|(size, _)| size <= 1 << 20);
    if !small {
        return false;
    }
    repo.find_blob(id)
        .ok()
        .and_then(|b| super::doc::SpecDoc::parse(&String::from_utf8_lossy(b.content())).ok())
        .is_some_and(|d| is_sensitive(&d.spec))
}
