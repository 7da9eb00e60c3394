"""What a camera watches for, as configured: zones, tripwires, masks, per-class object filters and
armed hours (the models under ``cameras.<id>``; ``pipeline.config`` re-exports them)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from pipeline.schedule import parse_schedule
from pipeline.strict import StrictModel

Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]


def _at_least_three_points(polygon: list[Point]) -> list[Point]:
    if len(polygon) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(polygon)}")
    return polygon


Polygon = Annotated[list[Point], AfterValidator(_at_least_three_points)]


def _schedule(windows: list[str]) -> list[str]:
    parse_schedule(windows)  # a ValueError naming the window that is not one
    return windows


ArmedWindows = Annotated[list[str], AfterValidator(_schedule)]
ARMED_DESCRIPTION = (
    "When the rule raises its signal, as windows '[DAYS ]HH:MM-HH:MM' in runtime.timezone: '22:00-06:00', "
    "'mon-fri 18:00-07:30', 'sat,sun 00:00-24:00' (a window past midnight belongs to the day it starts on). "
    "Empty: always. Judged by the camera's clock: capture time, or recorded_at plus media time."
)


class ZoneConfig(StrictModel):
    polygon: Polygon = Field(
        description="Polygon vertices as [x, y] in normalized image coordinates (0..1), at least 3 points."
    )
    classes: list[str] = Field(
        default_factory=lambda: ["person"], description="Object classes that count as intruders."
    )
    dwell_s: float = Field(
        0.0, ge=0, description="Seconds an object of those classes must stay in the zone before it counts."
    )
    dwell_of: Literal["zone", "object"] = Field(
        "zone",
        description="What dwell_s times: 'zone', how long the zone has held objects of its classes without a "
        "break (passers-by one after another add up); 'object', how long one tracked object has stayed in it "
        "(loitering).",
    )
    armed: ArmedWindows = Field(default_factory=list, description=ARMED_DESCRIPTION)


class MaskConfig(StrictModel):
    polygon: Polygon = Field(
        description="Polygon vertices as [x, y] in normalized image coordinates (0..1), at least 3 points: "
        "an object whose bottom centre lies inside is ignored (a poster, a screen, a mannequin, a parked car)."
    )
    classes: list[str] = Field(default_factory=list, description="Object classes the mask hides. Empty: every class.")


class ObjectFilter(StrictModel):
    min_confidence: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Detections of this class below this confidence are ignored: a higher bar for one class "
        "than stages.detect.confidence, which every class must pass.",
    )
    min_area: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Smallest box, as a share of the picture (0.001: a 20x15 box in 640x480), below which a "
        "detection is ignored: distant clutter, a bird near the lens.",
    )
    max_area: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Largest box, as a share of the picture, above which a detection is ignored: an insect on the "
        "lens, a false box over the whole frame.",
    )

    @model_validator(mode="after")
    def _area_range(self) -> ObjectFilter:
        if self.min_area >= self.max_area:
            raise ValueError(f"min_area ({self.min_area}) must be below max_area ({self.max_area})")
        return self


MIN_LINE_LENGTH = 0.01
MIN_AXIS_SHARE = 0.1  # a line crossed 'down' must run across the picture at least this much (and so on)


class LineConfig(StrictModel):
    points: list[Point] = Field(
        description="The line's two ends as [x, y] in normalized image coordinates (0..1): a tripwire that "
        "fires when a tracked object's bottom centre crosses it."
    )
    classes: list[str] = Field(default_factory=lambda: ["person"], description="Object classes whose crossings count.")
    direction: Literal["both", "down", "up", "left", "right"] = Field(
        "both",
        description="Crossings that count: 'both', or only those going 'down', 'up', 'left' or 'right' in the "
        "picture (a line running across the picture is crossed up or down, one running up it left or right; a "
        "slanted one either way).",
    )
    armed: ArmedWindows = Field(
        default_factory=list,
        description=ARMED_DESCRIPTION + " Crossings outside it are still counted (metrics, summary).",
    )

    @field_validator("points")
    @classmethod
    def _two_distinct_points(cls, points: list[Point]) -> list[Point]:
        if len(points) != 2:
            raise ValueError(f"a line needs exactly 2 points, got {len(points)}")
        (x1, y1), (x2, y2) = points
        if math.hypot(x2 - x1, y2 - y1) < MIN_LINE_LENGTH:
            raise ValueError(f"the line's two points are (nearly) the same: {points[0]} and {points[1]}")
        return points

    @model_validator(mode="after")
    def _direction_it_can_be_crossed_in(self) -> LineConfig:
        (x1, y1), (x2, y2) = self.points
        length = math.hypot(x2 - x1, y2 - y1)
        if self.direction in ("down", "up") and abs(x2 - x1) / length < MIN_AXIS_SHARE:
            raise ValueError(f"a line running up the picture is crossed left or right, not {self.direction!r}")
        if self.direction in ("left", "right") and abs(y2 - y1) / length < MIN_AXIS_SHARE:
            raise ValueError(f"a line running across the picture is crossed up or down, not {self.direction!r}")
        return self
