//! Settings from flags and environment, and the limits that
//! keep one tenant from starving the others (README "Security").

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

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
    /// A second address serving /healthz, /readyz and /metrics without a
    /// token, for probes and scrapers inside the operator's network. It is
    /// not under max_http_connections; bind it to a private address.
    #[arg(long, env = "ELEMENTD_INTERNAL_LISTEN")]
    pub internal_listen: Option<String>,
    /// Outbound destinations (driven links) allowed besides public
    /// addresses: CIDRs, addresses and host names, comma-separated, e.g.
    /// `10.20.0.0/16,feed.internal`. Without it, loopback, private,
    /// link-local, CGNAT, ULA, multicast and other special-purpose
    /// addresses are refused.
    #[arg(long, env = "ELEMENTD_OUTBOUND_ALLOW", value_delimiter = ',')]
    pub outbound_allow: Vec<String>,
    /// Reverse proxies (CIDRs or addresses, comma-separated) whose
    /// `Forwarded` / `X-Forwarded-For` name the client: per-address caps,
    /// address-keyed rate limits, token guesses and `allowed_ips` then
    /// count that client. From anyone else those headers are ignored.
    #[arg(long, env = "ELEMENTD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies write: x-forwarded-for or forwarded.
    #[arg(
        long,
        env = "ELEMENTD_FORWARDED_HEADER",
        default_value = "x-forwarded-for"
    )]
    pub forwarded_header: String,
    /// Load the demo app (fixtures/demo) into an empty server and serve its
    /// chat page at /demo/; `elementd demo` sets it.
    #[arg(long, env = "ELEMENTD_DEMO")]
    pub demo: bool,
    /// With `demo`: load it even beside other circles (`elementd demo --anyway`).
    #[arg(skip)]
    pub demo_anyway: bool,
    #[command(flatten)]
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            hook_bin: None,
            internal_listen: None,
            outbound_allow: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".into(),
            demo: false,
            demo_anyway: false,
            limits: Limits::default(),
        }
    }
}

/// Where the data lives: all that commands which only open the database
/// (`migrate`, `token …`) take, so their help lists nothing else.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Folder for the SQLite database, repositories and the admin token.
    #[arg(long, env = "ELEMENTD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// sqlite://… or postgres://…; default: sqlite://<data-dir>/elementd.db
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl From<StoreArgs> for Config {
    fn from(s: StoreArgs) -> Config {
        Config {
            data_dir: s.data_dir,
            database_url: s.database_url,
            ..Config::default()
        }
    }
}

/// Caps on what any client can hold or send.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Concurrent HTTP connections on the public listener; 0 derives it
    /// from the open-file limit (raised to the hard limit at start): half
    /// of it less 256, within 32..=16384, leaving room for websockets
    /// (which leave this cap once upgraded), the database and git. Past
    /// it, 16 reserve connections serve only /healthz, /readyz and
    /// platform admins (others get 503 SERVER_BUSY); past those, the
    /// reserve connection that has waited longest for its request is
    /// closed to make room (a newcomer is closed when all are busy).
    #[arg(long, env = "ELEMENTD_MAX_HTTP_CONNECTIONS", default_value_t = 0)]
    pub max_http_connections: usize,
    /// How long a client may take to send a request's headers; also how
    /// long a keep-alive connection may sit idle between requests.
    #[arg(long, env = "ELEMENTD_HEADER_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// How long a client may take to send an op's request body (up to
    /// 1 MiB; 64 MiB for import/bundle). Git pushes are bounded by size.
    #[arg(long, env = "ELEMENTD_BODY_TIMEOUT", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Largest git push accepted, in bytes.
    #[arg(long, env = "ELEMENTD_MAX_PUSH_BYTES", default_value_t = DEFAULT_MAX_PUSH_BYTES)]
    pub max_push_bytes: u64,
    /// Concurrent event streams (SSE) one token may hold.
    #[arg(long, env = "ELEMENTD_MAX_STREAMS_PER_TOKEN", default_value_t = 8)]
    pub max_streams_per_token: usize,
    /// Concurrent event streams (SSE) on one circle, all tokens together.
    #[arg(long, env = "ELEMENTD_MAX_STREAMS_PER_CIRCLE", default_value_t = 64)]
    pub max_streams_per_circle: usize,
    /// Driven (outbound) websocket links one circle may have: enabled
    /// websocket elements with a `url` (disabled ones do not count).
    #[arg(long, env = "ELEMENTD_MAX_DRIVEN_LINKS", default_value_t = 16)]
    pub max_driven_links_per_circle: usize,
    /// Bytes a websocket connection reads from its socket at a time. The
    /// protocol layer keeps (and zero-fills) this much per connection, so
    /// it is most of an idle connection's memory; a larger message still
    /// gets a buffer of its own size. 256..=65536.
    #[arg(long, env = "ELEMENTD_WS_READ_BUFFER", default_value_t = DEFAULT_WS_READ_BUFFER,
          value_parser = clap::value_parser!(u32).range(256..=65536))]
    pub ws_read_buffer: u32,
    /// Failed token checks one address may make in a minute; past it,
    /// REST, git and the upgrade answer it 429 AUTH_THROTTLED until the
    /// minute ends. Other addresses are not slowed.
    #[arg(long, env = "ELEMENTD_AUTH_FAILURES_PER_MINUTE", default_value_t = 60)]
    pub auth_failures_per_minute: u32,
    /// git processes (clone, fetch, push) running at once on this node;
    /// past it, git requests get 503 with Retry-After.
    #[arg(long, env = "ELEMENTD_MAX_GIT_PROCESSES", default_value_t = 16)]
    pub max_git_processes: usize,
    /// git processes one token, or one client address, may run at once.
    #[arg(
        long,
        env = "ELEMENTD_MAX_GIT_PROCESSES_PER_CLIENT",
        default_value_t = 4
    )]
    pub max_git_processes_per_client: usize,
    /// Writes of one circle in flight at once on this node; more wait
    /// their turn, so one circle's flood does not stand before every
    /// other circle's writes.
    #[arg(long, env = "ELEMENTD_WRITES_PER_CIRCLE", default_value_t = 4)]
    pub writes_per_circle: usize,
    /// Elements one circle may hold (deleted ones do not count); 0: no quota.
    #[arg(
        long,
        env = "ELEMENTD_MAX_ELEMENTS_PER_CIRCLE",
        default_value_t = 10_000
    )]
    pub max_elements_per_circle: usize,
    /// Versions of all of one circle's elements together; 0: no quota.
    #[arg(
        long,
        env = "ELEMENTD_MAX_VERSIONS_PER_CIRCLE",
        default_value_t = 1_000_000
    )]
    pub max_versions_per_circle: usize,
    /// Bytes one circle's repositories may take on disk before pushes and
    /// imports are refused; 0: no quota.
    #[arg(long, env = "ELEMENTD_MAX_REPO_BYTES_PER_CIRCLE", default_value_t = 10 << 30)]
    pub max_repo_bytes_per_circle: u64,
    /// How long a git request's body may take to arrive, start to end.
    #[arg(long, env = "ELEMENTD_GIT_BODY_TIMEOUT", default_value = "120s",
          value_parser = humantime::parse_duration)]
    pub git_body_timeout: Duration,
    /// Bytes one websocket connection may have queued for sending; past
    /// it the client is closed (1013). A message that finds the queue
    /// empty is taken whatever its size.
    #[arg(long, env = "ELEMENTD_MAX_WS_BUFFER_BYTES", default_value_t = DEFAULT_WS_BUFFER_BYTES)]
    pub max_ws_buffer_bytes: usize,
    /// Bytes all websocket connections of the node together may have
    /// queued for sending; the connection whose message would pass it is
    /// closed (1013).
    #[arg(long, env = "ELEMENTD_MAX_WS_QUEUED_BYTES", default_value_t = DEFAULT_WS_QUEUED_BYTES)]
    pub max_ws_queued_bytes: u64,
    /// Bytes of room history one websocket element may keep in each
    /// environment; past it the oldest messages go first.
    #[arg(long, env = "ELEMENTD_HISTORY_MAX_BYTES_PER_ELEMENT", default_value_t = DEFAULT_HISTORY_BYTES)]
    pub max_history_bytes_per_element: usize,
    /// The largest `connection.max_message_bytes` a websocket may set
    /// (the schema's own ceiling is 16 MiB). Each connection may hold one
    /// incoming message this large while it arrives.
    #[arg(long, env = "ELEMENTD_MAX_WS_MESSAGE_BYTES", default_value_t = DEFAULT_WS_MESSAGE_BYTES,
          value_parser = clap::value_parser!(u32).range(1..=16 << 20))]
    pub max_ws_message_bytes: u32,
    /// Websocket connections on this node; 0 derives it from the
    /// open-file limit: what the HTTP cap, its reserve and the headroom
    /// for the database and git leave. Past it, upgrades get 503.
    #[arg(long, env = "ELEMENTD_MAX_WS_CONNECTIONS", default_value_t = 0)]
    pub max_ws_connections: usize,
    /// Connections from one client address (an IPv6 /64), HTTP and
    /// websocket together; 0 turns the cap off.
    #[arg(long, env = "ELEMENTD_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: usize,
    /// The most connections one websocket element takes on this node,
    /// whatever its `max_connections` says; 0: only the node's cap.
    #[arg(
        long,
        env = "ELEMENTD_MAX_WS_CONNECTIONS_PER_ELEMENT",
        default_value_t = 0
    )]
    pub max_ws_connections_per_element: usize,
    /// `ws.connection.opened` events one websocket element writes to
    /// activity a second on this node, in each environment, and as many `ws.connection.closed`;
    /// past it they go live only (and to webhooks that take them), counted
    /// in the next written one's `unpersisted_before`. A flood of
    /// connections cannot grow the database without bound. 0: every one.
    #[arg(
        long,
        env = "ELEMENTD_CONNECTION_EVENTS_PER_SECOND",
        default_value_t = DEFAULT_CONNECTION_EVENTS
    )]
    pub connection_events_per_second: u64,
}

pub const DEFAULT_WS_BUFFER_BYTES: usize = 4 << 20;
pub const DEFAULT_WS_QUEUED_BYTES: u64 = 1 << 30;
pub const DEFAULT_HISTORY_BYTES: usize = 64 << 20;
pub const DEFAULT_WS_MESSAGE_BYTES: u32 = 1 << 20;

pub const DEFAULT_WS_READ_BUFFER: u32 = 512;

pub const DEFAULT_CONNECTION_EVENTS: u64 = 100;

pub const DEFAULT_MAX_PUSH_BYTES: u64 = 100 << 20;

/// The largest request body an op reads, and the largest README.md or
/// spec.yaml anywhere (REST, push, import).
pub const BODY_LIMIT: usize = 1 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_http_connections: 0,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_push_bytes: DEFAULT_MAX_PUSH_BYTES,
            max_streams_per_token: 8,
            max_streams_per_circle: 64,
            max_driven_links_per_circle: 16,
            ws_read_buffer: DEFAULT_WS_READ_BUFFER,
            auth_failures_per_minute: 60,
            max_git_processes: 16,
            max_git_processes_per_client: 4,
            git_body_timeout: Duration::from_secs(120),
            writes_per_circle: 4,
            max_elements_per_circle: 10_000,
            max_versions_per_circle: 1_000_000,
            max_repo_bytes_per_circle: 10 << 30,
            max_ws_buffer_bytes: DEFAULT_WS_BUFFER_BYTES,
            max_ws_queued_bytes: DEFAULT_WS_QUEUED_BYTES,
            max_history_bytes_per_element: DEFAULT_HISTORY_BYTES,
            max_ws_message_bytes: DEFAULT_WS_MESSAGE_BYTES,
            max_ws_connections: 0,
            max_connections_per_ip: 1024,
            max_ws_connections_per_element: 0,
            connection_events_per_second: DEFAULT_CONNECTION_EVENTS,
        }
    }
}

impl Config {
    /// The demo's development signing key (`elementd demo`), beside the
    /// database.
    pub fn demo_key_file(&self) -> PathBuf {
        self.data_dir.join("demo.key")
    }

    /// The key elementd signs its requests to the demo's backend with
    /// (hooks and the webhook), beside the database.
    pub fn demo_backend_key_file(&self) -> PathBuf {
        self.data_dir.join("demo-backend.key")
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    /// The flags' defaults and `Default` agree.
    #[test]
    fn defaults_agree() {
        let parsed = Cli::parse_from(["elementd"]).config;
        let d = Config::default();
        assert_eq!(parsed.listen, d.listen);
        assert_eq!(parsed.limits.header_timeout, d.limits.header_timeout);
        assert_eq!(parsed.limits.body_timeout, d.limits.body_timeout);
        assert_eq!(parsed.limits.max_push_bytes, d.limits.max_push_bytes);
        assert_eq!(
            parsed.limits.max_streams_per_token,
            d.limits.max_streams_per_token
        );
        assert_eq!(
            parsed.limits.max_streams_per_circle,
            d.limits.max_streams_per_circle
        );
        assert_eq!(
            parsed.limits.max_driven_links_per_circle,
            d.limits.max_driven_links_per_circle
        );
        assert!(parsed.outbound_allow.is_empty());
        assert_eq!(
            parsed.limits.max_http_connections,
            d.limits.max_http_connections
        );
        assert_eq!(parsed.limits.ws_read_buffer, d.limits.ws_read_buffer);
        assert_eq!(
            parsed.limits.auth_failures_per_minute,
            d.limits.auth_failures_per_minute
        );
        assert_eq!(parsed.limits.max_git_processes, d.limits.max_git_processes);
        assert_eq!(
            parsed.limits.max_git_processes_per_client,
            d.limits.max_git_processes_per_client
        );
        assert_eq!(parsed.limits.git_body_timeout, d.limits.git_body_timeout);
        assert_eq!(parsed.limits.writes_per_circle, d.limits.writes_per_circle);
        assert_eq!(
            parsed.limits.max_elements_per_circle,
            d.limits.max_elements_per_circle
        );
        assert_eq!(
            parsed.limits.max_versions_per_circle,
            d.limits.max_versions_per_circle
        );
        assert_eq!(
            parsed.limits.max_repo_bytes_per_circle,
            d.limits.max_repo_bytes_per_circle
        );
        let (p, d) = (&parsed.limits, &d.limits);
        assert_eq!(p.max_ws_buffer_bytes, d.max_ws_buffer_bytes);
        assert_eq!(p.max_ws_queued_bytes, d.max_ws_queued_bytes);
        assert_eq!(
            p.max_history_bytes_per_element,
            d.max_history_bytes_per_element
        );
        assert_eq!(p.max_ws_message_bytes, d.max_ws_message_bytes);
        assert_eq!(p.max_ws_connections, d.max_ws_connections);
        assert_eq!(p.max_connections_per_ip, d.max_connections_per_ip);
        assert_eq!(
            p.max_ws_connections_per_element,
            d.max_ws_connections_per_element
        );
        assert_eq!(
            p.connection_events_per_second,
            d.connection_events_per_second
        );
    }

    /// A read buffer outside 256..=65536 is refused at start, naming it.
    #[test]
    fn read_buffer_is_bounded() {
        for bad in ["0", "255", "65537", "lots"] {
            let err = Cli::try_parse_from(["elementd", "--ws-read-buffer", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err.to_string().contains("ws-read-buffer"), "{err}");
        }
        let ok = Cli::parse_from(["elementd", "--ws-read-buffer", "65536"]).config;
        assert_eq!(ok.limits.ws_read_buffer, 65536);
    }
}
