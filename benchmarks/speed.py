"""Speed of the hot paths against straightforward baselines, measured in the same run.

    python benchmarks/speed.py [--repeats 7] [--device cpu|cuda]

Prints the median wall time of each variant over ``--repeats`` runs and its ratio to the
baseline (how many times faster than the baseline). Machines are noisy: read the ratios, and
compare medians only within one run.

- SmoothGrad of the pair similarity cos(f(x), f(R_theta x)), on the default suite's encoder:
  a loop over images and samples with batch size 1 (the baseline), MONAI's ``SmoothGrad``
  pattern (one pass per sample over the whole batch), and benchsuite's ``smoothgrad`` plugin
  (noisy copies stacked into chunks: one forward and backward per chunk).
- Rotation of a batch: PIL ``Image.rotate`` per image (a PIL-based DataLoader's work, the
  baseline) against the ``rotation`` plugin's single batched ``grid_sample``.
- Every built-in saliency method at its defaults against ``vanilla_grad`` (the baseline), on
  the same objective: what a suite pays for choosing another method.
- Each saliency method for the K models of a stacked group: called once per model (the
  baseline) against its ``stacked`` pass over all K. On a CPU the stacked pass is expected to
  be slower (as stacked training is there); it is meant for a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from benchsuite.engine.pipeline import PairSimilarity
from benchsuite.engine.registry import default_registry
from benchsuite.engine.stacking import stacked_pair_similarity
from benchsuite.engine.views import FixedPair

SALIENCY_METHODS = (
    "vanilla_grad",
    "gradient_x_input",
    "guided_backprop",
    "grad_cam",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
)


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: allocator, kernels, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(title: str, results: dict[str, float]) -> None:
    baseline = next(iter(results.values()))
    print(f"\n{title}")
    for name, seconds in results.items():
        print(f"  {name:<46} {seconds * 1000:9.1f} ms   {baseline / seconds:#6.3g}x")


def component(kind: str, name: str, **params):
    found = default_registry().get(kind, name)
    return found.factory(found.params(**params))


def model(device: torch.device, seed: int = 0) -> torch.nn.Module:
    """The default suite's network (MoCo v2 on small_cnn), untrained, in eval mode: training leaves saliency's cost alone."""
    torch.manual_seed(seed)
    found = default_registry().get("encoders", "small_cnn")
    encoder = found.factory(found.params(), 1, 32)
    ssp = default_registry().get("ssp_methods", "moco_v2")
    return ssp.factory(ssp.params(queue_size=64), encoder).to(device).eval()


def rotation_pair(x: torch.Tensor, theta: float) -> FixedPair:
    return FixedPair(component("augmentations", "rotation"), x, theta, torch.Generator(device=x.device))


def smoothgrad(device: torch.device, repeats: int, images: int, samples: int, size: int) -> None:
    method = model(device)
    x = torch.rand(images, 1, size, size, device=device)
    objective = PairSimilarity(method, rotation_pair(x, 30.0))
    every_image = torch.arange(images, device=device)
    spread = 0.15

    def loop_batch_size_1() -> torch.Tensor:
        maps = []
        for i, image in enumerate(x):
            sigma = spread * (image.max() - image.min())
            total = torch.zeros_like(image)
            for _ in range(samples):
                noisy = (image + sigma * torch.randn_like(image)).unsqueeze(0).requires_grad_(True)
                (grad,) = torch.autograd.grad(objective(noisy, every_image[i : i + 1]).sum(), noisy)
                total += grad[0].abs()
            maps.append((total / samples).amax(dim=0))
        return torch.stack(maps)

    def monai_pattern() -> torch.Tensor:
        sigma = spread * (x.amax(dim=(1, 2, 3), keepdim=True) - x.amin(dim=(1, 2, 3), keepdim=True))
        total = torch.zeros_like(x)
        for _ in range(samples):
            noisy = (x + sigma * torch.randn_like(x)).requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(noisy, every_image).sum(), noisy)
            total += grad.abs()
        return (total / samples).amax(dim=1)

    plugin = component("saliency_methods", "smoothgrad", samples=samples, spread=spread)
    generator = torch.Generator(device=device).manual_seed(0)
    results = {
        "loop over images and samples, batch size 1": median_seconds(loop_batch_size_1, repeats),
        "one pass per sample, whole batch (MONAI)": median_seconds(monai_pattern, repeats),
        "benchsuite smoothgrad (chunked noisy rows)": median_seconds(lambda: plugin(objective, x, generator), repeats),
    }
    report(f"SmoothGrad, {images} images x {samples} samples, {size} px, small_cnn, {device}", results)


def rotation(device: torch.device, repeats: int, images: int, size: int) -> None:
    batch = torch.rand(images, 1, size, size)
    pil = [Image.fromarray((255 * b[0].numpy()).astype(np.uint8)) for b in batch]

    def pil_per_image() -> torch.Tensor:
        rotated = [np.asarray(p.rotate(30.0, resample=Image.BILINEAR), dtype=np.float32) / 255 for p in pil]
        return torch.from_numpy(np.stack(rotated)).unsqueeze(1).to(device)

    augment = component("augmentations", "rotation")
    on_device = batch.to(device)
    results = {
        "PIL Image.rotate per image": median_seconds(pil_per_image, repeats),
        "benchsuite rotation (one grid_sample)": median_seconds(lambda: augment(on_device, 30.0), repeats),
    }
    report(f"Rotation by 30 degrees, {images} images, {size} px, {device}", results)


def saliency_methods(device: torch.device, repeats: int, images: int, size: int) -> None:
    x = torch.rand(images, 1, size, size, device=device)
    objective = PairSimilarity(model(device), rotation_pair(x, 30.0))
    results = {}
    for name in SALIENCY_METHODS:
        method = component("saliency_methods", name)
        results[name] = median_seconds(lambda method=method: method(objective, x, torch.Generator(device=device)), repeats)
    report(f"Saliency methods at their defaults, {images} images, {size} px, small_cnn, {device} (vanilla_grad = 1)", results)


def stacked_saliency(device: torch.device, repeats: int, images: int, size: int, models: int) -> None:
    x = torch.rand(images, 1, size, size, device=device)
    methods = [model(device, seed) for seed in range(models)]
    pairs = [rotation_pair(x, 30.0 + 15 * k) for k in range(models)]
    stacked_objective = stacked_pair_similarity(methods, pairs)

    def generators() -> list[torch.Generator]:
        return [torch.Generator(device=device).manual_seed(k) for k in range(models)]

    print(f"\nSaliency of {models} models, {images} images, {size} px, small_cnn, {device}: one model at a time, then stacked")
    for name in SALIENCY_METHODS:
        method = component("saliency_methods", name)

        def one_at_a_time(method=method) -> list[torch.Tensor]:
            return [method(PairSimilarity(m, p), x, g) for m, p, g in zip(methods, pairs, generators(), strict=True)]

        alone = median_seconds(one_at_a_time, repeats)
        together = median_seconds(lambda method=method: method.stacked(stacked_objective, x, generators()), repeats)
        print(f"  {name:<22} {alone * 1000:9.1f} ms one at a time {together * 1000:9.1f} ms stacked   {alone / together:#6.3g}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per variant (median reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the local executor's default is 1)")
    parser.add_argument("--models", type=int, default=8, help="models of the stacked saliency comparison (K)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}")
    smoothgrad(device, args.repeats, images=16, samples=16, size=32)
    rotation(device, args.repeats, images=256, size=32)
    saliency_methods(device, args.repeats, images=32, size=32)
    stacked_saliency(device, args.repeats, images=16, size=32, models=args.models)


if __name__ == "__main__":
    main()
