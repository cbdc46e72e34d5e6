//! Throughput of each pipeline stage on 16 MiB of corpus-like data, for comparison with this
//! machine's per-core ceilings (`openssl speed -evp aes-256-gcm`, `b3sum`, `zstd -b3`).
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use drvault_benches::corpus_like;
use drvault_keyring::{Header, Key, Keyring, Keys, ObjectKind, SealingKey};
use drvault_repo::blob::BlobSealer;
use drvault_repo::chunker::{Chunker, ChunkerParams};
use drvault_repo::format::BlobKind;
use drvault_repo::packer::{PackBuffers, PackBuilder};
use drvault_repo::Id;

const LEN: usize = 16 * 1024 * 1024;

fn stages(c: &mut Criterion) {
    let data = corpus_like(LEN);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);

    let chunker = Chunker::new(&[9; 32], ChunkerParams::default());
    let mut buf = Vec::new();
    g.bench_function("chunk (FastCDC, keyed gear)", |b| {
        b.iter(|| {
            let mut s = chunker.stream(&data[..], &mut buf);
            let mut n = 0;
            while let Some(ch) = s.next().unwrap() {
                n += ch.len();
            }
            n
        })
    });
    let key = [7u8; 32];
    g.bench_function("hash (keyed BLAKE3)", |b| {
        b.iter(|| Id::of_plaintext(&key, &data))
    });
    for level in [2, 3] {
        g.bench_function(format!("compress (zstd {level})"), |b| {
            b.iter(|| zstd::bulk::compress(&data, level).unwrap().len())
        });
    }
    let aes = Key::from_bytes([3; 32]);
    let header = Header {
        kind: ObjectKind::DataBlob,
        compressed: false,
        epoch: 1,
    };
    let mut out = Vec::with_capacity(LEN + 64);
    g.bench_function("seal (AES-256-GCM)", |b| {
        b.iter(|| {
            out.clear();
            drvault_keyring::seal(&aes, header, &[0; 32], &data, &mut out).unwrap();
            out.len()
        })
    });
    // Sealed to an epoch's public key, as a host key does (one X25519 per sealing key).
    let public = Keyring::generate(0).unwrap().epoch_public(1).unwrap();
    let to_public = SealingKey::new(1, &public).unwrap();
    g.bench_function("seal to a public key (host key), 1 MiB", |b| {
        b.iter(|| {
            out.clear();
            to_public
                .seal(ObjectKind::DataBlob, false, &[0; 32], &data, &mut out)
                .unwrap();
            out.len()
        })
    });
    let kr = Keyring::generate(0).unwrap();
    let keys = Keys::full(kr.clone());
    // The repository default level.
    let mut sealer = BlobSealer::new(&keys, 2).unwrap();
    let chunks: Vec<&[u8]> = data.chunks(1024 * 1024).collect();
    g.bench_function("blob (hash + zstd 2 + seal, 1 MiB chunks)", |b| {
        b.iter(|| {
            let mut n = 0;
            for ch in &chunks {
                let id = Id::of_plaintext(kr.id_key(), ch);
                n += sealer.seal(BlobKind::Data, &id, ch).unwrap().len();
            }
            n
        })
    });
    // What the backup's seal workers do: one output buffer reused for every blob.
    let mut sealed = Vec::new();
    g.bench_function("blob into a reused buffer (seal_into, 1 MiB chunks)", |b| {
        b.iter(|| {
            let mut n = 0;
            for ch in &chunks {
                let id = Id::of_plaintext(kr.id_key(), ch);
                sealed.clear();
                sealer
                    .seal_into(BlobKind::Data, &id, ch, &mut sealed)
                    .unwrap();
                n += sealed.len();
            }
            n
        })
    });
    // What restore and check do with each blob: decrypt, decompress, verify the ID.
    let opened: Vec<(Id, Vec<u8>, u32)> = chunks
        .iter()
        .map(|ch| {
            let id = Id::of_plaintext(kr.id_key(), ch);
            (
                id,
                sealer.seal(BlobKind::Data, &id, ch).unwrap(),
                ch.len() as u32,
            )
        })
        .collect();
    g.bench_function("open blob (decrypt + zstd + verify, 1 MiB chunks)", |b| {
        b.iter(|| {
            let mut n = 0;
            for (id, sealed, raw) in &opened {
                n += drvault_repo::blob::open_blob(&keys, BlobKind::Data, id, *raw, sealed)
                    .unwrap()
                    .len();
            }
            n
        })
    });
    // A 16 MiB pack: in a fresh buffer each time (its pages faulted in), or in one handed back
    // by the previous pack's upload.
    let pool = PackBuffers::default();
    for (name, pooled) in [("fresh buffer", false), ("pooled buffer", true)] {
        g.bench_function(format!("pack 16 MiB ({name})"), |b| {
            b.iter(|| {
                let mut builder = if pooled {
                    PackBuilder::pooled(LEN, &pool)
                } else {
                    PackBuilder::new(LEN)
                };
                for (id, sealed, raw) in opened.iter().cycle() {
                    if builder.add(BlobKind::Data, *id, *raw, sealed) {
                        break;
                    }
                }
                builder.finish(&keys).unwrap().bytes.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
