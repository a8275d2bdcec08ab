//! Reading a few fields of a JSON text in place: no tree, no allocation, a few instructions per byte.
//!
//! The request path reads a handful of fields of every request body and of every answer; serde_json's visitors cost
//! tens of instructions per token for that. A [`Scanner`] walks the bytes instead: whitespace and strings are skipped
//! (words and vectors of bytes at a time), numbers are parsed in place, and nesting is tracked as a depth with
//! one bit per level telling objects from arrays, so the grammar of everything skipped is still checked.
//!
//! Promise: a scan never accepts a text that serde_json rejects, and never reads a value serde_json would read
//! differently. Whatever it does not handle stops it with [`Unusual`], and the caller then reads the text with
//! serde_json, which defines the result (and words the error). Unusual are: any grammar error; a key with an escape or
//! a non-ASCII byte (serde_json decodes and checks the keys it reads); an escape that is not valid JSON or that
//! encodes a lone surrogate (serde_json refuses those in the strings it decodes); a number with an exponent or more
//! than 308 digits before the point (serde_json refuses those it parses that overflow an `f64`); nesting deeper than
//! 64. Bytes that are not UTF-8 inside skipped strings are not checked (serde_json does not check them either); callers
//! that hand out text check it.

use std::ops::Range;

/// The scan met something it leaves to serde_json (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unusual;

pub type Scan<T> = Result<T, Unusual>;

/// Deepest nesting a scan follows (one bit per level of [`Scanner::skip`]'s stack).
const MAX_DEPTH: u32 = 64;

/// Most digits before the point of a number that surely fits an `f64` (its largest finite value has 309).
const MAX_INTEGER_DIGITS: usize = 308;

/// A quote, a backslash or a control character: what ends a run of plain string bytes.
fn special(b: u8) -> bool {
    // `b ^ 2` keeps the control characters below 0x20 and makes the quote (0x22) 0x20; nothing else falls below 0x21.
    ((b ^ 2) <= 0x20) | (b == b'\\')
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` (8 bytes, little-endian) that is [`special`]: exact up to the first one, which
/// is all that is used (a byte above it may be marked wrongly).
fn specials(word: &[u8]) -> u64 {
    let x = <[u8; 8]>::try_from(word).map_or(0, u64::from_le_bytes);
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(x ^ (ONES * u64::from(b'"')))
        | zero(x ^ (ONES * u64::from(b'\\')))
        | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
}

/// A position in a JSON text.
#[derive(Debug)]
pub struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a [u8]) -> Self {
        Scanner { text, pos: 0 }
    }

    /// The next byte after whitespace (not consumed).
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.text.get(self.pos) {
            if b > b' ' || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Scan<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Unusual),
        }
    }

    /// Reads an object, calling `field` with each key (the bytes between its quotes), which must read the value.
    pub fn fields(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Scan<()>) -> Scan<()> {
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.expect(b'"')?;
            let (key, escaped) = self.string_body()?;
            let key = self.text.get(key).ok_or(Unusual)?;
            if escaped || !key.is_ascii() {
                return Err(Unusual);
            }
            self.expect(b':')?;
            field(self, key)?;
            match self.bump()? {
                b',' => {}
                b'}' => return Ok(()),
                _ => return Err(Unusual),
            }
        }
    }

    /// Reads an array, calling `element` for each element, which must read it.
    pub fn elements(&mut self, mut element: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.expect(b'[')?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            element(self)?;
            match self.bump()? {
                b',' => {}
                b']' => return Ok(()),
                _ => return Err(Unusual),
            }
        }
    }

    /// Reads `null` if it comes next.
    pub fn null(&mut self) -> Scan<bool> {
        if self.peek() != Some(b'n') {
            return Ok(false);
        }
        self.literal(b"null")?;
        Ok(true)
    }

    /// Reads `true` or `false`.
    pub fn boolean(&mut self) -> Scan<bool> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => Err(Unusual),
        }
    }

    /// Reads a string without escapes: the range of its bytes between the quotes.
    pub fn plain_string(&mut self) -> Scan<Range<usize>> {
        self.expect(b'"')?;
        match self.string_body()? {
            (range, false) => Ok(range),
            (_, true) => Err(Unusual),
        }
    }

    /// Reads a token count: an unsigned integer that fits a `u64`, or `None` for a value that is not a number (it is
    /// skipped). Any other number (signed, fractional, too large) is unusual: serde_json reads those as `i64`/`f64`.
    pub fn count(&mut self) -> Scan<Option<u64>> {
        match self.peek() {
            Some(b'0'..=b'9') => self.number()?.map(Some).ok_or(Unusual),
            Some(b'-') => Err(Unusual),
            _ => self.skip().map(|_| None),
        }
    }

    /// Skips one value, checking its grammar; the range of its text.
    pub fn skip(&mut self) -> Scan<Range<usize>> {
        self.peek();
        let start = self.pos;
        // Bit `d` of `objects` is set when the container at depth `d` is an object.
        let mut objects: u64 = 0;
        let mut depth: u32 = 0;
        loop {
            match self.peek().ok_or(Unusual)? {
                open @ (b'{' | b'[') => {
                    self.pos += 1;
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                    } else {
                        if depth == MAX_DEPTH {
                            return Err(Unusual);
                        }
                        objects = objects & !(1 << depth) | u64::from(open == b'{') << depth;
                        depth += 1;
                        if open == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.pos += 1;
                    self.string_body()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                _ => return Err(Unusual),
            }
            // A value ended: close the containers it ends, then go on to the next value.
            loop {
                if depth == 0 {
                    return Ok(start..self.pos);
                }
                let in_object = objects >> (depth - 1) & 1 == 1;
                match self.bump()? {
                    b',' => {
                        if in_object {
                            self.key()?;
                        }
                        break;
                    }
                    b'}' if in_object => depth -= 1,
                    b']' if !in_object => depth -= 1,
                    _ => return Err(Unusual),
                }
            }
        }
    }

    /// The next byte after whitespace, consumed.
    fn bump(&mut self) -> Scan<u8> {
        let b = self.peek().ok_or(Unusual)?;
        self.pos += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Scan<()> {
        if self.bump()? == want {
            Ok(())
        } else {
            Err(Unusual)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        let end = self.pos + word.len();
        if self.text.get(self.pos..end) != Some(word) {
            return Err(Unusual);
        }
        self.pos = end;
        Ok(())
    }

    /// A key of a skipped object and its colon.
    fn key(&mut self) -> Scan<()> {
        self.expect(b'"')?;
        self.string_body()?;
        self.expect(b':')
    }

    /// The rest of a string after its opening quote: the range between the quotes, and whether it has escapes.
    #[inline]
    fn string_body(&mut self) -> Scan<(Range<usize>, bool)> {
        let start = self.pos;
        self.pos += self.ordinary_run();
        if self.text.get(self.pos) == Some(&b'"') {
            self.pos += 1;
            return Ok((start..self.pos - 1, false));
        }
        self.string_rest(start)
    }

    /// The rest of a string from a byte that is not its closing quote (an escape, or an error).
    #[inline(never)]
    fn string_rest(&mut self, start: usize) -> Scan<(Range<usize>, bool)> {
        loop {
            let b = *self.text.get(self.pos).ok_or(Unusual)?;
            self.pos += 1;
            match b {
                b'"' => return Ok((start..self.pos - 1, true)),
                b'\\' => self.escape()?,
                _ => return Err(Unusual),
            }
            self.pos += self.ordinary_run();
        }
    }

    /// How many bytes from here are neither a quote, a backslash nor a control character (the whole rest when none
    /// is). Most strings end within two words, read here; longer ones go on in [`Scanner::long_run`].
    #[inline]
    fn ordinary_run(&self) -> usize {
        let word = |at: usize| {
            self.text
                .get(self.pos + at..self.pos + at + 8)
                .map_or(0, specials)
        };
        // The second word only when the first has no special byte.
        let first = word(0);
        if first != 0 {
            return first.trailing_zeros() as usize / 8;
        }
        match word(8) {
            0 => self.long_run(),
            m => 8 + m.trailing_zeros() as usize / 8,
        }
    }

    /// [`Scanner::ordinary_run`] of a run longer than two words. From the third word on (the first two were read
    /// there, unless fewer than sixteen bytes are left), a word at a time for four words: most keys, ids and model
    /// names end within them. Then thirty-two bytes at a time while none is special (a fold the compiler turns into a
    /// few vector instructions), then a word at a time to the one that is.
    #[inline(never)]
    fn long_run(&self) -> usize {
        let rest = self.text.get(self.pos..).unwrap_or_default();
        let mut at = if rest.len() >= 16 { 16 } else { 0 };
        for _ in 0..4 {
            match rest.get(at..at + 8).map(specials) {
                Some(0) => at += 8,
                Some(m) => return at + m.trailing_zeros() as usize / 8,
                None => break,
            }
        }
        while let Some(chunk) = rest
            .get(at..at + 32)
            .and_then(|c| <&[u8; 32]>::try_from(c).ok())
        {
            if chunk.iter().fold(false, |seen, &b| seen | special(b)) {
                break;
            }
            at += 32;
        }
        while let Some(word) = rest.get(at..at + 8) {
            match specials(word) {
                0 => at += 8,
                m => return at + m.trailing_zeros() as usize / 8,
            }
        }
        let tail = rest.get(at..).unwrap_or_default();
        at + tail.iter().position(|&b| special(b)).unwrap_or(tail.len())
    }

    /// An escape after its backslash; a `\u` escape of a surrogate must be a high one followed by a low one.
    fn escape(&mut self) -> Scan<()> {
        let b = *self.text.get(self.pos).ok_or(Unusual)?;
        self.pos += 1;
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => match self.hex4()? {
                0xD800..=0xDBFF => {
                    self.literal(b"\\u")?;
                    match self.hex4()? {
                        0xDC00..=0xDFFF => Ok(()),
                        _ => Err(Unusual),
                    }
                }
                0xDC00..=0xDFFF => Err(Unusual),
                _ => Ok(()),
            },
            _ => Err(Unusual),
        }
    }

    fn hex4(&mut self) -> Scan<u32> {
        let digits = self.text.get(self.pos..self.pos + 4).ok_or(Unusual)?;
        let mut n = 0;
        for &d in digits {
            n = n << 4 | char::from(d).to_digit(16).ok_or(Unusual)?;
        }
        self.pos += 4;
        Ok(n)
    }

    /// A number: its value when it is an unsigned integer that fits a `u64`, else `None`.
    fn number(&mut self) -> Scan<Option<u64>> {
        let negative = self.text.get(self.pos) == Some(&b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        let mut value = Some(0u64);
        while let Some(d) = self.text.get(self.pos).filter(|d| d.is_ascii_digit()) {
            value = value
                .and_then(|v| v.checked_mul(10))
                .and_then(|v| v.checked_add(u64::from(d - b'0')));
            self.pos += 1;
        }
        match self.pos - int_start {
            0 => return Err(Unusual),
            1 => {}
            n if n > MAX_INTEGER_DIGITS || self.text.get(int_start) == Some(&b'0') => {
                return Err(Unusual)
            }
            _ => {}
        }
        let mut integer = !negative;
        if self.text.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            self.digits()?;
            integer = false;
        }
        if matches!(self.text.get(self.pos), Some(b'e' | b'E')) {
            return Err(Unusual);
        }
        Ok(value.filter(|_| integer))
    }

    /// One digit or more.
    fn digits(&mut self) -> Scan<()> {
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        if self.pos == start {
            Err(Unusual)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
