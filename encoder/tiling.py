"""Gundam tiling: which (cols, rows) grid of tiles an image gets. Pure arithmetic, no pixels.

Same rule as the reference (`dynamic_preprocess` / `find_closest_aspect_ratio` of the official
DeepSeek-OCR code, `get_optimal_tiled_canvas` of transformers' unlimited_ocr model):

1. candidates: every (cols, rows) with min_tiles <= cols*rows <= max_tiles, enumerated cols-major
   ((1, 1), (1, 2), ..., (2, 1), ...) and stably sorted by cols*rows;
2. keep the candidate whose cols/rows is closest to width/height (strictly closer replaces);
3. on an exact tie, the later candidate replaces the current one when
   width*height > 0.5 * tile_size**2 * cols*rows (the later candidate's tile count).

The order among candidates with the same tile count matters only for an exact tie between two of them
(e.g. (1, 2) and (2, 1) for a 5:4 image when min_tiles == max_tiles == 2); it follows transformers'
deterministic order. (The official code builds the candidates in a Python set, then sorts: same-count
candidates then come in set order.)
"""

from __future__ import annotations

from functools import lru_cache

# Guard against absurd --max-tiles values: 64 tiles of 640 already give 64*110 = 7040 image tokens of
# the model's 8192-token context, and 64*640*640*3 float32 = 315 MB of tile pixels.
MAX_TILES_LIMIT = 64


def check_tile_range(min_tiles: int, max_tiles: int) -> None:
    if not (isinstance(min_tiles, int) and isinstance(max_tiles, int)):
        raise ValueError(f"min_tiles and max_tiles must be integers (got {min_tiles!r}, {max_tiles!r})")
    if min_tiles < 1:
        raise ValueError(f"min_tiles must be >= 1 (got {min_tiles})")
    if max_tiles < min_tiles:
        raise ValueError(f"max_tiles ({max_tiles}) must be >= min_tiles ({min_tiles})")
    if max_tiles > MAX_TILES_LIMIT:
        raise ValueError(f"max_tiles must be <= {MAX_TILES_LIMIT} (got {max_tiles})")


@lru_cache(maxsize=64)
def candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """All (cols, rows) with min_tiles <= cols*rows <= max_tiles, in the reference's order."""
    check_tile_range(min_tiles, max_tiles)
    grids = [
        (cols, rows)
        for cols in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= cols * rows <= max_tiles
    ]
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))  # sorted() is stable


def choose_grid(width: int, height: int, min_tiles: int, max_tiles: int, tile_size: int) -> tuple[int, int]:
    """The (cols, rows) tile grid for an image of width x height pixels (see the module docstring).

    The caller decides whether to tile at all (the reference tiles only when width or height exceeds
    tile_size); this function always returns a candidate grid.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive (got {width}x{height})")
    aspect_ratio = width / height
    area = width * height
    best_diff = float("inf")
    best = (1, 1)
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect_ratio - cols / rows)
        if diff < best_diff:
            best_diff = diff
            best = (cols, rows)
        elif diff == best_diff:
            # same float expression and evaluation order as the reference
            if area > 0.5 * tile_size * tile_size * cols * rows:
                best = (cols, rows)
    return best
