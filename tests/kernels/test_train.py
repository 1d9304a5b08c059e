"""kernels.train: the warm-up/decay multiplier against its formula written out, and the shared loop against
a hand-written loop (same losses, same parameters), plus bad input."""

import math

import numpy as np
import pytest
import torch

from kernels.train import fit, warmup_decay


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_schedule_warms_up_linearly_then_decays_to_the_floor(decay):
    lam = warmup_decay(100, 10, decay, floor=0.1)
    assert lam(0) == pytest.approx(0.1 * (0.1 + 0.9 * (1.0 if decay == "cosine" else 1.0)))
    assert lam(9) == pytest.approx(0.1 + 0.9 * (0.5 * (1 + math.cos(math.pi * 9 / 100)) if decay == "cosine" else 0.91))
    values = [lam(s) for s in range(10, 101)]
    assert all(b <= a + 1e-15 for a, b in zip(values, values[1:])), "not monotone after the warm-up"
    assert lam(100) == pytest.approx(0.1) and lam(1000) == pytest.approx(0.1 if decay == "cosine" else 0.1)


def test_the_two_recipes_of_the_chapters():
    """Over-Tokenized: 20-step warm-up, cosine to 10 %; RELAY: warm-up, linear to zero (bitwise its old form)."""
    ot = warmup_decay(250, 20, "cosine", floor=0.1)
    for s in (0, 19, 20, 125, 249):
        assert ot(s) == pytest.approx(min(1.0, (s + 1) / 20) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 250))))
    relay = warmup_decay(2000, 20, "linear")
    for s in (0, 5, 19, 20, 1000, 1999):
        assert relay(s) == min(1.0, (s + 1) / 20) * max(0.0, 1 - s / 2000)


def test_fit_equals_a_hand_written_loop():
    def run(use_fit):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        xs, ys = torch.randn(30, 8, 4, generator=g), torch.randn(30, 8, 1, generator=g)
        loss_at = lambda s: torch.nn.functional.mse_loss(model(xs[s - 1]), ys[s - 1])  # noqa: E731
        lam = warmup_decay(30, 5, "cosine", floor=0.1)
        if use_fit:
            seen = []
            losses = fit(30, loss_at, [opt], lam, on_step=lambda s, l: seen.append(s))
            assert seen == list(range(1, 31))
        else:
            sched, losses = torch.optim.lr_scheduler.LambdaLR(opt, lam), []
            for s in range(1, 31):
                loss = loss_at(s)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
        return np.asarray(losses), model.weight.detach().clone()

    (a, wa), (b, wb) = run(True), run(False)
    assert np.array_equal(a, b) and torch.equal(wa, wb)


@pytest.mark.parametrize("call, match", [
    (lambda: warmup_decay(0, 1), "steps"), (lambda: warmup_decay(10, 0), "warmup"),
    (lambda: warmup_decay(10, 1, "step"), "decay"), (lambda: warmup_decay(10, 1, floor=1.5), "floor"),
    (lambda: fit(5, lambda s: torch.tensor(0.0), []), "optimizers"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- run(): one process, torchrun with DistributedDataParallel, checkpoints ----------------------------------

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from kernels.train import LanguageModel, RunResult, compute_box, read_metrics, run, task_cost, torchrun_command

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(task="kernels.train:language_model", task_args=dict(dim=32, layers=1, heads=2, context=32, m=1021),
            steps=6, global_batch=8, micro_batch=2, lr=3e-3, warmup=2, seed=0, weight_decay=0.1)


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                OMP_NUM_THREADS="1")


def _torchrun(config, tmp_path, nproc):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    subprocess.run(torchrun_command(str(path), nproc), check=True, cwd=ROOT, env=_env(), capture_output=True,
                   timeout=300)
    return read_metrics(config["out_dir"])


def test_two_processes_with_ddp_equal_one_process_with_the_same_global_batch(tmp_path):
    """gloo DDP over 2 processes, 2 micro-batches each (gradient accumulation), against 1 process with 4."""
    one = run({**TINY, "out_dir": str(tmp_path / "one"), "checkpoint_every": 6})
    two = _torchrun({**TINY, "out_dir": str(tmp_path / "two"), "checkpoint_every": 6}, tmp_path, 2)
    assert [m["step"] for m in two] == list(range(1, 7))
    np.testing.assert_allclose([m["loss"] for m in two], one.losses, rtol=1e-5)
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)["model"]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)
    assert one.losses[-1] < one.losses[0], "the run did not train: the comparison would be weak"


def test_a_run_killed_midway_resumes_to_the_same_losses(tmp_path):
    """SIGKILL a run after a few steps, resume from its last checkpoint: the losses of an uninterrupted run."""
    steps = 14
    full = run({**TINY, "steps": steps})
    cfg = {**TINY, "steps": steps, "out_dir": str(tmp_path / "killed"), "checkpoint_every": 1}
    path = tmp_path / "killed.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "kernels.train", str(path)], cwd=ROOT, env=_env())
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed: make it slower"
    done = len(read_metrics(str(tmp_path / "killed")))
    assert 5 <= done < steps
    resumed = run({**cfg, "resume": True})
    assert resumed.metrics[0]["step"] > 1, "did not resume from the checkpoint"
    got = [m["loss"] for m in read_metrics(str(tmp_path / "killed"))]
    assert [m["step"] for m in read_metrics(str(tmp_path / "killed"))] == list(range(1, steps + 1))
    np.testing.assert_array_equal(got, full.losses)


def _paper_sizes(chapter):
    nb = nbformat.read(str(ROOT / chapter), as_version=4)
    src = next(c.source for c in nb.cells if c.cell_type == "code" and "SIZES = {" in c.source)
    tree = ast.parse(src)
    node = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "SIZES")
    return ast.literal_eval(node)["paper"]


def test_the_over_tokenized_paper_configuration_takes_two_steps_at_reduced_width(tmp_path):
    """The chapter's SCALE="paper" sizes (read from the notebook): depth, heads and context,
    with its first table size, at a reduced width, two steps of a batch sharded over 2 processes, through torchrun."""
    paper = _paper_sizes("book/language/over_tokenized.ipynb")
    heads = paper["heads"]
    args = dict(dim=2 * heads * 2, layers=paper["layers"], heads=heads, context=paper["context"],
                m=paper["prime_m"][0], sparse=True)
    cfg = dict(task="kernels.train:language_model", task_args=args, steps=2, global_batch=4, micro_batch=1, lr=3e-3,
               warmup=1, seed=0, out_dir=str(tmp_path / "paper"), checkpoint_every=2)
    metrics = _torchrun(cfg, tmp_path, 2)
    assert [m["step"] for m in metrics] == [1, 2] and all(np.isfinite(m["loss"]) for m in metrics)
    state = torch.load(tmp_path / "paper" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and "embed.table.weight" in state["model"]


@pytest.mark.parametrize("chapter, factory, args", [
    ("book/reasoning/relay.ipynb", "LoopedTask", {"lam": 1.0, "window": 0}),
    ("book/reasoning/relay.ipynb", "ARTask", {}),
    ("book/systems/webllm.ipynb", "ChatTask", {}),
], ids=["relay-looped", "relay-ar", "webllm-chat"])
def test_a_chapters_paper_configuration_takes_two_steps_under_torchrun(tmp_path, chapter, factory, args):
    """The chapter's own task (its cells tagged train-task) at SCALE="paper", at the paper's width, rebuilt in 2
    torchrun processes: two steps of a global batch of 4, one example per process and micro-batch."""
    spec = dict(notebook=str(ROOT / chapter), factory=factory, parameters={"SCALE": "paper", "SEED": 0}, args=args)
    cfg = dict(task="kernels.train:notebook_task", task_args=spec, steps=2, global_batch=4, micro_batch=1, lr=1e-3,
               warmup=1, seed=0, out_dir=str(tmp_path / "paper"), checkpoint_every=2)
    metrics = _torchrun(cfg, tmp_path, 2)
    assert [m["step"] for m in metrics] == [1, 2] and all(np.isfinite(m["loss"]) for m in metrics)
    state = torch.load(tmp_path / "paper" / "checkpoint.pt", weights_only=False)
    widths = {w.shape[-1] for w in state["model"].values() if w.ndim == 2}
    assert state["step"] == 2 and _paper_sizes(chapter)["dim"] in widths


# --- tasks a chapter defines in its own cells (kernels.train:notebook_task) ---------------------------------------

def _chapter(tmp_path):
    """A two-cell chapter: its parameters, a task whose data come from a generator of its own, and a cell that
    must not run in a worker (untagged)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("WIDTH = 4\nSEED = 0", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('untagged cells never run in a worker')\nraise SystemExit(3)"),
                nbformat.v4.new_code_cell(
                    "import torch\nfrom kernels import train\n\n"
                    "class Toy(train.Task):\n"
                    "    def __init__(self, scale=1.0, shift=None):\n"
                    "        self.scale, self.own = scale, torch.Generator().manual_seed(SEED + 7)\n"
                    "        self.shift = 0.0 if shift is None else float(shift.sum())\n"
                    "    def model(self):\n"
                    "        return torch.nn.Linear(WIDTH, 1)\n"
                    "    def examples(self, gen, count):\n"
                    "        x = torch.randn(count, WIDTH, generator=gen)\n"
                    "        noise = torch.randn(count, 1, generator=self.own)\n"
                    "        return x, self.scale * x.sum(1, keepdim=True) + self.shift + noise\n"
                    "    def loss(self, model, batch):\n"
                    "        return torch.nn.functional.mse_loss(model(batch[0]), batch[1])\n"
                    "    def state(self):\n"
                    "        return {'own': self.own.get_state()}\n"
                    "    def load_state(self, state):\n"
                    "        self.own.set_state(state['own'])\n",
                    metadata={"tags": ["train-task"]})]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, str(path))
    return str(path)


def test_a_notebook_task_runs_the_parameters_and_tagged_cells_only(tmp_path):
    from kernels.train import notebook_task

    path = _chapter(tmp_path)
    task = notebook_task(path, "Toy", {"WIDTH": 6}, {"scale": 2.0})
    assert task.model().in_features == 6 and task.scale == 2.0
    with pytest.raises(ValueError, match="factory"):
        notebook_task(path, "Missing")
    with pytest.raises(ValueError, match="tag"):
        notebook_task(path, "Toy", tag="nothing-tagged")
    with pytest.raises(ValueError, match="notebook"):
        notebook_task(str(tmp_path / "absent.ipynb"), "Toy")


def test_a_task_with_its_own_generator_resumes_to_the_same_losses(tmp_path):
    """Task.state() is checkpointed: stop after 4 of 9 steps, resume, and get the uninterrupted losses."""
    base = dict(task="kernels.train:notebook_task", task_args=dict(notebook=_chapter(tmp_path), factory="Toy"),
                steps=9, global_batch=8, micro_batch=8, lr=1e-2, warmup=1, seed=0)
    full = run(base)
    cfg = {**base, "out_dir": str(tmp_path / "stopped"), "checkpoint_every": 1}
    run({**cfg, "stop_after": 4})
    run({**cfg, "resume": True})
    np.testing.assert_array_equal([m["loss"] for m in read_metrics(cfg["out_dir"])], full.losses)


def test_notebook_launch_runs_a_chapters_task_under_torchrun_and_equals_one_process(tmp_path):
    """kernels.train.notebook_launch (what the chapters call with NPROC > 1): 2 gloo processes rebuild the chapter's
    own task, with a tensor argument sent as a file, and train as one process with the whole batch does."""
    from kernels.train import notebook_launch, notebook_task

    path, shift = _chapter(tmp_path), torch.arange(3.0)
    cfg = dict(steps=5, global_batch=8, micro_batch=2, lr=1e-2, warmup=1, seed=0)
    one = run({**cfg, "task": notebook_task(path, "Toy", args={"shift": shift})})
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        metrics, state = notebook_launch(path, "Toy", cfg, 2, str(tmp_path / "two"), args={"shift": shift})
    finally:
        os.environ.pop("OMP_NUM_THREADS") if old is None else os.environ.__setitem__("OMP_NUM_THREADS", old)
    np.testing.assert_allclose([m["loss"] for m in metrics], one.losses, rtol=1e-5)
    torch.testing.assert_close(state["model"]["weight"], one.model.weight.detach(), rtol=1e-4, atol=1e-6)
    assert state["step"] == 5
    sent = json.loads((tmp_path / "two" / "config.json").read_text())["task_args"]["args"]["shift"]
    assert set(sent) == {"file", "sha1"}, "a tensor argument travels as a file with its digest"
    unshifted = run({**cfg, "task": notebook_task(path, "Toy")})
    assert unshifted.losses[0] != one.losses[0], "the argument did not reach the task: the comparison would be weak"


def test_run_validates_its_config():
    with pytest.raises(ValueError, match="config"):
        run({"task": "kernels.train:language_model"})
    with pytest.raises(ValueError, match="global_batch"):
        run({**TINY, "global_batch": 7, "micro_batch": 2})
    with pytest.raises(ValueError, match="task"):
        run({**TINY, "task": "no_colon"})
    assert isinstance(run({**TINY, "steps": 1}), RunResult)


def test_compute_box_and_task_cost():
    box = compute_box(1000, 10_000, device_tflops=1.0, utilisation=0.5)
    assert box["flops"] == 6e7 and box["memory_gb_per_device"] == 1.6e-5
    assert box["hours"] == pytest.approx(6e7 / 0.5e12 / 3600)
    task = LanguageModel(dim=32, layers=1, heads=2, context=16)
    cost = task_cost(task, steps=10, global_batch=4, context=16)
    real = task.model()
    assert cost["params"] == sum(p.numel() for p in real.parameters()) and cost["tokens"] == 640
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros(1, 16, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        real(x, naive=True).sum().backward()        # attention as explicit products, as on the meta device
    assert cost["flops"] == pytest.approx(counter.get_total_flops() * 40)
