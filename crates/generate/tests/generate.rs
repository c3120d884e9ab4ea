//! The generation API on the reference fixtures: greedy answers equal transformers', and the
//! text-level features (stop strings, log-probs, seeds, cancellation, sharing) hold on real
//! forward passes.

use nano_infer_generate::{
    perplexity, CancelToken, Channel, Event, Finish, Generator, Prepared, Prompt, Request,
    StopCause,
};
use nano_infer_qwen3::{EngineOptions, LoadOptions};
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/fixtures")
        .join(name)
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn generator(name: &str) -> Generator {
    Generator::load(fixture(name), &LoadOptions::default(), &mut |_| {}).unwrap()
}

fn greedy(prompt: Prompt, max_tokens: i64) -> Request {
    let mut r = Request::new(prompt);
    r.params.temperature = Some(0.0);
    r.params.max_tokens = Some(max_tokens);
    r.params.ignore_eos = true;
    r
}

/// Runs `p` on a fresh session, collecting its events.
fn run(g: &Generator, p: &Prepared) -> (Finish, Vec<Event>) {
    let mut events = Vec::new();
    let finish = g
        .session()
        .generate(p, &CancelToken::new(), |e| events.push(e))
        .unwrap();
    (finish, events)
}

fn text_of(events: &[Event], channel: Channel) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Text { channel: c, text } if *c == channel => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_chat_request_gives_the_reference_prompt_and_greedy_answer() {
    let g = generator("bf16_fullvocab");
    for tp in reference("bf16_fullvocab")["text_prompts"]
        .as_array()
        .unwrap()
    {
        let text = tp["text"].as_str().unwrap();
        let want = &tp["chat_no_thinking"];
        let p = g
            .prepare(&greedy(Prompt::user(text, None, Some(false)), 32))
            .unwrap();
        assert_eq!(p.ids, ids(&want["input_ids"]), "{text:?}: prompt ids");
        assert_eq!(
            p.text.as_deref(),
            want["string"].as_str(),
            "rendered prompt"
        );
        let (finish, events) = run(&g, &p);
        assert_eq!(finish.ids, ids(&want["greedy_ids"]), "{text:?}: greedy ids");
        assert_eq!(finish.cause, StopCause::MaxTokens);
        assert_eq!(finish.usage.prompt_tokens, p.ids.len());
        assert_eq!(
            (finish.usage.completion_tokens, finish.usage.cached_tokens),
            (32, 0)
        );
        // The streamed text is the answer, and the answer is the ids' text less special tokens.
        let codec = g.codec().unwrap();
        let decoded = codec.tokenizer().decode(&finish.ids, true).unwrap();
        assert_eq!(text_of(&events, Channel::Content), finish.content);
        assert_eq!(finish.content, decoded);
        assert!(matches!(events.last(), Some(Event::Finished(f)) if *f == finish));
    }
}

#[test]
fn a_stop_string_ends_the_answer_and_is_never_emitted() {
    let g = generator("bf16_fullvocab");
    let prompt = Prompt::Text("The capital of France is".into());
    let (free, _) = run(&g, &g.prepare(&greedy(prompt.clone(), 32)).unwrap());
    // A stop string from the middle of the free answer, a few characters long, so that it
    // usually spans a token boundary.
    let chars: Vec<(usize, char)> = free.content.char_indices().collect();
    assert!(chars.len() > 20, "a long enough answer: {:?}", free.content);
    let (from, to) = (chars[chars.len() / 2].0, chars[chars.len() / 2 + 4].0);
    let stop = free.content[from..to].to_string();
    let cut = free.content.find(&stop).unwrap();

    let mut request = greedy(prompt, 32);
    request.params.stop = vec![stop.clone()];
    let (finish, events) = run(&g, &g.prepare(&request).unwrap());
    assert_eq!(finish.cause, StopCause::StopString(stop.clone()));
    assert_eq!(finish.reason().as_str(), "stop");
    assert_eq!(finish.content, free.content[..cut]);
    assert_eq!(text_of(&events, Channel::Content), finish.content);
    assert!(finish.ids.len() < free.ids.len() && free.ids.starts_with(&finish.ids));
    assert_eq!(finish.to_json()["stop"], stop.as_str());
}

#[test]
fn logprobs_of_the_chosen_tokens_equal_perplexity() {
    let g = generator("bf16");
    let prompt = ids(&reference("bf16")["prompts"][1]["input_ids"]);
    let mut request = greedy(Prompt::Ids(prompt.clone()), 12);
    request.params.top_logprobs = Some(3);
    let (finish, _) = run(&g, &g.prepare(&request).unwrap());
    let logprobs = finish.logprobs.clone().unwrap();
    assert_eq!(logprobs.len(), finish.ids.len());
    let text = [&prompt[..], &finish.ids[..]].concat();
    let ppl = perplexity(g.model(), &text, 512, &CancelToken::new(), |_| {}).unwrap();
    for (i, lp) in logprobs.iter().enumerate() {
        assert_eq!(lp.chosen.id, finish.ids[i]);
        // 1e-3: a decode step and a one-pass forward sum in different orders (the golden
        // tests' log-prob tolerance).
        let want = ppl.logprobs[prompt.len() - 1 + i];
        assert!(
            (lp.chosen.logprob as f64 - want).abs() < 1e-3,
            "token {i}: {} vs {want}",
            lp.chosen.logprob
        );
        // Greedy: the chosen token is the most likely alternative.
        assert_eq!(lp.top.len(), 3);
        assert_eq!(lp.top[0].id, lp.chosen.id);
        assert!(lp.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
    }
    let json = finish.to_json();
    assert_eq!(json["logprobs"]["content"].as_array().unwrap().len(), 12);
    assert_eq!(
        json["logprobs"]["content"][0]["top_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn a_reported_seed_repeats_the_run() {
    let g = generator("bf16");
    let mut request = Request::new(Prompt::Ids(vec![5, 6, 7]));
    request.params.temperature = Some(1.0);
    request.params.top_k = Some(0);
    request.params.max_tokens = Some(16);
    request.params.ignore_eos = true;
    let first = run(&g, &g.prepare(&request).unwrap()).0;
    let other = run(&g, &g.prepare(&request).unwrap()).0;
    assert_ne!(
        first.seed, other.seed,
        "each unseeded request draws its own seed"
    );
    request.params.seed = Some(first.seed);
    let again = run(&g, &g.prepare(&request).unwrap()).0;
    assert_eq!(again.ids, first.ids);
    assert_eq!(again.seed, first.seed);
}

#[test]
fn a_cancelled_prefill_stops_within_one_chunk_and_the_session_stays_usable() {
    let g = generator("bf16");
    let r = &reference("bf16")["prompts"][3];
    let prompt = ids(&r["input_ids"]);
    assert!(prompt.len() > 64, "a prompt of several chunks");
    let p = g.prepare(&greedy(Prompt::Ids(prompt.clone()), 32)).unwrap();
    let mut chat = g.session();
    chat.set_prefill_chunk(16);
    let cancel = CancelToken::new();
    let mut chunks = 0;
    let finish = chat
        .generate(&p, &cancel, |e| {
            if let Event::Prefill { done, .. } = e {
                chunks += 1;
                assert_eq!(done, 16 * chunks, "progress after every chunk");
                if chunks == 2 {
                    cancel.cancel();
                }
            }
        })
        .unwrap();
    assert_eq!(finish.cause, StopCause::Cancelled);
    assert_eq!(finish.reason().as_str(), "cancelled");
    assert!(finish.ids.is_empty());
    assert_eq!(chunks, 2, "nothing ran after the chunk that saw the cancel");
    assert_eq!(chat.session().position(), 32);

    cancel.reset();
    let finish = chat.generate(&p, &cancel, |_| {}).unwrap();
    assert_eq!(
        finish.usage.cached_tokens, 32,
        "the chunks that ran are reused"
    );
    assert_eq!(
        finish.ids,
        ids(&r["greedy_ids"]),
        "and the answer is the reference's"
    );
}

#[test]
fn one_generator_serves_threads_and_batches_with_the_same_answers() {
    let g = generator("bf16");
    let r = reference("bf16");
    let prepared: Vec<Prepared> = (0..3)
        .map(|i| {
            let prompt = ids(&r["prompts"][i]["input_ids"]);
            g.prepare(&greedy(Prompt::Ids(prompt), 32)).unwrap()
        })
        .collect();
    let want: Vec<Vec<u32>> = (0..3)
        .map(|i| ids(&r["prompts"][i]["greedy_ids"]))
        .collect();
    // Sessions that own their model handle run on threads of their own.
    let answers: Vec<Vec<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = prepared
            .iter()
            .map(|p| {
                let g = g.clone();
                s.spawn(move || run(&g, p).0.ids)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers, want);
    let mut streamed = vec![Vec::new(); 3];
    let finishes = g
        .run_batch(
            &prepared,
            &EngineOptions::default(),
            &CancelToken::new(),
            |i, e| {
                if let Event::Token { id, .. } = e {
                    streamed[i].push(id);
                }
            },
        )
        .unwrap();
    for (i, f) in finishes.iter().enumerate() {
        assert_eq!(f.ids, want[i], "batch request {i}");
        assert_eq!(streamed[i], want[i], "batch request {i}: streamed");
        assert_eq!(f.seed, prepared[i].settings.sampling.seed);
    }
}

#[test]
fn continuous_batching_gives_each_request_its_own_greedy_answer() {
    use nano_infer_generate::Batcher;
    use std::sync::{Arc, Mutex};
    let g = generator("bf16");
    let r = reference("bf16");
    let n = r["prompts"].as_array().unwrap().len();
    let prepared: Vec<Prepared> = (0..n)
        .map(|i| {
            let prompt = ids(&r["prompts"][i]["input_ids"]);
            g.prepare(&greedy(Prompt::Ids(prompt), 32)).unwrap()
        })
        .collect();
    let events: Vec<Arc<Mutex<Vec<Event>>>> = (0..n).map(|_| Arc::default()).collect();
    let options = EngineOptions {
        max_batch: 3,
        ..EngineOptions::default()
    };
    // 16-token chunks: the long prompts are fed over several steps, beside running decodes.
    let mut batcher = Batcher::new(&g, &options, 16).unwrap();
    let cancel_last = CancelToken::new();
    let mut submitted = 0;
    let mut steps = 0;
    while submitted < n || batcher.has_work() {
        // Requests join while others run: one every other step.
        if submitted < n && steps % 2 == 0 {
            let sink = Arc::clone(&events[submitted]);
            let cancel = if submitted == n - 1 {
                cancel_last.clone()
            } else {
                CancelToken::new()
            };
            batcher.submit(
                prepared[submitted].clone(),
                cancel,
                Box::new(move |e| sink.lock().unwrap().push(e)),
            );
            submitted += 1;
        }
        if steps == 40 {
            cancel_last.cancel();
        }
        batcher.step().unwrap();
        steps += 1;
        assert!(steps < 10_000, "the batch ends");
    }
    for i in 0..n {
        let events = events[i].lock().unwrap();
        let Some(Event::Finished(f)) = events.last() else {
            panic!("request {i} ended with {:?}", events.last())
        };
        if i == n - 1 {
            assert_eq!(f.reason().as_str(), "cancelled", "the cancelled request");
            let want = ids(&r["prompts"][i]["greedy_ids"]);
            assert!(
                want.starts_with(&f.ids),
                "what it generated before the cancel is right"
            );
            continue;
        }
        assert_eq!(f.ids, ids(&r["prompts"][i]["greedy_ids"]), "request {i}");
        let streamed: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                Event::Token { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(streamed, f.ids, "request {i}: streamed tokens");
        assert_eq!(f.usage.prompt_tokens, prepared[i].ids.len());
    }
    // Every sequence released its blocks: what is left is the prefix cache's.
    let stats = batcher.stats();
    assert_eq!((stats.running, stats.waiting), (0, 0));
    assert!(stats.blocks_used <= stats.blocks_total);
}

#[test]
fn a_text_too_long_for_the_context_is_refused_before_it_is_tokenized() {
    use nano_infer_generate::{GenerateError, TextCodec};
    let codec = TextCodec::from_dir(fixture("bf16_fullvocab"))
        .unwrap()
        .unwrap();
    // A megabyte of text cannot be 16 tokens whatever the vocabulary's longest token is.
    let text = "word ".repeat(200_000);
    // The variant is the pre-check's own: the tokenizer never saw the text.
    match codec.encode(&text, 16) {
        Err(GenerateError::PromptTextTooLong {
            bytes,
            min_tokens,
            ctx,
        }) => {
            assert_eq!((bytes, ctx), (text.len(), 16));
            assert!(min_tokens > 16);
        }
        other => panic!("expected PromptTextTooLong, got {other:?}"),
    }
    // A text that may fit is tokenized as usual.
    assert!(!codec.encode("Hello world", 16).unwrap().is_empty());
}
