"""Region proposals for scene search: where in a frame the products may be.

Selective search, small (Uijlings et al. 2013): Felzenszwalb's graph segmentation (scikit-image) of the
frame at two working sizes and scales (PASSES), then hierarchical grouping of adjacent segments by
colour, size and fill similarity; every segment and every merge is a candidate box. No weights, no
download, one CPU core: 32 ms on a 640 x 480 frame on an Intel Xeon, ~75 ms on an AMD EPYC (bench/
scene_eval.py), holding ~92% of the synthetic shelves' articles at IoU 0.5 (320 px working size
tripled the time: measured, not kept). The caller (scene.py) ranks the boxes by `contrast`, embeds the best and scores each region
by how well it matches the catalogue.
"""

from __future__ import annotations

import threading

import numpy as np

WORK = 160          # working size (longer side) of contrast(), pixels: the cost grows with the area
# Segmentation passes (working size, Felzenszwalb scale). The second, coarser pass at 100 px finds
# articles the first splits or merges with clutter: on tuning shelves of training articles, 0.869 ->
# 0.899 of the articles have a candidate at IoU >= 0.5 among the 128 embedded, for ~8 ms more (a
# second pass at 160 px, scale 300: 0.906 for 17 ms more; measured in session 15).
PASSES = ((160, 100), (100, 150))
BINS = 8            # colour histogram bins per channel


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a [n, 4] and b [m, 4] (x0, y0, x1, y1) -> [n, m]."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def nms(boxes: np.ndarray, score: np.ndarray, thr: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best first."""
    over = iou(boxes, boxes) > thr          # one matrix: k is small (a few hundred)
    alive = np.ones(len(boxes), bool)
    keep: list[int] = []
    for i in np.argsort(-score, kind="stable"):
        if alive[i]:
            keep.append(int(i))
            alive &= ~over[i]
    return keep


def contrast(rgb: np.ndarray, boxes: np.ndarray, work: int = WORK) -> np.ndarray:
    """How much a box's mean colour differs from the band around it, times sqrt(area): objects stand
    out from their surroundings. Integral images of the frame at `work` px: O(1) per box."""
    from PIL import Image
    h0, w0 = rgb.shape[:2]
    f = min(1.0, work / max(h0, w0))
    a = np.asarray(Image.fromarray(rgb).resize((max(1, round(w0 * f)), max(1, round(h0 * f))), Image.BILINEAR),
                   np.float64) if f < 1 else rgb.astype(np.float64)
    h, w = a.shape[:2]
    ii = np.zeros((h + 1, w + 1, 3))
    ii[1:, 1:] = a.cumsum(0).cumsum(1)

    def mean(x0, y0, x1, y1):
        x0, x1, y0, y1 = np.clip(x0, 0, w), np.clip(x1, 0, w), np.clip(y0, 0, h), np.clip(y1, 0, h)
        area = np.maximum((x1 - x0) * (y1 - y0), 1)[:, None]
        return (ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / area, area
    b = np.round(boxes * f).astype(np.int64)
    x0, y0, x1, y1 = b.T
    m = np.maximum(x1 - x0, y1 - y0) // 4 + 1
    inner, ai = mean(x0, y0, x1, y1)
    outer, ao = mean(x0 - m, y0 - m, x1 + m, y1 + m)
    ring = (outer * ao - inner * ai) / np.maximum(ao - ai, 1)
    return np.linalg.norm(inner - ring, axis=1) * np.sqrt(ai[:, 0])


def _hist(img: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    q = (img * (BINS - 1e-6)).astype(np.int64)        # img in 0..1
    out = np.zeros((n, 3 * BINS), np.float64)
    flat = labels.ravel()
    for c in range(3):
        np.add.at(out, (flat, c * BINS + q[..., c].ravel()), 1.0)
    return out


def _group(img: np.ndarray, labels: np.ndarray, min_side: int) -> list[tuple[int, int, int, int]]:
    n = int(labels.max()) + 1
    h, w = labels.shape
    ys, xs = np.mgrid[:h, :w]
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)
    box = np.stack([np.full(n, w), np.full(n, h), np.zeros(n), np.zeros(n)], 1).astype(np.int64)
    np.minimum.at(box[:, 0], flat, xs.ravel())
    np.minimum.at(box[:, 1], flat, ys.ravel())
    np.maximum.at(box[:, 2], flat, xs.ravel() + 1)
    np.maximum.at(box[:, 3], flat, ys.ravel() + 1)
    hist = _hist(img, labels, n)
    hist /= np.maximum(hist.sum(1, keepdims=True), 1)
    pairs = np.concatenate([np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)])
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.sort(pairs, 1), axis=0)
    nbr: dict[int, set] = {i: set() for i in range(n)}
    for a, b in pairs:
        nbr[int(a)].add(int(b))
        nbr[int(b)].add(int(a))
    area = float(h * w)
    boxes = [tuple(box[i]) for i in range(n)]
    hist, size, box = list(hist), list(size), [list(b) for b in box]

    def sim(a, b):
        x0, y0 = min(box[a][0], box[b][0]), min(box[a][1], box[b][1])
        x1, y1 = max(box[a][2], box[b][2]), max(box[a][3], box[b][3])
        fill = 1 - ((x1 - x0) * (y1 - y0) - size[a] - size[b]) / area
        return np.minimum(hist[a], hist[b]).sum() + (1 - (size[a] + size[b]) / area) + fill

    import heapq
    heap = [(-sim(a, b), a, b) for a in nbr for b in nbr[a] if a < b]
    heapq.heapify(heap)
    alive = set(range(n))
    while heap:
        _, a, b = heapq.heappop(heap)
        if a not in alive or b not in alive:
            continue
        k = len(size)           # the merged region
        s = size[a] + size[b]
        hist.append((hist[a] * size[a] + hist[b] * size[b]) / s)
        size.append(s)
        box.append([min(box[a][0], box[b][0]), min(box[a][1], box[b][1]),
                    max(box[a][2], box[b][2]), max(box[a][3], box[b][3])])
        boxes.append(tuple(box[k]))
        alive -= {a, b}
        nb = (nbr.pop(a) | nbr.pop(b)) - {a, b}
        nbr[k] = nb
        for j in nb:
            nbr[j] -= {a, b}
            nbr[j].add(k)
            heapq.heappush(heap, (-sim(k, j), min(k, j), max(k, j)))
        alive.add(k)
    return [b for b in boxes if b[2] - b[0] >= min_side and b[3] - b[1] >= min_side]


def propose(rgb: np.ndarray, max_boxes: int = 200, passes=PASSES, min_frac: float = 0.06) -> np.ndarray:
    """uint8 [h, w, 3] frame -> int [k, 4] candidate boxes (x0, y0, x1, y1) in the frame's pixels,
    distinct; at most max_boxes. One segmentation and grouping per (working size, scale) pass."""
    from PIL import Image
    from skimage.segmentation import felzenszwalb
    h, w = rgb.shape[:2]
    out = []
    for work, k in passes:
        f = work / max(h, w)
        small = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR),
                           np.float32) / 255.0
        min_side = max(4, int(min_frac * min(small.shape[:2])))
        labels = felzenszwalb(small, scale=k, sigma=0.8, min_size=max(20, k // 5))
        out.append(np.asarray(_group(small, labels, min_side), np.float64).reshape(-1, 4) / f)
    boxes = np.unique(np.concatenate(out).round(), axis=0)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) < 0.9 * h * w   # not the whole frame
    boxes = np.unique(boxes[keep].astype(np.int64), axis=0)
    return boxes[:max_boxes] if len(boxes) > max_boxes else boxes


_warm = threading.Lock()
_warmed = False


def warm_up_in_background() -> None:
    """Import scikit-image's segmentation and run it once, beside the server's start (once per process),
    so the first SearchScene does not pay ~0.3 s of imports."""
    global _warmed
    with _warm:
        if _warmed:
            return
        _warmed = True

    def run():
        try:
            propose(np.zeros((48, 64, 3), np.uint8))
        except Exception:  # noqa: BLE001 - a missing scikit-image shows on the first SearchScene instead
            pass
    threading.Thread(target=run, name="skulens-regions-warm-up", daemon=True).start()
