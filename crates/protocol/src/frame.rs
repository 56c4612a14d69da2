//! Framing of tagged messages: `tag: u8, len: i32 (counts itself, not the tag), body`.

/// Bytes in a tagged message header.
pub const HEADER_LEN: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Whole frame length: tag + length field + body.
    pub frame_len: usize,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid message length {len} for message type '{tag}'", tag = char::from(*tag))]
    BadLength { tag: u8, len: i64 },
    #[error("message type '{tag}' of {len} bytes exceeds max_message_size ({max} bytes)", tag = char::from(*tag))]
    TooLarge { tag: u8, len: usize, max: usize },
}

impl Header {
    /// Parses the header at the start of `buf`; `None` until five bytes are there.
    /// `max_len` bounds the frame so a peer can't make us buffer gigabytes.
    #[inline]
    pub fn parse(buf: &[u8], max_len: usize) -> Result<Option<Header>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let tag = buf[0];
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 {
            return Err(FrameError::BadLength { tag, len: i64::from(len) });
        }
        let frame_len = len as usize + 1;
        if frame_len > max_len {
            return Err(FrameError::TooLarge { tag, len: frame_len, max: max_len });
        }
        Ok(Some(Header { tag, frame_len }))
    }
}

/// Iterates over the complete frames at the start of a buffer; stops at the first partial one.
/// The caller learns how many bytes were consumed from `consumed()`.
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    max_len: usize,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8], max_len: usize) -> Self {
        Frames { buf, pos: 0, max_len }
    }

    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Header of the first incomplete frame, if any (to know how much more to read).
    pub fn pending(&self) -> Result<Option<Header>, FrameError> {
        Header::parse(&self.buf[self.pos..], self.max_len)
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<(Header, &'a [u8]), FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        match Header::parse(rest, self.max_len) {
            Err(e) => Some(Err(e)),
            Ok(None) => None,
            Ok(Some(h)) if h.frame_len > rest.len() => None,
            Ok(Some(h)) => {
                self.pos += h.frame_len;
                Some(Ok((h, &rest[..h.frame_len])))
            }
        }
    }
}

/// Reads a NUL-terminated string starting at `*pos`, advancing past the NUL.
#[inline]
pub fn read_cstr<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let start = *pos;
    // memchr: a query's text is read this way on every transaction's forward path.
    let rel = memchr::memchr(0, buf.get(start..)?)?;
    *pos = start + rel + 1;
    Some(&buf[start..start + rel])
}

#[inline]
pub fn read_i16(buf: &[u8], pos: &mut usize) -> Option<i16> {
    let b = buf.get(*pos..*pos + 2)?;
    *pos += 2;
    Some(i16::from_be_bytes([b[0], b[1]]))
}

#[inline]
pub fn read_i32(buf: &[u8], pos: &mut usize) -> Option<i32> {
    let b = buf.get(*pos..*pos + 4)?;
    *pos += 4;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_frames_and_stops_at_partial() {
        let mut buf = vec![b'Z', 0, 0, 0, 5, b'I', b'1', 0, 0, 0, 4, b'D', 0, 0];
        let mut frames = Frames::new(&buf, 1 << 20);
        let (h, f) = frames.next().unwrap().unwrap();
        assert_eq!((h.tag, h.frame_len, f.len()), (b'Z', 6, 6));
        let (h, _) = frames.next().unwrap().unwrap();
        assert_eq!(h.tag, b'1');
        assert!(frames.next().is_none());
        assert_eq!(frames.consumed(), 11);
        buf.truncate(11);
        assert_eq!(Frames::new(&buf, 1 << 20).count(), 2);
    }

    #[test]
    fn rejects_bad_and_oversize_lengths() {
        assert_eq!(
            Header::parse(&[b'Q', 0, 0, 0, 3], 100),
            Err(FrameError::BadLength { tag: b'Q', len: 3 })
        );
        assert_eq!(
            Header::parse(&[b'Q', 0xff, 0xff, 0xff, 0xff], 100),
            Err(FrameError::BadLength { tag: b'Q', len: -1 })
        );
        assert!(matches!(Header::parse(&[b'Q', 0, 0, 1, 0], 100), Err(FrameError::TooLarge { .. })));
        assert_eq!(Header::parse(&[b'Q', 0, 0], 100), Ok(None));
    }

    #[test]
    fn cstr_reader_handles_missing_nul() {
        let buf = b"abc\0de";
        let mut pos = 0;
        assert_eq!(read_cstr(buf, &mut pos), Some(&b"abc"[..]));
        assert_eq!(read_cstr(buf, &mut pos), None);
        assert_eq!(pos, 4);
    }
}
