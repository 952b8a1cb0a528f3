//! Where the time of a cache key goes, per phase, on the bodies of bench/cache_bench.py.
//!
//! Run: `cargo run --release -p edgeproxy-core --example cache_profile`
//! (best of 301 short runs per row: on a shared machine the
//! shortest run is the one nothing else interrupted; a profile, not a test).

use std::hint::black_box;
use std::time::Instant;

use edgeproxy_core::cache::{cache_key, cache_key_validated, canonicalize_into};

const DENSE: &str =
    "The quick brown fox jumps over the lazy dog; \\\"quoted\\\", caf\u{e9}, 42.\\n";
const FEW: &str = "The quick brown fox jumps over the lazy dog, caf\u{e9}, 42. ";

/// A chat request body of about `size` bytes whose turns repeat `line` (already
/// JSON-escaped), like bench/cache_bench.py; `per_turn` lines per turn, `tail`
/// after each turn.
fn body(size: usize, line: &str, per_turn: usize, tail: &str) -> Vec<u8> {
    let mut out = String::from(
        r#"{"model":"chat","temperature":0,"messages":[{"role":"system","content":"You are a helpful assistant."}"#,
    );
    let mut n = 1;
    while out.len() < size {
        let role = if n % 2 == 1 { "user" } else { "assistant" };
        out.push_str(&format!(r#",{{"role":"{role}","content":""#));
        for _ in 0..per_turn {
            out.push_str(line);
        }
        out.push_str(tail);
        out.push_str("\"}");
        n += 1;
    }
    out.push_str("]}");
    out.into_bytes()
}

fn best_us(loops: usize, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..301)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..loops {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / loops as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[0]
}

fn main() {
    let cases = [
        ("1 KB dense", body(1024, DENSE, 5, "")),
        ("100 KB few escapes", body(100 * 1024, FEW, 60, "\\n")),
        ("100 KB escape-dense", body(100 * 1024, DENSE, 60, "")),
        ("few, 180 turns", body(100 * 1024, FEW, 10, "\\n")),
        ("3000 tiny turns", body(100 * 1024, "hi", 1, "")),
        (
            "one 100 KB dense string",
            format!("\"{}\"", DENSE.repeat(1500)).into_bytes(),
        ),
        (
            "one 100 KB string",
            format!("\"{}\"", FEW.repeat(1800)).into_bytes(),
        ),
        (
            "one 100 KB ascii string",
            format!("\"{}\"", "abcdefgh".repeat(12800)).into_bytes(),
        ),
    ];
    println!(
        "{:<22} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "body", "bytes", "utf8", "canon", "xxh3", "memcpy", "key", "proxy key"
    );
    let only = std::env::args().nth(1);
    for (name, raw) in &cases {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let loops = if raw.len() < 10_000 { 200 } else { 8 };
        let mut out = Vec::with_capacity(raw.len() + 64);
        canonicalize_into(raw, &mut out).unwrap();
        let canon_len = out.len();
        let utf8 = best_us(loops, || {
            black_box(simdutf8::basic::from_utf8(black_box(raw)).is_ok());
        });
        let canon = best_us(loops, || {
            out.clear();
            canonicalize_into(black_box(raw), &mut out).unwrap();
            black_box(&out);
        });
        let hash = best_us(loops, || {
            black_box(twox_hash::xxhash3_128::Hasher::oneshot(black_box(
                &out[..canon_len],
            )));
        });
        let mut copy = Vec::with_capacity(raw.len());
        let memcpy = best_us(loops, || {
            copy.clear();
            copy.extend_from_slice(black_box(raw));
            black_box(&copy);
        });
        let key = best_us(loops, || {
            black_box(cache_key(black_box(raw), "chat", "openai", "tenant").unwrap());
        });
        // The request path's key: UTF-8 already checked by orjson.
        let proxy = best_us(loops, || {
            black_box(cache_key_validated(black_box(raw), "chat", "openai", "tenant").unwrap());
        });
        println!(
            "{name:<22} {:>8} {utf8:>9.2} {canon:>9.2} {hash:>9.2} {memcpy:>9.2} {key:>9.2} {proxy:>9.2}",
            raw.len()
        );
    }
}
