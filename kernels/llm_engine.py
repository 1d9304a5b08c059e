"""An LLM engine with an OpenAI-style chat API, mirroring WebLLM's (Ruan et al., "WebLLM: A High-Performance
In-Browser LLM Inference Engine", arXiv 2412.15803; the design read from web-llm's ``engine.ts``,
``llm_chat.ts`` and ``web_worker.ts``), in Python around a ``kernels.transformer`` decoder.

The request path of ``engine.chat.completions.create`` (one model, one sequence, one lock per model):

1. validate the request (:func:`parse_request`; every error an OpenAI-style 4xx :class:`RequestError`);
2. multi-round reuse: if the conversation without its last message is exactly the one whose tokens the KV cache
   holds, prefill only the new tokens; otherwise reset the cache and prefill everything;
3. chunked prefill: the prompt goes through the model ``prefill_chunk_size`` tokens at a time, each chunk's keys
   and values written into a static KV cache (``kernels.transformer.StaticKVCache``);
4. decode: sample a token from the last logits (:func:`sample_token`, in WebLLM's order, Eq. 1-6 below), stop on
   ``<|end|>`` (or another special token) or a stop string ("stop"), at ``max_tokens`` or a full cache ("length"), or when interrupted
   ("abort"); otherwise feed the token back (one position of the cache) and repeat;
5. answer with ``openai`` package objects (``ChatCompletion``, or ``ChatCompletionChunk`` deltas when streaming),
   the usage last.

Sampling one token from logits l (``sampleTokenFromLogits``), with counts c_i of tokens generated so far:

    l_i <- -inf for tokens the grammar forbids (JSON mode)                                        (Eq. 1)
    l <- processor.process_logits(l)       (a user's logit processor, registered where the engine runs)
    l_i <- l_i + b_i                       (logit_bias)                                            (Eq. 2)
    l_i <- l_i - a_pres [c_i > 0] - a_freq c_i;  l_i <- l_i / r if l_i > 0 else l_i * r  (c_i > 0)   (Eq. 3)
    p = softmax(l / tau)                   (tau = 0: argmax)                                       (Eq. 4)
    keep the most likely tokens until their mass reaches top_p, renormalise                        (Eq. 5)
    draw u ~ U(0, 1) from the request's seeded generator; the token where the cumulative mass passes u  (Eq. 6)

JSON mode (``response_format``) is constrained decoding: :class:`JSONGrammar` is a character-level pushdown
automaton for JSON, or for the subset of JSON Schema listed in its docstring, and its mask (Eq. 1) lets through
only characters that keep the output a prefix of a valid document, and ``<|end|>`` only once it is complete.

Around the engine: :class:`WorkerEngine` runs it in a worker thread behind ``postMessage``-style messages
(``{kind, uuid, content}``, JSON only, streaming pulled one chunk per message), as WebLLM's ``WebWorkerMLCEngine``
does; :func:`serve_openai` is a standard-library HTTP server on 127.0.0.1 speaking ``/v1/chat/completions``
(Server-Sent Events when streaming) to the official ``openai`` client.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import itertools
import json
import math
import queue
import secrets
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import torch
from torch import Tensor, nn

from kernels._validate import check_int
from kernels._http import serve_in_thread

# --- tokenizer and chat template ------------------------------------------------------------------------------

SPECIAL_TOKENS = ("<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")


class ChatTokenizer:
    """Characters as tokens: five special tokens, then the 95 printable ASCII characters (ids 5..99).

    Chat template: ``<|role|>content<|end|>`` per message, then ``<|assistant|>`` to ask for a reply.
    """

    def __init__(self) -> None:
        self.vocab = list(SPECIAL_TOKENS) + [chr(i) for i in range(32, 127)]
        self.pad, self.system, self.user, self.assistant, self.end = range(len(SPECIAL_TOKENS))
        self._ids = {c: i for i, c in enumerate(self.vocab) if i >= len(SPECIAL_TOKENS)}
        self.role_token = {"system": self.system, "developer": self.system, "user": self.user,
                           "assistant": self.assistant}

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, received {type(text).__name__}")
        bad = sorted({c for c in text if c not in self._ids})
        if bad:
            raise ValueError(f"text: characters outside the vocabulary (printable ASCII): {bad[:5]!r}")
        return [self._ids[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the character tokens; special tokens are dropped."""
        return "".join(self.vocab[i] for i in ids if i >= len(SPECIAL_TOKENS))

    def is_text(self, token: int) -> bool:
        return token >= len(SPECIAL_TOKENS)

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """The chat template: token ids of ``messages`` ([{"role", "content"}, ...])."""
        ids: list[int] = []
        for m in messages:
            if m["role"] not in self.role_token:
                raise ValueError(f"messages: expected roles {sorted(self.role_token)}, received {m['role']!r}")
            ids += [self.role_token[m["role"]]] + self.encode(m["content"]) + [self.end]
        return ids + [self.assistant] if add_generation_prompt else ids


# --- errors and request validation ----------------------------------------------------------------------------

class RequestError(Exception):
    """An OpenAI-style API error: HTTP status, message, and the ``param``/``code``/``type`` of the error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    """A validated ``/v1/chat/completions`` request (the fields this engine implements)."""

    messages: list[dict[str, str]]
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    response_format: dict[str, Any] | None = None


_KNOWN = {"messages", "model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "stop", "n",
          "seed", "temperature", "top_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
          "logit_bias", "response_format", "user"}
_UNSUPPORTED = {"tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs", "audio",
                "modalities", "prediction", "parallel_tool_calls"}


def _bad(param: str, message: str, code: str | None = None) -> RequestError:
    return RequestError(400, f"{param}: {message}", param=param, code=code)


def _number(body: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(key, f"expected a number, received {json.dumps(v)}", "invalid_type")
    if not lo <= v <= hi:
        raise _bad(key, f"expected a number in [{lo:g}, {hi:g}], received {v}", "invalid_value")
    return float(v)


def _integer(body: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(key, f"expected an integer, received {json.dumps(v)}", "invalid_type")
    if v < lo or (hi is not None and v > hi):
        raise _bad(key, f"expected an integer in [{lo}, {hi if hi is not None else 'inf'}], received {v}",
                   "invalid_value")
    return v


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):   # [{"type": "text", "text": ...}]
        if all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            return "".join(p["text"] for p in content)
    raise _bad(where, "expected a string (or a list of text parts)", "invalid_type")


def parse_request(body: Any, vocab_size: int | None = None) -> ChatRequest:
    """Validate a request body (a decoded JSON object) and return it as a :class:`ChatRequest`.

    Raises :class:`RequestError` (400) naming the field for anything else: unknown or unsupported fields,
    wrong types, values out of range, ``n > 1`` with ``stream``, token ids in ``logit_bias`` outside the
    vocabulary (when ``vocab_size`` is given)."""
    if not isinstance(body, dict):
        raise RequestError(400, f"the request body must be a JSON object, received {type(body).__name__}")
    unknown = sorted(set(body) - _KNOWN - _UNSUPPORTED)
    if unknown:
        raise _bad(unknown[0], f"unrecognized request argument supplied: {unknown[0]}", "unknown_parameter")
    unsupported = sorted(k for k in set(body) & _UNSUPPORTED if body[k] not in (None, False, [], {}))
    if unsupported:
        raise _bad(unsupported[0], "not supported by this engine", "unsupported_parameter")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("messages", "expected a non-empty array of messages", "invalid_type")
    messages = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad(f"messages[{i}]", "expected an object with a string 'role'", "invalid_type")
        if m["role"] not in ("system", "developer", "user", "assistant"):
            raise _bad(f"messages[{i}].role", f"expected system, developer, user or assistant, received {m['role']!r}",
                       "invalid_value")
        messages.append({"role": m["role"], "content": _content_text(m.get("content"), f"messages[{i}].content")})
    if messages[-1]["role"] != "user":
        raise _bad(f"messages[{len(messages) - 1}].role", "the last message must come from the user", "invalid_value")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", f"expected a string, received {json.dumps(model)}", "invalid_type")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", f"expected a boolean, received {json.dumps(stream)}", "invalid_type")
    stream = bool(stream)
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not isinstance(opts, dict) or not isinstance(opts.get("include_usage", False), bool):
            raise _bad("stream_options", "expected an object {\"include_usage\": boolean}", "invalid_type")
        if not stream:
            raise _bad("stream_options", "only allowed when stream is true", "invalid_value")
        include_usage = opts.get("include_usage", False)
    max_tokens = _integer(body, "max_tokens", 1)
    mct = _integer(body, "max_completion_tokens", 1)
    max_tokens = mct if max_tokens is None else max_tokens
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise _bad("stop", "expected a non-empty string or up to 4 of them", "invalid_type")
    n = _integer(body, "n", 1, 16)
    n = 1 if n is None else n
    if stream and n > 1:
        raise _bad("n", "n > 1 is not supported with stream=true (this engine streams one choice)", "invalid_value")
    seed = _integer(body, "seed", -2 ** 63, 2 ** 63 - 1)
    bias = body.get("logit_bias") or {}
    if not isinstance(bias, dict):
        raise _bad("logit_bias", "expected an object mapping token ids to biases", "invalid_type")
    logit_bias = {}
    for k, v in bias.items():
        try:
            tok = int(k)
        except (TypeError, ValueError):
            raise _bad("logit_bias", f"expected token ids as keys, received {k!r}", "invalid_type") from None
        if tok < 0 or (vocab_size is not None and tok >= vocab_size):
            raise _bad("logit_bias", f"token id {tok} is outside the vocabulary", "invalid_value")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not -100 <= v <= 100:
            raise _bad("logit_bias", f"expected biases in [-100, 100], received {json.dumps(v)}", "invalid_value")
        logit_bias[tok] = float(v)
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
            raise _bad("response_format", "expected {\"type\": \"text\" | \"json_object\" | \"json_schema\"}",
                       "invalid_value")
        if fmt["type"] == "text":
            fmt = None
        else:
            schema = fmt.get("schema") if fmt["type"] == "json_object" else (fmt.get("json_schema") or {}).get("schema")
            if fmt["type"] == "json_schema" and not isinstance(schema, dict):
                raise _bad("response_format", "json_schema needs {\"json_schema\": {\"schema\": {...}}}",
                           "invalid_value")
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except json.JSONDecodeError:
                    raise _bad("response_format", "schema is not valid JSON", "invalid_value") from None
            try:
                JSONGrammar(schema)
            except ValueError as exc:
                raise _bad("response_format", str(exc), "invalid_value") from None
            fmt = {"schema": schema}
    return ChatRequest(messages=messages, model=model, stream=stream, include_usage=include_usage,
                       max_tokens=max_tokens, stop=stop, n=n, seed=seed,
                       temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                       top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
                       presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
                       frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
                       repetition_penalty=_number(body, "repetition_penalty", 1.0, 1e-3, 10.0),
                       logit_bias=logit_bias, response_format=fmt)


# --- JSON mode: a character-level grammar ---------------------------------------------------------------------

_DIGITS = "0123456789"
_SUPPORTED_KEYS = {"type", "properties", "required", "items", "enum", "const", "minimum", "maximum", "minLength",
                   "maxLength", "additionalProperties", "title", "description", "$schema"}


def _compile(schema: Any) -> tuple:
    """A JSON Schema (the subset of :class:`JSONGrammar`) as a hashable node."""
    if schema is None or schema == {}:
        return ("any",)
    if not isinstance(schema, dict):
        raise ValueError(f"schema: expected an object, received {json.dumps(schema)}")
    extra = sorted(set(schema) - _SUPPORTED_KEYS)
    if extra:
        raise ValueError(f"schema: keywords not supported by this grammar: {extra}")
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list) or not values:
            raise ValueError("schema: enum must be a non-empty array")
        return ("oneof", tuple(json.dumps(v, separators=(",", ":")) for v in values))
    t = schema.get("type")
    if t == "object":
        props = schema.get("properties")
        if props is None:
            return ("object_any",)
        if not isinstance(props, dict):
            raise ValueError("schema: properties must be an object")
        required = schema.get("required", list(props))
        if sorted(required) != sorted(props):
            raise ValueError("schema: every property must be required (this grammar writes all of them, in order)")
        return ("object", tuple((k, _compile(v)) for k, v in props.items()))
    if t == "array":
        return ("array", _compile(schema.get("items")))
    if t == "string":
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        return ("string", lo, hi)
    if t == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if (lo is not None and not isinstance(lo, int)) or (hi is not None and not isinstance(hi, int)):
            raise ValueError("schema: integer bounds must be integers")
        return ("integer", lo, hi)
    if t == "number":
        return ("number",)
    if t == "boolean":
        return ("oneof", ("true", "false"))
    if t == "null":
        return ("oneof", ("null",))
    raise ValueError(f"schema: expected a type among object, array, string, integer, number, boolean, null, "
                     f"or an enum/const; received {json.dumps(schema)[:80]}")


def _int_state(text: str, lo: int | None, hi: int | None) -> tuple[bool, bool]:
    """(can ``text`` still grow into an integer in [lo, hi], is it one already)."""
    neg = text.startswith("-")
    body = text[1:] if neg else text
    if body and (not body.isdigit() or (len(body) > 1 and body[0] == "0")):
        return False, False
    if neg and lo is not None and lo >= 0:
        return False, False
    complete = bool(body) and (lo is None or int(text) >= lo) and (hi is None or int(text) <= hi)
    if not body:
        return True, False
    if body == "0":
        return complete, complete
    v = int(body)
    # extensions with k more digits cover [v 10^k, (v+1) 10^k - 1] (mirrored when negative)
    for k in range(0, 19):
        a, b = v * 10 ** k, (v + 1) * 10 ** k - 1
        if neg:
            a, b = -b, -a
        if (hi is None or a <= hi) and (lo is None or b >= lo):
            return True, complete
        if not neg and hi is not None and a > hi:
            break
        if neg and lo is not None and b < lo:
            break
    return False, complete


def _after_digits(text: str, i: int) -> int:
    """The position after the run of digits that starts at ``i``."""
    while i < len(text) and text[i] in _DIGITS:
        i += 1
    return i


def _number_state(text: str) -> tuple[bool, bool]:
    """(is ``text`` a prefix of a JSON number, is it a complete one): -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?"""
    i, n = 0, len(text)
    if i < n and text[i] == "-":
        i += 1
    if i == n:
        return True, False
    if text[i] == "0":
        i += 1
    elif text[i] in "123456789":
        i = _after_digits(text, i)
    else:
        return False, False
    for mark, sign in ((".", ""), ("eE", "+-")):              # the fraction, then the exponent
        if i < n and text[i] in mark:
            i += 1
            if i < n and text[i] in sign:
                i += 1
            if i == n:
                return True, False
            if text[i] not in _DIGITS:
                return False, False
            i = _after_digits(text, i)
    return i == n, i == n


class JSONGrammar:
    """A character-level pushdown automaton for JSON: any object (``schema=None``, OpenAI's ``json_object``), or
    documents valid under a subset of JSON Schema: ``type`` object (with ``properties``, every one required and
    written in the schema's order; without ``properties``, any object), array (``items``), string
    (``minLength``, ``maxLength``), integer (``minimum``, ``maximum``), number, boolean, null, and ``enum`` /
    ``const``. Output is compact: no whitespace between tokens, no escapes inside strings.

    A state is an immutable tuple (a stack of frames, top last); :meth:`step` returns the next state or None,
    :meth:`complete` says whether the document may end there. Any prefix the automaton accepts extends to a
    valid document, so decoding under its mask never gets stuck.
    """

    def __init__(self, schema: Any = None) -> None:
        root = _compile(schema)
        if schema is None:
            root = ("object_any",)
        self.root = root
        self.start = (("val", root),)

    def complete(self, state: tuple) -> bool:
        stack = list(state)
        while stack:
            top = stack.pop()
            if top[0] == "num" and _number_state(top[1])[1]:
                continue
            if top[0] == "int" and _int_state(top[3], top[1], top[2])[1]:
                continue
            if top[0] == "oneof" and top[2] in top[1]:
                continue
            return False
        return True

    @functools.lru_cache(maxsize=65536)
    def step(self, state: tuple, c: str) -> tuple | None:
        """The state after character ``c``, or None if ``c`` cannot come next."""
        stack = list(state)
        for _ in range(64):                       # a char can close several frames before one consumes it
            if not stack:
                return None
            top = stack.pop()
            kind = top[0]
            if kind == "lit":
                if c != top[1][0]:
                    return None
                if len(top[1]) > 1:
                    stack.append(("lit", top[1][1:]))
                return tuple(stack)
            if kind == "val":
                stack += self._expand(top[1], c)
                if stack and stack[-1] == ("reject",):
                    return None
                continue
            if kind == "str":
                _, lo, hi, count = top
                if c == '"':
                    return tuple(stack) if count >= lo else None
                if c == "\\" or ord(c) < 32 or (hi is not None and count >= hi):
                    return None
                stack.append(("str", lo, hi, count + 1))
                return tuple(stack)
            if kind == "oneof":
                _, options, prefix = top
                if any(o.startswith(prefix + c) for o in options):
                    stack.append(("oneof", options, prefix + c))
                    return tuple(stack)
                if prefix in options:
                    continue                      # complete: c belongs to the frame below
                return None
            if kind == "num":
                if _number_state(top[1] + c)[0]:
                    stack.append(("num", top[1] + c))
                    return tuple(stack)
                if _number_state(top[1])[1]:
                    continue
                return None
            if kind == "int":
                _, lo, hi, text = top
                if _int_state(text + c, lo, hi)[0]:
                    stack.append(("int", lo, hi, text + c))
                    return tuple(stack)
                if _int_state(text, lo, hi)[1]:
                    continue
                return None
            if kind == "obj":                     # any object: phase open / key / colon / after
                phase = top[1]
                if phase in ("open", "key") and c == '"':
                    stack += [("obj", "colon"), ("str", 0, None, 0)]
                    return tuple(stack)
                if phase in ("open", "after") and c == "}":
                    return tuple(stack)
                if phase == "colon" and c == ":":
                    stack += [("obj", "after"), ("val", ("any",))]
                    return tuple(stack)
                if phase == "after" and c == ",":
                    stack.append(("obj", "key"))
                    return tuple(stack)
                return None
            if kind == "arr":                     # phase open / after / next, items of one schema
                _, item, phase = top
                if phase in ("open", "after") and c == "]":
                    return tuple(stack)
                if phase == "after" and c == ",":
                    stack += [("arr", item, "after"), ("val", item)]
                    return tuple(stack)
                if phase == "open":
                    stack += [("arr", item, "after"), ("val", item)]
                    continue
                return None
            raise AssertionError(f"unknown frame {top!r}")
        return None

    @staticmethod
    def _expand(node: tuple, c: str) -> list[tuple]:
        """The frames a value of schema ``node`` becomes, given that its first character is ``c``."""
        kind = node[0]
        if kind == "any":
            if c == "{":
                return [("obj", "open"), ("lit", "{")]
            if c == "[":
                return [("arr", ("any",), "open"), ("lit", "[")]
            if c == '"':
                return [("str", 0, None, 0), ("lit", '"')]
            if c in "-" + _DIGITS:
                return [("num", "")]
            if c in "tfn":
                return [("oneof", ("true", "false", "null"), "")]
            return [("reject",)]
        if kind == "object_any":
            return [("obj", "open"), ("lit", "{")]
        if kind == "object":
            frames: list[tuple] = [("lit", "}")]
            for i, (key, sub) in reversed(list(enumerate(node[1]))):
                frames += [("val", sub), ("lit", ("{" if i == 0 else ",") + json.dumps(key) + ":")]
            if not node[1]:
                frames = [("lit", "{}")]
            return frames
        if kind == "array":
            return [("arr", node[1], "open"), ("lit", "[")]
        if kind == "string":
            return [("str", node[1], node[2], 0), ("lit", '"')]
        if kind == "integer":
            return [("int", node[1], node[2], "")]
        if kind == "number":
            return [("num", "")]
        if kind == "oneof":
            return [("oneof", node[1], "")]
        raise AssertionError(f"unknown schema node {node!r}")

    def accepts(self, text: str) -> bool:
        """Whether ``text`` is a complete document of this grammar."""
        state = self.start
        for c in text:
            state = self.step(state, c)
            if state is None:
                return False
        return self.complete(state)


class GrammarMatcher:
    """The grammar's state during one generation, and its token mask (Eq. 1) over a :class:`ChatTokenizer`."""

    def __init__(self, grammar: JSONGrammar, tokenizer: ChatTokenizer) -> None:
        self.grammar, self.tokenizer = grammar, tokenizer
        self.state: tuple | None = grammar.start

    def mask(self) -> Tensor:
        """Bool [vocab]: True where the token may come next."""
        allowed = torch.zeros(len(self.tokenizer), dtype=torch.bool)
        if self.state is None:
            return allowed
        for i in range(len(SPECIAL_TOKENS), len(self.tokenizer)):
            if self.grammar.step(self.state, self.tokenizer.vocab[i]) is not None:
                allowed[i] = True
        allowed[self.tokenizer.end] = self.grammar.complete(self.state)
        return allowed

    def accept(self, token: int) -> None:
        if token == self.tokenizer.end:
            if not self.grammar.complete(self.state):
                raise RuntimeError("grammar: <|end|> before the document is complete")
            self.state = None
            return
        nxt = self.grammar.step(self.state, self.tokenizer.vocab[token]) if self.state is not None else None
        if nxt is None:
            raise RuntimeError(f"grammar: token {self.tokenizer.vocab[token]!r} rejected")
        self.state = nxt


# --- sampling ---------------------------------------------------------------------------------------------------

class LogitProcessor(Protocol):
    """WebLLM's ``LogitProcessor``: registered per model where the engine runs (functions cannot cross the worker
    boundary), called on every token."""

    def process_logits(self, logits: Tensor) -> Tensor: ...

    def process_sampled_token(self, token: int) -> None: ...

    def reset_state(self) -> None: ...


def edit_logits(logits: Tensor, *, generated: Sequence[int] = (), logit_bias: Mapping[int, float] | None = None,
                presence_penalty: float = 0.0, frequency_penalty: float = 0.0, repetition_penalty: float = 1.0,
                mask: Tensor | None = None, processor: LogitProcessor | None = None) -> Tensor:
    """Eqs. 1-3 of the module docstring on ``logits`` [vocab], in WebLLM's order; returns new logits."""
    if not isinstance(logits, Tensor) or logits.ndim != 1 or not logits.is_floating_point():
        raise ValueError(f"logits: expected a float tensor [vocab], received {tuple(getattr(logits, 'shape', ()))}")
    vocab = logits.shape[0]
    x = logits.detach().float().clone()
    if mask is not None:
        if mask.shape != (vocab,) or mask.dtype != torch.bool:
            raise ValueError(f"mask: expected a bool tensor [{vocab}], received {mask.dtype} {tuple(mask.shape)}")
        if not bool(mask.any()):
            raise ValueError("mask: every token is forbidden")
        x[~mask] = float("-inf")                                       # Eq. 1: grammar bitmask
    if processor is not None:
        x = processor.process_logits(x)                                # the user's logit processor
    for tok, b in (logit_bias or {}).items():
        x[tok] += b                                                    # Eq. 2
    if generated and (presence_penalty or frequency_penalty or repetition_penalty != 1.0):
        counts = torch.bincount(torch.tensor(list(generated), dtype=torch.int64), minlength=vocab).float()
        seen = counts > 0
        x = x - presence_penalty * seen - frequency_penalty * counts   # Eq. 3, OpenAI's penalties
        if repetition_penalty != 1.0:                                  # Eq. 3, CTRL's repetition penalty
            x = torch.where(seen, torch.where(x > 0, x / repetition_penalty, x * repetition_penalty), x)
    return x


def draw_token(x: Tensor, generator: torch.Generator, temperature: float = 1.0, top_p: float = 1.0) -> int:
    """Eqs. 4-6: temperature softmax, top-p, one uniform draw from ``generator`` (temperature 0: argmax)."""
    if temperature == 0:
        return int(torch.argmax(x))                                    # Eq. 4 as tau -> 0
    vocab = x.shape[0]
    p = torch.softmax(x / temperature, dim=-1)                         # Eq. 4
    sorted_p, order = torch.sort(p, descending=True)
    cum = torch.cumsum(sorted_p, 0)
    keep = int(torch.searchsorted(cum, torch.tensor([top_p]), right=False)[0]) + 1   # Eq. 5: mass reaches top_p
    keep = min(max(keep, 1), vocab)
    kept = sorted_p[:keep]
    u = float(torch.rand((), generator=generator)) * float(kept.sum())               # Eq. 6
    idx = int(torch.searchsorted(torch.cumsum(kept, 0), torch.tensor([u]), right=True)[0])
    return int(order[min(idx, keep - 1)])


def sample_token(logits: Tensor, generator: torch.Generator, *, generated: Sequence[int] = (),
                 temperature: float = 1.0, top_p: float = 1.0, logit_bias: Mapping[int, float] | None = None,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0, repetition_penalty: float = 1.0,
                 mask: Tensor | None = None, processor: LogitProcessor | None = None) -> int:
    """One token from ``logits`` [vocab], by Eqs. 1-6 of the module docstring, in WebLLM's order."""
    x = edit_logits(logits, generated=generated, logit_bias=logit_bias, presence_penalty=presence_penalty,
                    frequency_penalty=frequency_penalty, repetition_penalty=repetition_penalty, mask=mask,
                    processor=processor)
    return draw_token(x, generator, temperature, top_p)


# --- the engine -------------------------------------------------------------------------------------------------

@dataclass
class ModelSpec:
    """One model the engine serves: the network, its tokenizer, its context window and prefill chunk size."""

    model: nn.Module
    tokenizer: ChatTokenizer
    context_window: int
    prefill_chunk_size: int = 16


class LLMChatPipeline:
    """One model's state: its KV cache, the token ids the cache holds, the conversation they render, a lock."""

    def __init__(self, spec: ModelSpec) -> None:
        check_int("context_window", spec.context_window, 2)
        check_int("prefill_chunk_size", spec.prefill_chunk_size, 1)
        self.spec, self.model, self.tokenizer = spec, spec.model.eval(), spec.tokenizer
        self.kv = self.model.new_cache(1, spec.context_window)
        self.cached_ids: list[int] = []
        self.conversation: list[dict[str, str]] | None = None
        self.lock = threading.Lock()
        self.interrupted = threading.Event()
        self.last: dict[str, Any] = {}             # what the last request did (tokens prefilled, decoded, ...)

    def reset(self) -> None:
        """``resetChat``: forget the conversation; the cache is overwritten from position 0."""
        self.kv.pos = 0
        self.cached_ids = []
        self.conversation = None

    def rollback(self, length: int) -> None:
        self.kv.pos = length
        self.cached_ids = self.cached_ids[:length]

    @torch.no_grad()
    def prefill(self, ids: Sequence[int]) -> Tensor:
        """Chunked prefill of ``ids`` after what the cache holds; returns the logits of the last position."""
        chunk = self.spec.prefill_chunk_size
        logits = None
        for i in range(0, len(ids), chunk):
            part = list(ids[i:i + chunk])
            logits = self.model(torch.tensor([part]), cache=self.kv)[0, -1]
            self.cached_ids += part
        return logits

    @torch.no_grad()
    def decode(self, token: int) -> Tensor:
        """One token through the model at the next position of the cache."""
        logits = self.model(torch.tensor([[token]]), cache=self.kv)[0, -1]
        self.cached_ids.append(token)
        return logits


class _Completions:
    def __init__(self, engine: "MLCEngine") -> None:
        self._engine = engine

    def create(self, **request: Any):
        """``chat.completions.create``: a ``ChatCompletion``, or an iterator of ``ChatCompletionChunk``."""
        return self._engine.chat_completion(request)


class _Chat:
    def __init__(self, engine: "MLCEngine") -> None:
        self.completions = _Completions(engine)


def _holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could still be the start of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class MLCEngine:
    """The engine (WebLLM's ``MLCEngine``): ``engine.chat.completions.create(...)`` as in the ``openai`` client.

    ``models`` maps a model id to its :class:`ModelSpec`; ``logit_processors`` maps a model id to a
    :class:`LogitProcessor` run on every token of that model.
    """

    def __init__(self, models: Mapping[str, ModelSpec], logit_processors: Mapping[str, LogitProcessor] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not isinstance(models, Mapping) or not models:
            raise ValueError("models: expected a non-empty mapping model id -> ModelSpec")
        for k, v in models.items():
            if not isinstance(v, ModelSpec):
                raise ValueError(f"models[{k!r}]: expected a ModelSpec, received {type(v).__name__}")
        self.pipelines = {k: LLMChatPipeline(v) for k, v in models.items()}
        self.processors = dict(logit_processors or {})
        self.chat = _Chat(self)
        self.clock = clock

    # the request's model: WebLLM picks among loaded models by request.model and refuses an ambiguous request
    def _pipeline(self, model: str | None) -> tuple[str, LLMChatPipeline]:
        if model is None:
            if len(self.pipelines) > 1:
                raise RequestError(400, f"model: several models are loaded ({sorted(self.pipelines)}); name one",
                                   param="model", code="model_not_specified")
            model = next(iter(self.pipelines))
        if model not in self.pipelines:
            raise RequestError(404, f"The model `{model}` does not exist", param="model", code="model_not_found")
        return model, self.pipelines[model]

    def model_ids(self) -> list[str]:
        return list(self.pipelines)

    def interrupt_generate(self) -> None:
        """``interruptGenerate``: the running generation stops after its current token (finish_reason "abort")."""
        for pipe in self.pipelines.values():
            pipe.interrupted.set()

    def reset_chat(self, model: str | None = None) -> None:
        _, pipe = self._pipeline(model)
        with pipe.lock:
            pipe.reset()

    def chat_completion(self, request: Mapping[str, Any] | ChatRequest):
        req = request if isinstance(request, ChatRequest) else parse_request(dict(request))
        model_id, pipe = self._pipeline(req.model)
        for tok in req.logit_bias:
            if tok >= len(pipe.tokenizer):
                raise RequestError(400, f"logit_bias: token id {tok} is outside the vocabulary", "logit_bias",
                                   "invalid_value")
        prompt = self._prompt_ids(pipe, req)
        events = self._generate(model_id, pipe, req, prompt)
        if req.stream:
            return self._chunks(model_id, req, events)
        return self._completion(model_id, req, events)

    @staticmethod
    def _prompt_ids(pipe: LLMChatPipeline, req: ChatRequest) -> list[int]:
        try:
            prompt = pipe.tokenizer.render(req.messages)
        except ValueError as exc:
            raise RequestError(400, f"messages: {exc}", param="messages", code="invalid_value") from None
        if len(prompt) >= pipe.spec.context_window:
            raise RequestError(400, f"This model's maximum context length is {pipe.spec.context_window} tokens; "
                               f"the messages take {len(prompt)} (and the reply needs at least one more)",
                               param="messages", code="context_length_exceeded")
        return prompt

    def _generate(self, model_id: str, pipe: LLMChatPipeline, req: ChatRequest, prompt: list[int]) -> Iterator[tuple]:
        """Events: ("delta", choice, text), ("finish", choice, reason), ("usage", dict). Holds the model's lock."""
        with pipe.lock:
            t0 = self.clock()
            pipe.interrupted.clear()
            tok = pipe.tokenizer
            history = req.messages[:-1]
            reuse = (pipe.conversation is not None and pipe.conversation == history
                     and prompt[:len(pipe.cached_ids)] == pipe.cached_ids and len(pipe.cached_ids) < len(prompt))
            if not reuse:
                pipe.reset()
            cached = len(pipe.cached_ids)
            pipe.conversation = None                      # until this reply is complete
            gen = torch.Generator().manual_seed(req.seed if req.seed is not None else secrets.randbits(63))
            grammar = JSONGrammar(req.response_format["schema"]) if req.response_format else None
            processor = self.processors.get(model_id)
            last_logits = pipe.prefill(prompt[cached:])
            t_prefill = self.clock() - t0
            completion_tokens, decode_steps = 0, 0
            texts = []
            finish = "stop"
            try:
                for choice in range(req.n):
                    if choice:
                        pipe.rollback(len(prompt))
                    if processor is not None:
                        processor.reset_state()
                    matcher = GrammarMatcher(grammar, tok) if grammar else None
                    out: list[int] = []
                    text, sent = "", 0
                    logits = last_logits
                    finish = None
                    while finish is None:
                        if pipe.interrupted.is_set():
                            finish = "abort"
                            break
                        nxt = sample_token(logits, gen, generated=out, temperature=req.temperature,
                                           top_p=req.top_p, logit_bias=req.logit_bias,
                                           presence_penalty=req.presence_penalty,
                                           frequency_penalty=req.frequency_penalty,
                                           repetition_penalty=req.repetition_penalty,
                                           mask=matcher.mask() if matcher else None, processor=processor)
                        if processor is not None:
                            processor.process_sampled_token(nxt)
                        if matcher is not None:
                            matcher.accept(nxt)
                        if not tok.is_text(nxt):        # <|end|> (or any special token) ends the reply
                            finish = "stop"
                            break
                        out.append(nxt)
                        completion_tokens += 1
                        text = tok.decode(out)
                        cut = min((text.find(s) for s in req.stop if s in text), default=-1)
                        if cut >= 0:
                            text, finish = text[:cut], "stop"
                            break
                        ready = len(text) - _holdback(text, req.stop)
                        if ready > sent:
                            yield ("delta", choice, text[sent:ready])
                            sent = ready
                        if req.max_tokens is not None and len(out) >= req.max_tokens:
                            finish = "length"
                        elif pipe.kv.pos >= pipe.spec.context_window:
                            finish = "length"                    # the KV cache is full
                        else:
                            logits = pipe.decode(nxt)
                            decode_steps += 1
                    if len(text) > sent:
                        yield ("delta", choice, text[sent:])
                    texts.append(text)
                    yield ("finish", choice, finish)
            finally:
                elapsed = self.clock() - t0
                pipe.last = {"prompt_tokens": len(prompt), "cached_tokens": cached,
                             "prefilled_tokens": len(prompt) - cached, "completion_tokens": completion_tokens,
                             "decode_steps": decode_steps, "finish_reason": finish if finish else "disconnected",
                             "cache_positions": pipe.kv.pos}
                if req.n == 1 and texts:
                    pipe.conversation = list(req.messages) + [{"role": "assistant", "content": texts[0]}]
                else:
                    pipe.conversation = None
            yield ("usage", {"prompt_tokens": len(prompt), "completion_tokens": completion_tokens,
                             "total_tokens": len(prompt) + completion_tokens,
                             "prompt_tokens_details": {"cached_tokens": cached},
                             "extra": {"prefill_tokens_per_s": (len(prompt) - cached) / max(t_prefill, 1e-9),
                                       "decode_tokens_per_s": decode_steps / max(elapsed - t_prefill, 1e-9),
                                       "time_to_first_token_s": t_prefill, "e2e_latency_s": elapsed}})

    @staticmethod
    def _ids(model_id: str) -> dict[str, Any]:
        return {"id": f"chatcmpl-{uuidlib.uuid4().hex[:24]}", "created": int(time.time()), "model": model_id}

    def _completion(self, model_id: str, req: ChatRequest, events: Iterator[tuple]):
        from openai.types.chat import ChatCompletion

        texts = [""] * req.n
        reasons = ["stop"] * req.n
        usage = None
        for ev in events:
            if ev[0] == "delta":
                texts[ev[1]] += ev[2]
            elif ev[0] == "finish":
                reasons[ev[1]] = ev[2]
            else:
                usage = ev[1]
        data = {**self._ids(model_id), "object": "chat.completion", "usage": usage,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": r,
                             "logprobs": None} for i, (t, r) in enumerate(zip(texts, reasons))]}
        if "abort" in reasons:                       # WebLLM's "abort" is not among the openai package's reasons
            return ChatCompletion.construct(**data)
        return ChatCompletion.model_validate(data)

    def _chunks(self, model_id: str, req: ChatRequest, events: Iterator[tuple]):
        from openai.types.chat import ChatCompletionChunk

        head = self._ids(model_id)

        def chunk(choices: list, usage: dict | None = None) -> ChatCompletionChunk:
            data = {**head, "object": "chat.completion.chunk", "choices": choices}
            if req.include_usage:
                data["usage"] = usage
            if any(c.get("finish_reason") == "abort" for c in choices):
                return ChatCompletionChunk.construct(**data)
            return ChatCompletionChunk.model_validate(data)

        def stream() -> Iterator[ChatCompletionChunk]:
            try:
                yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
                for ev in events:
                    if ev[0] == "delta":
                        yield chunk([{"index": 0, "delta": {"content": ev[2]}, "finish_reason": None}])
                    elif ev[0] == "finish":
                        yield chunk([{"index": 0, "delta": {}, "finish_reason": ev[2]}])
                    elif req.include_usage:
                        yield chunk([], ev[1])
            finally:
                events.close()                       # a consumer that stops early stops the generation

        return stream()


# --- the engine in a worker -------------------------------------------------------------------------------------

class WorkerEngine:
    """WebLLM's ``WebWorkerMLCEngine``: the front end a page talks to, with the :class:`MLCEngine` running in a
    worker (a thread here). Every call is a message ``{kind, uuid, content}`` of plain JSON (what
    ``postMessage`` can carry; functions such as logit processors must be registered in the worker), answered by
    ``{kind: "return" | "throw", uuid, content}``. Streaming is pulled: each next chunk is one more message.
    """

    def __init__(self, make_engine: Callable[[], MLCEngine]) -> None:
        self._inbox: queue.Queue = queue.Queue()
        self._replies: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        self.messages: list[str] = []              # every kind sent, for the reader to see the protocol
        self._thread = threading.Thread(target=self._worker, args=(make_engine,), daemon=True)
        self._thread.start()
        self.chat = _Chat(self)                    # type: ignore[arg-type]
        self._models: list[str] = self._call("reload", {})

    def model_ids(self) -> list[str]:
        return list(self._models)

    # the worker side (WebLLM's WebWorkerMLCEngineHandler)
    def _worker(self, make_engine: Callable[[], MLCEngine]) -> None:
        engine: MLCEngine | None = None
        streams: dict[str, Iterator] = {}
        while True:
            msg = json.loads(self._inbox.get())
            kind, uid, content = msg["kind"], msg["uuid"], msg["content"]
            try:
                if kind == "reload":
                    engine = make_engine()
                    result = engine.model_ids()
                elif kind == "chatCompletionNonStreaming":
                    result = engine.chat.completions.create(**content).model_dump(mode="json")
                elif kind == "chatCompletionStreamInit":
                    streams[content["stream"]] = engine.chat.completions.create(**content["request"])
                    result = None
                elif kind == "completionStreamNextChunk":
                    nxt = next(streams[content["stream"]], None)
                    if nxt is None:
                        streams.pop(content["stream"], None)
                    result = None if nxt is None else nxt.model_dump(mode="json")
                elif kind == "completionStreamClose":
                    s = streams.pop(content["stream"], None)
                    if s is not None:
                        s.close()
                    result = None
                elif kind == "interruptGenerate":
                    engine.interrupt_generate()
                    result = None
                elif kind == "resetChat":
                    engine.reset_chat(content.get("model"))
                    result = None
                elif kind == "stop":
                    return
                else:
                    raise RequestError(400, f"unknown message kind {kind!r}")
                reply = {"kind": "return", "uuid": uid, "content": result}
            except RequestError as exc:
                reply = {"kind": "throw", "uuid": uid, "content": {"status": exc.status, **exc.body()["error"]}}
            except Exception as exc:  # noqa: BLE001 - reported to the caller, never lost in the worker
                reply = {"kind": "throw", "uuid": uid,
                         "content": {"status": 500, "message": f"{type(exc).__name__}: {exc}", "type": "server_error",
                                     "param": None, "code": None}}
            self._replies[uid].put(json.dumps(reply))

    # the page side
    def _call(self, kind: str, content: Any) -> Any:
        uid = uuidlib.uuid4().hex
        box: queue.Queue = queue.Queue()
        with self._lock:
            self._replies[uid] = box
            self.messages.append(kind)
        self._inbox.put(json.dumps({"kind": kind, "uuid": uid, "content": content}))   # only JSON crosses
        reply = json.loads(box.get())
        with self._lock:
            del self._replies[uid]
        if reply["kind"] == "throw":
            err = reply["content"]
            raise RequestError(err["status"], err["message"], err.get("param"), err.get("code"), err.get("type"))
        return reply["content"]

    def chat_completion(self, request: Mapping[str, Any]):
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        request = json.loads(json.dumps(dict(request)))     # what structured cloning would carry
        if not request.get("stream"):
            return ChatCompletion.model_validate(self._call("chatCompletionNonStreaming", request))
        sid = uuidlib.uuid4().hex
        self._call("chatCompletionStreamInit", {"stream": sid, "request": request})

        def pull() -> Iterator[ChatCompletionChunk]:
            done = False
            try:
                while True:
                    data = self._call("completionStreamNextChunk", {"stream": sid})
                    if data is None:
                        done = True
                        return
                    yield ChatCompletionChunk.model_validate(data)
            finally:
                if not done:
                    self._call("completionStreamClose", {"stream": sid})

        return pull()

    def interrupt_generate(self) -> None:
        self._call("interruptGenerate", {})

    def reset_chat(self, model: str | None = None) -> None:
        self._call("resetChat", {"model": model})

    def close(self) -> None:
        self._inbox.put(json.dumps({"kind": "stop", "uuid": "", "content": None}))
        self._thread.join(timeout=5)


# --- the HTTP server ---------------------------------------------------------------------------------------------

MAX_BODY_BYTES = 1 << 20


class _Handler(http.server.BaseHTTPRequestHandler):
    engine: Any = None
    server_version = "TinyWebLLM/1.0"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: RequestError) -> None:
        self._send_json(err.status, err.body())

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/v1/models":
            ids = self.engine.model_ids()
            self._send_json(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                              "owned_by": "local"} for m in ids]})
        else:
            self._error(RequestError(404, f"no route {self.path}", code="not_found"))

    def do_POST(self) -> None:  # noqa: N802
        try:
            if self.path.rstrip("/") != "/v1/chat/completions":
                raise RequestError(404, f"no route {self.path}", code="not_found")
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise RequestError(411, "a Content-Length header is required", code="length_required")
            if int(length) > MAX_BODY_BYTES:
                raise RequestError(413, f"the request body is over {MAX_BODY_BYTES} bytes", code="too_large")
            raw = self.rfile.read(int(length))
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise RequestError(400, f"We could not parse the JSON body of your request: {exc.msg if hasattr(exc, 'msg') else exc}",
                                   code="invalid_json") from None
            result = self.engine.chat.completions.create(**body) if isinstance(body, dict) else \
                parse_request(body)
        except RequestError as err:
            self._error(err)
            return
        except Exception as exc:  # noqa: BLE001 - an error object, never a traceback
            self._error(RequestError(500, f"internal error: {type(exc).__name__}", type="server_error"))
            return
        if not body.get("stream"):
            self._send_json(200, result.model_dump(mode="json", exclude_unset=False))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            for chunk in result:
                self.wfile.write(b"data: " + json.dumps(chunk.model_dump(mode="json")).encode() + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass                                      # the client left: closing the stream stops generation
        except Exception as exc:  # noqa: BLE001 - an SSE error event, never a traceback
            with contextlib.suppress(OSError):
                err = RequestError(500, f"internal error: {type(exc).__name__}", type="server_error")
                self.wfile.write(b"data: " + json.dumps(err.body()).encode() + b"\n\n")
        finally:
            result.close()


@contextlib.contextmanager
def serve_openai(engine: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``engine`` (an :class:`MLCEngine` or :class:`WorkerEngine`) at ``/v1/chat/completions`` on 127.0.0.1,
    in a thread; yields the base URL for ``openai.OpenAI(base_url=...)``."""
    with serve_in_thread(type("Handler", (_Handler,), {"engine": engine}), host, port) as server:
        yield f"http://{host}:{server.server_address[1]}/v1"
