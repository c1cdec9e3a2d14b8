"""Procedural captioned landscapes, generated deterministically from a seed: the world of the embedded models.

A scene is a sky (a sunny day, a cloudy day, a sunset, a night sky) over a ground (grass, the sea, sand, snow) at a
horizon, optionally with mountains or hills, and up to three objects, at most one in each of three places (on the
left, in the middle, on the right). Objects: the sun, the moon, a tree, a pine tree, a house, a boat, a ball, a car
and a flower; houses, boats, balls, cars and flowers in six colours. Every surface has a texture (clouds and stars,
grass tufts, waves, dunes, snow drifts, windows, sails, wheels, petals), so images have the fine detail a latent
autoencoder must keep. Objects obey the world's rules: boats only on the sea; trees, houses, cars and flowers only on
land; the sun by day, the moon by night. Captions name every object and its place, left to right, e.g.
"a sunset over the sea with mountains, a red boat on the left and the sun on the right".

The scenes extend to any width (panoramas: the three places spread over the width), objects sit in well-defined
regions (masked generation), and distinct captions give distinct readings (ambiguous images).

Held-out captions: every caption whose stable hash falls in the last 10% is never used for training (``split``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

SKIES = {"day": "a sunny day", "cloudy": "a cloudy day", "sunset": "a sunset", "night": "a night sky"}
GROUNDS = {"grass": "grass", "sea": "the sea", "sand": "sand", "snow": "snow"}
LANDFORMS = {None: "", "mountains": " with mountains", "hills": " with hills"}
OBJECTS = ("sun", "moon", "tree", "pine", "house", "boat", "ball", "car", "flower")
NOUNS = {"pine": "pine tree"}
COLOURED = ("house", "boat", "ball", "car", "flower")
COLOURS = {
    "red": (0.85, 0.1, 0.1),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "white": (0.97, 0.97, 0.97),
    "purple": (0.55, 0.15, 0.7),
    "orange": (0.98, 0.5, 0.05),
}
POSITIONS = {"left": 1 / 6, "middle": 0.5, "right": 5 / 6}  # place centres, as fractions of the width
PLACE = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
SKY_RGB = {
    "day": ((0.25, 0.5, 0.95), (0.7, 0.85, 1.0)),
    "cloudy": ((0.5, 0.55, 0.62), (0.78, 0.8, 0.84)),
    "sunset": ((0.35, 0.2, 0.5), (1.0, 0.55, 0.2)),
    "night": ((0.02, 0.03, 0.12), (0.1, 0.12, 0.3)),
}
GROUND_RGB = {"grass": (0.2, 0.6, 0.2), "sea": (0.1, 0.3, 0.7), "sand": (0.85, 0.75, 0.45), "snow": (0.9, 0.93, 0.98)}
LIGHT = {"day": 1.0, "cloudy": 0.85, "sunset": 0.75, "night": 0.4}
# numbers of objects in a scene with objects (scenes without any are drawn with probability ``p_plain``)
OBJECT_COUNTS, OBJECT_COUNT_P = (1, 2, 3), (0.45, 0.35, 0.2)


def allowed(obj: str, sky: str, ground: str) -> bool:
    """The world's rules: boats only on the sea, land things only on land, the sun by day, the moon by night."""
    if obj == "sun":
        return sky in ("day", "sunset")
    if obj == "moon":
        return sky == "night"
    if obj == "boat":
        return ground == "sea"
    if obj in ("tree", "pine", "house", "car", "flower"):
        return ground != "sea"
    return True


@dataclass(frozen=True)
class Thing:
    """One object of a scene: its kind, colour (for coloured kinds) and place."""

    kind: str
    colour: str | None
    position: str

    @property
    def phrase(self) -> str:
        noun = NOUNS.get(self.kind, self.kind)
        noun = f"{self.colour} {noun}" if self.colour else noun
        article = "the" if self.kind in ("sun", "moon") else "an" if noun[0] in "aeiou" else "a"
        return f"{article} {noun} {PLACE[self.position]}"


@dataclass(frozen=True)
class Scene:
    sky: str
    ground: str
    landform: str | None = None
    things: tuple[Thing, ...] = ()

    @property
    def caption(self) -> str:
        text = f"{SKIES[self.sky]} over {GROUNDS[self.ground]}{LANDFORMS[self.landform]}"
        phrases = [t.phrase for t in sorted(self.things, key=lambda t: POSITIONS[t.position])]
        if phrases:
            text += ", " + (", ".join(phrases[:-1]) + " and " if len(phrases) > 1 else "") + phrases[-1]
        return text


def random_scene(rng: np.random.Generator, p_plain: float = 0.25) -> Scene:
    """One scene, uniformly over skies, grounds and landforms; with probability ``p_plain`` no objects, else 1–3
    objects in distinct places, each uniform over the kinds the world allows there (and over colours)."""
    sky, ground = rng.choice(list(SKIES)), rng.choice(list(GROUNDS))
    landform = list(LANDFORMS)[rng.integers(len(LANDFORMS))]
    things = []
    if rng.random() >= p_plain:
        count = rng.choice(OBJECT_COUNTS, p=OBJECT_COUNT_P)
        kinds = [k for k in OBJECTS if allowed(k, sky, ground)]
        for position in sorted(rng.choice(list(POSITIONS), count, replace=False), key=POSITIONS.get):
            kind = str(rng.choice(kinds))
            colour = str(rng.choice(list(COLOURS))) if kind in COLOURED else None
            things.append(Thing(kind, colour, str(position)))
            if kind in ("sun", "moon"):  # one sun, one moon
                kinds.remove(kind)
    return Scene(str(sky), str(ground), landform, tuple(things))


def is_held_out(caption: str) -> bool:
    return hashlib.sha256(caption.encode()).digest()[0] >= 230  # ≈10% of captions


def sample_scenes(rng: np.random.Generator, size: int, held_out: bool = False, p_plain: float = 0.25) -> list[Scene]:
    """``size`` scenes from the training captions (or only from the held-out ones)."""
    out = []
    while len(out) < size:
        scene = random_scene(rng, p_plain)
        if is_held_out(scene.caption) == held_out:
            out.append(scene)
    return out


def held_out_scenes(count: int, seed: int = 0, p_plain: float = 0.25) -> list[Scene]:
    """``count`` held-out scenes with distinct captions, deterministic from ``seed`` (prompt pools for evaluation)."""
    rng, pool = np.random.default_rng([seed, 7]), {}
    while len(pool) < count:
        for s in sample_scenes(rng, count, held_out=True, p_plain=p_plain):
            pool.setdefault(s.caption, s)
    return list(pool.values())[:count]


def vocabulary() -> list[str]:
    """Every word the caption grammar can produce."""
    parts = [*SKIES.values(), *GROUNDS.values(), *LANDFORMS.values(), *PLACE.values(), *COLOURS, *OBJECTS]
    parts += [*NOUNS.values(), "over the a an and ,"]
    return sorted({w for p in parts for w in tokenize_words(p)})


def tokenize_words(text: str) -> list[str]:
    return re.findall(r"[a-z]+|,", text.lower())


# -- rendering ---------------------------------------------------------------------------------------------------
def value_noise(rng: np.random.Generator, H: int, W: int, cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1] of shape (H, W): a random grid with ``cell`` (in units of the height) between its
    knots, bilinearly interpolated — the same look at any resolution."""
    gh, gw = int(np.ceil(1 / cell)) + 2, int(np.ceil(W / H / cell)) + 2
    grid = rng.uniform(-1, 1, (gh, gw))
    y, x = np.arange(H) / H / cell, np.arange(W) / H / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)  # smoothstep: no creases at the knots
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def render(scene: Scene, rng: np.random.Generator, height: int = 64, width: int = 64) -> np.ndarray:
    """Render a scene as float32 RGB (height, width, 3) in [0, 1]; geometry scales with the height, and the
    landscape (horizon, landforms, textures) extends to any width."""
    return render_layers(scene, rng, height, width)[0]


def render_layers(scene: Scene, rng: np.random.Generator, height: int = 64, width: int = 64):
    """``render``'s image and the boolean (height, width) mask of the pixels its objects cover."""
    H, W = height, width
    yy, xx = np.mgrid[0:H, 0:W] / H  # in units of the height
    top, bottom = (np.array(c) for c in SKY_RGB[scene.sky])
    horizon = rng.uniform(0.5, 0.62)
    light = LIGHT[scene.sky]
    img = top + (bottom - top) * np.clip(yy / horizon, 0, 1)[..., None]
    sky = yy < horizon
    if scene.sky == "night":
        stars = (rng.random((H, W)) < 0.012) & (yy < horizon - 0.1)
        img[stars] = 0.9
    if scene.sky in ("day", "cloudy"):
        cover = 0.45 if scene.sky == "day" else 0.05
        puffs = 0.7 * value_noise(rng, H, W, 0.2) + 0.3 * value_noise(rng, H, W, 0.07)
        clouds = np.clip((puffs - cover) * 3, 0, 1) * (yy < horizon - 0.08)
        shade = 0.97 if scene.sky == "day" else 0.62
        img = img * (1 - clouds[..., None]) + shade * clouds[..., None]
    if scene.landform == "mountains":
        phase, period = rng.uniform(0, 1), rng.uniform(0.45, 0.7)
        peak = horizon - rng.uniform(0.2, 0.3) * (1 - 2 * np.abs(((xx / period + phase) % 1) - 0.5))
        rock = (yy >= peak) & sky
        img[rock] = np.array((0.45, 0.43, 0.5)) * light * (1 + 0.12 * value_noise(rng, H, W, 0.08)[rock, None])
        img[rock & (yy < peak + 0.05)] = np.array((0.95, 0.95, 0.97)) * light
    elif scene.landform == "hills":
        top_ = horizon - rng.uniform(0.08, 0.14) * (0.6 + 0.4 * np.cos(xx * 2 * np.pi / 0.9 + rng.uniform(0, 6)))
        hill = (yy >= top_) & sky
        img[hill] = np.array((0.25, 0.5, 0.2)) * light
    ground = np.array(GROUND_RGB[scene.ground]) * light
    below = ~sky
    depth = np.clip((yy - horizon) / (1 - horizon), 0, 1)[..., None]  # 0 at the horizon, 1 at the bottom
    shaded = ground * (0.85 + 0.25 * depth)
    if scene.ground == "grass":
        tufts = value_noise(rng, H, W, 0.05)[..., None]
        shaded = shaded * (1 + 0.2 * tufts)
    elif scene.ground == "sea":
        waves = np.sin(xx * 30 + yy * 60 / (0.2 + depth[..., 0]) + rng.uniform(0, 6)) > 0.8
        shaded = np.where(waves[..., None], np.clip(ground + 0.2, 0, 1), shaded)
    elif scene.ground == "sand":
        dunes = np.sin(yy * 70 + 2 * value_noise(rng, H, W, 0.25))[..., None]
        shaded = shaded * (1 + 0.07 * dunes)
    elif scene.ground == "snow":
        drifts = value_noise(rng, H, W, 0.15)[..., None]
        shaded = shaded * (1 - 0.06 * np.clip(drifts, 0, 1)) + np.array((-0.04, -0.02, 0.02)) * np.clip(drifts, 0, 1)
    img = np.where(below[..., None], shaded, img)
    background = img.copy()
    for thing in scene.things:
        draw(img, thing, scene, rng, horizon, light)
    objects = (img != background).any(-1)
    return np.clip(img + rng.normal(0, 0.008, img.shape), 0, 1).astype(np.float32), objects


def draw(img: np.ndarray, thing: Thing, scene: Scene, rng: np.random.Generator, horizon: float, light: float) -> None:
    """Draw one object in place (coordinates in units of the height; ground objects stand below the horizon)."""
    H, W, _ = img.shape
    yy, xx = np.mgrid[0:H, 0:W] / H
    cx = POSITIONS[thing.position] * W / H + rng.uniform(-0.04, 0.04)
    colour = np.array(COLOURS[thing.colour]) * max(light, 0.6) if thing.colour else None
    s = rng.uniform(0.9, 1.1)  # object scale
    base = horizon + rng.uniform(0.14, 0.22)  # where ground objects stand
    dx, dy = xx - cx, yy - base
    kind = thing.kind
    if kind in ("sun", "moon"):
        r, cy = 0.085 * s, rng.uniform(0.12, horizon - 0.18)
        disc = dx**2 + (yy - cy) ** 2 < r**2
        if kind == "sun":
            glow = (dx**2 + (yy - cy) ** 2 < (1.6 * r) ** 2) & ~disc
            sun = (1.0, 0.85, 0.2) if scene.sky != "sunset" else (1.0, 0.45, 0.1)
            img[glow] = 0.6 * img[glow] + 0.4 * np.array(sun)
            img[disc] = sun
        else:
            img[disc & ~((dx - 0.5 * r) ** 2 + (yy - cy + 0.2 * r) ** 2 < r**2)] = (0.95, 0.95, 0.8)
    elif kind == "tree":
        img[(np.abs(dx) < 0.025 * s) & (dy < 0) & (dy > -0.14 * s)] = np.array((0.4, 0.25, 0.1)) * light
        canopy = dx**2 + (dy + 0.2 * s) ** 2 < (0.1 * s) ** 2
        leaves = 1 + 0.25 * value_noise(rng, H, W, 0.035)[canopy, None]
        img[canopy] = np.array((0.1, 0.45, 0.12)) * light * leaves
    elif kind == "pine":
        img[(np.abs(dx) < 0.02 * s) & (dy < 0) & (dy > -0.06 * s)] = np.array((0.35, 0.2, 0.08)) * light
        for k, (top, half) in enumerate(((-0.3, 0.07), (-0.22, 0.09), (-0.14, 0.11))):
            tier = (dy > top * s) & (dy < (top + 0.1) * s) & (np.abs(dx) < (dy - top * s) / (0.1 * s) * half * s)
            img[tier] = np.array((0.05, 0.3 + 0.04 * k, 0.15)) * light
    elif kind == "house":
        w, h = 0.11 * s, 0.15 * s
        wall = (np.abs(dx) < w) & (dy < 0) & (dy > -h)
        img[wall] = colour
        roof = (dy <= -h) & (dy > -h - 0.1 * s) & (np.abs(dx) < (dy + h + 0.1 * s) / (0.1 * s) * 1.25 * w)
        img[roof] = np.array((0.35, 0.12, 0.08)) * light
        img[(np.abs(dx) < 0.025 * s) & (dy < 0) & (dy > -0.07 * s)] = np.array((0.3, 0.2, 0.1)) * light  # door
        win = (np.abs(np.abs(dx) - 0.065 * s) < 0.02 * s) & (np.abs(dy + 0.1 * s) < 0.02 * s)
        img[win] = np.array((0.95, 0.9, 0.5)) if scene.sky == "night" else np.array((0.6, 0.8, 0.95)) * light
    elif kind == "boat":
        dy = yy - (horizon + rng.uniform(0.08, 0.14))
        hull = (dy < 0) & (dy > -0.06 * s) & (np.abs(dx) < 0.15 * s + dy * 1.2)
        img[hull] = colour
        img[(np.abs(dx - 0.01) < 0.006 + 0.5 / H) & (dy < -0.06 * s) & (dy > -0.3 * s)] = (
            np.array((0.3, 0.2, 0.1)) * light
        )
        sail = (dy <= -0.07 * s) & (dy > -0.28 * s) & (dx > 0.02) & (dx - 0.02 < (dy + 0.28 * s) * 0.55)
        img[sail] = 0.95 * light
    elif kind == "ball":
        r = 0.07 * s
        cy = base - r if scene.ground != "sea" else horizon + 0.12
        disc = dx**2 + (yy - cy) ** 2 < r**2
        img[disc] = colour
        img[disc & (np.abs(yy - cy + 0.3 * dx) < 0.18 * r)] = 0.97 * light  # a stripe
    elif kind == "car":
        body = (np.abs(dx) < 0.13 * s) & (dy < -0.025 * s) & (dy > -0.085 * s)
        cabin = (np.abs(dx + 0.01) < 0.07 * s - (-0.085 * s - dy) * 0.5) & (dy <= -0.085 * s) & (dy > -0.14 * s)
        img[body | cabin] = colour
        img[cabin & (np.abs(dx + 0.01) < 0.05 * s - (-0.085 * s - dy) * 0.5) & (dy < -0.095 * s)] = (0.7, 0.85, 0.95)
        for wx in (-0.075, 0.075):
            img[(dx - wx * s) ** 2 + (dy + 0.025 * s) ** 2 < (0.03 * s) ** 2] = 0.08
    elif kind == "flower":
        img[(np.abs(dx) < 0.008 + 0.5 / H) & (dy < 0) & (dy > -0.13 * s)] = np.array((0.1, 0.5, 0.1)) * light
        r = np.sqrt(dx**2 + (dy + 0.16 * s) ** 2)
        angle = np.arctan2(dy + 0.16 * s, dx)
        petals = r < 0.06 * s * (0.75 + 0.25 * np.cos(5 * angle))
        img[petals] = colour
        img[r < 0.02 * s] = np.array((0.95, 0.8, 0.1)) * light


def batch(
    seed: int, index: int, size: int, held_out: bool = False, height: int = 64, width: int = 64, p_plain: float = 0.25
):
    """Batch ``index`` of a deterministic stream: (images (size, 3, H, W) float32 in [0, 1], captions); it depends
    on (seed, index) only. A fraction ``p_plain`` of the scenes has no object (plain landscapes)."""
    images, captions, _ = batch_layers(seed, index, size, held_out, height, width, p_plain)
    return images, captions


def batch_layers(
    seed: int, index: int, size: int, held_out: bool = False, height: int = 64, width: int = 64, p_plain: float = 0.25
):
    """``batch`` plus the object masks (size, 1, H, W) of its images."""
    rng = np.random.default_rng([seed, index])
    picked = sample_scenes(rng, size, held_out, p_plain)
    images, masks = zip(*(render_layers(s, rng, height, width) for s in picked))
    return np.stack(images).transpose(0, 3, 1, 2), [s.caption for s in picked], np.stack(masks)[:, None]
