//! Exact counting of long pieces (more than `merge::MERGE_MAX` bytes) in time linear
//! in the piece.
//!
//! tiktoken's merge (repeatedly merge the leftmost adjacent pair of parts whose
//! concatenation has the lowest rank) is quadratic when done by rescanning. Two facts
//! about the vocabularies, both checked over every token by the tests, make it linear:
//!
//! 1. Every part the merge ever forms is a token `T` that BPE encodes to itself, and
//!    the only pair of parts that ever merges into `T` is its *canonical split*
//!    `(A, B)`: the two parts left one step before the end when BPE runs on the bytes
//!    of `T` alone. So the rank of a candidate pair is a lookup of the two part ranks
//!    in a table with one entry per reachable multi-byte token; a concatenation that
//!    is a token but not by its canonical split never wins the minimum, so treating
//!    it as "no merge" changes nothing.
//! 2. `rank(T) > rank(A)` and `rank(T) > rank(B)` for every such entry. A merge at
//!    rank `r` creates only pairs that contain `T` and so rank above `r`: the ranks
//!    merged are non-decreasing, and the merge runs as a sweep over ranks (a monotone
//!    bucket queue indexed by rank) instead of with a general heap.
//!
//! Within one rank `r` (pair `(A, B)`), all pairs present are merged; with `A != B`
//! two such pairs never share a part, and merging one neither makes nor breaks
//! another, so their order does not matter. With `A == B` a run of `A`s is paired
//! from its left end, as tiktoken's leftmost-first rule does.
//!
//! Parts are kept as runs of equal tokens ([`Run`]) in a doubly linked list in a flat
//! array indexed by the position of each run's first byte, so a run of `A`s pairs up
//! in one step. The queue is a first-in-first-out list of entries per rank plus a
//! bitmap of the non-empty ranks; stale entries (the pair changed since) are skipped
//! when popped. Scratch buffers are per thread and reused, so a count allocates
//! nothing once warm. docs/tokens.md ("How a count is computed") has the figures.

use std::cell::RefCell;

use bpe_openai::byte_pair_encoding::BytePairEncoding;

/// No rank / no entry.
const NONE: u32 = u32::MAX;
/// Token ids are packed in 18 bits (o200k has 199,998 tokens).
const ID_BITS: u32 = 18;
const ID_MASK: u64 = (1 << ID_BITS) - 1;
const KEY_MASK: u64 = (1 << (2 * ID_BITS)) - 1;
/// Pieces up to this length leave their merge buffers allocated for the next count
/// (16 bytes of runs and ~12 of queue entries per byte: ~7 MB).
const RETAIN_MAX: usize = 256 * 1024;
/// The longest token of both vocabularies (the builder merges token bytes on the stack).
pub(super) const MAX_TOKEN: usize = 128;

/// The canonical-split table of one vocabulary.
pub(super) struct Long {
    /// The vocabulary the table was built from (counts pieces too long for `u32` positions).
    bpe: &'static BytePairEncoding,
    /// Rank of every one-byte token.
    pub(super) byte_token: [u32; 256],
    /// Rank of every two-byte token (`NONE` if not a token), indexed by `(b0 << 8) | b1`:
    /// the first pairs of a piece come from here without hashing (the short-piece merge
    /// starts from it too).
    pub(super) two: Vec<u32>,
    /// Open addressing, linear probing: `a | b << 18 | t << 36` for the token `t` whose
    /// canonical split is `(a, b)`; 0 is empty (`t > a` so no entry is 0).
    table: Vec<u64>,
    /// One bit per hash of `(a, b)` (another multiplier than the table's), set for every
    /// entry: most pairs do not merge, and in varied text their lookups would miss the
    /// cache in `table`; this filter (128 KB for cl100k, 256 KB for o200k) stays cached
    /// and turns most of them away.
    filter: Vec<u64>,
    filter_shift: u32,
    /// The canonical split `(a, b)` of every token with an entry, packed `a | b << 32`
    /// (`u64::MAX`: none): a queued pair is still there iff its parts are `a` and `b`.
    split: Vec<u64>,
    /// Byte length of every token (at most `MAX_TOKEN`).
    len: Vec<u8>,
    shift: u32,
    mask: usize,
    num_tokens: usize,
}

impl Long {
    /// Builds the table in rank order: by fact 2 the parts of the canonical split of
    /// `T` have lower ranks, so BPE on the bytes of `T` with the entries made so far
    /// ends in exactly two parts, the split, when `T` is reachable (more parts: `T` is
    /// never formed and gets no entry).
    pub(super) fn new(bpe: &'static BytePairEncoding) -> Self {
        let n = bpe.num_tokens();
        assert!(n < 1 << ID_BITS, "token ids must fit in {ID_BITS} bits");
        let mut byte_token = [NONE; 256];
        for id in 0..n as u32 {
            if let [b] = bpe.token_bytes(id) {
                byte_token[usize::from(*b)] = id;
            }
        }
        assert!(
            byte_token.iter().all(|&t| t != NONE),
            "every byte is a token"
        );
        // ~76% full for both vocabularies (1 MB / 2 MB): the filter answers most misses.
        let size = n.next_power_of_two();
        let filter_bits = (8 * n).next_power_of_two();
        let mut long = Long {
            bpe,
            byte_token,
            two: vec![NONE; 1 << 16],
            table: vec![0; size],
            filter: vec![0; filter_bits / 64],
            filter_shift: 64 - filter_bits.trailing_zeros(),
            split: vec![u64::MAX; n],
            len: (0..n as u32).map(|id| bpe.token_len(id) as u8).collect(),
            shift: 64 - size.trailing_zeros(),
            mask: size - 1,
            num_tokens: n,
        };
        for id in 0..n as u32 {
            let bytes = bpe.token_bytes(id);
            assert!(
                bytes.len() <= MAX_TOKEN,
                "tokens are at most {MAX_TOKEN} bytes"
            );
            if bytes.len() < 2 {
                continue;
            }
            if let Some((a, b)) = long.split_of(bytes) {
                if a < id && b < id {
                    long.insert(a, b, id);
                    long.split[id as usize] = u64::from(a) | u64::from(b) << 32;
                    if let [b0, b1] = bytes {
                        long.two[(usize::from(*b0) << 8) | usize::from(*b1)] = id;
                    }
                }
            }
        }
        long
    }

    /// tiktoken's merge of `bytes` (a token of 2..=`MAX_TOKEN` bytes) with the entries
    /// inserted so far; the two parts left if it ends with two.
    fn split_of(&self, bytes: &[u8]) -> Option<(u32, u32)> {
        let mut parts = [0u32; MAX_TOKEN];
        // `ranks[i]`: rank of the merge of parts `i` and `i + 1`; updated around each merge.
        let mut ranks = [NONE; MAX_TOKEN];
        let mut len = bytes.len();
        for (p, &b) in parts.iter_mut().zip(bytes) {
            *p = self.byte_token[usize::from(b)];
        }
        for i in 0..len - 1 {
            ranks[i] = self.pair(parts[i], parts[i + 1]);
        }
        while len > 2 {
            let (best, at) = leftmost_lowest(&ranks[..len - 1]);
            if best == NONE {
                return None;
            }
            parts[at] = best;
            parts.copy_within(at + 2..len, at + 1);
            ranks.copy_within(at + 2..len, at + 1);
            len -= 1;
            ranks[len - 1] = NONE;
            if at + 1 < len {
                ranks[at] = self.pair(best, parts[at + 1]);
            }
            if at > 0 {
                ranks[at - 1] = self.pair(parts[at - 1], best);
            }
        }
        Some((parts[0], parts[1]))
    }

    fn insert(&mut self, a: u32, b: u32, t: u32) {
        let key = u64::from(a) | u64::from(b) << ID_BITS;
        let mut i = self.slot(key);
        while self.table[i] != 0 {
            i = (i + 1) & self.mask;
        }
        self.table[i] = key | u64::from(t) << (2 * ID_BITS);
        let bit = self.filter_bit(key);
        self.filter[bit >> 6] |= 1 << (bit & 63);
    }

    #[inline]
    fn filter_bit(&self, key: u64) -> usize {
        (key.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) >> self.filter_shift) as usize
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// The rank of the token whose canonical split is `(a, b)`, or `NONE`.
    #[inline]
    pub(super) fn pair(&self, a: u32, b: u32) -> u32 {
        let key = u64::from(a) | u64::from(b) << ID_BITS;
        let bit = self.filter_bit(key);
        if self.filter[bit >> 6] & (1 << (bit & 63)) == 0 {
            return NONE;
        }
        let mut i = self.slot(key);
        loop {
            let e = self.table[i];
            if e == 0 {
                return NONE;
            }
            if e & KEY_MASK == key {
                return ((e >> (2 * ID_BITS)) & ID_MASK) as u32;
            }
            i = (i + 1) & self.mask;
        }
    }
}

impl Long {
    /// The canonical split of `t`, or `(t, t)` for a token without one (a single byte).
    #[inline]
    fn halves(&self, t: u32) -> (u32, u32) {
        match self.split[t as usize] {
            u64::MAX => (t, t),
            split => unpack(split),
        }
    }

    /// Whether BPE keeps the tokens `a` and `b` apart: tiktoken's merge of the bytes of
    /// `a` followed by those of `b` ends in exactly `[a, b]` (both reachable tokens).
    ///
    /// The merges that built `a` and `b` are undone from the last one (the highest rank)
    /// down; before each, the pair of parts then meeting at the join must not merge at a
    /// rank that would win over it (lower; on the right side, equal too: leftmost first).
    /// The walk of `bpe`'s backtracking encoder (its `is_valid_token_pair`), on the
    /// canonical-split table.
    pub(super) fn keeps_apart(&self, mut a: u32, mut b: u32) -> bool {
        let mut limit = u32::MAX;
        loop {
            let joined = self.pair(a, b);
            if joined != NONE && joined < limit {
                return false;
            }
            if a > b {
                // `a` was formed last: undo it, keep its right half at the join.
                limit = a;
                a = self.halves(a).1;
                if a == limit {
                    // `a` is a single byte: only `b` can still be undone.
                    limit = b + 1;
                    b = self.halves(b).0;
                    if b + 1 == limit {
                        return true;
                    }
                }
            } else {
                limit = b + 1;
                b = self.halves(b).0;
                if b + 1 == limit {
                    limit = a;
                    a = self.halves(a).1;
                    if a == limit {
                        return true;
                    }
                }
            }
        }
    }
}

impl Long {
    /// The number of tokens tiktoken encodes `piece` into (any length; meant for long ones).
    ///
    /// Never inlined: inlined into the window path of `merge.rs`, its scan for runs of
    /// equal bytes compiled to a byte-at-a-time loop, 1.4x slower on 100 KB of one byte.
    #[inline(never)]
    pub(super) fn count(&self, piece: &[u8]) -> usize {
        // Positions are `u32`; a piece of 4 GB (never seen in a prompt) goes to `bpe`.
        if piece.len() >= NONE as usize {
            return self.bpe.count(piece);
        }
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let n = s.count(self, piece);
            if piece.len() > RETAIN_MAX {
                // Do not keep a huge piece's buffers for the life of the thread.
                s.runs = Vec::new();
                s.entries = Vec::new();
            }
            n
        })
    }
}

/// A run of `count` equal parts (a token each), at the index of its first byte: the
/// parts of the merge kept run-length encoded.
///
/// Adjacent runs always hold different tokens (runs are joined when a merge makes
/// them equal), so a pair `(T, T)` only occurs inside a run, and all of a run's inner
/// pairs are merged at once: `count / 2` parts `TT` from its left end, plus one `T`
/// if `count` is odd (tiktoken's leftmost-first order). 100 KB of one byte is one run
/// from the start, and `ab` × 50,000 becomes one run of `ab` after the first merges:
/// each later level costs O(1), not one step per part.
#[derive(Clone, Copy, Default)]
struct Run {
    /// Start of the previous run (meaningless for the first run).
    prev: u32,
    /// Start of the next run (the piece length for the last one).
    next: u32,
    /// The token of every part; `NONE` once the run is gone (merged away or moved).
    token: u32,
    count: u32,
}

/// A queued pair: where its run starts, and the next entry of the same rank.
#[derive(Clone, Copy)]
struct Entry {
    at: u32,
    next: u32,
}

/// Per-thread buffers of the merge, kept between counts (`lists` and the bitmaps are all
/// empty again when a count ends; `runs` is only read where this count wrote).
///
/// Queue invariant: every merge the runs allow is queued under its rank, at the start
/// of the run holding its left part: a run of two or more parts for its inner pairs
/// `(T, T)`, and every run but the last for its pair with the next run. An entry is
/// stale (skipped) once its run is gone or no longer holds that pair.
struct Scratch {
    runs: Vec<Run>,
    /// `unqueued[i]`: the pair of the run at `i` with the next run was not queued when
    /// the runs were made, because the pair before it ranks lower and takes its first part
    /// away first. Whatever else removes that pair before it queues this one (the two
    /// `merge_*` check it); queueing a run's outer pair clears its flag.
    unqueued: Vec<bool>,
    entries: Vec<Entry>,
    /// First and last entry of each rank's list (`[NONE, _]`: empty). Lists are first
    /// in, first out: a rank's pairs then come up left to right, mostly, and a new part
    /// joins the run before it (whose start, and so whose queued inner pair, stays put)
    /// instead of the run after it (which would move and need queueing again).
    lists: Vec<[u32; 2]>,
    /// Ranks with a non-empty list, as a three-level bitmap: bit `r` of `level0`, bit
    /// `r / 64` of `level1`, bit `r / 4096` of `level2` (18-bit ranks fit).
    level0: Vec<u64>,
    level1: Vec<u64>,
    level2: u64,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            runs: Vec::new(),
            unqueued: Vec::new(),
            entries: Vec::new(),
            lists: Vec::new(),
            level0: Vec::new(),
            level1: Vec::new(),
            level2: 0,
        })
    };
}

impl Scratch {
    #[inline(always)]
    fn push(&mut self, rank: u32, at: u32) {
        let r = rank as usize;
        let e = self.entries.len() as u32;
        self.entries.push(Entry { at, next: NONE });
        let [head, tail] = self.lists[r];
        if head != NONE {
            self.entries[tail as usize].next = e;
            self.lists[r][1] = e;
        } else {
            self.lists[r] = [e, e];
            self.level0[r >> 6] |= 1 << (r & 63);
            self.level1[r >> 12] |= 1 << ((r >> 6) & 63);
            self.level2 |= 1 << (r >> 12);
        }
    }

    /// Queues the pair of tokens `(a, b)` at `at` if it merges.
    #[inline(always)]
    fn push_pair(&mut self, long: &Long, a: u32, b: u32, at: u32) {
        let rank = long.pair(a, b);
        if rank != NONE {
            self.push(rank, at);
        }
    }

    /// Queues the pair of the run at `at` with the next one, if there is one.
    #[inline(always)]
    fn push_outer(&mut self, long: &Long, at: u32, end: u32) {
        self.unqueued[at as usize] = false;
        let run = self.runs[at as usize];
        if run.next != end {
            let b = self.runs[run.next as usize].token;
            self.push_pair(long, run.token, b, at);
        }
    }

    /// The lowest rank with a non-empty list, or `NONE`.
    #[inline]
    fn lowest(&self) -> u32 {
        if self.level2 == 0 {
            return NONE;
        }
        let w1 = self.level2.trailing_zeros() as usize;
        let w0 = (w1 << 6) | self.level1[w1].trailing_zeros() as usize;
        ((w0 << 6) | self.level0[w0].trailing_zeros() as usize) as u32
    }

    /// Takes the whole list of `rank` (nothing of this rank is queued while it is merged:
    /// merges only queue higher ranks).
    #[inline]
    fn take(&mut self, rank: u32) -> u32 {
        let r = rank as usize;
        let e = self.lists[r][0];
        self.lists[r][0] = NONE;
        self.level0[r >> 6] &= !(1 << (r & 63));
        if self.level0[r >> 6] == 0 {
            self.level1[r >> 12] &= !(1 << ((r >> 6) & 63));
            if self.level1[r >> 12] == 0 {
                self.level2 &= !(1 << (r >> 12));
            }
        }
        e
    }

    fn count(&mut self, long: &Long, piece: &[u8]) -> usize {
        let n = piece.len();
        if n < 2 {
            return n;
        }
        if self.lists.len() < long.num_tokens {
            self.lists.resize(long.num_tokens, [NONE; 2]);
            self.level0.resize(long.num_tokens.div_ceil(64), 0);
            self.level1.resize(long.num_tokens.div_ceil(4096), 0);
        }
        if self.runs.len() < n {
            self.runs.resize(n, Run::default());
            self.unqueued.resize(n, false);
        }
        self.entries.clear();
        let end = n as u32;
        // The runs of equal bytes, with their pairs.
        let (mut i, mut prev, mut before) = (0, NONE, NONE);
        while i < n {
            let b = piece[i];
            let j = piece[i..].iter().position(|&c| c != b).map_or(n, |k| i + k);
            self.runs[i] = Run {
                prev,
                next: j as u32,
                token: long.byte_token[usize::from(b)],
                count: (j - i) as u32,
            };
            let b = usize::from(b) << 8;
            if j - i >= 2 {
                let rank = long.two[b | (b >> 8)];
                if rank != NONE {
                    self.push(rank, i as u32);
                }
            }
            let rank = if j < n {
                long.two[b | usize::from(piece[j])]
            } else {
                NONE
            };
            // Pairs of runs that a lower pair just before takes apart are not queued:
            // in a text without repeats most byte pairs are such (`ab` × 50,000: every
            // `ba`), and each would cost a push and a stale pop.
            let covered = rank != NONE && before < rank;
            self.unqueued[i] = covered;
            if rank != NONE && !covered {
                self.push(rank, i as u32);
            }
            before = rank;
            prev = i as u32;
            i = j;
        }

        let mut count = n;
        let mut rank = self.lowest();
        let mut last = None;
        while rank != NONE {
            // Fact 2: merges only queue higher ranks than their own.
            debug_assert!(last < Some(rank), "ranks merged go up");
            last = Some(rank);
            let (a, b) = unpack(long.split[rank as usize]);
            let mut e = self.take(rank);
            while e != NONE {
                let Entry { at, next } = self.entries[e as usize];
                e = next;
                let run = self.runs[at as usize];
                if run.token != a {
                    continue; // stale: the run is gone or holds other parts now
                }
                if a == b {
                    if run.count >= 2 {
                        count -= self.merge_inner(long, at, rank, end);
                    }
                } else if run.next != end && self.runs[run.next as usize].token == b {
                    self.merge_outer(long, at, rank, end);
                    count -= 1;
                }
            }
            rank = self.lowest();
        }
        count
    }

    /// Merges the inner pairs of the run at `at` into parts `t`; returns how many merges.
    fn merge_inner(&mut self, long: &Long, at: u32, t: u32, end: u32) -> usize {
        let run = self.runs[at as usize];
        let half = run.count / 2;
        self.runs[at as usize].token = t;
        self.runs[at as usize].count = half;
        if run.count % 2 == 1 {
            // The odd part left over at the end becomes a run of its own.
            let len = u32::from(long.len[run.token as usize]);
            let odd = at + (run.count - 1) * len;
            self.runs[odd as usize] = Run {
                prev: at,
                next: run.next,
                token: run.token,
                count: 1,
            };
            self.runs[at as usize].next = odd;
            if run.next != end {
                self.runs[run.next as usize].prev = odd;
            }
            self.push_outer(long, odd, end);
        }
        if half >= 2 {
            self.push_pair(long, t, t, at);
        }
        // The pair after the run lost the (lower) pair before it.
        if run.next != end && self.unqueued[run.next as usize] {
            self.push_outer(long, run.next, end);
        }
        self.push_outer(long, at, end);
        if at != 0 {
            self.push_outer(long, run.prev, end);
        }
        half as usize
    }

    /// Merges the last part of the run at `at` with the first part of the next run into
    /// the token `c` (the two runs hold different tokens).
    fn merge_outer(&mut self, long: &Long, at: u32, c: u32, end: u32) {
        let left = self.runs[at as usize];
        let u = left.next;
        let right = self.runs[u as usize];
        self.runs[u as usize].token = NONE;
        // What follows the new part: the rest of the right run, or the run after it.
        let after = if right.count == 1 {
            right.next
        } else {
            let moved = u + u32::from(long.len[right.token as usize]);
            self.runs[moved as usize] = Run {
                prev: u, // set below
                next: right.next,
                token: right.token,
                count: right.count - 1,
            };
            if right.next != end {
                self.runs[right.next as usize].prev = moved;
            }
            moved
        };
        // The new part: the left run itself if it had one part, else a run after it.
        let (mut new, before) = if left.count == 1 {
            self.runs[at as usize].token = c;
            (at, left.prev)
        } else {
            self.runs[at as usize].count -= 1;
            let new = at + (left.count - 1) * u32::from(long.len[left.token as usize]);
            self.runs[new as usize] = Run {
                prev: at,
                next: after,
                token: c,
                count: 1,
            };
            self.runs[at as usize].next = new;
            (new, at)
        };
        self.runs[new as usize].next = after;
        if after != end {
            self.runs[after as usize].prev = new;
        }
        // Join equal neighbours: a run of `c` before (only if the left run is used up)...
        let (mut joined_left, mut inner_queued) = (false, false);
        if new == at && at != 0 && self.runs[before as usize].token == c {
            self.runs[at as usize].token = NONE;
            let b = &mut self.runs[before as usize];
            inner_queued = b.count >= 2;
            b.count += 1;
            b.next = after;
            new = before;
            if after != end {
                self.runs[after as usize].prev = new;
            }
            joined_left = true;
        }
        // ... and a run of `c` after (only if the right run is used up).
        if after != end && self.runs[after as usize].token == c {
            let gone = self.runs[after as usize];
            self.runs[after as usize].token = NONE;
            let r = &mut self.runs[new as usize];
            r.count += gone.count;
            r.next = gone.next;
            if gone.next != end {
                self.runs[gone.next as usize].prev = new;
            }
        }
        // The pair after the new run lost the (lower) pair before it if the right run is
        // used up.
        let next = self.runs[new as usize].next;
        if right.count == 1 && next != end && self.unqueued[next as usize] {
            self.push_outer(long, next, end);
        }
        // Queue what changed: the moved rest of the right run, the new run's pairs and
        // the pair before it. A run joined on the left keeps its start: its inner pair
        // is queued already if it had two parts, and the pair before it is unchanged.
        if right.count > 1 {
            let moved = after;
            if right.count > 2 {
                self.push_pair(long, right.token, right.token, moved);
            }
            self.push_outer(long, moved, end);
        }
        let count = self.runs[new as usize].count;
        if count >= 2 && !inner_queued {
            self.push_pair(long, c, c, new);
        }
        self.push_outer(long, new, end);
        if !joined_left && new != 0 {
            let p = self.runs[new as usize].prev;
            self.push_outer(long, p, end);
        }
    }
}

/// The lowest of `ranks` and its index, the leftmost on ties: tiktoken's next merge
/// (`NONE` when there is none).
#[inline]
fn leftmost_lowest(ranks: &[u32]) -> (u32, usize) {
    let (mut best, mut at) = (NONE, 0);
    for (i, &r) in ranks.iter().enumerate() {
        if r < best {
            (best, at) = (r, i);
        }
    }
    (best, at)
}

#[inline]
fn unpack(split: u64) -> (u32, u32) {
    (split as u32, (split >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::tokens::merge::{Ranks, RETRIES_TAKEN};
    use crate::tokens::Encoding;

    fn encodings() -> [&'static BytePairEncoding; 2] {
        [
            &bpe_openai::cl100k_base().bpe,
            &bpe_openai::o200k_base().bpe,
        ]
    }

    /// The tables the counting path uses for `bpe`.
    fn ranks_of(bpe: &BytePairEncoding) -> &'static Ranks {
        let encoding = if std::ptr::eq(bpe, &bpe_openai::cl100k_base().bpe) {
            Encoding::Cl100kBase
        } else {
            Encoding::O200kBase
        };
        encoding.ranks()
    }

    /// The long-piece table the counting path uses for `bpe`.
    fn long_of(bpe: &BytePairEncoding) -> &'static Long {
        &ranks_of(bpe).long
    }

    /// Every token's bytes → its rank (the vocabulary of the byte-string reference BPE).
    fn byte_ranks(bpe: &BytePairEncoding) -> HashMap<&[u8], u32> {
        (0..bpe.num_tokens() as u32)
            .map(|id| (bpe.token_bytes(id), id))
            .collect()
    }

    /// The two parts of a merge.
    type Halves<'a> = (&'a [u8], &'a [u8]);

    /// tiktoken's merge on byte strings (a hash map of the vocabulary, no canonical
    /// splits): the parts left at the end, and the two parts before the last merge.
    fn reference_merge<'a>(
        bytes: &'a [u8],
        ranks: &HashMap<&[u8], u32>,
    ) -> (Vec<&'a [u8]>, Option<Halves<'a>>) {
        let mut parts: Vec<&[u8]> = bytes.chunks(1).collect();
        let mut last = None;
        loop {
            let mut best = (u32::MAX, 0);
            for i in 0..parts.len().saturating_sub(1) {
                let joined =
                    &bytes[offset(bytes, parts[i])..][..parts[i].len() + parts[i + 1].len()];
                if let Some(&r) = ranks.get(joined) {
                    if r < best.0 {
                        best = (r, i);
                    }
                }
            }
            if best.0 == u32::MAX {
                return (parts, last);
            }
            let i = best.1;
            last = Some((parts[i], parts[i + 1]));
            let start = offset(bytes, parts[i]);
            parts[i] = &bytes[start..start + parts[i].len() + parts[i + 1].len()];
            parts.remove(i + 1);
        }
    }

    fn offset(whole: &[u8], part: &[u8]) -> usize {
        part.as_ptr() as usize - whole.as_ptr() as usize
    }

    /// Facts 1 and 2 of the module doc, over every token of both vocabularies: the
    /// table holds exactly the canonical split of every token BPE reaches, and a token
    /// ranks above both halves of its split. Also: every token is reachable, so a piece
    /// that is itself a token (tiktoken's shortcut) counts 1 here too.
    #[test]
    fn table_holds_every_canonical_split_and_ranks_grow() {
        for bpe in encodings() {
            let long = long_of(bpe);
            let n = bpe.num_tokens() as u32;
            let ranks = byte_ranks(bpe);
            let id_of = |bytes: &[u8]| ranks[bytes];
            for id in 0..n {
                let bytes = bpe.token_bytes(id);
                if bytes.len() == 1 {
                    assert_eq!(long.byte_token[usize::from(bytes[0])], id);
                    continue;
                }
                let (parts, last) = reference_merge(bytes, &ranks);
                assert_eq!(
                    parts,
                    [bytes],
                    "token {id} is not reached by BPE on its bytes"
                );
                let (a, b) = last.unwrap();
                let (a, b) = (id_of(a), id_of(b));
                assert!(
                    a < id && b < id,
                    "token {id} ranks below its split ({a}, {b})"
                );
                assert_eq!(unpack(long.split[id as usize]), (a, b), "token {id}");
                assert_eq!(long.pair(a, b), id);
                assert_eq!(usize::from(long.len[id as usize]), bytes.len());
            }
        }
    }

    /// `keeps_apart(a, b)` is "tiktoken's merge of the two tokens' bytes ends in `[a, b]`",
    /// on pairs of letters and short tokens (where BPE often merges across) and on
    /// random pairs of reachable tokens; both answers must occur often.
    #[test]
    fn keeps_apart_equals_bpe_on_token_pairs() {
        for bpe in encodings() {
            let long = long_of(bpe);
            let n = bpe.num_tokens() as u32;
            let ranks = byte_ranks(bpe);
            let reachable: Vec<u32> = (0..n)
                .filter(|&id| bpe.token_len(id) == 1 || long.split[id as usize] != u64::MAX)
                .collect();
            let short: Vec<u32> = reachable
                .iter()
                .copied()
                .filter(|&id| bpe.token_len(id) <= 3)
                .collect();
            let mut x = 99u64;
            let mut pick = |from: &[u32]| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                from[(x >> 33) as usize % from.len()]
            };
            let mut pairs: Vec<(u32, u32)> = Vec::new();
            for a in b'a'..=b'z' {
                for b in b'a'..=b'z' {
                    pairs.push((
                        long.byte_token[usize::from(a)],
                        long.byte_token[usize::from(b)],
                    ));
                }
            }
            for _ in 0..20_000 {
                pairs.push((pick(&short), pick(&short)));
                pairs.push((pick(&reachable), pick(&reachable)));
                pairs.push((pick(&short), pick(&reachable)));
            }
            let (mut apart, mut merged) = (0, 0);
            for (a, b) in pairs {
                let bytes = [bpe.token_bytes(a), bpe.token_bytes(b)].concat();
                let (parts, _) = reference_merge(&bytes, &ranks);
                let expected = parts.len() == 2 && parts[0].len() == bpe.token_len(a);
                assert_eq!(long.keeps_apart(a, b), expected, "tokens {a}, {b}");
                if expected {
                    apart += 1;
                } else {
                    merged += 1;
                }
            }
            assert!(
                apart > 10_000 && merged > 2_000,
                "{apart} apart, {merged} merged"
            );
        }
    }

    /// Random letters (one long piece, no repeats to exploit) are counted by windows:
    /// the joins are proven (some after moving back), nothing falls back to the
    /// long-piece merge.
    #[test]
    fn random_letters_are_counted_by_windows() {
        let mut x = 7u64;
        let piece: Vec<u8> = (0..30_000)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                b'a' + ((x >> 33) % 26) as u8
            })
            .collect();
        for bpe in encodings() {
            let before = RETRIES_TAKEN.with(Cell::get);
            assert_eq!(
                ranks_of(bpe).windowed_count(&piece),
                Some(bpe.count(&piece))
            );
            // Some joins needed a retry, and the count still came out right.
            assert!(RETRIES_TAKEN.with(Cell::get) > before);
        }
        // Random letters with a run at the end (a periodic stretch inside other text)
        // stay in the windows, and are counted right.
        let mut tail = piece.clone();
        tail.extend([b'a'; 200]);
        for bpe in encodings() {
            let ranks = ranks_of(bpe);
            assert_eq!(ranks.windowed_count(&tail), Some(bpe.count(&tail)));
            assert_eq!(ranks.count_long(&tail), bpe.count(&tail));
        }
    }

    /// Both long-piece paths (the merge here, and windows of the short merge where
    /// their joins are proven) and the capped count agree with `bpe`.
    fn check(piece: &[u8]) -> Result<(), TestCaseError> {
        for bpe in encodings() {
            let expected = bpe.count(piece);
            let text = String::from_utf8_lossy(piece);
            prop_assert_eq!(long_of(bpe).count(piece), expected, "{:?}", text);
            let ranks = ranks_of(bpe);
            if let Some(n) = ranks.windowed_count(piece) {
                prop_assert_eq!(n, expected, "windows of {:?}", text);
            }
            prop_assert_eq!(ranks.count_long(piece), expected, "{:?}", text);
            for limit in [0, expected.saturating_sub(1), expected, expected + 1] {
                prop_assert_eq!(
                    ranks.count_long_till_limit(piece, limit),
                    bpe.count_till_limit(piece, limit)
                );
            }
        }
        Ok(())
    }

    #[test]
    fn long_count_equals_bpe_on_adversarial_pieces() {
        let mut pieces: Vec<String> = Vec::new();
        for unit in [
            "a", " ", "\n", ".", "1", "ab", "Ab", "abc", "😀", "\u{300}", "中", "é", "aab", " .",
            "-_",
        ] {
            for len in [65usize, 66, 127, 128, 129, 1000, 4097, 100_000] {
                pieces.push(unit.repeat(len.div_ceil(unit.len())));
            }
        }
        // Pseudo-random letters, digits, punctuation (a fixed LCG: reproducible).
        let mut x = 12345u64;
        for alphabet in [
            "ab",
            "abcd",
            "abcdefghijklmnopqrstuvwxyz",
            "0123456789",
            ".,;:!?-*/()",
            "的一是不了人",
        ] {
            let chars: Vec<char> = alphabet.chars().collect();
            let s: String = (0..30_000)
                .map(|_| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    chars[(x >> 33) as usize % chars.len()]
                })
                .collect();
            pieces.push(s);
        }
        for piece in &pieces {
            check(piece.as_bytes()).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn long_count_equals_bpe_on_repeated_patterns(
            unit in "([a-c]|[ .\n1]|é|😀|中|\u{300}){1,6}",
            times in 1usize..400,
            tail in "[a-c ]{0,3}",
        ) {
            let piece = unit.repeat(times.max(65 / unit.len() + 1)) + &tail;
            check(piece.as_bytes())?;
        }

        #[test]
        fn long_count_equals_bpe_on_small_alphabets(
            piece in prop_oneof![
                "[ab]{65,600}",
                "[a-d]{65,600}",
                "[a-zA-Z]{65,600}",
                "[0-9]{65,300}",
                "[ \n]{65,300}",
                "[.,;:!?(){}]{65,300}",
                "[é中😀ѣ\u{300}a]{20,300}",
            ],
        ) {
            check(piece.as_bytes())?;
        }

        #[test]
        fn long_count_equals_bpe_on_bytes(piece in prop::collection::vec(any::<u8>(), 65..400)) {
            check(&piece)?;
        }

        #[test]
        fn long_count_equals_bpe_on_token_runs(ids in prop::collection::vec(0u32..100_256, 8..60)) {
            for bpe in encodings() {
                let bytes: Vec<u8> = ids
                    .iter()
                    .flat_map(|&id| bpe.token_bytes(id).iter().copied())
                    .collect();
                check(&bytes)?;
            }
        }
    }
}
