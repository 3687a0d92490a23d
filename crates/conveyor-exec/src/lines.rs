//! Splits a byte stream into lines, bounding each so a newline-free flood cannot grow memory.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longer lines are cut into pieces of this many bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Reads `reader` to its end, calling `each` once per line (lossy UTF-8, no newline).
pub async fn for_each_line(reader: impl AsyncRead + Unpin, mut each: impl FnMut(String)) {
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    // A read error ends the stream like EOF: the step's outcome comes from its exit status.
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        let room = MAX_LINE_BYTES - line.len();
        let window = &buf[..buf.len().min(room)];
        match window.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                line.extend_from_slice(&window[..pos]);
                reader.consume(pos + 1);
                emit(&mut line, &mut each);
            }
            None => {
                let n = window.len();
                line.extend_from_slice(window);
                reader.consume(n);
                if line.len() >= MAX_LINE_BYTES {
                    emit(&mut line, &mut each);
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut each);
    }
}

fn emit(line: &mut Vec<u8>, each: &mut impl FnMut(String)) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    each(String::from_utf8_lossy(line).into_owned());
    line.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn split(input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for_each_line(input, |l| out.push(l)).await;
        out
    }

    #[tokio::test]
    async fn splits_lines_and_bounds_long_ones() {
        assert_eq!(split(b"a\nb\r\n\nc").await, vec!["a", "b", "", "c"]);
        assert_eq!(split(b"").await, Vec::<String>::new());
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 5];
        let lens: Vec<usize> = split(&long).await.iter().map(String::len).collect();
        assert_eq!(lens, vec![MAX_LINE_BYTES, MAX_LINE_BYTES, 5]);
        assert_eq!(split(&[0xff, b'\n']).await, vec!["\u{fffd}"]);
    }
}
