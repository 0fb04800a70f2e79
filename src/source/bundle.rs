//! Git bundles (v2), made and read by the `git` command line: git2 has no
//! bundle support, and `git bundle` writes exactly what `git clone` reads.

use super::doc::SpecDoc;
use super::scan::scan_tree;
use super::Source;
use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::Env;
use crate::types::Registry;
use git2::Repository;
use std::path::{Path, PathBuf};
use tokio::process::Command;

async fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .output()
        .await
        .map_err(|e| Error::internal(format!("running git: {e}")))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(Error::bad_request(
            ErrorCode::GitFailed,
            format!(
                "git {}: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// A bundle may hold draft, demo, live and HEAD, nothing else.
fn only_branches(list_heads: &[u8]) -> Result<()> {
    let extra: Vec<String> = String::from_utf8_lossy(list_heads)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|r| {
            *r != "HEAD"
                && !Env::ALL
                    .iter()
                    .any(|b| *r == format!("refs/heads/{}", b.as_str()))
        })
        .map(crate::error::shown)
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    Err(Error::bad_request(
        ErrorCode::InvalidBundle,
        format!(
            "the bundle holds refs other than draft, demo and live: {}",
            extra.join(", ")
        ),
    ))
}

/// Draft must be there; demo and live start at draft when missing.
async fn all_three_branches(repo: &Path) -> Result<()> {
    let heads = git(
        repo,
        &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
    )
    .await?;
    let heads = String::from_utf8_lossy(&heads).to_string();
    if !heads.lines().any(|h| h == "draft") {
        return Err(Error::bad_request(
            ErrorCode::InvalidBundle,
            "the bundle has no draft branch",
        ));
    }
    for b in ["demo", "live"] {
        if !heads.lines().any(|h| h == b) {
            git(repo, &["branch", b, "draft"]).await?;
        }
    }
    Ok(())
}

/// A bundle unpacked into a scratch repository, ready to become an element.
pub struct Prepared {
    pub dir: tempfile::TempDir,
    pub doc: SpecDoc,
    pub readme: String,
}

impl Prepared {
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo.git")
    }
}

impl Source {
    /// The element's branches as a v2 bundle (HEAD included, so a clone
    /// of it checks out draft).
    pub async fn export_bundle(&self, id: &str) -> Result<Vec<u8>> {
        let repo = self.repo_path(id);
        if !repo.join("HEAD").exists() {
            return Err(Error::not_found(
                ErrorCode::RepositoryMissing,
                "the element's repository is missing; run source/repair",
            ));
        }
        let tmp = tempfile::tempdir().map_err(Error::internal)?;
        let file = tmp.path().join("element.bundle");
        let file_s = file.to_string_lossy().to_string();
        let mut args = vec!["bundle", "create", file_s.as_str(), "HEAD"];
        args.extend(Env::ALL.map(Env::as_str));
        git(&repo, &args)
            .await
            .map_err(|e| Error::internal(e.message))?;
        tokio::fs::read(&file).await.map_err(Error::internal)
    }

    /// Verifies a bundle and unpacks it into a scratch repository, holding
    /// it to the rules a push must pass (see [`check_branches`]); anything
    /// else is a 400 `INVALID_BUNDLE` that names every reason.
    pub async fn prepare_import(
        &self,
        bytes: &[u8],
        types: &Registry,
        max_file_bytes: u64,
    ) -> Result<Prepared> {
        let dir = tempfile::tempdir_in(&self.root).map_err(Error::internal)?;
        let bundle = dir.path().join("in.bundle");
        tokio::fs::write(&bundle, bytes)
            .await
            .map_err(Error::internal)?;
        let repo = dir.path().join("repo.git");
        let repo_s = repo.to_string_lossy().to_string();
        let bundle_s = bundle.to_string_lossy().to_string();
        git(
            dir.path(),
            &[
                "init",
                "--quiet",
                "--bare",
                "--initial-branch=draft",
                &repo_s,
            ],
        )
        .await?;
        // git names its scratch paths; they mean nothing to the client.
        let scratch = dir.path().to_string_lossy().to_string();
        let invalid = |e: Error| {
            let said = e
                .message
                .replace(&bundle_s, "the bundle")
                .replace(&scratch, "<scratch>");
            Error::bad_request(
                ErrorCode::InvalidBundle,
                format!("not a usable git bundle: {said}"),
            )
        };
        git(&repo, &["bundle", "verify", &bundle_s])
            .await
            .map_err(invalid)?;
        let heads = git(&repo, &["bundle", "list-heads", &bundle_s])
            .await
            .map_err(invalid)?;
        only_branches(&heads)?;
        // The same object checks a push gets, and blobs over 1 MiB
        // streamed rather than inflated whole into memory.
        git(
            &repo,
            &[
                "-c",
                "fetch.fsckObjects=true",
                "-c",
                "core.bigFileThreshold=1m",
                "fetch",
                "--quiet",
                "--no-tags",
                &bundle_s,
                "refs/heads/*:refs/heads/*",
            ],
        )
        .await
        .map_err(invalid)?;
        all_three_branches(&repo).await?;
        let (doc, readme) = check_branches(&repo, types, max_file_bytes).await?;
        Ok(Prepared {
            dir,
            doc,
            readme: String::from_utf8_lossy(&readme.unwrap_or_default()).to_string(),
        })
    }
}

/// The pre-receive rules on every branch of an unpacked bundle: spec.yaml
/// parses and passes its type's schema, draft's type and slug hold on
/// demo and live, the source rules and size limits. Returns draft's spec
/// and README.
async fn check_branches(
    repo: &Path,
    types: &Registry,
    max_file_bytes: u64,
) -> Result<(SpecDoc, Option<Vec<u8>>)> {
    let path = repo.to_path_buf();
    let scans = tokio::task::spawn_blocking(move || {
        let repo =
            Repository::open_bare(&path).map_err(|e| Error::internal(format!("git: {e}")))?;
        let mut scans = Vec::new();
        let mut seen = Vec::new();
        for b in Env::ALL.map(Env::as_str) {
            let tree = repo
                .find_reference(&format!("refs/heads/{b}"))
                .and_then(|r| r.peel_to_tree())
                .map_err(|e| {
                    Error::bad_request(
                        ErrorCode::InvalidBundle,
                        format!("branch {b} cannot be read: {e}"),
                    )
                })?;
            // A branch at a tree already checked has nothing new to say.
            if !seen.contains(&tree.id()) {
                seen.push(tree.id());
                scans.push((b, scan_tree(&repo, &tree, max_file_bytes)));
            }
        }
        Ok::<_, Error>(scans)
    })
    .await
    .map_err(Error::internal)??;
    let mut findings = Vec::new();
    let mut draft: Option<(Option<SpecDoc>, Option<Vec<u8>>)> = None;
    for (branch, scan) in scans {
        // demo and live must name the element draft names.
        let expect = match &draft {
            Some((Some(d), _)) => Some((d.element_type.clone(), d.slug.clone())),
            _ => None,
        };
        let checked = scan.check(
            types,
            expect.as_ref().map(|(t, s)| (t.as_str(), s.as_str())),
        );
        findings.extend(checked.findings.iter().map(|f| format!("{branch}: {f}")));
        if branch == "draft" {
            draft = Some((checked.doc, checked.readme));
        }
    }
    match draft {
        Some((Some(doc), readme)) if findings.is_empty() => Ok((doc, readme)),
        _ => {
            let first = findings.first().cloned().unwrap_or_default();
            Err(Error::bad_request(
                ErrorCode::InvalidBundle,
                format!(
                    "the bundle breaks {} source rule(s), as a push would: {first}",
                    findings.len()
                ),
            )
            .with_details(findings))
        }
    }
}
