"""The WebLLM chapter's browser stage: a model of the chat model's shape exported to ONNX (a prefill and a
decode graph), greedy-decoded by native onnxruntime and by onnxruntime-web (WebAssembly) in headless Chromium,
served from 127.0.0.1 with the COOP/COEP headers: the 128 ids are equal at 1 and 2 threads, no request leaves
127.0.0.1, the page logs no error, and the 2-thread page is cross-origin isolated. Tokens/s are recorded by
`python -m kernels.web` (make bench), never asserted.

It belongs to the browser stage of `make test` (``BOOK_STAGE=browser``) and is skipped, with one line, in every
other stage (the export and the browser take a while). Without Chromium or without onnxruntime-web in
kernels/web/node_modules, the whole file is skipped with one line saying which."""

from __future__ import annotations

import http.client
import os
from urllib.parse import urlparse

import pytest
import torch

from kernels import web

if os.environ.get("BOOK_STAGE") != "browser":
    pytest.skip("WebLLM browser stage: runs only in the browser stage of `make test` (BOOK_STAGE=browser)",
                allow_module_level=True)
WHY = web.missing()
if WHY is not None:
    pytest.skip(f"WebLLM browser stage skipped: {WHY}", allow_module_level=True)

CHAT = {"vocab": 100, "dim": 64, "layers": 2, "heads": 4, "hidden": 192}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("webllm")
    model = web.random_model(CHAT)
    web.export(model, folder / "chat")
    prompt = torch.randint(5, 100, (web.PROMPT_LEN,), generator=torch.Generator().manual_seed(1)).tolist()
    native = web.ort_greedy(web.ort_sessions(folder / "chat", 1), prompt, web.NEW_TOKENS)
    return folder, model, prompt, native


def test_native_onnxruntime_ids_equal_torch_ids(exported):
    _, model, prompt, native = exported
    assert native == web.torch_greedy(model, prompt, web.NEW_TOKENS)
    assert len(set(native)) > 10                      # the random model does not repeat one token


def test_browser_ids_equal_native_ids_offline(exported):
    folder, _, prompt, native = exported
    runs = [{"model": "chat", "threads": t, "repeats": 1, "prompt": prompt} for t in (1, 2)]
    results = web.browser_runs(folder, runs)
    for res in results:
        assert res["ids"] == native, f"{res['threads']} thread(s): browser ids differ from native onnxruntime"
        assert res["outside_requests"] == [] and res["console_errors"] == []
        assert res["crossOriginIsolated"] is True
        assert all(r > 0 for r in res["tok_s"])
    assert [r["numThreads"] for r in results] == [1, 2]


def test_the_page_server_sends_coop_coep_and_serves_only_its_folders(exported):
    folder = exported[0]
    with web.serve_isolated(folder) as base:
        u = urlparse(base)
        for path, status in (("/page.html", 200), ("/models/chat/meta.json", 200), ("/models/../page.html", 404),
                             ("/models/chat/../../__init__.py", 404)):
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            assert r.status == status, path
            if status == 200:
                assert r.getheader("Cross-Origin-Opener-Policy") == "same-origin"
                assert r.getheader("Cross-Origin-Embedder-Policy") == "require-corp"
            conn.close()
