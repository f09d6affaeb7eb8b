"""Quality control: previews of what the pipeline feeds, and cohort checks."""

from wsistream.qc.preview import MASK_COLOUR, overlay_mask, preview_sheet, preview_slide
from wsistream.qc.validate import ROW_KEYS, validate_cohort, validate_slide

__all__ = [
    "MASK_COLOUR",
    "ROW_KEYS",
    "overlay_mask",
    "preview_sheet",
    "preview_slide",
    "validate_cohort",
    "validate_slide",
]
