//! Benchmarks of the backup pipeline's parts (see `benches/pipeline.rs`); the whole-tool
//! comparison with restic, borg and rustic is `../shared/bench/anchors.sh`.

/// Test data resembling a system corpus: text-like and compressible about 3:1 with zstd.
pub fn corpus_like(len: usize) -> Vec<u8> {
    let words = [
        "struct", "return", "usr/lib", "0x7f", "license", "include", "value", "error", "static",
        "\n", "    ",
    ];
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(5) {
            out.push((x >> 32) as u8);
        } else {
            out.extend_from_slice(words[(x >> 40) as usize % words.len()].as_bytes());
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}
