"""Which detections a camera ignores before anything is judged from them: those whose bottom centre
lies in one of its masks (a poster, a screen, a mannequin), and, per class, those below a confidence
or outside a box size (``cameras.NAME.masks`` and ``cameras.NAME.objects``). What is ignored counts
for no zone, line, crowd or track, and is not drawn on the snapshot."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.config import CameraConfig, MaskConfig, ObjectFilter
from pipeline.messages import Box
from stages.fusion.signals import point_in_polygon


@dataclass(frozen=True)
class DetectionFilter:
    """A camera's masks and per-class filters; ``ignored`` counts what each has set aside so far, by
    class and reason (``person in mask 'poster'``, ``car under min_area``, ...)."""

    masks: dict[str, MaskConfig]
    objects: dict[str, ObjectFilter]
    ignored: Counter[str] = field(default_factory=Counter, compare=False)

    @classmethod
    def of(cls, camera: CameraConfig) -> DetectionFilter:
        return cls(dict(camera.masks), dict(camera.objects))

    def __bool__(self) -> bool:
        return bool(self.masks or self.objects)

    def why_ignored(self, box: Box) -> str | None:
        """Why ``box`` is ignored (``in mask 'poster'``, ``under min_confidence``, ``under min_area``,
        ``over max_area``: the first that applies), or None when it counts."""
        rule = self.objects.get(box.label)
        if rule is not None:
            if box.confidence < rule.min_confidence:
                return "under min_confidence"
            area = max(0.0, box.x2 - box.x1) * max(0.0, box.y2 - box.y1)
            if area < rule.min_area:
                return "under min_area"
            if area > rule.max_area:
                return "over max_area"
        for name, mask in self.masks.items():
            if (not mask.classes or box.label in mask.classes) and point_in_polygon(box.anchor, mask.polygon):
                return f"in mask '{name}'"
        return None

    def keep(self, boxes: Sequence[Box]) -> tuple[Box, ...]:
        """The boxes that count, in their order; the others are counted in ``ignored``."""
        if not self:
            return tuple(boxes)
        kept = []
        for box in boxes:
            reason = self.why_ignored(box)
            if reason is None:
                kept.append(box)
            else:
                self.ignored[f"{box.label} {reason}"] += 1
        return tuple(kept)
