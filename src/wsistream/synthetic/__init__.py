"""Synthetic whole-slide images for tests and benchmarks.

Writes real pyramidal Aperio SVS files — the files OpenSlide and TiffSlide read in production, including
the Aperio "JPEG/RGB" colour trap — filled with H&E-like tissue whose position, holes and colours are
known, so readers, tissue detectors and samplers can be tested on real parts instead of mocks.
"""

from wsistream.synthetic.aperio import write_aperio_svs
from wsistream.synthetic.cohort import write_synthetic_cohort

__all__ = ["write_aperio_svs", "write_synthetic_cohort"]
