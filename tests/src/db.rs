//! A fresh database per test: a PostgreSQL schema, or an SQLite file, as `TEST_BACKEND` says (`postgres`, the
//! default, or `sqlite`). `make test` runs the suites once per backend. The services migrate it themselves.

use sqlx::{AnyConnection, Connection, Executor, PgConnection};

/// The database the suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The backend chosen by `TEST_BACKEND`; anything but `postgres` or `sqlite` is a mistake worth stopping for.
pub fn backend() -> Backend {
    match std::env::var("TEST_BACKEND").as_deref() {
        Err(_) | Ok("postgres") => Backend::Postgres,
        Ok("sqlite") => Backend::Sqlite,
        Ok(other) => panic!("TEST_BACKEND must be `postgres` or `sqlite`, not {other:?}"),
    }
}

/// Where the test databases live; `TEST_DATABASE_URL` overrides. `make test` drops it first so runs start clean.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/minizon_test".into())
}

/// The PostgreSQL server's address, from the test database URL.
pub fn server_addr() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let url = server_url();
    let after_at = url.split_once('@').map_or(url.as_str(), |(_, rest)| rest);
    let host_port = after_at.split('/').next().unwrap_or("127.0.0.1:5432");
    let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    host_port.to_socket_addrs().expect("resolve the database host").next().expect("an address")
}

/// One isolated schema in the test database.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// URL whose connections see only this schema (through `search_path`).
    pub url: String,
    pub schema: String,
}

impl TestDb {
    /// A fresh, empty database of the configured backend.
    pub async fn new() -> Self {
        match backend() {
            Backend::Postgres => Self::postgres().await,
            Backend::Sqlite => Self::sqlite(),
        }
    }

    /// A new SQLite file in the temporary directory.
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join("minizon-tests");
        std::fs::create_dir_all(&dir).expect("create the test directory");
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
        Self { url, schema: name }
    }

    /// Whether this database is PostgreSQL (outage tests need a server to take away).
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// A connection of either backend, for portable assertions (standard SQL, `cast(… as bigint)` for sums).
    pub async fn connect_any(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.url).await.expect("connect to the test database")
    }

    /// LOMS's outbox in this database, for tests that drive the relay by hand.
    pub async fn outbox_source(&self) -> loms::outbox::OutboxSource {
        use loms::outbox::OutboxSource;
        if self.is_postgres() {
            let pool = minizon_common::db::connect_postgres(&self.url, 2).await.expect("connect");
            OutboxSource::Postgres { pool, written: Default::default() }
        } else {
            let pools = minizon_common::db::connect_sqlite(&self.url, 1).await.expect("open the SQLite file");
            OutboxSource::Sqlite { pools, written: std::sync::Arc::new(tokio::sync::Notify::new()) }
        }
    }

    /// The current time as a backend writes it: `now()` on PostgreSQL, Unix milliseconds on SQLite, shifted by
    /// `offset_ms`; for portable assertions on deadlines and ages.
    pub fn now_sql(&self, offset_ms: i64) -> String {
        if self.is_postgres() {
            format!("(now() + make_interval(secs => {}))", offset_ms as f64 / 1000.0)
        } else {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
            (now + offset_ms).to_string()
        }
    }

    /// Runs a portable statement.
    pub async fn execute(&self, sql: &str) {
        let mut conn = self.connect_any().await;
        sqlx::query(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs a portable query returning one integer.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let mut conn = self.connect_any().await;
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs a portable query returning one text column, every row.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        let mut conn = self.connect_any().await;
        sqlx::query_scalar::<_, String>(sql).fetch_all(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Creates the test database if needed and a new empty schema in it.
    pub async fn postgres() -> Self {
        let base = server_url();
        ensure_database(&base).await;
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&base).await.expect("connect to the test database");
        conn.execute(format!("create schema {schema}").as_str()).await.expect("create the test schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        Self { url, schema }
    }

    /// The same schema reached through another address (e.g. a [`crate::proxy::TcpProxy`]).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a URL has a scheme");
        let (userinfo, after_at) = rest.split_once('@').expect("the test URL names a user");
        let path = after_at.find('/').map_or("", |i| &after_at[i..]);
        format!("{scheme}://{userinfo}@{addr}{path}")
    }

    /// A direct PostgreSQL connection to the schema, for assertions the API cannot make.
    pub async fn connect(&self) -> PgConnection {
        assert!(self.is_postgres(), "connect() is for PostgreSQL; use connect_any() in tests that run on both");
        PgConnection::connect(&self.url).await.expect("connect to the test schema")
    }
}

async fn ensure_database(url: &str) {
    let (server, name) = url.rsplit_once('/').expect("a database URL ends with /name");
    let name = name.split('?').next().unwrap_or(name);
    let mut conn = PgConnection::connect(&format!("{server}/postgres")).await.expect("PostgreSQL is running");
    let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .expect("query pg_database");
    if !exists {
        // Several test binaries may race here; "already exists" means another one won.
        if let Err(error) = conn.execute(format!("create database {name}").as_str()).await {
            let duplicate =
                error.as_database_error().and_then(|e| e.code()).is_some_and(|c| c == "42P04" || c == "23505");
            assert!(duplicate, "create the test database: {error}");
        }
    }
}
