"""The training loop the language chapters share: a learning-rate warm-up followed by a cosine or linear decay,
and the loop that draws a batch, steps every optimizer and every schedule, and records the loss.

Not a paper's method but the recipe the papers' experiments use (Over-Tokenized Transformer, arXiv 2501.16975:
AdamW with warm-up and cosine decay; RELAY, arXiv 2502.08482: AdamW with a linear schedule), at two sizes:

- :func:`fit`, the loop chapters run in their own process at smoke and book scale;
- :func:`run`, the same recipe for paper scale: a :class:`Task` (model, examples, loss) named by an importable
  path, so that ``torchrun --nproc_per_node=N -m kernels.train config.json`` can rebuild it in every process,
  with DistributedDataParallel (gloo on CPU, NCCL on GPU), deterministic sharding of one global batch, gradient
  accumulation, checkpoints that resume exactly (model, optimizer, schedule, RNG, data position), metrics as
  JSON lines and a progress bar on rank 0. :func:`compute_box` states what a run costs.

The multiplier of the base learning rate at step s (0-based) of a run of S steps with W warm-up steps is

    lambda(s) = min(1, (s + 1) / W) * ( f + (1 - f) * d(s) ),
    d(s) = (1 + cos(pi * min(s, S) / S)) / 2      (cosine)     or     max(0, 1 - s / S)      (linear),

with f the floor the decay ends at (a fraction of the base rate).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from kernels._validate import check_int

DECAYS = ("cosine", "linear")


def warmup_decay(steps: int, warmup: int, decay: str = "cosine", floor: float = 0.0) -> Callable[[int], float]:
    """lambda(s) of the module docstring, for ``torch.optim.lr_scheduler.LambdaLR``."""
    check_int("steps", steps, 1)
    check_int("warmup", warmup, 1)
    if decay not in DECAYS:
        raise ValueError(f"decay: expected one of {DECAYS}, received {decay!r}")
    if not (isinstance(floor, (int, float)) and 0.0 <= floor <= 1.0):
        raise ValueError(f"floor: expected a number in [0, 1], received {floor!r}")

    def lam(s: int) -> float:
        if decay == "cosine":
            d = 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        else:
            d = max(0.0, 1 - s / steps)
        return min(1.0, (s + 1) / warmup) * (floor + (1 - floor) * d)

    return lam


def fit(steps: int, batch_loss: Callable[[int], Tensor], optimizers: Sequence[torch.optim.Optimizer],
        schedule: Callable[[int], float] | None = None, *, desc: str | None = None,
        on_step: Callable[[int, float], None] | None = None) -> np.ndarray:
    """Run ``steps`` steps: ``batch_loss(s)`` draws a batch and returns its loss (s = 1, 2, ...), then every
    optimizer steps and, with ``schedule`` (a multiplier as :func:`warmup_decay` returns), every learning rate
    follows it. ``on_step(s, loss)`` runs after each step (evaluations). Returns the training losses."""
    check_int("steps", steps, 1)
    optimizers = list(optimizers)
    if not optimizers or not all(isinstance(o, torch.optim.Optimizer) for o in optimizers):
        raise ValueError(f"optimizers: expected a non-empty sequence of torch optimizers, received {optimizers!r}")
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in optimizers] if schedule else []
    losses = np.empty(steps)
    iterator: Iterable[int] = range(1, steps + 1)
    if desc is not None:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=desc, mininterval=5)
    for s in iterator:
        loss = batch_loss(s)
        for o in optimizers:
            o.zero_grad()
        loss.backward()
        for o in optimizers:
            o.step()
        for sch in scheds:
            sch.step()
        losses[s - 1] = loss.item()
        if on_step is not None:
            on_step(s, losses[s - 1])
    return losses


# --- runs at any scale: one process, or many under torchrun with DistributedDataParallel ----------------------

TASKS_HELP = "a 'module:function' path; the function takes the config's task_args and returns a Task"


class Task:
    """What a run trains. Subclass it (or duck-type it) with three methods:

    - ``model()``: a fresh ``nn.Module`` (seeded by the run before the call);
    - ``examples(generator, count)``: ``count`` training examples drawn with ``generator``, stacked (a tensor or a
      tuple of tensors with the batch first); every rank draws the same global batch and keeps its own slice, so
      the data order does not depend on the number of processes;
    - ``loss(model, batch)``: the mean loss over ``batch``.

    ``param_groups(model)`` may be overridden (default: weight decay on matrices, none on vectors). A task that
    draws from generators of its own besides the run's returns their state from ``state()`` and takes it back in
    ``load_state(state)``; checkpoints keep it, so that a resumed run draws what the uninterrupted one would.
    """

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        if state:
            raise ValueError(f"state: this task keeps no state, received keys {sorted(state)}")

    def model(self) -> torch.nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def examples(self, generator: torch.Generator, count: int):  # pragma: no cover - interface
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def param_groups(self, model: torch.nn.Module, weight_decay: float) -> list[dict]:
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]

    def optimizers(self, model: torch.nn.Module, lr: float, betas: tuple, weight_decay: float) -> list:
        """AdamW over :meth:`param_groups` (override for other recipes, e.g. a sparse table with SparseAdam)."""
        return [torch.optim.AdamW(self.param_groups(model, weight_decay), lr=lr, betas=betas)]


def load_task(path: str, args: dict | None = None) -> Task:
    """``"package.module:function"`` -> ``function(**args)``, the way torchrun workers rebuild the task."""
    import importlib

    if not isinstance(path, str) or ":" not in path:
        raise ValueError(f"task: expected {TASKS_HELP}, received {path!r}")
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)(**(args or {}))


def notebook_task(notebook: str, factory: str, parameters: dict | None = None, args: dict | None = None,
                  tag: str = "train-task") -> Task:
    """A task a chapter defines in its own cells, rebuilt in a torchrun worker: runs the notebook's
    ``parameters`` cell, then ``parameters`` (as papermill injects them), then every code cell tagged ``tag``, in
    order, in one namespace, in the notebook's folder, with their printed output dropped; returns
    ``factory(**args)`` from that namespace. The task path is ``kernels.train:notebook_task``."""
    import contextlib
    import io
    import json
    import os

    path = os.path.abspath(notebook)
    if not os.path.isfile(path) or not path.endswith(".ipynb"):
        raise ValueError(f"notebook: expected the path of an .ipynb file, received {notebook!r}")
    with open(path, encoding="utf-8") as fh:
        cells = [c for c in json.load(fh)["cells"] if c["cell_type"] == "code"]
    tags = [c.get("metadata", {}).get("tags", []) for c in cells]
    chosen = [c for c, t in zip(cells, tags) if tag in t]
    if not chosen:
        raise ValueError(f"tag: expected code cells tagged {tag!r} in {os.path.basename(path)}, found none")
    source = lambda c: "".join(c["source"]) if isinstance(c["source"], list) else c["source"]   # noqa: E731
    namespace: dict = {"__name__": "__chapter__"}
    here = os.getcwd()
    os.chdir(os.path.dirname(path))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for c in (c for c, t in zip(cells, tags) if "parameters" in t and tag not in t):
                exec(compile(source(c), f"{os.path.basename(path)}:parameters", "exec"), namespace)
            namespace.update(parameters or {})
            for i, c in enumerate(chosen):
                exec(compile(source(c), f"{os.path.basename(path)}:{tag}[{i}]", "exec"), namespace)
    finally:
        os.chdir(here)
    if not callable(namespace.get(factory)):
        raise ValueError(f"factory: expected a callable the {tag!r} cells define, received {factory!r}")
    loaded = {k: torch.load(v[FILE_ARG], weights_only=False) if isinstance(v, dict) and FILE_ARG in v else v
              for k, v in (args or {}).items()}                   # arguments sent as files by notebook_launch
    return namespace[factory](**loaded)


def _slice(batch, lo: int, hi: int):
    return tuple(t[lo:hi] for t in batch) if isinstance(batch, (tuple, list)) else batch[lo:hi]


def _rng_state() -> dict:
    import random

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    import random

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class RunResult:
    """What :func:`run` returns: the metrics of every step and the trained (unwrapped) model."""

    def __init__(self, metrics: list[dict], model: torch.nn.Module) -> None:
        self.metrics, self.model = metrics, model

    @property
    def losses(self) -> np.ndarray:
        return np.array([m["loss"] for m in self.metrics])


def run(config: dict) -> "RunResult":
    """Train ``config["task"]`` for ``config["steps"]`` steps; the same code in one process or under torchrun.

    Config keys (JSON-serialisable for torchrun): ``task`` (an importable path, or in one process a :class:`Task`
    object), ``task_args``, ``steps``, ``global_batch`` (examples per
    optimizer step, over all processes), ``micro_batch`` (examples per forward pass per process; the run
    accumulates gradients over ``global_batch / (world * micro_batch)`` of them), ``lr``, ``betas``,
    ``weight_decay``, ``warmup``, ``decay``, ``floor``, ``seed``, ``out_dir`` (metrics.jsonl and
    checkpoint.pt go there; None: nothing written), ``checkpoint_every``, ``resume`` (continue from the
    checkpoint in out_dir), ``stop_after`` (end early after this step, as a killed run would), ``progress``,
    ``data_seed`` (default seed + 1), and in one process ``on_step(step, loss, model)`` for evaluations and
    ``generator`` (a ``torch.Generator`` the examples are drawn with instead of one seeded by data_seed).

    Under torchrun (``RANK``/``WORLD_SIZE`` set) it joins the process group (gloo on CPU, NCCL with CUDA), wraps
    the model in ``DistributedDataParallel`` and scales each rank's loss so that the averaged gradient is the
    gradient of the mean loss over the global batch: the same update as one process with the whole batch.
    Returns the metrics of every step (on every rank) and the trained model.
    """
    import json
    import os
    import random
    import time

    import torch.distributed as dist

    cfg = dict(config)
    for key in ("task", "steps", "global_batch", "micro_batch"):
        if key not in cfg:
            raise ValueError(f"config: expected the key {key!r}, received keys {sorted(cfg)}")
    steps, gb, mb = check_int("steps", cfg["steps"], 1), check_int("global_batch", cfg["global_batch"], 1), \
        check_int("micro_batch", cfg["micro_batch"], 1)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    device = torch.device(cfg.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
    if distributed and device.type == "cuda":                 # one GPU per process on each node
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if gb % (world * mb):
        raise ValueError(f"global_batch: expected a multiple of processes x micro_batch = {world} x {mb}, received {gb}")
    accum = gb // (world * mb)
    seed = int(cfg.get("seed", 0))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    task = cfg["task"] if isinstance(cfg["task"], Task) else load_task(cfg["task"], cfg.get("task_args"))
    if distributed and isinstance(cfg["task"], Task):
        raise ValueError("task: under torchrun, expected an importable 'module:function' path, received an object")
    model = task.model().to(device)
    opts = task.optimizers(model, float(cfg.get("lr", 1e-3)), tuple(cfg.get("betas", (0.9, 0.999))),
                           float(cfg.get("weight_decay", 0.0)))
    lam = warmup_decay(steps, int(cfg.get("warmup", 1)), cfg.get("decay", "cosine"), float(cfg.get("floor", 0.0)))
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lam) for o in opts]
    data = cfg.get("generator") or torch.Generator().manual_seed(int(cfg.get("data_seed", seed + 1)))
    out = cfg.get("out_dir")
    ckpt = os.path.join(out, "checkpoint.pt") if out else None
    start = 0
    if cfg.get("resume") and ckpt and os.path.exists(ckpt):
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        for o, st in zip(opts, state["optimizers"]):
            o.load_state_dict(st)
        for sch, st in zip(scheds, state["schedulers"]):
            sch.load_state_dict(st)
        data.set_state(state["data"])
        _set_rng_state(state["rng"])
        task.load_state(state.get("task", {}))
        start = int(state["step"])
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if distributed else model
    if out and rank == 0:
        os.makedirs(out, exist_ok=True)
    log = None
    if out and rank == 0:
        path = os.path.join(out, "metrics.jsonl")
        kept = [line for line in open(path, encoding="utf-8") if json.loads(line)["step"] <= start] \
            if (start and os.path.exists(path)) else []          # a killed run may have logged past its checkpoint
        log = open(path, "w")
        log.writelines(kept)
    bar = None
    if cfg.get("progress") and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start, desc=cfg.get("desc", "train"), mininterval=5)
    metrics, t0 = [], time.perf_counter()
    stop = min(steps, int(cfg.get("stop_after", steps)))
    for step in range(start + 1, stop + 1):
        batch = task.examples(data, gb)                       # the same global batch on every rank
        mine = _slice(batch, rank * gb // world, (rank + 1) * gb // world)
        for o in opts:
            o.zero_grad()
        total = 0.0
        for i in range(accum):
            micro = _slice(mine, i * mb, (i + 1) * mb)
            micro = tuple(t.to(device) for t in micro) if isinstance(micro, tuple) else micro.to(device)
            sync = i == accum - 1 or not distributed
            ctx = net.no_sync() if (distributed and not sync) else _null()
            with ctx:
                loss = task.loss(net, micro)
                (loss if accum == 1 and world == 1 else loss * (mb * world / gb)).backward()  # the global mean
            total += float(loss.detach()) * mb
        for o in opts:
            o.step()
        for sch in scheds:
            sch.step()
        mean = torch.tensor([total / (gb / world)])
        if distributed:
            dist.all_reduce(mean)
            mean /= world
        row = {"step": step, "loss": float(mean), "lr": scheds[0].get_last_lr()[0], "examples": step * gb,
               "seconds": round(time.perf_counter() - t0, 3)}
        metrics.append(row)
        if log is not None:
            log.write(json.dumps(row) + "\n")
            log.flush()
        if bar is not None:
            bar.update(1)
        if cfg.get("on_step") is not None:                    # in-process only: evaluations of a chapter
            cfg["on_step"](step, row["loss"], model)
        every = int(cfg.get("checkpoint_every", 0))
        if ckpt and every and (step % every == 0 or step == steps) and rank == 0:   # and the final step
            tmp = ckpt + ".tmp"
            torch.save({"model": model.state_dict(), "optimizers": [o.state_dict() for o in opts],
                        "schedulers": [sch.state_dict() for sch in scheds], "data": data.get_state(),
                        "rng": _rng_state(), "task": task.state(), "step": step}, tmp)
            os.replace(tmp, ckpt)
    if bar is not None:
        bar.close()
    if log is not None:
        log.close()
    if distributed:
        dist.barrier()
    return RunResult(metrics, model)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class LanguageModel(Task):
    """Next-token prediction on a token stream with ``kernels.transformer.TinyGPT``, optionally with an
    Over-Encoding input (``m`` rows per hashed n-gram table, or explicit ``moduli``; ``kernels.ngram``): the
    Over-Tokenized chapter's experiments at any size.

    ``corpus="stdlib"`` is the book's offline English corpus as UTF-8 bytes (V = 256; ``docstrings=False``: the
    pydoc topics only); ``corpus="markov2"`` is
    ``kernels.corpus.markov2_source(vocab, symbols, source_seed)``. The loss skips the first ``skip`` positions
    of every window. The recipe: AdamW, no weight decay on embeddings, tables and vectors; with
    ``sparse=True`` the n-gram table gets sparse gradients and ``SparseAdam`` (lazy Adam).
    """

    def __init__(self, dim: int, layers: int, heads: int, context: int, m: int | None = None,
                 moduli: list[int] | None = None, n: int = 3, k: int = 1, sparse: bool = False,
                 corpus: str = "stdlib", docstrings: bool = True, vocab: int = 256, symbols: int = 0,
                 source_seed: int = 0, split: float = 0.9, skip: int = 0) -> None:
        if corpus not in ("stdlib", "markov2"):
            raise ValueError(f"corpus: expected 'stdlib' or 'markov2', received {corpus!r}")
        self.vocab = 256 if corpus == "stdlib" else vocab
        self.dim, self.layers, self.heads = dim, layers, heads
        self.context, self.m, self.moduli, self.n, self.k = check_int("context", context, 1), m, moduli, n, k
        self.sparse, self.skip = sparse, skip
        self._source = dict(corpus=corpus, docstrings=docstrings, symbols=symbols, source_seed=source_seed, split=split)
        self._data = None

    def _load(self):
        """The token stream, built on first use (a cost estimate needs only the model)."""
        if self._data is None:
            from kernels import corpus as corpus_mod

            src = self._source
            if src["corpus"] == "stdlib":
                ids = corpus_mod.to_bytes(corpus_mod.stdlib_text(include_docstrings=src["docstrings"]))
            else:
                ids, self.probs = corpus_mod.markov2_source(self.vocab, src["symbols"], src["source_seed"])
            self._data = corpus_mod.split(ids, src["split"])
        return self._data

    @property
    def train_ids(self) -> Tensor:
        return self._load()[0]

    @property
    def val_ids(self) -> Tensor:
        return self._load()[1]

    def model(self) -> torch.nn.Module:
        from kernels import ngram
        from kernels.transformer import TinyGPT

        embed = None
        if self.m is not None or self.moduli is not None:
            embed = ngram.OverEncoding(self.vocab, self.dim, n=self.n, k=self.k, m=self.m or 0, moduli=self.moduli,
                                       sparse=self.sparse)
        return TinyGPT(self.vocab, self.dim, self.layers, self.heads, embed=embed)

    def examples(self, generator: torch.Generator, count: int):
        from kernels import corpus as corpus_mod

        return corpus_mod.windows(self.train_ids, count, self.context, generator)

    def loss(self, model: torch.nn.Module, batch) -> Tensor:
        x, y = batch
        s = self.skip
        return torch.nn.functional.cross_entropy(model(x)[:, s:].flatten(0, 1), y[:, s:].flatten())

    def optimizers(self, model: torch.nn.Module, lr: float, betas: tuple, weight_decay: float) -> list:
        base = model.module if hasattr(model, "module") else model
        from kernels import ngram

        table = [base.embed.table.weight] if isinstance(base.embed, ngram.OverEncoding) else []
        sparse = bool(table) and base.embed.table.sparse
        skip = {id(p) for p in table} if sparse else set()
        no_decay = {id(base.head_weight)} | {id(p) for p in table}
        params = [p for p in base.parameters() if id(p) not in skip]
        groups = [{"params": [p for p in params if p.ndim >= 2 and id(p) not in no_decay], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2 or id(p) in no_decay], "weight_decay": 0.0}]
        opts = [torch.optim.AdamW(groups, lr=lr, betas=betas)]
        if sparse:
            opts.append(torch.optim.SparseAdam(table, lr=lr, betas=betas))
        return opts


def language_model(**kwargs) -> LanguageModel:
    """The task path torchrun workers import: ``kernels.train:language_model``."""
    return LanguageModel(**kwargs)


def torchrun_command(config_path: str, nproc: int = 2, python: str | None = None) -> list[str]:
    """The command that runs a config file under torchrun on one node with ``nproc`` processes."""
    import sys

    check_int("nproc", nproc, 1)
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "kernels.train", config_path]


def launch(config: dict, nproc: int, out_dir: str) -> tuple[list[dict], dict]:
    """Run ``config`` under torchrun with ``nproc`` processes on this node, writing into ``out_dir``; returns the
    metrics and the final checkpoint (``["model"]`` is the trained state dict). The config must be JSON (its task
    an importable path, e.g. ``kernels.train:notebook_task``). A run started before with the same config resumes
    from its last checkpoint (every ``checkpoint_every`` steps, default 1,000)."""
    import json
    import os
    import subprocess

    check_int("nproc", nproc, 1)
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.abspath(out_dir)
    config = {**config, "out_dir": out, "progress": True, "resume": True,
              "checkpoint_every": int(config.get("checkpoint_every") or min(1000, int(config["steps"])))}
    text = json.dumps(config, sort_keys=True)
    path = os.path.join(out, "config.json")
    if not (os.path.exists(path) and open(path, encoding="utf-8").read() == text):   # another run: start afresh
        for name in ("checkpoint.pt", "metrics.jsonl"):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    subprocess.run(torchrun_command(path, nproc), check=True, env=env)
    return read_metrics(out), torch.load(os.path.join(out, "checkpoint.pt"), map_location="cpu", weights_only=False)


FILE_ARG = "file"   # a task argument that travels as a file: {"file": path, "sha1": digest of its bytes}


def notebook_launch(notebook: str, factory: str, config: dict, nproc: int, out_dir: str, *,
                    parameters: dict | None = None, args: dict | None = None) -> tuple[list[dict], dict]:
    """:func:`launch` for a task a chapter defines in its own cells: every worker rebuilds ``factory(**args)``
    with :func:`notebook_task` (the notebook's parameters cell, ``parameters``, then its cells tagged
    ``train-task``). Arguments that are not JSON scalars (tensors, state dicts, lists of tensors) are saved in
    ``out_dir`` and loaded back in each worker; their digest is part of the config, so that other contents start
    a fresh run instead of resuming an old one. Returns the metrics and the final checkpoint."""
    import hashlib
    import os

    os.makedirs(out_dir, exist_ok=True)
    sent = {}
    for key, value in (args or {}).items():
        if isinstance(value, (bool, int, float, str, type(None))):
            sent[key] = value
            continue
        path = os.path.abspath(os.path.join(out_dir, f"arg-{key}.pt"))
        torch.save(value, path)
        with open(path, "rb") as fh:
            sent[key] = {FILE_ARG: path, "sha1": hashlib.sha1(fh.read()).hexdigest()}
    spec = dict(notebook=os.path.abspath(notebook), factory=factory, parameters=parameters or {}, args=sent)
    return launch({**config, "task": "kernels.train:notebook_task", "task_args": spec}, nproc, out_dir)


def read_metrics(out_dir: str) -> list[dict]:
    """The JSON lines a run wrote (rank 0)."""
    import json
    import os

    with open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def compute_box(params: int, tokens: int, *, flops_per_token: float | None = None, bytes_per_param: int = 16,
                device_tflops: float = 100.0, utilisation: float = 0.4, devices: int = 1) -> dict:
    """What a run costs: training FLOPs (``flops_per_token`` x tokens when counted, else the 6 N D estimate of
    Kaplan et al. 2020), memory per device for weights, gradients and two Adam moments in fp32 (16 bytes per
    parameter; activations not included), and the wall time at ``utilisation`` of ``device_tflops`` per device."""
    check_int("params", params, 1)
    check_int("tokens", tokens, 1)
    check_int("devices", devices, 1)
    flops = float(flops_per_token) * tokens if flops_per_token is not None else 6.0 * params * tokens
    seconds = flops / (devices * device_tflops * 1e12 * utilisation)
    return {"params": params, "tokens": tokens, "flops": flops, "memory_gb_per_device": params * bytes_per_param / 1e9,
            "hours": seconds / 3600, "at": f"{devices} x {device_tflops:g} TFLOP/s at {utilisation:.0%}"}


def task_cost(task: Task, steps: int, global_batch: int, context: int, **box) -> dict:
    """:func:`compute_box` for a task at its own sizes, measured without allocating it: the model is built on
    the meta device, its parameters counted, and one sequence's forward and backward matrix products counted
    with ``torch.utils.flop_counter.FlopCounterMode`` (on the meta device attention runs as explicit matrix
    products, so its score products are counted too)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = task.model()
        x = torch.zeros(1, context, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            model(x).sum().backward()
    params = sum(p.numel() for p in model.parameters())
    return compute_box(params, steps * global_batch * context, flops_per_token=counter.get_total_flops() / context, **box)


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m kernels.train CONFIG.json   (under torchrun for several processes)")
    with open(sys.argv[1], encoding="utf-8") as fh:
        run(json.load(fh))
