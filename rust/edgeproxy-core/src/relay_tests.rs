use super::*;
use proptest::prelude::*;

fn sse_bytes(datas: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datas {
        sse::encode(None, d, &mut out);
    }
    out
}

fn scan_all(options: ScanOptions, bytes: &[u8]) -> ChunkScan {
    ChatStreamScanner::new(options).feed(bytes).unwrap()
}

fn delta(content: &str) -> String {
    format!(
        r#"{{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{{"index":0,"delta":{{"content":{}}},"finish_reason":null}}]}}"#,
        serde_json::to_string(content).unwrap()
    )
}

const ROLE: &str = r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
const FINISH: &str = r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
const USAGE: &str = r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;

#[test]
fn plain_stream() {
    let a = delta("Hel");
    let b = delta("lo");
    let bytes = sse_bytes(&[ROLE, &a, &b, FINISH, USAGE, DONE, &delta("after")]);
    let scan = scan_all(ScanOptions::default(), &bytes);
    assert_eq!(scan.out, sse_bytes(&[ROLE, &a, &b, FINISH, USAGE]));
    assert!(scan.done && scan.started && scan.finished);
    assert!(!scan.tool_calls && !scan.multiple_choices);
    assert_eq!(scan.events, 5);
    assert_eq!(scan.text, "Hello");
    assert_eq!(scan.model.as_deref(), Some("m"));
    assert_eq!(scan.id.as_deref(), Some("c1"));
    assert_eq!(
        scan.usage.as_deref(),
        Some(r#"{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}"#)
    );
    assert_eq!(scan.failure, None);
}

#[test]
fn role_chunk_alone_has_no_substance() {
    let scan = scan_all(ScanOptions::default(), &sse_bytes(&[ROLE]));
    assert!(!scan.started);
    assert_eq!(scan.events, 1);
    assert_eq!(scan.out, sse_bytes(&[ROLE]));
}

#[test]
fn nothing_after_done_across_feeds() {
    let mut s = ChatStreamScanner::default();
    let first = s.feed(&sse_bytes(&[DONE])).unwrap();
    assert!(first.done && first.out.is_empty());
    let later = s.feed(&sse_bytes(&[&delta("x"), "not json"])).unwrap();
    assert_eq!(later, ChunkScan::default());
    assert!(s.done());
}

#[test]
fn malformed_events() {
    for (data, msg) in [
        ("not json", NOT_JSON),
        ("{\"a\":", NOT_JSON),
        ("{} x", NOT_JSON),
        ("NaN", NOT_JSON),
        ("\"\\ud800\"", NOT_JSON),
        ("[1, 2]", NOT_OBJECT),
        ("\"s\"", NOT_OBJECT),
        ("null", NOT_OBJECT),
        ("3.5", NOT_OBJECT),
    ] {
        let a = delta("a");
        let mut s = ChatStreamScanner::default();
        let scan = s.feed(&sse_bytes(&[&a, data, &delta("b")])).unwrap();
        assert_eq!(scan.failure, Some(StreamFailure::Malformed(msg)), "{data}");
        assert_eq!(scan.text, "a");
        assert_eq!(scan.events, 1);
        // Sticky: nothing is relayed after garbage.
        let again = s.feed(&sse_bytes(&[&delta("c")])).unwrap();
        assert_eq!(again.failure, Some(StreamFailure::Malformed(msg)));
        assert!(again.out.is_empty());
    }
}

#[test]
fn error_event() {
    let err = r#"{"error":{"message":"overloaded","type":"server_error","code":"overloaded"}}"#;
    let scan = scan_all(ScanOptions::default(), &sse_bytes(&[err]));
    assert_eq!(
        scan.failure,
        Some(StreamFailure::ErrorEvent(err.to_owned()))
    );
    assert_eq!(scan.events, 0);
    // Any `error` key counts, even null.
    let scan = scan_all(ScanOptions::default(), &sse_bytes(&[r#"{"error":null}"#]));
    assert!(matches!(scan.failure, Some(StreamFailure::ErrorEvent(_))));
}

#[test]
fn tool_calls_and_choices() {
    let tool = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":""}}]}}]}"#;
    let scan = scan_all(ScanOptions::default(), &sse_bytes(&[tool]));
    assert!(scan.tool_calls && scan.started && !scan.multiple_choices);
    let n2 =
        r#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#;
    let scan = scan_all(ScanOptions::default(), &sse_bytes(&[n2]));
    assert!(scan.multiple_choices);
    assert_eq!(scan.text, "a");
    // Python's `index == 0`: missing, 0.0 and false are 0; null and "0" are not.
    for (index, first) in [
        ("", true),
        (r#""index":0.0,"#, true),
        (r#""index":false,"#, true),
        (r#""index":null,"#, false),
        (r#""index":"0","#, false),
    ] {
        let data = format!(r#"{{"choices":[{{{index}"delta":{{"content":"t"}}}}]}}"#);
        let scan = scan_all(ScanOptions::default(), &sse_bytes(&[&data]));
        assert_eq!(scan.multiple_choices, !first, "{data}");
        assert_eq!(scan.text, if first { "t" } else { "" }, "{data}");
    }
    // Truthiness: an empty refusal or a zero finish_reason is nothing; "x" is something.
    for (data, started) in [
        (
            r#"{"choices":[{"delta":{"refusal":""},"finish_reason":0}]}"#,
            false,
        ),
        (r#"{"choices":[{"delta":{"reasoning_content":"x"}}]}"#, true),
        (r#"{"choices":[{"delta":{"function_call":{}}}]}"#, false),
        (r#"{"choices":[{"finish_reason":"length"}]}"#, true),
        (r#"{"choices":"x","usage":{}}"#, false),
        (r#"{"choices":[1,null],"usage":{"a":1}}"#, true),
    ] {
        let scan = scan_all(ScanOptions::default(), &sse_bytes(&[data]));
        assert_eq!(scan.started, started, "{data}");
    }
}

#[test]
fn multi_line_data_and_other_fields_reencoded() {
    let bytes = b"event: x\nid: 4\ndata: {\"a\":\ndata: 1}\r\n\r\n: comment\n\n";
    let scan = scan_all(ScanOptions::default(), bytes);
    assert_eq!(scan.out, b"data: {\"a\":\ndata: 1}\n\n");
    assert_eq!(scan.events, 1);
}

#[test]
fn sse_error_reports_no_events() {
    let mut s = ChatStreamScanner::with_limit(ScanOptions::default(), 64);
    let mut bytes = sse_bytes(&[&delta("a")]);
    bytes.extend_from_slice(&[b'x'; 100]);
    assert_eq!(s.feed(&bytes), Err(Error::SseEventTooLarge { limit: 64 }));
    assert!(s.feed(b"\n\n").is_err());
}

#[test]
fn continuation_rewrites() {
    let options = ScanOptions {
        continuation: true,
        continuation_id: Some("orig".into()),
        prior_usage: Some((10, 3)),
    };
    let usage = r#"{"id":"c1","choices":[],"usage":{"completion_tokens":2, "prompt_tokens":5,"total_tokens":7,"x":{"a": [1, "b c"]}},"model":"m"}"#;
    let bytes = sse_bytes(&[ROLE, &delta("lo"), usage, DONE]);
    let scan = scan_all(options, &bytes);
    let want = [
        r#"{"id":"orig","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
        r#"{"id":"orig","choices":[],"usage":{"completion_tokens":5,"prompt_tokens":15,"total_tokens":20,"x":{"a":[1,"b c"]}},"model":"m"}"#,
    ];
    assert_eq!(
        String::from_utf8(scan.out).unwrap(),
        String::from_utf8(sse_bytes(&want)).unwrap()
    );
    assert_eq!(scan.events, 3); // the dropped role chunk was still checked
    assert_eq!(scan.id.as_deref(), Some("c1"));
    assert_eq!(
        scan.usage.as_deref(),
        Some(
            r#"{"completion_tokens":2, "prompt_tokens":5,"total_tokens":7,"x":{"a": [1, "b c"]}}"#
        )
    );
    // No id in the chunk: appended; no id to give: left alone.
    let opts = ScanOptions {
        continuation: true,
        continuation_id: Some("o".into()),
        prior_usage: None,
    };
    let scan = scan_all(
        opts,
        &sse_bytes(&[r#"{"choices":[{"finish_reason":"stop"}]}"#]),
    );
    assert_eq!(
        scan.out,
        sse_bytes(&[r#"{"choices":[{"finish_reason":"stop"}],"id":"o"}"#])
    );
    let opts = ScanOptions {
        continuation: true,
        ..ScanOptions::default()
    };
    let scan = scan_all(opts, &sse_bytes(&[r#"{ "id" : "c", "usage" : 5 }"#]));
    assert_eq!(scan.out, sse_bytes(&[r#"{"id":"c","usage":5}"#]));
}

#[test]
fn prior_usage_without_continuation() {
    let options = ScanOptions {
        prior_usage: Some((1, 2)),
        ..ScanOptions::default()
    };
    let a = delta("a");
    // Missing counts become 0 + prior; bools are ints; floats are not; duplicates keep their
    // first position with the last value; total_tokens is appended.
    let usage = r#"{"usage":{"completion_tokens":1.5,"prompt_tokens":true,"prompt_tokens":7},"id":"k","id":"j"}"#;
    let scan = scan_all(options, &sse_bytes(&[&a, usage]));
    let want = r#"{"usage":{"completion_tokens":2,"prompt_tokens":8,"total_tokens":10},"id":"j"}"#;
    assert_eq!(scan.out, sse_bytes(&[&a, want]));
    assert_eq!(scan.id.as_deref(), Some("c1"));
    let usage = r#"{"usage":{"prompt_tokens":true}}"#;
    let scan = scan_all(
        ScanOptions {
            prior_usage: Some((0, 0)),
            ..ScanOptions::default()
        },
        &sse_bytes(&[usage]),
    );
    assert_eq!(
        scan.out,
        sse_bytes(&[r#"{"usage":{"prompt_tokens":1,"completion_tokens":0,"total_tokens":1}}"#])
    );
}

#[test]
fn escaped_keys_and_strings_survive_rewrite() {
    let opts = ScanOptions {
        continuation: true,
        continuation_id: Some("a\"b\u{e9}".into()),
        prior_usage: None,
    };
    let data = r#"{"\u0069d":"x","choices":[{"delta":{"content":"q\" \\ \n\u00e9 "}}]}"#;
    let scan = scan_all(opts, &sse_bytes(&[data]));
    let out = String::from_utf8(scan.out).unwrap();
    let json = out.strip_prefix("data: ").unwrap().trim_end();
    let v: Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["id"], "a\"b\u{e9}");
    assert_eq!(v["choices"][0]["delta"]["content"], "q\" \\ \n\u{e9} ");
    assert_eq!(scan.text, "q\" \\ \n\u{e9} ");
}

// ---- properties ---------------------------------------------------------------------

fn event_strategy() -> impl Strategy<Value = String> {
    let content = "[ -~\u{e9}\u{1F600}\n\"\\\\]{0,12}";
    prop_oneof![
        6 => content.prop_map(|c| delta(&c)),
        1 => Just(ROLE.to_owned()),
        1 => Just(FINISH.to_owned()),
        1 => Just(USAGE.to_owned()),
        1 => (content, 0u8..3).prop_map(|(c, i)| format!(
            r#"{{"choices":[{{"index":{i},"delta":{{"content":{}}}}}]}}"#,
            serde_json::to_string(&c).unwrap()
        )),
        1 => Just(r#"{"choices":[{"delta":{"tool_calls":[{"id":"t"}]}}]}"#.to_owned()),
        1 => Just("{\n  \"pretty\": true,\n  \"choices\": []\n}".to_owned()),
    ]
}

fn stream_strategy() -> impl Strategy<Value = (Vec<String>, Option<(usize, u8)>)> {
    (
        proptest::collection::vec(event_strategy(), 0..20),
        // Optionally end with [DONE], garbage or an in-band error at some point.
        proptest::option::of((any::<prop::sample::Index>(), 0u8..3)),
    )
        .prop_map(|(events, end)| {
            let end = end.map(|(i, kind)| (i.index(events.len() + 1), kind));
            (events, end)
        })
}

fn build(events: &[String], end: Option<(usize, u8)>) -> Vec<String> {
    let mut all = events.to_vec();
    if let Some((at, kind)) = end {
        let special = match kind {
            0 => DONE.to_owned(),
            1 => "{not json".to_owned(),
            _ => r#"{"error":{"code":"x"}}"#.to_owned(),
        };
        all.insert(at, special);
    }
    all
}

fn merge(into: &mut ChunkScan, scan: ChunkScan) {
    into.out.extend(scan.out);
    into.done |= scan.done;
    into.started |= scan.started;
    into.finished |= scan.finished;
    into.tool_calls |= scan.tool_calls;
    into.multiple_choices |= scan.multiple_choices;
    into.events += scan.events;
    if scan.usage.is_some() {
        into.usage = scan.usage;
    }
    if into.model.is_none() {
        into.model = scan.model;
    }
    if into.id.is_none() {
        into.id = scan.id;
    }
    into.text.push_str(&scan.text);
    if into.failure.is_none() {
        into.failure = scan.failure;
    }
}

fn options_strategy() -> impl Strategy<Value = ScanOptions> {
    (
        any::<bool>(),
        proptest::option::of("[a-z\"]{0,4}"),
        proptest::option::of((0i64..100, 0i64..100)),
    )
        .prop_map(|(continuation, continuation_id, prior_usage)| ScanOptions {
            continuation,
            continuation_id,
            prior_usage,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_split_gives_same_result(
        (events, end) in stream_strategy(),
        options in options_strategy(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let all = build(&events, end);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let bytes = sse_bytes(&refs);
        let whole = scan_all(options.clone(), &bytes);

        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut s = ChatStreamScanner::new(options.clone());
        let mut got = ChunkScan::default();
        let mut start = 0;
        for end in points.into_iter().chain([bytes.len()]) {
            merge(&mut got, s.feed(&bytes[start..end]).unwrap());
            start = end;
        }
        prop_assert_eq!(&got, &whole);

        // Text is the concatenation of choice 0's contents up to the end marker.
        let upto = end.map_or(events.len(), |(at, _)| at);
        let mut want_text = String::new();
        for e in &events[..upto] {
            let v: Value = serde_json::from_str(e).unwrap();
            if let Some(Value::Array(choices)) = v.get("choices") {
                for c in choices {
                    if c.get("index").is_none_or(|i| i == 0) {
                        if let Some(Value::String(t)) = c.pointer("/delta/content") {
                            want_text.push_str(t);
                        }
                    }
                }
            }
        }
        prop_assert_eq!(&whole.text, &want_text);
        prop_assert_eq!(whole.done, end.is_some_and(|(_, k)| k == 0));
        match end {
            Some((_, 1)) => prop_assert_eq!(&whole.failure, &Some(StreamFailure::Malformed(NOT_JSON))),
            Some((_, 2)) => prop_assert!(matches!(whole.failure, Some(StreamFailure::ErrorEvent(_)))),
            _ => prop_assert_eq!(&whole.failure, &None),
        }
        if !options.continuation && options.prior_usage.is_none() {
            // Unchanged events pass through (re-encoded), in order.
            let kept: Vec<&str> = refs[..upto].to_vec();
            if whole.failure.is_none() {
                prop_assert_eq!(&whole.out, &sse_bytes(&kept));
            }
            prop_assert_eq!(whole.events, upto);
        }
        // Whatever was written parses back to JSON objects, never [DONE].
        let mut p = Parser::new();
        for ev in p.feed(&whole.out).unwrap() {
            prop_assert!(ev.data != DONE);
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            prop_assert!(v.is_object());
            if options.continuation {
                if let Some(id) = &options.continuation_id {
                    prop_assert_eq!(&v["id"], &Value::String(id.clone()));
                }
            }
        }
    }
}
