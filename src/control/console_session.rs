//! One admin console connection, from accept to close, with its bounds.
//!
//! pgwire reads whole messages of up to 1 GB into memory and has no idle
//! timeout, so a 200 MB query took the daemon from 17 to 864 MB and 16 idle
//! clients took every session for ever. Each connection therefore goes
//! through a guard before pgwire sees a byte: the guard reads the startup
//! packet itself (within [`SessionLimits::startup_timeout`]), decides on
//! admission, and then relays the session to pgwire over a socket pair,
//! checking the length of every message before it reads the body. A message
//! over [`SessionLimits::max_message_bytes`] (its body is discarded, not
//! read into memory, so the client gets to read the error), a session idle for
//! [`SessionLimits::idle_timeout`] or a message not finished within
//! [`SessionLimits::read_timeout`] ends the session with a short FATAL error
//! that never echoes what the client sent.
//!
//! Admission keeps [`SessionLimits::reserved_sessions`] slots for the
//! `pgmigrate` subcommands (they identify themselves by
//! [`CLI_APPLICATION_NAME`]), so `cutover` and `cancel` get through while
//! other clients hold every ordinary slot. A refused client gets its FATAL
//! 53300 only after its startup packet has been read, so it reads the reason
//! instead of failing on a write with "Broken pipe".

use std::io;
use std::sync::Arc;
use std::time::Duration;

use pgwire::api::PgWireServerHandlers;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::conn::sqlstate;

/// The `application_name` of the `show`, `cutover` and `cancel` clients,
/// which may use the reserved sessions.
pub const CLI_APPLICATION_NAME: &str = "pgmigrate-cli";

/// Bounds of the admin console.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Sessions any client may hold at once.
    pub max_sessions: usize,
    /// Further sessions only [`CLI_APPLICATION_NAME`] clients may hold.
    pub reserved_sessions: usize,
    /// Connections still sending their startup packet; more are closed at once.
    pub max_pending: usize,
    /// Time from accept to a complete startup packet.
    pub startup_timeout: Duration,
    /// Time a started message has to arrive completely.
    pub read_timeout: Duration,
    /// Time a session may stay silent between messages.
    pub idle_timeout: Duration,
    /// Largest message (type byte excluded) a client may send.
    pub max_message_bytes: u32,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits {
            max_sessions: 16,
            reserved_sessions: 2,
            max_pending: 64,
            startup_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_message_bytes: 64 * 1024,
        }
    }
}

/// The slots connections and sessions draw from.
#[derive(Debug)]
pub struct Admission {
    limits: SessionLimits,
    pending: Arc<Semaphore>,
    ordinary: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
}

impl Admission {
    /// Slots for `limits`.
    pub fn new(limits: SessionLimits) -> Admission {
        Admission {
            limits,
            pending: Arc::new(Semaphore::new(limits.max_pending)),
            ordinary: Arc::new(Semaphore::new(limits.max_sessions)),
            reserved: Arc::new(Semaphore::new(limits.reserved_sessions)),
        }
    }

    /// A slot for a fresh connection's startup, if any is free.
    pub fn pending(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.pending).try_acquire_owned().ok()
    }

    fn session(&self, application_name: Option<&str>) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.ordinary)
            .try_acquire_owned()
            .ok()
            .or_else(|| {
                (application_name == Some(CLI_APPLICATION_NAME))
                    .then(|| Arc::clone(&self.reserved).try_acquire_owned().ok())
                    .flatten()
            })
    }
}

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// PostgreSQL's own limit on a startup packet.
const MAX_STARTUP_BYTES: u32 = 10_000;
/// Time to let pgwire finish its last reply before the guard's FATAL.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client gets to take a FATAL error.
const ERROR_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the guard ended a session; each but `Closed` sends a FATAL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Closed,
    Fatal {
        sqlstate: &'static str,
        message: String,
    },
}

impl End {
    fn fatal(sqlstate: &'static str, message: String) -> End {
        End::Fatal { sqlstate, message }
    }
}

/// Serves one accepted connection to its end. `pending` is released once
/// the startup packet is in.
pub async fn run<H>(
    mut client: UnixStream,
    handlers: H,
    admission: Arc<Admission>,
    pending: OwnedSemaphorePermit,
) where
    H: PgWireServerHandlers + Send + Sync + 'static,
{
    let limits = admission.limits;
    let startup = tokio::time::timeout(limits.startup_timeout, read_startup(&mut client)).await;
    drop(pending);
    let startup = match startup {
        Ok(Ok(Some(packet))) => packet,
        // A cancel request, a timeout or garbage: nothing worth an answer.
        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
    };
    let app = application_name(&startup);
    let Some(slot) = admission.session(app.as_deref()) else {
        let message = format!(
            "the admin console serves at most {} sessions at once",
            limits.max_sessions
        );
        send_fatal(&mut client, sqlstate::TOO_MANY_CONNECTIONS, &message).await;
        return;
    };
    if let Err(e) = relay(client, startup, handlers, limits).await {
        tracing::debug!(error = %e, "console session ended with an error");
    }
    drop(slot);
}

/// Reads the startup packet, refusing SSL and GSS encryption on the way as
/// PostgreSQL does on a unix socket. `None` for a cancel request.
async fn read_startup(client: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    loop {
        let mut len = [0u8; 4];
        client.read_exact(&mut len).await?;
        let n = u32::from_be_bytes(len);
        if !(8..=MAX_STARTUP_BYTES).contains(&n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("startup packet length {n}"),
            ));
        }
        let mut packet = vec![0u8; n as usize];
        packet
            .get_mut(..4)
            .unwrap_or_default()
            .copy_from_slice(&len);
        client
            .read_exact(packet.get_mut(4..).unwrap_or_default())
            .await?;
        let code = packet
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .unwrap_or_default();
        match code {
            SSL_REQUEST | GSSENC_REQUEST => client.write_all(b"N").await?,
            CANCEL_REQUEST => return Ok(None),
            _ => return Ok(Some(packet)),
        }
    }
}

/// The `application_name` of a startup packet (length, version, then
/// NUL-terminated name/value pairs).
fn application_name(packet: &[u8]) -> Option<String> {
    let mut fields = packet.get(8..)?.split(|&b| b == 0);
    while let (Some(key), Some(value)) = (fields.next(), fields.next()) {
        if key.is_empty() {
            break;
        }
        if key == b"application_name" {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    None
}

/// Relays an admitted session between the client and pgwire.
async fn relay<H>(
    client: UnixStream,
    startup: Vec<u8>,
    handlers: H,
    limits: SessionLimits,
) -> io::Result<()>
where
    H: PgWireServerHandlers + Send + Sync + 'static,
{
    let (ours, theirs) = UnixStream::pair()?;
    let server = tokio::spawn(async move {
        if let Err(e) = pgwire::tokio::process_socket_unix(theirs, handlers).await {
            tracing::debug!(error = %e, "console session ended with an error");
        }
    });
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = ours.into_split();
    server_write.write_all(&startup).await?;
    let end = {
        let up = async {
            let end = pump_up(&mut client_read, &mut server_write, limits).await;
            // pgwire reads EOF, ends the session and closes its side.
            let _ = server_write.shutdown().await;
            end
        };
        let down = tokio::io::copy(&mut server_read, &mut client_write);
        tokio::pin!(up, down);
        tokio::select! {
            end = &mut up => {
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, &mut down).await;
                end
            }
            _ = &mut down => End::Closed,
        }
    };
    server.abort();
    if let End::Fatal { sqlstate, message } = end {
        send_fatal(&mut client_write, sqlstate, &message).await;
    }
    Ok(())
}

/// Forwards the client's messages one at a time after checking each length,
/// until the client stops or breaks a limit.
async fn pump_up(
    client: &mut OwnedReadHalf,
    server: &mut OwnedWriteHalf,
    limits: SessionLimits,
) -> End {
    loop {
        let mut header = [0u8; 5];
        match tokio::time::timeout(limits.idle_timeout, client.read(&mut header[..1])).await {
            Err(_) => {
                return End::fatal(
                    sqlstate::IDLE_SESSION_TIMEOUT,
                    format!(
                        "closing the console session after {}s idle",
                        limits.idle_timeout.as_secs()
                    ),
                )
            }
            Ok(Ok(0)) | Ok(Err(_)) => return End::Closed,
            Ok(Ok(_)) => {}
        }
        let halfway = || {
            End::fatal(
                sqlstate::CONNECTION_FAILURE,
                format!(
                    "a console message did not arrive within {}s",
                    limits.read_timeout.as_secs()
                ),
            )
        };
        match tokio::time::timeout(limits.read_timeout, client.read_exact(&mut header[1..])).await {
            Err(_) => return halfway(),
            Ok(Err(_)) => return End::Closed,
            Ok(Ok(_)) => {}
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let Some(body) = len.checked_sub(4) else {
            return End::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                format!("invalid message length {len}"),
            );
        };
        if body > limits.max_message_bytes {
            // Read and dropped through a small buffer, never kept: a client
            // blocked writing the rest would never read the error (libpq
            // then reports only "server closed the connection").
            let _ = tokio::time::timeout(
                limits.read_timeout,
                tokio::io::copy(
                    &mut (&mut *client).take(u64::from(body)),
                    &mut tokio::io::sink(),
                ),
            )
            .await;
            return End::fatal(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "console message of {body} bytes exceeds the limit of {} bytes",
                    limits.max_message_bytes
                ),
            );
        }
        if server.write_all(&header).await.is_err() {
            return End::Closed;
        }
        let copied = tokio::time::timeout(
            limits.read_timeout,
            tokio::io::copy(&mut (&mut *client).take(u64::from(body)), server),
        )
        .await;
        match copied {
            Err(_) => return halfway(),
            Ok(Ok(n)) if n == u64::from(body) => {}
            Ok(_) => return End::Closed,
        }
    }
}

/// A FATAL ErrorResponse, best effort and bounded in time.
async fn send_fatal<W: AsyncWrite + Unpin>(stream: &mut W, sqlstate: &str, message: &str) {
    let packet = error_response(sqlstate, message);
    let _ = tokio::time::timeout(ERROR_WRITE_TIMEOUT, async {
        stream.write_all(&packet).await?;
        stream.shutdown().await
    })
    .await;
}

/// The bytes of a FATAL ErrorResponse.
fn error_response(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let len = u32::try_from(fields.len() + 4).unwrap_or(u32::MAX);
    let mut packet = vec![b'E'];
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&fields);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncRead;

    async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = r.read_to_end(&mut out).await;
        out
    }

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = u32::try_from(body.len() + 4)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        packet.extend_from_slice(&body);
        packet
    }

    #[test]
    fn application_name_is_found_or_absent() {
        let p = startup(&[("user", "x"), ("application_name", CLI_APPLICATION_NAME)]);
        assert_eq!(application_name(&p).as_deref(), Some(CLI_APPLICATION_NAME));
        assert_eq!(application_name(&startup(&[("user", "x")])), None);
        assert_eq!(application_name(b"\0\0"), None);
    }

    #[test]
    fn reserved_slots_are_for_the_cli_only() {
        let a = Admission::new(SessionLimits {
            max_sessions: 1,
            reserved_sessions: 1,
            ..SessionLimits::default()
        });
        let _one = a.session(Some("psql")).unwrap();
        assert!(a.session(Some("psql")).is_none());
        assert!(a.session(None).is_none());
        let _cli = a.session(Some(CLI_APPLICATION_NAME)).unwrap();
        assert!(a.session(Some(CLI_APPLICATION_NAME)).is_none());
    }

    #[tokio::test]
    async fn ssl_is_refused_and_the_startup_packet_returned_whole() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let packet = startup(&[("user", "u")]);
        let mut sent = vec![0, 0, 0, 8];
        sent.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        sent.extend_from_slice(&packet);
        theirs.write_all(&sent).await.unwrap();
        assert_eq!(read_startup(&mut ours).await.unwrap(), Some(packet));
        let mut n = [0u8; 1];
        theirs.read_exact(&mut n).await.unwrap();
        assert_eq!(&n, b"N");
        // A huge or tiny length is refused before anything is allocated.
        theirs.write_all(&[0x7f, 0, 0, 0]).await.unwrap();
        assert!(read_startup(&mut ours).await.is_err());
    }

    #[tokio::test]
    async fn oversized_message_is_refused_without_reading_it() {
        let (client_side, mut client) = UnixStream::pair().unwrap();
        let (server_side, mut server) = UnixStream::pair().unwrap();
        let (mut read, _w) = client_side.into_split();
        let (_r, mut write) = server_side.into_split();
        let limits = SessionLimits {
            max_message_bytes: 100,
            ..SessionLimits::default()
        };
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&(200u32 + 4).to_be_bytes());
        client.write_all(&msg).await.unwrap();
        let end = pump_up(&mut read, &mut write, limits).await;
        let End::Fatal { sqlstate, message } = end else {
            panic!("{end:?}");
        };
        assert_eq!(sqlstate, "54000");
        assert_eq!(
            message,
            "console message of 200 bytes exceeds the limit of 100 bytes"
        );
        drop(write);
        assert!(read_all(&mut server).await.is_empty(), "nothing forwarded");
    }

    #[tokio::test]
    async fn a_silent_session_ends_after_the_idle_timeout() {
        let (client_side, _client) = UnixStream::pair().unwrap();
        let (server_side, _server) = UnixStream::pair().unwrap();
        let (mut read, _w) = client_side.into_split();
        let (_r, mut write) = server_side.into_split();
        let limits = SessionLimits {
            idle_timeout: Duration::from_millis(50),
            ..SessionLimits::default()
        };
        let end = pump_up(&mut read, &mut write, limits).await;
        assert!(
            matches!(
                end,
                End::Fatal {
                    sqlstate: "57P05",
                    ..
                }
            ),
            "{end:?}"
        );
    }
}
