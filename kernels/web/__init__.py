"""The WebLLM chapter's browser stage (Ruan et al., arXiv 2412.15803, §3: the model compiled ahead of time, run in
the browser). WebLLM compiles a model with MLC-LLM/TVM into WebGPU kernels plus a WebAssembly runtime; here the
same idea with the tools this machine has: the decoder exported to ONNX as two graphs,

    prefill:  input_ids [1, 8]                        -> logits [1, 8, V], present k/v per layer [1, H, 8, d_h]
    decode:   input_ids [1, 1], past k/v [1, H, P, d_h] -> logits [1, 1, V], present k/v [1, H, P + 1, d_h]

(the KV cache lives outside the graph, as in WebLLM's runtime), run by onnxruntime natively and by
onnxruntime-web's WebAssembly build in headless Chromium, served from 127.0.0.1 with the COOP/COEP headers
that multi-threaded WebAssembly needs. Both run the same greedy loop (an 8-token prompt, 128 new tokens); the
ids must be equal and the tokens/s are reported side by side, never asserted.

``python -m kernels.web`` runs the whole comparison (both model sizes, 1 and 2 threads) and writes
``_build/webllm/browser_run.json``; ``tests/test_webllm_browser.py`` checks the ids on the small model.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from kernels._validate import check_int
from kernels.transformer import CatKVCache, TinyLlama
from kernels._http import serve_in_thread

WEB = Path(__file__).resolve().parent
ROOT = WEB.parent.parent
DIST = WEB / "node_modules" / "onnxruntime-web" / "dist"
RUN_FILE = ROOT / "_build" / "webllm" / "browser_run.json"
CHAT_MODEL_FILE = ROOT / "_build" / "webllm" / "chat_model.pt"
PROMPT_LEN, NEW_TOKENS = 8, 128
# ~27 M parameters: a model where the matrix products, not the per-call overhead, take the time
MEDIUM = {"vocab": 2048, "dim": 512, "layers": 8, "heads": 8, "hidden": 1536}


def missing() -> str | None:
    """Why the browser run cannot happen here (None if it can): no Chromium, no Playwright, no npm package."""
    from booktools import browser

    if browser.chromium_path() is None:
        return "no Chromium (install Debian's `chromium`, or set CHROMIUM=/path/to/chrome)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the `playwright` package is missing"
    if not (DIST / "ort.wasm.min.mjs").is_file():
        return "onnxruntime-web is not installed (run `npm ci` in kernels/web)"
    return None


# --- the two graphs ---------------------------------------------------------------------------------------------

class _Prefill(nn.Module):
    def __init__(self, model: TinyLlama, max_len: int) -> None:
        super().__init__()
        self.model, self.max_len = model, max_len

    def forward(self, input_ids: Tensor) -> tuple[Tensor, ...]:
        cache = CatKVCache(len(self.model.blocks), 1, self.max_len)
        logits = self.model(input_ids, cache=cache)
        return (logits, *[t for i in range(len(self.model.blocks)) for t in (cache.k[i], cache.v[i])])


class _Decode(nn.Module):
    def __init__(self, model: TinyLlama, max_len: int) -> None:
        super().__init__()
        self.model, self.max_len = model, max_len

    def forward(self, input_ids: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        cache = CatKVCache(len(self.model.blocks), 1, self.max_len)
        cache.k, cache.v = list(past[0::2]), list(past[1::2])
        cache.pos = past[0].shape[2]                   # the new token's position: the length of the past
        logits = self.model(input_ids, cache=cache)
        return (logits, *[t for i in range(len(self.model.blocks)) for t in (cache.k[i], cache.v[i])])


def kv_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def export(model: TinyLlama, folder: Path, max_len: int = 512) -> dict[str, Any]:
    """Write ``prefill.onnx``, ``decode.onnx`` and ``meta.json`` for ``model`` into ``folder``."""
    if not isinstance(model, TinyLlama):
        raise ValueError(f"model: expected a kernels.transformer.TinyLlama, received {type(model).__name__}")
    check_int("max_len", max_len, PROMPT_LEN + 1)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    L = len(model.blocks)
    attn = model.blocks[0].attn
    heads, head_dim = attn.heads, attn.head_dim
    ids = torch.zeros(1, PROMPT_LEN, dtype=torch.int64)
    past = [torch.zeros(1, heads, PROMPT_LEN, head_dim) for _ in range(2 * L)]
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
            contextlib.redirect_stderr(devnull):
        warnings.simplefilter("ignore")
        onnx_log.setLevel(logging.ERROR)                 # "torchvision is not installed" and such
        plen = torch.export.Dim("past", min=1, max=max_len - 1)
        torch.onnx.export(_Prefill(model, max_len), (ids,), str(folder / "prefill.onnx"), dynamo=True,
                          input_names=["input_ids"], output_names=["logits"] + kv_names(L, "present"),
                          optimize=True, verbose=False, external_data=False)   # a static PROMPT_LEN prompt
        torch.onnx.export(_Decode(model, max_len), (ids[:, :1], *past), str(folder / "decode.onnx"), dynamo=True,
                          input_names=["input_ids"] + kv_names(L, "past"),
                          output_names=["logits"] + kv_names(L, "present"),
                          dynamic_shapes={"input_ids": None, "past": tuple({2: plen} for _ in past)},
                          optimize=True, verbose=False, external_data=False)
    onnx_log.setLevel(level)
    meta = {"layers": L, "heads": heads, "head_dim": head_dim, "vocab": int(model.vocab),
            "params": sum(p.numel() for p in model.parameters())}
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


# --- native onnxruntime and torch ---------------------------------------------------------------------------------

def ort_sessions(folder: Path, threads: int) -> tuple[Any, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    make = lambda name: ort.InferenceSession(str(Path(folder) / name), opts, providers=["CPUExecutionProvider"])
    return make("prefill.onnx"), make("decode.onnx")


def ort_greedy(sessions: tuple[Any, Any], prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding with the two graphs: prefill the prompt, then one token at a time with the cache."""
    if not isinstance(prompt, list) or len(prompt) != PROMPT_LEN:
        raise ValueError(f"prompt: expected a list of {PROMPT_LEN} token ids (the prefill graph's static length), "
                         f"received {len(prompt) if isinstance(prompt, list) else type(prompt).__name__}")
    check_int("steps", steps, 1)
    prefill, decode = sessions
    names = [o.name for o in prefill.get_outputs()][1:]
    out = prefill.run(None, {"input_ids": np.array([prompt], dtype=np.int64)})
    ids = []
    for _ in range(steps):
        nxt = int(out[0][0, -1].argmax())
        ids.append(nxt)
        if len(ids) == steps:
            break
        feed = {"input_ids": np.array([[nxt]], dtype=np.int64)}
        feed.update({n.replace("present", "past"): v for n, v in zip(names, out[1:])})
        out = decode.run(None, feed)
    return ids


def torch_greedy(model: TinyLlama, prompt: list[int], steps: int) -> list[int]:
    from kernels.transformer import generate_greedy

    return generate_greedy(model, torch.tensor([prompt]), steps)[0, len(prompt):].tolist()


def timed(fn, repeats: int) -> tuple[list[int], list[float]]:
    """One warm-up call, then ``repeats`` timed ones: (ids, tokens/s of each)."""
    ids = fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(NEW_TOKENS / (time.perf_counter() - t0))
    return ids, rates


# --- the browser ---------------------------------------------------------------------------------------------------

class _IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the COOP/COEP headers that make a page ``crossOriginIsolated`` (SharedArrayBuffer, so
    WebAssembly threads); ``/models/`` is served from the export folder, everything else from ``kernels/web``."""

    models: Path = WEB

    def log_message(self, *args) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if clean.startswith("/models/"):
            rel = Path(clean[len("/models/"):])
            if ".." in rel.parts:
                return str(self.models / "__nope__")
            return str(self.models / rel)
        return super().translate_path(path)


@contextlib.contextmanager
def serve_isolated(models: Path) -> Iterator[str]:
    handler = functools.partial(type("H", (_IsolatedHandler,), {"models": Path(models)}), directory=str(WEB))
    with serve_in_thread(handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/"


def browser_runs(models: Path, runs: list[dict[str, Any]], timeout_s: float = 300) -> list[dict[str, Any]]:
    """Open ``page.html`` once per run ({"model": folder name, "threads", "repeats", "prompt"}) in headless
    Chromium (``booktools.browser.launched``), offline: every request outside 127.0.0.1 is refused and counted."""
    from booktools import browser

    results = []
    with serve_isolated(models) as base, browser.launched() as chromium:
        for run in runs:
            context = chromium.new_context()
            page = context.new_page()
            outside: list[str] = []
            page.route(re.compile(r"^(?!http://127\.0\.0\.1[:/]).*"),
                       lambda route: (outside.append(route.request.url), route.abort()))
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: console.append(str(exc)))
            query = "&".join(f"{k}={v if not isinstance(v, list) else ','.join(map(str, v))}" for k, v in
                             {**run, "steps": NEW_TOKENS}.items())
            page.goto(base + "page.html?" + query)
            page.wait_for_function("window.RESULT !== undefined", timeout=timeout_s * 1000)
            result = page.evaluate("window.RESULT")
            if "error" in result:
                raise RuntimeError(f"the browser page failed on {run['model']}: {result['error'][:500]}")
            result.update(outside_requests=outside, console_errors=console)
            results.append(result)
            context.close()
    return results


def chat_model_or_random() -> tuple[TinyLlama, str]:
    """The chapter's trained chat model if it has saved one (``_build/webllm/chat_model.pt``), else a model of
    the same shape with random weights."""
    if CHAT_MODEL_FILE.is_file():
        saved = torch.load(CHAT_MODEL_FILE, weights_only=True)
        cfg = saved["config"]
        model = TinyLlama(cfg["vocab"], cfg["dim"], cfg["layers"], cfg["heads"], cfg["hidden"])
        model.load_state_dict(saved["state_dict"])
        return model.eval(), "trained in the chapter"
    return random_model({"vocab": 100, "dim": 64, "layers": 2, "heads": 4, "hidden": 192}), "random weights"


def random_model(cfg: dict[str, int], seed: int = 0) -> TinyLlama:
    """Random weights that neither repeat one token (a tied table with default weights does: each token's
    embedding is most like itself) nor put the top two logits within float noise: embedding std 0.5 and the
    blocks' matrices scaled by 3 (greedy ids then vary and the top two logits stay about 0.01 apart or more)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyLlama(cfg["vocab"], cfg["dim"], cfg["layers"], cfg["heads"], cfg["hidden"]).eval()
        with torch.no_grad():
            torch.nn.init.normal_(model.embed.weight, std=0.5)
            for mod in model.blocks.modules():
                if isinstance(mod, nn.Linear):
                    mod.weight.mul_(3.0)
    return model


def compare(sizes: tuple[str, ...] = ("chat", "medium"), threads: tuple[int, ...] = (1, 2), repeats: int = 5,
            browser: bool = True, folder: Path | None = None) -> dict[str, Any]:
    """Export each model, run torch eager, native onnxruntime and (if possible) the browser, for every thread
    count; returns (and the CLI writes) the table of ids and tokens/s."""
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS,
                           "repeats": repeats, "models": {}, "browser": None}
    why = missing() if browser else "not asked for"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(folder) if folder else Path(tmp)
        runs, sessions, prompts = [], {}, {}
        for size in sizes:
            if size == "chat":
                model, origin = chat_model_or_random()
            else:
                model, origin = random_model(MEDIUM), "random weights"
            meta = export(model, base / size)
            g = torch.Generator().manual_seed(1)
            prompt = prompts[size] = torch.randint(5, meta["vocab"], (PROMPT_LEN,), generator=g).tolist()
            entry = {"origin": origin, "params": meta["params"], "prompt": prompt, "native": {}, "torch": {},
                     "browser": {}}
            for t in threads:
                torch.set_num_threads(t)
                ids_t, rates_t = timed(lambda: torch_greedy(model, prompt, NEW_TOKENS), repeats)
                sess = sessions[size, t] = ort_sessions(base / size, t)
                ids_n, rates_n = timed(lambda: ort_greedy(sess, prompt, NEW_TOKENS), repeats)
                entry["torch"][str(t)] = {"ids_equal_native": ids_t == ids_n, "tok_s": rates_t}
                entry["native"][str(t)] = {"ids": ids_n, "tok_s": rates_n}
                runs += [{"model": size, "threads": t, "repeats": repeats, "prompt": prompt}]
            torch.set_num_threads(1)
            out["models"][size] = entry
        if why is None:
            for res in browser_runs(base, runs):
                entry = out["models"][res["model"]]
                native = entry["native"][str(res["threads"])]["ids"]
                entry["browser"][str(res["threads"])] = {
                    "ids_equal_native": res["ids"] == native, "tok_s": res["tok_s"],
                    "cross_origin_isolated": res["crossOriginIsolated"], "threads_used": res["numThreads"],
                    "outside_requests": len(res["outside_requests"]), "console_errors": res["console_errors"][:3],
                    "session_s": res["session_s"], "browser_version": _chrome(res["userAgent"])}
            out["browser"] = "ran"
            # native again, after the browser: on a shared machine the load changes between the two, and the best
            # run of either batch is the fairest native figure
            for (size, t), sess in sessions.items():
                _, more = timed(lambda: ort_greedy(sess, prompts[size], NEW_TOKENS), repeats)
                out["models"][size]["native"][str(t)]["tok_s"] += more
        else:
            out["browser"] = f"skipped: {why}"
    return out


def _chrome(user_agent: str) -> str:
    m = re.search(r"Chrom(?:e|ium)/(\d+)", user_agent)
    return f"Chromium {m.group(1)}" if m else "unknown"


def summary_rows(run: dict[str, Any]) -> list[list[str]]:
    """One row per model and thread count: the best tokens/s (fastest of the repeats, the least disturbed by other
    work on a shared machine) of torch eager, native onnxruntime, the browser, and browser / native."""
    rows = []
    for size, entry in run["models"].items():
        for t in sorted(entry["native"], key=int):
            med = lambda d: max(d["tok_s"]) if d else float("nan")
            tt, nn_ = med(entry["torch"].get(t)), med(entry["native"].get(t))
            bb = med(entry["browser"].get(t)) if entry["browser"].get(t) else float("nan")
            same = entry["browser"].get(t, {}).get("ids_equal_native")
            rows.append([size, f"{entry['params'] / 1e6:.2g} M", t, f"{tt:.0f}", f"{nn_:.0f}",
                         "-" if bb != bb else f"{bb:.0f}", "-" if bb != bb else f"{bb / nn_:.2f}",
                         "-" if same is None else ("yes" if same else "NO")])
    return rows
