"""Scene search (SearchScene): every product in one picture.

request -> decode (full frame, EXIF upright) -> propose (encode/regions.py: selective search) ->
rank candidates by box contrast, drop near-duplicates, keep MAX_CANDIDATES -> encode every
candidate's square crop in one batch -> search each -> objectness (encode/objectness.py: a head
over the crop's embedding, its best match and its box; the best match's cosine where the encoder
has no head) -> non-maximum suppression (and a part of an answered object is not a new region),
box voting among candidates agreeing on a product -> the top regions.
SceneTracks fuses a stream's regions per track, as fusion.Fusion fuses a scanner's frames.
"""

from __future__ import annotations

import time

import numpy as np

from .errors import InvalidArgument
from .encode.objectness import features
from .encode.regions import contrast, iou, nms, propose
from .fusion import Fusion
from .limits import MAX_CANDIDATES, MAX_REGIONS, MAX_TOP_K

MIN_OBJECTNESS = 0.7      # default floor of a region's best-match cosine, for an encoder without an
#                           objectness head (with one, the head's own floor, chosen when it was fitted)
PART = 0.6                # a box this much inside another (either way), same product: one object
VOTE_MARGIN = 0.03        # candidates this close to a region's score vote on its box
CANDIDATE_NMS = 0.6       # candidates overlapping a better one by more than this are the same region
REGION_NMS = 0.5          # answers overlapping a better one by more than this are dropped ...
SAME_NMS = 0.3            # ... or by more than this where both lead with the same product
CONTEXT = 1.15            # crop side / the box's longer side: a little surrounding, as a scanner frames
#                           Tuning shelves (training articles, skulens_train/objectness.py) chose REGION_NMS,
#                           SAME_NMS and PART: articles overlap, so 0.3 for any pair suppressed neighbours


def inside(a: np.ndarray, b: np.ndarray) -> float:
    """The share of box a's area that lies in box b."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / max(1e-9, (a[2] - a[0]) * (a[3] - a[1]))


def crops(im, boxes: np.ndarray) -> list:
    """Square crops (PIL) around each box, with CONTEXT; outside the frame is filled by PIL's crop."""
    out = []
    for x0, y0, x1, y1 in boxes:
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * CONTEXT / 2
        out.append(im.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half))))
    return out


def check(top_k: int, max_regions: int, min_objectness: float) -> tuple[int, int, float]:
    """-> (top_k, max_regions, floor or 0.0 for the server's default)."""
    top_k, max_regions = top_k or 5, max_regions or 10
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidArgument(f"top_k must be in 1..{MAX_TOP_K}, got {top_k}")
    if not 1 <= max_regions <= MAX_REGIONS:
        raise InvalidArgument(f"max_regions must be in 1..{MAX_REGIONS}, got {max_regions}")
    if not np.isfinite(min_objectness) or not -1.0 <= min_objectness <= 1.0:
        raise InvalidArgument(f"min_objectness must be in -1..1, got {min_objectness}")
    return top_k, max_regions, float(min_objectness)


def candidates(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frame -> (boxes [n, 4], their contrast), best first, near-duplicates dropped, at most
    MAX_CANDIDATES: the regions a scene embeds."""
    boxes = propose(rgb, max_boxes=100_000)
    if not len(boxes):
        return boxes.reshape(0, 4), np.zeros(0)
    c = contrast(rgb, boxes)
    keep = nms(boxes, c, CANDIDATE_NMS)[:MAX_CANDIDATES]
    return boxes[keep], c[keep]


def select(boxes: np.ndarray, score: np.ndarray, lead: list, floor: float, max_regions: int) -> list[tuple]:
    """Candidates -> [(index, voted box)] best first: NMS (stricter within one product), a part of
    an answered object is not a new region, box voting."""
    out: list[tuple] = []
    kept, kept_lead = [], []
    for i in np.argsort(-score, kind="stable"):
        if score[i] < floor or len(out) == max_regions:
            break
        if kept:
            over = iou(boxes[i:i + 1], np.array(kept))[0]
            same = np.array([k == lead[i] for k in kept_lead])
            if (over > REGION_NMS).any() or (same & (over > SAME_NMS)).any():
                continue
            # One object seen twice (a part and the whole): either box mostly inside the other, same product.
            if any(s and max(inside(boxes[i], k), inside(k, boxes[i])) >= PART for k, s in zip(kept, same)):
                continue
        # Box voting (Gidaris & Komodakis 2015): the candidates that agree on the leading product
        # and overlap this one pull its box towards theirs, weighted by how well they match.
        near = np.flatnonzero(iou(boxes[i:i + 1], boxes)[0] > 0.3)
        grp = [j for j in near if lead[j] == lead[i] and score[j] >= score[i] - VOTE_MARGIN]
        w = np.exp((score[grp] - score[i]) / 0.02)
        box = (boxes[grp] * w[:, None]).sum(0) / w.sum()
        kept.append(box)
        kept_lead.append(lead[i])
        out.append((int(i), box))
    return out


def search_scene(encoder, catalog, data: bytes, top_k: int, max_regions: int, min_objectness: float,
                 filters, timings) -> tuple[list[tuple], int]:
    """-> ([(box [4] in the picture's pixels, objectness, [Hit])] best first, candidates embedded)."""
    top_k, max_regions, floor = check(top_k, max_regions, min_objectness)
    head = encoder.objectness
    floor = floor or (head.floor if head is not None else MIN_OBJECTNESS)
    t0 = time.perf_counter_ns()
    im, scale = encoder.decode_scene(data)
    rgb = np.asarray(im)
    t1 = time.perf_counter_ns()
    boxes, con = candidates(rgb)
    t2 = time.perf_counter_ns()
    vecs = encoder.embed(crops(im, boxes)) if len(boxes) else np.zeros((0, encoder.dim), np.float32)
    t3 = time.perf_counter_ns()
    found = [catalog.search(v, top_k, filters=filters) for v in vecs]
    t4 = time.perf_counter_ns()
    best = np.array([h[0].score if h else -1.0 for h in found])
    score = best if head is None or not len(boxes) else np.where(
        best > -1.0, head.score(features(boxes, rgb.shape[:2], con, best, vecs)), -1.0)
    lead = [h[0].id if h else None for h in found]
    order = [(np.round(box * scale).astype(np.int64), float(score[i]), found[i])
             for i, box in select(boxes.astype(np.float64), score, lead, floor, max_regions)]
    timings.decode_us, timings.propose_us = (t1 - t0) // 1000, (t2 - t1) // 1000
    timings.encode_us, timings.search_us = (t3 - t2) // 1000, (t4 - t3) // 1000
    return order, len(boxes)


class SceneTracks:
    """A stream's regions across frames: a region continues the track whose last box it overlaps
    most (IoU >= 0.3), else starts one; each track fuses its hits with its own Fusion."""

    def __init__(self, max_tracks: int = 64):
        self.tracks: dict[int, tuple[np.ndarray, Fusion]] = {}
        self.next, self.max_tracks = 0, max_tracks

    def assign(self, box: np.ndarray, hits: dict[str, float]):
        best, best_iou = None, 0.3
        for t, (b, _) in self.tracks.items():
            o = iou(box[None], b[None])[0, 0]
            if o >= best_iou:
                best, best_iou = t, o
        if best is None:
            best, self.next = self.next, self.next + 1
            self.tracks[best] = (box, Fusion())
            if len(self.tracks) > self.max_tracks:     # bounded: the oldest track goes
                self.tracks.pop(min(self.tracks))
        fusion = self.tracks[best][1]
        self.tracks[best] = (box, fusion)
        return (best, *fusion.add(hits))
