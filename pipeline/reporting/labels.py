"""Point labels that do not print on top of each other.

Close points (a student's ov-int8, torch-fp32 and ov-fp32 share a score and differ by a few pixels
in throughput) each got a label at the same offset, so their names overlapped. Here each label
takes the first offset, nearest first, whose text box overlaps no label placed before it, and a
label moved off its point gets a thin leader line back to it. The search runs in display space, so
call it once the axes' limits and position are final (after tight_layout).
"""

from __future__ import annotations

import itertools

FIRST = (5, 4)  # points right of and above the marker: where a lone label goes
STEP = 11  # points between stacked labels: one line of 8 pt text and a gap
PAD = 1  # display pixels kept clear around each label


def offsets():
    """(dx, dy) in points: FIRST, then ever further above and below it, alternately. Endless, so a
    free spot is always found: past the last placed label every box is clear."""
    yield FIRST
    for k in itertools.count(1):
        yield FIRST[0], FIRST[1] + STEP * k
        yield FIRST[0], FIRST[1] - STEP * k


def _annotate(ax, text: str, xy, offset, fontsize: int, leader: bool):
    line = (
        {"arrowprops": {"arrowstyle": "-", "lw": 0.5, "color": "0.45", "shrinkA": 0, "shrinkB": 3}}
        if leader
        else {}
    )
    return ax.annotate(text, xy, textcoords="offset points", xytext=offset, fontsize=fontsize, **line)


def place_labels(ax, labels: list[tuple[str, tuple[float, float]]], fontsize: int = 8) -> list:
    """Annotate each (text, (x, y)) in data coordinates; returns the annotations, in input order."""
    renderer = ax.figure.canvas.get_renderer()
    taken, out = [], []
    for text, xy in labels:
        for offset in offsets():
            probe = _annotate(ax, text, xy, offset, fontsize, leader=False)
            box = probe.get_window_extent(renderer).padded(PAD)
            probe.remove()
            if not any(box.overlaps(t) for t in taken):
                break
        taken.append(box)
        out.append(_annotate(ax, text, xy, offset, fontsize, leader=offset != FIRST))
    return out
