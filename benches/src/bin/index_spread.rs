//! Writes OBJECTS index objects of BLOBS_PER_OBJECT entries each into an existing local
//! repository, as a fleet of hosts writing small index objects for years would: the input of
//! `benches/index.sh`, which measures opening the repository before and after prune merges
//! them. The packs the entries name do not exist (opening never reads packs).
//!
//!   index_spread REPO OBJECTS BLOBS_PER_OBJECT   (passphrase in $DRVAULT_PASSWORD)
#![allow(clippy::unwrap_used)]

use drvault_repo::format::{BlobKind, IndexPack, PackEntry};
use drvault_repo::store::Store;
use drvault_repo::{Id, Repository};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo, objects, per_object] = args.as_slice() else {
        eprintln!("usage: index_spread REPO OBJECTS BLOBS_PER_OBJECT");
        std::process::exit(2);
    };
    let objects: u64 = objects.parse().unwrap();
    let per_object: u64 = per_object.parse().unwrap();
    let pass = std::env::var("DRVAULT_PASSWORD").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(repo, false).unwrap();
        let repo = Repository::open(
            store,
            &drvault_keyring::Credential::passphrase(pass.as_bytes()),
            None,
        )
        .await
        .unwrap();
        let packs_per_object = 10;
        let mut n = 0u64;
        for o in 0..objects {
            let mut packs = Vec::new();
            for p in 0..packs_per_object {
                let pack = Id(*blake3::hash(format!("pack {o} {p}").as_bytes()).as_bytes());
                let blobs = (0..per_object / packs_per_object)
                    .map(|i| {
                        n += 1;
                        PackEntry {
                            kind: BlobKind::Data,
                            id: Id(*blake3::hash(&n.to_le_bytes()).as_bytes()),
                            offset: (i * 1000) as u32,
                            length: 1000,
                            raw_length: 2000,
                        }
                    })
                    .collect();
                packs.push(IndexPack { pack, blobs });
            }
            repo.write_index_object(packs).await.unwrap();
        }
        eprintln!("{objects} index objects, {n} blobs");
    });
}
