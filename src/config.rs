//! Settings from flags and environment (SPEC §1).

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "ELEMENTD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Folder for the SQLite database, repositories and the admin token.
    #[arg(long, env = "ELEMENTD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// sqlite://… or postgres://…; default: sqlite://<data-dir>/elementd.db
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// The elementd binary git's pre-receive hook runs; default: this one.
    #[arg(long, env = "ELEMENTD_HOOK_BIN", hide = true)]
    pub hook_bin: Option<PathBuf>,
}

impl Config {
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) if !u.is_empty() => u.clone(),
            _ => format!("sqlite://{}", self.data_dir.join("elementd.db").display()),
        }
    }
    pub fn repos_dir(&self) -> PathBuf {
        self.data_dir.join("repos")
    }
}
