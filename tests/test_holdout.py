"""The independent scanner-view protocol (skulens/data/holdout.py): reproducible, real frames, and
out of training's reach (only evaluation may import it; its clutter is no training photo)."""

import ast
import io
import os

import numpy as np
import pytest
from PIL import Image

from skulens.data import datasets, holdout, views

TRAINING = os.path.join(os.path.dirname(__file__), "..", "training", "skulens_train")
MAY_IMPORT = {"evaluate.py"}    # the validation report; nothing that draws batches or tunes


@pytest.fixture(scope="module")
def articles():
    images, labels = datasets.load("test")
    return images[:50], labels[:50]


def test_frames_are_reproducible_jpegs_of_scanner_sizes(articles):
    images, _ = articles
    a = holdout.HoldoutViews(images, seed=5)(range(20))
    assert a == holdout.HoldoutViews(images, seed=5)(range(20))           # same seed, same bytes
    assert a != holdout.HoldoutViews(images, seed=6)(range(20))
    sizes = set()
    for b in a:
        im = Image.open(io.BytesIO(b))
        assert im.format == "JPEG" and im.mode == "RGB" and im.width == im.height
        sizes.add(im.width)
    lo, hi = holdout.HoldoutSpec().frame
    assert all(lo <= s <= hi for s in sizes) and len(sizes) > 5


def test_the_article_is_in_the_frame(articles):
    """A frame of an article is nearer (in pixels, at the article's own scale) to that article than
    to the others more often than chance: the generator does not lose the object."""
    images, _ = articles
    frames = holdout.decode(holdout.HoldoutViews(images, seed=3)(range(len(images))), 28)[..., 0].astype(np.float32)
    ref = images.astype(np.float32)
    f = (frames - frames.mean((1, 2), keepdims=True)).reshape(len(frames), -1)
    r = (ref - ref.mean((1, 2), keepdims=True)).reshape(len(ref), -1)
    s = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    rank = (s > s[np.arange(len(s)), np.arange(len(s))][:, None]).sum(1)
    assert np.mean(rank < 10) > 0.3      # chance: 10 of 50 = 0.2


def test_clutter_is_no_training_photo():
    names = {os.path.splitext(n)[0].lower() for n in holdout.BACKGROUNDS}
    assert not names & set(views.TRAIN_BACKGROUNDS) and not names & set(views.EVAL_BACKGROUNDS)
    assert all(os.path.exists(os.path.join(holdout.OPENCV_DATA, n)) for n in holdout.BACKGROUNDS)


def test_a_missing_photo_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="opencv-doc"):
        holdout.photos(holdout.BACKGROUNDS, folder=str(tmp_path))


def test_training_does_not_import_the_holdout_protocol():
    for f in sorted(os.listdir(TRAINING)):
        if not f.endswith(".py") or f in MAY_IMPORT:
            continue
        tree = ast.parse(open(os.path.join(TRAINING, f)).read())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            mod = getattr(node, "module", "") or ""
            assert "holdout" not in mod and not any("holdout" in n for n in names), f"{f} imports the holdout views"
