//! The extended query protocol: parameters sent apart from the SQL text,
//! prepared statements, and pipelines of many executions with one Sync.

use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

use super::connection::{rows_from_tag, Connection};
use super::error::{ConnError, DbError};
use super::row::Row;

/// One parameter value.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// Text format (the server parses it with the type's input function).
    Text(&'a str),
    /// Binary format (the type's receive function), e.g. raw bytea.
    Binary(&'a [u8]),
    /// Text format given as bytes already in the session's encoding (a
    /// replicated value passed on without a UTF-8 check).
    RawText(&'a [u8]),
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Param<'a> {
        v.map_or(Param::Null, Param::Text)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Param<'a> {
        Param::Text(v)
    }
}

/// A pipeline that failed: the error, and how many of its executions
/// completed before the one that failed.
#[derive(Debug)]
pub struct PipelineError {
    /// Executions that completed (their CommandComplete arrived).
    pub completed: usize,
    /// The first error.
    pub error: ConnError,
}

/// A statement prepared on this session under a name.
#[derive(Debug, Clone)]
pub struct Statement {
    name: String,
}

impl Statement {
    /// The server-side name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn write_bind(
    buf: &mut bytes::BytesMut,
    statement: &str,
    params: &[Param<'_>],
) -> Result<(), ConnError> {
    let formats = params.iter().map(|p| match p {
        Param::Binary(_) => 1i16,
        _ => 0,
    });
    let r = frontend::bind(
        "",
        statement,
        formats,
        params.iter(),
        |p, out| match p {
            Param::Null => Ok(IsNull::Yes),
            Param::Text(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Param::Binary(b) | Param::RawText(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        },
        Some(0i16),
        buf,
    );
    match r {
        Ok(()) => Ok(()),
        Err(frontend::BindError::Conversion(e)) => Err(ConnError::protocol(format!("bind: {e}"))),
        Err(frontend::BindError::Serialization(e)) => Err(ConnError::Io(e)),
    }
}

impl Connection {
    /// Runs one statement with parameters and returns its rows as text.
    pub async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, ConnError> {
        self.check_usable()?;
        frontend::parse("", sql, std::iter::empty(), &mut self.wbuf)?;
        write_bind(&mut self.wbuf, "", params)?;
        frontend::execute("", 0, &mut self.wbuf)?;
        frontend::sync(&mut self.wbuf);
        self.flush().await?;
        let mut rows = Vec::new();
        loop {
            match self.next_message().await? {
                Message::DataRow(body) => rows.push(Row::from_body(body)?),
                Message::ReadyForQuery(_) => return Ok(rows),
                Message::ErrorResponse(body) => {
                    let e = ConnError::Db(Box::new(DbError::from_fields(body.fields())?));
                    self.drain_to_ready(Some(e)).await?;
                    return Err(ConnError::protocol("error lost while draining"));
                }
                _ => {}
            }
        }
    }

    /// Runs one statement with parameters and returns its row count.
    pub async fn execute_params(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<u64, ConnError> {
        let mut p = self.pipeline();
        p.query(sql, params)?;
        let counts = p.finish().await?;
        Ok(counts.first().copied().unwrap_or(0))
    }

    /// Prepares `sql` under `name` (parameter types inferred by the server
    /// unless given as OIDs).
    pub async fn prepare(
        &mut self,
        name: &str,
        sql: &str,
        param_types: &[u32],
    ) -> Result<Statement, ConnError> {
        self.check_usable()?;
        frontend::parse(name, sql, param_types.iter().copied(), &mut self.wbuf)?;
        frontend::sync(&mut self.wbuf);
        self.flush().await?;
        self.drain_to_ready(None).await?;
        Ok(Statement {
            name: name.to_string(),
        })
    }

    /// Starts a pipeline: executions are buffered and sent together, and
    /// their results read after one Sync.
    pub fn pipeline(&mut self) -> Pipeline<'_> {
        Pipeline { conn: self }
    }

    /// Queues `Parse` of a named statement; its result is read by the next
    /// [`Connection::sync`]. Lets an apply worker prepare statements on the
    /// fly without a round trip of their own.
    pub fn queue_parse(&mut self, name: &str, sql: &str) -> Result<(), ConnError> {
        frontend::parse(name, sql, std::iter::empty(), &mut self.wbuf)?;
        Ok(())
    }

    /// Queues a Parse of `sql` as the prepared statement `name` with the
    /// parameters' type OIDs given (0 leaves one to the server), for
    /// statements whose parameters the server cannot infer, such as the
    /// arrays given to `unnest`.
    pub fn queue_parse_typed(
        &mut self,
        name: &str,
        sql: &str,
        param_types: &[u32],
    ) -> Result<(), ConnError> {
        frontend::parse(name, sql, param_types.iter().copied(), &mut self.wbuf)?;
        Ok(())
    }

    /// Queues an execution of the statement `name` ("" for the unnamed one).
    pub fn queue_execute(&mut self, name: &str, params: &[Param<'_>]) -> Result<(), ConnError> {
        write_bind(&mut self.wbuf, name, params)?;
        frontend::execute("", 0, &mut self.wbuf)?;
        self.queued += 1;
        Ok(())
    }

    /// Queues a statement without parameters through the unnamed statement.
    pub fn queue_statement(&mut self, sql: &str) -> Result<(), ConnError> {
        frontend::parse("", sql, std::iter::empty(), &mut self.wbuf)?;
        self.queue_execute("", &[])
    }

    /// Executions queued since the last sync.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Bytes of queued messages not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.wbuf.len()
    }

    /// Sends Sync and reads every queued result, returning each
    /// execution's row count in order; the first server error fails the
    /// whole batch (inside BEGIN, the transaction is then aborted). Writing
    /// and reading run together so a long pipeline cannot deadlock on full
    /// socket buffers.
    pub async fn sync(&mut self) -> Result<Vec<u64>, ConnError> {
        self.sync_pipeline().await.map_err(|e| e.error)
    }

    /// [`Connection::sync`], but a failure also says how many executions
    /// completed before it: the one at that index is the one that failed
    /// (its Parse, Bind or Execute), so a caller can name what it was.
    pub async fn sync_pipeline(&mut self) -> Result<Vec<u64>, PipelineError> {
        let fail = |completed: usize| move |error: ConnError| PipelineError { completed, error };
        self.check_usable().map_err(fail(0))?;
        frontend::sync(&mut self.wbuf);
        let out = self.wbuf.split();
        let mut counts = Vec::with_capacity(self.queued);
        self.queued = 0;
        let writer = &mut self.writer;
        let write = async move {
            use tokio::io::AsyncWriteExt;
            writer.write_all(&out).await?;
            writer.flush().await?;
            Ok::<(), ConnError>(())
        };
        let (w, r) = tokio::join!(
            write,
            read_pipeline_results(&mut self.reader, &mut self.rbuf, &mut counts)
        );
        if let Err(e) = w {
            self.broken = true;
            return Err(fail(counts.len())(e));
        }
        match r {
            Ok(None) => Ok(counts),
            Ok(Some(e)) => Err(fail(counts.len())(e)),
            Err(e) => {
                self.broken = true;
                Err(fail(counts.len())(e))
            }
        }
    }
}

/// Executions queued on a session, sent with one Sync. All of them run in
/// one implicit transaction unless the session is inside BEGIN.
pub struct Pipeline<'a> {
    conn: &'a mut Connection,
}

impl Pipeline<'_> {
    /// Queues an execution of a prepared statement.
    pub fn execute(&mut self, stmt: &Statement, params: &[Param<'_>]) -> Result<(), ConnError> {
        self.conn.queue_execute(&stmt.name, params)
    }

    /// Queues a one-off statement with parameters.
    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<(), ConnError> {
        self.conn.queue_parse("", sql)?;
        self.conn.queue_execute("", params)
    }

    /// Number of queued executions.
    pub fn len(&self) -> usize {
        self.conn.queued()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.conn.queued() == 0
    }

    /// Sends Sync and reads every result (see [`Connection::sync`]).
    pub async fn finish(self) -> Result<Vec<u64>, ConnError> {
        self.conn.sync().await
    }
}

/// Reads pipeline results up to ReadyForQuery without the `Connection`
/// (its writer is borrowed by the concurrent write). Returns the first
/// server error, if any, after the pipeline is fully drained.
async fn read_pipeline_results(
    reader: &mut tokio::io::ReadHalf<Box<dyn super::connection::Io>>,
    rbuf: &mut bytes::BytesMut,
    counts: &mut Vec<u64>,
) -> Result<Option<ConnError>, ConnError> {
    use tokio::io::AsyncReadExt;
    let mut first_error = None;
    loop {
        let msg = loop {
            match Message::parse(rbuf)
                .map_err(|e| ConnError::protocol(format!("malformed message: {e}")))?
            {
                Some(m) => break m,
                None => {
                    if rbuf.capacity() - rbuf.len() < 16 * 1024 {
                        rbuf.reserve(64 * 1024);
                    }
                    if reader.read_buf(rbuf).await? == 0 {
                        return Err(ConnError::Closed);
                    }
                }
            }
        };
        match msg {
            Message::CommandComplete(body) => {
                let tag = body.tag().map_err(|e| ConnError::protocol(e.to_string()))?;
                counts.push(rows_from_tag(tag));
            }
            Message::ErrorResponse(body) if first_error.is_none() => {
                first_error = Some(ConnError::Db(Box::new(DbError::from_fields(
                    body.fields(),
                )?)));
            }
            Message::ReadyForQuery(_) => return Ok(first_error),
            Message::NoticeResponse(body) => {
                if let Ok(n) = DbError::from_fields(body.fields()) {
                    tracing::info!("{}: {}", n.severity, n.message);
                }
            }
            _ => {}
        }
    }
}
