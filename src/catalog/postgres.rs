//! PostgreSQL below the catalog's queries: a shared store's engine, the one arbiter of version
//! numbers, aliases, drafts and seals for every host. Writers take one store-wide lock for the
//! length of their transaction, as SQLite's writers do, so every rule the queries keep holds
//! the same here; readers do not wait. Statements are prepared once per connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, NoTls, Statement};

use super::sql::{DbError, DbResult, Dialect, Param, Row, Sql, Value};
use crate::error::{Error, Result};

/// The key of the advisory lock every writer holds: writes are one at a time, store-wide.
const WRITE_LOCK: i64 = 0x6172_7466_7300;
/// The key of the lock on the store's blobs: shared by whoever uploads blobs until the
/// catalog refers to them, exclusive for `gc`, so gc never takes a blob about to be used.
const BLOBS_LOCK: i64 = 0x6172_7466_7301;
/// How long a writer waits for the lock, as SQLite's busy timeout.
const LOCK_TIMEOUT: &str = "120s";
/// How long to keep trying to reach a database that does not answer (restarting, say).
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

pub struct PgConn {
    client: RefCell<Client>,
    /// How it connected, to connect again when the server closed the connection.
    config: Config,
    /// Whether a transaction is open: then a closed connection is an error, never replaced.
    in_transaction: Cell<bool>,
    statements: RefCell<HashMap<String, Statement>>,
    /// The store directory on this host, for naming the store in errors.
    store: String,
    /// The database as errors name it: `postgres://user@host:port/db`, without a password.
    shown: String,
}

/// A hold on the store's blobs (see [`BLOBS_LOCK`]), for as long as its connection lives.
pub struct BlobsHold(#[allow(dead_code)] PgConn);

impl PgConn {
    /// Takes the blobs lock on a connection of its own: shared, or exclusive for `gc`.
    pub fn hold_blobs(url: &str, store: &str, exclusive: bool) -> Result<BlobsHold> {
        let conn = PgConn::connect(url, store)?;
        let how = if exclusive { "" } else { "_shared" };
        conn.client
            .borrow_mut()
            .batch_execute(&format!(
                "SET lock_timeout = '{LOCK_TIMEOUT}'; SELECT pg_advisory_lock{how}({BLOBS_LOCK})"
            ))
            .map_err(|e| Error::Catalog {
                context: format!(
                    "store {store}: {}: wait for the blobs, held {} for {LOCK_TIMEOUT}",
                    conn.shown,
                    if exclusive { "by uploads" } else { "by gc" }
                ),
                source: e.into(),
            })?;
        Ok(BlobsHold(conn))
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to a {ty} parameter").into()),
            },
            Param::Text(t) => match *ty {
                Type::BYTEA => t.as_bytes().to_sql(ty, out),
                _ => t.to_sql(ty, out),
            },
            Param::Blob(b) => match *ty {
                Type::TEXT | Type::VARCHAR => std::str::from_utf8(b)?.to_sql(ty, out),
                _ => b.to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `?1`, `?2`… as PostgreSQL spells them: `$1`, `$2`… (never inside a quoted literal).
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(|n| n.is_ascii_digit()) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

fn value(row: &postgres::Row, i: usize) -> DbResult<Value> {
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)?
            .map(|v| Value::Int(v as i64)),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        other => {
            return Err(DbError::Decode(format!(
                "column {i} is of type {other}, which the catalog does not read"
            )));
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

impl PgConn {
    /// Connects to the database at `url` (libpq's PG* variables fill in what it leaves out),
    /// trying again for a while if it does not answer, for the store in `store`.
    pub fn connect(url: &str, store: &str) -> Result<PgConn> {
        let config = config_of(url)?;
        let shown = shown(&config);
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        let client = loop {
            match config.connect(NoTls) {
                Ok(c) => break c,
                // Refused or timed out: the server may be starting. Anything else (a wrong
                // password, a missing database) will not change by waiting.
                Err(e) if e.as_db_error().is_none() && started.elapsed() < CONNECT_PATIENCE => {
                    log::info!("catalog {shown} does not answer ({e}); trying again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    let waited = if e.as_db_error().is_none() {
                        format!(" (tried for {} s)", started.elapsed().as_secs())
                    } else {
                        String::new()
                    };
                    return Err(Error::Catalog {
                        context: format!("connect to {shown}{waited}"),
                        source: e.into(),
                    });
                }
            }
        };
        Ok(PgConn {
            client: RefCell::new(client),
            config,
            in_transaction: Cell::new(false),
            statements: RefCell::new(HashMap::new()),
            store: store.to_string(),
            shown,
        })
    }

    /// The database as errors name it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether the connection broke (the server restarted, say), so it must be replaced.
    pub fn is_broken(&self) -> bool {
        self.client.borrow().is_closed()
    }

    /// Runs `f`, a read or `BEGIN`; if it fails because the server had closed the connection
    /// (a restart ended it while it sat unused in a mount's pool, say) outside a transaction,
    /// connects again and runs it once more. Nothing else is tried again: a write might have
    /// been done before the connection was lost.
    fn again_if_closed<T>(&self, mut f: impl FnMut() -> DbResult<T>) -> DbResult<T> {
        match f() {
            Err(DbError::Postgres(e)) if self.replaced_closed(&e) => f(),
            other => other,
        }
    }

    /// Whether `e` says the server had closed the connection, outside a transaction, and a
    /// new connection replaced it: then what failed may be tried again.
    fn replaced_closed(&self, e: &postgres::Error) -> bool {
        e.is_closed() && !self.in_transaction.get() && self.reconnect()
    }

    /// Replaces a connection the server closed with a new one; false if none can be made.
    fn reconnect(&self) -> bool {
        match self.config.connect(NoTls) {
            Ok(client) => {
                log::info!(
                    "catalog {}: the server had closed the connection; connected again",
                    self.shown
                );
                *self.client.borrow_mut() = client;
                self.statements.borrow_mut().clear();
                true
            }
            Err(e) => {
                log::info!("catalog {}: cannot connect again: {e}", self.shown);
                false
            }
        }
    }

    fn statement(&self, sql: &str) -> DbResult<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client.borrow_mut().prepare(&placeholders(sql))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    /// Runs `f` in one write transaction holding the store-wide write lock: all of it is
    /// committed, or none of it. With `keep` false it is rolled back whatever happens.
    pub fn transaction<T>(&self, keep: bool, f: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        let ctx = |what: &str| format!("{} ({what})", self.shown);
        let run = |sql: &str| {
            self.client
                .borrow_mut()
                .batch_execute(sql)
                .map_err(|e| Error::Catalog {
                    context: ctx(sql),
                    source: e.into(),
                })
        };
        let begin = self.again_if_closed(|| Ok(self.client.borrow_mut().batch_execute("BEGIN")?));
        begin.map_err(|e| Error::Catalog {
            context: ctx("BEGIN"),
            source: e,
        })?;
        self.in_transaction.set(true);
        let result = self.in_transaction(keep, f, &ctx, &run);
        self.in_transaction.set(false);
        result
    }

    /// The rest of [`PgConn::transaction`], once it has begun.
    fn in_transaction<T>(
        &self,
        keep: bool,
        f: impl FnOnce(&Self) -> Result<T>,
        ctx: &dyn Fn(&str) -> String,
        run: &dyn Fn(&str) -> Result<()>,
    ) -> Result<T> {
        let locked = self
            .client
            .borrow_mut()
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
            ))
            .map_err(|e| Error::Catalog {
                context: ctx(&format!(
                    "start a write; another writer held it for {LOCK_TIMEOUT}"
                )),
                source: e.into(),
            });
        let result = locked.and_then(|()| f(self));
        match result {
            Ok(v) if keep => {
                crate::faults::check(crate::faults::Op::Commit).map_err(|e| {
                    let _ = run("ROLLBACK");
                    Error::io(&self.store, e)
                })?;
                run("COMMIT")?;
                Ok(v)
            }
            other => {
                // A broken connection has nothing to roll back.
                if !self.is_broken() {
                    run("ROLLBACK")?;
                }
                other
            }
        }
    }
}

impl Sql for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn store(&self) -> String {
        self.store.clone()
    }

    fn execute(&self, sql: &str, params: &[Param]) -> DbResult<usize> {
        let run = || {
            let stmt = self.statement(sql)?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
            Ok(self.client.borrow_mut().execute(&stmt, &refs)? as usize)
        };
        if is_read(sql) {
            self.again_if_closed(run)
        } else {
            run()
        }
    }

    fn query_each(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&Row) -> DbResult<()>,
    ) -> DbResult<()> {
        // Tried again only if no row was handed to `each` yet: none is handed twice.
        let handed = Cell::new(false);
        let mut attempt = || -> DbResult<()> {
            let stmt = self.statement(sql)?;
            let mut client = self.client.borrow_mut();
            let mut rows = client.query_raw(&stmt, params.iter())?;
            while let Some(r) = rows.next()? {
                let row = (0..r.len())
                    .map(|i| value(&r, i))
                    .collect::<DbResult<Vec<Value>>>()?;
                handed.set(true);
                each(&Row(row))?;
            }
            Ok(())
        };
        match attempt() {
            Err(DbError::Postgres(e))
                if !handed.get() && is_read(sql) && self.replaced_closed(&e) =>
            {
                attempt()
            }
            other => other,
        }
    }

    fn execute_batch(&self, sql: &str) -> DbResult<()> {
        Ok(self.client.borrow_mut().batch_execute(sql)?)
    }
}

/// Whether `sql` only reads (so it may be run again on a new connection).
fn is_read(sql: &str) -> bool {
    let start = sql.trim_start().get(..6).unwrap_or("");
    start.eq_ignore_ascii_case("SELECT") || start.eq_ignore_ascii_case("WITH R")
}

/// The connection settings of `url`, with libpq's PG* variables for what it leaves out.
pub fn config_of(url: &str) -> Result<Config> {
    let bad = |why: String| Error::invalid(format!("catalog {}", redact(url)), why);
    let mut config: Config = url
        .parse()
        .map_err(|e| bad(format!("is not a PostgreSQL URL: {e}")))?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        config.host(&env("PGHOST").unwrap_or_else(|| "localhost".into()));
    }
    if config.get_ports().is_empty()
        && let Some(p) = env("PGPORT")
    {
        config.port(
            p.parse()
                .map_err(|_| bad(format!("PGPORT={p} is not a port")))?,
        );
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_password().is_none()
        && let Some(p) = env("PGPASSWORD")
    {
        config.password(p);
    }
    if config.get_dbname().is_none()
        && let Some(d) = env("PGDATABASE")
    {
        config.dbname(&d);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("artifactfs");
    Ok(config)
}

/// A URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn shown(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_literals() {
        assert_eq!(
            placeholders("SELECT ?1, '?2', ?12 FROM t WHERE a = ?3"),
            "SELECT $1, '?2', $12 FROM t WHERE a = $3"
        );
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
