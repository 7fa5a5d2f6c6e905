"""Evaluation of generated toon-world videos: detectors, storyboard facts and per-segment metrics.

    report = evaluate(frames, storyboard, fps)      # frames float [T, H, W, 3] display values in [0, 1]
    print(format_table({"default": report, "random-init": other}))

Metric definitions are in `ttt_engine.eval.metrics`, detector definitions in
`ttt_engine.eval.detectors`, the storyboard text grammar in `ttt_engine.eval.facts`.
"""

from .detectors import DetectorConfig
from .facts import SegmentFacts, facts_from_episode, parse_segment, parse_storyboard
from .metrics import EvalReport, FactResult, MetricConfig, SegmentRow, evaluate, format_table

__all__ = [
    "DetectorConfig",
    "EvalReport",
    "FactResult",
    "MetricConfig",
    "SegmentFacts",
    "SegmentRow",
    "evaluate",
    "facts_from_episode",
    "format_table",
    "parse_segment",
    "parse_storyboard",
]
