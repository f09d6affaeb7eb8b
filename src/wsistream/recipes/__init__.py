"""Paper recipes: ready pipelines with their deviation tables (``wsistream recipes``)."""

from wsistream.recipes.base import (
    DeviationRow,
    Recipe,
    build_pipeline,
    get_recipe,
    list_recipes,
    recipes_markdown,
    register,
)
from wsistream.recipes.published import GPFM, PHIKON, PHIKON_V2, build_gpfm, build_phikon, build_phikon_v2

__all__ = [
    "GPFM",
    "PHIKON",
    "PHIKON_V2",
    "DeviationRow",
    "Recipe",
    "build_gpfm",
    "build_phikon",
    "build_phikon_v2",
    "build_pipeline",
    "get_recipe",
    "list_recipes",
    "recipes_markdown",
    "register",
]
