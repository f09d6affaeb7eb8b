"""``PatchPipeline``: slides → tissue masks → positions → exact-resolution pixels → views."""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wsistream.backends.base import SlideBackend, SlideHandle
from wsistream.backends.openslide import OpenSlideBackend
from wsistream.pipeline._views import prepare_views
from wsistream.pipeline.adapters import DatasetAdapter, PatchFilter
from wsistream.pipeline.cache import process_mask_cache
from wsistream.pipeline.failures import append_failure, read_failure_log
from wsistream.pipeline.mpp import MppPolicy
from wsistream.pipeline.opening import OpenFailure, SlideOpener
from wsistream.pipeline.paths import resolve_slide_paths
from wsistream.pipeline.seeding import fresh_seed
from wsistream.pipeline.slot import Slot, SlotCounters
from wsistream.pipeline.stats import PipelineStats
from wsistream.pipeline.stream import PatchStream, StreamSpec, check_schedule
from wsistream.sampling.base import PatchSampler, Position
from wsistream.sampling.grid import GridSampler
from wsistream.sampling.random import RandomSampler
from wsistream.storage.urls import is_url
from wsistream.tissue.base import DEFAULT_OVERVIEW_SIDE, TissueDetector, TissueMask
from wsistream.tissue.otsu import OtsuTissueDetector
from wsistream.types import FailureRecord, PatchResult, SlideProperties

logger = logging.getLogger("wsistream")

if TYPE_CHECKING:
    from wsistream.transforms.base import PatchTransform
    from wsistream.views import ViewConfig


@dataclass(kw_only=True, eq=False)
class PatchPipeline:
    """Stream patches from a pool of slides, forever or for one pass.

    ``pool_size`` slides are open at once; each visit takes
    ``patches_per_visit`` patches from one slide, then moves to the next pool
    slide (round robin).  A slide retires after ``patches_per_slide`` attempts
    (-1: never, or when a finite sampler is exhausted) and the next slide of the
    queue replaces it.  The queue is the slide list in order
    (``slide_sampling="sequential"``) or a seeded permutation per epoch
    (``"random"``); with ``cycle=True`` a new epoch starts when the queue is
    used up, so the stream never ends.

    A slide that cannot be used (missing, unopenable, no µm/px when
    ``target_mpp`` is asked, no tissue, too small, undecodable regions) is
    recorded in :attr:`failures`, logged once and skipped; when no slide can
    produce a patch the iteration raises
    :class:`~wsistream.errors.NoUsableSlidesError` instead of spinning.

    Same ``seed`` + slides + config ⇒ the same patches, views and order
    (see :mod:`wsistream.pipeline.seeding`).

    Parameters
    ----------
    slide_paths
        A directory (searched recursively), a glob, a ``.txt`` list, one file, or a list of paths;
        or ``s3://`` / ``gs://`` / ``https://`` URLs of the same kinds, read with
        ``backend=TiffSlideBackend(storage=...)`` (``docs/storage.md``).
    backend : SlideBackend
        Slide reader factory. Default :class:`~wsistream.backends.OpenSlideBackend`.
    tissue_detector : TissueDetector
        Computes the tissue mask from the overview. Default :class:`~wsistream.tissue.OtsuTissueDetector`.
    sampler : PatchSampler
        Where to read (:class:`~wsistream.sampling.RandomSampler`, :class:`~wsistream.sampling.GridSampler`).
    views : list of ViewConfig, optional
        SSL views made from each patch (``result.views``).
    view_rendering : {"cpu", "device"}
        ``"cpu"`` (default) renders the views in the worker. ``"device"``
        only draws their parameters (:func:`~wsistream.views.plan_views`, the
        same random numbers) into ``result.view_plans`` and leaves the pixels
        to :class:`wsistream.torch.DeviceViews` on the accelerator: the
        worker's cost of ten DINOv2 views drops from more than a patch read
        to almost nothing (``docs/performance.md``).
    patch_filter : PatchFilter, optional
        Pixel-level QC after the read; a rejected patch still counts as an attempt.
    transforms : PatchTransform or list, optional
        Applied to ``result.image`` when no views are configured.
    shared_transforms : PatchTransform or list, optional
        Applied once to the patch before the views are cropped from it.
    dataset_adapter : DatasetAdapter, optional
        Fills ``slide_metadata`` (dataset name, patient id) from the path.
    overview_side : int
        Longest side of the overview used for tissue detection. Default
        :data:`~wsistream.tissue.DEFAULT_OVERVIEW_SIDE` (1024), the same as the
        feature tilings and ``wsistream tissue``: read from the coarsest pyramid
        level at least 0.45 × that size (on an 8000² slide with levels 1/4/16,
        level 2 = 500², a mask cell of 16 level-0 px, 1/14 of a 224-px patch at
        0.5 µm/px; CLAM segments at a downsample of ~64).
    thumbnail_size : int or (int, int), optional
        Deprecated name of ``overview_side`` (its longest side is used), with a
        ``DeprecationWarning``; passing both is an error.
    tissue_mask_cache_size : int
        Masks kept in an LRU shared by the pipelines of this process (the per-pass
        copies ``WsiStreamDataset`` makes included) for slides that are reopened;
        0 disables it. Default 16.
    pool_size : int
        Slides open at once. Default 8.
    patches_per_slide : int
        Attempts per slide visit before it retires; -1 = unlimited. Default 100.
    patches_per_visit : int
        Consecutive patches from one slide before moving to the next. Default 1.
    slide_sampling : {"sequential", "random"}
        Queue order within an epoch.
    cycle : bool
        Start a new epoch when the queue is used up (endless stream).
    replacement : {"with_replacement", "without_replacement"}
        With ``"without_replacement"`` a :class:`RandomSampler` draws from the
        slide's non-overlapping tissue grid in a seeded order that continues
        across reopenings (each tile once before any repeats).
    seed : int, optional
        Root of all randomness; ``None`` draws one (kept in :attr:`seed_used`).
    mpp_overrides : mapping or CSV path, optional
        Per-slide level-0 µm/px (``slide,mpp`` CSV); wins over the file.
    mpp_fallback : float, optional
        µm/px for slides whose file has none (recorded as source ``"fallback"``).
    max_read_errors : int
        Undecodable regions after which a slide retires. Default 8.
    failure_log : path, optional
        Append one JSON line per failure (time, slide, stage, error type, message, retired).
    skip_known_failures : path, optional
        A failure log of an earlier run: slides it lists as retired are skipped up
        front (listed in :attr:`quarantined`) instead of failing again every cycle.
    """

    slide_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
    sampler: PatchSampler
    backend: SlideBackend = field(default_factory=OpenSlideBackend)
    tissue_detector: TissueDetector = field(default_factory=OtsuTissueDetector)
    views: Sequence[ViewConfig] | None = None
    view_rendering: Literal["cpu", "device"] = "cpu"
    patch_filter: PatchFilter | None = None
    transforms: PatchTransform | Sequence[PatchTransform] | None = None
    shared_transforms: PatchTransform | Sequence[PatchTransform] | None = None
    dataset_adapter: DatasetAdapter | None = None
    overview_side: int = DEFAULT_OVERVIEW_SIDE
    thumbnail_size: int | tuple[int, int] | None = None
    tissue_mask_cache_size: int = 16
    pool_size: int = 8
    patches_per_slide: int = 100
    patches_per_visit: int = 1
    slide_sampling: Literal["sequential", "random"] = "sequential"
    cycle: bool = False
    replacement: Literal["with_replacement", "without_replacement"] = "with_replacement"
    seed: int | None = 0
    mpp_overrides: Mapping[str, float] | str | os.PathLike[str] | None = None
    mpp_fallback: float | None = None
    max_read_errors: int = 8
    failure_log: str | os.PathLike[str] | None = None
    skip_known_failures: str | os.PathLike[str] | None = None

    failures: list[FailureRecord] = field(default_factory=list, init=False, repr=False)
    stats: PipelineStats = field(default_factory=PipelineStats, init=False, repr=False)

    def __post_init__(self) -> None:
        self._take_thumbnail_size()
        check_schedule(
            self.pool_size, self.patches_per_slide, self.patches_per_visit, self.max_read_errors, self.slide_sampling
        )
        self._check_components()
        self._check_slides()
        self._views, self._planner = prepare_views(self.views, self.view_rendering, self.sampler.patch_size)
        self.mpp_policy = MppPolicy.build(self.mpp_overrides, self.mpp_fallback)
        #: The seed actually used (drawn once when ``seed=None``).
        self.seed_used = int(self.seed) if self.seed is not None else fresh_seed()
        self._transforms = _compose(self.transforms)
        self._shared_transforms = _compose(self.shared_transforms)
        #: Slides skipped up front because ``skip_known_failures`` lists them.
        self.quarantined: list[str] = self._load_quarantine()
        self._opener = SlideOpener(
            backend=self.backend,
            sampler=self.sampler,
            tissue_detector=self.tissue_detector,
            mpp_policy=self.mpp_policy,
            dataset_adapter=self.dataset_adapter,
            mask_cache=process_mask_cache(self.tissue_mask_cache_size),
            overview_side=self.overview_side,
            replacement=self.replacement,
            patches_per_slide=self.patches_per_slide,
            seed=self.seed_used,
            view_mpps=tuple(sorted({v.mpp_override for v in self._views or () if v.mpp_override is not None})),
        )

    def _check_components(self) -> None:
        """Types of the components and the combinations of them that cannot stream."""
        if self.replacement not in ("with_replacement", "without_replacement"):
            raise ValueError(f"replacement={self.replacement!r}; pass 'with_replacement' or 'without_replacement'")
        if self.replacement == "without_replacement" and not isinstance(self.sampler, (RandomSampler, GridSampler)):
            raise ValueError(
                f"replacement='without_replacement' needs a fixed-resolution RandomSampler or a GridSampler, "
                f"not {type(self.sampler).__name__}; pass replacement='with_replacement'"
            )
        if not isinstance(self.sampler, PatchSampler):
            raise TypeError(f"sampler must be a PatchSampler (e.g. RandomSampler), got {type(self.sampler).__name__}")
        if not isinstance(self.backend, SlideBackend):
            raise TypeError(
                f"backend must be a SlideBackend (e.g. OpenSlideBackend()), got {type(self.backend).__name__}"
            )
        if not isinstance(self.tissue_detector, TissueDetector):
            raise TypeError(f"tissue_detector must be a TissueDetector, got {type(self.tissue_detector).__name__}")
        if self.overview_side < 16:
            raise ValueError(f"overview_side must be >= 16 pixels, got {self.overview_side}")
        if not self.cycle and not self.sampler.finite and self.patches_per_slide == -1:
            num = getattr(self.sampler, "num_patches", -1)
            if num == -1:
                raise ValueError(
                    "an endless sampler (num_patches=-1) with patches_per_slide=-1 never moves past the first "
                    "pool; pass patches_per_slide=N or a finite num_patches"
                )

    def _take_thumbnail_size(self) -> None:
        """Move a deprecated ``thumbnail_size`` into ``overview_side`` (issue 19 item 6: one name, one default)."""
        if self.thumbnail_size is None:
            return
        if self.overview_side != DEFAULT_OVERVIEW_SIDE:
            raise ValueError(
                f"thumbnail_size={self.thumbnail_size!r} and overview_side={self.overview_side}: "
                "pass overview_side only (thumbnail_size is its deprecated name)"
            )
        warnings.warn(
            "PatchPipeline(thumbnail_size=...) is renamed overview_side (an int: the longest side); "
            "the old name will be removed",
            DeprecationWarning,
            stacklevel=4,
        )
        size = self.thumbnail_size
        self.overview_side = int(max(size)) if isinstance(size, (tuple, list)) else int(size)
        self.thumbnail_size = None

    def _check_slides(self) -> None:
        """The slide list resolves to at least one slide, and URLs only go to a backend that reads them."""
        if not self.slide_list:
            raise ValueError(f"slide_paths={self.slide_paths!r} contains no slide; pass files, a folder or a glob")
        if not self.backend.reads_urls and any(is_url(p) for p in self.slide_list):
            raise ValueError(
                f"slide_paths has URLs ({next(p for p in self.slide_list if is_url(p))}) and backend="
                f"{self.backend!r} reads local files only; pass backend=TiffSlideBackend() (docs/storage.md)"
            )

    def _load_quarantine(self) -> list[str]:
        """Slides of :attr:`slide_list` that ``skip_known_failures`` lists as retired (none when unset)."""
        if self.skip_known_failures is None:
            return []
        if self.failure_log is not None and _same_file(self.failure_log, self.skip_known_failures):
            raise ValueError(
                f"failure_log and skip_known_failures are the same file ({self.failure_log}): the quarantine "
                "would grow while the run streams, so a resumed run would skip other slides than the "
                "interrupted one; log to a new file (e.g. run2/failures.jsonl) and skip the old run's log"
            )
        known = read_failure_log(self.skip_known_failures)
        quarantined = [p for p in self.slide_list if p in known]
        if quarantined:
            logger.warning("wsistream: %d slides quarantined by %s", len(quarantined), self.skip_known_failures)
        return quarantined

    # -- public ------------------------------------------------------------------
    @cached_property
    def slide_list(self) -> list[str]:
        """The resolved, ordered list of slide files."""
        return resolve_slide_paths(self.slide_paths, getattr(self.backend, "storage", None))

    @property
    def max_overview_side(self) -> int:
        """Deprecated name of :attr:`overview_side`."""
        warnings.warn(
            "PatchPipeline.max_overview_side is renamed overview_side; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.overview_side

    def stream_spec(self) -> StreamSpec:
        """The scheduling part of this config, as the stream takes it."""
        return StreamSpec(
            slide_list=tuple(self.slide_list),
            pool_size=self.pool_size,
            patches_per_slide=self.patches_per_slide,
            patches_per_visit=self.patches_per_visit,
            max_read_errors=self.max_read_errors,
            slide_sampling=self.slide_sampling,
            cycle=self.cycle,
            seed=self.seed_used,
            quarantined_indices=frozenset(self.quarantined_indices),
        )

    def __iter__(self) -> PatchStream:
        return PatchStream(self.stream_spec(), self)

    def resume(self, state: Mapping[str, Any]) -> PatchStream:
        """A stream that continues exactly where ``PatchStream.state_dict()`` was taken."""
        return PatchStream(self.stream_spec(), self, dict(state))

    @property
    def quarantined_indices(self) -> list[int]:
        """Indices into :attr:`slide_list` of the quarantined slides."""
        wanted = set(self.quarantined)
        return [i for i, p in enumerate(self.slide_list) if p in wanted]

    def failure_summary(self) -> dict[str, int]:
        """Failures of this pipeline counted by error type (plus quarantined slides)."""
        counts = dict(Counter(f.error_type for f in self.failures))
        if self.quarantined:
            counts["quarantined"] = len(self.quarantined)
        return counts

    def record_failure(self, record: FailureRecord) -> None:
        """Keep, log once, and append to :attr:`failure_log` when set."""
        self.failures.append(record)
        logger.warning("wsistream: %s %s", "skipping" if record.retired else "skipping region of", record)
        if self.failure_log is not None:
            append_failure(self.failure_log, record)

    # -- used by PatchStream (its PatchSource protocol) and qc ---------------------
    def open_slot(self, path: str, counters: SlotCounters) -> Slot | OpenFailure:
        """Open ``path`` into a pool slot (:class:`~wsistream.pipeline.opening.SlideOpener`)."""
        return self._opener.open(path, counters)

    def preopen(self, paths: list[str]) -> None:
        """Let the backend start opening ``paths`` (remote backends open them in background threads)."""
        self.backend.preopen(paths, overview_side=self.overview_side)

    def tissue_mask(self, handle: SlideHandle, props: SlideProperties) -> TissueMask:
        """The slide's mask, from the process's LRU or computed from the overview."""
        return self._opener.tissue_mask(handle, props)

    def make_result(self, slot: Slot, position: Position, rng: np.random.Generator) -> PatchResult | None:
        """Read, filter, transform and build the views of one patch (``None`` if filtered)."""
        plan = position.plan or slot.plan
        x0, y0 = plan.snap(position.x0, position.y0, slot.metadata.properties.level_dimensions[plan.level])
        image = slot.read(x0, y0, plan)
        if self.patch_filter is not None and not self.patch_filter.accept(image):
            self.stats.patches_filtered += 1
            return None
        if self._shared_transforms is not None:
            image = self._shared_transforms(image, rng)
        views = view_plans = None
        if self._planner is not None:
            view_plans = self._planner.plan(image.shape[0], image.shape[1], rng)
        elif self._views:
            from wsistream.views import render_views

            tolerance = self.sampler.mpp_tolerance
            views = render_views(
                image, self._views, rng, read_at_mpp=lambda mpp: slot.read_centred(position, mpp, tolerance)
            )
        elif self._transforms is not None:
            image = self._transforms(image, rng)
        return PatchResult(
            image=image,
            coordinate=slot.coordinate(x0, y0, plan),
            tissue_fraction=position.tissue_fraction,
            slide_metadata=slot.metadata,
            views=views,
            view_plans=view_plans,
        )


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (resolved, so ``./x`` and ``x`` match; the file need not exist)."""
    return os.path.realpath(a) == os.path.realpath(b)


def _compose(transforms: Any) -> Any:
    if transforms is None:
        return None
    if isinstance(transforms, (list, tuple)):
        from wsistream.transforms import ComposeTransforms

        return ComposeTransforms(tuple(transforms))
    return transforms
