"""Drawing one pedestrian (front, back or side view) onto a transparent RGBA layer with PIL.

Geometry is in head units ``u`` (a person is about 7.5 heads tall) measured from the top of the head
at ``(cx, top)``. Side views are drawn facing left; the caller mirrors the layer for ``right``.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw

from tbpr.data.synthpedes.attributes import COLOURS, HAIR_COLOURS, SKIN_TONES
from tbpr.data.synthpedes.scene import Scene
from tbpr.data.synthpedes.style import DEFAULT_STYLE, Style

RGB = tuple[int, int, int]
HEADS_TALL = 7.5


def shade(colour: RGB, factor: float) -> RGB:
    return tuple(max(0, min(255, round(c * factor))) for c in colour)  # type: ignore[return-value]


def mix(colour: RGB, other: RGB, t: float) -> RGB:
    return tuple(round(a + (b - a) * t) for a, b in zip(colour, other))  # type: ignore[return-value]


def contrast_colour(colour: RGB) -> RGB:
    """A colour that stands out on ``colour`` (dark on light garments, light on dark ones)."""
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return mix(colour, (20, 20, 20), 0.6) if luminance > 135 else mix(colour, (245, 245, 245), 0.6)


def outline_of(colour: RGB) -> RGB:
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return shade(colour, 0.62) if luminance > 50 else mix(colour, (90, 90, 90), 0.5)


@dataclass(frozen=True)
class Body:
    """Body proportions in head units (half widths)."""

    shoulder: float
    waist: float
    hip: float
    depth: float  # half depth of the torso in side view


def body_of(gender: str, build: int) -> Body:
    k = (0.93, 1.0, 1.08)[build]
    if gender == "man":
        return Body(0.98 * k, 0.74 * k, 0.72 * k, 0.46 * k)
    return Body(0.8 * k, 0.58 * k, 0.8 * k, 0.42 * k)


class FigurePainter:
    """Draws one person; call :meth:`paint` once."""

    def __init__(
        self,
        layer: Image.Image,
        attrs: dict,
        looks: dict,
        scene: Scene,
        cx: float,
        top: float,
        unit: float,
        style: Style = DEFAULT_STYLE,
    ) -> None:
        self.layer = layer
        self.draw = ImageDraw.Draw(layer)
        self.upper_mask = Image.new("L", layer.size, 0)
        self.mask_draw = ImageDraw.Draw(self.upper_mask)
        self.a = attrs
        self.scene = scene
        self.view = "side" if scene.view in ("left", "right") else scene.view
        self.cx, self.top, self.u = cx, top, unit
        body = body_of(attrs["gender"], looks["build"])
        w = style.width
        self.body = Body(body.shoulder * w, body.waist * w, body.hip * w, body.depth * w)
        colour = style.recolour
        self.skin: RGB = SKIN_TONES[looks["skin"]]
        self.hair: RGB = colour(HAIR_COLOURS[attrs["hair_colour"]])
        self.upper: RGB = colour(COLOURS[attrs["upper_colour"]])
        self.lower: RGB = colour(COLOURS[attrs["lower_colour"]])
        self.shoe: RGB = colour(COLOURS[attrs["shoe_colour"]])
        self.bag: RGB | None = colour(COLOURS[attrs["bag_colour"]]) if attrs["bag_colour"] else None
        palette = list(COLOURS.values())
        self.hat: RGB = colour(palette[looks["hat_colour"]])
        self.scarf: RGB = colour(palette[looks["scarf_colour"]])
        self.line_w = max(1, round(unit * 0.05))

    # -- primitives -----------------------------------------------------------------------------
    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + x * self.u, self.top + y * self.u)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [*self.p(x0, y0), *self.p(x1, y1)]

    def poly(self, pts, fill: RGB, outline: bool = True, upper: bool = False) -> None:
        xy = [self.p(x, y) for x, y in pts]
        self.draw.polygon(
            xy, fill=fill, outline=outline_of(fill) if outline else None, width=self.line_w if outline else 0
        )
        if upper:
            self.mask_draw.polygon(xy, fill=255)

    def ellipse(self, x0, y0, x1, y1, fill: RGB, outline: bool = True, upper: bool = False) -> None:
        xy = self.box(x0, y0, x1, y1)
        self.draw.ellipse(
            xy, fill=fill, outline=outline_of(fill) if outline else None, width=self.line_w if outline else 0
        )
        if upper:
            self.mask_draw.ellipse(xy, fill=255)

    def line(self, pts, fill: RGB, width: float) -> None:
        self.draw.line(
            [self.p(x, y) for x, y in pts], fill=fill, width=max(1, round(width * self.u)), joint="curve"
        )

    @staticmethod
    def limb(x0: float, y0: float, x1: float, y1: float, w0: float, w1: float):
        """A tapered quadrilateral from (x0, y0) to (x1, y1) with half widths w0 and w1."""
        dx, dy = x1 - x0, y1 - y0
        norm = (dx * dx + dy * dy) ** 0.5 or 1.0
        nx, ny = -dy / norm, dx / norm
        return [
            (x0 + nx * w0, y0 + ny * w0),
            (x1 + nx * w1, y1 + ny * w1),
            (x1 - nx * w1, y1 - ny * w1),
            (x0 - nx * w0, y0 - ny * w0),
        ]

    # -- the figure -----------------------------------------------------------------------------
    def paint(self) -> None:
        self.behind_body()
        self.legs()
        self.upper_body()
        self.head()
        self.front_accessories()

    def hem(self) -> float:
        return {"jacket": 4.15, "hoodie": 3.95}.get(self.a["upper_type"], 3.85)

    def behind_body(self) -> None:
        hair_long = self.a["hair_style"] == "long"
        if self.view == "front":
            if hair_long:
                self.poly([(-0.5, 0.4), (0.5, 0.4), (0.56, 2.15), (-0.56, 2.15)], self.hair)
            if self.a["hair_style"] == "ponytail":
                side = self.scene.bag_side
                self.ellipse(side * 0.47 - 0.17, 0.35, side * 0.47 + 0.17, 1.45, self.hair)
            if self.a["bag"] == "backpack":
                w = self.body.shoulder * 0.92
                self.poly([(-w, 1.45), (w, 1.45), (w, 3.45), (-w, 3.45)], shade(self.bag, 0.8))
        elif self.view == "side":
            if self.a["bag"] == "backpack":
                d = self.body.depth
                self.poly([(d - 0.1, 1.45), (d + 0.55, 1.55), (d + 0.6, 3.35), (d - 0.1, 3.45)], self.bag)
                self.poly(
                    [(d + 0.5, 2.4), (d + 0.72, 2.45), (d + 0.72, 3.2), (d + 0.56, 3.25)],
                    shade(self.bag, 0.85),
                )
            if hair_long:
                self.poly([(-0.05, 0.35), (0.44, 0.3), (0.5, 2.0), (0.05, 2.0)], self.hair)
            # far arm, swinging opposite to the near one
            self.arm(0.05, 1.5, 0.3 * self.scene.arm_swing, 4.0, far=True)

    # legs, lower garment and shoes
    def legs(self) -> None:
        a, b, s = self.a, self.body, self.scene
        lower_type = a["lower_type"]
        if self.view == "side":
            spread = 0.25 + 0.45 * s.stride
            legs = [((0.05, 3.75), (spread, 7.05), 0.9), ((-0.05, 3.75), (-spread, 7.1), 1.0)]
            top_w, bot_w = 0.24, 0.16
        else:
            spread = 0.05 * s.stride
            legs = [
                ((-b.hip * 0.5, 3.75), (-0.3 - spread, 7.1), 1.0),
                ((b.hip * 0.5, 3.75), (0.3 + spread, 7.1), 1.0),
            ]
            top_w, bot_w = b.hip * 0.5, 0.17
        bare_from = {"shorts": 5.05, "skirt": 3.9}.get(lower_type)
        for (x0, y0), (x1, y1), light in legs:
            if bare_from is not None:
                self.poly(self.limb(x0, y0, x1, y1, top_w * 0.85, bot_w), shade(self.skin, light))
                t = (bare_from - y0) / (y1 - y0)
                xm = x0 + (x1 - x0) * t
                wm = top_w + (bot_w - top_w) * t
                if lower_type == "shorts":
                    self.poly(self.limb(x0, y0, xm, bare_from, top_w, wm + 0.04), shade(self.lower, light))
            else:
                self.poly(self.limb(x0, y0, x1, y1, top_w, bot_w), shade(self.lower, light))
                if lower_type == "jeans":
                    seam = mix(self.lower, (235, 200, 120), 0.45)
                    self.line([(x0 + (x1 - x0) * 0.08, y0 + 0.3), (x1, y1 - 0.05)], seam, 0.035)
            self.shoe_at(x1, y1, light)
        if self.view == "side":
            hips = [(-b.depth, 3.55), (b.depth, 3.55), (b.depth + 0.02, 4.3), (-b.depth, 4.3)]
        else:
            hips = [(-b.hip, 3.55), (b.hip, 3.55), (b.hip, 4.25), (-b.hip, 4.25)]
        if lower_type == "skirt":
            flare = 0.32
            x_l, x_r = hips[0][0], hips[1][0]
            self.poly([(x_l, 3.55), (x_r, 3.55), (x_r + flare, 5.35), (x_l - flare, 5.35)], self.lower)
        else:
            self.poly(hips, self.lower, outline=False)
            if lower_type == "jeans" and self.view == "front":
                seam = mix(self.lower, (235, 200, 120), 0.45)
                self.line([(-b.hip + 0.15, 3.75), (-0.2, 4.0)], seam, 0.03)
                self.line([(b.hip - 0.15, 3.75), (0.2, 4.0)], seam, 0.03)

    def shoe_at(self, x: float, y: float, light: float) -> None:
        colour = shade(self.shoe, light)
        if self.view == "side":
            self.ellipse(x - 0.42, y - 0.12, x + 0.16, y + 0.26, colour)
        else:
            self.ellipse(x - 0.24, y - 0.1, x + 0.24, y + 0.3, colour)

    # torso, arms, garment pattern and details
    def upper_body(self) -> None:
        b, hem = self.body, self.hem()
        if self.view == "side":
            d = b.depth
            chest = -d - (0.08 if self.a["gender"] == "woman" else 0.02)
            torso = [
                (-0.22, 1.15),
                (-d + 0.05, 1.4),
                (chest, 2.1),
                (-d + 0.04, 3.2),
                (-d - 0.02, hem),
                (d + 0.02, hem),
                (d + 0.04, 3.1),
                (d + 0.08, 1.6),
                (0.25, 1.2),
            ]
        else:
            torso = [
                (-0.28, 1.15),
                (-b.shoulder + 0.12, 1.27),
                (-b.shoulder, 1.6),
                (-b.waist, 3.2),
                (-b.hip * 0.98, hem),
                (b.hip * 0.98, hem),
                (b.waist, 3.2),
                (b.shoulder, 1.6),
                (b.shoulder - 0.12, 1.27),
                (0.28, 1.15),
            ]
        self.poly(torso, self.upper, upper=True)
        swing = self.scene.arm_swing
        if self.view == "side":
            self.arm(0.0, 1.5, -0.45 * swing, 4.0, far=False)
        else:
            for side in (-1, 1):
                sx = side * (b.shoulder - 0.16)
                self.arm(
                    sx, 1.5, side * (b.shoulder + 0.1) + 0.06 * swing, 4.05 - 0.15 * abs(swing), far=False
                )
        self.apply_pattern()
        self.garment_details(hem)

    def arm(self, x0: float, y0: float, x1: float, y1: float, far: bool) -> None:
        light = 0.82 if far else 1.0
        cloth = shade(self.upper, light)
        self.poly(self.limb(x0, y0, x1, y1, 0.17, 0.13), shade(self.skin, light))
        t = 0.93 if self.a["sleeve"] == "long" else 0.4
        xm, ym = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
        self.ellipse(x0 - 0.19, y0 - 0.17, x0 + 0.19, y0 + 0.2, cloth, outline=False, upper=not far)
        self.poly(self.limb(x0, y0, xm, ym, 0.19, 0.16 if t > 0.5 else 0.18), cloth, upper=not far)
        if self.a["upper_type"] == "sweater" and t > 0.5:
            self.poly(
                self.limb(xm - (x1 - x0) * 0.08, ym - (y1 - y0) * 0.08, xm, ym, 0.16, 0.16), shade(cloth, 0.8)
            )
        self.ellipse(x1 - 0.15, y1 - 0.08, x1 + 0.15, y1 + 0.26, shade(self.skin, light))

    def apply_pattern(self) -> None:
        pattern = self.a["upper_pattern"]
        if pattern in ("plain", "logo"):
            return
        overlay = Image.new("RGBA", self.layer.size, (0, 0, 0, 0))
        od = ImageDraw.Draw(overlay)
        colour = (*contrast_colour(self.upper), 255)
        width, height = self.layer.size
        period = 0.36 * self.u
        y = self.top + 1.2 * self.u
        while y < self.top + 4.3 * self.u:
            od.rectangle([0, y, width, y + period * (0.32 if pattern == "striped" else 0.22)], fill=colour)
            y += period
        if pattern == "checked":
            x = self.cx - 3 * period
            while x < width:
                od.rectangle([x, 0, x + period * 0.22, height], fill=colour)
                x += period
        self.layer.paste(overlay, (0, 0), ImageChops.multiply(overlay.getchannel("A"), self.upper_mask))

    def garment_details(self, hem: float) -> None:
        kind, u_col = self.a["upper_type"], self.upper
        dark = outline_of(u_col)
        front = self.view == "front"
        if kind == "jacket" and self.view != "back":
            inner = (235, 235, 230) if sum(u_col) < 400 else (45, 45, 50)
            x = 0.0 if front else -self.body.depth + 0.02
            self.poly([(x - 0.2, 1.2), (x + 0.2, 1.2), (x + 0.12, hem - 0.05), (x - 0.12, hem - 0.05)], inner)
            self.line([(x - 0.28, 1.2), (x - 0.1, 2.3)], dark, 0.05)
            if front:
                self.line([(x + 0.28, 1.2), (x + 0.1, 2.3)], dark, 0.05)
        elif kind == "shirt":
            collar = mix(u_col, (255, 255, 255), 0.25)
            if front:
                self.poly([(-0.3, 1.12), (0.0, 1.4), (-0.08, 1.6)], collar)
                self.poly([(0.3, 1.12), (0.0, 1.4), (0.08, 1.6)], collar)
                for k in range(4):
                    y = 1.8 + k * 0.5
                    self.ellipse(-0.04, y, 0.04, y + 0.08, dark, outline=False)
            else:
                self.poly([(-0.28, 1.1), (0.28, 1.1), (0.25, 1.3), (-0.25, 1.3)], collar)
        elif kind == "sweater":
            band = shade(u_col, 0.82)
            if self.view == "side":
                d = self.body.depth
                self.poly(
                    [(-d - 0.02, hem - 0.22), (d + 0.02, hem - 0.22), (d + 0.02, hem), (-d - 0.02, hem)], band
                )
            else:
                w = self.body.hip * 0.98
                self.poly([(-w, hem - 0.22), (w, hem - 0.22), (w, hem), (-w, hem)], band)
        elif kind == "hoodie":
            if front:
                self.poly([(-0.45, 2.9), (0.45, 2.9), (0.55, 3.6), (-0.55, 3.6)], shade(u_col, 0.9))
                self.line([(-0.1, 1.3), (-0.12, 1.95)], dark, 0.04)
                self.line([(0.1, 1.3), (0.12, 1.95)], dark, 0.04)
            elif self.view == "back":
                self.poly([(-0.45, 1.05), (0.45, 1.05), (0.3, 1.85), (-0.3, 1.85)], shade(u_col, 0.88))
            else:
                d = self.body.depth
                self.poly([(0.05, 0.75), (d + 0.2, 0.95), (d + 0.1, 1.6), (0.05, 1.3)], shade(u_col, 0.88))
        if self.a["upper_pattern"] == "logo" and front:
            mark = contrast_colour(u_col)
            x = -0.45 if kind == "jacket" else 0.0
            self.ellipse(x - 0.27, 1.85, x + 0.27, 2.39, mark, outline=False)
            self.poly([(x, 1.93), (x + 0.17, 2.27), (x - 0.17, 2.27)], u_col, outline=False)

    # head, hair, face, headwear
    def head(self) -> None:
        skin, hair, style = self.skin, self.hair, self.a["hair_style"]
        self.poly([(-0.14, 0.8), (0.14, 0.8), (0.16, 1.25), (-0.16, 1.25)], shade(skin, 0.9), outline=False)
        if self.view == "front":
            if style != "long" and self.a["upper_type"] in ("t-shirt", "sweater"):
                self.draw.chord(self.box(-0.26, 0.95, 0.26, 1.45), 0, 180, fill=shade(skin, 0.9))
            self.ellipse(-0.46, -0.08, 0.46, 0.75, hair)
            self.ellipse(-0.38, 0.12, 0.38, 1.0, skin)
            if style in ("short", "ponytail", "bun"):
                self.draw.chord(self.box(-0.44, -0.06, 0.44, 0.6), 180, 360, fill=hair)
            else:
                self.draw.chord(self.box(-0.44, -0.06, 0.44, 0.55), 180, 360, fill=hair)
                for side in (-1, 1):
                    self.poly(
                        [(side * 0.46, 0.2), (side * 0.3, 0.35), (side * 0.36, 1.9), (side * 0.56, 1.9)], hair
                    )
            eye = (30, 30, 35)
            for side in (-1, 1):
                self.ellipse(side * 0.15 - 0.05, 0.5, side * 0.15 + 0.05, 0.6, eye, outline=False)
            self.line([(-0.09, 0.8), (0.09, 0.8)], shade(skin, 0.6), 0.04)
        elif self.view == "back":
            self.ellipse(-0.42, 0.0, 0.42, 1.0, skin)
            self.scarf_band()
            self.ellipse(-0.46, -0.06, 0.46, 0.86, hair)
            if style == "long":
                self.poly(
                    [(-0.46, 0.4), (0.46, 0.4), (0.52, 2.05), (0.3, 2.3), (-0.3, 2.3), (-0.52, 2.05)], hair
                )
            elif style == "ponytail":
                self.ellipse(-0.15, 0.55, 0.15, 1.95, hair)
        else:
            self.ellipse(-0.42, 0.0, 0.38, 1.0, skin)
            self.poly([(-0.4, 0.45), (-0.52, 0.62), (-0.39, 0.66)], skin, outline=False)
            self.ellipse(-0.3, -0.08, 0.46, 0.7, hair)
            self.ellipse(-0.48, 0.25, 0.1, 1.0, skin, outline=False)
            self.ellipse(-0.02, 0.38, 0.14, 0.62, shade(skin, 0.85))
            self.ellipse(-0.32, 0.45, -0.22, 0.55, (30, 30, 35), outline=False)
            if style == "ponytail":
                self.poly([(0.35, 0.3), (0.5, 0.35), (0.62, 1.6), (0.45, 1.6)], hair)
        if style == "bun":
            self.ellipse(-0.2, -0.3, 0.2, 0.1, hair)
        if self.a["glasses"] == "yes" and self.view != "back":
            frame = (25, 25, 25)
            w = max(1, round(0.045 * self.u))
            if self.view == "front":
                for side in (-1, 1):
                    self.draw.ellipse(
                        self.box(side * 0.16 - 0.12, 0.44, side * 0.16 + 0.12, 0.66), outline=frame, width=w
                    )
                self.line([(-0.04, 0.55), (0.04, 0.55)], frame, 0.04)
            else:
                self.draw.ellipse(self.box(-0.4, 0.42, -0.18, 0.64), outline=frame, width=w)
                self.line([(-0.18, 0.52), (0.05, 0.5)], frame, 0.04)
        if self.a["hat"] == "yes":
            self.draw.chord(
                self.box(-0.5, -0.2, 0.5, 0.7),
                180,
                360,
                fill=self.hat,
                outline=outline_of(self.hat),
                width=self.line_w,
            )
            if self.view == "front":
                self.ellipse(-0.5, 0.15, 0.5, 0.36, shade(self.hat, 0.85))
            elif self.view == "side":
                self.poly([(-0.45, 0.18), (-0.82, 0.3), (-0.4, 0.34)], shade(self.hat, 0.85))
        if self.view != "back":
            self.scarf_band()

    def scarf_band(self) -> None:
        if self.a["scarf"] == "yes":
            self.poly([(-0.3, 0.98), (0.3, 0.98), (0.34, 1.38), (-0.34, 1.38)], self.scarf)
            if self.view == "front":
                self.poly([(0.05, 1.25), (0.28, 1.25), (0.3, 2.3), (0.08, 2.3)], shade(self.scarf, 0.9))
            elif self.view == "side":
                self.poly([(-0.3, 1.2), (-0.1, 1.2), (-0.2, 2.2), (-0.38, 2.15)], shade(self.scarf, 0.9))

    # bags worn in front of the body
    def front_accessories(self) -> None:
        bag = self.a["bag"]
        if bag == "none":
            return
        b, colour = self.body, self.bag
        if bag == "backpack":
            if self.view == "front":
                for side in (-1, 1):
                    x = side * (b.shoulder * 0.55)
                    self.poly([(x - 0.1, 1.2), (x + 0.1, 1.2), (x + 0.12, 3.0), (x - 0.08, 3.0)], colour)
            elif self.view == "back":
                w = min(b.shoulder * 0.72, 0.72)
                self.poly([(-w, 1.55), (w, 1.55), (w + 0.05, 3.55), (-w - 0.05, 3.55)], colour)
                self.poly(
                    [(-w * 0.7, 2.55), (w * 0.7, 2.55), (w * 0.7, 3.35), (-w * 0.7, 3.35)],
                    shade(colour, 0.85),
                )
                self.line(
                    [(-0.15, 1.55), (-0.15, 1.35), (0.15, 1.35), (0.15, 1.55)], shade(colour, 0.7), 0.06
                )
            else:
                self.poly([(0.2, 1.25), (0.34, 1.3), (0.0, 2.9), (-0.14, 2.85)], shade(colour, 0.9))
        elif bag == "shoulder bag":
            side = self.scene.bag_side if self.view != "side" else 1
            top_x = -side * (b.shoulder - 0.25) if self.view != "side" else 0.1
            hip_x = side * (b.hip + 0.15) if self.view != "side" else -0.15
            self.line([(top_x, 1.3), (hip_x, 3.3)], shade(colour, 0.8), 0.09)
            self.poly(
                [(hip_x - 0.4, 3.2), (hip_x + 0.4, 3.2), (hip_x + 0.4, 4.0), (hip_x - 0.4, 4.0)], colour
            )
            self.line([(hip_x - 0.4, 3.45), (hip_x + 0.4, 3.45)], shade(colour, 0.7), 0.04)
        elif bag == "handbag":
            if self.view == "side":
                hx, hy = -0.45 * self.scene.arm_swing, 4.15
            else:
                side = self.scene.bag_side
                hx, hy = side * (b.shoulder + 0.1), 4.15
            self.draw.arc(
                self.box(hx - 0.22, hy - 0.25, hx + 0.22, hy + 0.25),
                180,
                360,
                fill=shade(colour, 0.7),
                width=max(1, round(0.06 * self.u)),
            )
            self.poly(
                [(hx - 0.3, hy), (hx + 0.3, hy), (hx + 0.38, hy + 0.65), (hx - 0.38, hy + 0.65)], colour
            )
