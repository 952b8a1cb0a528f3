use proptest::prelude::*;

use super::*;

const CL: Encoding = Encoding::Cl100kBase;
const O2: Encoding = Encoding::O200kBase;

#[test]
fn counts_equal_tiktoken_on_known_texts() {
    // Reference values from tiktoken's `cl100k_base` (`encode_ordinary`).
    for (text, expected) in [
        ("", 0),
        (" ", 1),
        ("hello world", 2),
        ("Hello, world!", 4),
        ("tiktoken is great!", 6),
        ("\n\n", 1),
        ("<|endoftext|>", 7),
        ("😀", 2),
        ("Ünïcödé  text\t\ttabs", 12),
        ("def f(x):\n    return x ** 2\n", 11),
    ] {
        assert_eq!(count(text, CL), expected, "{text:?}");
    }
    assert_eq!(count(&"a".repeat(1000), CL), 125);
    assert_eq!(count("hello world", O2), 2);
}

#[test]
fn encoding_names_round_trip() {
    for encoding in Encoding::ALL {
        assert_eq!(Encoding::from_name(encoding.name()), Ok(encoding));
    }
    assert!(CL.is_exact() && O2.is_exact() && !Encoding::Estimate.is_exact());
    let err = Encoding::from_name("p50k_base").unwrap_err();
    assert_eq!(
        err,
        Error::UnknownEncoding {
            name: "p50k_base".into()
        }
    );
    assert!(err.to_string().contains("p50k_base"));
}

#[test]
fn token_tables_have_the_published_sizes() {
    // tiktoken: cl100k_base has 100256 ranks, o200k_base 199998 (special tokens excluded).
    assert_eq!(token_table(CL).len(), 100_256);
    assert_eq!(token_table(O2).len(), 199_998);
    assert_eq!(token_table(CL)[0], b"!");
    assert_eq!(token_table(Encoding::Estimate).len(), 100_256);
}

#[test]
fn adversarial_inputs_finish() {
    // One piece of 100 KB is quadratic for naive BPE; here it is linear.
    for text in [
        "a".repeat(100_000),
        " ".repeat(100_000),
        "\n".repeat(100_000),
        "1".repeat(100_000),
        ".".repeat(100_000),
        "😀".repeat(25_000),
        "ab".repeat(50_000),
        "\u{0300}".repeat(50_000),
        // Runs the ASCII splitter reads to the end, then hands to the regex.
        " ".repeat(100_000) + "é",
        "a".repeat(100_000) + "é",
        " \n".repeat(50_000) + "\u{a0}",
        "Ab".repeat(50_000),
    ] {
        for encoding in [CL, O2] {
            let n = count(&text, encoding);
            assert!(n > 0 && n <= text.len());
            // `bpe-openai`'s own count (its regex split and linear encoder) is the reference.
            let head: String = text.chars().take(4).collect();
            assert_eq!(n, encoding.tokenizer().count(&text), "{head:?}");
            assert_eq!(count_up_to(&text, encoding, usize::MAX), n);
            assert_eq!(count_up_to(&text, encoding, 10), 11);
        }
    }
}

#[test]
fn count_up_to_stops_at_the_limit() {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    let n = count(&text, CL);
    assert_eq!(count_up_to(&text, CL, n), n);
    assert_eq!(count_up_to(&text, CL, n - 1), n);
    assert_eq!(count_up_to(&text, CL, 0), 1);
    assert_eq!(count_up_to("", CL, 0), 0);
    assert_eq!(count_up_to(&text, CL, usize::MAX), n);
}

#[test]
fn count_up_to_answers_huge_texts_without_reading_them() {
    // The bound `count_up_to` answers from is the longest token of both vocabularies.
    for encoding in [CL, O2] {
        let bpe = &encoding.tokenizer().bpe;
        let longest = (0..bpe.num_tokens() as u32)
            .map(|id| bpe.token_len(id))
            .max();
        assert_eq!(longest, Some(long::MAX_TOKEN));
    }
    let huge = "a".repeat(10_000_000);
    for encoding in Encoding::ALL {
        assert_eq!(count_up_to(&huge, encoding, 100), 101);
    }
    // Just under the bound: the text is read, and the count is still exact.
    let text = "a".repeat(128 * 50);
    assert_eq!(count_up_to(&text, CL, 50), count(&text, CL).min(51));
}

#[test]
fn estimates_scale_cl100k_up() {
    let text = "hello world, this is an estimate";
    let raw = count(text, CL);
    let est = count(text, Encoding::Estimate);
    assert_eq!(
        est,
        (raw * ESTIMATE_NUMERATOR).div_ceil(ESTIMATE_DENOMINATOR)
    );
    assert!(est > raw);
    assert_eq!(count_up_to(text, Encoding::Estimate, usize::MAX), est);
    assert_eq!(count_up_to(text, Encoding::Estimate, est - 1), est);
    assert_eq!(count_up_to(text, Encoding::Estimate, 2), 3);
}

fn formula(messages: &[&[(&str, &str)]], encoding: Encoding) -> usize {
    let mut n = REPLY_PRIMING_TOKENS;
    for message in messages {
        n += TOKENS_PER_MESSAGE;
        for (key, value) in *message {
            n += count(value, encoding);
            if *key == "name" {
                n += TOKENS_PER_NAME;
            }
        }
    }
    n
}

#[test]
fn chat_string_messages_follow_the_cookbook_formula() {
    let body = br#"{"model":"gpt-4o","messages":[
        {"role":"system","content":"You are a helpful assistant."},
        {"role":"user","name":"example_user","content":"New synergies will help drive top-line growth."},
        {"role":"assistant","content":null,"refusal":null},
        {"role":"tool","tool_call_id":"call_1","content":"42"}
    ],"temperature":0.2,"stream":true}"#;
    let expected: &[&[(&str, &str)]] = &[
        &[
            ("role", "system"),
            ("content", "You are a helpful assistant."),
        ],
        &[
            ("role", "user"),
            ("name", "example_user"),
            ("content", "New synergies will help drive top-line growth."),
        ],
        &[("role", "assistant")],
        &[
            ("role", "tool"),
            ("tool_call_id", "call_1"),
            ("content", "42"),
        ],
    ];
    for encoding in [CL, O2] {
        let c = count_chat(body, encoding).unwrap();
        assert_eq!(c.tokens, formula(expected, encoding));
        assert!(c.exact);
        assert_eq!(c.encoding, encoding);
    }
    let empty = count_chat(br#"{"messages":[]}"#, CL).unwrap();
    assert_eq!(empty.tokens, REPLY_PRIMING_TOKENS);
}

#[test]
fn chat_approximations_are_labelled() {
    let parts = br#"{"messages":[{"role":"user","content":[
        {"type":"text","text":"What is in this image?"},
        {"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}},
        {"type":"image_url","image_url":{"url":"https://x/z.png"}},
        {"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}
    ]}]}"#;
    let c = count_chat(parts, CL).unwrap();
    assert!(!c.exact);
    let expected = REPLY_PRIMING_TOKENS
        + TOKENS_PER_MESSAGE
        + count("user", CL)
        + count("What is in this image?", CL)
        + IMAGE_TOKENS_LOW
        + IMAGE_TOKENS_HIGH;
    assert_eq!(c.tokens, expected);

    let calls = br#"{"messages":[{"role":"assistant","content":null,"tool_calls":[
        {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}
    ]}]}"#;
    let c = count_chat(calls, O2).unwrap();
    assert!(!c.exact);
    let expected = REPLY_PRIMING_TOKENS
        + TOKENS_PER_MESSAGE
        + count("assistant", O2)
        + TOKENS_PER_TOOL_CALL
        + count("get_weather", O2)
        + count("{\"city\":\"Paris\"}", O2);
    assert_eq!(c.tokens, expected);
}

#[test]
fn chat_tools_use_the_cookbook_tool_formula() {
    let body =
        br#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{
        "name":"get_current_weather","description":"Get the current weather in a given location.",
        "parameters":{"type":"object","properties":{
            "location":{"type":"string","description":"The city and state, e.g. San Francisco, CA"},
            "unit":{"type":"string","description":"The unit.","enum":["celsius","fahrenheit"]}
        },"required":["location"]}}}]}"#;
    let messages = REPLY_PRIMING_TOKENS + TOKENS_PER_MESSAGE + count("user", O2) + count("hi", O2);
    // gpt-4o constants: func_init 7, prop_init 3, prop_key 3, enum_init -3, enum_item 3, func_end 12.
    let tools =
        7 + count(
            "get_current_weather:Get the current weather in a given location",
            O2,
        ) + 3
            + 3
            + count(
                "location:string:The city and state, e.g. San Francisco, CA",
                O2,
            )
            + 3
            + 3
            + count("celsius", O2)
            + 3
            + count("fahrenheit", O2)
            - 3
            + count("unit:string:The unit", O2)
            + 12;
    let c = count_chat(body, O2).unwrap();
    assert_eq!(c.tokens, messages + tools);
    assert!(!c.exact);
}

#[test]
fn chat_estimates_accept_anthropic_bodies() {
    let body = br#"{"model":"claude-sonnet-4","system":"Be brief.","max_tokens":100,"messages":[
        {"role":"user","content":[{"type":"text","text":"Hello"}]},
        {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"lookup","input":{"q":"x"}}]},
        {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"found"}]}
    ],"tools":[{"name":"lookup","description":"Look up.","input_schema":{"type":"object","properties":{"q":{"type":"string"}}}}]}"#;
    let est = count_chat(body, Encoding::Estimate).unwrap();
    assert!(!est.exact);
    assert_eq!(est.encoding, Encoding::Estimate);
    let raw = count_chat(body, CL).unwrap();
    assert!(!raw.exact);
    assert_eq!(
        est.tokens,
        (raw.tokens * ESTIMATE_NUMERATOR).div_ceil(ESTIMATE_DENOMINATOR)
    );
    assert!(raw.tokens > 40, "{raw:?}");
}

#[test]
fn chat_rejects_what_is_not_a_chat_request() {
    for body in [
        &b"not json"[..],
        b"[]",
        b"{}",
        b"{\"messages\":{}}",
        b"{\"messages\":[1]}",
        b"\xff\xfe",
    ] {
        let err = count_chat(body, CL).unwrap_err();
        assert!(
            matches!(err, Error::TokenizerBadRequest { .. }),
            "{body:?}: {err:?}"
        );
    }
    // Deep nesting hits serde_json's recursion limit instead of the stack.
    let deep = format!(
        "{{\"messages\":[{{\"role\":\"user\",\"content\":{}{}}}]}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(count_chat(deep.as_bytes(), CL).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn count_up_to_is_min_of_count_and_limit_plus_one(
        text in "(\\PC|\\s|[a-z ]{1,8}|[0-9]{1,5}){0,60}",
        limit in 0usize..40,
    ) {
        for encoding in Encoding::ALL {
            let n = count(&text, encoding);
            prop_assert_eq!(count_up_to(&text, encoding, limit), n.min(limit + 1));
        }
    }

    #[test]
    fn count_is_at_most_the_byte_length(text in "\\PC{0,200}") {
        prop_assert!(count(&text, CL) <= text.len());
        prop_assert!(count(&text, O2) <= text.len());
    }

    #[test]
    fn chat_of_string_messages_is_exact_and_follows_the_formula(
        messages in prop::collection::vec(("(user|system|assistant)", "\\PC{0,40}", prop::option::of("[a-z_]{1,10}")), 0..6),
    ) {
        let json: Vec<serde_json::Value> = messages.iter().map(|(role, content, name)| {
            let mut m = serde_json::json!({"role": role, "content": content});
            if let Some(name) = name { m["name"] = serde_json::json!(name); }
            m
        }).collect();
        let body = serde_json::to_vec(&serde_json::json!({"messages": json})).unwrap();
        for encoding in [CL, O2] {
            let mut expected = REPLY_PRIMING_TOKENS;
            for (role, content, name) in &messages {
                expected += TOKENS_PER_MESSAGE + count(role, encoding) + count(content, encoding);
                if let Some(name) = name { expected += count(name, encoding) + TOKENS_PER_NAME; }
            }
            let c = count_chat(&body, encoding).unwrap();
            prop_assert!(c.exact);
            prop_assert_eq!(c.tokens, expected);
        }
    }
}

/// The fast per-piece count against `bpe`'s backtracking encoder (itself checked against
/// tiktoken by `bpe-openai`'s tests, and ours against Python tiktoken in tests/).
fn check_piece(piece: &[u8]) -> Result<(), TestCaseError> {
    for encoding in [CL, O2] {
        let expected = encoding.tokenizer().bpe.count(piece);
        prop_assert_eq!(encoding.ranks().count(piece), expected, "{:?}", piece);
    }
    Ok(())
}

#[test]
fn fast_piece_count_equals_bpe_on_every_token_and_on_pairs_of_tokens() {
    for encoding in [CL, O2] {
        let bpe = &encoding.tokenizer().bpe;
        let ranks = encoding.ranks();
        let n = bpe.num_tokens() as u32;
        for id in 0..n {
            let bytes = bpe.token_bytes(id);
            assert_eq!(ranks.count(bytes), 1, "{bytes:?}");
            // A token followed by another (a pseudo-random one): often several merges apart.
            let other = bpe.token_bytes(id.wrapping_mul(2_654_435_761) % n);
            let pair = [bytes, other].concat();
            assert_eq!(ranks.count(&pair), bpe.count(&pair), "{pair:?}");
        }
    }
}

#[test]
fn fast_count_equals_bpe_openai_on_long_mixed_text() {
    let text = [
        include_str!("../../../../docs/tokens.md"),
        include_str!("../../../../docs/benchmarks.md"),
        include_str!("chat.rs"),
        include_str!("../relay.rs"),
    ]
    .concat();
    let squeezed: String = text.split_whitespace().collect();
    for text in [&text, &squeezed] {
        for encoding in [CL, O2] {
            assert_eq!(
                count(text, encoding),
                encoding.tokenizer().count(text.as_str())
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fast_piece_count_equals_bpe_on_bytes(piece in prop::collection::vec(any::<u8>(), 0..80)) {
        check_piece(&piece)?;
    }

    #[test]
    fn fast_piece_count_equals_bpe_on_words(
        piece in "[^ ]?([a-zA-Z]{1,12}|[a-z]{1,6}'[a-z]{1,3}|[0-9]{1,3}|[!-/:-@]{1,3}|\\PC{1,3}){1,12}",
    ) {
        check_piece(piece.as_bytes())?;
    }

    #[test]
    fn fast_piece_count_equals_bpe_on_token_runs(ids in prop::collection::vec(0u32..100_256, 1..12)) {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| CL.tokenizer().bpe.token_bytes(id).iter().copied())
            .collect();
        check_piece(&bytes)?;
    }
}

fn check_split(text: &str) -> Result<(), TestCaseError> {
    for encoding in [CL, O2] {
        let ours: Vec<&str> = encoding.pieces(text).collect();
        let regex: Vec<&str> = encoding.tokenizer().split(text).collect();
        prop_assert_eq!(ours, regex, "{:?} {:?}", encoding, text);
    }
    Ok(())
}

#[test]
fn split_equals_the_regex_on_known_texts() {
    let docs = [
        include_str!("../../../../docs/tokens.md"),
        include_str!("chat.rs"),
    ]
    .concat();
    let squeezed: String = docs.split_whitespace().collect();
    for text in [
        docs.as_str(),
        squeezed.as_str(),
        "",
        " ",
        "  ",
        "a  ",
        "a \n ",
        "x\r\n\r\n  y",
        "don't DON'T we'RE I'Ll 'ſ 's ' '",
        "HTTPServer iPhone ABC abc Abc aBC",
        "$1 .x (.x ./\n/ a/b //\n\n",
        "\t\x0b\x0c x\x1f\x7fy",
        "123456 1234 12é ١٢٣ 12٣",
        "a\u{a0}b a \u{a0} \u{85}x \u{2028}",
        "é É ǅx ʰx 中文 x\u{301} Straße",
    ] {
        check_split(text).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn split_equals_the_regex_on_ascii(text in "[\\x00-\\x7f]{0,40}") {
        check_split(&text)?;
    }

    #[test]
    fn split_equals_the_regex_on_word_like_ascii(
        text in "([A-Za-z]{1,6}|[0-9]{1,4}|[ \\t\\r\\n\\x0b\\x0c]{1,3}|[!-/:-@\\[-`{-~]{1,3}|'[a-zA-Z]{1,2}){0,12}",
    ) {
        check_split(&text)?;
    }

    #[test]
    fn split_equals_the_regex_on_tricky_alphabets(
        text in "([aZs'rReEvlLdDtTmM0-9 \\t\\r\\n\\x0b\\x0c.!/_-]|é|É|ſ|K|ǅ|ʰ|中|\u{301}|\u{a0}|\u{85}|\u{2028}|٣|—|😀){0,40}",
    ) {
        check_split(&text)?;
    }
}
