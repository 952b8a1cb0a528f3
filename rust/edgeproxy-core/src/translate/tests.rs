use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::sse::{self, Parser};

const OPENAI_TEXT: &str = concat!(
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w\u{f6}rld\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
    "data: [DONE]\n\n",
);

const OPENAI_TOOLS: &str = concat!(
    "data: {\"id\":\"chatcmpl-t\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-t\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-t\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-t\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-t\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: [DONE]\n\n",
);

const ANTHROPIC_TOOLS: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check.\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

fn events(bytes: &[u8]) -> Vec<(String, Value)> {
    let mut p = Parser::new();
    p.feed(bytes)
        .unwrap()
        .into_iter()
        .map(|e| {
            let data = if e.data == "[DONE]" {
                Value::String(e.data)
            } else {
                serde_json::from_str(&e.data).unwrap()
            };
            (e.event, data)
        })
        .collect()
}

#[test]
fn openai_text_to_anthropic() {
    let mut t = OpenAIToAnthropic::default();
    let mut out = t.feed(OPENAI_TEXT.as_bytes()).unwrap();
    let (tail, complete) = t.finish();
    out.extend(tail);
    assert!(complete && t.is_complete() && t.has_started());
    let evs = events(&out);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(evs[0].1["message"]["id"], "msg_abc");
    assert_eq!(evs[0].1["message"]["model"], "gpt-4o");
    assert_eq!(evs[3].1["delta"]["text"], " w\u{f6}rld");
    assert_eq!(evs[5].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(evs[5].1["usage"]["output_tokens"], 2);
    assert_eq!(evs[5].1["usage"]["input_tokens"], 9);
    for (name, data) in &evs {
        assert_eq!(data["type"], name.as_str());
    }
}

#[test]
fn openai_tools_to_anthropic() {
    let mut t = OpenAIToAnthropic::new(Some("claude-alias".into()), 1 << 20);
    let out = t.feed(OPENAI_TOOLS.as_bytes()).unwrap();
    let evs = events(&out);
    let starts: Vec<&Value> = evs
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(
        starts[0]["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}})
    );
    assert_eq!(starts[1]["index"], 1);
    let args: String = evs
        .iter()
        .filter(|(_, d)| d["index"] == 0 && d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, r#"{"city":"Paris"}"#);
    assert_eq!(evs[0].1["message"]["model"], "claude-alias");
    let delta = &evs[evs.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert!(t.is_complete());
    assert_eq!(t.stop_reason(), Some("tool_use"));
}

#[test]
fn openai_error_chunk_is_recorded_not_translated() {
    let mut t = OpenAIToAnthropic::default();
    let stream = concat!(
        "data: {\"id\":\"chatcmpl-a\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
        "data: [DONE]\n\n",
    );
    let out = t.feed(stream.as_bytes()).unwrap();
    assert_eq!(events(&out).len(), 3); // message_start, block start, delta
    let err = t.error().unwrap();
    assert_eq!(
        (err.kind.as_str(), err.message.as_str()),
        ("server_error", "boom")
    );
    assert_eq!(t.finish(), (Vec::new(), false));
    assert!(t.feed(b"data: [DONE]\n\n").unwrap().is_empty());
}

#[test]
fn openai_cut_stream_is_incomplete_and_finish_without_done_is_complete() {
    let cut = &OPENAI_TEXT[..OPENAI_TEXT.find("\"stop\"").unwrap() - 40];
    let mut t = OpenAIToAnthropic::default();
    t.feed(cut.as_bytes()).unwrap();
    assert_eq!(t.finish(), (Vec::new(), false));

    let no_done = &OPENAI_TEXT[..OPENAI_TEXT.find("data: [DONE]").unwrap()];
    let mut t = OpenAIToAnthropic::default();
    let out = t.feed(no_done.as_bytes()).unwrap();
    assert!(!events(&out).iter().any(|(n, _)| n == "message_stop"));
    let (tail, complete) = t.finish();
    assert!(complete);
    let names: Vec<String> = events(&tail).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["message_delta", "message_stop"]);
}

#[test]
fn interleaved_tool_arguments_are_refused() {
    let stream = concat!(
        "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
    );
    let err = OpenAIToAnthropic::default()
        .feed(stream.as_bytes())
        .unwrap_err();
    assert!(matches!(err, Error::Translation { ref param, .. } if param == "tool_calls"));
}

#[test]
fn anthropic_tools_to_openai() {
    let mut t = AnthropicToOpenAI::new(true, Some(7), None, 1 << 20);
    let out = t.feed(ANTHROPIC_TOOLS.as_bytes()).unwrap();
    assert!(t.is_complete());
    assert_eq!(t.finish(), (Vec::new(), true));
    let evs = events(&out);
    assert_eq!(evs.last().unwrap().1, "[DONE]");
    let chunks: Vec<&Value> = evs[..evs.len() - 1].iter().map(|(_, d)| d).collect();
    for c in &chunks {
        assert_eq!(c["id"], "chatcmpl-01");
        assert_eq!(c["created"], 7);
        assert_eq!(c["model"], "claude-x");
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Let me check.");
    assert_eq!(
        chunks[2]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "id": "toolu_1", "type": "function",
               "function": {"name": "get_weather", "arguments": ""}})
    );
    assert_eq!(
        chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        r#"{"city": "Paris"}"#
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
    let usage = &chunks[5]["usage"];
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(usage["prompt_tokens"], 25);
    assert_eq!(usage["completion_tokens"], 30);
    assert_eq!(usage["total_tokens"], 55);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 5);
    assert!(chunks[..5].iter().all(|c| c["usage"].is_null()));
}

#[test]
fn cache_writes_cross_both_ways() {
    // Anthropic -> OpenAI: a cache write is kept apart (priced apart), inside prompt_tokens.
    let anthropic = ANTHROPIC_TOOLS.replace(
        r#""cache_read_input_tokens":5,"#,
        r#""cache_read_input_tokens":5,"cache_creation_input_tokens":70,"#,
    );
    let mut t = AnthropicToOpenAI::new(true, Some(1), None, 1 << 20);
    let out = t.feed(anthropic.as_bytes()).unwrap();
    let usage = t.usage().unwrap();
    assert_eq!(
        (
            usage.input_tokens,
            usage.cached_tokens,
            usage.cache_write_tokens
        ),
        (95, 5, 70)
    );
    let chunks: Vec<Value> = events(&out)
        .into_iter()
        .filter(|(_, d)| d.is_object())
        .map(|(_, d)| d)
        .collect();
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 95);
    assert_eq!(usage["prompt_tokens_details"]["cache_write_tokens"], 70);
    // OpenAI -> Anthropic: the write comes back as cache_creation_input_tokens, out of input.
    let openai = OPENAI_TEXT.replace(
        r#""usage":{"prompt_tokens":9,"#,
        r#""usage":{"prompt_tokens_details":{"cached_tokens":2,"cache_write_tokens":4},"prompt_tokens":9,"#,
    );
    let mut t = OpenAIToAnthropic::default();
    let mut out = t.feed(openai.as_bytes()).unwrap();
    out.extend(t.finish().0);
    let delta = events(&out)
        .into_iter()
        .find(|(e, _)| e == "message_delta")
        .unwrap()
        .1;
    assert_eq!(delta["usage"]["input_tokens"], 3);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 2);
    assert_eq!(delta["usage"]["cache_creation_input_tokens"], 4);
    // No write, no field: the common case's bytes are unchanged.
    let mut t = OpenAIToAnthropic::default();
    let mut out = t.feed(OPENAI_TEXT.as_bytes()).unwrap();
    out.extend(t.finish().0);
    assert!(!String::from_utf8(out).unwrap().contains("cache_creation"));
}

#[test]
fn anthropic_error_event_is_a_failure() {
    let cut = ANTHROPIC_TOOLS.find("event: content_block_stop").unwrap();
    let mut stream = ANTHROPIC_TOOLS[..cut].to_owned();
    stream.push_str("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
    let mut t = AnthropicToOpenAI::default();
    let out = t.feed(stream.as_bytes()).unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("[DONE]"));
    assert_eq!(t.error().unwrap().kind, "overloaded_error");
    assert_eq!(t.finish(), (Vec::new(), false));
}

#[test]
fn anthropic_garbage_is_a_translation_error() {
    let mut t = AnthropicToOpenAI::default();
    let err = t
        .feed(b"event: message_start\ndata: {nope\n\n")
        .unwrap_err();
    assert!(matches!(err, Error::Translation { .. }));
    let mut t = AnthropicToOpenAI::default();
    let err = t
        .feed(b"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n")
        .unwrap_err();
    assert!(err.to_string().contains("before message_start"), "{err}");
}

#[test]
fn reason_tables_are_inverse_on_the_common_values() {
    for (f, s) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        assert_eq!(stop_reason_for(f), s);
        assert_eq!(finish_reason_for(s), f);
    }
    assert_eq!(finish_reason_for("stop_sequence"), "stop");
}

fn translate_in_pieces<F>(bytes: &[u8], cuts: &[usize], mut feed: F) -> Vec<(String, Value)>
where
    F: FnMut(&[u8]) -> Vec<u8>,
{
    let mut points: Vec<usize> = cuts.to_vec();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for end in points.into_iter().chain([bytes.len()]) {
        out.extend(feed(&bytes[start..end]));
        start = end;
    }
    events(&out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_split_gives_same_translation(
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        which in 0usize..3,
    ) {
        let stream = [OPENAI_TEXT, OPENAI_TOOLS, ANTHROPIC_TOOLS][which].as_bytes();
        let cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        if which < 2 {
            let whole = OpenAIToAnthropic::default().feed(stream).unwrap();
            let mut t = OpenAIToAnthropic::default();
            let got = translate_in_pieces(stream, &cuts, |c| t.feed(c).unwrap());
            prop_assert_eq!(got, events(&whole));
        } else {
            let whole = AnthropicToOpenAI::new(true, Some(1), None, sse::DEFAULT_MAX_EVENT_BYTES)
                .feed(stream)
                .unwrap();
            let mut t = AnthropicToOpenAI::new(true, Some(1), None, sse::DEFAULT_MAX_EVENT_BYTES);
            let got = translate_in_pieces(stream, &cuts, |c| t.feed(c).unwrap());
            prop_assert_eq!(got, events(&whole));
        }
    }
}
