"""Camera images (visiongate.upright): EXIF-rotated photos end up upright with their boxes
on their objects, and every image mode imports as pixels all readers agree on."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from visiongate import upright
from visiongate.cells import stage
from visiongate.datasets.coco import load_split
from visiongate.datasets.prepare import prepare

# Pillow's transpose that turns the displayed image into the stored one, per orientation
STORED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
          3: Image.Transpose.ROTATE_180}
BOX = (40, 10, 30, 20)   # x, y, w, h on the DISPLAYED image (80 wide, 50 high)


def _displayed(shade: int = 128) -> Image.Image:
    """80x50 grey photo with a red rectangle at BOX (shade: another photo, other bytes)."""
    pixels = np.full((50, 80, 3), shade, np.uint8)
    x, y, w, h = BOX
    pixels[y:y + h, x:x + w] = (220, 20, 20)
    return Image.fromarray(pixels)


def _camera_jpeg(path: Path, tag: int, shade: int = 128) -> None:
    """What a phone writes: the sensor's pixels, and the tag that rotates them for display."""
    exif = Image.Exif()
    exif[upright.ORIENTATION] = tag
    shown = _displayed(shade)
    stored = shown.transpose(STORED[tag]) if tag in STORED else shown
    stored.save(path, quality=98, exif=exif)


@pytest.mark.parametrize("tag", [6, 8, 3])
def test_rotated_photos_are_prepared_upright_with_boxes_on_their_objects(tmp_path, tag):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    for i in range(3):
        _camera_jpeg(src / "images" / f"photo{i}.jpg", tag, shade=120 + 8 * i)
    coco = {"images": [{"id": i + 1, "file_name": f"photo{i}.jpg", "width": 80, "height": 50}
                       for i in range(3)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1,
                             "bbox": list(BOX), "area": 600, "iscrowd": 0} for i in range(3)],
            "categories": [{"id": 1, "name": "red"}]}
    (src / "annotations.json").write_text(json.dumps(coco))
    prepare("coco", src, tmp_path / "out", ratios={"train": 1 / 3, "val": 1 / 3, "test": 1 / 3})
    for split in ("train", "val", "test"):
        s = load_split(tmp_path / "out" / split)
        (image,) = s.images
        assert (image["width"], image["height"]) == (80, 50)
        path = s.image_path(image)
        assert path.suffix == ".png"                      # re-encoded once, losslessly
        for pixels in (np.asarray(Image.open(path).convert("RGB")),      # Pillow
                       cv2.imread(str(path))[..., ::-1],                  # OpenCV imread
                       cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]):
            assert pixels.shape == (50, 80, 3)
            x, y, w, h = (int(v) for v in s.annotations[image["id"]][0]["bbox"])
            inside = pixels[y + 2:y + h - 2, x + 2:x + w - 2].reshape(-1, 3).mean(0)
            outside = pixels[:, :x - 2].reshape(-1, 3).mean(0)
            assert inside[0] > 180 and inside[1] < 60        # red inside the box
            assert abs(outside - outside.mean()).max() < 3 and 110 < outside.mean() < 150


def test_a_box_in_stored_coordinates_of_a_rotated_photo_is_named(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    _camera_jpeg(src / "images" / "a.jpg", 6)   # displayed 80x50, stored 50x80
    for i in range(5):
        _displayed(100 + 10 * i).save(src / "images" / f"b{i}.jpg")
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 50, "height": 80}] +
                      [{"id": i + 2, "file_name": f"b{i}.jpg", "width": 80, "height": 50}
                       for i in range(5)],
            "annotations": [], "categories": [{"id": 1, "name": "red"}]}
    (src / "annotations.json").write_text(json.dumps(coco))
    prepare("coco", src, tmp_path / "out")
    quarantine = (tmp_path / "out" / "quarantine.csv").read_text()
    assert "size_mismatch" in quarantine and "as displayed (EXIF orientation)" in quarantine


def _modes(seed: int = 0) -> dict[str, tuple[Image.Image, str]]:
    """name -> (image, file suffix) of every mode a team's photos come in."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    grey16 = rng.integers(0, 65536, (24, 32), dtype=np.uint16)
    return {"grayscale": (Image.fromarray(rgb[..., 0], "L"), ".png"),
            "16-bit": (Image.fromarray(grey16), ".png"),
            "cmyk": (Image.fromarray(rgb).convert("CMYK"), ".jpg"),
            "rgba-png": (Image.fromarray(rgb).convert("RGBA"), ".png"),
            "palette": (Image.fromarray(rgb).convert("P"), ".png"),
            "webp": (Image.fromarray(rgb), ".webp"),
            "bilevel": (Image.fromarray(rgb[..., 0] > 128), ".png")}


def test_every_image_mode_imports_as_pixels_all_readers_agree_on(tmp_path):
    src = tmp_path / "src"
    for seed, split in enumerate(("train", "val", "test")):  # other pixels: no split leak
        for name, (image, suffix) in _modes(seed).items():
            (src / split / "thing").mkdir(parents=True, exist_ok=True)
            image.save(src / split / "thing" / f"{name}{suffix}")
    prepare("folders", src, tmp_path / "out")
    for split in ("train", "val", "test"):
        s = load_split(tmp_path / "out" / split)
        assert len(s.images) == len(_modes())                 # none quarantined
        for image in s.images:
            path = s.image_path(image)
            with Image.open(path) as im:
                assert im.mode in ("RGB", "L") and im.size == (32, 24)
                pillow = np.asarray(im.convert("RGB"))
            opencv = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
            assert np.abs(pillow.astype(int) - opencv).max() <= 1, path.name


def test_sixteen_bit_is_scaled_not_clipped():
    grey16 = np.array([[0, 256, 65535, 32768]], np.uint16)
    out = np.asarray(upright.upright(Image.fromarray(grey16)))
    assert out.tolist() == [[0, 1, 255, 128]]


def test_a_served_rotated_photo_is_predicted_upright(tmp_path):
    _camera_jpeg(tmp_path / "photo.jpg", 6)
    cell = base64.b64encode((tmp_path / "photo.jpg").read_bytes()).decode()
    path, size = stage(cell, tmp_path / "row0", max_pixels=10**6)
    assert size == (80, 50) and path.suffix == ".png"
    with Image.open(path) as im:
        assert im.size == (80, 50) and upright.orientation(im) == 1
    plain = base64.b64encode((tmp_path / "photo.jpg").read_bytes()).decode()
    _displayed().save(tmp_path / "plain.jpg")
    plain = base64.b64encode((tmp_path / "plain.jpg").read_bytes()).decode()
    path, size = stage(plain, tmp_path / "row1", max_pixels=10**6)
    assert path.suffix == ".jpg" and path.read_bytes() == (tmp_path / "plain.jpg").read_bytes()


def test_a_malformed_orientation_tag_counts_as_upright(tmp_path):
    exif = Image.Exif()
    exif[upright.ORIENTATION] = 99
    _displayed().save(tmp_path / "odd.jpg", exif=exif)
    with Image.open(tmp_path / "odd.jpg") as im:
        assert upright.orientation(im) == 1 and upright.displayed_size(im) == (80, 50)


def test_batch_prediction_hands_the_model_the_upright_photo(tmp_path, monkeypatch):
    from visiongate import batch_predict, models, serving

    images = tmp_path / "images"
    images.mkdir()
    _camera_jpeg(images / "photo.jpg", 8)
    checkpoint = tmp_path / "ckpt"
    models.CheckpointMeta(family="yolo", task="detect", class_names=["red"], config={},
                          weights="best.pt").write(checkpoint)
    seen = []

    def fake_model(paths):  # stands in for the trained detector: finds the red rectangle
        out = []
        for path in paths:
            pixels = np.asarray(Image.open(path).convert("RGB"))
            seen.append(pixels.shape)
            ys, xs = np.nonzero((pixels[..., 0] > 180) & (pixels[..., 1] < 60))
            out.append({"boxes": np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]],
                                          np.float32),
                        "scores": np.array([0.9], np.float32), "labels": np.array([1])})
        return out

    monkeypatch.setattr(serving, "predictor", lambda ckpt: fake_model)
    batch_predict.predict_folder(checkpoint, images, tmp_path / "out", 0.25, "fake/1")
    coco = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert seen == [(50, 80, 3)]
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (80, 50)
    np.testing.assert_allclose(coco["annotations"][0]["bbox"], BOX, atol=1)
