//! Element source in git: one bare repository per element (keyed by id)
//! with `draft`, `demo` and `live`. git2 runs on the blocking pool; writes
//! to one repository are serialized, and every ref update is a
//! compare-and-swap, so a push and an op cannot lose each other's commit.

pub mod bundle;
pub mod doc;
pub mod hook;
pub mod scan;
pub mod validate;
pub mod yaml;

use crate::error::{Error, Result};
use crate::error_codes::ErrorCode;
use crate::model::Env;
use git2::{build::TreeUpdateBuilder, FileMode, ObjectType, Oid, Repository, Signature};
use scan::TreeScan;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Who a commit is by: the acting token, or elementd itself.
#[derive(Debug, Clone)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Author {
    pub fn from_label(label: &str) -> Author {
        let name = label.replace(':', "-");
        Author {
            email: format!("{name}@elementd.local"),
            name,
        }
    }
    fn signature(&self) -> std::result::Result<Signature<'static>, git2::Error> {
        Signature::now(&self.name, &self.email)
    }
}

/// A file as [`Source::read_file_capped`] found it.
pub enum FileRead {
    Missing,
    /// Over the cap: its size, unread.
    TooLarge(u64),
    Content(Vec<u8>),
}

#[derive(Debug, Clone, Serialize)]
pub struct BranchInfo {
    pub name: String,
    pub commit: Option<String>,
    pub message: Option<String>,
    pub committed_at: Option<String>,
}

fn git_err(e: git2::Error) -> Error {
    Error::internal(format!("git: {e}"))
}

/// An element's writer lock, holding the repository its writers opened:
/// libgit2's open (config, layout checks) costs more than a small commit.
/// Reads open their own, so they never wait for a writer.
type Slot = Arc<Mutex<Option<Repository>>>;

/// Slots kept beyond the ones in use; past it, idle ones are dropped
/// (with their open repositories and file handles).
const SLOTS: usize = 256;

pub struct Source {
    root: PathBuf,
    slots: Mutex<HashMap<String, Slot>>,
}

impl Source {
    pub fn new(root: PathBuf) -> Source {
        // The server writes only objects it has just written the parts of,
        // so libgit2's check that each part exists (a lookup per tree
        // entry and parent) is work without a finding.
        git2::opts::strict_object_creation(false);
        Source {
            root,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn repo_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.git"))
    }

    fn slot(&self, id: &str) -> Slot {
        let mut m = crate::sync::lock(&self.slots);
        if m.len() >= SLOTS && !m.contains_key(id) {
            m.retain(|_, s| Arc::strong_count(s) > 1);
        }
        m.entry(id.to_string()).or_default().clone()
    }

    /// Runs `f` on the element's repository on the blocking pool; with
    /// `write`, under the repository's writer lock.
    async fn with_repo<T, F>(&self, id: &str, write: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Repository) -> Result<T> + Send + 'static,
    {
        let path = self.repo_path(id);
        let slot = write.then(|| self.slot(id));
        tokio::task::spawn_blocking(move || {
            let open = || {
                Repository::open_bare(&path).map_err(|e| {
                    if e.code() == git2::ErrorCode::NotFound {
                        Error::not_found(
                            ErrorCode::RepositoryMissing,
                            "the element's repository is missing; run source/repair",
                        )
                    } else {
                        git_err(e)
                    }
                })
            };
            let Some(slot) = slot else {
                return f(&open()?);
            };
            let mut held = crate::sync::lock(&slot);
            let repo = match held.take() {
                Some(r) => r,
                None => open()?,
            };
            let out = f(&repo);
            // After a failure the next writer opens afresh.
            if out.is_ok() {
                *held = Some(repo);
            }
            out
        })
        .await
        .map_err(Error::internal)?
    }

    pub fn exists(&self, id: &str) -> bool {
        self.repo_path(id).join("HEAD").exists()
    }

    /// Creates the repository with one commit on all three branches. It is
    /// built in a scratch folder and renamed into place, so a crash leaves
    /// either no repository or a whole one.
    pub async fn init(
        &self,
        id: &str,
        files: Vec<(String, Vec<u8>)>,
        author: Author,
        message: String,
    ) -> Result<String> {
        let path = self.repo_path(id);
        let slot = self.slot(id);
        tokio::task::spawn_blocking(move || {
            let mut held = crate::sync::lock(&slot);
            // Whatever was open there is not the repository made here.
            *held = None;
            if path.join("HEAD").exists() {
                return Err(Error::conflict(
                    ErrorCode::RepositoryExists,
                    "the element's repository already exists",
                ));
            }
            let tmp = path.with_extension(format!("init-{}", uuid::Uuid::new_v4().simple()));
            let oid = init_at(&tmp, &files, &author, &message).map_err(git_err)?;
            if path.exists() {
                // A broken leftover (no HEAD): replace it.
                std::fs::remove_dir_all(&path).map_err(Error::internal)?;
            }
            std::fs::rename(&tmp, &path).map_err(Error::internal)?;
            Ok(oid.to_string())
        })
        .await
        .map_err(Error::internal)?
    }

    /// Moves a prepared repository (from an import) into the element's place.
    pub async fn adopt(&self, id: &str, prepared: PathBuf) -> Result<()> {
        let path = self.repo_path(id);
        let slot = self.slot(id);
        tokio::task::spawn_blocking(move || {
            let mut held = crate::sync::lock(&slot);
            *held = None;
            std::fs::rename(&prepared, &path).map_err(Error::internal)
        })
        .await
        .map_err(Error::internal)?
    }

    /// Commits files to `draft` (None removes a file). Returns the commit.
    pub async fn commit_draft(
        &self,
        id: &str,
        files: Vec<(String, Option<Vec<u8>>)>,
        author: Author,
        message: String,
    ) -> Result<String> {
        self.with_repo(id, true, move |repo| {
            commit_files(repo, "draft", &files, &author, &message)
                .map(|o| o.to_string())
                .map_err(git_err)
        })
        .await
    }

    /// A file at a commit (or a branch: any revision git resolves),
    /// capped like `read_file`.
    pub async fn read_file_at(&self, id: &str, rev: &str, path: &str) -> Result<Option<Vec<u8>>> {
        const MAX: u64 = 1 << 20;
        let (rev, path) = (rev.to_string(), path.to_string());
        self.with_repo(id, false, move |repo| {
            let commit = repo
                .revparse_single(&rev)
                .and_then(|o| o.peel_to_commit())
                .map_err(|_| {
                    Error::not_found(ErrorCode::CommitNotFound, format!("no commit {rev}"))
                })?;
            let tree = commit.tree().map_err(git_err)?;
            let Ok(entry) = tree.get_path(Path::new(&path)) else {
                return Ok(None);
            };
            let (size, _) = repo
                .odb()
                .and_then(|odb| odb.read_header(entry.id()))
                .map_err(git_err)?;
            if size as u64 > MAX {
                return Err(Error::too_large(
                    ErrorCode::FileTooLarge,
                    format!("{path} at {rev} is {size} bytes, over {MAX}"),
                ));
            }
            Ok(Some(
                repo.find_blob(entry.id())
                    .map_err(git_err)?
                    .content()
                    .to_vec(),
            ))
        })
        .await
    }

    /// A file of a branch the server reads whole (spec.yaml, README.md):
    /// None when it does not exist; over 1 MiB (which no push or op can
    /// put there) a 413 rather than an unbounded read.
    pub async fn read_file(
        &self,
        id: &str,
        branch: &str,
        path: &str,
    ) -> Result<(Option<Vec<u8>>, String)> {
        const MAX: u64 = 1 << 20;
        let (read, commit) = self.read_file_capped(id, branch, path, MAX).await?;
        let content = match read {
            FileRead::Missing => None,
            FileRead::Content(c) => Some(c),
            FileRead::TooLarge(n) => {
                return Err(Error::too_large(
                    ErrorCode::FileTooLarge,
                    format!("{path} on {branch} is {n} bytes, over {MAX}; clone to read it"),
                ))
            }
        };
        Ok((content, commit))
    }

    /// A file of a branch, its content only when it is at most `max`
    /// bytes: the size comes from the object header, so a large file is
    /// never loaded to be refused.
    pub async fn read_file_capped(
        &self,
        id: &str,
        branch: &str,
        path: &str,
        max: u64,
    ) -> Result<(FileRead, String)> {
        let (branch, path) = (branch.to_string(), path.to_string());
        self.with_repo(id, false, move |repo| {
            let commit = branch_commit(repo, &branch)?;
            let tree = commit.tree().map_err(git_err)?;
            let entry = match tree.get_path(Path::new(&path)) {
                Ok(e) if e.kind() == Some(ObjectType::Blob) => e,
                _ => return Ok((FileRead::Missing, commit.id().to_string())),
            };
            let (size, _) = repo
                .odb()
                .and_then(|odb| odb.read_header(entry.id()))
                .map_err(git_err)?;
            let read = if size as u64 > max {
                FileRead::TooLarge(size as u64)
            } else {
                FileRead::Content(
                    repo.find_blob(entry.id())
                        .map_err(git_err)?
                        .content()
                        .to_vec(),
                )
            };
            Ok((read, commit.id().to_string()))
        })
        .await
    }

    /// Walks a branch against the source rules (see [`scan`]); files
    /// over `max_file_bytes` are refused unread.
    pub async fn scan_branch(
        &self,
        id: &str,
        branch: &str,
        max_file_bytes: u64,
    ) -> Result<(TreeScan, String)> {
        let branch = branch.to_string();
        self.with_repo(id, false, move |repo| {
            let commit = branch_commit(repo, &branch)?;
            let tree = commit.tree().map_err(git_err)?;
            Ok((
                scan::scan_tree(repo, &tree, max_file_bytes),
                commit.id().to_string(),
            ))
        })
        .await
    }

    pub async fn branches(&self, id: &str) -> Result<(Vec<BranchInfo>, Vec<serde_json::Value>)> {
        self.with_repo(id, false, |repo| {
            let mut infos = Vec::new();
            let mut oids = Vec::new();
            for b in Env::ALL.map(Env::as_str) {
                let c = repo
                    .find_branch(b, git2::BranchType::Local)
                    .ok()
                    .and_then(|r| r.get().peel_to_commit().ok());
                oids.push(c.as_ref().map(|c| c.id()));
                infos.push(BranchInfo {
                    name: b.into(),
                    commit: c.as_ref().map(|c| c.id().to_string()),
                    message: c
                        .as_ref()
                        .and_then(|c| c.summary().ok().flatten().map(str::to_string)),
                    committed_at: c
                        .as_ref()
                        .map(|c| crate::model::rfc3339(c.time().seconds() * 1000)),
                });
            }
            let mut links = Vec::new();
            for (i, (lower, upper)) in [("draft", "demo"), ("demo", "live")]
                .into_iter()
                .enumerate()
            {
                let (ahead, behind) = match (oids[i], oids[i + 1]) {
                    (Some(a), Some(b)) => repo.graph_ahead_behind(a, b).map_err(git_err)?,
                    _ => (0, 0),
                };
                links.push(serde_json::json!({
                    "from": lower, "to": upper,
                    "ahead": ahead, "behind": behind,
                    "in_sync": oids[i].is_some() && oids[i] == oids[i + 1],
                }));
            }
            Ok((infos, links))
        })
        .await
    }

    pub async fn branch_oid(&self, id: &str, branch: &str) -> Result<Option<String>> {
        let branch = branch.to_string();
        self.with_repo(id, false, move |repo| {
            Ok(repo
                .refname_to_id(&format!("refs/heads/{branch}"))
                .ok()
                .map(|o| o.to_string()))
        })
        .await
    }

    /// Every ref of the repository but `HEAD`, with what it points at
    /// (a symbolic ref shows its target's name), at most `max` of them.
    pub async fn refs(&self, id: &str, max: usize) -> Result<Vec<(String, String)>> {
        self.with_repo(id, false, move |repo| {
            let mut out = Vec::new();
            for r in repo.references().map_err(git_err)?.take(max) {
                let Ok(r) = r else { continue };
                let Ok(name) = r.name().map(str::to_string) else {
                    continue;
                };
                let to = r
                    .target()
                    .map(|o| o.to_string())
                    .or_else(|| r.symbolic_target().ok().flatten().map(str::to_string))
                    .unwrap_or_default();
                out.push((name, to));
            }
            Ok(out)
        })
        .await
    }

    /// Whether the repository holds `commit`.
    pub async fn has_commit(&self, id: &str, commit: &str) -> Result<bool> {
        let commit = commit.to_string();
        self.with_repo(id, false, move |repo| {
            Ok(Oid::from_str(&commit).is_ok_and(|o| repo.find_commit(o).is_ok()))
        })
        .await
    }

    /// Deletes one ref (`refs/…`); draft, demo and live are never deleted.
    pub async fn delete_ref(&self, id: &str, name: &str) -> Result<()> {
        let name = name.to_string();
        if Env::ALL
            .iter()
            .any(|b| name == format!("refs/heads/{}", b.as_str()))
        {
            return Err(Error::internal(format!("refusing to delete {name}")));
        }
        self.with_repo(id, true, move |repo| {
            let mut r = repo.find_reference(&name).map_err(git_err)?;
            r.delete().map_err(git_err)
        })
        .await
    }

    /// A commit's message, trimmed and cut at `max` characters.
    pub async fn commit_message(&self, id: &str, commit: &str, max: usize) -> Result<String> {
        let commit = commit.to_string();
        self.with_repo(id, false, move |repo| {
            let oid = Oid::from_str(&commit).map_err(git_err)?;
            let c = repo.find_commit(oid).map_err(git_err)?;
            let text = String::from_utf8_lossy(c.message_bytes());
            Ok(text.trim().replace('\0', "").chars().take(max).collect())
        })
        .await
    }

    /// Moves `to` to the exact commit of `from`. Returns (old, new).
    pub async fn promote(
        &self,
        id: &str,
        from: &str,
        to: &str,
        message: String,
    ) -> Result<(Option<String>, String)> {
        let (from, to) = (from.to_string(), to.to_string());
        self.with_repo(id, true, move |repo| {
            let src = branch_commit(repo, &from)?.id();
            let refname = format!("refs/heads/{to}");
            let old = repo.refname_to_id(&refname).ok();
            match old {
                Some(o) => repo.reference_matching(&refname, src, true, o, &message),
                None => repo.reference(&refname, src, false, &message),
            }
            .map_err(git_err)?;
            Ok((old.map(|o| o.to_string()), src.to_string()))
        })
        .await
    }

    /// Walks one commit against the source rules, as `scan_branch` does.
    pub async fn scan_commit(
        &self,
        id: &str,
        commit: &str,
        max_file_bytes: u64,
    ) -> Result<TreeScan> {
        let commit = commit.to_string();
        self.with_repo(id, false, move |repo| {
            let oid = Oid::from_str(&commit).map_err(git_err)?;
            let tree = repo.find_commit(oid).and_then(|c| c.tree()).map_err(|_| {
                Error::not_found(ErrorCode::CommitNotFound, format!("no commit {commit}"))
            })?;
            Ok(scan::scan_tree(repo, &tree, max_file_bytes))
        })
        .await
    }

    /// Points `branch` at `commit` (forward or back: a promotion or a
    /// rollback) if it is still at `expected`; a branch that moved
    /// meanwhile is a 409.
    pub async fn move_branch(
        &self,
        id: &str,
        branch: &str,
        commit: &str,
        expected: Option<&str>,
        message: String,
    ) -> Result<()> {
        let (branch, commit) = (branch.to_string(), commit.to_string());
        let expected = expected.map(str::to_string);
        self.with_repo(id, true, move |repo| {
            let to = Oid::from_str(&commit).map_err(git_err)?;
            repo.find_commit(to).map_err(|_| {
                Error::not_found(ErrorCode::CommitNotFound, format!("no commit {commit}"))
            })?;
            let refname = format!("refs/heads/{branch}");
            let moved = || {
                Error::conflict(
                    ErrorCode::PromotionConflict,
                    format!("{branch} moved meanwhile; read it again and retry"),
                )
                .retryable()
            };
            let r = match expected.as_deref().map(Oid::from_str) {
                Some(Ok(old)) => repo.reference_matching(&refname, to, true, old, &message),
                Some(Err(_)) | None => repo.reference(&refname, to, true, &message),
            };
            match r {
                Ok(_) => Ok(()),
                Err(e) if e.code() == git2::ErrorCode::Modified => Err(moved()),
                Err(e) => Err(git_err(e)),
            }
        })
        .await
    }

    /// Creates a missing branch at `at` (another branch's commit).
    pub async fn create_branch(&self, id: &str, branch: &str, at: &str) -> Result<String> {
        let (branch, at) = (branch.to_string(), at.to_string());
        self.with_repo(id, true, move |repo| {
            let oid = branch_commit(repo, &at)?.id();
            repo.reference(&format!("refs/heads/{branch}"), oid, false, "source/repair")
                .map_err(git_err)?;
            Ok(oid.to_string())
        })
        .await
    }
}

fn branch_commit<'r>(repo: &'r Repository, branch: &str) -> Result<git2::Commit<'r>> {
    repo.find_reference(&format!("refs/heads/{branch}"))
        .and_then(|r| r.peel_to_commit())
        .map_err(|_| {
            Error::not_found(
                ErrorCode::BranchNotFound,
                format!("branch '{branch}' does not exist"),
            )
        })
}

fn init_at(
    path: &Path,
    files: &[(String, Vec<u8>)],
    author: &Author,
    message: &str,
) -> std::result::Result<Oid, git2::Error> {
    let mut opts = git2::RepositoryInitOptions::new();
    opts.bare(true).initial_head("draft").mkpath(true);
    let repo = Repository::init_opts(path, &opts)?;
    let empty = repo.treebuilder(None)?.write()?;
    let mut b = TreeUpdateBuilder::new();
    for (p, content) in files {
        b.upsert(p, repo.blob(content)?, FileMode::Blob);
    }
    let tree = repo.find_tree(b.create_updated(&repo, &repo.find_tree(empty)?)?)?;
    let sig = author.signature()?;
    let oid = repo.commit(None, &sig, &sig, message, &tree, &[])?;
    for br in Env::ALL.map(Env::as_str) {
        repo.reference(&format!("refs/heads/{br}"), oid, false, message)?;
    }
    Ok(oid)
}

/// Commits on top of the branch; the ref moves only if nobody moved it
/// meanwhile, else the commit is rebuilt on the new head.
fn commit_files(
    repo: &Repository,
    branch: &str,
    files: &[(String, Option<Vec<u8>>)],
    author: &Author,
    message: &str,
) -> std::result::Result<Oid, git2::Error> {
    let refname = format!("refs/heads/{branch}");
    let sig = author.signature()?;
    let mut last_err = None;
    for _ in 0..5 {
        let parent = repo.find_reference(&refname)?.peel_to_commit()?;
        let mut b = TreeUpdateBuilder::new();
        for (p, content) in files {
            match content {
                Some(c) => b.upsert(p, repo.blob(c)?, FileMode::Blob),
                None => b.remove(p),
            };
        }
        let tree = repo.find_tree(b.create_updated(repo, &parent.tree()?)?)?;
        let oid = repo.commit(None, &sig, &sig, message, &tree, &[&parent])?;
        match repo.reference_matching(&refname, oid, true, parent.id(), message) {
            Ok(_) => return Ok(oid),
            Err(e)
                if e.code() == git2::ErrorCode::Modified || e.code() == git2::ErrorCode::Locked =>
            {
                last_err = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| git2::Error::from_str("ref kept moving")))
}
