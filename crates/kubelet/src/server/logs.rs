//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log, as upstream's
//! kubelet serves it to the apiserver for `kubectl logs`.
//!
//! The file is the one the runtime writes (`ContainerStatus.log_path`, CRI format); the
//! text is streamed as it is read. With `follow=true` the file is read on as it grows
//! (checked every [`POLL`]; a guard timer, as the runtime says nothing when it writes) and
//! reopened when it is replaced (log rotation); the stream ends once the log stopped
//! growing and the container is no longer running, or when the client goes away.
//! Errors are plain text with a 4xx/5xx code, as upstream's, which the apiserver wraps into
//! a `Status`.

use super::cri_log::{FormatOptions, LogFormatter, tail_offset};
use super::instances::{Instance, Instances};
use super::{MAX_STREAMS, Shared};
use crate::runtime::{Runtime, cri};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use jiff::{SignedDuration, Timestamp};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::Instant;

/// How often a followed log file is checked for growth.
const POLL: Duration = Duration::from_millis(200);
/// How often, while the log is idle, the container is asked whether it still runs.
const STATE_CHECK: Duration = Duration::from_secs(1);
/// Output is sent in pieces of about this size.
const CHUNK: usize = 32 * 1024;
/// A raw line longer than this (without its newline yet) is dropped: not CRI output.
const MAX_RAW_LINE: usize = 4 * 1024 * 1024;

/// The query of a log request (upstream's `PodLogOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Read on as the log grows.
    pub follow: bool,
    /// The instance before the current one.
    pub previous: bool,
    /// Prefix lines with their timestamps.
    pub timestamps: bool,
    /// Only lines written at or after this instant.
    pub since: Option<Timestamp>,
    /// Only the last this many lines.
    pub tail_lines: Option<u64>,
    /// At most this many bytes.
    pub limit_bytes: Option<u64>,
}

/// A Go `strconv.ParseBool` value.
pub(super) fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value {value:?} for {key}: not a boolean")),
    }
}

impl LogQuery {
    /// Parses a query string; `now` anchors `sinceSeconds`.
    pub fn parse(query: &str, now: Timestamp) -> Result<Self, String> {
        let mut q = LogQuery::default();
        let mut since_seconds = None;
        let mut since_time = None;
        let number = |key: &str, value: &str| {
            value
                .parse::<i64>()
                .map_err(|_| format!("invalid value {value:?} for {key}: not an integer"))
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "follow" => q.follow = parse_bool(&key, &value)?,
                "previous" => q.previous = parse_bool(&key, &value)?,
                "timestamps" => q.timestamps = parse_bool(&key, &value)?,
                "sinceSeconds" => since_seconds = Some(number(&key, &value)?),
                "sinceTime" => {
                    since_time = Some(value.parse::<Timestamp>().map_err(|_| {
                        format!("invalid value {value:?} for sinceTime: not an RFC 3339 time")
                    })?)
                }
                "tailLines" => {
                    let n = number(&key, &value)?;
                    q.tail_lines = Some(u64::try_from(n).map_err(|_| {
                        format!("tailLines: Invalid value: {n}: must be greater than or equal to 0")
                    })?);
                }
                "limitBytes" => {
                    let n = number(&key, &value)?;
                    if n < 1 {
                        return Err(format!(
                            "limitBytes: Invalid value: {n}: must be greater than 0"
                        ));
                    }
                    q.limit_bytes = Some(n as u64);
                }
                _ => {}
            }
        }
        q.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
            }
            (Some(s), None) if s < 1 => {
                return Err(format!(
                    "sinceSeconds: Invalid value: {s}: must be greater than 0"
                ));
            }
            (Some(s), None) => Some(
                now.checked_sub(SignedDuration::from_secs(s))
                    .unwrap_or(Timestamp::MIN),
            ),
            (None, t) => t,
        };
        Ok(q)
    }
}

fn plain_error(code: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    tracing::debug!(code = code.as_u16(), %message, "container log request refused");
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        message,
    )
        .into_response()
}

/// The handler.
pub(super) async fn container_logs<R: Runtime>(
    State(shared): State<Shared<R>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = match LogQuery::parse(query.as_deref().unwrap_or_default(), Timestamp::now()) {
        Ok(q) => q,
        Err(e) => return plain_error(StatusCode::BAD_REQUEST, e),
    };
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        return plain_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many log and exec streams open (at most {MAX_STREAMS}); retry later"),
        );
    };
    let instances = match Instances::find(&shared.runtime, &namespace, &pod, &container).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(pod = %format!("{namespace}/{pod}"), container, error = %e, "listing containers failed");
            return plain_error(StatusCode::INTERNAL_SERVER_ERROR, e.message());
        }
    };
    let target = if query.previous {
        instances.previous()
    } else {
        instances.current()
    };
    let Some(target) = target.cloned() else {
        let message = if query.previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} is waiting to start: ContainerCreating")
        };
        return plain_error(StatusCode::BAD_REQUEST, message);
    };
    let status = match shared.runtime.container_status(&target.id).await {
        Ok(status) => status,
        Err(e) if e.is_not_found() => {
            return plain_error(
                StatusCode::BAD_REQUEST,
                format!("container {container:?} in pod {pod:?} is terminated and gone"),
            );
        }
        Err(e) => return plain_error(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    };
    if status.log_path.is_empty() {
        return plain_error(
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {pod:?} has no log file"),
        );
    }
    let path = PathBuf::from(&status.log_path);
    let file = match LogFile::open(path.clone(), query.tail_lines).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Nothing written yet; an empty log (or, following, one that may appear).
            if query.follow {
                LogFile::absent(path)
            } else {
                return log_response(Body::empty());
            }
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "opening a container log failed");
            return plain_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to open log file {:?}: {e}", status.log_path),
            );
        }
    };
    let formatter = LogFormatter::new(FormatOptions {
        timestamps: query.timestamps,
        since: query.since,
        limit_bytes: query.limit_bytes,
    });
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let follow = query.follow;
    let runtime = shared.runtime.clone();
    let stopping = shared.stopping();
    tokio::spawn(async move {
        let mut stream = LogStream {
            file,
            formatter,
            tx,
            container: target,
            _permit: permit,
        };
        if let Err(e) = stream.run(&runtime, follow, stopping).await {
            tracing::warn!(path = %stream.file.path.display(), error = %e, "reading a container log failed");
        }
    });
    let body = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, std::convert::Infallible>))
    });
    log_response(Body::from_stream(body))
}

fn log_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// One log file being read, with what identifies it on disk.
struct LogFile {
    path: PathBuf,
    reader: Option<BufReader<tokio::fs::File>>,
    /// Device and inode of the open file, to notice it being replaced.
    identity: (u64, u64),
    /// Bytes consumed from the open file.
    offset: u64,
    /// A raw line read up to the current end of the file, waiting for its newline.
    line: Vec<u8>,
}

impl LogFile {
    /// Opens `path` at the start of its last `tail` lines (or at its start).
    async fn open(path: PathBuf, tail: Option<u64>) -> std::io::Result<Self> {
        let opened = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                let mut file = std::fs::File::open(&path)?;
                let meta = file.metadata()?;
                let start = match tail {
                    Some(lines) => tail_offset(&mut file, meta.len(), lines)?,
                    None => 0,
                };
                Ok((file, (meta.dev(), meta.ino()), start))
            })
            .await
            .map_err(std::io::Error::other)??
        };
        let (file, identity, start) = opened;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(start)).await?;
        Ok(LogFile {
            path,
            reader: Some(BufReader::with_capacity(64 * 1024, file)),
            identity,
            offset: start,
            line: Vec::new(),
        })
    }

    /// A file that does not exist yet.
    fn absent(path: PathBuf) -> Self {
        LogFile {
            path,
            reader: None,
            identity: (0, 0),
            offset: 0,
            line: Vec::new(),
        }
    }

    /// Reads whole lines into `formatter` until the end of the file or until `out` holds a
    /// chunk; whether anything was read.
    async fn read(
        &mut self,
        formatter: &mut LogFormatter,
        out: &mut BytesMut,
    ) -> std::io::Result<bool> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        let mut progressed = false;
        loop {
            let n = reader.read_until(b'\n', &mut self.line).await?;
            if n == 0 {
                return Ok(progressed);
            }
            progressed = true;
            self.offset += n as u64;
            if self.line.last() == Some(&b'\n') {
                formatter.push_raw(&self.line, out);
                self.line.clear();
                if out.len() >= CHUNK || formatter.limit_reached() {
                    return Ok(true);
                }
            } else if self.line.len() > MAX_RAW_LINE {
                tracing::warn!(path = %self.path.display(), "dropping an overlong container log line");
                self.line.clear();
            }
        }
    }

    /// The file ended for good: a last line without its newline counts too.
    fn finish(&mut self, formatter: &mut LogFormatter, out: &mut BytesMut) {
        if !self.line.is_empty() {
            formatter.push_raw(&self.line, out);
            self.line.clear();
        }
        formatter.finish(out);
    }

    /// Whether the file at the path is no longer the one open (rotated, recreated or
    /// truncated), and a new one is there to be read.
    async fn replaced(&self) -> bool {
        match tokio::fs::metadata(&self.path).await {
            Ok(meta) => {
                self.reader.is_none()
                    || (meta.dev(), meta.ino()) != self.identity
                    || meta.len() < self.offset
            }
            Err(_) => false,
        }
    }

    /// Opens the file now at the path, from its start.
    async fn reopen(&mut self) -> std::io::Result<()> {
        let file = LogFile::open(self.path.clone(), None).await?;
        tracing::debug!(path = %self.path.display(), "container log replaced; reading the new file");
        *self = file;
        Ok(())
    }
}

/// A log being sent to one client.
struct LogStream {
    file: LogFile,
    formatter: LogFormatter,
    tx: mpsc::Sender<Bytes>,
    container: Instance,
    _permit: OwnedSemaphorePermit,
}

impl LogStream {
    /// Sends `out` to the client; false if the client is gone.
    async fn send(&self, out: &mut BytesMut) -> bool {
        if out.is_empty() {
            return true;
        }
        self.tx.send(out.split().freeze()).await.is_ok()
    }

    async fn run<R: Runtime>(
        &mut self,
        runtime: &R,
        follow: bool,
        mut stopping: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        let mut last_check: Option<Instant> = None;
        loop {
            let progressed = self.file.read(&mut self.formatter, &mut out).await?;
            if !self.send(&mut out).await || self.formatter.limit_reached() {
                return Ok(());
            }
            if progressed {
                continue;
            }
            if !follow {
                break;
            }
            // The end of the file for now.
            if self.tx.is_closed() || *stopping.borrow() {
                return Ok(());
            }
            if self.file.replaced().await {
                // What the old file still held was read above.
                self.file.reopen().await?;
                continue;
            }
            if last_check.is_none_or(|t| t.elapsed() >= STATE_CHECK) {
                last_check = Some(Instant::now());
                if !self.running(runtime).await {
                    // It stopped: whatever it wrote before is read, then the stream ends.
                    if self.file.read(&mut self.formatter, &mut out).await? {
                        continue;
                    }
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stopping.changed() => {}
            }
        }
        self.file.finish(&mut self.formatter, &mut out);
        self.send(&mut out).await;
        Ok(())
    }

    /// Whether the container still runs (and so may write more).
    async fn running<R: Runtime>(&self, runtime: &R) -> bool {
        if !self.container.running {
            return false;
        }
        match runtime.container_status(&self.container.id).await {
            Ok(status) => status.state == cri::ContainerState::ContainerRunning as i32,
            Err(e) if e.is_not_found() => false,
            Err(e) => {
                tracing::debug!(container = %self.container.id, error = %e, "container status failed; still following");
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-05-01T10:00:00Z".parse().expect("ts")
    }

    #[test]
    fn queries_parse_as_pod_log_options() {
        let q = LogQuery::parse(
            "follow=true&previous=1&timestamps=True&tailLines=5&limitBytes=100&sinceSeconds=60",
            now(),
        )
        .expect("valid");
        assert_eq!(
            q,
            LogQuery {
                follow: true,
                previous: true,
                timestamps: true,
                since: Some("2024-05-01T09:59:00Z".parse().expect("ts")),
                tail_lines: Some(5),
                limit_bytes: Some(100),
            }
        );
        let q = LogQuery::parse("sinceTime=2024-05-01T08%3A00%3A00Z", now()).expect("valid");
        assert_eq!(q.since, Some("2024-05-01T08:00:00Z".parse().expect("ts")));
        assert_eq!(LogQuery::parse("", now()), Ok(LogQuery::default()));
    }

    #[test]
    fn bad_queries_are_refused_with_a_reason() {
        for (query, wanted) in [
            ("follow=yes", "not a boolean"),
            ("tailLines=-1", "must be greater than or equal to 0"),
            ("tailLines=x", "not an integer"),
            ("limitBytes=0", "must be greater than 0"),
            ("sinceSeconds=0", "must be greater than 0"),
            ("sinceTime=yesterday", "RFC 3339"),
            (
                "sinceSeconds=5&sinceTime=2024-05-01T08:00:00Z",
                "at most one of",
            ),
        ] {
            match LogQuery::parse(query, now()) {
                Err(e) => assert!(e.contains(wanted), "{query}: {e}"),
                Ok(q) => panic!("{query}: accepted as {q:?}"),
            }
        }
    }
}
