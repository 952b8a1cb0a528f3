//! Fast exact counting of one pre-token ("piece").
//!
//! `bpe`'s backtracking encoder is linear in the piece length, but every call
//! allocates two buffers and walks a 200k-state Aho-Corasick automaton; for
//! the short pieces of ordinary text (a word, a number, a run of punctuation)
//! that fixed cost dominates. Here a piece is counted with:
//!
//! 1. a lookup of the whole piece in a hash table of the vocabulary: a piece
//!    that is itself a token is one token (tiktoken takes the same shortcut,
//!    and `bpe` checks when it builds its tables that every token encodes to
//!    itself);
//! 2. otherwise, for pieces up to [`MERGE_MAX`] bytes, tiktoken's own merge
//!    loop (`byte_pair_merge`: repeatedly merge the adjacent pair of lowest
//!    rank, leftmost first), on a stack buffer; the rank of a merge comes from a
//!    table keyed by the two parts' tokens ([`Merges`]), built once from the
//!    vocabulary, instead of hashing the bytes the two parts span;
//! 3. longer pieces go to `bpe`'s linear backtracking encoder, so adversarial
//!    input (thousands of letters without a break) stays linear.
//!
//! Ranks are token ids: `bpe` keeps tiktoken's rank order (`token_table`).

use bpe_openai::byte_pair_encoding::BytePairEncoding;

/// Longest piece counted with the quadratic merge loop; longer pieces use the
/// linear backtracking encoder. The merge loop does at most `MERGE_MAX²`
/// steps per piece, so the work stays O(`MERGE_MAX` × text length).
pub(super) const MERGE_MAX: usize = 64;

/// Most entries of a [`Memo`] (direct-mapped: a new piece replaces the one in its slot).
const MEMO_MAX_SLOTS: usize = 16384;

/// Piece → token count for the pieces of one text (worth it above a few KB of text).
pub(super) struct Memo<'a> {
    /// An empty piece marks an empty slot (empty pieces are never stored).
    slots: Vec<(&'a [u8], u32)>,
}

impl Memo<'_> {
    /// A memo sized for a text of `len` bytes: one slot per 8 bytes, a power of two
    /// from 512 to [`MEMO_MAX_SLOTS`] (384 KB).
    pub(super) fn new(len: usize) -> Self {
        let size = (len / 8).next_power_of_two().clamp(512, MEMO_MAX_SLOTS);
        Memo {
            slots: vec![(&[][..], 0); size],
        }
    }
}

/// The filter takes its bit index from the hash bits above this shift (the slot
/// index comes from the low bits).
const FILTER_SHIFT: u32 = 40;

/// No rank (the byte string is not a token).
const NONE: u32 = u32::MAX;

/// A merge candidate in [`Ranks::merge_count`] is `rank << POS_BITS | start`: the
/// smallest key is the lowest rank, leftmost on ties, and holds its own position.
const POS_BITS: u32 = 6;
const POS_MASK: i32 = (1 << POS_BITS) - 1;
const _: () = assert!(MERGE_MAX <= 1 << POS_BITS, "a start must fit in POS_BITS");
/// No candidate (larger than any key: ranks have at most 20 bits).
const NO_KEY: i32 = i32::MAX;
/// Keys scanned per step of the minimum search.
const LANES: usize = 8;

/// The key of merging the part at `start` with the next one into `rank` (`NONE`
/// gives `NO_KEY`, without a branch: hits and misses come about evenly).
#[inline]
fn candidate(rank: u32, start: usize) -> i32 {
    ((u64::from(rank) << POS_BITS) | start as u64).min(NO_KEY as u64) as i32
}

/// One entry of the vocabulary table: the token's first (up to) 8 bytes packed into
/// `key`, its length and its rank. Tokens of at most 8 bytes are matched on `key` and
/// `len` alone (exact, no second memory access); longer ones are checked byte for byte.
#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    /// 0 marks an empty slot (no token is empty).
    len: u32,
    rank: u32,
}

/// The first (up to) 8 bytes of `bytes`, little-endian, zero-padded.
#[inline]
fn head(bytes: &[u8]) -> u64 {
    match bytes.first_chunk::<8>() {
        Some(first) => u64::from_le_bytes(*first),
        None => {
            // Shorter than 8 bytes: assemble by hand (a `copy_from_slice` of a
            // variable length is a `memmove` call).
            let mut key = 0u64;
            for (i, &b) in bytes.iter().enumerate() {
                key |= u64::from(b) << (8 * i);
            }
            key
        }
    }
}

/// Where `bytes` (with `key = head(bytes)`) starts probing; any mixing of the bytes works,
/// collisions only cost probes.
#[inline]
fn hash(bytes: &[u8], key: u64) -> u64 {
    let mut h = key ^ (bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    if let Some(last) = bytes.last_chunk::<8>() {
        if bytes.len() > 8 {
            h = h.rotate_left(29) ^ u64::from_le_bytes(*last).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        }
    }
    h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 32)
}

/// The vocabulary of one encoding as a byte string → rank table.
pub(super) struct Ranks {
    bpe: &'static BytePairEncoding,
    /// Open addressing with linear probing, at most ~77% full (2 MB for cl100k, 4 MB
    /// for o200k; a bigger, emptier table measured slower: fewer of its lines stay cached).
    slots: Vec<Slot>,
    mask: usize,
    /// Rank of every two-byte string (`NONE` when it is not a token), indexed by
    /// `(b0 << 8) | b1`: the merge loop starts with one such lookup per byte.
    pairs: Vec<u32>,
    /// One bit per hash value (high bits of [`hash`]), set for every token: most
    /// strings that are not tokens are turned away here, in a table small enough to
    /// stay in cache, instead of in `slots`.
    filter: Vec<u64>,
    filter_mask: u64,
    /// Rank of every single byte (all 256 are tokens in both encodings).
    byte_ranks: [u32; 256],
    /// The merge table: (left part, right part) → the token they merge into.
    merges: Merges,
}

impl Ranks {
    /// Builds the tables for `bpe` (once per process, at `preload` or first use).
    pub(super) fn new(bpe: &'static BytePairEncoding) -> Self {
        let n = bpe.num_tokens();
        let size = n.next_power_of_two().max(16);
        let mask = size - 1;
        let mut slots = vec![Slot::default(); size];
        let mut pairs = vec![NONE; 1 << 16];
        // About 10% of the bits set: 8 bits per token, rounded up to a power of two.
        let filter_bits = (8 * n).next_power_of_two().max(64);
        let filter_mask = (filter_bits - 1) as u64;
        let mut filter = vec![0u64; filter_bits / 64];
        for rank in 0..n {
            let id = rank as u32;
            let bytes = bpe.token_bytes(id);
            if let [a, b] = bytes {
                pairs[(usize::from(*a) << 8) | usize::from(*b)] = id;
            }
            let key = head(bytes);
            let h = hash(bytes, key);
            let bit = (h >> FILTER_SHIFT) & filter_mask;
            filter[(bit >> 6) as usize] |= 1 << (bit & 63);
            let mut i = (h as usize) & mask;
            while slots[i].len != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = Slot {
                key,
                len: bytes.len() as u32,
                rank: id,
            };
        }
        let mut byte_ranks = [NONE; 256];
        let mut ranks = Ranks {
            bpe,
            slots,
            mask,
            pairs,
            filter,
            filter_mask,
            byte_ranks,
            merges: Merges::with_capacity(n),
        };
        for (b, r) in byte_ranks.iter_mut().enumerate() {
            *r = ranks.rank(&[b as u8]);
        }
        ranks.byte_ranks = byte_ranks;
        // Shortest tokens first: the merge of a token's bytes only ever looks up
        // merges into shorter tokens before its last step, so the table is complete
        // enough for it when its turn comes.
        let mut by_length: Vec<u32> = (0..n as u32).collect();
        by_length.sort_by_key(|&t| bpe.token_len(t));
        for t in by_length {
            let bytes = bpe.token_bytes(t);
            let split = match bytes.len() {
                0 | 1 => None,
                len if len <= MERGE_MAX => ranks.merge_split(bytes),
                _ => ranks.canonical_split(bytes),
            };
            if let Some((left, right)) = split {
                ranks.merges.insert(left, right, t);
            }
        }
        ranks
    }

    /// The rank of `bytes` (not empty) if it is a token, else `NONE`.
    #[inline]
    fn rank(&self, bytes: &[u8]) -> u32 {
        if let [a, b] = bytes {
            return self.pairs[(usize::from(*a) << 8) | usize::from(*b)];
        }
        let key = head(bytes);
        let len = bytes.len() as u32;
        let h = hash(bytes, key);
        let bit = (h >> FILTER_SHIFT) & self.filter_mask;
        if self.filter[(bit >> 6) as usize] & (1 << (bit & 63)) == 0 {
            return NONE;
        }
        let mut i = (h as usize) & self.mask;
        loop {
            let slot = self.slots[i];
            if slot.len == 0 {
                return NONE;
            }
            if slot.len == len
                && slot.key == key
                && (len <= 8 || self.bpe.token_bytes(slot.rank) == bytes)
            {
                return slot.rank;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The number of tokens tiktoken encodes `piece` into.
    #[inline]
    pub(super) fn count(&self, piece: &[u8]) -> usize {
        match piece.len() {
            0 => 0,
            1 => 1,
            n if n <= MERGE_MAX => self.short_count(piece),
            _ => super::long::count(self.bpe, piece),
        }
    }

    /// [`Ranks::count`] of a piece of 2..=`MERGE_MAX` bytes.
    #[inline]
    fn short_count(&self, piece: &[u8]) -> usize {
        if self.rank(piece) != NONE {
            1
        } else {
            self.merge_count(piece)
        }
    }

    /// [`Ranks::count`], remembering the counts of short pieces in `memo`: ordinary text
    /// repeats most of its words, and a hit costs one probe of a small table.
    #[inline]
    pub(super) fn count_memo<'a>(&self, piece: &'a [u8], memo: &mut Memo<'a>) -> usize {
        match piece.len() {
            0 => 0,
            1 => 1,
            n if n <= MERGE_MAX => {
                let i = (hash(piece, head(piece)) as usize) & (memo.slots.len() - 1);
                let (seen, count) = memo.slots[i];
                if seen == piece {
                    return count as usize;
                }
                let count = self.short_count(piece);
                memo.slots[i] = (piece, count as u32);
                count
            }
            _ => super::long::count(self.bpe, piece),
        }
    }

    /// tiktoken's `byte_pair_merge`, counting the parts left at the end.
    /// `piece` has 2..=`MERGE_MAX` bytes.
    ///
    /// A part is named by the index of its first byte. `part[i]` is its token;
    /// `rank[i]` is the rank of the merge of part `i` with the part after it (`NONE`
    /// if no such merge, or `i` is not a part any more); `next[i]` is where the part
    /// after `i` starts (`n` for the last), `prev[i]` where the part before starts.
    /// tiktoken keeps the same ranks in a vector and removes merged entries; the
    /// lowest rank, leftmost on ties, is merged first in both. New candidates come
    /// from the merge table (see [`Merges`]), keyed by the two parts' tokens, rather
    /// than from hashing the bytes they span.
    fn merge_count(&self, piece: &[u8]) -> usize {
        self.merge::<false>(piece).0
    }

    /// The canonical split of a token of 2..=`MERGE_MAX` bytes (see
    /// [`Ranks::canonical_split`]), with the merge table complete for shorter tokens.
    fn merge_split(&self, token: &[u8]) -> Option<(u32, u32)> {
        match self.merge::<true>(token) {
            (2, left, right) => Some((left, right)),
            _ => None,
        }
    }

    /// The merge of [`Ranks::merge_count`]: the number of parts it ends with, and with
    /// `SPLIT` it stops at two parts and also returns their tokens.
    #[inline(always)]
    fn merge<const SPLIT: bool>(&self, piece: &[u8]) -> (usize, u32, u32) {
        let n = piece.len();
        let mut key = [NO_KEY; MERGE_MAX];
        let mut part = [0u32; MERGE_MAX];
        let mut next = [0u8; MERGE_MAX];
        let mut prev = [0u8; MERGE_MAX];
        for i in 0..n - 1 {
            let pair = (usize::from(piece[i]) << 8) | usize::from(piece[i + 1]);
            key[i] = candidate(self.pairs[pair], i);
            part[i] = self.byte_ranks[usize::from(piece[i])];
            next[i] = (i + 1) as u8;
            prev[i + 1] = i as u8;
        }
        part[n - 1] = self.byte_ranks[usize::from(piece[n - 1])];
        next[n - 1] = n as u8;
        // Keys past n - 2 stay NO_KEY, so the scan can run over whole lanes of 8.
        let lanes = (n - 1).next_multiple_of(LANES);
        let mut parts = n;
        loop {
            if SPLIT && parts == 2 {
                return (2, part[0], part[usize::from(next[0])]);
            }
            // The smallest key is the leftmost lowest rank; element-wise minimums
            // over lanes of 8 compile to vector instructions.
            let mut least = [NO_KEY; LANES];
            for chunk in key[..lanes].chunks_exact(LANES) {
                for (l, &k) in least.iter_mut().zip(chunk) {
                    *l = (*l).min(k);
                }
            }
            let best = least.iter().copied().min().unwrap_or(NO_KEY);
            if best == NO_KEY {
                return (parts, NONE, NONE);
            }
            let (merged, i) = ((best >> POS_BITS) as u32, (best & POS_MASK) as usize);
            // Merge part i with the part j after it.
            let j = usize::from(next[i]);
            let after = usize::from(next[j]); // start of the part after the merged one, or n
            part[i] = merged;
            key[i] = if after < n {
                candidate(self.merges.get(merged, part[after]), i)
            } else {
                NO_KEY
            };
            if i > 0 {
                let p = usize::from(prev[i]);
                key[p] = candidate(self.merges.get(part[p], merged), p);
            }
            key[j] = NO_KEY;
            next[i] = after as u8;
            if after < n {
                prev[after] = i as u8;
            }
            parts -= 1;
        }
    }

    /// The two parts tiktoken's merge of `token` (a token's bytes) ends with, as
    /// tokens, when the merge ends in the one token: its canonical split. `None` for
    /// single bytes and for a token the merge does not reach (it is never formed).
    /// Build time only, for tokens longer than `MERGE_MAX` (any length, quadratic,
    /// allocates).
    fn canonical_split(&self, token: &[u8]) -> Option<(u32, u32)> {
        // Part starts; a part ends where the next starts.
        let mut starts: Vec<usize> = (0..token.len()).collect();
        let end = |starts: &[usize], k: usize| starts.get(k + 1).copied().unwrap_or(token.len());
        while starts.len() > 2 {
            let mut best = (NONE, 0);
            for k in 0..starts.len() - 1 {
                let r = self.rank(&token[starts[k]..end(&starts, k + 1)]);
                if r < best.0 {
                    best = (r, k);
                }
            }
            if best.0 == NONE {
                return None;
            }
            starts.remove(best.1 + 1);
        }
        if starts.len() != 2 {
            return None;
        }
        let left = self.rank(&token[..starts[1]]);
        let right = self.rank(&token[starts[1]..]);
        (left != NONE && right != NONE).then_some((left, right))
    }
}

/// The merge table: which token two adjacent parts merge into.
///
/// tiktoken merges two adjacent parts whenever their bytes together are a token. But
/// every part it ever forms is a token whose own merge ends in itself, and the
/// merges inside a part's span are exactly the merges of the part's bytes run
/// alone: the merge that forms token `T` always joins the same two parts, the ones
/// `T`'s own merge ends with (its canonical split). A candidate that is any other
/// split of `T` can therefore never be the lowest (if it were merged, `T`'s last
/// merge would be that split), so leaving it out changes nothing. That makes the
/// table one entry per token, keyed by two token ids: no bytes to hash or compare.
pub(super) struct Merges {
    /// Buckets of four slots, half a cache line each. A key goes to its home bucket,
    /// or when that is full to the next bucket with room, marking the buckets it
    /// passed as overflowed. A lookup compares the home bucket's four slots without
    /// branching and only goes on when the key is not there and the bucket has
    /// overflowed (rare): a probe loop ending on "found or empty?" would mispredict
    /// on about every other lookup, as hits and misses are about even here.
    buckets: Vec<Bucket>,
    /// `64 - log2(buckets.len() - 1)`: the home bucket is the top bits of a
    /// multiplicative hash. The last bucket stays empty (see `filter`).
    shift: u32,
    /// One bit per hash value (8 bits per entry), set for every key in the table. A
    /// lookup whose bit is clear reads the empty last bucket instead of its home
    /// (chosen without a branch): the pairs of ordinary text that merge into nothing
    /// are many and varied, and reading their homes spread them over the whole
    /// table and out of the cache, while the filter is small enough to stay there.
    filter: Vec<u64>,
    /// `64 - log2(filter bits)`.
    filter_shift: u32,
}

/// A [`Merges`] bucket: slots `key << RANK_BITS | merged` (`key` from [`Merges::key`]),
/// or `EMPTY`; bit 63 of the first slot marks an overflowed bucket.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Bucket([u64; 4]);

/// Ranks fit in 20 bits (cl100k has ~100k tokens, o200k ~200k); keys in 40.
const RANK_BITS: u32 = 20;
const RANK_MASK: u64 = (1 << RANK_BITS) - 1;
const KEY_MASK: u64 = (1 << (2 * RANK_BITS)) - 1;
/// An empty slot: its key (all ones) is not two ranks' key.
const EMPTY: u64 = KEY_MASK << RANK_BITS;
/// Set in a bucket's first slot when a key whose home it is went further.
const OVERFLOW: u64 = 1 << 63;

impl Merges {
    /// An empty table for up to `entries` entries, at most ~40% full (few buckets overflow).
    fn with_capacity(entries: usize) -> Self {
        assert!(
            entries < (1 << RANK_BITS),
            "ranks must fit in {RANK_BITS} bits"
        );
        let size = (entries * 5 / 8).next_power_of_two().max(2);
        let filter_bits = (8 * entries).next_power_of_two().max(64);
        Merges {
            buckets: vec![Bucket([EMPTY; 4]); size + 1],
            shift: 64 - size.trailing_zeros(),
            filter: vec![0; filter_bits / 64],
            filter_shift: 64 - filter_bits.trailing_zeros(),
        }
    }

    /// Records that parts `left` and `right` merge into `merged`.
    fn insert(&mut self, left: u32, right: u32, merged: u32) {
        let key = Self::key(left, right);
        let bit = self.filter_bit(key);
        self.filter[bit >> 6] |= 1 << (bit & 63);
        let mask = self.buckets.len() - 2;
        let mut b = self.home(key);
        loop {
            let bucket = &mut self.buckets[b].0;
            if let Some(slot) = bucket.iter_mut().find(|s| **s & !OVERFLOW == EMPTY) {
                *slot = (*slot & OVERFLOW) | (key << RANK_BITS) | u64::from(merged);
                return;
            }
            bucket[0] |= OVERFLOW;
            b = (b + 1) & mask;
        }
    }

    #[inline]
    fn key(left: u32, right: u32) -> u64 {
        (u64::from(left) << RANK_BITS) | u64::from(right)
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    #[inline]
    fn filter_bit(&self, key: u64) -> usize {
        (key.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) >> self.filter_shift) as usize
    }

    /// The merged token in `bucket` for `key`, or `NONE` (without branches).
    #[inline]
    fn find(bucket: &Bucket, key: u64) -> u32 {
        let want = key << RANK_BITS;
        let mut merged = NONE;
        for &slot in &bucket.0 {
            if slot & (KEY_MASK << RANK_BITS) == want {
                merged = slot as u32 & RANK_MASK as u32;
            }
        }
        merged
    }

    /// The token parts `left` and `right` merge into, or `NONE`.
    #[inline]
    pub(super) fn get(&self, left: u32, right: u32) -> u32 {
        let key = Self::key(left, right);
        let bit = self.filter_bit(key);
        let known = (self.filter[bit >> 6] >> (bit & 63)) & 1;
        // All ones when the filter knows the key, else zero: home or the empty bucket.
        let select = 0usize.wrapping_sub(known as usize);
        let last = self.buckets.len() - 1;
        let mut b = (self.home(key) & select) | (last & !select);
        let mut bucket = &self.buckets[b];
        let mut merged = Self::find(bucket, key);
        // `&`, not `&&`: one branch, almost never taken.
        while (merged == NONE) & (bucket.0[0] & OVERFLOW != 0) {
            b = (b + 1) & (self.buckets.len() - 2);
            bucket = &self.buckets[b];
            merged = Self::find(bucket, key);
        }
        merged
    }
}

#[cfg(test)]
impl Ranks {
    /// For tests: the slow byte-string canonical split of any token.
    pub(super) fn canonical_split_of(&self, token: &[u8]) -> Option<(u32, u32)> {
        self.canonical_split(token)
    }

    /// For tests: the rank of a byte string (`u32::MAX` when it is not a token).
    pub(super) fn rank_of(&self, bytes: &[u8]) -> u32 {
        self.rank(bytes)
    }

    /// For tests: what the merge table says `left` and `right` merge into.
    pub(super) fn merges_into(&self, left: u32, right: u32) -> u32 {
        self.merges.get(left, right)
    }
}
