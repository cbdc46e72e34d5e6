//! Property tests: chunking, blob sealing and packs round-trip for arbitrary input.
#![allow(clippy::unwrap_used)]

use drvault_keyring::{Keyring, Keys};
use drvault_repo::blob::{open_blob, BlobSealer};
use drvault_repo::chunker::{Chunker, ChunkerParams};
use drvault_repo::format::BlobKind;
use drvault_repo::packer::PackBuilder;
use drvault_repo::{Error, Id};
use proptest::prelude::*;

fn params() -> ChunkerParams {
    ChunkerParams {
        min_size: 256,
        avg_size: 1024,
        max_size: 4096,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn chunks_reassemble_and_respect_bounds(data in proptest::collection::vec(any::<u8>(), 0..40_000), seed in any::<[u8; 32]>()) {
        let c = Chunker::new(&seed, params());
        let mut buf = Vec::new();
        let mut s = c.stream(&data[..], &mut buf);
        let mut out = Vec::new();
        let mut lens = Vec::new();
        while let Some(ch) = s.next().unwrap() {
            out.extend_from_slice(ch);
            lens.push(ch.len());
        }
        prop_assert_eq!(&out, &data);
        if let Some((_, body)) = lens.split_last() {
            for l in body {
                prop_assert!(*l >= 256 && *l <= 4096);
            }
        }
    }

    #[test]
    fn blobs_and_packs_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 1..12)) {
        let kr = Keys::full(Keyring::generate(0).unwrap());
        let mut sealer = BlobSealer::new(&kr, 3).unwrap();
        let mut pack = PackBuilder::new(1 << 20);
        let mut expected = Vec::new();
        for b in &blobs {
            let id = Id::of_plaintext(kr.id_key(), b);
            let sealed = sealer.seal(BlobKind::Data, &id, b).unwrap();
            pack.add(BlobKind::Data, id, b.len() as u32, &sealed);
            expected.push((id, b.clone()));
        }
        let finished = pack.finish(&kr).unwrap();
        prop_assert_eq!(finished.id, Id::of_stored(&finished.bytes));
        for (entry, (id, plain)) in finished.entries.iter().zip(&expected) {
            let sealed = &finished.bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
            let opened = open_blob(&kr, BlobKind::Data, id, entry.raw_length, sealed).unwrap();
            prop_assert_eq!(&opened, plain);
            // The wrong kind, ID or length is refused.
            prop_assert!(open_blob(&kr, BlobKind::Tree, id, entry.raw_length, sealed).is_err());
            let other = Id([0x55; 32]);
            let wrong_id = matches!(open_blob(&kr, BlobKind::Data, &other, entry.raw_length, sealed), Err(Error::Integrity { .. }));
            prop_assert!(wrong_id);
        }
    }

    #[test]
    fn damaged_blobs_never_panic(data in proptest::collection::vec(any::<u8>(), 1..3000), flip in any::<usize>(), cut in any::<usize>()) {
        let kr = Keys::full(Keyring::generate(0).unwrap());
        let mut sealer = BlobSealer::new(&kr, 3).unwrap();
        let id = Id::of_plaintext(kr.id_key(), &data);
        let mut sealed = sealer.seal(BlobKind::Data, &id, &data).unwrap();
        let i = flip % sealed.len();
        sealed[i] ^= 1;
        prop_assert!(open_blob(&kr, BlobKind::Data, &id, data.len() as u32, &sealed).is_err());
        let truncated = &sealed[..cut % sealed.len()];
        prop_assert!(open_blob(&kr, BlobKind::Data, &id, data.len() as u32, truncated).is_err());
    }
}
