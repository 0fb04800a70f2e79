//! Git bundles (v2), made and read by the `git` command line: git2 has no
//! bundle support, and `git bundle` writes exactly what `git clone` reads.

use super::doc::{SpecDoc, README_PATH, SPEC_PATH};
use super::{Source, BRANCHES};
use crate::error::{Error, Result};
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
            "GIT_FAILED",
            format!(
                "git {}: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
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
                "REPOSITORY_MISSING",
                "the element's repository is missing; run source/repair",
            ));
        }
        let tmp = tempfile::tempdir().map_err(Error::internal)?;
        let file = tmp.path().join("element.bundle");
        let file_s = file.to_string_lossy().to_string();
        let mut args = vec!["bundle", "create", file_s.as_str(), "HEAD"];
        args.extend(BRANCHES);
        git(&repo, &args)
            .await
            .map_err(|e| Error::internal(e.message))?;
        tokio::fs::read(&file).await.map_err(Error::internal)
    }

    /// Verifies a bundle and unpacks it; a corrupt bundle or one without
    /// a readable draft spec.yaml is a 400.
    pub async fn prepare_import(&self, bytes: &[u8]) -> Result<Prepared> {
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
            Error::bad_request("INVALID_BUNDLE", format!("not a usable git bundle: {said}"))
        };
        git(&repo, &["bundle", "verify", &bundle_s])
            .await
            .map_err(invalid)?;
        git(
            &repo,
            &["fetch", "--quiet", &bundle_s, "refs/heads/*:refs/heads/*"],
        )
        .await
        .map_err(invalid)?;
        let heads = String::from_utf8_lossy(
            &git(
                &repo,
                &["for-each-ref", "--format=%(refname:short)", "refs/heads"],
            )
            .await?,
        )
        .to_string();
        if !heads.lines().any(|h| h == "draft") {
            return Err(Error::bad_request(
                "INVALID_BUNDLE",
                "the bundle has no draft branch",
            ));
        }
        for b in ["demo", "live"] {
            if !heads.lines().any(|h| h == b) {
                git(&repo, &["branch", b, "draft"]).await?;
            }
        }
        let show = |p: &str| format!("draft:{p}");
        let spec = git(&repo, &["show", &show(SPEC_PATH)]).await.map_err(|_| {
            Error::bad_request(
                "INVALID_BUNDLE",
                format!("the bundle's draft has no {SPEC_PATH}"),
            )
        })?;
        let doc = SpecDoc::parse(&String::from_utf8_lossy(&spec))
            .map_err(|e| Error::bad_request("INVALID_BUNDLE", e.message))?;
        let readme = git(&repo, &["show", &show(README_PATH)])
            .await
            .unwrap_or_default();
        Ok(Prepared {
            dir,
            doc,
            readme: String::from_utf8_lossy(&readme).to_string(),
        })
    }
}
