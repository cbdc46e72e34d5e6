//! Reading a sparse file at the speed of its data: holes (found with `SEEK_DATA` and
//! `SEEK_HOLE`) are produced as zeros without a read system call; only data regions are read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use rustix::fs::SeekFrom;

pub struct SparseReader {
    file: File,
    pos: u64,
    size: u64,
    /// The data region at or after `pos`: `[data_from, data_to)`.
    data_from: u64,
    data_to: u64,
}

impl SparseReader {
    pub fn new(file: File, size: u64) -> Self {
        SparseReader {
            file,
            pos: 0,
            size,
            data_from: 0,
            data_to: 0,
        }
    }

    /// Finds the data region at or after `pos` (the end of the file when only a hole is left).
    fn locate(&mut self) -> std::io::Result<()> {
        match rustix::fs::seek(&self.file, SeekFrom::Data(self.pos)) {
            Ok(from) => {
                self.data_from = from;
                self.data_to = rustix::fs::seek(&self.file, SeekFrom::Hole(from))
                    .map(|to| to.min(self.size))
                    .unwrap_or(self.size);
            }
            // No data after `pos`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => {
                self.data_from = self.size;
                self.data_to = self.size;
            }
            // A file system without SEEK_DATA: all of it is data.
            Err(_) => {
                self.data_from = self.pos;
                self.data_to = self.size;
            }
        }
        Ok(())
    }
}

impl Read for SparseReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.data_to {
            self.locate()?;
        }
        if self.pos < self.data_from {
            let n = (self.data_from - self.pos).min(buf.len() as u64) as usize;
            buf[..n].fill(0);
            self.pos += n as u64;
            return Ok(n);
        }
        let want = (self.data_to - self.pos).min(buf.len() as u64) as usize;
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            // The file shrank under the backup: end here, as a plain read would.
            self.size = self.pos;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_read_as_zeros_and_data_as_itself() {
        let path = std::env::temp_dir().join(format!("drvault-sparse-{}", std::process::id()));
        let f = File::create(&path).expect("create");
        f.write_at(b"hello", 0).expect("write");
        f.write_at(b"end", 8 << 20).expect("write");
        let size = (8 << 20) + 3;
        let mut got = Vec::new();
        SparseReader::new(File::open(&path).expect("open"), size)
            .read_to_end(&mut got)
            .expect("read");
        let _ = std::fs::remove_file(&path);
        let mut want = vec![0u8; size as usize];
        want[..5].copy_from_slice(b"hello");
        want[8 << 20..].copy_from_slice(b"end");
        assert!(got == want);
    }
}
