"""Evidence fusion over a scanner's recent frames (SearchStream).

Each frame's hits are noisy: glare, blur, a half-visible label. Averaging the
scores of the last `window` frames (a product missing from a frame's list
counts with that frame's lowest listed score, a bound on what it had) ranks
products by sustained evidence, and the answer is *stable* once the same
product has led the fused list for `stable_after` consecutive frames by at
least `min_margin` over the runner-up, so a scanner can beep once.
"""

from __future__ import annotations

from collections import deque


class Fusion:
    def __init__(self, window: int = 5, stable_after: int = 3, min_margin: float = 0.02):
        if window < 1 or stable_after < 1:
            raise ValueError("window and stable_after must be >= 1")
        self.window, self.stable_after, self.min_margin = window, stable_after, min_margin
        self._frames: deque[dict[str, float]] = deque(maxlen=window)
        self._leader: str | None = None
        self._streak = 0

    def add(self, hits: dict[str, float]):
        """Add one frame's {product id: score}; returns (fused [(id, score)] best first,
        stable, leader id, confidence = margin of the leader over the runner-up)."""
        self._frames.append(dict(hits))
        ids = set().union(*self._frames)
        floors = [min(f.values()) if f else 0.0 for f in self._frames]
        fused = sorted(((i, sum(f.get(i, fl) for f, fl in zip(self._frames, floors)) / len(self._frames))
                        for i in ids), key=lambda t: (-t[1], t[0]))
        if not fused:
            self._leader, self._streak = None, 0
            return [], False, "", 0.0
        top, score = fused[0]
        margin = score - fused[1][1] if len(fused) > 1 else score
        if top == self._leader and margin >= self.min_margin:
            self._streak += 1
        else:
            self._leader, self._streak = top, 1 if margin >= self.min_margin else 0
        return fused, self._streak >= self.stable_after, top, float(margin)
