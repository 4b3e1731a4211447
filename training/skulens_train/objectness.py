"""Fit scene search's objectness head (skulens.encode.objectness) to an exported image model.

    skulens-train objectness --run training/shipped/robust --model-repo model_repo [seed=1 fit_scenes=400]

Tuning shelves: skulens.data.scenes with Fashion-MNIST *training* articles on the *training*
backgrounds (skulens.data.views.TRAIN_BACKGROUNDS), so neither the test articles nor the opencv-doc
clutter of bench/scene_eval.py is seen. Half the shelves also hold one or two *photo products*: a
random crop of an opencv-doc photo that no evaluation uses (PRODUCT_PHOTOS), pasted opaque and
upserted into the catalogue as its clean crop, so the head learns what a matched product looks like
beyond Fashion-MNIST (fitted on articles alone it put box_in_scene's box below 16 clutter regions).
Every candidate goes through the server's own steps
(scene.candidates, scene.crops, the exported encoder) and is searched in a catalogue of training
articles; a candidate is positive when it overlaps an article by IoU >= 0.5 and its top 10 holds it.
A logistic regression (scikit-learn, standardised features) is fitted on the shelves of `seed` and
measured on those of `seed + 1` with scene.select, the server's region selection; the default floor
is the highest that loses at most `floor_loss` of the articles found there.
"""

from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

FLOORS = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2)
# opencv-doc photos in no evaluation (bench/scene_eval.py's catalogue and scenes, tests/test_scene.py,
# skulens.data.holdout's clutter) and no near-copy of one (Blender_Suzanne2 of Suzanne1, pic2..6 of pic1)
PRODUCT_PHOTOS = ("LinuxLogo.jpg", "WindowsLogo.jpg", "aloeL.jpg", "basketball1.png", "cards.png",
                  "ela_original.jpg", "licenseplate_motion.jpg", "opencv-logo.png", "rubberwhale2.png",
                  "sudoku.png", "left01.jpg", "pca_test1.jpg", "detect_blob.png", "ellipses.jpg")


def _photo_products(rng, photos, jpeg: bytes, boxes: np.ndarray, k: int):
    """Paste k random crops of `photos` (uint8 RGB) into the scene, away from its articles ->
    (jpeg, [box], [the clean crop])."""
    import io
    from PIL import Image
    from skulens.data.scenes import iou
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    W, H = im.size
    placed, crops = [], []
    for _ in range(k):
        p = photos[rng.integers(len(photos))]
        h, w = p.shape[:2]
        ch, cw = int(h * rng.uniform(0.4, 1.0)), int(w * rng.uniform(0.4, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(p[y:y + ch, x:x + cw])
        side = H * rng.uniform(1 / 6, 1 / 2)
        f = side / max(ch, cw)
        pw, ph = max(8, int(cw * f)), max(8, int(ch * f))
        for _ in range(50):
            bx, by = int(rng.integers(0, W - pw)), int(rng.integers(0, H - ph))
            b = np.array([bx, by, bx + pw, by + ph])
            taken = np.concatenate([boxes.reshape(-1, 4), np.array(placed).reshape(-1, 4)])
            if not len(taken) or iou(b[None], taken).max() < 0.2:
                break
        lit = np.clip(np.asarray(crop.resize((pw, ph), Image.BILINEAR), np.float32) * rng.uniform(0.75, 1.2), 0, 255)
        im.paste(Image.fromarray(lit.astype(np.uint8)), (bx, by))
        placed.append(b)
        crops.append(crop)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(60, 95)))
    return buf.getvalue(), placed, crops


def _shelves(enc, images, cat, seed: int, n: int, progress: bool) -> list[dict]:
    from skulens import scene
    from skulens.data.sources import photos
    from skulens.data.scenes import SceneMaker, iou
    from skulens.data.views import TRAIN_BACKGROUNDS, Backgrounds
    bank = [p.astype(np.float32) / 255.0 for p in Backgrounds(TRAIN_BACKGROUNDS).photos]
    maker = SceneMaker(images, seed=seed, bank=bank)
    products = [(p * 255).astype(np.uint8) for p in photos(PRODUCT_PHOTOS)]
    out = []
    for k in tqdm(range(n), desc=f"shelves (seed {seed})", disable=not progress, leave=False):
        s = maker(k)
        rng = np.random.default_rng((seed, k, 1))
        extra = int(rng.integers(1, 3)) if rng.random() < 0.5 else 0
        if extra:   # photo products join the catalogue as new rows (ids after the articles)
            jpeg, pb, pc = _photo_products(rng, products, s.jpeg, s.boxes, extra)
            ids = np.arange(len(cat), len(cat) + extra)
            cat = np.concatenate([cat, enc.embed(pc)])
            s.jpeg, s.boxes, s.items = jpeg, np.concatenate([s.boxes, np.array(pb)]), np.concatenate([s.items, ids])
        im, scale = enc.decode_scene(s.jpeg)
        rgb = np.asarray(im)
        boxes, con = scene.candidates(rgb)
        if not len(boxes):
            continue
        vecs = enc.embed(scene.crops(im, boxes))
        sims = vecs @ cat.T
        top = np.argsort(-sims, 1)[:, :10]
        gt = s.boxes / scale
        over = iou(boxes, gt)
        hit = np.stack([(top == it).any(1) for it in s.items], 1)
        out.append(dict(boxes=boxes.astype(np.float64), con=con, vecs=vecs, top=top, best=sims.max(1),
                        frame=rgb.shape[:2], gt=gt, hit=hit, label=((over >= 0.5) & hit).any(1)))
    return out


def found(shelves: list[dict], score_of, floor: float, max_regions: int = 10) -> tuple[float, float]:
    """(share of articles found, regions per shelf) with the server's selection (scene.select): an
    article is found when a returned (voted) box overlaps it by IoU >= 0.5 and that region's top 10
    holds it, as bench/scene_eval.py counts."""
    from skulens.data.scenes import iou
    from skulens.scene import select
    got = total = regions = 0
    for r in shelves:
        kept = select(r["boxes"], score_of(r), list(r["top"][:, 0]), floor, max_regions)
        regions += len(kept)
        over = iou(np.array([box for _, box in kept]).reshape(-1, 4), r["gt"])
        got += sum(any(over[n, j] >= 0.5 and r["hit"][i, j] for n, (i, _) in enumerate(kept))
                   for j in range(len(r["gt"])))
        total += len(r["gt"])
    return got / max(total, 1), regions / max(len(shelves), 1)


def fit(run: str, repo: str, cfg, progress: bool = True) -> dict:
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skulens.data import datasets
    from skulens.data.sources import png
    from skulens.encode import model_repo
    from skulens.encode.image import ImageEncoder
    from skulens.encode.objectness import FILE, Objectness, features
    folder = os.path.join(repo, model_repo.IMAGE)
    enc = ImageEncoder(folder, threads=None)
    images, _ = datasets.load("train")
    images = images[:cfg.catalogue]
    cat = np.concatenate([enc.embed([png(a) for a in images[i:i + 256]])
                          for i in tqdm(range(0, len(images), 256), desc="catalogue", disable=not progress,
                                        leave=False)])
    shelves = {name: _shelves(enc, images, cat, cfg.seed + d, n, progress)
               for name, d, n in (("fit", 0, cfg.fit_scenes), ("tune", 1, cfg.tune_scenes))}
    x = lambda r: features(r["boxes"], r["frame"], r["con"], r["best"], r["vecs"])  # noqa: E731
    model = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.c, max_iter=5000))
    model.fit(np.concatenate([x(r) for r in shelves["fit"]]), np.concatenate([r["label"] for r in shelves["fit"]]))
    scaler, lr = model[0], model[1]
    head = Objectness(scaler.mean_, scaler.scale_, lr.coef_[0], lr.intercept_[0], 0.0)
    tune = shelves["tune"]
    cosine = found(tune, lambda r: r["best"], 0.7)
    at = {f: found(tune, lambda r: head.score(x(r)), f) for f in (0.0,) + FLOORS}
    floor = max([f for f in FLOORS if at[f][0] >= at[0.0][0] - cfg.floor_loss], default=0.0)
    head.floor = floor
    meta = model_repo.read_meta(folder)
    head.meta = {"image_model": meta["name"], "fitted_with": f"scikit-learn {sklearn.__version__} "
                 f"LogisticRegression(C={cfg.c}) on standardised features",
                 "shelves": {"fit": len(shelves["fit"]), "tune": len(tune), "seed": cfg.seed,
                             "articles": "Fashion-MNIST training split", "backgrounds": "views.TRAIN_BACKGROUNDS",
                             "catalogue": cfg.catalogue},
                 "positives": int(sum(r["label"].sum() for r in shelves["fit"])),
                 "candidates": int(sum(len(r["label"]) for r in shelves["fit"])),
                 "measured_on_tune_shelves": {
                     "best cosine, floor 0.7": {"found": cosine[0], "regions": cosine[1]},
                     **{f"head, floor {f}": {"found": a[0], "regions": a[1]} for f, a in at.items()}}}
    for path in (os.path.join(run, FILE), os.path.join(folder, FILE)):
        head.save(path)
        print(f"wrote {path}")
    return head.meta
