//! A small connection pool for the PostgreSQL backend.
//!
//! Each connection carries its prepared statements. A connection handed back while a transaction
//! may still be open on it (a transaction dropped without commit, or one that failed half-way)
//! is rolled back in a background task before anyone else can take it, so no reader inherits
//! another transaction's snapshot or locks.

use super::sql::Sql;
use super::{BACKEND, classify};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls, Statement};

/// Prepared statements of one connection.
pub(super) struct Statements {
    pub get: Statement,
    pub get_many: Statement,
    pub range_asc: Statement,
    pub range_desc: Statement,
    pub upsert: Statement,
    pub add: Statement,
    pub delete: Statement,
    pub delete_range: Statement,
    pub notify: Statement,
    pub occ: Statement,
}

pub(super) struct Conn {
    pub client: Client,
    pub stmts: Statements,
}

pub(super) struct Pool {
    config: tokio_postgres::Config,
    url: String,
    sql: Arc<Sql>,
    permits: Arc<Semaphore>,
    /// The urgent lane: connections beyond `size` for urgent transactions only, so a lease
    /// heartbeat never queues behind thousands of resolves.
    urgent_permits: Arc<Semaphore>,
    idle: Mutex<Vec<Conn>>,
}

/// Connections the urgent lane may use besides the pool's size.
const URGENT_LANE: usize = 2;

impl Pool {
    pub(super) fn new(
        config: tokio_postgres::Config,
        url: String,
        sql: Arc<Sql>,
        size: usize,
    ) -> Arc<Self> {
        Arc::new(Pool {
            config,
            url,
            sql,
            permits: Arc::new(Semaphore::new(size)),
            urgent_permits: Arc::new(Semaphore::new(URGENT_LANE)),
            idle: Mutex::new(Vec::with_capacity(size + URGENT_LANE)),
        })
    }

    /// Opens a new connection. The store was reachable when it was opened, so a failure now is
    /// an outage ([`Error::ConnectionLost`], retried), named with the URL and the server's word.
    pub(super) async fn connect(&self) -> Result<Conn> {
        let (client, connection) =
            self.config
                .connect(NoTls)
                .await
                .map_err(|e| Error::ConnectionLost {
                    backend: BACKEND,
                    detail: format!("cannot connect to {}: {}", self.url, super::describe(&e)),
                })?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; callers see the latter
            // as `ConnectionLost` on their next statement.
            let _ = connection.await;
        });
        let sql = &self.sql;
        let prepare = |text: &str| {
            let text = text.to_string();
            let client = &client;
            async move { client.prepare(&text).await.map_err(|e| classify(e, false)) }
        };
        // Pipelined: one round trip for all of them.
        let (get, get_many, range_asc, range_desc, upsert, add, delete, delete_range, notify, occ) =
            futures::try_join!(
                prepare(&sql.get),
                prepare(&sql.get_many),
                prepare(&sql.range_asc),
                prepare(&sql.range_desc),
                prepare(&sql.upsert),
                prepare(&sql.add),
                prepare(&sql.delete),
                prepare(&sql.delete_range),
                prepare(&sql.notify),
                prepare(&sql.occ),
            )?;
        let stmts = Statements {
            get,
            get_many,
            range_asc,
            range_desc,
            upsert,
            add,
            delete,
            delete_range,
            notify,
            occ,
        };
        Ok(Conn { client, stmts })
    }

    /// Takes a connection, waiting while all of its lane are in use.
    pub(super) async fn checkout(self: &Arc<Self>, urgent: bool) -> Result<Pooled> {
        let lane = if urgent {
            &self.urgent_permits
        } else {
            &self.permits
        };
        let permit = lane
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Backend {
                backend: BACKEND,
                detail: "connection pool closed".into(),
            })?;
        let reused = {
            let mut idle = self.idle.lock();
            let mut found = None;
            while let Some(conn) = idle.pop() {
                if !conn.client.is_closed() {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        let conn = match reused {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            permit: Some(permit),
            pool: self.clone(),
            dirty: false,
        })
    }

    fn put_back(&self, conn: Conn) {
        if !conn.client.is_closed() {
            self.idle.lock().push(conn);
        }
    }
}

/// A connection on loan from the pool.
pub(super) struct Pooled {
    conn: Option<Conn>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Pool>,
    /// A transaction may be open on the connection: roll back before reuse.
    pub dirty: bool,
}

impl Pooled {
    pub(super) fn conn(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("a pooled connection is present until drop")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let (Some(conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        if !self.dirty {
            self.pool.put_back(conn);
            drop(permit);
            return;
        }
        let pool = self.pool.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if conn.client.batch_execute("ROLLBACK").await.is_ok() {
                    pool.put_back(conn);
                }
                drop(permit);
            });
        }
        // Without a runtime the connection is simply closed, which also ends its transaction.
    }
}
