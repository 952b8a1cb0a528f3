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
//! Parts live in flat arrays indexed by the position of their first byte (a doubly
//! linked list); the queue is a list of entries per rank, with stale entries (the
//! pair changed since) skipped when popped. Scratch buffers are per thread and
//! reused, so a count allocates nothing once warm.

use std::cell::RefCell;
use std::sync::OnceLock;

use bpe_openai::byte_pair_encoding::BytePairEncoding;

/// No rank / no entry.
const NONE: u32 = u32::MAX;
/// Token ids are packed in 18 bits (o200k has 199,998 tokens).
const ID_BITS: u32 = 18;
const ID_MASK: u64 = (1 << ID_BITS) - 1;
const KEY_MASK: u64 = (1 << (2 * ID_BITS)) - 1;
/// The longest token of both vocabularies (the builder merges token bytes on the stack).
const MAX_TOKEN: usize = 128;

/// The canonical-split table of one vocabulary.
pub(super) struct Long {
    /// Rank of every one-byte token.
    byte_token: [u32; 256],
    /// Rank of every two-byte token (`NONE` if not a token), indexed by `(b0 << 8) | b1`:
    /// the first pairs of a piece come from here without hashing.
    two: Vec<u32>,
    /// Open addressing, linear probing: `a | b << 18 | t << 36` for the token `t` whose
    /// canonical split is `(a, b)`; 0 is empty (`t > a` so no entry is 0).
    table: Vec<u64>,
    /// The canonical split `(a, b)` of every token with an entry, packed `a | b << 32`
    /// (`u64::MAX`: none): a queued pair is still there iff its parts are `a` and `b`.
    split: Vec<u64>,
    shift: u32,
    mask: usize,
    num_tokens: usize,
}

impl Long {
    /// Builds the table in rank order: by fact 2 the parts of the canonical split of
    /// `T` have lower ranks, so BPE on the bytes of `T` with the entries made so far
    /// ends in exactly two parts, the split, when `T` is reachable (more parts: `T` is
    /// never formed and gets no entry).
    fn new(bpe: &BytePairEncoding) -> Self {
        let n = bpe.num_tokens();
        assert!(n < 1 << ID_BITS, "token ids must fit in {ID_BITS} bits");
        let mut byte_token = [NONE; 256];
        for id in 0..n as u32 {
            if let [b] = bpe.token_bytes(id) {
                byte_token[usize::from(*b)] = id;
            }
        }
        assert!(byte_token.iter().all(|&t| t != NONE), "every byte is a token");
        // At most ~50% full: misses (pairs that do not merge) are the common lookup.
        let size = (2 * n).next_power_of_two();
        let mut long = Long {
            byte_token,
            two: vec![NONE; 1 << 16],
            table: vec![0; size],
            split: vec![u64::MAX; n],
            shift: 64 - size.trailing_zeros(),
            mask: size - 1,
            num_tokens: n,
        };
        for id in 0..n as u32 {
            let bytes = bpe.token_bytes(id);
            if bytes.len() < 2 || bytes.len() > MAX_TOKEN {
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
        let mut len = bytes.len();
        for (p, &b) in parts.iter_mut().zip(bytes) {
            *p = self.byte_token[usize::from(b)];
        }
        while len > 2 {
            let (mut best, mut at) = (NONE, 0);
            for i in 0..len - 1 {
                let r = self.pair(parts[i], parts[i + 1]);
                if r < best {
                    (best, at) = (r, i);
                }
            }
            if best == NONE {
                return None;
            }
            parts[at] = best;
            parts.copy_within(at + 2..len, at + 1);
            len -= 1;
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
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// The rank of the token whose canonical split is `(a, b)`, or `NONE`.
    #[inline]
    fn pair(&self, a: u32, b: u32) -> u32 {
        let key = u64::from(a) | u64::from(b) << ID_BITS;
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

/// The table for `bpe` (one of the two encodings), built on first use.
fn long_for(bpe: &'static BytePairEncoding) -> Option<&'static Long> {
    static CL100K: OnceLock<Long> = OnceLock::new();
    static O200K: OnceLock<Long> = OnceLock::new();
    let cell = if std::ptr::eq(bpe, &bpe_openai::cl100k_base().bpe) {
        &CL100K
    } else if std::ptr::eq(bpe, &bpe_openai::o200k_base().bpe) {
        &O200K
    } else {
        return None;
    };
    Some(cell.get_or_init(|| Long::new(bpe)))
}

/// The number of tokens tiktoken encodes `piece` into (any length; meant for long ones).
pub(super) fn count(bpe: &'static BytePairEncoding, piece: &[u8]) -> usize {
    match long_for(bpe) {
        Some(long) => SCRATCH.with(|s| s.borrow_mut().count(long, piece)),
        None => bpe.count(piece),
    }
}

/// [`count`] if it is at most `limit`, else `None` (`bpe`'s `count_till_limit`).
pub(super) fn count_till_limit(
    bpe: &'static BytePairEncoding,
    piece: &[u8],
    limit: usize,
) -> Option<usize> {
    Some(count(bpe, piece)).filter(|&n| n <= limit)
}

/// A part of the piece, at the index of its first byte.
#[derive(Clone, Copy)]
struct Part {
    /// Start of the previous part (meaningless for the first part).
    prev: u32,
    /// Start of the next part (the piece length for the last one).
    next: u32,
    /// The part's token; `NONE` once it was merged into the part before it.
    token: u32,
}

/// A queued pair: the start of its left part, and the next entry of the same rank.
#[derive(Clone, Copy)]
struct Entry {
    at: u32,
    next: u32,
}

/// Per-thread buffers of the merge, kept between counts (`head` and the bitmaps are all
/// empty again when a count ends).
///
/// Queue invariant: every adjacent pair of parts that merges into some token is queued
/// under that token's rank, except a pair `(T, T)` whose left part follows another `T`:
/// inside a run of equal parts only the pair at the run's start is queued, and the run
/// is merged whole when it comes up (so a run costs one push, not one per pair).
struct Scratch {
    parts: Vec<Part>,
    entries: Vec<Entry>,
    /// First entry of each rank's list (`NONE`: empty).
    head: Vec<u32>,
    /// Ranks with a non-empty list, as a three-level bitmap: bit `r` of `level0`, bit
    /// `r / 64` of `level1`, bit `r / 4096` of `level2` (18-bit ranks fit).
    level0: Vec<u64>,
    level1: Vec<u64>,
    level2: u64,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            parts: Vec::new(),
            entries: Vec::new(),
            head: Vec::new(),
            level0: Vec::new(),
            level1: Vec::new(),
            level2: 0,
        })
    };
}

impl Scratch {
    #[inline]
    fn push(&mut self, rank: u32, at: u32) {
        let r = rank as usize;
        let e = self.entries.len() as u32;
        let head = self.head[r];
        self.entries.push(Entry { at, next: head });
        self.head[r] = e;
        if head == NONE {
            self.level0[r >> 6] |= 1 << (r & 63);
            self.level1[r >> 12] |= 1 << ((r >> 6) & 63);
            self.level2 |= 1 << (r >> 12);
        }
    }

    /// Queues the pair of tokens `(a, b)` at `at` if it merges.
    #[inline]
    fn push_pair(&mut self, long: &Long, a: u32, b: u32, at: u32) {
        let rank = long.pair(a, b);
        if rank != NONE {
            self.push(rank, at);
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

    /// Marks the list of `rank` empty.
    #[inline]
    fn drained(&mut self, rank: u32) {
        let r = rank as usize;
        self.level0[r >> 6] &= !(1 << (r & 63));
        if self.level0[r >> 6] == 0 {
            self.level1[r >> 12] &= !(1 << ((r >> 6) & 63));
            if self.level1[r >> 12] == 0 {
                self.level2 &= !(1 << (r >> 12));
            }
        }
    }

    fn count(&mut self, long: &Long, piece: &[u8]) -> usize {
        let n = piece.len();
        if n < 2 {
            return n;
        }
        if self.head.len() < long.num_tokens {
            self.head.resize(long.num_tokens, NONE);
            self.level0.resize(long.num_tokens.div_ceil(64), 0);
            self.level1.resize(long.num_tokens.div_ceil(4096), 0);
        }
        self.entries.clear();
        self.parts.clear();
        let end = n as u32;
        for (i, &b) in piece.iter().enumerate() {
            self.parts.push(Part {
                prev: (i as u32).wrapping_sub(1),
                next: i as u32 + 1,
                token: long.byte_token[usize::from(b)],
            });
        }
        for (i, w) in piece.windows(2).enumerate() {
            // Inside a run of one byte only the first pair is queued.
            if i > 0 && w[0] == w[1] && piece[i - 1] == w[0] {
                continue;
            }
            let rank = long.two[(usize::from(w[0]) << 8) | usize::from(w[1])];
            if rank != NONE {
                self.push(rank, i as u32);
            }
        }

        let mut count = n;
        let mut rank = self.lowest();
        let (mut a, mut b) = (NONE, NONE);
        if rank != NONE {
            (a, b) = unpack(long.split[rank as usize]);
        }
        while rank != NONE {
            let e = self.head[rank as usize];
            if e == NONE {
                self.drained(rank);
                rank = self.lowest();
                if rank != NONE {
                    (a, b) = unpack(long.split[rank as usize]);
                }
                continue;
            }
            let Entry { at, next } = self.entries[e as usize];
            self.head[rank as usize] = next;
            let part = self.parts[at as usize];
            // Stale (merged away, or a neighbour changed since) unless the parts are (a, b).
            if part.token != a || part.next == end || self.parts[part.next as usize].token != b {
                continue;
            }
            if a != b {
                self.merge(long, at, rank, end);
                count -= 1;
            } else {
                count -= self.merge_run(long, at, rank, end);
            }
        }
        count
    }

    /// Merges the part at `at` with the next one into the token `t` (the two differ),
    /// and queues the pairs the new part makes with its neighbours.
    #[inline]
    fn merge(&mut self, long: &Long, at: u32, t: u32, end: u32) {
        let i = at as usize;
        let j = self.parts[i].next as usize;
        let gone = self.parts[j].token;
        let k = self.parts[j].next;
        self.parts[j].token = NONE;
        self.parts[i].token = t;
        self.parts[i].next = k;
        if k != end {
            self.parts[k as usize].prev = at;
            let right = self.parts[k as usize].token;
            self.push_pair(long, t, right, at);
            // The part merged away may have started a run that goes on after it: the
            // run's pair at `k` was not queued, and now starts the run.
            if right == gone {
                let l = self.parts[k as usize].next;
                if l != end && self.parts[l as usize].token == gone {
                    self.push_pair(long, gone, gone, k);
                }
            }
        }
        if at != 0 {
            let p = self.parts[i].prev;
            self.push_pair(long, self.parts[p as usize].token, t, p);
        }
    }

    /// Merges the run of equal parts around `at` into `t`, pairing from the run's left
    /// end as tiktoken does; returns the number of merges.
    fn merge_run(&mut self, long: &Long, at: u32, t: u32, end: u32) -> usize {
        let a = self.parts[at as usize].token;
        let mut start = at;
        while start != 0 {
            let p = self.parts[start as usize].prev;
            if self.parts[p as usize].token != a {
                break;
            }
            start = p;
        }
        let (mut s, mut last, mut merges) = (start, start, 0);
        loop {
            let j = self.parts[s as usize].next;
            let k = self.parts[j as usize].next;
            self.parts[j as usize].token = NONE;
            let part = &mut self.parts[s as usize];
            part.token = t;
            part.next = k;
            last = s;
            merges += 1;
            if k == end {
                break;
            }
            self.parts[k as usize].prev = s;
            let l = self.parts[k as usize].next;
            if self.parts[k as usize].token != a || l == end || self.parts[l as usize].token != a {
                break;
            }
            s = k;
        }
        // New pairs: before the run, the run of `t`s itself (one entry), after the run.
        if start != 0 {
            let p = self.parts[start as usize].prev;
            self.push_pair(long, self.parts[p as usize].token, t, p);
        }
        if last != start {
            self.push_pair(long, t, t, start);
        }
        let k = self.parts[last as usize].next;
        if k != end {
            self.push_pair(long, t, self.parts[k as usize].token, last);
        }
        merges
    }
}

#[inline]
fn unpack(split: u64) -> (u32, u32) {
    (split as u32, (split >> 32) as u32)
}
