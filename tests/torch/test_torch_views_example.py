"""examples/dinov2_views_on_gpu.py runs end to end (on CPU torch here): plans from workers, views on the device."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dinov2_views_on_gpu.py"


def test_the_example_streams_dinov2_views_rendered_by_device_views(cohort, tmp_path):
    spec = importlib.util.spec_from_file_location("dinov2_views_on_gpu", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    listing = tmp_path / "slides.txt"
    listing.write_text("\n".join(cohort[:3]) + "\n")
    args = ["--out", str(tmp_path / "run"), "--slides", str(listing), "--batches", "2", "--batch-size", "3"]
    result = module.main([*args, "--num-workers", "1"])
    assert result["patches"] == 6
    assert result["global_shape"] == (6, 3, 224, 224)  # two global crops per patch, concatenated
    assert result["local_shape"] == (24, 3, 96, 96)  # eight local crops per patch
