"""``PatchPipeline``: slides → tissue masks → positions → exact-resolution pixels → views."""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wsistream.backends.base import SlideBackend, SlideHandle
from wsistream.backends.openslide import OpenSlideBackend
from wsistream.pipeline._views import prepare_views
from wsistream.pipeline.adapters import DatasetAdapter, PatchFilter
from wsistream.pipeline.cache import file_version, process_mask_cache
from wsistream.pipeline.failures import append_failure, read_failure_log
from wsistream.pipeline.mpp import MppPolicy
from wsistream.pipeline.paths import resolve_slide_paths
from wsistream.pipeline.seeding import RngStream, fresh_seed, stream_rng
from wsistream.pipeline.slot import Slot, SlotCounters
from wsistream.pipeline.stream import PatchStream
from wsistream.sampling.base import PatchSampler, Position
from wsistream.sampling.grid import GridSampler
from wsistream.sampling.plan import ReadPlan, plan_read
from wsistream.sampling.random import RandomSampler
from wsistream.storage.urls import is_url
from wsistream.tissue.base import TissueDetector, TissueMask
from wsistream.tissue.otsu import OtsuTissueDetector
from wsistream.types import FailureRecord, PatchResult, SlideMetadata, SlideProperties

logger = logging.getLogger("wsistream")

if TYPE_CHECKING:
    from wsistream.transforms.base import PatchTransform
    from wsistream.views import ViewConfig


@dataclass
class PipelineStats:
    """Counters of one pipeline instance (per process)."""

    slides_opened: int = 0
    slides_failed: int = 0
    read_errors: int = 0
    patches_filtered: int = 0


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
    thumbnail_size : int or (int, int)
        Longest side of the overview used for tissue detection. Default 1024:
        read from the coarsest pyramid level at least 0.45 × that size (on an
        8000² slide with levels 1/4/16, level 2 = 500², a 7 ms read), a mask
        cell is then 16 level-0 px there, 1/14 of a 224-px patch at 0.5 µm/px
        (CLAM segments at a downsample of ~64).
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
    thumbnail_size: int | tuple[int, int] = 1024
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
        for name in ("pool_size", "patches_per_visit", "max_read_errors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patches_per_slide == 0 or self.patches_per_slide < -1:
            raise ValueError(f"patches_per_slide must be >= 1, or -1 for unlimited, got {self.patches_per_slide}")
        if self.slide_sampling not in ("sequential", "random"):
            raise ValueError(f"slide_sampling={self.slide_sampling!r}; pass 'sequential' or 'random'")
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
        if self.max_overview_side < 16:
            raise ValueError(f"thumbnail_size must be >= 16 pixels, got {self.thumbnail_size}")
        if not self.cycle and not self.sampler.finite and self.patches_per_slide == -1:
            num = getattr(self.sampler, "num_patches", -1)
            if num == -1:
                raise ValueError(
                    "an endless sampler (num_patches=-1) with patches_per_slide=-1 never moves past the first "
                    "pool; pass patches_per_slide=N or a finite num_patches"
                )
        if not self.slide_list:
            raise ValueError(f"slide_paths={self.slide_paths!r} contains no slide; pass files, a folder or a glob")
        if not self.backend.reads_urls and any(is_url(p) for p in self.slide_list):
            raise ValueError(
                f"slide_paths has URLs ({next(p for p in self.slide_list if is_url(p))}) and backend="
                f"{self.backend!r} reads local files only; pass backend=TiffSlideBackend() (docs/storage.md)"
            )
        self._views, self._planner = prepare_views(self.views, self.view_rendering, self.sampler.patch_size)
        self._mask_cache = process_mask_cache(self.tissue_mask_cache_size)
        self.mpp_policy = MppPolicy.build(self.mpp_overrides, self.mpp_fallback)
        #: The seed actually used (drawn once when ``seed=None``).
        self.seed_used = int(self.seed) if self.seed is not None else fresh_seed()
        self._transforms = _compose(self.transforms)
        self._shared_transforms = _compose(self.shared_transforms)
        #: Slides skipped up front because ``skip_known_failures`` lists them.
        self.quarantined: list[str] = []
        if self.skip_known_failures is not None:
            if self.failure_log is not None and _same_file(self.failure_log, self.skip_known_failures):
                raise ValueError(
                    f"failure_log and skip_known_failures are the same file ({self.failure_log}): the quarantine "
                    "would grow while the run streams, so a resumed run would skip other slides than the "
                    "interrupted one; log to a new file (e.g. run2/failures.jsonl) and skip the old run's log"
                )
            known = read_failure_log(self.skip_known_failures)
            self.quarantined = [p for p in self.slide_list if p in known]
            if self.quarantined:
                logger.warning(
                    "wsistream: %d slides quarantined by %s", len(self.quarantined), self.skip_known_failures
                )

    # -- public ------------------------------------------------------------------
    @cached_property
    def slide_list(self) -> list[str]:
        """The resolved, ordered list of slide files."""
        return resolve_slide_paths(self.slide_paths, getattr(self.backend, "storage", None))

    @property
    def max_overview_side(self) -> int:
        """Longest overview side in pixels (``thumbnail_size`` as an int)."""
        size = self.thumbnail_size
        return int(max(size)) if isinstance(size, (tuple, list)) else int(size)

    def __iter__(self) -> PatchStream:
        return PatchStream(self)

    def resume(self, state: Mapping[str, Any]) -> PatchStream:
        """A stream that continues exactly where ``PatchStream.state_dict()`` was taken."""
        return PatchStream(self, dict(state))

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

    # -- used by PatchStream -------------------------------------------------------
    def tissue_mask(self, handle: SlideHandle, props: SlideProperties) -> TissueMask:
        """The slide's mask, from the LRU or computed from the overview."""
        # everything detect_slide depends on: the process's pipelines share this cache, and a detector that
        # reads at a physical resolution (ModelTissueDetector) gives another mask for another µm/px
        version = file_version(props.slide_path)
        key = (props.slide_path, version, props.mpp, repr(self.tissue_detector), self.max_overview_side)
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = self.tissue_detector.detect_slide(handle, props, self.max_overview_side)
            self._mask_cache.put(key, mask)
        return mask

    def position_iterator(
        self,
        mask: TissueMask,
        plan: ReadPlan,
        props: SlideProperties,
        rng: np.random.Generator,
        counters: SlotCounters,
    ) -> Iterator[Position]:
        """Positions of one slide visit (honours ``replacement``)."""
        if self.replacement == "with_replacement" or not isinstance(self.sampler, RandomSampler):
            return self.sampler.positions(mask, plan, props, rng)
        grid = GridSampler(
            patch_size=self.sampler.patch_size,
            target_mpp=self.sampler.target_mpp,
            level=self.sampler.level,
            tissue_threshold=self.sampler.tissue_threshold,
            mpp_tolerance=self.sampler.mpp_tolerance,
            tissue_criterion=self.sampler.tissue_criterion,
        )
        tiles = list(grid.positions(mask, plan, props, rng))  # scan order; raises NoTissueError if empty
        return _without_replacement(tiles, self.seed_used, counters, self.patches_per_slide)

    def check_view_resolutions(self, props: SlideProperties) -> None:
        """Raise now (stage ``plan``) if a view's ``mpp_override`` cannot be read from this slide."""
        for mpp in sorted({v.mpp_override for v in self._views or () if v.mpp_override is not None}):
            plan_read(props, self.sampler.patch_size, target_mpp=mpp, tolerance=self.sampler.mpp_tolerance)

    def slide_metadata(self, props: SlideProperties) -> SlideMetadata:
        """Metadata for a slide (adapter fields + properties)."""
        fields = dict(self.dataset_adapter.parse(props.slide_path)) if self.dataset_adapter else {}
        return SlideMetadata(
            slide_path=props.slide_path,
            properties=props,
            dataset_name=str(fields.pop("dataset_name", "unknown")),
            patient_id=fields.pop("patient_id", None),
            extra=fields,
        )

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


def _without_replacement(
    tiles: list[Position], seed: int, counters: SlotCounters, patches_per_slide: int
) -> Iterator[Position]:
    """Tiles of a seeded, endless sequence of permutations, starting where this visit begins.

    Visit ``e`` (the slide's ``e``-th epoch) takes items ``[e·n, (e+1)·n)`` of
    ``perm_0 + perm_1 + ...`` with ``n = patches_per_slide`` (-1: one whole
    pass), so every tile is used once before any repeats, with no state kept
    between visits.
    """
    n_tiles = len(tiles)
    per_visit = n_tiles if patches_per_slide < 0 else patches_per_slide
    start = counters.epoch * per_visit
    first_pass, offset = divmod(start, n_tiles)

    def sequence() -> Iterator[Position]:
        for pass_no in itertools.count(first_pass):
            order = stream_rng(seed, RngStream.GRID_ORDER, counters.slide_index, pass_no).permutation(n_tiles)
            begin = offset if pass_no == first_pass else 0
            for i in order[begin:]:
                yield tiles[int(i)]

    return itertools.islice(sequence(), per_visit)
