"""σ read off one noisy image, two ways, on the images of DIP's stopping studies: scikit-image's wavelet estimate
(Donoho's median absolute deviation of the finest diagonal wavelet coefficients; what the discrepancy principle
of dip_denoise.py uses) and deepinv's PatchCovarianceNoiseEstimator (Chen, Zhu and Heng, ICCV 2015: the smallest
eigenvalues of the patch covariance, meant to hold on texture).

The noisy images are the ones dip_denoise.py makes (the same crops or resized images, noise, clipping and seeds):
the held-out test's (docs/results/dip_denoise/heldout_protocol.md: six images, centre crops at 64² and 128², σ 10,
15 and 25/255) and the earlier study's (five bundled images resized to 64² and 128², σ 25 and 50/255). Each row:
the estimate over the true σ. No DIP run is involved: seconds.

    python bench/sigma_estimates.py
Prints a table per estimator and writes Results/bench/sigma_estimates.json.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dip_denoise  # noqa: E402
from common import write_bench  # noqa: E402  (bench/)
from dipkit.cli import make_config  # noqa: E402
from dipkit.stopping import estimate_sigma  # noqa: E402

HELD_OUT = ("brick", "grass", "gravel", "moon", "immunohistochemistry", "hubble_deep_field")
EARLIER = ("astronaut", "camera", "chelsea", "coffee", "rocket")  # docs_results.py STOPPING_IMAGES, in order
ESTIMATORS = ("wavelet", "patch_covariance", "patch_covariance_per_channel")
SETS = (  # (set, images, how each is made, sizes, noise levels /255, seeds): as their runs make them
    ("held out", HELD_OUT, "crop", (64, 128), (10, 15, 25), (0, 1)),
    ("earlier study", EARLIER, "size", (64, 128), (25, 50), (0, 1)),
)


def patch_covariance(noisy: torch.Tensor, per_channel: bool = False) -> float:
    """deepinv's estimate on the whole image (8x8 patches of every channel: 192 dimensions), or on each channel
    alone (64, as Chen et al. on grey images), averaged over the channels."""
    from deepinv.models import PatchCovarianceNoiseEstimator

    estimator = PatchCovarianceNoiseEstimator()
    if per_channel:
        return float(estimator(noisy.transpose(0, 1)).mean())  # the channels as a batch of grey images
    return float(estimator(noisy)[0])


def main() -> None:
    rows = []
    for name, images, how, sizes, levels, seeds in SETS:
        for size in sizes:
            for level in levels:
                for seed in seeds:
                    config = make_config(dip_denoise.Config, **{how: size}, noise_level=level / 255, seed=seed)
                    for index, image in enumerate(images):
                        clean = dip_denoise.load_clean(image, config)
                        noisy = dip_denoise.add_noise(clean, config, seed + 1 + index)  # dip_denoise's seeding
                        rows.append(dict(set=name, image=image, size=size, sigma_true=level, seed=seed,
                                         wavelet=estimate_sigma(noisy) * 255 / level,
                                         patch_covariance=patch_covariance(noisy) * 255 / level,
                                         patch_covariance_per_channel=patch_covariance(noisy, True) * 255 / level))
    summary = []
    for name, images, _, sizes, levels, _ in SETS:
        for size in sizes:
            for level in levels:
                group = [r for r in rows if (r["set"], r["size"], r["sigma_true"]) == (name, size, level)]
                summary.append(dict(set=name, size=size, sigma_true=level, runs=len(group), **{
                    f"{estimator}_{what}": function([r[estimator] for r in group])
                    for estimator in ESTIMATORS
                    for what, function in (("mean", statistics.fmean), ("min", min), ("max", max))}))
                s = summary[-1]
                print(f"{name:<14} {size:>3}²  σ {level:>2}/255  estimate / true σ: " + ", ".join(
                    f"{e} {s[e + '_mean']:.3f} ({s[e + '_min']:.3f}-{s[e + '_max']:.3f})" for e in ESTIMATORS),
                    flush=True)
    print(f"wrote {write_bench('sigma_estimates', torch.device('cpu'), rows=rows, summary=summary)}")


if __name__ == "__main__":
    main()
