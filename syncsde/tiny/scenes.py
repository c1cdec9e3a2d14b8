"""Procedural captioned landscapes, generated deterministically from a seed (issue: embedded default models).

A scene is a sky (day, sunset, night) over a ground (grass, sea, sand, snow) at a horizon, optionally with
mountains, and optionally one object (sun, moon, tree, house, boat, ball; houses, boats and balls in six
colours) on the left, in the middle or on the right. Captions come from a small grammar, e.g.
"a sunset over the sea with mountains, a red boat on the left". The scenes extend to any width (panoramas),
objects sit in well-defined regions (masked generation), and distinct captions give distinct readings
(ambiguous images).

Held-out captions: every caption whose stable hash falls in the last 10% is never used for training.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass

import numpy as np

SKIES = {"day": "a sunny day", "sunset": "a sunset", "night": "a night sky"}
GROUNDS = {"grass": "grass", "sea": "the sea", "sand": "sand", "snow": "snow"}
OBJECTS = ("sun", "moon", "tree", "house", "boat", "ball")
COLOURED = ("house", "boat", "ball")
COLOURS = {
    "red": (0.85, 0.1, 0.1),
    "blue": (0.1, 0.2, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "white": (0.97, 0.97, 0.97),
    "purple": (0.55, 0.15, 0.7),
    "orange": (0.98, 0.5, 0.05),
}
POSITIONS = {"left": 0.2, "middle": 0.5, "right": 0.8}
SKY_RGB = {
    "day": ((0.3, 0.55, 0.95), (0.7, 0.85, 1.0)),
    "sunset": ((0.35, 0.2, 0.5), (1.0, 0.55, 0.2)),
    "night": ((0.02, 0.03, 0.12), (0.1, 0.12, 0.3)),
}
GROUND_RGB = {"grass": (0.2, 0.6, 0.2), "sea": (0.1, 0.3, 0.7), "sand": (0.85, 0.75, 0.45), "snow": (0.92, 0.94, 0.98)}
LIGHT = {"day": 1.0, "sunset": 0.75, "night": 0.35}


@dataclass(frozen=True)
class Scene:
    sky: str
    ground: str
    mountains: bool = False
    obj: str | None = None
    colour: str | None = None
    position: str | None = None

    @property
    def caption(self) -> str:
        text = f"{SKIES[self.sky]} over {GROUNDS[self.ground]}"
        if self.mountains:
            text += " with mountains"
        if self.obj:
            article = "the" if self.obj in ("sun", "moon") else "a"
            noun = f"{self.colour} {self.obj}" if self.colour else self.obj
            where = "in the middle" if self.position == "middle" else f"on the {self.position}"
            text += f", {article} {noun} {where}"
        return text


def all_scenes() -> list[Scene]:
    out = []
    for sky, ground, mountains in itertools.product(SKIES, GROUNDS, (False, True)):
        out.append(Scene(sky, ground, mountains))
        for obj, pos in itertools.product(OBJECTS, POSITIONS):
            for colour in COLOURS if obj in COLOURED else (None,):
                out.append(Scene(sky, ground, mountains, obj, colour, pos))
    return out


def is_held_out(caption: str) -> bool:
    return hashlib.sha256(caption.encode()).digest()[0] >= 230  # ≈10% of captions


def split(held_out: bool) -> list[Scene]:
    return [s for s in all_scenes() if is_held_out(s.caption) == held_out]


def vocabulary() -> list[str]:
    words = set()
    for s in all_scenes():
        words.update(tokenize_words(s.caption))
    return sorted(words)


def tokenize_words(text: str) -> list[str]:
    return re.findall(r"[a-z]+|,", text.lower())


def render(scene: Scene, rng: np.random.Generator, height: int = 32, width: int = 32) -> np.ndarray:
    """Render a scene as float32 RGB (height, width, 3) in [0, 1]; geometry scales with the height, and the
    landscape (horizon, mountains, stars, waves) extends to any width."""
    H, W = height, width
    y = (np.arange(H) / H)[:, None, None]
    x = (np.arange(W) / H)[None, :, None]  # in units of the height
    top, bottom = (np.array(c) for c in SKY_RGB[scene.sky])
    horizon = rng.uniform(0.55, 0.7)
    img = np.broadcast_to(top + (bottom - top) * np.clip(y / horizon, 0, 1), (H, W, 3)).copy()
    light = LIGHT[scene.sky]
    if scene.sky == "night":
        stars = (rng.random((H, W)) < 0.03) & (y[..., 0] < horizon - 0.1)
        img[stars] = 0.9
    if scene.mountains:
        phase, period = rng.uniform(0, 1), rng.uniform(0.5, 0.8)
        peak = horizon - rng.uniform(0.2, 0.3) * (1 - 2 * np.abs(((x[..., 0] / period + phase) % 1) - 0.5))
        rock = (y[..., 0] >= peak) & (y[..., 0] < horizon)
        img[rock] = np.array((0.45, 0.45, 0.5)) * light
        img[rock & (y[..., 0] < peak + 0.05)] = np.array((0.95, 0.95, 0.97)) * light
    ground = np.array(GROUND_RGB[scene.ground]) * light
    below = (y[..., 0] >= horizon) & np.ones((H, W), bool)
    img[below] = ground
    if scene.ground == "sea":
        waves = below & (np.sin(x[..., 0] * 40 + y[..., 0] * 90 + rng.uniform(0, 6)) > 0.85)
        img[waves] = np.clip(ground + 0.2, 0, 1)
    if scene.obj:
        draw_object(img, scene, rng, horizon, light)
    return np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1).astype(np.float32)


def draw_object(img: np.ndarray, scene: Scene, rng: np.random.Generator, horizon: float, light: float) -> None:
    H, W, _ = img.shape
    yy, xx = np.mgrid[0:H, 0:W] / H
    cx = POSITIONS[scene.position] * W / H + rng.uniform(-0.04, 0.04)
    colour = np.array(COLOURS[scene.colour]) * max(light, 0.6) if scene.colour else None
    r = rng.uniform(0.09, 0.12)
    if scene.obj in ("sun", "moon"):
        cy = rng.uniform(0.15, horizon - 0.2)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        if scene.obj == "sun":
            img[disc] = (1.0, 0.85, 0.2) if scene.sky != "sunset" else (1.0, 0.45, 0.1)
        else:
            img[disc & ~((xx - cx - 0.6 * r) ** 2 + (yy - cy) ** 2 < r**2)] = (0.95, 0.95, 0.8)
    elif scene.obj == "tree":
        base = horizon + 0.12
        img[(np.abs(xx - cx) < 0.025) & (yy < base) & (yy > base - 0.12)] = np.array((0.4, 0.25, 0.1)) * light
        img[(xx - cx) ** 2 + (yy - (base - 0.17)) ** 2 < (1.1 * r) ** 2] = np.array((0.05, 0.4, 0.1)) * light
    elif scene.obj == "house":
        base, s = horizon + 0.12, 1.3 * r
        img[(np.abs(xx - cx) < s) & (yy < base) & (yy > base - 1.4 * s)] = colour
        roof = (yy <= base - 1.4 * s) & (yy > base - 1.4 * s - s) & (np.abs(xx - cx) < (yy - (base - 2.4 * s)) * 1.2)
        img[roof] = np.array((0.35, 0.12, 0.08)) * light
    elif scene.obj == "boat":
        base = horizon + 0.08
        hull = (yy < base) & (yy > base - 0.08) & (np.abs(xx - cx) < 1.6 * r - (base - yy) * 1.5)
        img[hull] = colour
        img[(yy <= base - 0.08) & (yy > base - 0.3) & (xx > cx) & (xx - cx < (yy - (base - 0.3)) * 0.7)] = 0.95 * light
    elif scene.obj == "ball":
        cy = horizon + 0.15
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = colour


def batch(
    seed: int, index: int, size: int, held_out: bool = False, height: int = 32, width: int = 32, p_plain: float = 0.3
):
    """Batch ``index`` of a deterministic stream: (images (size, 3, H, W) float32 in [0, 1], captions).
    A fraction ``p_plain`` of the scenes has no object (plain landscapes, for panoramas and backgrounds)."""
    scenes = split(held_out)
    plain = [s for s in scenes if s.obj is None]
    objects = [s for s in scenes if s.obj is not None]
    rng = np.random.default_rng([seed, index])
    picked = [
        plain[rng.integers(len(plain))] if rng.random() < p_plain else objects[rng.integers(len(objects))]
        for _ in range(size)
    ]
    images = np.stack([render(s, rng, height, width) for s in picked]).transpose(0, 3, 1, 2)
    return images, [s.caption for s in picked]
