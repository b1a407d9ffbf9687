"""The paper-style tables (reports/benchmark_table.py) on hand-made run directories."""

from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from clavs.reports.benchmark_table import build_benchmark_table
from clavs.results import RunDir, run_dir_for

AA = {  # (method, protocol) -> test AA of mAP per seed; Forgetting is 100 - 2*AA/3 (any distinct numbers)
    ("finetune", "cil"): [30.0, 34.0],
    ("finetune", "til"): [40.0],
    ("my_replay", "cil"): [50.0, 51.0, 55.0],
    ("my_replay", "til"): [20.0],
    ("my_replay", "dil"): [25.0, 27.0],
}
FAMILY = {"finetune": ("baseline", False), "my_replay": ("replay", True), "atlas": ("atlas", False)}


def forgetting(aa: float) -> float:
    return 100.0 - 2 * aa / 3


def write_run(root, method, protocol, seed, aa, *, hp=None, split="11-2", experiment="e", forget="auto"):
    config = {"experiment": experiment, "seed": seed, "runs_dir": str(root),
              "protocol": {"name": protocol, "split": split}, "method": {"name": method, **(hp or {})}}
    run = RunDir(run_dir_for(config, root)).create()
    run.write_config(config)
    f = forgetting(aa) if forget == "auto" else forget
    summary = {m: {"la": aa + 1, "aa": aa + off, "a_inc": aa, "forgetting": None if f is None else f + off,
                   "bwt": -1.0, "fwt": 0.5} for m, off in (("map", 0.0), ("f1", -5.0), ("miou", -10.0))}
    run.write_matrices(2, {"map": {"R": [[aa, 0.0], [aa, aa]], "b": [0.0, 0.0]}})
    run.write_summary(summary)
    run.write_summary({m: {**v, "aa": v["aa"] - 3} for m, v in summary.items()}, split="val")
    family, exemplars = FAMILY[method]
    run.write_profile({"method": {"name": method, "family": family, "uses_exemplars": exemplars}})
    run.mark_done()
    return run.path


@pytest.fixture
def table1_runs(tmp_path):
    for (method, protocol), values in AA.items():
        for seed, aa in enumerate(values):
            write_run(tmp_path, method, protocol, seed, aa)
    unfinished = RunDir(tmp_path / "e" / "dil" / "finetune" / "seed0-00000000").create()
    unfinished.write_config({"experiment": "e", "seed": 0, "protocol": {"name": "dil"}, "method": {"name": "finetune"}})
    return tmp_path


def _md_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Family"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[1]] = cells
    return rows


def _cell(values: list[float]) -> str:
    mean = np.mean(values)
    return f"{mean:.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else f"{mean:.2f}"


def test_table1_markdown_mean_std_missing_best_and_exemplar_mark(table1_runs):
    table = build_benchmark_table(table1_runs)
    assert [s.kind for s in table.sections] == ["table1"]
    md = table.render("md")
    header = next(line for line in md.splitlines() if line.startswith("| Family"))
    assert header.split(" | ")[2:] == ["TIL 11-2 Avg mAP", "TIL 11-2 Avg For", "CIL 11-2 Avg mAP", "CIL 11-2 Avg For",
                                       "DIL 11-2 Avg mAP", "DIL 11-2 Avg For |"]
    rows = _md_rows(md)
    assert list(rows) == ["finetune", "my_replay †"]  # grouped by family: baseline before replay
    ft, rp = rows["finetune"], rows["my_replay †"]
    assert ft[0] == "baseline" and rp[0] == "replay"
    # numpy as the oracle of mean ± sample std; the best AA (highest) and Forgetting (lowest) in bold
    assert rp[4] == f"**{_cell(AA[('my_replay', 'cil')])}**" and ft[4] == _cell(AA[("finetune", "cil")])
    assert ft[5] == _cell([forgetting(v) for v in AA[("finetune", "cil")]])
    assert rp[5] == f"**{_cell([forgetting(v) for v in AA[('my_replay', 'cil')]])}**"
    assert ft[2] == "**40.00**" and rp[2] == "20.00"  # one seed: no ±
    assert ft[6] == ft[7] == "—"  # finetune never finished a DIL run: missing, not 0
    assert rp[6] == "**26.00 ± 1.41**"


def test_csv_parses_back_with_unrounded_numbers_and_empty_missing_cells(table1_runs):
    text = build_benchmark_table(table1_runs).render("csv")
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(text))}
    assert set(rows) == {"finetune", "my_replay"}
    rp, ft = rows["my_replay"], rows["finetune"]
    values = AA[("my_replay", "cil")]
    assert float(rp["cil_map_aa_mean"]) == pytest.approx(np.mean(values))
    assert float(rp["cil_map_aa_std"]) == pytest.approx(np.std(values, ddof=1))
    assert rp["cil_map_aa_seeds"] == "3" and rp["cil_map_aa_best"] == "1" and ft["cil_map_aa_best"] == "0"
    assert rp["uses_exemplars"] == "1" and ft["uses_exemplars"] == "0" and rp["family"] == "replay"
    assert ft["dil_map_aa_mean"] == "" and ft["dil_map_aa_seeds"] == "0" and ft["dil_map_aa_best"] == "0"
    assert rp["table"] == "table1"


def _latex_spans(line: str) -> int:
    """Columns a tabular row covers: cells separated by unescaped &, a multicolumn counting its span."""
    cells = re.split(r"(?<!\\)&", line.rstrip().removesuffix(r"\\"))
    return sum(int(m.group(1)) if (m := re.match(r"\s*\\multicolumn\{(\d+)\}", c)) else 1 for c in cells)


def _check_latex(text: str) -> list[str]:
    assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}") >= 1
    bodies = re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", text, re.S)
    rows = []
    for spec, body in bodies:
        lines = [ln for ln in body.strip().splitlines() if ln.strip() and ln.strip() != r"\hline"]
        assert all(ln.rstrip().endswith(r"\\") for ln in lines)
        assert {_latex_spans(ln) for ln in lines} == {len(spec)}
        rows += lines
    assert text.count("{") == text.count("}")
    assert text.isascii(), "pdflatex without inputenc reads ASCII"
    assert not re.search(r"(?<!\\)_", text.replace(r"\_", "")), "an unescaped underscore"
    return rows


def test_latex_is_a_tabular_body_with_equal_columns_escapes_and_pm(table1_runs):
    text = build_benchmark_table(table1_runs).render("latex")
    rows = _check_latex(text)
    replay = next(r for r in rows if r.startswith("replay"))
    assert r"my\_replay$^\dagger$" in replay
    assert r"\textbf{52.00 $\pm$ 2.65}" in replay
    finetune = next(r for r in rows if r.startswith("baseline"))
    assert finetune.count("---") == 2  # the missing DIL pair


def test_table2_appears_for_switch_variants_and_table1_keeps_the_default(tmp_path):
    grid = {(True, True): [70.0, 72.0], (False, True): [60.0, 61.0], (True, False): [65.0, 66.0],
            (False, False): [50.0, 55.0]}
    for (lra, pre), values in grid.items():
        for seed, aa in enumerate(values):
            write_run(tmp_path, "atlas", "cil", seed, aa, hp={"lra": lra, "pre_conditioning": pre, "lra_lambda": 20.0})
    write_run(tmp_path, "atlas", "tfcl", 0, 40.0, hp={"lra": True, "pre_conditioning": True, "lra_lambda": 20.0},
              split="31-5", forget=None)
    write_run(tmp_path, "finetune", "cil", 0, 30.0)
    table = build_benchmark_table(tmp_path)
    assert [s.kind for s in table.sections] == ["table1", "table2"]
    t1, t2 = table.sections
    assert [r.label for r in t1.rows] == ["finetune", "atlas"]  # only the default switches enter Table 1
    atlas1 = t1.rows[1]
    assert atlas1.cells[0].mean == pytest.approx(71.0) and atlas1.cells[0].best
    assert atlas1.cells[3].text() == "n/a" and atlas1.cells[3].n == 1  # Forgetting undefined, but a run exists
    assert t2.switch_names == ["method.lra", "method.pre_conditioning"]
    assert [(c.protocol, c.metric, c.key) for c in t2.columns][:4] == [
        ("cil", "map", "aa"), ("cil", "map", "forgetting"), ("cil", "f1", "aa"), ("cil", "miou", "aa")]
    assert [tuple(r.switches.values()) for r in t2.rows] == [(True, True), (True, False), (False, True), (False, False)]
    by_switch = {tuple(r.switches.values()): r for r in t2.rows}
    for key, values in grid.items():
        cells = by_switch[key].cells
        assert cells[0].mean == pytest.approx(np.mean(values)) and cells[0].std == pytest.approx(np.std(values, ddof=1))
        assert cells[2].mean == pytest.approx(np.mean(values) - 5) and cells[3].mean == pytest.approx(np.mean(values) - 10)
        assert cells[4].missing == (key != (True, True))  # TF-CL: only the full method ran
    md = table.render("md")
    assert "| ours | atlas | ✗ | ✓ | 60.50 ± 0.71 |" in md
    _check_latex(table.render("latex"))
    assert r"pre\_conditioning" in table.render("latex")
    rows = list(csv.DictReader(io.StringIO(table.render("csv"))))
    assert sorted(r["table"] for r in rows) == ["table1"] * 2 + ["table2"] * 4
    assert {(r["method.lra"], r["method.pre_conditioning"]) for r in rows if r["table"] == "table2"} == {
        ("1", "1"), ("0", "1"), ("1", "0"), ("0", "0")}


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: list[int] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append(0)
        if tag in ("td", "th"):
            self.rows[-1] += int(dict(attrs).get("colspan", 1))
        if tag not in ("br",):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open.pop() == tag


def test_html_fragment_is_balanced_with_equal_row_widths(table1_runs):
    text = build_benchmark_table(table1_runs).render("html")
    parser = _Cells()
    parser.feed(text)
    assert parser.open == [] and len(set(parser.rows)) == 1 and len(parser.rows) == 4
    assert "<strong>52.00 ± 2.65</strong>" in text and "my_replay †" in text


def test_validation_split_reads_the_validation_summaries(table1_runs):
    rows = _md_rows(build_benchmark_table(table1_runs, split="val").render("md"))
    assert rows["finetune"][2] == "**37.00**"  # 40 - 3: summary_val.json
    assert "val clips" in build_benchmark_table(table1_runs, split="val").render("md")


def test_unknown_format_and_empty_folder(tmp_path):
    table = build_benchmark_table(tmp_path)
    assert table.empty
    with pytest.raises(ValueError, match="unknown table format 'pdf'; choose one of md, latex, csv, html"):
        table.render("pdf")


def test_clavs_table_prints_mean_std_rows_in_md_latex_csv_and_rich(table1_runs, capsys):
    from clavs.cli import main

    cil = _cell(AA[("my_replay", "cil")])
    for fmt in ("md", "latex", "csv", "rich"):
        assert main(["table", str(table1_runs), "--format", fmt]) == 0, fmt
        out = capsys.readouterr().out
        if fmt == "csv":
            row = next(r for r in csv.DictReader(io.StringIO(out)) if r["method"] == "my_replay")
            assert f"{float(row['cil_map_aa_mean']):.2f} ± {float(row['cil_map_aa_std']):.2f}" == cil
        else:
            assert cil.replace("±", r"$\pm$" if fmt == "latex" else "±") in out, fmt
    assert main(["table", str(table1_runs / "e" / "til"), "--metric", "nope"]) == 1
    assert "no finished runs with metric 'nope'" in capsys.readouterr().err


def test_a_methods_default_row_spans_protocols_beside_its_grid_points(tmp_path):
    """A validation grid puts runs with other hyperparameters beside the default in one protocol: the
    default-valued runs stay one row across protocols (labelled by the method alone), and each
    grid point is its own row labelled by how it differs from the method's declared defaults."""
    from clavs.methods import get_method_class

    default = get_method_class("ewc").default_hparams({})["ewc_lambda"]
    FAMILY["ewc"] = ("cl", False)
    write_run(tmp_path, "ewc", "cil", 0, 40.0, hp={"ewc_lambda": default})
    write_run(tmp_path, "ewc", "cil", 0, 30.0, hp={"ewc_lambda": default / 100})
    write_run(tmp_path, "ewc", "til", 0, 50.0, hp={"ewc_lambda": default})
    rows = _md_rows(build_benchmark_table(tmp_path).render("md"))
    assert set(rows) == {"ewc", f"ewc method.ewc_lambda={default / 100:g}"}
    assert rows["ewc"][2:6] == ["**50.00**", f"**{forgetting(50.0):.2f}**", "**40.00**", f"**{forgetting(40.0):.2f}**"]
    assert rows[f"ewc method.ewc_lambda={default / 100:g}"][2:6] == ["—", "—", "30.00", f"{forgetting(30.0):.2f}"]
