//! The mark phase's decision: which packs to mark, which to repack first, and which marked
//! packs hold the only copy of a used blob (kept back from the sweep).

use super::*;

impl Pruner<'_> {
    /// Decides what to mark: indexed packs holding no used blob, packs with more unused bytes
    /// than `threshold` (their used blobs are copied first unless a pack that stays holds
    /// them), and unindexed packs older than `unindexed_before`. Packs already marked are left.
    pub(super) fn plan(
        &self,
        usage: &Usage,
        listing: &PackListing,
        pending: &IdSet,
        threshold: f64,
        unindexed_before: Option<i64>,
        young_after: Option<i64>,
    ) -> Result<Plan> {
        let idx = self.repo.index()?;
        let used = &usage.used;
        let keepers = keepers(&idx, used, listing, pending, young_after);
        let mut stats = vec![PackStat::default(); idx.packs().len()];
        let mut seen: Vec<u32> = Vec::new();
        idx.for_each_blob(|start, entries| {
            seen.clear();
            let keeper = Some(keepers[start]).filter(|k| *k != NO_KEEPER);
            for (_, s) in entries {
                // A pack listing a blob twice counts it once.
                if seen.contains(&s.pack_number()) {
                    continue;
                }
                seen.push(s.pack_number());
                let st = &mut stats[s.pack_number() as usize];
                // A used blob counts in the pack chosen to keep it; its other copies are waste
                // (duplicates uploaded by backups that ran at the same time).
                if used.get(start) && keeper.is_none_or(|k| k == s.pack_number()) {
                    st.used_blobs += 1;
                } else {
                    st.unused_bytes += u64::from(s.length());
                }
            }
        });
        let fates: Vec<Fate> = idx
            .packs()
            .iter()
            .zip(&stats)
            .map(|(id, st)| match listing.get(id) {
                None => Fate::Absent,
                Some(_) if pending.contains(id) => Fate::Pending,
                Some((_, modified)) if young_after.is_some_and(|t| *modified > t) => Fate::Stays,
                Some(_) if st.used_blobs == 0 => Fate::Unused,
                Some((size, _)) if st.unused_bytes as f64 / (*size).max(1) as f64 > threshold => {
                    Fate::Repack
                }
                Some(_) => Fate::Stays,
            })
            .collect();
        let mut plan = Plan {
            covered: Bits::new(idx.positions()),
            ..Default::default()
        };
        idx.for_each_blob(|start, entries| {
            let fate = |s: &Slot| fates[s.pack_number() as usize];
            if !used.get(start) || entries.iter().any(|(_, s)| fate(s) == Fate::Stays) {
                return;
            }
            if let Some(i) = entries.iter().position(|(_, s)| fate(s) == Fate::Repack) {
                plan.copies
                    .push((entries[i].1.pack_number(), (start + i) as u32));
                plan.copied_bytes += u64::from(entries[i].1.length());
                plan.covered.set(start);
            }
        });
        plan.copies.sort_unstable();
        for (id, fate) in idx.packs().iter().zip(&fates) {
            match fate {
                Fate::Unused => plan.to_mark.push(*id),
                Fate::Repack => {
                    plan.to_mark.push(*id);
                    plan.repacked += 1;
                }
                _ => {}
            }
        }
        if let Some(before) = unindexed_before {
            for (id, (_, modified)) in listing {
                if !idx.names_pack(id) && !pending.contains(id) && *modified <= before {
                    plan.to_mark.push(*id);
                    plan.unindexed += 1;
                }
            }
        }
        plan.to_mark.sort_unstable();
        Ok(plan)
    }

    /// The packs of `sweep` holding a used blob that no other existing pack holds (a blob
    /// copied in this run, `covered`, has a copy elsewhere), and for every other used blob of
    /// the sweep, the copy outside it that its deletion relies on (`witnesses`: blob, that
    /// copy, the swept packs holding the blob).
    pub(super) fn sole_copies(
        &self,
        usage: &Usage,
        covered: &Bits,
        listing: &PackListing,
        sweep: &IdSet,
    ) -> Result<(IdSet, Vec<Witness>)> {
        let idx = self.repo.index()?;
        let in_sweep: Vec<bool> = idx.packs().iter().map(|p| sweep.contains(p)).collect();
        let exists: Vec<bool> = idx
            .packs()
            .iter()
            .map(|p| listing.contains_key(p))
            .collect();
        let mut kept = IdSet::default();
        let mut witnesses = Vec::new();
        idx.for_each_blob(|start, entries| {
            if !usage.used.get(start) || covered.get(start) {
                return;
            }
            let n = |s: &Slot| s.pack_number() as usize;
            let swept = entries.iter().any(|(_, s)| in_sweep[n(s)]);
            let elsewhere = entries
                .iter()
                .find(|(_, s)| !in_sweep[n(s)] && exists[n(s)]);
            match (swept, elsewhere) {
                (true, None) => {
                    for (_, s) in entries.iter().filter(|(_, s)| in_sweep[n(s)]) {
                        kept.insert(idx.pack(s.pack_number()));
                    }
                }
                (true, Some((id, s))) => witnesses.push(Witness {
                    copy: idx.location(id, s),
                    swept: entries
                        .iter()
                        .filter(|(_, s)| in_sweep[n(s)])
                        .map(|(_, s)| idx.pack(s.pack_number()))
                        .collect(),
                }),
                _ => {}
            }
        });
        Ok((kept, witnesses))
    }

    /// The swept packs whose used blobs' other copies do not verify. An index entry is only a
    /// claim, and a host key can write index objects: before a pack is deleted because its
    /// blobs are "elsewhere", each such copy is read and its ID checked (a forged entry names a
    /// pack without the blob, or bytes no one without the plaintext can make hash to its ID).
    pub(super) async fn unverified_witnesses(&self, witnesses: Vec<Witness>) -> Result<IdSet> {
        let checked: Vec<Option<Vec<Id>>> = futures::stream::iter(witnesses)
            .map(|w| async move {
                match self.repo.read_located(&w.copy).await {
                    Ok(_) => Ok(None),
                    Err(e @ (Error::Integrity { .. } | Error::NotFound { .. })) => {
                        tracing::warn!(
                            "blob {} is not where the index says ({e}); the marked packs holding \
                             it are kept",
                            w.copy.entry.id
                        );
                        Ok(Some(w.swept))
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(checked.into_iter().flatten().flatten().collect())
    }
}

/// A used blob of a swept pack and the copy outside the sweep its deletion relies on.
pub(super) struct Witness {
    copy: Location,
    swept: Vec<Id>,
}
