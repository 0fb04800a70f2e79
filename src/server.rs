//! Starting and stopping the server.

use crate::api;
use crate::clock::Clock;
use crate::cluster::PgBroker;
use crate::config::Config;
use crate::events::Bus;
use crate::model::Role;
use crate::runtime::{Peers, Runtime};
use crate::service::App;
use crate::store::{Backend, Db};
use crate::types::Registry;
use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long shutdown waits for websockets to finish their close handshake.
const WS_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Server {
    pub addr: SocketAddr,
    /// The internal listener's address (`--internal-listen`), when set.
    pub internal_addr: Option<SocketAddr>,
    /// The bootstrap admin token, when this start created it.
    pub admin_token: Option<String>,
    /// The data directory, resolved to an absolute path.
    pub data_dir: std::path::PathBuf,
    /// What `--demo` loaded, when it was asked for.
    pub demo: Option<crate::demo::Loaded>,
    /// The clock its parts judge time by; tests move it forward.
    pub clock: Clock,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Opens the database, runs migrations, binds and serves in the
    /// background.
    pub async fn start(mut config: Config) -> anyhow::Result<Server> {
        if config.demo {
            // The demo's driven feed dials this server's own echo.
            if let Ok(a) = config.listen.parse() {
                config.outbound_allow.push(crate::demo::feed_target(a));
            }
        }
        let mut outbound = crate::runtime::Outbound::parse(&config.outbound_allow)?;
        api::proxies::Trusted::parse(&config.trusted_proxies, &config.forwarded_header)?;
        outbound.max_links_per_circle = config.limits.max_driven_links_per_circle;
        private_dir(&config.data_dir)?;
        // git resolves a relative hooks path from each repository, where
        // no hook is: every path the server hands out is absolute.
        config.data_dir = std::fs::canonicalize(&config.data_dir)
            .with_context(|| format!("resolving {}", config.data_dir.display()))?;
        private_dir(&config.repos_dir())?;
        let types = Registry::load().context("loading element types")?;
        api::ops::check_handlers(&types)?;
        let clock = Clock::default();
        let db = Db::connect_with_clock(&config.database_url(), clock.clone()).await?;
        db.migrate().await?;
        let admin_token = bootstrap_admin(&db, &config).await?;
        write_hook(&config)?;
        let secrets = Arc::new(crate::secrets::Secrets::load(&config.data_dir)?);
        let (listener, internal) = bind(&config).await?;
        let addr = listener.local_addr()?;
        let internal_addr = internal.as_ref().map(|l| l.local_addr()).transpose()?;
        let nofile = api::admission::raise_nofile_limit();
        let cap = api::admission::connection_cap(config.limits.max_http_connections, nofile);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (bus, recorder) = Bus::start(db.clone(), clock.clone());
        let (cluster, peers) = other_nodes(&db, &config).await?;
        let resolve = Arc::new(crate::service::variables::VarResolver {
            db: db.clone(),
            secrets: secrets.clone(),
            types: types.clone(),
        });
        let ws_limits = api::admission::ws_limits(&config.limits, cap, nofile);
        let runtime = Runtime::new(
            types.clone(),
            bus.clone(),
            peers,
            outbound,
            resolve,
            ws_limits,
            clock.clone(),
        );
        if let Some(c) = &cluster {
            // Listen before loading, so no change made meanwhile is missed.
            c.start(runtime.arrivals(db.clone()), bus.clone()).await?;
        }
        let app = Arc::new(App::new(crate::service::Parts {
            config: config.clone(),
            db: db.clone(),
            types,
            bus,
            secrets,
            runtime: runtime.clone(),
            shutdown: shutdown_rx.clone(),
            clock: clock.clone(),
        }));
        tokio::spawn(write_touches(Arc::downgrade(&app)));
        tokio::spawn(crate::service::webhooks::deliver_loop(
            Arc::downgrade(&app),
            shutdown_rx.clone(),
        ));
        let resealed = app.elements().reseal_merged_values().await?;
        if resealed > 0 {
            tracing::warn!(
                specs = resealed,
                "values merged beside a seal were sealed again"
            );
        }
        // Releases first: the runtime serves them.
        let migrated = app.releases().backfill().await?;
        if migrated > 0 {
            tracing::info!(
                elements = migrated,
                "releases of demo and live read from git"
            );
        }
        let live = runtime.load(&db).await?;
        let demo = match config.demo {
            true => Some(crate::demo::load(&app, addr, config.demo_anyway).await?),
            false => None,
        };
        let (public, internal) = listeners(&app, listener, internal, cap, &shutdown_rx);
        drop(app);
        let task = tokio::spawn(async move {
            let internal = async move {
                if let Some(serving) = internal {
                    serving.await;
                }
            };
            tokio::join!(public, internal);
            runtime.shutdown(WS_CLOSE_WAIT).await;
            if let Some(c) = &cluster {
                c.stop().await;
            }
            drop(runtime);
            // The routers (and with them every Bus clone) are gone: the
            // recorder writes what is queued and ends.
            recorder.await?;
            Ok(())
        });
        tracing::info!(%addr, ?internal_addr, max_http_connections = cap,
            max_ws_connections = ws_limits.max_connections, live_websockets = live, "elementd listening");
        Ok(Server {
            addr,
            internal_addr,
            admin_token,
            data_dir: config.data_dir.clone(),
            demo,
            clock,
            shutdown,
            task,
        })
    }

    /// Stops accepting, lets in-flight requests finish and flushes records.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await?
    }

    /// Serves until SIGINT or SIGTERM, then stops gracefully.
    pub async fn run_until_signal(self, signals: Signals) -> anyhow::Result<()> {
        signals.recv().await;
        tracing::info!("shutting down");
        self.stop().await
    }
}

/// The other nodes sharing the database, as the runtime reaches them:
/// PostgreSQL's LISTEN/NOTIFY when several nodes may share it (the
/// `PgBroker` is also answered, to start and stop it); a SQLite node is
/// alone.
async fn other_nodes(db: &Db, config: &Config) -> anyhow::Result<(Option<Arc<PgBroker>>, Peers)> {
    Ok(match db.backend {
        Backend::Postgres => {
            let cap = config.limits.max_history_bytes_per_element;
            let pg = Arc::new(PgBroker::connect(&config.database_url(), cap).await?);
            let peers = Peers {
                broker: pg.clone(),
                presence: pg.clone(),
                history: pg.clone(),
            };
            (Some(pg), peers)
        }
        Backend::Sqlite => (None, Peers::alone()),
    })
}

/// The public listener, and the internal one when configured.
async fn bind(
    config: &Config,
) -> anyhow::Result<(tokio::net::TcpListener, Option<tokio::net::TcpListener>)> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let internal = match &config.internal_listen {
        Some(a) if !a.is_empty() => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the internal listener {a}"))?,
        ),
        _ => None,
    };
    Ok((listener, internal))
}

/// Serving both listeners until shutdown: the public one under the
/// connection cap, the internal one (probes, metrics) outside it.
fn listeners(
    app: &Arc<App>,
    listener: tokio::net::TcpListener,
    internal: Option<tokio::net::TcpListener>,
    cap: usize,
    shutdown: &watch::Receiver<bool>,
) -> (
    impl std::future::Future<Output = ()>,
    Option<impl std::future::Future<Output = ()>>,
) {
    let header_timeout = app.config().limits.header_timeout;
    let mut stop = shutdown.clone();
    let closing = app.runtime().clone();
    let public = api::listen::serve(
        listener,
        api::router(app.clone()),
        app.clone(),
        api::listen::Serve {
            header_timeout,
            cap: Some(api::admission::Cap::new(cap)),
        },
        async move {
            let _ = stop.wait_for(|s| *s).await;
            // Upgraded connections are not in-flight requests: close them
            // (1001) ourselves, while requests finish.
            tokio::spawn(async move { closing.shutdown(WS_CLOSE_WAIT).await });
        },
    );
    let internal = internal.map(|listener| {
        let mut stop = shutdown.clone();
        api::listen::serve(
            listener,
            api::internal_router(app.clone()),
            app.clone(),
            api::listen::Serve {
                header_timeout,
                cap: None,
            },
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
    });
    (public, internal)
}

/// SIGINT and SIGTERM handlers, installed before the server says it is up
/// so that a signal right after start is not lost.
pub struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {},
            _ = self.term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// On the first start against an empty database, creates a platform admin
/// token and writes it to `<data>/admin.token` (mode 0600).
async fn bootstrap_admin(db: &Db, config: &Config) -> anyhow::Result<Option<String>> {
    if !db
        .claim_setting("bootstrap_admin", &crate::model::now_ms().to_string())
        .await?
    {
        return Ok(None);
    }
    let (_, secret) = db
        .create_token("*", Role::Admin, "bootstrap admin", None)
        .await?;
    let path = config.data_dir.join("admin.token");
    let mut f = std::fs::OpenOptions::new();
    f.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
    let mut file = f
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(file, "{secret}")?;
    Ok(Some(secret))
}

/// Creates a folder only the service user may enter (0700): the data
/// dir holds the database, the secret key and every repository.
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot make the folder private (0700)");
        }
    }
    Ok(())
}

/// Writes the pre-receive script that `git receive-pack` runs (through
/// `core.hooksPath`, so repositories carry no hooks of their own).
fn write_hook(config: &Config) -> anyhow::Result<()> {
    let dir = config.data_dir.join("hooks");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("pre-receive");
    std::fs::write(&path, crate::source::hook::SCRIPT)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Writes tokens' last uses every two seconds while the app lives.
async fn write_touches(app: std::sync::Weak<App>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        every.tick().await;
        let Some(app) = app.upgrade() else { return };
        app.tokens().flush_touches().await;
    }
}
