"""Quality control: previews of what the pipeline feeds, and cohort checks."""

from wsistream.qc.preview import MASK_COLOUR, overlay_mask, preview_slide

__all__ = ["MASK_COLOUR", "overlay_mask", "preview_slide"]
