//! Tests of the prompt-hash cache: canonical form (examples and proptest), keys, store.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn canon(s: &str) -> String {
    String::from_utf8(canonical_request(s.as_bytes()).unwrap()).unwrap()
}

// ---------------------------------------------------------------- examples

#[test]
fn sorts_keys_and_drops_whitespace() {
    assert_eq!(
        canon(" { \"b\" : [ 1 , { \"z\":null, \"a\" : true } ] ,\n\t\"a\":\"x\" }\r\n"),
        r#"{"a":"x","b":[1,{"a":true,"z":null}]}"#
    );
}

#[test]
fn numbers_compare_by_exact_value() {
    for same in [
        "1", "1.0", "1e0", "1E+0", "10e-1", "0.1e1", "1.000", "100e-2",
    ] {
        assert_eq!(canon(same), "1", "{same}");
    }
    for (input, want) in [
        ("0", "0"),
        ("-0", "0"),
        ("-0.0e5", "0"),
        ("100", "100"),
        ("1e2", "100"),
        ("-7", "-7"),
        ("0.7", "0.7"),
        ("70e-2", "0.7"),
        ("1.5", "1.5"),
        ("0.007", "0.007"),
        ("0.0000001", "1e-7"),
        ("123456789012345678901", "123456789012345678901"),
        ("1e20", "100000000000000000000"),
        ("1e21", "1e21"),
        ("1000000000000000000000", "1e21"),
        ("1.5e-10", "15e-11"),
        ("-2.50E3", "-2500"),
    ] {
        assert_eq!(canon(input), want, "{input}");
    }
    // No rounding through f64: these are equal as doubles but not as numbers.
    assert_ne!(canon("9007199254740993"), canon("9007199254740992"));
    assert_ne!(canon("0.1"), canon("0.10000000000000001"));
}

#[test]
fn strings_are_reencoded_canonically() {
    assert_eq!(canon(r#""\u0041\/\u00e9""#), "\"A/\u{e9}\"");
    assert_eq!(canon(r#""\ud83d\ude00""#), "\"\u{1f600}\"");
    assert_eq!(
        canon(r#""\u000A\u0008\u001F\u001f\"\\""#),
        r#""\n\b\u001f\u001f\"\\""#
    );
    // Already canonical input is passed through unchanged.
    let raw = r#""line\nnext \"q\" \\ \u0001 é""#;
    assert_eq!(canon(raw), raw);
    // Keys too: an escaped key equals its plain spelling (and the last one wins).
    assert_eq!(canon(r#"{"\u0061":1,"a":2}"#), r#"{"a":2}"#);
    assert_eq!(canon(r#"{"a":1,"b":0,"a":3}"#), r#"{"a":3,"b":0}"#);
}

#[test]
fn ignored_fields_dropped_at_top_level_only() {
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
        "user":"u","metadata":{"k":"v"},"store":true,"service_tier":"flex",
        "messages":[{"role":"user","content":"hi","user":"kept","stream":1}]}"#;
    assert_eq!(
        canon(body),
        r#"{"messages":[{"content":"hi","role":"user","stream":1,"user":"kept"}],"model":"m"}"#
    );
    assert_eq!(IGNORED_FIELDS.len(), 6);
    assert!(IGNORED_FIELDS.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn non_object_bodies_are_canonicalised_too() {
    assert_eq!(canon(" [ 1.0 , \"a\" ] "), r#"[1,"a"]"#);
    assert_eq!(canon("null"), "null");
}

#[test]
fn invalid_json_is_an_error() {
    let deep_ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
    assert!(canonical_request(deep_ok.as_bytes()).is_ok());
    let too_deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
    for bad in [
        "",
        " ",
        "{",
        "{\"a\" 1}",
        "{\"a\":1,}",
        "[1,]",
        "[1 2]",
        "01",
        "1.",
        ".5",
        "1e",
        "+1",
        "-",
        "tru",
        "nul",
        "\"abc",
        "\"a\u{1}b\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "{} {}",
        "{1:2}",
        "1e99999999999",
        too_deep.as_str(),
    ] {
        let err = canonical_request(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::CacheBadRequest { .. }), "{bad:?}");
    }
    assert!(canonical_request(b"\"\xff\"").is_err());
    let e = canonical_request(b"[1,]").unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot canonicalise the request body at byte 3: expected a JSON value"
    );
}

#[test]
fn key_is_scoped_by_model_wire_and_tenant() {
    let body = br#"{"messages":[{"role":"user","content":"hi"}],"temperature":0}"#;
    let same = br#"{ "temperature": 0.0, "messages": [ {"content": "hi", "role": "user"} ], "stream": true }"#;
    let k = cache_key(body, "chat", "openai", "t1").unwrap();
    assert_eq!(k, cache_key(same, "chat", "openai", "t1").unwrap());
    assert_ne!(k, cache_key(body, "chat", "openai", "t2").unwrap());
    assert_ne!(k, cache_key(body, "chat2", "openai", "t1").unwrap());
    assert_ne!(k, cache_key(body, "chat", "anthropic", "t1").unwrap());
    // Length prefixes: moving bytes between fields changes the key.
    assert_ne!(
        cache_key(body, "ab", "openai", "c").unwrap(),
        cache_key(body, "a", "openai", "bc").unwrap()
    );
    assert_ne!(
        cache_key(body, "chat", "openai", "").unwrap(),
        cache_key(body, "chat", "openai\0", "").unwrap()
    );
    assert!(cache_key(b"{", "chat", "openai", "t").is_err());
}

/// XXH3-128 over the scope prefix and the canonical form, in one shot: what
/// `cache_key` streams.
fn key_by_definition(body: &[u8], model: &str, wire: &str, tenant: &str) -> Key {
    let mut buf = KEY_DOMAIN.to_vec();
    for field in [model, wire, tenant] {
        buf.extend_from_slice(&(field.len() as u64).to_le_bytes());
        buf.extend_from_slice(field.as_bytes());
    }
    buf.extend_from_slice(&canonical_request(body).unwrap());
    twox_hash::xxhash3_128::Hasher::oneshot(&buf).to_be_bytes()
}

#[test]
fn keys_did_not_change_with_the_streamed_hash() {
    // Values from the previous implementation (canonical form built in full, then
    // xxhash-rust's one-shot XXH3-128): the streamed hash gives the same keys.
    let mut body = br#"{"model":"m","messages":[{"role":"user","content":""#.to_vec();
    for _ in 0..400 {
        body.extend_from_slice("caf\u{e9} \\\"q\\\" \\n".as_bytes());
    }
    body.extend_from_slice(br#""}],"temperature":0}"#);
    assert_eq!(body.len(), 5671);
    let hex = |k: Key| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let key = cache_key(&body, "chat", "openai", "tenant").unwrap();
    assert_eq!(hex(key), "b5be8c831ad604a5e60db1a7517afb8d");
    assert_eq!(key, key_by_definition(&body, "chat", "openai", "tenant"));
    assert_eq!(
        cache_key_validated(&body, "chat", "openai", "tenant").unwrap(),
        key
    );
    assert_eq!(
        hex(cache_key(br#"{"a":1}"#, "chat", "openai", "tenant").unwrap()),
        "244ab58cd361997b20347703ce05514e"
    );
}

// ---------------------------------------------------------------- store

fn key(n: u8) -> Key {
    [n; 16]
}

#[test]
fn store_get_put_and_ttl() {
    let mut s = Store::new(1 << 20, 100);
    assert!(s.get(&key(1), 0.0).is_none());
    assert!(s.put(key(1), b"one".to_vec(), 10.0, 100.0));
    assert_eq!(s.get(&key(1), 105.0).as_deref(), Some(&b"one"[..]));
    assert_eq!(s.get(&key(1), 109.999).as_deref(), Some(&b"one"[..]));
    assert!(s.get(&key(1), 110.0).is_none(), "expired at now + ttl");
    assert_eq!(s.len(), 0);
    assert_eq!(s.bytes_used(), 0);
    let st = s.stats();
    assert_eq!(
        (st.hits, st.misses, st.expirations, st.stores),
        (2, 2, 1, 1)
    );
    assert!(s.get(&key(1), f64::NAN).is_none());
}

#[test]
fn store_refuses_what_can_never_fit() {
    let mut s = Store::new(100, 2);
    assert!(!s.put(key(1), vec![0; 100 - ENTRY_OVERHEAD + 1], 10.0, 0.0));
    assert!(s.put(key(1), vec![0; 100 - ENTRY_OVERHEAD], 10.0, 0.0));
    assert_eq!(s.bytes_used(), 100);
    for (ttl, now) in [
        (0.0, 0.0),
        (-1.0, 0.0),
        (f64::NAN, 0.0),
        (1.0, f64::INFINITY),
    ] {
        assert!(!s.put(key(2), b"x".to_vec(), ttl, now));
    }
    assert_eq!(s.stats().rejected, 5);
    assert!(!Store::new(1000, 0).put(key(1), b"x".to_vec(), 1.0, 0.0));
}

#[test]
fn store_evicts_least_recently_used_by_entries() {
    let mut s = Store::new(1 << 20, 3);
    for n in 1..=3 {
        assert!(s.put(key(n), vec![n], 100.0, 0.0));
    }
    assert!(s.get(&key(1), 1.0).is_some()); // 1 is now the most recently used
    assert!(s.put(key(4), vec![4], 100.0, 2.0));
    assert_eq!(s.len(), 3);
    assert!(
        s.get(&key(2), 3.0).is_none(),
        "2 was the least recently used"
    );
    for n in [1, 3, 4] {
        assert!(s.get(&key(n), 3.0).is_some(), "{n}");
    }
    assert_eq!(s.stats().evictions, 1);
}

#[test]
fn store_evicts_by_bytes_and_replaces() {
    let per = 100;
    let cost = per + ENTRY_OVERHEAD;
    let mut s = Store::new(3 * cost, 100);
    for n in 1..=3 {
        assert!(s.put(key(n), vec![n; per], 100.0, 0.0));
    }
    assert_eq!(s.bytes_used(), 3 * cost);
    // Replacing an entry frees its old bytes first: no eviction.
    assert!(s.put(key(2), vec![9; per], 100.0, 1.0));
    assert_eq!(s.stats().evictions, 0);
    assert_eq!(s.get(&key(2), 1.0).unwrap()[0], 9);
    // A value twice as large evicts the two least recently used (1, then 3).
    assert!(s.put(key(5), vec![5; 2 * per + ENTRY_OVERHEAD], 100.0, 2.0));
    assert!(s.bytes_used() <= s.max_bytes());
    assert_eq!(s.stats().evictions, 2);
    assert!(s.get(&key(1), 2.0).is_none());
    assert!(s.get(&key(3), 2.0).is_none());
    assert!(s.get(&key(2), 2.0).is_some());
    // An expired entry pushed out counts as an expiration, not an eviction.
    let mut t = Store::new(2 * cost, 100);
    assert!(t.put(key(1), vec![0; per], 1.0, 0.0));
    assert!(t.put(key(2), vec![0; per], 100.0, 0.0));
    assert!(t.put(key(3), vec![0; per], 100.0, 5.0));
    assert_eq!((t.stats().expirations, t.stats().evictions), (1, 0));
    assert!(t.remove(&key(2)));
    assert!(!t.remove(&key(2)));
    t.clear();
    assert_eq!((t.len(), t.bytes_used()), (0, 0));
}

// ---------------------------------------------------------------- proptest

/// A JSON value in normal form: numbers as (negative, significant digits, exponent).
#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    Bool(bool),
    Num(bool, String, i64),
    Str(String),
    Arr(Vec<V>),
    Obj(BTreeMap<String, V>),
}

fn num(neg: bool, digits: &str, exp: i64) -> V {
    let d = digits.trim_start_matches('0');
    if d.is_empty() {
        return V::Num(false, "0".into(), 0);
    }
    let t = d.trim_end_matches('0');
    V::Num(neg, t.into(), exp + (d.len() - t.len()) as i64)
}

fn arb_string() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => proptest::char::range('a', 'z'),
        1 => proptest::sample::select(vec![
            '"', '\\', '/', '\n', '\r', '\t', '\u{8}', '\u{c}', '\u{0}', '\u{1f}', '\u{7f}',
            'é', '€', '\u{2028}', '😀', ' ', 'A',
        ]),
    ];
    proptest::collection::vec(ch, 0..8).prop_map(|v| v.into_iter().collect())
}

fn arb_value() -> impl Strategy<Value = V> {
    let leaf = prop_oneof![
        Just(V::Null),
        any::<bool>().prop_map(V::Bool),
        (any::<bool>(), 0u64..100_000, -8i64..8).prop_map(|(n, m, e)| num(n, &m.to_string(), e)),
        (any::<bool>(), "[1-9][0-9]{15,25}").prop_map(|(n, d)| num(n, &d, 0)),
        arb_string().prop_map(V::Str),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(V::Arr),
            proptest::collection::btree_map(arb_string(), inner, 0..5).prop_map(V::Obj),
        ]
    })
}

fn arb_request() -> impl Strategy<Value = V> {
    let field = prop_oneof![
        Just("model".to_owned()),
        Just("messages".to_owned()),
        Just("temperature".to_owned()),
        Just("stream".to_owned()),
        Just("user".to_owned()),
        Just("metadata".to_owned()),
        arb_string(),
    ];
    proptest::collection::btree_map(field, arb_value(), 0..6).prop_map(V::Obj)
}

/// Small deterministic RNG for rendering choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ws(r: &mut Rng, out: &mut String) {
    out.push_str(["", "", " ", "\n", "\t ", "\r\n  "][r.below(6) as usize]);
}

fn render_str(s: &str, r: &mut Rng, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '/' if r.below(2) == 0 => Some("\\/"),
            _ => None,
        };
        let must_escape = (c as u32) < 0x20 || c == '"' || c == '\\';
        match (short, r.below(3)) {
            (Some(e), 0 | 1) => out.push_str(e),
            (_, 0) if !must_escape => out.push(c),
            _ if !must_escape && r.below(2) == 0 => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let h = format!("{:04x}", u);
                    out.push_str("\\u");
                    out.push_str(&if r.below(2) == 0 { h.to_uppercase() } else { h });
                }
            }
        }
    }
    out.push('"');
}

fn render_num(neg: bool, digits: &str, exp: i64, r: &mut Rng, out: &mut String) {
    if neg || (digits == "0" && r.below(3) == 0) {
        out.push('-');
    }
    // Pad with k zeros (value unchanged: digits×10^k × 10^(exp-k)).
    let k = r.below(3) as usize;
    let d = if digits == "0" {
        "0".to_owned()
    } else {
        format!("{digits}{}", "0".repeat(k))
    };
    let e = if digits == "0" { exp } else { exp - k as i64 };
    let n = d.len() as i64;
    match r.below(4) {
        0 if e >= 0 => {
            out.push_str(&d);
            out.push_str(&"0".repeat(e as usize));
            if r.below(2) == 0 {
                out.push_str(".0");
            }
        }
        1 if e < 0 && -e < n => {
            let p = (n + e) as usize;
            out.push_str(&d[..p]);
            out.push('.');
            out.push_str(&d[p..]);
        }
        2 if d != "0" => {
            // 0.{z zeros}{d} e{x}: value d × 10^(-(z + n)) × 10^x.
            let z = r.below(3) as i64;
            out.push_str("0.");
            out.push_str(&"0".repeat(z as usize));
            out.push_str(&d);
            out.push_str(&format!("e{}", e + z + n));
        }
        _ => {
            out.push_str(&d);
            out.push(if r.below(2) == 0 { 'e' } else { 'E' });
            if e >= 0 && r.below(2) == 0 {
                out.push('+');
            }
            out.push_str(&e.to_string());
        }
    }
}

fn render(v: &V, r: &mut Rng, out: &mut String) {
    ws(r, out);
    match v {
        V::Null => out.push_str("null"),
        V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        V::Num(neg, d, e) => render_num(*neg, d, *e, r, out),
        V::Str(s) => render_str(s, r, out),
        V::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(item, r, out);
            }
            ws(r, out);
            out.push(']');
        }
        V::Obj(map) => {
            let mut members: Vec<_> = map.iter().collect();
            for i in (1..members.len()).rev() {
                members.swap(i, r.below(i as u64 + 1) as usize);
            }
            out.push('{');
            for (i, (k, val)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if r.below(4) == 0 {
                    // An earlier duplicate that the later member overrides.
                    ws(r, out);
                    render_str(k, r, out);
                    out.push_str(":\"overridden\",");
                }
                ws(r, out);
                render_str(k, r, out);
                ws(r, out);
                out.push(':');
                render(val, r, out);
            }
            ws(r, out);
            out.push('}');
        }
    }
    ws(r, out);
}

fn rendered(v: &V, seed: u64) -> Vec<u8> {
    let mut out = String::new();
    render(v, &mut Rng(seed), &mut out);
    out.into_bytes()
}

fn without_ignored(v: &V) -> V {
    match v {
        V::Obj(m) => V::Obj(
            m.iter()
                .filter(|(k, _)| !IGNORED_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_spelling_of_a_value_has_one_canonical_form(v in arb_request(), s1: u64, s2: u64) {
        let a = canonical_request(&rendered(&v, s1)).unwrap();
        let b = canonical_request(&rendered(&v, s2)).unwrap();
        prop_assert_eq!(&a, &b);
        // The canonical form is valid JSON and a fixed point.
        prop_assert_eq!(canonical_request(&a).unwrap(), a);
    }

    #[test]
    fn canonical_forms_collide_exactly_when_values_are_equal(
        v in arb_request(), w in arb_request(), s1: u64, s2: u64
    ) {
        let a = canonical_request(&rendered(&v, s1)).unwrap();
        let b = canonical_request(&rendered(&w, s2)).unwrap();
        prop_assert_eq!(a == b, without_ignored(&v) == without_ignored(&w));
    }

    #[test]
    fn changing_one_leaf_changes_the_form(v in arb_value(), w in arb_value(), s: u64) {
        let doc = |x: &V| V::Obj(BTreeMap::from([("messages".to_owned(), V::Arr(vec![x.clone(), V::Null]))]));
        let a = canonical_request(&rendered(&doc(&v), s)).unwrap();
        let b = canonical_request(&rendered(&doc(&w), s)).unwrap();
        prop_assert_eq!(a == b, v == w);
    }

    #[test]
    fn key_differs_per_scope(
        v in arb_request(), s: u64,
        m in "[a-z]{0,4}", t1 in "[a-z0-9]{0,6}", t2 in "[a-z0-9]{0,6}",
    ) {
        let body = rendered(&v, s);
        let k = |model: &str, wire: &str, tenant: &str| cache_key(&body, model, wire, tenant).unwrap();
        prop_assert_eq!(k(&m, "openai", &t1) == k(&m, "openai", &t2), t1 == t2);
        prop_assert_ne!(k(&m, "openai", &t1), k(&m, "anthropic", &t1));
        prop_assert_ne!(k(&m, "openai", &t1), k(&format!("{m}x"), "openai", &t1));
        prop_assert_eq!(k(&m, "openai", &t1), cache_key_validated(&body, &m, "openai", &t1).unwrap());
    }

    #[test]
    fn validated_path_is_safe_on_any_bytes(
        v in arb_request(), s: u64, at in any::<prop::sample::Index>(), junk in prop::collection::vec(0x80u8..=0xbf, 1..4)
    ) {
        // Stray continuation bytes (always invalid UTF-8) spliced in anywhere: never a panic, and bad JSON stays an error.
        let mut body = rendered(&v, s);
        let i = at.index(body.len() + 1);
        body.splice(i..i, junk);
        let _ = cache_key_validated(&body, "chat", "openai", "t");
        prop_assert!(cache_key(&body, "chat", "openai", "t").is_err());
        let _ = cache_key_validated(b"{\"a\":\"\xff\\u00e9\\/\"}", "chat", "openai", "t");
    }
}

// ------------------------------------------- long strings (64-byte block scan)

fn arb_long_string() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        6 => proptest::char::range('a', 'z'),
        1 => proptest::sample::select(vec![
            '"', '\\', '/', '\n', '\r', '\t', '\u{8}', '\u{c}', '\u{0}', '\u{1f}', 'é', '€',
            '😀', ' ', 'u', 'n',
        ]),
    ];
    proptest::collection::vec(ch, 0..400).prop_map(|v| v.into_iter().collect())
}

/// A request whose strings cross many 64-byte blocks (and the hash buffer).
fn long_doc(a: &str, b: &str) -> V {
    V::Obj(BTreeMap::from([
        ("model".to_owned(), V::Str("m".repeat(700))),
        (
            "messages".to_owned(),
            V::Arr(vec![
                V::Str(a.to_owned()),
                V::Obj(BTreeMap::from([(b.to_owned(), V::Str(b.repeat(12)))])),
                V::Str(a.repeat(20)),
            ]),
        ),
    ]))
}

/// The canonical form of a JSON string token at the start of `body`, one byte at
/// a time: the reference for the block scan. `None` where the body is invalid.
fn reference_string(body: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let b = text.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    let mut out = vec![b'"'];
    let mut i = 1;
    let hex = |at: usize| -> Option<u32> {
        let h = text.get(at..at + 4)?;
        if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(h, 16).ok()
    };
    loop {
        let c = *b.get(i)?;
        match c {
            b'"' => {
                if i + 1 != b.len() {
                    return None;
                }
                out.push(b'"');
                return Some(out);
            }
            b'\\' => {
                let ch = match *b.get(i + 1)? {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hi = hex(i + 2)?;
                        if (0xD800..0xDC00).contains(&hi) {
                            if b.get(i + 6..i + 8) != Some(b"\\u") {
                                return None;
                            }
                            let lo = hex(i + 8)?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return None;
                            }
                            i += 6;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                        } else {
                            char::from_u32(hi)?
                        }
                    }
                    _ => return None,
                };
                i += if b[i + 1] == b'u' { 6 } else { 2 };
                push_char(ch, &mut out);
            }
            0..=0x1f => return None,
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// Bytes of a string token, biased to escapes, backslash runs, `\u` and hex digits.
fn arb_string_token() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptest::sample::select(vec![
            "a", "b", "x", " ", "\\", "\\\\", "\\\\\\", "\"", "\\\"", "\\n", "\\/", "\\u", "00",
            "0a", "1F", "d83d", "de00", "DC00", "\\ud83d", "\\ude00", "é", "\n", "\u{1}",
            "\\t", "\\r", "\\b", "\\f", "\\a", "\\c", "\\s", "\\v", "\\\u{1}",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z]{16,80}",
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|v| {
        let mut out = b"\"".to_vec();
        for p in v {
            out.extend_from_slice(p.as_bytes());
        }
        out.push(b'"');
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn long_strings_have_one_canonical_form_and_stream_to_the_same_key(
        a in arb_long_string(), b in arb_long_string(), s1: u64, s2: u64
    ) {
        let x = rendered(&long_doc(&a, &b), s1);
        let y = rendered(&long_doc(&a, &b), s2);
        let cx = canonical_request(&x).unwrap();
        prop_assert_eq!(&cx, &canonical_request(&y).unwrap());
        prop_assert_eq!(canonical_request(&cx).unwrap(), cx);
        let k = cache_key(&x, "chat", "openai", "t").unwrap();
        prop_assert_eq!(k, cache_key(&y, "chat", "openai", "t").unwrap());
        prop_assert_eq!(k, key_by_definition(&x, "chat", "openai", "t"));
        prop_assert_eq!(k, cache_key_validated(&x, "chat", "openai", "t").unwrap());
    }

    #[test]
    fn long_strings_collide_exactly_when_equal(
        a in arb_long_string(), at in any::<prop::sample::Index>(), c in "[a-z\"\\\\é\n]", s: u64
    ) {
        let mut chars: Vec<char> = a.chars().collect();
        chars.push('z');
        let i = at.index(chars.len());
        let before = chars[i];
        chars[i] = c.chars().next().unwrap();
        let b: String = chars.iter().collect();
        let a = format!("{a}z");
        let ka = cache_key(&rendered(&long_doc(&a, "k"), s), "chat", "openai", "t").unwrap();
        let kb = cache_key(&rendered(&long_doc(&b, "k"), s), "chat", "openai", "t").unwrap();
        prop_assert_eq!(ka == kb, before == chars[i]);
    }

    #[test]
    fn string_scan_matches_a_byte_at_a_time_reference(token in arb_string_token(), pad in 0usize..70) {
        // Padding shifts where the 64-byte blocks fall.
        let mut body = vec![b' '; pad];
        body.extend_from_slice(&token);
        let got = canonical_request(&body).ok();
        prop_assert_eq!(got, reference_string(&token));
    }

    #[test]
    fn a_cut_string_scans_like_the_reference(token in arb_string_token(), pad in 0usize..70, cut: prop::sample::Index) {
        // Cut anywhere (mostly an error, never a panic), a backslash as the last byte
        // included: it escapes the padding past the input's end.
        let cut = &token[..cut.index(token.len())];
        let mut body = vec![b' '; pad];
        body.extend_from_slice(cut);
        let want = reference_string(cut);
        prop_assert_eq!(canonical_request(&body).ok(), want.clone());
        prop_assert_eq!(cache_key_validated(&body, "chat", "openai", "t").is_ok(), want.is_some());
    }
}

/// Which bytes of a block are escaped, bit by bit: the reference for `escaped_bytes`.
fn escaped_bytes_one_by_one(backslash: u64, carry: u64) -> (u64, u64) {
    let (mut escaped, mut next) = (0, carry);
    for k in 0..64 {
        let is_escaped = next == 1;
        escaped |= u64::from(is_escaped) << k;
        next = u64::from(!is_escaped && backslash >> k & 1 == 1);
    }
    (escaped, next)
}

proptest! {
    #[test]
    fn escaped_bytes_match_a_bit_by_bit_reference(
        a: u64, b: u64, c: u64, carry in 0u64..2, shape in 0usize..4
    ) {
        // Sparse masks (lone backslashes, the fast path) as well as dense ones (runs).
        let backslash = [a & b & c, a & b, a, a | b][shape];
        prop_assert_eq!(escaped_bytes(backslash, carry), escaped_bytes_one_by_one(backslash, carry));
    }
}

#[test]
fn escapes_at_every_block_offset() {
    // The scan's one-short-escape path and the letter-by-letter one, at every
    // position of a 64-byte block and across its edge: each escape alone, a short
    // escape next to a non-canonical one (`\/`, `\u0041`) or an invalid one, in
    // text shaped like chat (a `\n` and two `\"` every ~70 bytes).
    let line = "The quick brown fox jumps over the lazy dog; \\\"quoted\\\", caf\u{e9}, 42.\\n";
    let escapes = [
        "\\n",
        "\\t",
        "\\r",
        "\\b",
        "\\f",
        "\\/",
        "\\u0041",
        "\\u001f",
        "\\u001F",
        "\\u00e9",
        "\\n\\/",
        "\\/\\n",
        "\\n\\u0041",
        "\\t\\n",
        "\\\\n",
        "\\\\\\n",
        "\\a",
        "\\n\\x",
        "\\N",
    ];
    for escape in escapes {
        for at in 0..130 {
            let mut token = String::from("\"");
            token.push_str(&"x".repeat(at));
            token.push_str(escape);
            token.push_str(&line.repeat(3));
            token.push('"');
            let got = canonical_request(token.as_bytes()).ok();
            assert_eq!(
                got,
                reference_string(token.as_bytes()),
                "{escape:?} at {at}"
            );
            if let Some(form) = got {
                let body = format!("{{\"content\":{token}}}");
                let key = cache_key(body.as_bytes(), "chat", "openai", "t").unwrap();
                assert_eq!(
                    key,
                    key_by_definition(body.as_bytes(), "chat", "openai", "t")
                );
                assert!(form.len() <= token.len());
            }
        }
    }
}

#[test]
fn short_strings_with_a_special_byte_anywhere() {
    // Strings that end within 16 bytes skip the block scan unless a backslash or a
    // control byte comes before their closing quote: each at every position, in
    // strings up to just over 16 bytes, followed by more input or by its end.
    for special in [
        "\\n", "\\\"", "\\\\", "\\u0041", "\\/", "\u{1}", "\\x", "\"", "é",
    ] {
        for len in 0..20 {
            for at in 0..=len {
                let token = format!("\"{}{special}{}\"", "a".repeat(at), "b".repeat(len - at));
                assert_eq!(
                    canonical_request(token.as_bytes()).ok(),
                    reference_string(token.as_bytes()),
                    "{token:?}"
                );
                // Enough input after the string for the 16-byte look-ahead.
                let body = format!("[{token}, 1, 2, 3, 4, 5, 6, 7, 8]");
                let want = reference_string(token.as_bytes())
                    .map(|form| [b"[".as_slice(), &form, b",1,2,3,4,5,6,7,8]"].concat());
                assert_eq!(canonical_request(body.as_bytes()).ok(), want, "{body:?}");
            }
        }
    }
}

#[test]
fn a_trailing_backslash_is_an_error() {
    // Once a panic: the backslash escaped the padding past the end of the input.
    for len in [0, 1, 62, 63, 64, 127] {
        let body = format!("\"{}\\", "a".repeat(len));
        assert!(canonical_request(body.as_bytes()).is_err(), "{len}");
        assert!(cache_key_validated(body.as_bytes(), "m", "openai", "t").is_err());
    }
}
