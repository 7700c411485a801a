//! SQLite below the catalog's queries: the embedded store's engine. Statements are prepared
//! once per connection and kept (SQLite's statement cache), parameters bound by number.

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::sql::{DbError, DbResult, Dialect, Param, Row, Sql, Value};

/// Statements each connection keeps prepared: every query the catalog makes, with room.
pub const STATEMENT_CACHE: usize = 128;

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Null => ValueRef::Null,
            Param::Int(i) => ValueRef::Integer(i),
            Param::Text(t) => ValueRef::Text(t.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[Param]) -> DbResult<()> {
    for (i, p) in params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, p)?;
    }
    Ok(())
}

fn value(v: ValueRef<'_>) -> DbResult<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec())
                .map_err(|_| DbError::Decode("a text column is not UTF-8".into()))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

impl Sql for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn store(&self) -> String {
        self.path()
            .and_then(|p| std::path::Path::new(p).parent())
            .map_or_else(|| "?".into(), |d| d.display().to_string())
    }

    fn execute(&self, sql: &str, params: &[Param]) -> DbResult<usize> {
        let mut stmt = self.prepare_cached(sql)?;
        bind(&mut stmt, params)?;
        Ok(stmt.raw_execute()?)
    }

    fn query_each(
        &self,
        sql: &str,
        params: &[Param],
        each: &mut dyn FnMut(&Row) -> DbResult<()>,
    ) -> DbResult<()> {
        let mut stmt = self.prepare_cached(sql)?;
        bind(&mut stmt, params)?;
        let columns = stmt.column_count();
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next()? {
            let row = (0..columns)
                .map(|i| value(r.get_ref(i)?))
                .collect::<DbResult<Vec<Value>>>()?;
            each(&Row(row))?;
        }
        Ok(())
    }

    fn execute_batch(&self, sql: &str) -> DbResult<()> {
        Ok(Connection::execute_batch(self, sql)?)
    }
}
