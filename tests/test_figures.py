"""dipkit.figures: the 8-bit PNGs, the PSNR scatter, and that every figure is written."""

import math

import numpy as np
import torch
from PIL import Image

from dipkit import figures


def test_save_png_writes_round_255_x_clipped_for_colour_and_grey(tmp_path):
    colour = torch.tensor([-0.1, 0.0, 0.5, 0.502, 1.0, 1.3]).view(1, 3, 1, 2)
    figures.save_png(tmp_path / "colour.png", colour)
    read = np.asarray(Image.open(tmp_path / "colour.png"))
    assert read.shape == (1, 2, 3) and read.dtype == np.uint8
    assert read[0].T.flatten().tolist() == [0, 0, 128, 128, 255, 255]
    grey = torch.rand(5, 7)
    figures.save_png(tmp_path / "grey.png", grey)
    figures.save_png(tmp_path / "grey4.png", grey[None, None])
    read = np.asarray(Image.open(tmp_path / "grey.png"))
    assert read.shape == (5, 7) and (read == (grey.numpy() * 255).round()).all()
    assert (tmp_path / "grey.png").read_bytes() == (tmp_path / "grey4.png").read_bytes()


def test_the_scatter_has_a_point_per_scored_run_per_variant_and_the_blurred_inputs_mean(tmp_path):
    rows = [dict(variant="blurred input", psnr_nb=40.0, psnr_gt=20.0), dict(variant="blurred input", psnr_nb=41.0,
                                                                            psnr_gt=22.0),
            dict(variant="a", psnr_nb=30.0, psnr_gt=25.0), dict(variant="a", psnr_nb=math.nan, psnr_gt=26.0),
            dict(variant="b", psnr_nb=33.0), dict(variant="c", psnr_nb=31.0, psnr_gt=27.0)]
    fig = figures._scatter_figure(rows)
    ax = fig.axes[0]
    points = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert points == {"blurred input": [[40, 20], [41, 22]], "a": [[30, 25]], "c": [[31, 27]]}  # b: no truth
    (line,) = ax.lines
    assert line.get_ydata()[0] == 21.0 and line.get_label() == "blurred input (mean PSNR-GT)"
    figures.scatter(tmp_path / "scatter.png", rows)
    assert Image.open(tmp_path / "scatter.png").size == (605, 495)  # 5.5 x 4.5 inches at 110 dpi


def test_grids_and_curves_are_written(tmp_path):
    images = [[(torch.rand(1, 1, 8, 6), "caption")] * 2] * 2
    figures.image_grid(tmp_path / "grid.png", images, ["a", "b"], ["row 0", "row 1"])
    figures.kernel_grid(tmp_path / "kernels.png", [[(torch.rand(5, 5), "k"), (torch.rand(5, 5), "k")],
                                                   [(torch.rand(5, 5), "k")]], ["row 0"], log_scale=(False, True))
    figures.curves(tmp_path / "curves.png", [dict(lines=[([1, 2], [1.0, 0.1], "x")], logy=True)] * 2, n_cols=2)
    for name in ("grid.png", "kernels.png", "curves.png"):
        assert Image.open(tmp_path / name).format == "PNG"


def test_importing_the_figures_leaves_the_processs_matplotlib_backend_alone(tmp_path):
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import dipkit.figures as f, torch; "
            "f.curves(__import__('pathlib').Path(r'%s') / 'c.png', [dict(lines=[([0, 1], [1, 2], 'a')])]); "
            "print(matplotlib.get_backend()); import sys; print('matplotlib.pyplot' in sys.modules)" % tmp_path)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False"]  # the backend the notebook chose, and no pyplot state
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
