//! The CRI container log format, and turning it into what `kubectl logs` prints.
//!
//! containerd writes each container's output to a file, one line per write of the
//! container: `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>`. A `P` (partial) line
//! is continued by the next line of the same stream; an `F` line ends it. Lines longer than
//! containerd's buffer, and output without a trailing newline, become `P` lines.
//!
//! [`LogFormatter`] joins the fragments of each stream back into whole lines, drops lines
//! older than `sinceTime`, prefixes the timestamp when asked, and stops at `limitBytes`.
//! [`tail_offset`] finds where the last N lines of a file begin without reading all of it.

use bytes::{BufMut, BytesMut};
use jiff::Timestamp;
use std::io::{Read, Seek, SeekFrom};

/// A line still waiting for its end is written out as it is past this size, so a
/// container that never writes a newline does not grow the buffer without bound.
const MAX_PENDING: usize = 1024 * 1024;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's standard output.
    Stdout,
    /// The container's standard error.
    Stderr,
}

/// One parsed line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// The timestamp as written.
    pub timestamp: &'a str,
    /// The timestamp as an instant.
    pub time: Timestamp,
    /// The stream the text was written to.
    pub stream: Stream,
    /// Whether the text continues on the next line of the same stream.
    pub partial: bool,
    /// The text, without the line's newline.
    pub content: &'a [u8],
}

/// Why a line is not in the CRI log format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line has no timestamp field.
    #[error("timestamp is not found")]
    NoTimestamp,
    /// The timestamp is not RFC 3339.
    #[error("unexpected timestamp format {0:?}")]
    BadTimestamp(String),
    /// The line has no stream field.
    #[error("stream type is not found")]
    NoStream,
    /// The stream is neither `stdout` nor `stderr`.
    #[error("unexpected stream type {0:?}")]
    BadStream(String),
    /// The line has no tag field.
    #[error("log tag is not found")]
    NoTag,
}

/// Parses one line (with or without its trailing newline).
pub fn parse_line(line: &[u8]) -> Result<CriLine<'_>, ParseError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (timestamp, rest) = split_field(line).ok_or(ParseError::NoTimestamp)?;
    let timestamp = std::str::from_utf8(timestamp)
        .map_err(|_| ParseError::BadTimestamp(String::from_utf8_lossy(timestamp).into_owned()))?;
    let time: Timestamp = timestamp
        .parse()
        .map_err(|_| ParseError::BadTimestamp(timestamp.to_string()))?;
    let (stream, rest) = split_field(rest).ok_or(ParseError::NoStream)?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => {
            return Err(ParseError::BadStream(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    };
    // The tag is the last field; an empty full line may come without the space after it.
    let (tag, content) = match split_field(rest) {
        Some(split) => split,
        None if !rest.is_empty() => (rest, &b""[..]),
        None => return Err(ParseError::NoTag),
    };
    // Tags are `:`-separated for forward compatibility; the first says partial or full.
    let partial = tag.split(|&b| b == b':').next() == Some(&b"P"[..]);
    Ok(CriLine {
        timestamp,
        time,
        stream,
        partial,
        content,
    })
}

/// The field before the first space, and what follows that space.
fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = line.iter().position(|&b| b == b' ')?;
    Some((&line[..i], &line[i + 1..]))
}

/// The timestamp as Go's RFC3339Nano prints it (as upstream's kubelet does): trailing zeros
/// of the fraction dropped, and the fraction with them if it was all zeros.
pub fn rfc3339_nano(timestamp: &str) -> String {
    let Some(dot) = timestamp.find('.') else {
        return timestamp.to_string();
    };
    let digits = timestamp[dot + 1..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    let fraction = timestamp[dot + 1..dot + 1 + digits].trim_end_matches('0');
    let zone = &timestamp[dot + 1 + digits..];
    if fraction.is_empty() {
        format!("{}{zone}", &timestamp[..dot])
    } else {
        format!("{}.{fraction}{zone}", &timestamp[..dot])
    }
}

/// What the client asked for, beyond which file and where in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatOptions {
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
    /// Drop lines written before this instant.
    pub since: Option<Timestamp>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// The start of a line whose end has not been read yet.
#[derive(Debug)]
struct Pending {
    timestamp: String,
    time: Timestamp,
    content: Vec<u8>,
}

/// Turns CRI log lines into the text `kubectl logs` prints.
#[derive(Debug)]
pub struct LogFormatter {
    options: FormatOptions,
    /// Per stream (stdout, stderr): the fragments of a line not finished yet.
    pending: [Option<Pending>; 2],
    written: u64,
}

impl LogFormatter {
    /// A formatter with `options`.
    pub fn new(options: FormatOptions) -> Self {
        LogFormatter {
            options,
            pending: [None, None],
            written: 0,
        }
    }

    /// Whether `limitBytes` of output were written: nothing more will be.
    pub fn limit_reached(&self) -> bool {
        self.options
            .limit_bytes
            .is_some_and(|limit| self.written >= limit)
    }

    /// Adds one raw line of the file; whatever it completes is appended to `out`. Lines that
    /// are not in the CRI format are skipped, as upstream's kubelet does.
    pub fn push_raw(&mut self, raw: &[u8], out: &mut BytesMut) {
        match parse_line(raw) {
            Ok(line) => self.push(&line, out),
            Err(e) => tracing::debug!(error = %e, "skipping a malformed container log line"),
        }
    }

    /// Adds one parsed line; whatever it completes is appended to `out`.
    pub fn push(&mut self, line: &CriLine<'_>, out: &mut BytesMut) {
        let slot = &mut self.pending[line.stream as usize];
        match slot.take() {
            Some(mut pending) => {
                pending.content.extend_from_slice(line.content);
                if line.partial && pending.content.len() < MAX_PENDING {
                    *slot = Some(pending);
                } else {
                    let newline = !line.partial;
                    self.emit(
                        &pending.timestamp,
                        pending.time,
                        &pending.content,
                        newline,
                        out,
                    );
                }
            }
            None if line.partial && line.content.len() < MAX_PENDING => {
                *slot = Some(Pending {
                    timestamp: line.timestamp.to_string(),
                    time: line.time,
                    content: line.content.to_vec(),
                });
            }
            None => self.emit(line.timestamp, line.time, line.content, !line.partial, out),
        }
    }

    /// Writes out the fragments still waiting for their end (without a newline): the
    /// file ended, and nothing more will be read.
    pub fn finish(&mut self, out: &mut BytesMut) {
        let mut pending: Vec<Pending> = self.pending.iter_mut().filter_map(Option::take).collect();
        pending.sort_by_key(|p| p.time);
        for p in pending {
            self.emit(&p.timestamp, p.time, &p.content, false, out);
        }
    }

    fn emit(
        &mut self,
        timestamp: &str,
        time: Timestamp,
        content: &[u8],
        newline: bool,
        out: &mut BytesMut,
    ) {
        if self.limit_reached() || self.options.since.is_some_and(|since| time < since) {
            return;
        }
        let mut line = Vec::with_capacity(content.len() + 40);
        if self.options.timestamps {
            line.extend_from_slice(rfc3339_nano(timestamp).as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(content);
        if newline {
            line.push(b'\n');
        }
        let room = match self.options.limit_bytes {
            Some(limit) => usize::try_from(limit - self.written).unwrap_or(usize::MAX),
            None => usize::MAX,
        };
        let take = line.len().min(room);
        out.put_slice(&line[..take]);
        self.written += take as u64;
    }
}

/// Bytes read per step when scanning a file backwards.
const TAIL_BLOCK: u64 = 64 * 1024;

/// Where to start reading `file` (of which the first `end` bytes count) so that the last
/// `lines` whole lines are read: the offset of the first fragment of the `lines`-th line
/// from the end, or 0 if the file has fewer. Reads backwards from `end`, only as much as
/// needed. Blocking: call it from `spawn_blocking`.
pub fn tail_offset<F: Read + Seek>(file: &mut F, end: u64, lines: u64) -> std::io::Result<u64> {
    let mut scan = TailScan {
        wanted: lines,
        found: 0,
        start: None,
    };
    // Bytes [pos, pos + carry.len()) not yet split into lines.
    let mut pos = end;
    let mut carry: Vec<u8> = Vec::new();
    // Whether the newline that ends the last whole line was seen; what follows it is a line
    // still being written, which does not count.
    let mut seen_last_newline = false;
    while pos > 0 {
        let step = TAIL_BLOCK.min(pos);
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let mut block = vec![0u8; step as usize];
        file.read_exact(&mut block)?;
        block.extend_from_slice(&carry);
        let mut right = block.len();
        for i in (0..block.len()).rev() {
            if block[i] != b'\n' {
                continue;
            }
            if !seen_last_newline {
                seen_last_newline = true;
                if lines == 0 {
                    return Ok(pos + i as u64 + 1);
                }
            } else if let Some(start) = scan.line(&block[i + 1..right], pos + i as u64 + 1) {
                return Ok(start);
            }
            right = i;
        }
        block.truncate(right);
        carry = block;
    }
    if lines == 0 {
        return Ok(0);
    }
    if seen_last_newline && let Some(start) = scan.line(&carry, 0) {
        return Ok(start);
    }
    Ok(scan.start.unwrap_or(0))
}

/// The state of a backward scan for the start of the last N lines.
struct TailScan {
    wanted: u64,
    found: u64,
    /// Once `wanted` full lines were found: where the earliest of them (with its partial
    /// fragments before it) begins.
    start: Option<u64>,
}

impl TailScan {
    /// Takes the line `line` at `offset` (scanning backwards); the final answer once known.
    fn line(&mut self, line: &[u8], offset: u64) -> Option<u64> {
        let parsed = parse_line(line).ok();
        match (self.start, parsed) {
            // Extending over the fragments before the earliest wanted line.
            (Some(_), Some(l)) if l.partial => {
                self.start = Some(offset);
                None
            }
            (Some(start), _) => Some(start),
            (None, Some(l)) if !l.partial => {
                self.found += 1;
                if self.found == self.wanted {
                    self.start = Some(offset);
                }
                None
            }
            (None, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn format(lines: &str, options: FormatOptions) -> String {
        let mut f = LogFormatter::new(options);
        let mut out = BytesMut::new();
        for line in lines.split_inclusive('\n') {
            f.push_raw(line.as_bytes(), &mut out);
        }
        f.finish(&mut out);
        String::from_utf8(out.to_vec()).expect("utf-8")
    }

    const LOG: &str = "\
2024-05-01T10:00:00.100000000Z stdout F one
2024-05-01T10:00:01.000000000Z stderr F two
2024-05-01T10:00:02.120000000+02:00 stdout P thr
2024-05-01T10:00:02.130000000+02:00 stdout F ee
2024-05-01T10:00:03.000000000Z stdout F 
2024-05-01T10:00:04.000000000Z stdout F four
";

    #[test]
    fn lines_parse_with_their_fields() {
        let l = parse_line(b"2024-05-01T10:00:00.100000000Z stderr P a b c\n").expect("parses");
        assert_eq!(l.timestamp, "2024-05-01T10:00:00.100000000Z");
        assert_eq!(l.stream, Stream::Stderr);
        assert!(l.partial);
        assert_eq!(l.content, b"a b c");
        assert_eq!(
            l.time,
            "2024-05-01T10:00:00.1Z".parse::<Timestamp>().expect("ts")
        );
        // Forward-compatible tags; an empty full line without the space after the tag.
        let l = parse_line(b"2024-05-01T10:00:00Z stdout F:x y").expect("parses");
        assert!(!l.partial);
        assert_eq!(l.content, b"y");
        let l = parse_line(b"2024-05-01T10:00:00Z stdout F").expect("parses");
        assert_eq!(l.content, b"");
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for (line, err) in [
            (&b""[..], ParseError::NoTimestamp),
            (b"garbage", ParseError::NoTimestamp),
            (
                b"yesterday stdout F x",
                ParseError::BadTimestamp("yesterday".into()),
            ),
            (b"2024-05-01T10:00:00Z", ParseError::NoTimestamp),
            (b"2024-05-01T10:00:00Z stdout", ParseError::NoStream),
            (
                b"2024-05-01T10:00:00Z stdin F x",
                ParseError::BadStream("stdin".into()),
            ),
            (b"2024-05-01T10:00:00Z stdout ", ParseError::NoTag),
            (
                b"\xff\xfe stdout F x",
                ParseError::BadTimestamp("\u{fffd}\u{fffd}".into()),
            ),
        ] {
            assert_eq!(
                parse_line(line),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn timestamps_print_as_go_rfc3339_nano() {
        assert_eq!(
            rfc3339_nano("2024-05-01T10:00:00.100000000Z"),
            "2024-05-01T10:00:00.1Z"
        );
        assert_eq!(
            rfc3339_nano("2024-05-01T10:00:00.000000000+02:00"),
            "2024-05-01T10:00:00+02:00"
        );
        assert_eq!(
            rfc3339_nano("2024-05-01T10:00:00.123456789Z"),
            "2024-05-01T10:00:00.123456789Z"
        );
        assert_eq!(rfc3339_nano("2024-05-01T10:00:00Z"), "2024-05-01T10:00:00Z");
    }

    #[test]
    fn text_is_printed_with_partial_lines_joined() {
        assert_eq!(
            format(LOG, FormatOptions::default()),
            "one\ntwo\nthree\n\nfour\n"
        );
    }

    #[test]
    fn timestamps_prefix_each_line_with_the_first_fragment_time() {
        assert_eq!(
            format(
                LOG,
                FormatOptions {
                    timestamps: true,
                    ..Default::default()
                }
            ),
            "2024-05-01T10:00:00.1Z one\n\
             2024-05-01T10:00:01Z two\n\
             2024-05-01T10:00:02.12+02:00 three\n\
             2024-05-01T10:00:03Z \n\
             2024-05-01T10:00:04Z four\n"
        );
    }

    #[test]
    fn since_drops_older_lines() {
        let since = "2024-05-01T10:00:01Z".parse().expect("ts");
        assert_eq!(
            format(
                LOG,
                FormatOptions {
                    since: Some(since),
                    ..Default::default()
                }
            ),
            // `three` was written at 08:00:02 UTC.
            "two\n\nfour\n"
        );
    }

    #[test]
    fn limit_bytes_cuts_the_output() {
        let options = FormatOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(format(LOG, options.clone()), "one\ntw");
        let mut f = LogFormatter::new(options);
        let mut out = BytesMut::new();
        for line in LOG.split_inclusive('\n') {
            f.push_raw(line.as_bytes(), &mut out);
        }
        assert!(f.limit_reached());
    }

    #[test]
    fn partial_lines_of_two_streams_are_joined_separately() {
        let log = "\
2024-05-01T10:00:00Z stdout P out-
2024-05-01T10:00:01Z stderr P err-
2024-05-01T10:00:02Z stderr F end
2024-05-01T10:00:03Z stdout F end
2024-05-01T10:00:04Z stdout P unfinished
";
        assert_eq!(
            format(log, FormatOptions::default()),
            "err-end\nout-end\nunfinished"
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let log = "not a log line\n2024-05-01T10:00:00Z stdout F ok\n\n";
        assert_eq!(format(log, FormatOptions::default()), "ok\n");
    }

    #[test]
    fn an_endless_partial_line_is_written_out_in_pieces() {
        let piece = "x".repeat(600 * 1024);
        let log = format!(
            "2024-05-01T10:00:00Z stdout P {piece}\n2024-05-01T10:00:01Z stdout P {piece}\n2024-05-01T10:00:02Z stdout F y\n"
        );
        let out = format(&log, FormatOptions::default());
        assert_eq!(out.len(), 2 * piece.len() + 2);
        assert!(out.ends_with("y\n"));
    }

    fn tail(log: &str, lines: u64) -> String {
        let bytes = log.as_bytes();
        let start = tail_offset(&mut Cursor::new(bytes), bytes.len() as u64, lines)
            .expect("in-memory reads");
        log[start as usize..].to_string()
    }

    #[test]
    fn tail_finds_the_start_of_the_last_lines() {
        assert_eq!(tail(LOG, 0), "");
        assert_eq!(
            tail(LOG, 1),
            "2024-05-01T10:00:04.000000000Z stdout F four\n"
        );
        // The partial fragment before a wanted full line comes along.
        assert_eq!(
            format(&tail(LOG, 3), FormatOptions::default()),
            "three\n\nfour\n"
        );
        assert_eq!(tail(LOG, 5), LOG);
        assert_eq!(tail(LOG, 6), LOG);
        assert_eq!(tail(LOG, 1000), LOG);
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn tail_ignores_a_line_still_being_written() {
        let log = format!("{LOG}2024-05-01T10:00:05.000000000Z stdout F fi");
        assert_eq!(
            tail(&log, 1),
            "2024-05-01T10:00:04.000000000Z stdout F four\n2024-05-01T10:00:05.000000000Z stdout F fi"
        );
        assert_eq!(tail(&log, 0), "2024-05-01T10:00:05.000000000Z stdout F fi");
    }

    #[test]
    fn tail_scans_across_blocks() {
        // Lines longer than a block, and many of them.
        let long = "y".repeat(100 * 1024);
        let mut log = String::new();
        for i in 0..50 {
            log.push_str(&format!("2024-05-01T10:00:00Z stdout F {i} {long}\n"));
        }
        let out = format(&tail(&log, 2), FormatOptions::default());
        assert_eq!(out, format!("48 {long}\n49 {long}\n"));
        let out = format(&tail(&log, 50), FormatOptions::default());
        assert!(out.starts_with("0 "));
    }
}
