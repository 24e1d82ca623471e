//! Posting blocks: the records that one index transaction files under one
//! value (a consumer, provider, service, or the time index's single key),
//! stored as one row instead of one row each, and the merge that reads them
//! back newest first.
//!
//! A block's row key is its newest (hash, received µs, seq); its value is its
//! (received µs, seq) pairs, oldest first, 16 bytes each (little-endian), or
//! nothing when the key's pair is the block's only one (at low rates most
//! blocks hold one record, and the key already says which). A
//! record's `received_at` is taken when its request arrives and its seq when
//! it is appended, so blocks of different batches overlap in time (a slow
//! exchange is appended after faster, later ones). Two bounds keep a query
//! exact and its work small:
//!
//! - every block spans at most [`SPAN`] µs, so the blocks that can hold a
//!   pair at or below an upper bound `hi` are those whose key lies in
//!   `[lo, hi + SPAN]`: a reverse range scan, as with one row per record;
//! - a block holds at most [`MAX_ENTRIES`] pairs, so reading one for a page
//!   of 50 costs little.
//!
//! [`Merge`] yields the pairs of blocks handed to it newest block key first
//! in exact descending (received µs, seq) order: the order, and so the
//! cursors, that queries had with one row per record.
//!
//! The subject index, whose values are too many to share blocks, keeps
//! sorted runs instead (`index.rs`): here are the encoding of a run's
//! blocks of (hash, received µs, seq) triples, the search of one block, and
//! [`MergeStreams`], which merges the runs' answers.

use std::collections::BinaryHeap;

/// Widest span of received times in one block, in µs.
pub(super) const SPAN: u64 = 10_000;
/// Most pairs in one block (8 KiB).
pub(super) const MAX_ENTRIES: usize = 512;
const PAIR_BYTES: usize = 16;

/// (received µs, seq).
pub(super) type Pair = (u64, u64);

/// Sorts `rows` of (hash, received µs, seq) and cuts them into blocks,
/// calling `emit` with each block's key and bytes. Every (hash, seq) must be
/// given once: a block's key is its newest row, and two blocks with the same
/// key would overwrite each other.
pub(super) fn build<E>(
    rows: &mut [(u64, u64, u64)],
    mut emit: impl FnMut((u64, u64, u64), &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    rows.sort_unstable();
    let mut bytes = Vec::with_capacity(MAX_ENTRIES * PAIR_BYTES);
    let mut start = 0;
    while start < rows.len() {
        let (hash, first_time, _) = rows[start];
        let mut end = start;
        while end < rows.len()
            && end - start < MAX_ENTRIES
            && rows[end].0 == hash
            && rows[end].1 - first_time <= SPAN
        {
            end += 1;
        }
        bytes.clear();
        if end - start > 1 {
            for &(_, time, seq) in &rows[start..end] {
                bytes.extend_from_slice(&time.to_le_bytes());
                bytes.extend_from_slice(&seq.to_le_bytes());
            }
        }
        emit(rows[end - 1], &bytes)?;
        start = end;
    }
    Ok(())
}

/// A block's value that is not whole pairs.
#[derive(Debug)]
pub(super) struct BadBlock(pub usize);

impl std::fmt::Display for BadBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an audit index block of {} bytes is malformed", self.0)
    }
}

/// The little-endian word at byte `at` (0 past the end: callers check the
/// length first).
fn word_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The pairs of the block whose key's pair is `newest`, oldest first.
fn decode(newest: Pair, bytes: &[u8]) -> Result<Vec<Pair>, BadBlock> {
    if bytes.is_empty() {
        return Ok(vec![newest]);
    }
    if !bytes.len().is_multiple_of(PAIR_BYTES) || bytes.len() == PAIR_BYTES {
        return Err(BadBlock(bytes.len()));
    }
    Ok((0..bytes.len() / PAIR_BYTES)
        .map(|i| {
            (
                word_at(bytes, i * PAIR_BYTES),
                word_at(bytes, i * PAIR_BYTES + 8),
            )
        })
        .collect())
}

/// Merges blocks into one stream of pairs, newest first, between a lower
/// received time and an upper pair (both inclusive).
pub(super) struct Merge {
    lo_time: u64,
    hi: Pair,
    /// The newest remaining pair of each open block, with the block's slot.
    heads: BinaryHeap<(Pair, usize)>,
    /// The remaining pairs of each open block, oldest first.
    open: Vec<Vec<Pair>>,
}

impl Merge {
    pub(super) fn new(lo_time: u64, hi: Pair) -> Merge {
        Merge {
            lo_time,
            hi,
            heads: BinaryHeap::new(),
            open: Vec::new(),
        }
    }

    /// Whether the next block, whose key (newest pair) is `newest`, must be
    /// opened before [`Merge::pop`] may answer. Blocks come newest key first,
    /// so once the newest open pair is above `newest`, no block not yet
    /// opened holds anything above it.
    pub(super) fn wants(&self, newest: Pair) -> bool {
        self.heads.peek().is_none_or(|(head, _)| newest > *head)
    }

    /// Adds the pairs within the bounds of the block whose key's pair is
    /// `newest`.
    pub(super) fn open(&mut self, newest: Pair, bytes: &[u8]) -> Result<(), BadBlock> {
        let (lo, hi) = (self.lo_time, self.hi);
        let mut pairs = decode(newest, bytes)?;
        pairs.retain(|&(time, seq)| time >= lo && (time, seq) <= hi);
        if let Some(&newest) = pairs.last() {
            self.heads.push((newest, self.open.len()));
            self.open.push(pairs);
        }
        Ok(())
    }

    /// The newest pair of the open blocks, taken out.
    pub(super) fn pop(&mut self) -> Option<Pair> {
        let (pair, slot) = self.heads.pop()?;
        let block = &mut self.open[slot];
        block.pop();
        match block.last() {
            Some(&next) => self.heads.push((next, slot)),
            None => *block = Vec::new(),
        }
        Some(pair)
    }
}

/// (hash, received µs, seq): one record filed under one value, in a run.
pub(super) type Triple = (u64, u64, u64);
/// Most triples in one block of a run (3 KiB: with its key, one 4 KiB page,
/// so a subject query reads one page per run).
pub(super) const RUN_BLOCK: usize = 128;
const TRIPLE_BYTES: usize = 24;

/// Cuts `triples`, sorted, into the blocks of a run, calling `emit` with
/// each block's last triple (its row key, after the run id) and bytes.
pub(super) fn run_blocks<E>(
    triples: &[Triple],
    mut emit: impl FnMut(Triple, &[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut bytes = Vec::with_capacity(RUN_BLOCK * TRIPLE_BYTES);
    for block in triples.chunks(RUN_BLOCK) {
        bytes.clear();
        for &(hash, time, seq) in block {
            bytes.extend_from_slice(&hash.to_le_bytes());
            bytes.extend_from_slice(&time.to_le_bytes());
            bytes.extend_from_slice(&seq.to_le_bytes());
        }
        if let Some(&last) = block.last() {
            emit(last, &bytes)?;
        }
    }
    Ok(())
}

/// How many triples a run's block holds, or why it is not one.
fn run_block_len(bytes: &[u8]) -> Result<usize, BadBlock> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(TRIPLE_BYTES) {
        return Err(BadBlock(bytes.len()));
    }
    Ok(bytes.len() / TRIPLE_BYTES)
}

/// Triple `i` of a run's block.
fn triple_at(bytes: &[u8], i: usize) -> Triple {
    let at = i * TRIPLE_BYTES;
    (
        word_at(bytes, at),
        word_at(bytes, at + 8),
        word_at(bytes, at + 16),
    )
}

/// The triples of a run's block, in order.
pub(super) fn run_block_triples(bytes: &[u8]) -> Result<Vec<Triple>, BadBlock> {
    Ok((0..run_block_len(bytes)?)
        .map(|i| triple_at(bytes, i))
        .collect())
}

/// The (received µs, seq) pairs of the triples of a run's block filed under
/// `hash` with received time at least `lo_time` and at most `hi`, oldest
/// first. The block is sorted, so they are found by binary search and only
/// they are decoded.
pub(super) fn run_block_pairs(
    bytes: &[u8],
    hash: u64,
    lo_time: u64,
    hi: Pair,
) -> Result<Vec<Pair>, BadBlock> {
    let count = run_block_len(bytes)?;
    let triple = |i: usize| triple_at(bytes, i);
    // The first index whose triple is not below `bound`.
    let first_not_below = |bound: Triple, inclusive: bool| {
        let (mut lo, mut hi) = (0, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let t = triple(mid);
            if t < bound || (inclusive && t == bound) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let start = first_not_below((hash, lo_time, 0), false);
    let end = first_not_below((hash, hi.0, hi.1), true);
    Ok((start..end.max(start))
        .map(|i| {
            let (_, time, seq) = triple(i);
            (time, seq)
        })
        .collect())
}

/// Merges streams that each give pairs newest first into one stream,
/// newest first: the subject index's runs, each searched on its own.
pub(super) struct MergeStreams<S> {
    streams: Vec<S>,
    heads: BinaryHeap<(Pair, usize)>,
}

impl<S, E> MergeStreams<S>
where
    S: FnMut() -> Result<Option<Pair>, E>,
{
    pub(super) fn new(mut streams: Vec<S>) -> Result<MergeStreams<S>, E> {
        let mut heads = BinaryHeap::with_capacity(streams.len());
        for (i, stream) in streams.iter_mut().enumerate() {
            if let Some(pair) = stream()? {
                heads.push((pair, i));
            }
        }
        Ok(MergeStreams { streams, heads })
    }

    /// The newest pair of all the streams, taken out.
    pub(super) fn pop(&mut self) -> Result<Option<Pair>, E> {
        let Some((pair, i)) = self.heads.pop() else {
            return Ok(None);
        };
        if let Some(next) = (self.streams[i])()? {
            self.heads.push((next, i));
        }
        Ok(Some(pair))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (SplitMix64), so that a failure
    /// repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Blocks as the index holds them: key -> bytes, in key order.
    type Blocks = std::collections::BTreeMap<(u64, u64, u64), Vec<u8>>;

    /// Files rows in batches the way the indexer does: seqs rise; received
    /// times mostly rise with them, some lag far behind (slow exchanges),
    /// some repeat.
    fn file(rng: &mut Rng, records: u64, keys: u64) -> (Blocks, Vec<(u64, u64, u64)>) {
        let mut blocks = Blocks::new();
        let mut all = Vec::new();
        let mut seq = 0;
        let mut clock = 1_000_000u64;
        while seq < records {
            let batch = 1 + rng.below(2_000);
            let mut rows = Vec::new();
            for _ in 0..batch.min(records - seq) {
                clock += rng.below(40);
                let time = match rng.below(20) {
                    0 => clock.saturating_sub(rng.below(3 * SPAN)),
                    1 => clock.saturating_sub(rng.below(200)),
                    _ => clock,
                };
                rows.push((rng.below(keys), time, seq));
                seq += 1;
            }
            all.extend_from_slice(&rows);
            build(&mut rows, |key, bytes| {
                assert!(
                    blocks.insert(key, bytes.to_vec()).is_none(),
                    "key {key:?} twice"
                );
                Ok::<_, ()>(())
            })
            .unwrap_or_else(|()| panic!("emit failed"));
        }
        (blocks, all)
    }

    /// The merge as `Index::query` drives it: blocks with keys in
    /// `[lo_time, hi.0 + SPAN]`, newest key first.
    fn scan(blocks: &Blocks, hash: u64, lo_time: u64, hi: Pair, limit: usize) -> Vec<Pair> {
        let mut merge = Merge::new(lo_time, hi);
        let range = (hash, lo_time, 0)..=(hash, hi.0.saturating_add(SPAN), u64::MAX);
        let mut rows = blocks.range(range).rev().peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            while let Some(((_, t, s), bytes)) = rows.peek() {
                if !merge.wants((*t, *s)) {
                    break;
                }
                merge
                    .open((*t, *s), bytes)
                    .unwrap_or_else(|e| panic!("{e}"));
                rows.next();
            }
            match merge.pop() {
                Some(pair) => out.push(pair),
                None => break,
            }
        }
        out
    }

    #[test]
    fn blocks_hold_every_row_once_within_their_bounds() {
        let mut rng = Rng(7);
        let (blocks, all) = file(&mut rng, 20_000, 5);
        let mut seen = Vec::new();
        for ((hash, t, s), bytes) in &blocks {
            let pairs = decode((*t, *s), bytes).unwrap_or_else(|e| panic!("{e}"));
            assert!(!pairs.is_empty() && pairs.len() <= MAX_ENTRIES);
            assert_eq!(pairs.last(), Some(&(*t, *s)), "the key is the newest pair");
            assert!(pairs.windows(2).all(|w| w[0] < w[1]), "oldest first");
            assert!(t - pairs[0].0 <= SPAN, "a block spans at most SPAN");
            seen.extend(pairs.iter().map(|&(time, seq)| (*hash, time, seq)));
        }
        let mut expected = all;
        expected.sort_unstable();
        seen.sort_unstable();
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_merge_gives_exactly_the_rows_in_bounds_newest_first_and_pages_by_cursor() {
        let mut rng = Rng(42);
        let (blocks, all) = file(&mut rng, 30_000, 4);
        let max_time = all.iter().map(|r| r.1).max().unwrap_or(0);
        for round in 0..200 {
            let hash = rng.below(4);
            let lo_time = match round % 3 {
                0 => 0,
                _ => 1_000_000 + rng.below(max_time - 1_000_000),
            };
            let hi = match round % 4 {
                0 => (u64::MAX, u64::MAX),
                _ => (
                    lo_time + rng.below(max_time - lo_time + 1),
                    rng.below(30_000),
                ),
            };
            let mut expected: Vec<Pair> = all
                .iter()
                .filter(|r| r.0 == hash && r.1 >= lo_time && (r.1, r.2) <= hi)
                .map(|r| (r.1, r.2))
                .collect();
            expected.sort_unstable_by(|a, b| b.cmp(a));
            // Whole, then in pages that continue below the last pair given,
            // as a query's cursor does.
            assert_eq!(scan(&blocks, hash, lo_time, hi, usize::MAX), expected);
            let page = 1 + rng.below(300) as usize;
            let mut paged = Vec::new();
            let mut upper = hi;
            loop {
                let got = scan(&blocks, hash, lo_time, upper, page);
                paged.extend_from_slice(&got);
                match got.last() {
                    Some(&(t, s)) if got.len() == page => {
                        upper = match (t, s) {
                            (t, s) if s > 0 => (t, s - 1),
                            (t, _) if t > 0 => (t - 1, u64::MAX),
                            _ => break,
                        };
                    }
                    _ => break,
                }
            }
            assert_eq!(paged, expected, "round {round}, page {page}");
        }
    }

    #[test]
    fn a_value_that_is_not_whole_pairs_or_a_lone_pair_is_an_error() {
        let mut merge = Merge::new(0, (u64::MAX, u64::MAX));
        assert!(merge.open((5, 9), &[0u8; 17]).is_err());
        // One pair is written as no bytes; 16 bytes were not written by `build`.
        assert!(merge.open((5, 9), &[0u8; 16]).is_err());
        assert!(merge.open((5, 9), &[]).is_ok());
        assert_eq!(merge.pop(), Some((5, 9)));
        assert_eq!(merge.pop(), None);
    }

    #[test]
    fn a_run_block_gives_exactly_the_pairs_of_its_hash_within_bounds() {
        let mut rng = Rng(3);
        for _ in 0..300 {
            let mut triples: Vec<Triple> = (0..1 + rng.below(RUN_BLOCK as u64))
                .map(|_| (rng.below(4), rng.below(50), rng.below(50)))
                .collect();
            triples.sort_unstable();
            triples.dedup();
            let mut blocks = Vec::new();
            run_blocks(&triples, |last, bytes| {
                blocks.push((last, bytes.to_vec()));
                Ok::<_, ()>(())
            })
            .unwrap_or_else(|()| panic!("emit failed"));
            assert_eq!(blocks.len(), 1);
            let bytes = &blocks[0].1;
            assert_eq!(
                run_block_triples(bytes).unwrap_or_else(|e| panic!("{e}")),
                triples
            );
            let hash = rng.below(5);
            let lo = rng.below(55);
            let hi = (rng.below(55), rng.below(55));
            let expected: Vec<Pair> = triples
                .iter()
                .filter(|&&(h, t, s)| h == hash && t >= lo && (t, s) <= hi)
                .map(|&(_, t, s)| (t, s))
                .collect();
            let got = run_block_pairs(bytes, hash, lo, hi).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, expected, "{hash} {lo} {hi:?}");
        }
        assert!(run_block_pairs(&[0u8; 25], 0, 0, (1, 1)).is_err());
        assert!(run_block_pairs(&[], 0, 0, (1, 1)).is_err());
    }

    #[test]
    fn a_straggler_gets_a_block_of_its_own() {
        let mut rows = vec![(1, 5_000_000, 10), (1, 5_000_100, 11), (1, 1_000, 12)];
        let mut keys = Vec::new();
        build(&mut rows, |key, bytes| {
            let pairs = decode((key.1, key.2), bytes).unwrap_or_else(|e| panic!("{e}"));
            keys.push((key, pairs.len()));
            Ok::<_, ()>(())
        })
        .unwrap_or_else(|()| panic!("emit failed"));
        assert_eq!(keys, vec![((1, 1_000, 12), 1), ((1, 5_000_100, 11), 2)]);
    }
}
