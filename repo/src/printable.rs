//! Names from a snapshot are bytes a user chose: before they reach a terminal or a log, control
//! characters (an escape sequence can rewrite what an operator sees) and bytes that are not
//! UTF-8 are written as escapes, `\n`, `\t`, `\x1b`, and a backslash as `\\`.

use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `bytes` as printable text.
pub fn bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// A path as printable text.
pub fn path(p: &Path) -> String {
    bytes(p.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_and_invalid_utf8_are_escaped() {
        assert_eq!(super::bytes(b"plain name.txt"), "plain name.txt");
        assert_eq!(super::bytes("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(super::bytes(b"a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(super::bytes(b"line\nbreak\\"), "line\\nbreak\\\\");
        assert_eq!(super::bytes(b"bad\xffbyte"), "bad\\xffbyte");
        assert_eq!(super::bytes("\u{9b}".as_bytes()), "\\u{9b}");
    }
}
