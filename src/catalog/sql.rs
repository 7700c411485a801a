//! The seam between the catalog's queries and the database engines below them (SQLite for an
//! embedded store, PostgreSQL for a shared one). The queries are written once, in the SQL
//! both engines speak, with `?1`, `?2`… for parameters; an engine runs a statement with
//! parameters and hands back rows of plain values. What only one engine has (PRAGMAs, temp
//! tables, hex encoding) is asked for by [`Dialect`] where it is needed.

use std::fmt;

/// A parameter bound to a statement.
#[derive(Clone, Copy, Debug)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A value read from a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    pub fn as_param(&self) -> Param<'_> {
        match self {
            Value::Null => Param::Null,
            Value::Int(i) => Param::Int(*i),
            Value::Text(t) => Param::Text(t),
            Value::Blob(b) => Param::Blob(b),
        }
    }
}

/// Which engine runs the statements, for the little SQL that differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// An error from an engine, or a value of the wrong kind in a row.
#[derive(Debug)]
pub enum DbError {
    Sqlite(rusqlite::Error),
    Postgres(postgres::Error),
    /// A column holding something other than what the query reads from it.
    Decode(String),
}

/// What an engine's error means to the rest of the program, whichever engine it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Another writer held the database too long.
    Busy,
    Full,
    ReadOnly,
    /// The database is damaged (or is not one).
    Corrupt,
    /// A uniqueness constraint: what was to be made exists.
    Duplicate,
    /// The database cannot be reached, or the connection broke.
    Unreachable,
    Other,
}

impl DbError {
    pub fn failure(&self) -> Failure {
        match self {
            DbError::Sqlite(e) => match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                    Failure::Busy
                }
                Some(rusqlite::ErrorCode::DiskFull) => Failure::Full,
                Some(rusqlite::ErrorCode::ReadOnly) => Failure::ReadOnly,
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                    Failure::Corrupt
                }
                Some(rusqlite::ErrorCode::ConstraintViolation) => Failure::Duplicate,
                _ => Failure::Other,
            },
            DbError::Postgres(e) => {
                use postgres::error::SqlState;
                match e.code() {
                    Some(c) if *c == SqlState::UNIQUE_VIOLATION => Failure::Duplicate,
                    Some(c) if *c == SqlState::DISK_FULL => Failure::Full,
                    Some(c) if *c == SqlState::READ_ONLY_SQL_TRANSACTION => Failure::ReadOnly,
                    Some(c)
                        if *c == SqlState::LOCK_NOT_AVAILABLE
                            || *c == SqlState::QUERY_CANCELED
                            || *c == SqlState::T_R_DEADLOCK_DETECTED =>
                    {
                        Failure::Busy
                    }
                    Some(c)
                        if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED =>
                    {
                        Failure::Corrupt
                    }
                    None if e.is_closed() => Failure::Unreachable,
                    None => Failure::Unreachable,
                    _ => Failure::Other,
                }
            }
            DbError::Decode(_) => Failure::Corrupt,
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Sqlite(e) => write!(f, "{e}"),
            DbError::Postgres(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}", db.message()),
                None => write!(f, "{e}"),
            },
            DbError::Decode(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

pub type DbResult<T> = std::result::Result<T, DbError>;

/// A row of a result, its columns in the order the query names them.
#[derive(Debug)]
pub struct Row(pub(super) Vec<Value>);

impl Row {
    /// Every column, in order: for copying a row whatever its types.
    pub fn values(&self) -> &[Value] {
        &self.0
    }

    pub fn get<T: FromValue>(&self, index: usize) -> DbResult<T> {
        let v = self
            .0
            .get(index)
            .ok_or_else(|| DbError::Decode(format!("no column {index}")))?;
        T::from_value(v).ok_or_else(|| {
            DbError::Decode(format!(
                "column {index} holds {v:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// What a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            Value::Text(s) => Some(s.clone().into_bytes()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl From<$t> for Param<'_> {
            fn from(v: $t) -> Self {
                Param::Int(v as i64)
            }
        }
    )*};
}
int_param!(i64, i32, u32, u64, usize);

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Int(v as i64)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Blob(v)
    }
}

impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Param::Blob(v)
    }
}

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// The parameters of a statement: `params![a, b]`.
#[macro_export]
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$($crate::catalog::sql::Param::from($p)),*][..]
    };
}

/// A database an engine gives access to: a connection, inside a transaction or not.
pub trait Sql {
    fn dialect(&self) -> Dialect;

    /// The store this database is the catalog of, for naming it in errors.
    fn store(&self) -> String;

    /// Runs a statement that returns no rows; returns how many rows it changed.
    fn execute(&self, sql: &str, params: &[Param]) -> DbResult<usize>;

    /// Runs a query, handing each row to `each` as it arrives: a result of any size takes no
    /// more memory than a row.
    fn query_each(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&Row) -> DbResult<()>,
    ) -> DbResult<()>;

    /// Runs several statements without parameters (schema changes, temporary tables).
    fn execute_batch(&self, sql: &str) -> DbResult<()>;
}

/// The catalog's view of a database.
pub type Db = dyn Sql;

impl dyn Sql + '_ {
    /// Every row of a query, read by `f`.
    pub fn query<T>(
        &self,
        sql: &str,
        params: &[Param],
        mut f: impl FnMut(&Row) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        let mut out = Vec::new();
        self.query_each(sql, params, &mut |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of a query, if there is one.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Param],
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        let mut f = Some(f);
        let mut out = None;
        self.query_each(sql, params, &mut |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The one row a query must return (an aggregate, a `RETURNING`).
    pub fn query_one<T>(
        &self,
        sql: &str,
        params: &[Param],
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<T> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| DbError::Decode(format!("no row from {sql}")))
    }
}
