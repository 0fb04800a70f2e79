use anyhow::Context;
use clap::{Parser, Subcommand};
use elementd::config::{Config, StoreArgs};
use elementd::model::Role;
use elementd::model::{now_ms, rfc3339};
use elementd::server::{Server, Signals};
use elementd::store::Db;

#[derive(Parser)]
#[command(
    name = "elementd",
    version,
    about = "Git-backed element platform service"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the REST API (and everything else) on one port.
    Serve(Box<Config>),
    /// Serve with the demo chat app loaded (fixtures/demo): into an empty
    /// server, or where it is already loaded.
    Demo {
        /// Load it even when the server holds other circles.
        #[arg(long)]
        anyway: bool,
        #[command(flatten)]
        config: Box<Config>,
    },
    /// Run database migrations and exit.
    Migrate(StoreArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Git hooks (run by git, not by people).
    #[command(hide = true)]
    Hook {
        #[arg(value_parser = ["pre-receive"])]
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token and print it once.
    Create {
        /// Circle slug, or '*' for a platform-wide token.
        #[arg(long)]
        circle: String,
        #[arg(long, value_parser = ["viewer", "member", "admin"])]
        role: String,
        /// Lifetime such as 30d, 12h or 90m; no expiry when omitted.
        #[arg(long)]
        expires_in: Option<String>,
        /// A label to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        config: StoreArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        config: StoreArgs,
    },
    /// Revoke a token by id.
    Revoke {
        id: String,
        #[command(flatten)]
        config: StoreArgs,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    // Colour only for a person at a terminal, never into a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("ELEMENTD_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(&config.database_url()).await?;
    db.migrate().await?;
    Ok(db)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Hook { .. } = cli.cmd {
        // Runs inside `git receive-pack`: no runtime, no logs on stdout.
        std::process::exit(elementd::source::hook::pre_receive());
    }
    init_tracing();
    tokio::runtime::Runtime::new()?.block_on(run(cli.cmd))
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Hook { .. } => unreachable!("handled before the runtime starts"),
        Cmd::Serve(config) => serve(*config).await,
        Cmd::Demo { anyway, config } => {
            let mut config = *config;
            config.demo = true;
            config.demo_anyway = anyway;
            serve(config).await
        }
        Cmd::Migrate(store) => {
            open_db(&store.into()).await?;
            println!("migrations applied");
            Ok(())
        }
        Cmd::Token(TokenCmd::Create {
            circle,
            role,
            expires_in,
            name,
            config,
        }) => token_create(&circle, &role, expires_in, &name, &config.into()).await,
        Cmd::Token(TokenCmd::List { config }) => token_list(&config.into()).await,
        Cmd::Token(TokenCmd::Revoke { id, config }) => {
            let db = open_db(&config.into()).await?;
            if db.revoke_token(&id).await? {
                println!("revoked {id}");
                Ok(())
            } else {
                anyhow::bail!("no active token with id {id}")
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    let server = Server::start(config).await?;
    if let Some(token) = &server.admin_token {
        println!(
            "Platform admin token (shown once, also in {}):\n{token}",
            server.data_dir.join("admin.token").display()
        );
    }
    println!("elementd data in {}", server.data_dir.display());
    println!("elementd listening on http://{}", server.addr);
    if let Some(a) = server.internal_addr {
        println!("internal listener (healthz, readyz, metrics) on http://{a}");
    }
    if let Some(loaded) = &server.demo {
        print_demo(loaded, server.addr);
    }
    server.run_until_signal(signals).await
}

fn print_demo(loaded: &elementd::demo::Loaded, addr: std::net::SocketAddr) {
    use elementd::demo::Loaded;
    let circle = match loaded {
        Loaded::Fresh { circle, .. } => {
            println!("demo: loaded the circle '{circle}' (fixtures/demo/demo.yaml)");
            circle
        }
        Loaded::AlreadyThere {
            circle,
            moved,
            outdated,
        } => {
            match moved {
                None => {
                    println!("demo: the circle '{circle}' is already here; nothing was changed")
                }
                Some(a) => println!(
                    "demo: the circle '{circle}' is already here; its variable demo-address \
                     now holds {a}, where this server listens (nothing else was changed)"
                ),
            }
            if *outdated {
                println!(
                    "demo: this demo predates the backend's hooks and webhook and stays as it was; \
                     start with a fresh --data-dir to see them"
                );
            }
            circle
        }
    };
    println!("demo: console   http://{addr}/console/{circle}");
    println!("demo: chat page http://{addr}/demo/ (open it in two tabs)");
    match loaded {
        Loaded::Fresh { token: Some(t), .. } => {
            println!("demo: development token (write on '{circle}', shown once):\n{t}")
        }
        _ => println!(
            "demo: the development token was shown when the demo was loaded; \
             make another with `elementd token create --circle {circle} --role member`"
        ),
    }
}

async fn token_create(
    circle: &str,
    role: &str,
    expires_in: Option<String>,
    name: &str,
    config: &Config,
) -> anyhow::Result<()> {
    if circle != "*" {
        elementd::model::Slug::parse(circle).map_err(|e| anyhow::anyhow!(e.message))?;
    }
    let role = Role::parse(role).context("role")?;
    let expires_at = match expires_in {
        None => None,
        Some(s) => {
            let d = humantime::parse_duration(&s)
                .with_context(|| format!("--expires-in '{s}': use e.g. 30d, 12h, 90m"))?;
            Some(now_ms() + d.as_millis() as i64)
        }
    };
    let db = open_db(config).await?;
    // Allowed (tokens may be made before their circle), but said.
    let exists = circle == "*"
        || db
            .find_circle(circle)
            .await?
            .is_some_and(|c| !c.is_deleted());
    if !exists {
        eprintln!(
            "warning: no circle '{circle}' exists yet; the token applies to one created later"
        );
    }
    let (row, secret) = db.create_token(circle, role, name, expires_at).await?;
    eprintln!(
        "created token {} (circle {}, role {}{})",
        row.id,
        row.reach.label(),
        row.role.as_str(),
        expires_at
            .map(|t| format!(", expires {}", rfc3339(t)))
            .unwrap_or_default()
    );
    println!("{secret}");
    Ok(())
}

async fn token_list(config: &Config) -> anyhow::Result<()> {
    let db = open_db(config).await?;
    println!(
        "{:<22} {:<20} {:<7} {:<25} {:<25} NAME",
        "ID", "CIRCLE", "ROLE", "EXPIRES", "STATUS"
    );
    let now = now_ms();
    for t in db.list_tokens().await? {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        println!(
            "{:<22} {:<20} {:<7} {:<25} {:<25} {}",
            t.id,
            t.reach.label(),
            t.role.as_str(),
            t.expires_at.map(rfc3339).unwrap_or_else(|| "never".into()),
            status,
            t.name
        );
    }
    Ok(())
}
