"""Serial against stacked theta-sweep cells (benchsuite.engine.stacking): pre-training in cells per second, and SmoothGrad.

    python benchmarks/throughput.py --device cpu|cuda [--repeats 3] [--budget SECONDS] [--threads N] [--quick]

Two settings, each a MoCo v2 cell pre-trained on random images at its own theta:

- the default suite's (suites/rotation.yaml): small_cnn (width 16, depth 3) at 32 px, 144
  training images, 40 epochs of 4 steps of batch 32, Adam;
- the curve setting (suites/curve-3600.yaml): ResNet-18 at 64 px, 1,024 training images, 5
  epochs of 16 steps of batch 64, SGD.

"serial" is ``benchsuite.engine.training.pretrain`` of one cell: K cells one after another take K times
as long, so its rate holds for any K and is measured once per series. "stacked" is
``train_stacked`` of K cells at once. A timed run trains part of a cell (on CUDA 5 of the small
CNN's 40 epochs and 1 of the ResNet's 5 epochs; on the CPU less, see below): its time per step,
times the setting's steps (epochs x steps per epoch), is the time of a cell, and gives cells/s
(cells trained per second, summed over the stack); img/s counts the positive pairs trained
per second. Every number is the median over repeats, after a warm-up run. "x serial" is
stacked over serial cells/s, and each series ends with the training time of a 3,600-angle
curve (3,600 cells): serial, and stacked at the K with the best rate (ceil(3600 / K) stacks).
Then SmoothGrad of the setting's evaluation images (64 x 25 samples for the curve, 16 x 8 for
the suite) is timed per cell for one model alone and for K models at once
(``stacked``) at the largest K that trained, and the projection adds it.

On CUDA: K up to 128, in the engine's GPU arithmetic (bf16 autocast + channels-last, serial and
stacked alike; benchsuite.engine.training.fast_kernels), and the peak memory per K. On the CPU the
run is sized down so that it ends within a few minutes, and it says what was reduced: K up to 8 (small CNN) and 4 (ResNet-18), the
ResNet-18 timed on 1 of its 16 steps per epoch, fp32 only. Larger K are skipped when the time
left cannot cover them or a smaller K ran out of memory. A watchdog thread ends the process at
--budget plus 25 s whatever it is doing (printing the curve projection of the series it
interrupts), so the whole CUDA run stays under four minutes.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import threading
import time
from dataclasses import dataclass, field

import torch
from throughput_cells import CURVE, SUITE, Series, build, fresh_memory, is_oom, timed

from benchsuite.engine.pipeline import PairSimilarity
from benchsuite.engine.registry import default_registry
from benchsuite.engine.stacking import after_step_mode, stacked_pair_similarity, train_stacked
from benchsuite.engine.training import pretrain
from benchsuite.engine.views import FixedPair
from benchsuite_plugins.augmentations.rotation import Rotation, RotationParams
from benchsuite_plugins.ssp_methods.moco import MoCoV2

STARTED = time.perf_counter()
CURVE_ANGLES = 3600


def say(line: str = "") -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------------------------
# Timing


class Budget:
    def __init__(self, seconds: float):
        self.deadline = STARTED + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Result:
    """The measurements of one series so far, and what they project to."""

    series: Series
    serial_step_s: float | None = None
    stacked_step_s: dict[int, float] = field(default_factory=dict)  # K -> seconds per stacked step
    saliency_s: dict[int, float] = field(default_factory=dict)  # K -> SmoothGrad seconds per cell (K = 1: alone)
    projected: bool = False

    def cell_s(self, step_s: float) -> float:
        """Seconds of one (serial) or one stack of (stacked) cells of the real setting."""
        return step_s * self.series.setting.steps

    def projection(self) -> str:
        self.projected = True
        if self.serial_step_s is None:
            return "  projected 3,600-angle curve: nothing measured"
        serial_min = CURVE_ANGLES * self.cell_s(self.serial_step_s) / 60
        line = f"  projected 3,600-angle curve, training: serial {serial_min:.1f} min"
        if self.stacked_step_s:
            best = self.best_k()
            stacked_min = math.ceil(CURVE_ANGLES / best) * self.cell_s(self.stacked_step_s[best]) / 60
            line += f", stacked at best K ({best}) {stacked_min:.1f} min"
        for k, seconds in sorted(self.saliency_s.items()):
            line += f"; + SmoothGrad {'alone' if k == 1 else f'at K = {k}'} {CURVE_ANGLES * seconds / 60:.1f} min"
        return line

    def best_k(self) -> int:
        """The measured K with the highest training rate."""
        return max(self.stacked_step_s, key=lambda k: k / self.stacked_step_s[k])


CURRENT: list[Result] = []  # the series being measured, for the watchdog


def watchdog(seconds: float) -> None:
    def fire() -> None:
        say(f"\nHARD TIME GUARD: {seconds:.0f} s reached; stopping here (results above are complete).")
        if CURRENT and not CURRENT[0].projected:
            say(CURRENT[0].projection() + ", from the K measured before the guard")
        os._exit(0)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


# --------------------------------------------------------------------------------------------
# A series


def describe(series: Series) -> str:
    s = series.setting
    per_epoch = series.images // series.batch_size
    if series.images == s.images and series.px == s.size and series.batch_size == s.batch:
        timed = f"{series.epochs} of its {s.epochs} epochs ({per_epoch} steps each), scaled by {s.epochs / series.epochs:g}"
    else:
        steps = f"{series.steps} step{'s' if series.steps > 1 else ''}"
        timed = f"{steps} of batch {series.batch_size} at {series.px} px, scaled to its {s.steps} steps"
    return f"  a cell trains {s.steps} steps; timed: {timed}"


def run_series(series: Series, device: torch.device, repeats: int, budget: Budget, share: float) -> Result:
    """Serial once, then stacked for each K that fits in ``share`` seconds of the budget."""
    result = Result(series)
    CURRENT[:] = [result]
    deadline = min(time.perf_counter() + share, budget.deadline)
    rotation = Rotation(RotationParams())
    pairs = rotation.stacked
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(series.images, 1, series.px, series.px, generator=generator).to(device)
    pairs_per_run = series.steps * series.batch_size
    say(f"\n{series.name}")
    say(describe(series))

    method = build(series, device)

    def serial_run(method: MoCoV2 = method) -> None:
        pretrain(method, rotation, 37.5, images, torch.Generator().manual_seed(1))

    warm = timed(serial_run, device)
    n = max(1, min(repeats, int(share / 10 / max(warm, 1e-3))))
    serial = statistics.median(timed(serial_run, device) for _ in range(n))
    result.serial_step_s = serial / series.steps
    serial_cells = 1 / result.cell_s(result.serial_step_s)
    say(
        f"  serial (pretrain, one cell at a time): {serial_cells:9.3g} cells/s {pairs_per_run / serial:8.0f} img/s"
        f"   ({result.serial_step_s * 1000:.1f} ms per step, median of {n})"
    )
    say(f"  {'K':>4} {'cells/s':>9} {'img/s':>8} {'x serial':>9} {'s per run':>10} {'peak GiB':>9}")
    del method, serial_run  # free it before the stacks are built
    last: tuple[int, float] | None = None
    for k in series.ks:
        if last is not None:
            estimate = last[1] * k / last[0] * 2.2  # warm-up + at least one timed run, linear in K
            left = deadline - time.perf_counter()
            if estimate > left:
                say(f"  {k:>4}  skipped: about {estimate:.0f} s needed, {left:.0f} s left")
                continue
        methods = None
        try:
            with fresh_memory(device):
                template = build(series, device)
                methods = [copy.deepcopy(template) for _ in range(k)]
                del template
                thetas = [float(37.5 + 10 * i) for i in range(k)]

                def stacked_run(methods: list[MoCoV2] = methods, thetas: list[float] = thetas, k: int = k) -> None:
                    gens = [torch.Generator().manual_seed(i) for i in range(k)]
                    train_stacked(methods, rotation, thetas, images, gens, pairs=pairs)

                mode = after_step_mode(methods)  # probed once, outside the timed runs
                warm = timed(stacked_run, device)
                n = max(1, min(repeats, int((deadline - time.perf_counter()) / max(warm, 1e-3)) - 1))
                seconds = statistics.median(timed(stacked_run, device) for _ in range(n))
                last = (k, max(seconds, warm / 2))
                result.stacked_step_s[k] = seconds / series.steps
                cells = k / result.cell_s(result.stacked_step_s[k])
                peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if device.type == "cuda" else "-"
                say(
                    f"  {k:>4} {cells:9.3g} {k * pairs_per_run / seconds:8.0f} {cells / serial_cells:8.2f}x"
                    f" {seconds:10.2f} {peak:>9}   (median of {n}; after_step: {mode})"
                )
        except RuntimeError as exc:  # torch.OutOfMemoryError included
            if is_oom(exc):
                say(f"  {k:>4}  out of memory; larger K skipped")
            else:
                say(f"  {k:>4}  FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            break
        finally:
            methods = stacked_run = None
    if result.stacked_step_s and time.perf_counter() < deadline:
        time_saliency(series, device, result)
    say(result.projection())
    return result


def time_saliency(series: Series, device: torch.device, result: Result) -> None:
    """SmoothGrad per cell: one model alone (pair_similarity) against the largest K measured, all at once (stacked)."""
    setting, k = series.setting, max(result.stacked_step_s)
    n_images = series.eval_images or setting.eval_images
    found = default_registry().get("saliency_methods", "smoothgrad")
    smoothgrad = found.factory(found.params(samples=setting.samples))
    rotation = Rotation(RotationParams())
    x = torch.rand(n_images, 1, series.px, series.px, generator=torch.Generator().manual_seed(2)).to(device)
    thetas = [float(37.5 + 10 * i) for i in range(k)]
    pairs = [FixedPair(rotation, x, theta, torch.Generator(device=device)) for theta in thetas]
    scale = setting.eval_images / n_images
    try:
        with fresh_memory(device):
            methods = [build(series, device, seed=i).eval() for i in range(k)]

            def noise() -> list[torch.Generator]:
                return [torch.Generator(device=device).manual_seed(i) for i in range(k)]

            def alone() -> None:
                smoothgrad(PairSimilarity(methods[0], pairs[0]), x, noise()[0])

            def stacked() -> None:
                smoothgrad.stacked(stacked_pair_similarity(methods, pairs), x, noise())

            for run, key, cells in ((alone, 1, 1), (stacked, k, k)):
                timed(run, device)  # warm-up
                result.saliency_s[key] = statistics.median(timed(run, device) for _ in range(3)) * scale / cells
    except RuntimeError as exc:  # torch.OutOfMemoryError included
        say(f"  SmoothGrad FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        return
    alone_s, stacked_s = result.saliency_s[1], result.saliency_s[k]
    timed_on = "" if scale == 1 else f", timed on {n_images} of them and scaled"
    say(
        f"  SmoothGrad ({setting.eval_images} images x {setting.samples} samples{timed_on}): alone {alone_s:.3g} s per cell,"
        f" K = {k} stacked {stacked_s:.3g} s per cell, {alone_s / stacked_s:.2f}x (median of 3)"
    )


# --------------------------------------------------------------------------------------------
# Main


def cuda_series() -> list[Series]:
    # The engine's CUDA arithmetic (training.fast_kernels): bf16 autocast and channels-last, for
    # serial and stacked cells alike.
    ks = (1, 8, 32, 64, 128)
    return [
        Series(f"(a) {SUITE.label}, bf16 autocast + channels-last", SUITE, 144, 5, ks),
        Series(f"(b) {CURVE.label}, bf16 autocast + channels-last", CURVE, 1024, 1, ks),
    ]


def cpu_series() -> list[Series]:
    return [
        Series(f"(a) {SUITE.label}, fp32", SUITE, 144, 1, (1, 2, 4, 8)),
        Series(f"(b) {CURVE.label}, fp32", CURVE, 64, 1, (1, 2, 4), eval_images=2),
    ]


CPU_REDUCED = (
    "CPU run, sized down to finish in a few minutes: K up to 8 for (a) and 4 for (b); (b) timed on 1 of its "
    "16 steps per epoch (64 images) at the real 64 px and batch 64; one epoch of (a); fp32 only (CPU autocast "
    "does not reach convolutions under vmap, so a bf16 stack would run in fp32); SmoothGrad of (b) timed on 2 of "
    "its 64 images; no peak memory."
)


def quick_series() -> list[Series]:
    return [
        Series("(a) small_cnn at 16 px, batch 8 (quick)", SUITE, 16, 1, (1, 2), eval_images=2, size=16, batch=8),
        Series("(b) resnet18 at 16 px, batch 4 (quick)", CURVE, 8, 1, (1, 2), eval_images=1, size=16, batch=4),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds for all measurements (default: 150 on CPU, 180 on CUDA)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: a smoke test, not a measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the local executor's default is 1)")
    args = parser.parse_args()
    device = torch.device(args.device)
    budget_s = args.budget if args.budget is not None else (180.0 if device.type == "cuda" else 150.0)
    watchdog(budget_s + 25)
    repeats = args.repeats
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        say(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, cudnn.benchmark on")
        series = cuda_series()
    else:
        torch.set_num_threads(args.threads)
        say(f"device: CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
        series = cpu_series()
        if not args.quick:
            say(CPU_REDUCED)
    if args.quick:
        repeats = 1
        series = quick_series()
        say("quick: tiny sizes and one repeat, a smoke test; its numbers and projections mean nothing")
    budget = Budget(budget_s)
    # Each series gets an equal share of what is left when it starts; a cheap one leaves more.
    for i, s in enumerate(series):
        if budget.left() <= 5:
            say(f"\n{s.name}: skipped, time budget spent")
            continue
        try:
            run_series(s, device, repeats, budget, budget.left() / (len(series) - i))
        except Exception as exc:  # noqa: BLE001 - report any failure of one series and still measure the others
            say(f"  series FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    say(f"\ntotal {time.perf_counter() - STARTED:.0f} s")


if __name__ == "__main__":
    main()
