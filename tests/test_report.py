"""`clavs report`: the paper's figures from real smoke runs, the page in headless Chromium, and the
values behind the figures against the run files they come from."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image

from clavs.config import resolve_config
from clavs.engine.runner import run_experiment
from clavs.reports.collect import MethodGroup, collect_runs
from clavs.reports.paper_figures import anytime_points, mean_anytime_curve, mean_matrix, plot_anytime, plot_anytime_methods
from clavs.reports.radar import AXES, normalise, radar_profiles
from clavs.reports.report import ReportOptions, build_report

METHODS = ("finetune", "lwf")
PROTOCOLS = ("cil", "til", "dil")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread per module


@pytest.fixture(scope="module")
def report_runs(clavs_home, tmp_path_factory):
    """2 methods x CIL, TIL, DIL smoke runs (3 tasks, one epoch) in one runs folder."""
    runs = tmp_path_factory.mktemp("report_runs")
    for protocol in PROTOCOLS:
        for method in METHODS:
            config = resolve_config(preset="smoke", method=method,
                                    options={"runs_dir": str(runs), "progress": False, "protocol.name": protocol},
                                    overrides=["protocol.split=11-6", "train.epochs=1"])
            run_experiment(config)
    return runs


@pytest.fixture(scope="module")
def built_report(report_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return build_report(report_runs, out, ReportOptions(clips_per_task=1))


def _run_files(runs, protocol: str, method: str) -> dict:
    (path,) = (runs / "default" / protocol / method).iterdir()
    return {name: json.loads((path / f"{name}.json").read_text()) for name in ("summary", "profile", "matrices")} \
        | {"path": path}


# ================================================================== the page


def test_report_writes_every_figure_kind_as_png_and_svg_inline_in_one_page(built_report):
    report = built_report
    assert {"fig3", "fig4", "fig5", "fig6"} <= set(report.figures), report.notes
    page = report.index.read_text()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)
    assert len(sources) == len(report.figures)
    inline = {base64.b64decode(s.split(",", 1)[1]) for s in sources if s.startswith("data:image/png;base64,")}
    for kind, fig in report.figures.items():
        assert fig.png_path.parent == report.index.parent / "figures"
        with Image.open(fig.png_path) as im:
            assert im.width > 300 and im.height > 200, kind
        assert fig.png_path.read_bytes() in inline, f"{kind}: the page does not show the PNG written beside it"
        assert ET.parse(fig.svg_path).getroot().tag.endswith("svg"), kind
    # nothing from the network: no remote src/href, no external script or stylesheet
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and not re.search(r"<script[^>]*\ssrc=", page)
    for name in ("Accuracy", "Retention", "Plasticity", "Stability", "Speed", "Memory efficiency"):
        assert f"<td>{name}</td>" in page, f"radar axis {name} is not defined on the page"
    assert "Avg For" in page  # the benchmark table


def test_page_loads_every_image_in_headless_chromium_and_the_screenshot_is_not_blank(built_report, tmp_path):
    from clavs.reports.browser import find_chromium, page_status, screenshot

    if find_chromium() is None:
        pytest.skip("no Chromium on this machine (Debian package `chromium`; .ci/run installs it)")
    status = page_status(built_report.index)
    assert status.images == len(built_report.figures) and status.loaded == status.images, status
    assert status.height > 2000  # the whole report, not an error page
    shot = tmp_path / "shot.png"
    assert screenshot(built_report.index, shot).ok
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.shape[1] == 1200 and pixels.shape[0] >= min(status.height, 16000) - 100
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.03, "the screenshot is (nearly) blank"


def test_page_status_counts_an_image_that_does_not_decode(built_report, tmp_path):
    from clavs.reports.browser import find_chromium, page_status
    from clavs.reports.html import Page, Section

    if find_chromium() is None:
        pytest.skip("no Chromium on this machine (Debian package `chromium`; .ci/run installs it)")
    good = base64.b64encode(built_report.figures["fig4"].png).decode()
    page = Page("broken", "", [Section("s", "S", f'<img src="data:image/png;base64,{good}">'
                                                 '<img src="data:image/png;base64,AAAAbm90IGEgcG5n">')])
    (tmp_path / "index.html").write_text(page.render())
    status = page_status(tmp_path / "index.html")
    assert (status.images, status.loaded, status.ok) == (2, 1, False)


# ================================================================== the values behind the figures


def test_radar_axes_are_the_runs_summaries_and_profiles_normalised_min_max(report_runs):
    groups = collect_runs(report_runs).of_protocol("cil")
    assert sorted(g.label for g in groups) == sorted(METHODS)
    profiles = {p.label: p for p in radar_profiles(groups)}
    for method in METHODS:
        files = _run_files(report_runs, "cil", method)
        s, tasks = files["summary"]["map"], files["profile"]["tasks"]
        expect = {"accuracy": s["aa"], "retention": 100 - s["forgetting"], "plasticity": s["la"],
                  "stability": 100 + s["bwt"],
                  "speed": sum(t["train_frames"] for t in tasks) / sum(t["train_seconds"] for t in tasks),
                  "memory": 1 / files["profile"]["trainable_parameters_max"]}
        assert profiles[method].raw == pytest.approx(expect, rel=1e-12)
    for axis in AXES:
        values = [profiles[m].raw[axis.key] for m in METHODS]
        normed = [profiles[m].normalised[axis.key] for m in METHODS]
        if values[0] == values[1]:
            assert normed == [1.0, 1.0]
        else:
            assert sorted(normed) == pytest.approx([0.1, 1.0]) and normed[int(np.argmax(values))] == 1.0


def test_normalise_is_min_max_onto_a_tenth_to_one():
    values = [3.0, 7.0, math.nan, 5.0]
    lo, hi = 3.0, 7.0
    assert normalise(values) == pytest.approx([0.1 + 0.9 * (v - lo) / (hi - lo) if not math.isnan(v) else 0.0
                                               for v in values])
    assert normalise([2.0, 2.0]) == [1.0, 1.0]
    assert normalise([math.nan]) == [0.0]


def test_heatmap_matrix_is_the_elementwise_mean_over_seeds():
    R1 = [[10.0, 5.0, None], [8.0, 20.0, 1.0], [6.0, 18.0, 30.0]]
    R2 = [[12.0, None, None], [6.0, 22.0, 3.0], [4.0, 16.0, 32.0]]
    runs = [{"matrices": {"metrics": {"maxf": {"R": R}}}} for R in (R1, R2)]
    got = mean_matrix(MethodGroup(row={"protocol": "cil"}, runs=runs, label="x"), "maxf")
    a = np.array([[np.nan if v is None else v for v in row] for row in R1])
    b = np.array([[np.nan if v is None else v for v in row] for row in R2])
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        oracle = np.nanmean(np.stack([a, b]), axis=0)
    np.testing.assert_allclose(got, oracle)
    assert np.isnan(got[0, 2]) and got[0, 1] == 5.0


def test_anytime_curve_is_drawn_only_for_runs_that_have_one(tmp_path):
    run = {"anytime": {"points": [{"clips_seen": 4, "scores": {"map": 9.0}},
                                  {"clips_seen": 6, "scores": {"map": 12.5}}]},
           "summary": {"map": {"a_auc": 10.0}}}
    assert anytime_points(run, "map") == ([4.0, 6.0], [9.0, 12.5])
    fig = plot_anytime(run, "map", "si", tmp_path, "curve")
    assert fig.png_path.is_file() and fig.svg_path.is_file()
    assert plot_anytime({"anytime": {}}, "map", "x", tmp_path, "none") is None
    assert not (tmp_path / "none.png").exists()


def test_methods_anytime_curves_average_the_seeds_at_the_steps_all_of_them_evaluated(tmp_path):
    def run(points, a_auc):
        return {"anytime": {"points": [{"step": k, "clips_seen": n, "scores": {"map": v}} for k, n, v in points]},
                "summary": {"map": {"a_auc": a_auc}}}
    seed0 = run([(25, 100, 10.0), (50, 200, 20.0)], 12.0)
    seed1 = run([(25, 110, 30.0), (50, 190, 40.0), (75, 300, 99.0)], 14.0)  # step 75: only this seed
    assert mean_anytime_curve([seed0, seed1], "map") == ([105.0, 195.0], [20.0, 30.0])
    assert mean_anytime_curve([seed0, {"anytime": {}}], "map") == ([], [])  # a seed without a curve: no mean
    groups = [MethodGroup(row={"protocol": "tfcl"}, runs=[seed0, seed1], label="ewc"),
              MethodGroup(row={"protocol": "cil"}, runs=[{"summary": {}}], label="atlas")]
    fig = plot_anytime_methods(groups, "map", tmp_path)
    assert fig.png_path.name == "anytime_by_method.png" and fig.svg_path.is_file()
    svg = fig.svg_path.read_text()
    assert "ewc (A_auc 13.00, 2 seeds)" in svg and "atlas" not in svg  # the legend: mean A_auc; no curve, no line
    assert plot_anytime_methods(groups[1:], "map", tmp_path, stem="none") is None


# ================================================================== Figure 3


def test_qualitative_clips_and_predictions_reproduce_the_runs_recorded_score(report_runs):
    """Decoding test clips and embedding their audio as Figure 3 does, the restored last checkpoint
    scores the last task's test clips exactly as the run recorded (matrices.json)."""
    from clavs.batch import Batch, labelled_frames
    from clavs.engine.restore import restore_run
    from clavs.metrics import SegmentationAccumulator
    from clavs.reports.qualitative import load_clips, predict_masks

    files = _run_files(report_runs, "til", "lwf")  # TIL: the clip's task id picks the mask head
    restored = restore_run(files["path"])
    T = len(restored.scenario.tasks)
    indices = restored.scenario.tasks[T - 1].test
    clips = load_clips(restored, indices, [T - 1] * len(indices))
    acc = SegmentationAccumulator()
    for i in range(len(indices)):
        out = restored.predict(clips.frames[i : i + 1], clips.audio[i : i + 1], task_id=T - 1)
        batch = Batch(frames=clips.frames[i : i + 1], audio=clips.audio[i : i + 1],
                      masks=clips.masks[i : i + 1].float(), mask_valid=clips.mask_valid[i : i + 1].bool(),
                      class_index=torch.tensor([-1]), task_id=torch.tensor([T - 1]), index=torch.tensor([i]))
        logits, masks = labelled_frames(batch, out)
        acc.update(logits[:, 0].float(), masks[:, 0])
    recorded = files["matrices"]["metrics"]["map"]["R"][T - 1][T - 1]
    assert acc.compute()["map"] == pytest.approx(recorded, abs=1e-3)
    masks = predict_masks(restored, clips, indices[:1])
    logits = restored.predict(clips.frames[:1], clips.audio[:1], task_id=T - 1).mask_logits[:, 0]
    assert torch.equal(masks[0], logits.float().sigmoid() > 0.5)


def test_iou_matches_scikit_learn_and_scores_an_empty_truth_by_its_background():
    from sklearn.metrics import jaccard_score

    from clavs.reports.qualitative import iou

    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        pred, gt = torch.rand(16, 16, generator=gen) > 0.5, torch.rand(16, 16, generator=gen) > 0.7
        assert iou(pred, gt) == pytest.approx(jaccard_score(gt.flatten().numpy(), pred.flatten().numpy()))
    pred = torch.zeros(4, 4, dtype=torch.bool)
    pred[0, :2] = True
    assert iou(pred, torch.zeros(4, 4, dtype=torch.bool)) == pytest.approx(14 / 16)


def test_figure3_is_skipped_with_a_note_without_checkpoints_or_dataset(report_runs, tmp_path, monkeypatch):
    from clavs.reports.qualitative import plot_overlays

    runs = tmp_path / "runs"
    src = (report_runs / "default" / "cil" / "lwf").iterdir().__next__()
    copy = runs / "default" / "cil" / "lwf" / src.name
    shutil.copytree(src, copy)
    shutil.rmtree(copy / "checkpoints")
    groups = collect_runs(runs).groups
    fig, notes = plot_overlays(groups, tmp_path / "fig", protocol="cil")
    assert fig is None and any("lwf left out" in n and "no task checkpoint" in n for n in notes), notes
    with pytest.raises(Exception, match=r"--methods: no finished CIL run of 'ewc' here \(have: lwf\)"):
        plot_overlays(groups, tmp_path / "fig", protocol="cil", methods=["ewc"])

    monkeypatch.setenv("CLAVS_HOME", str(tmp_path / "empty_home"))  # SynthAVS is not built here
    groups = collect_runs(report_runs).of_protocol("cil")
    fig, notes = plot_overlays(groups, tmp_path / "fig", protocol="cil")
    assert fig is None and any("dataset is not on this machine" in n for n in notes), notes


# ================================================================== the command


def test_cli_report_help_and_errors(capsys, tmp_path):
    from clavs.cli import main

    with pytest.raises(SystemExit) as e:
        main(["report", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("Figure 4 forward transfer vs forgetting", "Figure 5 accuracy-matrix heatmaps",
                  "Figure 6 normalised radar", "Figure 3 qualitative", "--screenshot"):
        assert words in text
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out"), "--metric", "accuracy"]) == 2
    assert "--metric 'accuracy' is not a metric" in capsys.readouterr().err


def test_method_styles_keep_eleven_methods_apart_and_follow_the_label_not_the_order():
    from clavs.reports.figures import method_styles

    labels = [f"m{i:02d}" for i in range(11)]
    styles = method_styles(labels)
    assert len({(s.colour, s.line, s.marker) for s in styles.values()}) == 11  # tab10 alone would repeat one
    assert method_styles(reversed(labels)) == styles  # a method looks the same whichever figure lists it first
