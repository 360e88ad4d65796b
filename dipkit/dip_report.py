"""The Deep Image Prior denoising run's outputs (dip_denoise.py): each image's folder (its denoised image, every
stopping rule's images beside the references, the PSNR curves and each rule's statistic), its table row and its
metrics.json entry, and the lines printed as each image is done."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from . import figures
from .figures import save_png
from .metrics import psnr, ssim
from .runs import write_csv, write_metrics
from .stopping import RULE_TYPES, TITLES, candidates, rule_of


def scores(result: Any, noisy: torch.Tensor, clean: torch.Tensor) -> dict[str, dict]:
    """PSNR and SSIM against the clean image of the noisy image, the final output and average, the oracle and each
    rule's candidates (with the rule's iteration and whether it fired)."""
    score = lambda x: dict(psnr=psnr(x, clean), ssim=ssim(x, clean))  # noqa: E731
    metrics = dict(noisy=score(noisy), final_output=score(result.final_output),
                   final_average=score(result.final_average),
                   oracle=dict(score(result.oracle_image), iteration=result.oracle_iteration))
    for candidate in candidates(list(result.choices)):
        choice = result.choices[rule_of(candidate)]
        metrics[candidate] = dict(score(result.image(candidate)), iteration=choice.iteration, fired=choice.fired,
                                  fired_iteration=choice.fired_iteration)
    return metrics


def write_summary(folder: Path, records: dict[str, dict], device: Any) -> list[dict]:
    """metrics.json from every image's record (the summary: the mean of each PSNR and SSIM column every image has);
    the table's rows."""
    table = [record["row"] for record in records.values()]
    summary = {key: statistics.fmean(row[key] for row in table) for key in table[0]
               if key.startswith(("psnr_", "ssim_")) and all(key in row for row in table)}
    write_metrics(folder, "dip_denoise", summary, {name: record["item"] for name, record in records.items()},
                  sum(row["seconds"] for row in table), str(device), iterations_counted_from=0)
    print(f"wrote {folder}")
    return table


def write_image_outputs(folder: Path, name: str, noisy: torch.Tensor, clean: torch.Tensor | None, result: Any) -> None:
    """An image's folder: denoised.png (the stop rule's image), DIP.png (the references, then a row per rule: its
    image, the average at its choice, the centred average), curve.png and curve.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    save_png(folder / "denoised.png", result.denoised)
    caption = lambda x: "" if clean is None else f"{psnr(x, clean):.2f} dB / {ssim(x, clean):.3f}"  # noqa: E731
    panels = [(noisy, caption(noisy)), (result.final_average, caption(result.final_average))]
    titles = ["noisy", "averaged DIP, end"]
    if clean is not None:
        panels = [(clean, "PSNR / SSIM")] + panels + [(result.oracle_image, caption(result.oracle_image)
                                                       + f"\nit. {result.oracle_iteration}")]
        titles = ["clean"] + titles + ["oracle (uses the clean image)"]
    rows, row_titles = [panels], [name]
    for rule in result.choices:  # a row per rule: its image, the average at its choice, the centred average
        kinds = {rule: RULE_TYPES[rule].IMAGE, f"{rule}_average": "average at its choice",
                 f"{rule}_centred": "centred average"}
        rows.append([(result.image(c), f"{kinds[c]}{' (stop rule)' if c == result.stop_rule else ''}\n"
                      f"{caption(result.image(c))}") for c in candidates([rule])])
        row_titles.append(f"{TITLES[rule]}\n{result.summary(rule)}")
    figures.image_grid(folder / "DIP.png", rows, titles, row_titles)
    its = list(range(len(result.curves["psnr_noisy"])))  # iterations from 0, as everywhere
    lines = [(its, result.curves["psnr_noisy"], "output vs noisy")]
    if clean is not None:
        lines += [(its, result.curves["psnr_clean"], "output vs clean"),
                  (its, result.curves["psnr_clean_average"], "average vs clean")]
    marks = ([(result.oracle_iteration, "oracle best (uses the clean image)")] if clean is not None else []) + [
        (choice.iteration, f"{TITLES[rule]} ({'fired' if choice.fired else 'did not fire'})")
        for rule, choice in result.choices.items()]
    panels = [dict(lines=lines, xlabel="iteration", ylabel="PSNR (dB)", marks=marks)]
    for rule, choice in result.choices.items():
        key = RULE_TYPES[rule].STATISTIC
        panels.append(dict(lines=[(its, result.curves[key], key)], xlabel="iteration", ylabel=key,
                           logy=rule != "sure",  # SURE (an MSE less σ², plus a divergence term) may be negative
                           marks=[(choice.iteration, "choice")], title=f"{TITLES[rule]}: {result.summary(rule)}"))
    figures.curves(folder / "curve.png", panels, n_cols=min(len(panels), 3))
    write_csv(folder / "curve.csv", [dict(iteration=k, **{key: values[k] for key, values in result.curves.items()})
                                     for k in its])


def image_record(folder: Path, name: str, source: str, noisy: torch.Tensor, clean: torch.Tensor | None, result: Any,
                 sigma_true: float | None, sigma_estimate: float | None) -> dict:
    """Write an image's folder (write_image_outputs) and print its lines; what the run keeps of it: its table row and
    its metrics.json entry. `result`: dip_denoise.py's DenoiseResult; `source`: the image's portable name."""
    write_image_outputs(folder / name, name, noisy, clean, result)
    m = result.metrics
    facts = dict(source=source, height=noisy.shape[-2], width=noisy.shape[-1], stop_rule=result.stop_rule,
                 oracle_iteration=result.oracle_iteration, sigma=result.sigma, sigma_true=sigma_true,
                 sigma_estimate=sigma_estimate)
    for rule, choice in result.choices.items():
        facts.update({f"{rule}_iteration": choice.iteration, f"{rule}_fired": choice.fired,
                      f"{rule}_fired_iteration": choice.fired_iteration,
                      f"{rule}_centred_iteration": choice.centred_iteration})
    facts.update(backtracks=result.backtracks, restores_exhausted=result.restores_exhausted,
                 iterations_run=result.iterations_run, seconds=result.seconds,
                 seconds_per_iteration=result.seconds / max(result.iterations_run, 1))
    row = dict(image=name, **facts)
    if clean is not None:
        row.update(psnr_noisy=m["noisy"]["psnr"], psnr_final=m["final_output"]["psnr"],
                   psnr_final_average=m["final_average"]["psnr"], psnr_oracle=m["oracle"]["psnr"],
                   ssim_oracle=m["oracle"]["ssim"])
        for candidate in candidates(list(result.choices)):
            row.update({f"psnr_{candidate}": m[candidate]["psnr"], f"ssim_{candidate}": m[candidate]["ssim"]})
    print(f"{name:>12} ({noisy.shape[-2]}x{noisy.shape[-1]}): {result.seconds:.1f} s, {result.backtracks} backtracks"
          + ("" if result.sigma is None else f", σ {result.sigma * 255:.1f}/255"), flush=True)
    if clean is not None:
        print(f"{'':>14}noisy {m['noisy']['psnr']:.2f}, final average {m['final_average']['psnr']:.2f}, oracle "
              f"{m['oracle']['psnr']:.2f} dB (it. {result.oracle_iteration})")
    for candidate in candidates(list(result.choices)):
        score = f"{m[candidate]['psnr']:.2f} dB, " if clean is not None else ""
        print(f"{'':>14}{TITLES[candidate] + (' (stop rule)' if candidate == result.stop_rule else ''):<41} "
              f"{score}{result.summary(rule_of(candidate))}")
    return dict(row=row, item=dict(m, **facts, device=result.device))
