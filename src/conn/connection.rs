//! One session with a PostgreSQL server: socket, framing, startup and
//! authentication, and the simple query protocol.
//!
//! The connection is owned by one task and used through `&mut self`: every
//! user of it (a copy stream, an apply worker) has its own session, so there
//! is nothing to multiplex and no channel hop on the hot path.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpStream, UnixStream};

use super::error::{ConnError, DbError};
use super::params::{ConnectParams, Host};
use super::row::Row;
use super::tls::{self, SslMode};

/// A byte stream to the server: TCP, unix socket or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Largest backend message accepted. PostgreSQL's own limit for a field is
/// 1 GB; anything larger is a corrupt length, not data.
const MAX_MESSAGE_LEN: usize = 1 << 30 | 1 << 20;

/// Bytes requested from the socket per read: large enough that a COPY
/// stream moves in few syscalls.
const READ_CHUNK: usize = 256 * 1024;

/// What is needed to cancel the running query from another task.
#[derive(Debug, Clone)]
pub struct CancelToken {
    pub(crate) params: Arc<ConnectParams>,
    pub(crate) process_id: i32,
    pub(crate) secret_key: i32,
}

/// An open, authenticated session.
pub struct Connection {
    pub(crate) reader: ReadHalf<Box<dyn Io>>,
    pub(crate) writer: WriteHalf<Box<dyn Io>>,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    pub(crate) params: Arc<ConnectParams>,
    server_params: Vec<(String, String)>,
    process_id: i32,
    secret_key: i32,
    /// Set when a COPY or pipeline was abandoned half way: the session is
    /// out of step with the server and must not be reused.
    pub(crate) broken: bool,
    /// Executions queued by the pipeline methods since the last Sync.
    pub(crate) queued: usize,
    tls: bool,
}

impl Connection {
    /// Connects, negotiates TLS per `sslmode`, authenticates and waits until
    /// the server is ready for queries, all within `connect_timeout`.
    pub async fn connect(params: &ConnectParams) -> Result<Connection, ConnError> {
        let limit = params.connect_timeout;
        match tokio::time::timeout(limit, Self::connect_inner(params)).await {
            Ok(result) => result,
            Err(_) => Err(ConnError::Timeout {
                target: params.target(),
                seconds: limit.as_secs(),
            }),
        }
    }

    async fn connect_inner(params: &ConnectParams) -> Result<Connection, ConnError> {
        let target = params.target();
        let (io, tls): (Box<dyn Io>, bool) = match &params.host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", params.port));
                let s = UnixStream::connect(&path)
                    .await
                    .map_err(|source| ConnError::Connect {
                        target: target.clone(),
                        source,
                    })?;
                (Box::new(s), false)
            }
            Host::Tcp(host) => {
                let s = match params.hostaddr {
                    Some(addr) => TcpStream::connect((addr, params.port)).await,
                    None => TcpStream::connect((host.as_str(), params.port)).await,
                }
                .map_err(|source| ConnError::Connect {
                    target: target.clone(),
                    source,
                })?;
                // Small protocol messages (standby status, Sync) must not
                // wait for Nagle.
                s.set_nodelay(true)?;
                Self::negotiate_tls(s, host, params).await?
            }
        };
        let (reader, writer) = tokio::io::split(io);
        let mut conn = Connection {
            reader,
            writer,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(8 * 1024),
            params: Arc::new(params.clone()),
            server_params: Vec::new(),
            process_id: 0,
            secret_key: 0,
            broken: false,
            queued: 0,
            tls,
        };
        conn.startup().await?;
        Ok(conn)
    }

    async fn negotiate_tls(
        mut s: TcpStream,
        host: &str,
        params: &ConnectParams,
    ) -> Result<(Box<dyn Io>, bool), ConnError> {
        let target = params.target();
        if params.sslmode == SslMode::Disable {
            return Ok((Box::new(s), false));
        }
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        s.write_all(&buf).await?;
        let answer = s.read_u8().await.map_err(|_| ConnError::Closed)?;
        match answer {
            b'S' => {}
            b'N' | b'E' if params.sslmode == SslMode::Prefer => return Ok((Box::new(s), false)),
            b'N' | b'E' => {
                return Err(ConnError::Tls {
                    target,
                    reason: format!(
                        "the server does not accept TLS connections but sslmode is {:?}; enable ssl on the server or lower sslmode",
                        params.sslmode
                    ),
                })
            }
            other => {
                return Err(ConnError::protocol(format!(
                    "unexpected answer {other:#x} to SSLRequest from {target}"
                )))
            }
        }
        let config = tls::client_config(params.sslmode, params.sslrootcert.as_deref()).map_err(
            |reason| ConnError::Tls {
                target: target.clone(),
                reason,
            },
        )?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
            ConnError::Tls {
                target: target.clone(),
                reason: format!("invalid server name {host:?}: {e}"),
            }
        })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let stream = connector
            .connect(name, s)
            .await
            .map_err(|e| ConnError::Tls {
                target,
                reason: e.to_string(),
            })?;
        Ok((Box::new(stream), true))
    }

    async fn startup(&mut self) -> Result<(), ConnError> {
        let p = self.params.clone();
        let mut startup: Vec<(&str, &str)> = vec![
            ("user", p.user.as_str()),
            ("database", p.database.as_str()),
            ("application_name", p.application_name.as_str()),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "3"),
        ];
        if p.replication {
            startup.push(("replication", "database"));
        }
        for (k, v) in &p.options {
            startup.push((k.as_str(), v.as_str()));
        }
        frontend::startup_message(startup.iter().copied(), &mut self.wbuf)?;
        self.flush().await?;
        self.authenticate().await?;
        loop {
            match self.next_message().await? {
                Message::BackendKeyData(body) => {
                    self.process_id = body.process_id();
                    self.secret_key = body.secret_key();
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(ConnError::Db(Box::new(DbError::from_fields(
                        body.fields(),
                    )?)))
                }
                _ => return Err(ConnError::protocol("unexpected message during startup")),
            }
        }
    }

    fn password(&self, method: &str) -> Result<String, ConnError> {
        self.params.password.clone().ok_or_else(|| ConnError::Auth {
            user: self.params.user.clone(),
            reason: format!(
                "the server {} asks for {method} authentication but no password is configured (set password_env or password_file)",
                self.params.target()
            ),
        })
    }

    async fn authenticate(&mut self) -> Result<(), ConnError> {
        loop {
            match self.next_message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let pw = self.password("password")?;
                    frontend::password_message(pw.as_bytes(), &mut self.wbuf)?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = self.password("md5")?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        self.params.user.as_bytes(),
                        pw.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    use fallible_iterator::FallibleIterator;
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(m) = mechanisms
                        .next()
                        .map_err(|e| ConnError::protocol(format!("bad SASL mechanism list: {e}")))?
                    {
                        scram |= m == "SCRAM-SHA-256";
                    }
                    if !scram {
                        return Err(ConnError::Auth {
                            user: self.params.user.clone(),
                            reason: "the server offers no SASL mechanism we support (SCRAM-SHA-256)".into(),
                        });
                    }
                    let pw = self.password("SCRAM-SHA-256")?;
                    // Channel binding would need the server certificate's
                    // hash; "client does not support" ("n") is accepted by
                    // every server and avoids a downgrade flag ("y").
                    let binding = if self.tls {
                        ChannelBinding::unsupported()
                    } else {
                        ChannelBinding::unrequested()
                    };
                    let mut state = ScramSha256::new(pw.as_bytes(), binding);
                    frontend::sasl_initial_response("SCRAM-SHA-256", state.message(), &mut self.wbuf)?;
                    self.flush().await?;
                    self.scram_exchange(&mut state).await?;
                }
                Message::ErrorResponse(body) => {
                    return Err(ConnError::Db(Box::new(DbError::from_fields(body.fields())?)))
                }
                Message::AuthenticationGss | Message::AuthenticationSspi | Message::AuthenticationKerberosV5 => {
                    return Err(ConnError::Auth {
                        user: self.params.user.clone(),
                        reason: "the server asks for GSSAPI/SSPI/Kerberos, which pgmigrate does not support; use scram-sha-256 or md5 in pg_hba.conf".into(),
                    })
                }
                _ => return Err(ConnError::protocol("unexpected message during authentication")),
            }
        }
    }

    async fn scram_exchange(&mut self, state: &mut ScramSha256) -> Result<(), ConnError> {
        match self.next_message().await? {
            Message::AuthenticationSaslContinue(body) => {
                state
                    .update(body.data())
                    .map_err(|e| ConnError::protocol(format!("SCRAM: {e}")))?;
                frontend::sasl_response(state.message(), &mut self.wbuf)?;
                self.flush().await?;
            }
            Message::ErrorResponse(body) => {
                return Err(ConnError::Db(Box::new(DbError::from_fields(
                    body.fields(),
                )?)))
            }
            _ => return Err(ConnError::protocol("unexpected message in SCRAM exchange")),
        }
        match self.next_message().await? {
            Message::AuthenticationSaslFinal(body) => {
                state.finish(body.data()).map_err(|e| ConnError::Auth {
                    user: self.params.user.clone(),
                    reason: format!("the server's SCRAM proof is invalid: {e}"),
                })
            }
            Message::ErrorResponse(body) => Err(ConnError::Db(Box::new(DbError::from_fields(
                body.fields(),
            )?))),
            _ => Err(ConnError::protocol("unexpected message in SCRAM exchange")),
        }
    }

    /// The value of a parameter the server reported (`server_version`,
    /// `server_encoding`, `integer_datetimes`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.server_params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The server's major version (12, 15, 18…), from `server_version`.
    pub fn server_major(&self) -> u32 {
        self.parameter("server_version")
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// The parameters this session was opened with.
    pub fn connect_params(&self) -> &ConnectParams {
        &self.params
    }

    /// A handle that can cancel this session's running query.
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken {
            params: self.params.clone(),
            process_id: self.process_id,
            secret_key: self.secret_key,
        }
    }

    /// True when the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub(crate) fn check_usable(&self) -> Result<(), ConnError> {
        if self.broken {
            Err(ConnError::protocol(
                "session was left in the middle of a COPY or pipeline and cannot be reused",
            ))
        } else {
            Ok(())
        }
    }

    /// Sends everything buffered in `wbuf`.
    pub(crate) async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.wbuf.is_empty() {
            let buf = self.wbuf.split();
            self.writer.write_all(&buf).await?;
        }
        self.writer.flush().await?;
        Ok(())
    }

    /// Reads more bytes from the socket into `rbuf`. Cancel-safe: bytes
    /// read are never lost.
    pub(crate) async fn fill(&mut self) -> Result<(), ConnError> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let n = self.reader.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        Ok(())
    }

    /// Tag and total length (with the tag byte) of the message at the front
    /// of `rbuf`, if its header is there.
    pub(crate) fn peek_header(&self) -> Result<Option<(u8, usize)>, ConnError> {
        let Some(header) = self.rbuf.get(..5) else {
            return Ok(None);
        };
        let tag = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if !(4..=MAX_MESSAGE_LEN).contains(&len) {
            return Err(ConnError::protocol(format!(
                "invalid length {len} for message '{}'",
                tag.escape_ascii()
            )));
        }
        Ok(Some((tag, len + 1)))
    }

    /// Ensures one whole message is buffered and returns its tag and length.
    pub(crate) async fn buffer_message(&mut self) -> Result<(u8, usize), ConnError> {
        loop {
            if let Some((tag, total)) = self.peek_header()? {
                if self.rbuf.len() >= total {
                    return Ok((tag, total));
                }
                self.rbuf.reserve(total - self.rbuf.len());
            }
            self.fill().await?;
        }
    }

    /// The next message that matters to the caller: notices are logged and
    /// parameter changes recorded on the way.
    pub(crate) async fn next_message(&mut self) -> Result<Message, ConnError> {
        loop {
            let (tag, total) = self.buffer_message().await?;
            if tag == b'W' {
                // CopyBothResponse, unknown to postgres-protocol's parser;
                // only the replication path expects it.
                self.rbuf.advance(total);
                return Err(ConnError::protocol("unexpected CopyBothResponse"));
            }
            let msg = Message::parse(&mut self.rbuf)
                .map_err(|e| {
                    ConnError::protocol(format!("malformed message '{}': {e}", tag.escape_ascii()))
                })?
                .ok_or_else(|| ConnError::protocol("incomplete message after buffering"))?;
            match msg {
                Message::NoticeResponse(body) => {
                    if let Ok(n) = DbError::from_fields(body.fields()) {
                        tracing::info!(server = %self.params.target(), "{}: {}", n.severity, n.message);
                    }
                }
                Message::ParameterStatus(body) => {
                    let name = body
                        .name()
                        .map_err(|e| ConnError::protocol(e.to_string()))?
                        .to_string();
                    let value = body
                        .value()
                        .map_err(|e| ConnError::protocol(e.to_string()))?
                        .to_string();
                    match self.server_params.iter_mut().find(|(k, _)| *k == name) {
                        Some(slot) => slot.1 = value,
                        None => self.server_params.push((name, value)),
                    }
                }
                Message::NotificationResponse(_) => {}
                other => return Ok(other),
            }
        }
    }

    /// Reads until ReadyForQuery, returning the first server error seen.
    pub(crate) async fn drain_to_ready(
        &mut self,
        mut first_error: Option<ConnError>,
    ) -> Result<(), ConnError> {
        loop {
            match self.next_message().await {
                Ok(Message::ReadyForQuery(_)) => break,
                Ok(Message::ErrorResponse(body)) => {
                    let e = ConnError::Db(Box::new(DbError::from_fields(body.fields())?));
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(first_error.unwrap_or(e));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs one or more SQL statements with the simple query protocol and
    /// returns the rows of all of them, as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, ConnError> {
        let (rows, _) = self.simple_query_tagged(sql).await?;
        Ok(rows)
    }

    /// Runs SQL statements and returns the row count of the last command
    /// (`UPDATE 5` → 5; 0 for commands without a count).
    pub async fn execute(&mut self, sql: &str) -> Result<u64, ConnError> {
        let (_, tag) = self.simple_query_tagged(sql).await?;
        Ok(tag.as_deref().map(rows_from_tag).unwrap_or(0))
    }

    async fn simple_query_tagged(
        &mut self,
        sql: &str,
    ) -> Result<(Vec<Row>, Option<String>), ConnError> {
        self.check_usable()?;
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut last_tag = None;
        loop {
            match self.next_message().await? {
                Message::DataRow(body) => rows.push(Row::from_body(body)?),
                Message::CommandComplete(body) => {
                    last_tag = Some(
                        body.tag()
                            .map_err(|e| ConnError::protocol(e.to_string()))?
                            .to_string(),
                    )
                }
                Message::ReadyForQuery(_) => return Ok((rows, last_tag)),
                Message::ErrorResponse(body) => {
                    let e = ConnError::Db(Box::new(DbError::from_fields(body.fields())?));
                    self.drain_to_ready(Some(e)).await?;
                    return Err(ConnError::protocol("error lost while draining"));
                }
                Message::CopyInResponse(_) => {
                    // A COPY FROM STDIN slipped into a script: refuse it
                    // so the session stays in step.
                    frontend::copy_fail("COPY FROM STDIN is not allowed here", &mut self.wbuf)?;
                    self.flush().await?;
                }
                Message::CopyOutResponse(_) | Message::CopyData(_) | Message::CopyDone => {}
                Message::RowDescription(_) | Message::EmptyQueryResponse => {}
                _ => {}
            }
        }
    }

    /// Ends the session politely.
    pub async fn close(mut self) -> Result<(), ConnError> {
        frontend::terminate(&mut self.wbuf);
        self.flush().await?;
        let _ = self.writer.shutdown().await;
        Ok(())
    }

    /// Takes the raw CopyData payload of the front message (zero-copy).
    pub(crate) fn take_copy_data(&mut self, total: usize) -> Bytes {
        let mut frame = self.rbuf.split_to(total).freeze();
        frame.advance(5);
        frame
    }
}

/// Row count from a command tag: `INSERT 0 5`, `UPDATE 5`, `COPY 5`.
pub(crate) fn rows_from_tag(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl CancelToken {
    /// Asks the server to cancel whatever this session is running. The
    /// request goes over a new, unencrypted connection, as the protocol
    /// handles cancel before authentication.
    pub async fn cancel(&self) -> Result<(), ConnError> {
        let mut buf = BytesMut::new();
        frontend::cancel_request(self.process_id, self.secret_key, &mut buf);
        let target = self.params.target();
        match &self.params.host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", self.params.port));
                let mut s = UnixStream::connect(&path)
                    .await
                    .map_err(|source| ConnError::Connect { target, source })?;
                s.write_all(&buf).await?;
                let mut sink = [0u8; 1];
                let _ = s.read(&mut sink).await;
            }
            Host::Tcp(host) => {
                let mut s = match self.params.hostaddr {
                    Some(addr) => TcpStream::connect((addr, self.params.port)).await,
                    None => TcpStream::connect((host.as_str(), self.params.port)).await,
                }
                .map_err(|source| ConnError::Connect { target, source })?;
                s.write_all(&buf).await?;
                let mut sink = [0u8; 1];
                let _ = s.read(&mut sink).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::rows_from_tag;

    #[test]
    fn tags() {
        assert_eq!(rows_from_tag("INSERT 0 5"), 5);
        assert_eq!(rows_from_tag("COPY 123"), 123);
        assert_eq!(rows_from_tag("CREATE TABLE"), 0);
    }
}
