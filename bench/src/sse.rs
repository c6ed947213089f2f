//! Incremental parsing of an SSE response body: HTTP/1.1 chunked decoding,
//! then SSE lines (`id:`, `event:`, `data:`, blank line, `:` comments).
//!
//! Both parsers work on borrowed slices of the read buffer; the only copies
//! are a line split across two reads and the last `id:` value, into buffers
//! each connection reuses. Lines end with `\n` (a trailing `\r` is dropped);
//! bare-`\r` line endings are not supported.

/// Longest line kept while waiting for its end; longer ones are dropped.
const MAX_LINE: usize = 1 << 20;

/// How the response body is framed.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Until the connection closes.
    Identity,
    /// In a chunk-size line; `ext` once past a `;` extension.
    Size {
        size: u64,
        ext: bool,
    },
    /// Saw the `\r` of the chunk-size line.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// The last chunk: the body is over.
    Done,
}

#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug)]
pub struct BadChunk;

impl BodyDecoder {
    pub fn new(chunked: bool) -> Self {
        BodyDecoder {
            state: if chunked {
                State::Size { size: 0, ext: false }
            } else {
                State::Identity
            },
        }
    }

    /// Passes the body bytes in `input` to `out`; `Ok(true)` once the last
    /// chunk has been read.
    pub fn feed(&mut self, mut input: &[u8], out: &mut impl FnMut(&[u8])) -> Result<bool, BadChunk> {
        while !input.is_empty() {
            match self.state {
                State::Identity => {
                    out(input);
                    return Ok(false);
                }
                State::Done => return Ok(true),
                State::Data { left } => {
                    let n = (left.min(input.len() as u64)) as usize;
                    out(&input[..n]);
                    input = &input[n..];
                    self.state = if left == n as u64 {
                        State::DataCr
                    } else {
                        State::Data {
                            left: left - n as u64,
                        }
                    };
                }
                State::Size { size, ext } => {
                    let b = input[0];
                    input = &input[1..];
                    self.state = match b {
                        b'\r' => State::SizeLf { size },
                        b'\n' => after_size(size),
                        _ if ext => State::Size { size, ext },
                        b';' => State::Size { size, ext: true },
                        b' ' | b'\t' => State::Size { size, ext },
                        _ => {
                            let digit = (b as char).to_digit(16).ok_or(BadChunk)? as u64;
                            let size = size.checked_mul(16).ok_or(BadChunk)? + digit;
                            State::Size { size, ext }
                        }
                    };
                }
                State::SizeLf { size } => {
                    if input[0] != b'\n' {
                        return Err(BadChunk);
                    }
                    input = &input[1..];
                    self.state = after_size(size);
                }
                State::DataCr => {
                    let b = input[0];
                    input = &input[1..];
                    self.state = match b {
                        b'\r' => State::DataLf,
                        b'\n' => State::Size { size: 0, ext: false },
                        _ => return Err(BadChunk),
                    };
                }
                State::DataLf => {
                    if input[0] != b'\n' {
                        return Err(BadChunk);
                    }
                    input = &input[1..];
                    self.state = State::Size { size: 0, ext: false };
                }
            }
        }
        Ok(matches!(self.state, State::Done))
    }
}

fn after_size(size: u64) -> State {
    if size == 0 {
        State::Done
    } else {
        State::Data { left: size }
    }
}

/// One dispatched SSE event, as much of it as the benchmark needs.
#[derive(Debug)]
pub struct Event {
    /// The event's own `id:` as an ordered number, when it had one that is
    /// decimal (pollcast) or `<time>:<tag>` (Nchan); its text is
    /// `SseParser::last_id`.
    pub id_num: Option<u64>,
    /// `"seq":<n>` found in a `data:` line.
    pub seq: Option<u64>,
    /// `"sentAt":<unix nanos>` found in a `data:` line.
    pub sent_at: Option<u64>,
    /// `event: connection:reset` (pollcast could not resume from the id).
    pub reset: bool,
}

/// SSE line parser with the state of the event being read.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    /// The stream's last event id (SSE "last event ID buffer").
    last_id: Vec<u8>,
    last_id_num: Option<u64>,
    has_id: bool,
    has_data: bool,
    seq: Option<u64>,
    sent_at: Option<u64>,
    reset: bool,
    /// Lines dropped for being longer than `MAX_LINE`.
    pub overlong: u64,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last `id:` seen on any connection this parser served.
    pub fn last_id(&self) -> &[u8] {
        &self.last_id
    }

    /// Forgets a partly read line and event, for a new connection; keeps the
    /// last event id.
    pub fn new_connection(&mut self) {
        self.pending.clear();
        self.clear_event();
    }

    fn clear_event(&mut self) {
        self.has_id = false;
        self.has_data = false;
        self.seq = None;
        self.sent_at = None;
        self.reset = false;
    }

    pub fn feed(&mut self, mut data: &[u8], sink: &mut impl FnMut(&Event)) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let line = &data[..end];
                    data = &data[end + 1..];
                    if self.pending.is_empty() {
                        self.line(line, sink);
                    } else {
                        let mut joined = std::mem::take(&mut self.pending);
                        joined.extend_from_slice(line);
                        self.line(&joined, sink);
                        joined.clear();
                        self.pending = joined;
                    }
                }
                None => {
                    if self.pending.len() + data.len() > MAX_LINE {
                        self.pending.clear();
                        self.overlong += 1;
                    } else {
                        self.pending.extend_from_slice(data);
                    }
                    return;
                }
            }
        }
    }

    fn line(&mut self, line: &[u8], sink: &mut impl FnMut(&Event)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_data {
                let event = Event {
                    id_num: if self.has_id { self.last_id_num } else { None },
                    seq: self.seq,
                    sent_at: self.sent_at,
                    reset: self.reset,
                };
                sink(&event);
            }
            self.clear_event();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        match field {
            b"data" => {
                self.has_data = true;
                if self.sent_at.is_none() || self.seq.is_none() {
                    let (sent_at, seq) = bench_fields(value);
                    self.sent_at = self.sent_at.or(sent_at);
                    self.seq = self.seq.or(seq);
                }
            }
            b"id" => {
                if !value.contains(&0) {
                    self.last_id.clear();
                    self.last_id.extend_from_slice(value);
                    self.last_id_num = id_number(value);
                }
                self.has_id = true;
            }
            b"event" => self.reset = value == b"connection:reset",
            _ => {}
        }
    }
}

/// `"sentAt":<n>` and `"seq":<n>` anywhere in a `data:` line (top level for
/// Nchan, inside `payload` for pollcast), in one pass over its colons.
pub fn bench_fields(data: &[u8]) -> (Option<u64>, Option<u64>) {
    let (mut sent_at, mut seq) = (None, None);
    let mut from = 0;
    while let Some(offset) = data[from..].iter().position(|&b| b == b':') {
        let colon = from + offset;
        let key = &data[..colon];
        if key.last() == Some(&b'"') {
            if sent_at.is_none() && key.ends_with(b"\"sentAt\"") {
                sent_at = leading_number(&data[colon + 1..]);
            } else if seq.is_none() && key.ends_with(b"\"seq\"") {
                seq = leading_number(&data[colon + 1..]);
            }
            if sent_at.is_some() && seq.is_some() {
                break;
            }
        }
        from = colon + 1;
    }
    (sent_at, seq)
}

/// The decimal number at the start of `rest`, after any spaces.
fn leading_number(rest: &[u8]) -> Option<u64> {
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let digits = &rest[start..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    parse_u64(&digits[..end])
}

/// The decimal number right after `key` (spaces allowed between).
pub fn number_after(haystack: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(haystack, key)? + key.len();
    leading_number(&haystack[at..])
}

/// An id as a number that orders like the server's ids: decimal, or
/// Nchan's `<time>:<tag>` as time * 2^20 + tag.
pub fn id_number(id: &[u8]) -> Option<u64> {
    match id.iter().position(|&b| b == b':') {
        None => parse_u64(id),
        Some(colon) => {
            let time = parse_u64(&id[..colon])?;
            let tag = parse_u64(&id[colon + 1..]).filter(|&t| t < 1 << 20)?;
            time.checked_mul(1 << 20)?.checked_add(tag)
        }
    }
}

pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// First position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last_start = haystack.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last_start {
        let offset = haystack[i..=last_start].iter().position(|&b| b == first)?;
        i += offset;
        if &haystack[i + 1..i + needle.len()] == rest {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    type Seen = (Option<u64>, Option<u64>, Option<u64>, bool);

    fn collect(parser: &mut SseParser, pieces: &[&[u8]]) -> Vec<Seen> {
        let mut out = Vec::new();
        for piece in pieces {
            parser.feed(piece, &mut |e| out.push((e.id_num, e.seq, e.sent_at, e.reset)));
        }
        out
    }

    #[test]
    fn pollcast_frames_split_anywhere() {
        let text: &[u8] = b"retry: 2000\nevent: connection:established\ndata: {\"type\":\"connection:established\"}\n\n: ping\n\nid: 7\nevent: bench:tick\ndata: {\"id\":\"7\",\"payload\":{\"sentAt\":1700000000000000000,\"seq\":3}}\n\n";
        for cut in 0..text.len() {
            let mut parser = SseParser::new();
            let events = collect(&mut parser, &[&text[..cut], &text[cut..]]);
            assert_eq!(events.len(), 2, "cut {cut}");
            assert_eq!(events[0], (None, None, None, false));
            assert_eq!(
                events[1],
                (Some(7), Some(3), Some(1_700_000_000_000_000_000), false)
            );
            assert_eq!(parser.last_id(), b"7");
        }
    }

    #[test]
    fn nchan_frames_and_resets() {
        let mut parser = SseParser::new();
        let events = collect(
            &mut parser,
            &[b": hi\r\n\r\nid: 1700000000:3\r\ndata: {\"sentAt\": 5,\"seq\":0}\r\n\r\nevent: connection:reset\ndata: {}\n\n"],
        );
        assert_eq!(
            events[0],
            (Some((1_700_000_000 << 20) + 3), Some(0), Some(5), false)
        );
        assert_eq!(events[1], (None, None, None, true));
        assert_eq!(parser.last_id(), b"1700000000:3");
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let raw: &[u8] = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n";
        for cut in 0..raw.len() {
            let mut decoder = BodyDecoder::new(true);
            let mut body = Vec::new();
            let first = decoder
                .feed(&raw[..cut], &mut |b| body.extend_from_slice(b))
                .unwrap();
            let done = decoder
                .feed(&raw[cut..], &mut |b| body.extend_from_slice(b))
                .unwrap();
            assert!(done || first, "cut {cut}");
            assert_eq!(body, b"hello world!", "cut {cut}");
        }
        assert!(BodyDecoder::new(true).feed(b"zz\r\n", &mut |_| {}).is_err());
    }

    #[test]
    fn numbers_and_search() {
        assert_eq!(number_after(b"{\"a\":1,\"seq\":42}", b"\"seq\":"), Some(42));
        assert_eq!(number_after(b"{\"subseq\":1}", b"\"seq\":"), None);
        assert_eq!(number_after(b"{\"seq\":\"x\"}", b"\"seq\":"), None);
        assert_eq!(
            bench_fields(b"{\"ts\":\"00:01\",\"payload\":{\"sentAt\": 12,\"seq\":3}}"),
            (Some(12), Some(3))
        );
        assert_eq!(bench_fields(b"{\"subseq\":1,\"seq\":\"2\"}"), (None, None));
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"a", b"ab"), None);
    }
}
