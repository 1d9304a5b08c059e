"""kernels.llm_engine: tokenizer and template, the sampling order, the JSON grammar, the engine's API semantics
(streamed == non-streamed, seeds, max_tokens, stop, logit_bias, n, usage, JSON mode, multi-round reuse, logit
processors, interrupts), the engine in a worker, and the HTTP server driven by the official openai client,
including bad input and a client that disconnects."""

import http.client
import json
import socket
import time
from urllib.parse import urlparse

import jsonschema
import openai
import pytest
import torch
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from kernels.llm_engine import (ChatTokenizer, GrammarMatcher, JSONGrammar, MLCEngine, ModelSpec, RequestError,
                                WorkerEngine, edit_logits, parse_request, sample_token, serve_openai)
from kernels.transformer import TinyLlama

TOK = ChatTokenizer()
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 6},
    "color": {"enum": ["blue", "cyan", "gold"]},
    "count": {"type": "integer", "minimum": 1, "maximum": 9},
    "ok": {"type": "boolean"}}}


def make_model(seed=0, dim=32, layers=2):
    torch.manual_seed(seed)
    return TinyLlama(len(TOK), dim, layers, 4, hidden=64).eval()


def make_engine(context=64, chunk=8, seed=0, **kw):
    return MLCEngine({"tiny": ModelSpec(make_model(seed), TOK, context, chunk)}, **kw)


MSGS = [{"role": "user", "content": "what color is the zorb?"}]
NO_END = {str(i): -100 for i in range(5)}       # no special token: the reply runs to max_tokens


def text(c):
    return c.choices[0].message.content


def streamed(chunks):
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --- tokenizer --------------------------------------------------------------------------------------------------

def test_tokenizer_round_trip_and_template():
    s = 'hi! {"a":1} ~'
    assert TOK.decode(TOK.encode(s)) == s
    ids = TOK.render([{"role": "system", "content": "x"}, {"role": "user", "content": "ab"}])
    assert ids == [TOK.system, TOK.encode("x")[0], TOK.end, TOK.user, *TOK.encode("ab"), TOK.end, TOK.assistant]
    assert len(TOK) == 100
    with pytest.raises(ValueError, match="text"):
        TOK.encode("café")


# --- sampling ---------------------------------------------------------------------------------------------------

def test_temperature_zero_is_argmax_after_the_edits():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])
    g = torch.Generator().manual_seed(0)
    assert sample_token(logits, g, temperature=0) == 1
    assert sample_token(logits, g, temperature=0, logit_bias={2: 1.5}) == 2
    assert sample_token(logits, g, temperature=0, mask=torch.tensor([True, False, False, True])) == 0


def test_mask_comes_before_the_processor_and_the_bias():
    seen = []

    class Spy:
        def process_logits(self, x):
            seen.append(x.clone())
            return x

    logits = torch.tensor([5.0, 0.0, 1.0])
    g = torch.Generator().manual_seed(0)
    tok = sample_token(logits, g, temperature=0, mask=torch.tensor([False, True, True]), logit_bias={0: 100.0, 1: 50.0},
                       processor=Spy())
    assert tok == 1                                 # bias cannot revive a masked token; it can promote an allowed one
    assert seen[0][0] == float("-inf") and seen[0][1] == 0.0   # the processor saw the mask, not yet the bias


def test_penalties_follow_the_openai_and_ctrl_formulas():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    pres, freq, rep = 0.5, 0.25, 2.0
    counts = torch.tensor([2.0, 1.0, 0.0, 0.0])                    # tokens 0, 0, 1 generated so far
    expect = logits - pres * (counts > 0) - freq * counts
    expect = torch.where(counts > 0, torch.where(expect > 0, expect / rep, expect * rep), expect)
    got = edit_logits(logits, generated=[0, 1, 0], presence_penalty=pres, frequency_penalty=freq,
                      repetition_penalty=rep)
    torch.testing.assert_close(got, expect)
    assert torch.equal(edit_logits(logits), logits)


def test_top_p_keeps_the_smallest_prefix_reaching_the_mass_and_draws_follow_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(1)
    draws = [sample_token(logits, g, top_p=0.7) for _ in range(3000)]
    assert set(draws) == {0, 1}                     # 0.5 < 0.7 <= 0.8: two tokens kept
    assert abs(draws.count(0) / 3000 - 0.5 / 0.8) < 0.03
    full = [sample_token(logits, g) for _ in range(4000)]
    for tok, p in enumerate([0.5, 0.3, 0.15, 0.05]):
        assert abs(full.count(tok) / 4000 - p) < 0.03


def test_same_seed_same_tokens():
    logits = torch.randn(50)
    a = [sample_token(logits, g, temperature=1.3) for g in [torch.Generator().manual_seed(7)] for _ in range(20)]
    b = [sample_token(logits, g, temperature=1.3) for g in [torch.Generator().manual_seed(7)] for _ in range(20)]
    assert a == b


@pytest.mark.parametrize("call, match", [
    (lambda: sample_token(torch.zeros(2, 3), torch.Generator()), "logits"),
    (lambda: sample_token(torch.zeros(3), torch.Generator(), mask=torch.ones(4, dtype=torch.bool)), "mask"),
    (lambda: sample_token(torch.zeros(3), torch.Generator(), mask=torch.zeros(3, dtype=torch.bool)), "mask"),
])
def test_sampling_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- the JSON grammar -------------------------------------------------------------------------------------------

def walk(grammar, g, steps=400):
    """A random walk through the grammar's allowed characters until it may end (then it ends with prob. 1/2)."""
    chars = [chr(i) for i in range(32, 127)]
    state, out = grammar.start, ""
    for _ in range(steps):
        if grammar.complete(state) and (torch.rand((), generator=g) < 0.5 or not out):
            if out:
                return out
        allowed = [c for c in chars if grammar.step(state, c) is not None]
        assert allowed or grammar.complete(state), f"dead end after {out!r}"
        if not allowed:
            return out
        c = allowed[int(torch.randint(len(allowed), (), generator=g))]
        state = grammar.step(state, c)
        out += c
    return None


def test_schema_walks_always_end_in_valid_documents():
    grammar = JSONGrammar(SCHEMA)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        doc = walk(grammar, g)
        assert doc is not None
        value = json.loads(doc)
        jsonschema.validate(value, SCHEMA)
        assert list(value) == ["name", "color", "count", "ok"]


def test_any_object_grammar_agrees_with_json_loads():
    grammar = JSONGrammar(None)
    g = torch.Generator().manual_seed(1)
    ended = 0
    for _ in range(200):
        doc = walk(grammar, g, steps=60)
        if doc is not None:
            ended += 1
            assert isinstance(json.loads(doc), dict)
    assert ended > 20
    for doc in ['{}', '{"a":[1,-2.5e3,"x",true,null,{"b":[]}]}', '{"":0}']:
        assert grammar.accepts(doc)
    for doc in ['[]', '{"a":01}', '{"a":1,}', '{a:1}', '{"a":1', '{"a":tru}', '{"a":-}', '{"a":1.}', '"x"']:
        assert not grammar.accepts(doc)


def test_integer_bounds_accept_exactly_the_range():
    grammar = JSONGrammar({"type": "integer", "minimum": 3, "maximum": 120})
    accepted = {s for s in [str(i) for i in range(1000)] + ["-1", "007", "03", "-0"] if grammar.accepts(s)}
    assert accepted == {str(i) for i in range(3, 121)}
    neg = JSONGrammar({"type": "integer", "minimum": -5, "maximum": 2})
    assert {s for s in [str(i) for i in range(-9, 10)] if neg.accepts(s)} == {str(i) for i in range(-5, 3)}


@pytest.mark.parametrize("schema, match", [
    ({"type": "string", "pattern": "a+"}, "not supported"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": []}, "required"),
    ({"anyOf": []}, "not supported"),
    ({"type": "tuple"}, "type"),
    ({"enum": []}, "enum"),
])
def test_unsupported_schemas_are_refused(schema, match):
    with pytest.raises(ValueError, match=match):
        JSONGrammar(schema)


def test_matcher_mask_allows_end_only_when_complete():
    m = GrammarMatcher(JSONGrammar({"type": "object", "properties": {"n": {"type": "integer"}}}), TOK)
    for c in '{"n":4':
        assert not bool(m.mask()[TOK.end])
        m.accept(TOK.encode(c)[0])
    m.accept(TOK.encode("}")[0])
    mask = m.mask()
    assert bool(mask[TOK.end]) and int(mask.sum()) == 1


# --- the engine -------------------------------------------------------------------------------------------------

def test_engine_logits_equal_recomputing_the_whole_sequence():
    eng = make_engine(chunk=5)
    pipe = eng.pipelines["tiny"]
    prompt = TOK.render(MSGS)
    last = pipe.prefill(prompt)                     # chunked: 5 tokens at a time
    seq = list(prompt)
    logits_cached = [last]
    for _ in range(10):
        tok = int(last.argmax())
        seq.append(tok)
        last = pipe.decode(tok)
        logits_cached.append(last)
    with torch.no_grad():
        full = pipe.model(torch.tensor([seq]))[0, len(prompt) - 1:]
    torch.testing.assert_close(torch.stack(logits_cached), full, rtol=1e-5, atol=1e-5)


def test_greedy_reply_equals_decoding_without_a_cache():
    from kernels.transformer import generate_greedy

    for seed in range(3):
        eng = make_engine(seed=seed)
        r = eng.chat.completions.create(messages=MSGS, temperature=0, max_tokens=20)
        prompt = TOK.render(MSGS)
        ids = generate_greedy(eng.pipelines["tiny"].model, torch.tensor([prompt]), 20, cache="none")[0, len(prompt):]
        ids = ids.tolist()
        cut = next((i for i, t in enumerate(ids) if not TOK.is_text(t)), len(ids))   # a special token ends it
        assert text(r) == TOK.decode(ids[:cut])
        assert r.choices[0].finish_reason == ("stop" if cut < 20 else "length")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("stop", [[], ["e"], ["ab", "x y"]])
def test_streamed_equals_non_streamed(seed, stop):
    eng = make_engine()
    kw = dict(messages=MSGS, seed=seed, temperature=1.0, max_tokens=30, stop=stop or None)
    whole = eng.chat.completions.create(**kw)
    chunks = list(eng.chat.completions.create(stream=True, **kw))
    assert streamed(chunks) == text(whole)
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks) and isinstance(whole, ChatCompletion)
    assert chunks[0].choices[0].delta.role == "assistant"


def test_same_seed_same_text_other_seeds_other_text():
    eng = make_engine()
    outs = [text(eng.chat.completions.create(messages=MSGS, seed=s, max_tokens=30)) for s in (5, 5, 6, 7, 8)]
    assert outs[0] == outs[1]
    assert len(set(outs[1:])) == 4


def test_max_tokens_gives_length():
    eng = make_engine()
    r = eng.chat.completions.create(messages=MSGS, seed=0, max_tokens=5, logit_bias=NO_END)
    assert r.choices[0].finish_reason == "length" and len(text(r)) == 5 and r.usage.completion_tokens == 5


def test_a_full_cache_gives_length():
    eng = make_engine(context=40)
    r = eng.chat.completions.create(messages=MSGS, seed=0, logit_bias=NO_END)
    prompt = len(TOK.render(MSGS))
    assert r.choices[0].finish_reason == "length" and len(text(r)) == 40 - prompt + 1


def test_stop_string_truncates_at_its_first_occurrence():
    eng = make_engine()
    base = text(eng.chat.completions.create(messages=MSGS, seed=3, max_tokens=30, logit_bias=NO_END))
    stop = base[10:12]
    r = eng.chat.completions.create(messages=MSGS, seed=3, max_tokens=30, stop=stop, logit_bias=NO_END)
    assert text(r) == base[:base.find(stop)] and r.choices[0].finish_reason == "stop"


def test_logit_bias_minus_100_bans_a_token():
    eng = make_engine()
    greedy = text(eng.chat.completions.create(messages=MSGS, temperature=0, max_tokens=20, logit_bias=NO_END))
    banned = TOK.encode(greedy[0])[0]
    for seed in range(5):
        r = eng.chat.completions.create(messages=MSGS, seed=seed, max_tokens=20,
                                        logit_bias={str(banned): -100, **NO_END})
        assert greedy[0] not in text(r)


def test_n_choices_and_n_with_stream_refused():
    eng = make_engine()
    r = eng.chat.completions.create(messages=MSGS, seed=1, n=3, max_tokens=8)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r == r.model_validate(r.model_dump())
    again = eng.chat.completions.create(messages=MSGS, seed=1, n=3, max_tokens=8)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]
    with pytest.raises(RequestError) as err:
        eng.chat.completions.create(messages=MSGS, n=2, stream=True)
    assert err.value.status == 400 and err.value.param == "n"


def test_usage_chunk_comes_last_and_counts_the_streamed_tokens():
    eng = make_engine()
    chunks = list(eng.chat.completions.create(messages=MSGS, seed=2, max_tokens=25, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(streamed(chunks))
    assert chunks[-1].usage.prompt_tokens == len(TOK.render(MSGS))
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize("fmt", [{"type": "json_object", "schema": SCHEMA},
                                 {"type": "json_schema", "json_schema": {"name": "fact", "schema": SCHEMA}}])
def test_json_mode_outputs_parse_and_validate_every_time(fmt):
    eng = make_engine(context=128)
    for seed in range(50):
        r = eng.chat.completions.create(messages=MSGS, seed=seed, temperature=1.0, response_format=fmt)
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(text(r)), SCHEMA)


def test_json_object_without_schema_gives_objects():
    eng = make_engine(context=128)
    done = 0
    for seed in range(20):
        r = eng.chat.completions.create(messages=MSGS, seed=seed, response_format={"type": "json_object"})
        if r.choices[0].finish_reason == "stop":
            done += 1
            assert isinstance(json.loads(text(r)), dict)
    assert done >= 10


def test_over_long_prompt_is_refused():
    eng = make_engine(context=32)
    with pytest.raises(RequestError) as err:
        eng.chat.completions.create(messages=[{"role": "user", "content": "x" * 40}])
    assert err.value.status == 400 and err.value.code == "context_length_exceeded"


def test_multi_round_reuses_the_cache_only_on_an_exact_prefix():
    eng, fresh = make_engine(context=128), make_engine(context=128)
    first = eng.chat.completions.create(messages=MSGS, seed=0, max_tokens=6, logit_bias=NO_END)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    turn2 = MSGS + [{"role": "assistant", "content": text(first)}, {"role": "user", "content": "and the city?"}]
    second = eng.chat.completions.create(messages=turn2, seed=4, max_tokens=10)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached == len(TOK.render(MSGS)) + 6 - 1     # the prompt and the reply but its last token, never fed
    assert eng.pipelines["tiny"].last["prefilled_tokens"] == len(TOK.render(turn2)) - cached
    assert text(second) == text(fresh.chat.completions.create(messages=turn2, seed=4, max_tokens=10))
    edited = [dict(turn2[0], content="what color is the zorp?")] + turn2[1:]
    third = eng.chat.completions.create(messages=edited, seed=4, max_tokens=10)
    assert third.usage.prompt_tokens_details.cached_tokens == 0


def test_logit_processor_runs_in_the_engine_and_can_interrupt():
    class BanAndCount:
        def __init__(self):
            self.sampled, self.resets, self.engine = [], 0, None

        def process_logits(self, x):
            x[TOK.encode("a")[0]] = float("-inf")
            return x

        def process_sampled_token(self, t):
            self.sampled.append(t)
            if len(self.sampled) == 3 and self.engine is not None:
                self.engine.interrupt_generate()

        def reset_state(self):
            self.resets += 1

    proc = BanAndCount()
    eng = make_engine(logit_processors={"tiny": proc})
    r = eng.chat.completions.create(messages=MSGS, seed=0, max_tokens=30, n=2, logit_bias=NO_END)
    assert proc.resets == 2 and all("a" not in c.message.content for c in r.choices)
    proc.engine, proc.sampled = eng, []
    r = eng.chat.completions.create(messages=MSGS, seed=0, max_tokens=30, logit_bias=NO_END)
    assert r.choices[0].finish_reason == "abort" and len(text(r)) == 3


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": MSGS, "max_tokens": "5"}, "max_tokens"),
    ({"messages": MSGS, "max_tokens": 0}, "max_tokens"),
    ({"messages": MSGS, "temperature": "hot"}, "temperature"),
    ({"messages": MSGS, "temperature": 3}, "temperature"),
    ({"messages": MSGS, "stream": "yes"}, "stream"),
    ({"messages": MSGS, "seed": 1.5}, "seed"),
    ({"messages": MSGS, "stop": 3}, "stop"),
    ({"messages": MSGS, "logit_bias": {"x": 1}}, "logit_bias"),
    ({"messages": MSGS, "logit_bias": {"5": 200}}, "logit_bias"),
    ({"messages": MSGS, "logit_bias": {"100": 1}}, "logit_bias"),
    ({"messages": MSGS, "n": 2, "stream": True}, "n"),
    ({"messages": MSGS, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": MSGS, "response_format": {"type": "xml"}}, "response_format"),
    ({"messages": MSGS, "response_format": {"type": "json_object", "schema": {"type": "string", "pattern": "a"}}},
     "response_format"),
    ({"messages": MSGS, "tools": [{"type": "function"}]}, "tools"),
    ({"messages": MSGS, "colour": "red"}, "colour"),
])
def test_bad_requests_name_the_field(body, param):
    with pytest.raises(RequestError) as err:
        parse_request(body, vocab_size=len(TOK))
    assert err.value.status == 400 and err.value.param == param
    assert set(err.value.body()["error"]) == {"message", "type", "param", "code"}


def test_unknown_model_is_404_and_bad_specs_are_refused():
    eng = make_engine()
    with pytest.raises(RequestError) as err:
        eng.chat.completions.create(messages=MSGS, model="gpt-9")
    assert err.value.status == 404 and err.value.code == "model_not_found"
    with pytest.raises(ValueError, match="models"):
        MLCEngine({})
    with pytest.raises(ValueError, match="context_window"):
        MLCEngine({"m": ModelSpec(make_model(), TOK, 1)})


# --- the engine in a worker --------------------------------------------------------------------------------------

def test_worker_engine_answers_as_the_engine_and_passes_only_json():
    eng = make_engine()
    worker = WorkerEngine(lambda: make_engine())
    try:
        kw = dict(messages=MSGS, seed=9, max_tokens=12)
        assert text(worker.chat.completions.create(**kw)) == text(eng.chat.completions.create(**kw))
        chunks = list(worker.chat.completions.create(stream=True, **kw))
        assert streamed(chunks) == text(eng.chat.completions.create(**kw))
        assert worker.messages[:2] == ["reload", "chatCompletionNonStreaming"]
        assert worker.messages.count("completionStreamNextChunk") == len(chunks) + 1   # pulled, one per chunk
        with pytest.raises(RequestError) as err:
            worker.chat.completions.create(messages=MSGS, n=2, stream=True)
        assert err.value.param == "n"
        stream = worker.chat.completions.create(stream=True, **kw)
        next(stream)
        stream.close()                                 # an abandoned stream is closed in the worker
        assert worker.messages[-1] == "completionStreamClose"
        assert text(worker.chat.completions.create(**kw)) == text(eng.chat.completions.create(**kw))
    finally:
        worker.close()


# --- the HTTP server ---------------------------------------------------------------------------------------------

def post(base, body: bytes, headers=None):
    u = urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", u.path + "/chat/completions", body=body, headers=headers or {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, r.getheader("Content-Type"), data


def test_official_client_completes_both_call_kinds():
    eng = make_engine()
    with serve_openai(eng) as base:
        client = openai.OpenAI(base_url=base, api_key="local", max_retries=0)
        r = client.chat.completions.create(model="tiny", messages=MSGS, seed=3, max_tokens=15)
        s = client.chat.completions.create(model="tiny", messages=MSGS, seed=3, max_tokens=15, stream=True,
                                           stream_options={"include_usage": True})
        chunks = list(s)
        models = client.models.list()
    direct = text(eng.chat.completions.create(messages=MSGS, seed=3, max_tokens=15))
    assert isinstance(r, ChatCompletion) and text(r) == direct
    assert streamed(chunks) == direct and chunks[-1].usage.completion_tokens == len(direct)
    assert [m.id for m in models.data] == ["tiny"]


@pytest.mark.parametrize("raw, status, param", [
    (b'{"messages": [', 400, None),
    (b'[1, 2]', 400, None),
    (json.dumps({"messages": MSGS, "max_tokens": "many"}).encode(), 400, "max_tokens"),
    (json.dumps({"messages": MSGS, "n": 2, "stream": True}).encode(), 400, "n"),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 80}]}).encode(), 400, "messages"),
    (json.dumps({"messages": MSGS, "model": "other"}).encode(), 404, "model"),
    (json.dumps({"messages": [{"role": "user", "content": "naïve"}]}).encode(), 400, "messages"),
])
def test_bad_input_gets_an_openai_error_object_not_a_traceback(raw, status, param):
    with serve_openai(make_engine()) as base:
        got, ctype, data = post(base, raw)
    assert got == status and ctype == "application/json"
    err = json.loads(data)["error"]
    assert err["param"] == param and err["message"] and "Traceback" not in data.decode()


def test_client_errors_surface_in_the_official_client():
    with serve_openai(make_engine()) as base:
        client = openai.OpenAI(base_url=base, api_key="local", max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="tiny", messages=MSGS, n=2, stream=True)
        assert err.value.body["param"] == "n"
        u = urlparse(base)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request("POST", "/v1/nothing", body=b"{}", headers={"Content-Length": "2"})
        assert conn.getresponse().status == 404
        conn.close()
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.putrequest("POST", "/v1/chat/completions")
        conn.endheaders()
        assert conn.getresponse().status == 411
        conn.close()


def test_a_client_that_disconnects_stops_generation():
    eng = make_engine(context=512)
    pipe = eng.pipelines["tiny"]
    body = json.dumps({"messages": MSGS, "stream": True, "max_tokens": 480, "seed": 0,
                       "logit_bias": NO_END}).encode()
    with serve_openai(eng) as base:
        u = urlparse(base)
        sock = socket.create_connection((u.hostname, u.port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        got = b""
        while got.count(b"data: ") < 3:
            got += sock.recv(4096)
        sock.close()
        deadline = time.time() + 20
        while not pipe.last and time.time() < deadline:
            time.sleep(0.01)
        assert pipe.last["finish_reason"] == "disconnected"
        assert pipe.last["completion_tokens"] < 100
        client = openai.OpenAI(base_url=base, api_key="local", max_retries=0)   # the model's lock was released
        assert client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=3).choices[0].finish_reason
