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
//!    rank, leftmost first), on stack arrays, each merge looked up by the two
//!    parts' tokens in the long-piece merge's canonical-split table;
//! 3. longer pieces are cut into windows of up to `MERGE_MAX` bytes merged the same
//!    way, joined where BPE provably keeps the tokens at a join apart; otherwise (and
//!    for periodic pieces, such as a run of one byte) they go to the linear
//!    long-piece merge (`long.rs`), so adversarial input (thousands of letters
//!    without a break) stays linear.
//!
//! Ranks are token ids: `bpe` keeps tiktoken's rank order (`token_table`).

use bpe_openai::byte_pair_encoding::BytePairEncoding;

use super::long::{Long, MAX_TOKEN};

/// Longest piece counted with one run of the merge loop, and the size of the windows
/// longer pieces are cut into (with the long-piece merge as their fallback). The merge
/// loop does at most `MERGE_MAX²` steps per piece or window, so the work stays
/// O(`MERGE_MAX` × text length).
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
    /// One bit per hash value (high bits of [`hash`]), set for every token: most
    /// strings that are not tokens are turned away here, in a table small enough to
    /// stay in cache, instead of in `slots`.
    filter: Vec<u64>,
    filter_mask: u64,
    /// The long-piece merge's tables (built with these at load): the merge loop here
    /// starts from its rank of every two-byte string (`long.two`) and looks up later
    /// merges by the parts' tokens in its canonical-split table (`long.pair`).
    pub(super) long: Long,
}

impl Ranks {
    /// Builds the tables for `bpe` (once per process, at `preload` or first use).
    pub(super) fn new(bpe: &'static BytePairEncoding) -> Self {
        let n = bpe.num_tokens();
        let size = n.next_power_of_two().max(16);
        let mask = size - 1;
        let mut slots = vec![Slot::default(); size];
        // About 10% of the bits set: 8 bits per token, rounded up to a power of two.
        let filter_bits = (8 * n).next_power_of_two().max(64);
        let filter_mask = (filter_bits - 1) as u64;
        let mut filter = vec![0u64; filter_bits / 64];
        for rank in 0..n {
            let id = rank as u32;
            let bytes = bpe.token_bytes(id);
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
        Ranks {
            bpe,
            slots,
            mask,
            long: Long::new(bpe),
            filter,
            filter_mask,
        }
    }

    /// The rank of `bytes` (not empty) if it is a token, else `NONE`.
    #[inline]
    fn rank(&self, bytes: &[u8]) -> u32 {
        if let [a, b] = bytes {
            return self.long.two[(usize::from(*a) << 8) | usize::from(*b)];
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
            _ => self.count_long(piece),
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
            _ => self.count_long(piece),
        }
    }

    /// tiktoken's `byte_pair_merge`, counting the parts left at the end.
    /// `piece` has 2..=`MERGE_MAX` bytes.
    fn merge_count(&self, piece: &[u8]) -> usize {
        self.merge(piece, &mut [0; MERGE_MAX], &mut [0; MERGE_MAX])
    }

    /// tiktoken's `byte_pair_merge` of `piece` (2..=`MERGE_MAX` bytes): returns the
    /// number of parts left, and leaves, for each part left starting at `i`, where it
    /// ends in `next[i]` and its token in `tok[i]`.
    ///
    /// A part is named by the index of its first byte; `next[i]` is where the part after
    /// `i` starts (`n` for the last), `prev[i]` where the part before starts. `key[i]` is
    /// `rank << 6 | i` for the merge of part `i` with the next (`NONE`: none), so the
    /// leftmost lowest merge, tiktoken's next, is the least key: one vector minimum, no
    /// second pass for the position. A merge is looked up by the two parts' tokens in
    /// the canonical-split table of the long-piece merge (fact 1 in `long.rs`: the only
    /// pair of parts that ever merges into a token is its canonical split), integer keys
    /// instead of hashing the bytes it would span.
    #[inline(always)]
    fn merge(&self, piece: &[u8], next: &mut [u8; MERGE_MAX], tok: &mut [u32; MERGE_MAX]) -> usize {
        let n = piece.len();
        let long = &self.long;
        let mut key = [NONE; MERGE_MAX];
        let mut prev = [0u8; MERGE_MAX];
        let keyed = |r: u32, i: usize| if r == NONE { NONE } else { r << 6 | i as u32 };
        for i in 0..n - 1 {
            let pair = (usize::from(piece[i]) << 8) | usize::from(piece[i + 1]);
            key[i] = keyed(long.two[pair], i);
            tok[i] = long.byte_token[usize::from(piece[i])];
            next[i] = (i + 1) as u8;
            prev[i + 1] = i as u8;
        }
        tok[n - 1] = long.byte_token[usize::from(piece[n - 1])];
        next[n - 1] = n as u8;
        let width = n.next_multiple_of(16).min(MERGE_MAX);
        // Keys past `n - 1` stay `NONE`: the minimum is taken over a whole number of
        // vectors, of fixed length so that each scan is unrolled (a short piece scans 16).
        let mut parts = n;
        loop {
            let best = match width {
                16 => least(&key[..16]),
                32 => least(&key[..32]),
                _ => least(&key),
            };
            if best == NONE {
                return parts;
            }
            let (t, i) = (best >> 6, (best & 63) as usize);
            let j = usize::from(next[i]);
            let after = usize::from(next[j]);
            tok[i] = t;
            key[i] = if after < n {
                keyed(long.pair(t, tok[after]), i)
            } else {
                NONE
            };
            if i > 0 {
                let p = usize::from(prev[i]);
                key[p] = keyed(long.pair(tok[p], t), p);
            }
            key[j] = NONE;
            next[i] = after as u8;
            if after < n {
                prev[after] = i as u8;
            }
            parts -= 1;
        }
    }

    /// [`Ranks::count`] of a piece over `MERGE_MAX` bytes.
    ///
    /// The long-piece merge (`long.rs`) is linear but walks tables of megabytes in rank
    /// order, a cache miss per step on text without repeats (100 KB of random letters).
    /// So such a piece is cut into windows that the merge loop counts on the stack
    /// ([`Ranks::windowed_count`]). Mostly periodic pieces (runs of one byte, `ab` ×
    /// 50,000: the first 64 bytes, or more than a quarter of the 64-byte blocks, repeat
    /// with a period of 4 bytes or less) go to the long merge, which keeps repeats as runs
    /// and takes one step per doubling; so does a piece whose windows cannot be joined.
    /// A shorter periodic stretch inside other text stays in the windows, which cost more
    /// there than on random letters, but giving up late would cost the windows and the
    /// long merge both.
    pub(super) fn count_long(&self, piece: &[u8]) -> usize {
        let blocks = piece.chunks_exact(MERGE_MAX);
        let mostly_periodic = periodic(&piece[..MERGE_MAX.min(piece.len())])
            || 4 * blocks.clone().filter(|b| periodic(b)).count() > blocks.len();
        if mostly_periodic {
            return self.long.count(piece);
        }
        self.windowed_count(piece)
            .unwrap_or_else(|| self.long.count(piece))
    }

    /// [`Ranks::count_long`] if it is at most `limit`, else `None`. The piece is counted
    /// in full unless its length alone shows it is over (no token is longer than
    /// `long::MAX_TOKEN` bytes): the work stays linear in `min(piece length, MAX_TOKEN ×
    /// limit)`.
    pub(super) fn count_long_till_limit(&self, piece: &[u8], limit: usize) -> Option<usize> {
        if piece.len().div_ceil(MAX_TOKEN) > limit {
            return None;
        }
        Some(self.count_long(piece)).filter(|&n| n <= limit)
    }

    /// The count of a long piece as windows of up to `MERGE_MAX` bytes, each merged on
    /// its own, or `None` if a join between windows is not proven.
    ///
    /// Each window keeps the parts of its merge but the last (which the bytes after the
    /// window may change) and the next window starts where the kept parts end. Any run
    /// of consecutive tokens of a BPE encoding is the encoding of its bytes, so the
    /// kept parts are the start of their window's true encoding; and joining two
    /// encodings is the encoding of the joined bytes when BPE keeps the two tokens at
    /// the join apart ([`Long::keeps_apart`]; the corollaries in the README of GitHub's
    /// `bpe` crate, on which its backtracking encoder rests too). When it does not, the
    /// join moves back one kept part (up to `RETRIES` times) and the window is merged
    /// again from there. A window that would keep less than half of itself gives up, so
    /// two windows kept in a row move on by more than `MERGE_MAX / 2` bytes (a retry may
    /// leave the earlier one a single part), each after at most `RETRIES + 1` merges:
    /// the work is linear, a small multiple of the merge loop's per byte. When this
    /// gives up, the caller counts the whole piece with the long merge (at worst the
    /// two costs added: ~10 ms for 100 KB, against ~6 ms for the long merge alone).
    pub(super) fn windowed_count(&self, piece: &[u8]) -> Option<usize> {
        const RETRIES: usize = 4;
        let n = piece.len();
        let mut next = [0u8; MERGE_MAX];
        let mut tok = [0u32; MERGE_MAX];
        // The kept parts of the previous window (start in it, token), and where it starts.
        let (mut kept, mut nkept, mut base) = ([(0u8, 0u32); MERGE_MAX], 0, 0);
        let (mut at, mut total, mut last, mut retries) = (0, 0, NONE, 0);
        loop {
            let window = &piece[at..n.min(at + MERGE_MAX)];
            let w = window.len();
            // A window that is not the last ends 64 bytes on and keeps less than 64, so
            // the next one (and any retry, which starts earlier) has 2 bytes or more.
            debug_assert!(w >= 2, "windows hold 2 bytes or more");
            let parts = self.merge(window, &mut next, &mut tok);
            if last != NONE && !self.long.keeps_apart(last, tok[0]) {
                // Move the join back before the last kept part of the previous window.
                if nkept < 2 || retries == RETRIES {
                    return None;
                }
                retries += 1;
                #[cfg(test)]
                RETRIES_TAKEN.with(|r| r.set(r.get() + 1));
                nkept -= 1;
                total -= 1;
                at = base + usize::from(kept[nkept].0);
                last = kept[nkept - 1].1;
                continue;
            }
            retries = 0;
            if at + w == n {
                return Some(total + parts);
            }
            // Keep all parts but the last.
            let (mut start, mut end) = (0, usize::from(next[0]));
            nkept = 0;
            while end < w {
                kept[nkept] = (start as u8, tok[start]);
                nkept += 1;
                start = end;
                end = usize::from(next[end]);
            }
            if start < MERGE_MAX / 2 {
                return None;
            }
            debug_assert!(nkept > 0, "a window keeps 32 bytes or more");
            total += nkept;
            last = kept[nkept - 1].1;
            base = at;
            at += start;
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Joins moved back by [`Ranks::windowed_count`] on this thread (tests check the
    /// retry path runs).
    pub(super) static RETRIES_TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The least of `keys` (`NONE` if empty).
#[inline(always)]
fn least(keys: &[u32]) -> u32 {
    keys.iter().copied().fold(NONE, u32::min)
}

/// Whether `window` repeats with a period of at most 4 bytes (a run of one byte, of
/// `ab`, ...): the long merge keeps such repeats as runs and counts them in a few steps
/// per level, much faster than windows (100 KB of `a`: ~70 µs, against ~5 ms).
fn periodic(window: &[u8]) -> bool {
    window.len() > 8 && (1..=4).any(|p| window[p..].iter().zip(window).all(|(x, y)| x == y))
}
