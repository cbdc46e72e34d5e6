//! `drvault find PATTERN`: every entry whose name (or path) matches, in every snapshot that
//! passes the filters — "when did this file last look right?". A directory's matches are worked
//! out once per (tree, path): successive snapshots share most subtrees, so a hundred snapshots
//! of a large tree cost about one walk plus the trees that changed.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use drvault_repo::format::{Node, NodeKind};
use drvault_repo::{Id, Repository};
use drvault_restore::pattern;

use crate::cli::{FindArgs, Global};
use crate::context::Context;
use crate::exit::Exit;
use crate::timefmt;

use super::printable;

/// One entry that matched, below some directory.
#[derive(Clone)]
struct Found {
    path: String,
    kind: NodeKind,
    size: u64,
    mtime_ns: i64,
}

/// What is being looked for: one name pattern, or a pattern per path component.
enum Wanted {
    Name(Vec<u8>),
    Path(Vec<Vec<u8>>),
}

impl Wanted {
    fn parse(text: &str) -> Self {
        if text.contains('/') {
            Wanted::Path(crate::context::components(std::path::Path::new(text)))
        } else {
            Wanted::Name(text.as_bytes().to_vec())
        }
    }

    fn matches(&self, comps: &[Vec<u8>]) -> bool {
        match self {
            Wanted::Name(p) => comps.last().is_some_and(|n| pattern::matches(p, n)),
            Wanted::Path(ps) => {
                ps.len() == comps.len() && ps.iter().zip(comps).all(|(p, c)| pattern::matches(p, c))
            }
        }
    }

    /// Whether anything below `comps` can match (a path pattern cannot below its depth).
    fn may_match_below(&self, comps: &[Vec<u8>]) -> bool {
        match self {
            Wanted::Name(_) => true,
            Wanted::Path(ps) => {
                ps.len() > comps.len() && ps.iter().zip(comps).all(|(p, c)| pattern::matches(p, c))
            }
        }
    }
}

type Components = Vec<Vec<u8>>;

struct Finder<'a> {
    ctx: &'a Context,
    repo: Arc<Repository>,
    wanted: Wanted,
    /// (tree, its path) → the matches below it.
    memo: HashMap<(Id, Components), Arc<Vec<Found>>>,
    expansion: drvault_repo::expansion::Expansion,
}

impl Finder<'_> {
    fn below(&mut self, tree: Id, comps: &[Vec<u8>]) -> Result<Arc<Vec<Found>>> {
        let key = (tree, comps.to_vec());
        if let Some(found) = self.memo.get(&key) {
            return Ok(found.clone());
        }
        let t = self.ctx.rt.block_on(self.repo.load_tree(&tree))?;
        self.expansion
            .visit(&tree, drvault_repo::expansion::weight(&t))?;
        let mut found = Vec::new();
        for n in &t.entries {
            let mut child = comps.to_vec();
            child.push(n.name.clone());
            if self.wanted.matches(&child) {
                found.push(entry(&child, n));
            }
            if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                if self.wanted.may_match_below(&child) {
                    found.extend(self.below(sub, &child)?.iter().cloned());
                }
            }
        }
        let found = Arc::new(found);
        self.memo.insert(key, found.clone());
        Ok(found)
    }
}

fn entry(comps: &[Vec<u8>], n: &Node) -> Found {
    Found {
        path: comps.iter().map(|c| format!("/{}", printable(c))).collect(),
        kind: n.kind,
        size: n.size,
        mtime_ns: n.mtime_ns,
    }
}

pub fn run(ctx: &Context, g: &Global, a: &FindArgs) -> Result<Exit> {
    let repo = ctx.open(g)?;
    let spec = super::restore::spec(None, None, &a.filter);
    let mut snaps: Vec<_> = ctx
        .rt
        .block_on(repo.snapshots())?
        .into_iter()
        .filter(|(_, s)| spec.admits(s))
        .collect();
    if let Some(n) = a.newest {
        let skip = snaps.len().saturating_sub(n);
        snaps.drain(..skip);
    }
    let mut finder = Finder {
        ctx,
        repo,
        wanted: Wanted::parse(&a.pattern),
        memo: HashMap::new(),
        expansion: drvault_repo::expansion::Expansion::default(),
    };
    let mut json = Vec::new();
    let mut matches = 0u64;
    for (id, s) in &snaps {
        if crate::output::closed() {
            break;
        }
        let found = finder.below(s.tree, &[])?;
        for f in found.iter() {
            matches += 1;
            if g.json {
                json.push(serde_json::json!({
                    "snapshot_id": id.to_hex(), "snapshot_time": timefmt::rfc3339(s.time_ns),
                    "host": s.host, "path": f.path, "kind": format!("{:?}", f.kind).to_lowercase(),
                    "size": f.size, "mtime": timefmt::rfc3339(f.mtime_ns),
                }));
            } else {
                outln!(
                    "{}  {}  {:>12}  {}  {}",
                    id.short(),
                    timefmt::shown(s.time_ns),
                    f.size,
                    timefmt::shown(f.mtime_ns),
                    f.path
                );
            }
        }
    }
    if g.json {
        outln!("{}", serde_json::Value::Array(json));
    } else if !g.quiet {
        outln!(
            "{} in {}",
            super::plural(matches, "match"),
            super::plural(snaps.len() as u64, "snapshot")
        );
    }
    Ok(Exit::Ok)
}
