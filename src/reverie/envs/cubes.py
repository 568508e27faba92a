"""The 3D cubes world of C-SWM (Kipf, van der Pol and Welling, ICLR 2020): the 2D shapes world's rules, drawn
as coloured cubes on a grey floor seen in perspective from above and in front.

:class:`Cubes` is :class:`~reverie.envs.shapes.Shapes` (the same grid, pushes, blocking, seeded resets,
``info["positions"]`` and batched :func:`~reverie.envs.shapes.push`) with another picture: each object is a
unit cube standing on its cell of a ``width x height`` floor, in the reference's colours (matplotlib's
purple, green, orange, blue and brown, then four more), its visible faces lit by one directional light
(the top brightest) and outlined in black, drawn with a pinhole camera placed in front of the grid and
above it and looking down at its centre. The image is ``image_size x image_size`` RGB uint8 (the paper:
50 x 50). Row 0 is the back row of the floor, column 0 its left side, as row 0 is the top of the shapes
image.

Drawing is exact painter's order plus supersampling: every cube's visible faces are filled with PIL at
``SUPERSAMPLE`` times the image's resolution and box-averaged down, once per cell when the env is made
(a coverage map and a shade map, :func:`cell_sprites`); a frame then composites the floor and the
cubes back to front (rows from the back, then within a row the cube farther from the camera sideways
first; for unit cubes on one layer seen from in front of the grid this order is exact). A frame is a
handful of array operations, so the paper's 10,000 evaluation episodes render in seconds.

Registered id (``reverie.envs.shapes.register`` registers it with the 2D world): ``reverie/Cubes-v0``
(100-step episodes), e.g. ``reverie train cswm --preset cubes``.
"""

from __future__ import annotations

from functools import lru_cache

import gymnasium as gym
import numpy as np
from matplotlib.colors import to_rgb
from PIL import Image, ImageDraw

from reverie.envs.shapes import Shapes

COLOURS = np.array([[round(255 * c) for c in to_rgb(name)] for name in
                    ("purple", "green", "orange", "blue", "brown", "red", "cyan", "magenta", "olive")], np.float32)
"""Cube colours, the reference's five first (matplotlib's named colours), RGB in [0, 255]."""
FLOOR = 128.0
"""Grey level of the floor (the reference's grey bottom pane); the background is white."""
SUPERSAMPLE = 4
"""Drawing resolution over the image's, for antialiased edges."""
ELEVATION, AZIMUTH, DISTANCE = np.radians(55.0), np.radians(25.0), 2.2
"""Camera: angle above the floor, turn to the right of straight ahead, distance in floor diagonals."""
LIGHT = np.array([-0.4, -0.7, 1.0]) / np.linalg.norm([-0.4, -0.7, 1.0])
"""Direction toward the light (x right, y back, z up)."""
AMBIENT = 0.35
"""Shade of a face turned away from the light; a face facing it has shade 1."""

# the five faces a cube can show: outward normal and its four corners (unit cube at the origin)
FACES = [
    (np.array([0, 0, 1]), np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]])),
    (np.array([0, -1, 0]), np.array([[0, 0, 0], [1, 0, 0], [1, 0, 1], [0, 0, 1]])),
    (np.array([0, 1, 0]), np.array([[0, 1, 0], [1, 1, 0], [1, 1, 1], [0, 1, 1]])),
    (np.array([-1, 0, 0]), np.array([[0, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1]])),
    (np.array([1, 0, 0]), np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 1]])),
]


class Camera:
    """A pinhole camera in front of and above a ``width x height`` floor (x right, y back, z up), framing the floor
    and cubes of height 1 in an ``size x size`` image: ``pixels`` maps world points to image (column, row)."""

    def __init__(self, width: int, height: int, size: int):
        centre = np.array([width / 2, height / 2, 0.5])
        reach = DISTANCE * float(np.hypot(width, height))
        self.eye = centre + reach * np.array([np.cos(ELEVATION) * np.sin(AZIMUTH),
                                              -np.cos(ELEVATION) * np.cos(AZIMUTH), np.sin(ELEVATION)])
        forward = (centre - self.eye) / np.linalg.norm(centre - self.eye)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        self.axes = np.stack([right, np.cross(right, forward), forward])
        corners = np.array([[x, y, z] for x in (0, width) for y in (0, height) for z in (0, 1)], float)
        plane = self._plane(corners)
        low, high = plane.min(0), plane.max(0)
        self.scale = 0.92 * size / float((high - low).max())
        self.offset = size / 2 - self.scale * (low + high) / 2

    def _plane(self, points: np.ndarray) -> np.ndarray:
        cam = (points - self.eye) @ self.axes.T
        return np.stack([cam[:, 0] / cam[:, 2], -cam[:, 1] / cam[:, 2]], 1)

    def pixels(self, points: np.ndarray) -> np.ndarray:
        """World points ``[N, 3]`` -> image coordinates ``[N, 2]`` (column, row; pixel units, 0 at the corner)."""
        return self._plane(np.asarray(points, float)) * self.scale + self.offset


def _cube_origin(row: int, col: int, height: int) -> np.ndarray:
    """World position of the near lower left corner of the cube on cell (row, col)."""
    return np.array([col, height - 1 - row, 0], float)


@lru_cache(maxsize=8)
def cell_sprites(width: int, height: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The drawing's parts for a ``width x height`` floor in a ``size x size`` image: the background ``[size, size]``
    (grey floor on white, grey levels), and per cell ``[height, width, size, size]`` the coverage of its cube in
    [0, 1] and its shade premultiplied by the coverage (a cube of colour c adds ``shade * c`` over
    ``1 - coverage`` of what lies behind)."""
    camera = Camera(width, height, size)
    big = size * SUPERSAMPLE

    def points(world: np.ndarray) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in camera.pixels(world) * SUPERSAMPLE]

    def reduced(image: Image.Image) -> np.ndarray:
        return np.asarray(image.reduce(SUPERSAMPLE), np.float32) / 255.0

    floor = Image.new("L", (big, big), 255)
    ImageDraw.Draw(floor).polygon(points(np.array([[0, 0, 0], [width, 0, 0], [width, height, 0], [0, height, 0]])),
                                  fill=int(FLOOR))
    coverage = np.zeros((height, width, size, size), np.float32)
    shade = np.zeros_like(coverage)
    for row in range(height):
        for col in range(width):
            origin = _cube_origin(row, col, height)
            cover, light = Image.new("L", (big, big), 0), Image.new("L", (big, big), 0)
            draw_cover, draw_light = ImageDraw.Draw(cover), ImageDraw.Draw(light)
            for normal, corners in FACES:
                world = origin + corners
                if float(normal @ (camera.eye - world.mean(0))) <= 0:      # faces away from the camera
                    continue
                polygon = points(world)
                value = round(255 * (AMBIENT + (1 - AMBIENT) * max(0.0, float(normal @ LIGHT))))
                draw_cover.polygon(polygon, fill=255)
                draw_light.polygon(polygon, fill=value)
                draw_cover.line([*polygon, polygon[0]], fill=255, width=SUPERSAMPLE // 2)
                draw_light.line([*polygon, polygon[0]], fill=0, width=SUPERSAMPLE // 2)   # black edges
            coverage[row, col], shade[row, col] = reduced(cover), reduced(light)
    return reduced(floor) * 255.0, coverage, shade


def painter_order(positions: np.ndarray, width: int, height: int) -> np.ndarray:
    """Indices of the cubes at ``positions [K, 2]`` (row, column) back to front: rows from the back (row 0)
    forward, and within a row the cube farther sideways from the camera first."""
    eye_x = Camera(width, height, 1).eye[0]
    sideways = np.abs(positions[:, 1] + 0.5 - eye_x)
    return np.lexsort((-sideways, positions[:, 0]))


class Cubes(Shapes):
    """Push one of ``num_objects`` cubes per step on a grid, seen in 3D (see the module docstring)."""

    def __init__(self, width: int = 5, height: int = 5, num_objects: int = 5, image_size: int = 50,
                 render_mode: str | None = None):
        if not (isinstance(image_size, int) and not isinstance(image_size, bool) and image_size >= 8):
            raise ValueError(f"image_size must be an integer of at least 8 pixels, got {image_size!r}")
        super().__init__(width, height, num_objects, render_mode)
        self.image_shape = (image_size, image_size, 3)
        self.observation_space = gym.spaces.Box(0, 255, self.image_shape, np.uint8)
        self._background, self._coverage, self._shade = cell_sprites(width, height, image_size)

    def draw(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The image ``[image_size, image_size, 3]`` uint8 of ``positions`` (the current ones by default)."""
        positions = self.positions if positions is None else np.asarray(positions)
        image = np.repeat(self._background[..., None], 3, -1)
        for i in painter_order(positions, self.width, self.height):
            row, col = positions[i]
            cover = self._coverage[row, col][..., None]
            image = image * (1.0 - cover) + self._shade[row, col][..., None] * COLOURS[i]
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)
