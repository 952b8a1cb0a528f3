//! Where the time of `tokens::count` goes: pre-tokenizer vs BPE, per text file.
//!
//! `cargo run --release -p edgeproxy-core --example tokens_profile -- FILE...`
//! (prints the best of 21 runs per stage and encoding: the least disturbed on a
//! shared machine; bpe-openai's count and ours are timed interleaved). Files with pieces
//! over 64 bytes also get the times of `bpe`'s encoder and ours (`tokens/long.rs`) on
//! just those pieces, interleaved (best and median of 21).

use std::time::Instant;

use edgeproxy_core::tokens::{self, Encoding};

fn best_us(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut times = Vec::new();
    let mut out = 0;
    for _ in 0..21 {
        let t = Instant::now();
        out = std::hint::black_box(f());
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    (times[0], out)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--loop old|ours|bpe-piece|long-piece cl100k|o200k N FILE`: just count N times
    // (for `perf record` / `perf stat`).
    if args.first().map(String::as_str) == Some("--loop") {
        let text = std::fs::read_to_string(&args[4]).expect("readable UTF-8 file");
        let (enc, tok) = match args[2].as_str() {
            "o200k" => (Encoding::O200kBase, bpe_openai::o200k_base()),
            _ => (Encoding::Cl100kBase, bpe_openai::cl100k_base()),
        };
        tokens::preload(enc);
        let n: usize = args[3].parse().expect("a number of runs");
        // Per-call time of each block of 10 calls (after the load above): prints the
        // best and the median block, so runs of different builds compare directly.
        let mut total = 0;
        let mut blocks = Vec::new();
        // `COLD=1`: before each call, write 16 MB elsewhere, so the call starts with the
        // tables out of the core's caches (as after a request's other work), and time
        // calls one by one.
        let cold = std::env::var_os("COLD").is_some();
        let mut junk = vec![0u8; if cold { 16 << 20 } else { 0 }];
        let per_block = if cold { 1 } else { 10 };
        for round in 0..n.div_ceil(per_block) {
            for line in junk.chunks_mut(64) {
                line[0] = round as u8;
            }
            let t = Instant::now();
            for _ in 0..per_block {
                total += match args[1].as_str() {
                    "old" => tok.count(text.as_str()),
                    // The text as one piece: `bpe`'s encoder, or ours for long pieces.
                    "bpe-piece" => tok.bpe.count(text.as_bytes()),
                    "long-piece" => tokens::count_long_piece(&text, enc),
                    _ => tokens::count(&text, enc),
                };
            }
            blocks.push(t.elapsed().as_secs_f64() * 1e6 / per_block as f64); // µs per call
        }
        std::hint::black_box(&junk);
        blocks.sort_by(f64::total_cmp);
        if let (Some(best), Some(median)) = (blocks.first(), blocks.get(blocks.len() / 2)) {
            eprintln!("per call: best {best:.0} us, median {median:.0} us");
        }
        println!("{total}");
        return;
    }
    for (name, enc) in [
        ("cl100k", Encoding::Cl100kBase),
        ("o200k", Encoding::O200kBase),
    ] {
        let t = Instant::now();
        tokens::preload(enc);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!("{name}: rank data and merge tables loaded in {ms:.1} ms");
    }
    for path in args {
        let text = std::fs::read_to_string(&path).expect("readable UTF-8 file");
        for (name, enc, tok) in [
            ("cl100k", Encoding::Cl100kBase, bpe_openai::cl100k_base()),
            ("o200k", Encoding::O200kBase, bpe_openai::o200k_base()),
        ] {
            let pieces: Vec<&str> = tok.split(&text).collect();
            let (split, n) = best_us(|| tok.split(&text).count());
            let (bpe, _) = best_us(|| pieces.iter().map(|p| tok.bpe.count(p.as_bytes())).sum());
            // bpe-openai's own count and ours.
            let (olds, news, count) = interleaved(
                || tok.count(text.as_str()),
                || tokens::count(&text, enc),
                &format!("{path} {name}"),
            );
            let (old, total) = (olds[0], news[0]); // best of 21: least disturbed
            let longest = pieces.iter().map(|p| p.len()).max().unwrap_or(0);
            let file = path.rsplit('/').next().unwrap_or(&path);
            // Pieces over 64 bytes: `bpe`'s backtracking encoder (the old path) against
            // ours (windows, else `tokens/long.rs`).
            let long: Vec<&str> = pieces.iter().copied().filter(|p| p.len() > 64).collect();
            let long_times = if long.is_empty() {
                String::new()
            } else {
                let (olds, news, _) = interleaved(
                    || long.iter().map(|p| tok.bpe.count(p.as_bytes())).sum(),
                    || long.iter().map(|p| tokens::count_long_piece(p, enc)).sum(),
                    &format!("{path} {name}: long pieces"),
                );
                format!(
                    "  long pieces: bpe {:>6.0} / {:>6.0} us, ours {:>6.0} / {:>6.0} us (best / median)",
                    olds[0], olds[10], news[0], news[10]
                )
            };
            println!(
                "{file:<12} {name:<7} pieces {n:>6} longest {longest:>6} B  split {split:>6.0} us  bpe {bpe:>6.0} us  bpe-openai count {old:>6.0} us  ours {total:>6.0} us  tokens {count}{long_times}"
            );
        }
    }
}

/// `old` and `new` timed 21 times each, interleaved run by run (noisy machines): both
/// sorted lists of µs, and the count (checked equal).
fn interleaved(
    old: impl Fn() -> usize,
    new: impl Fn() -> usize,
    what: &str,
) -> (Vec<f64>, Vec<f64>, usize) {
    let (mut olds, mut news, mut count) = (Vec::new(), Vec::new(), 0);
    for _ in 0..21 {
        let t = Instant::now();
        let a = std::hint::black_box(old());
        olds.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        count = std::hint::black_box(new());
        news.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(a, count, "{what}");
    }
    olds.sort_by(f64::total_cmp);
    news.sort_by(f64::total_cmp);
    (olds, news, count)
}
