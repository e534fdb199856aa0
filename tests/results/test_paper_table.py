"""Tables for a paper: Markdown and LaTeX checked against text written by hand, then the CLI end to end."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cxr_bench.cli import main
from cxr_bench.results.paper_table import PaperTable, reference_tables, render

NAN = math.nan


def _comparison() -> pd.DataFrame:
    """Two labels and the mean of one configuration, as compare_reference lays them out."""
    base = {"run_id": "aaa;bbb", "backbone": "resnet50", "head": "wang2017", "label_set": "chestxray14",
            "split": "official", "source": "Wang et al. 2017, Table 17", "setting": "ResNet-50", "n_seeds": 2,
            "comparable": False, "why_not": "profile: ours sample, paper paper (full NIH release)"}
    rows = [("Atelectasis", 0.71234, 0.70011, 0.72466, 0.7003, 0.01204, -0.00019, 0.02436),
            ("Pleural_Thickening", 0.6, NAN, NAN, 0.6836, -0.0836, NAN, NAN),
            ("mean", 0.65617, 0.64, 0.67, 0.692, -0.03583, -0.052, -0.022)]
    cols = ["label", "ours", "ours_ci_lo", "ours_ci_hi", "paper", "delta", "delta_ci_lo", "delta_ci_hi"]
    return pd.DataFrame([{**base, **dict(zip(cols, r))} for r in rows])


MARKDOWN = """\
**resnet50 + wang2017 head, chestxray14, official split, vs Wang et al. 2017, Table 17 (ResNet-50)**[^1]

| Label | Ours mean [95% CI] | Paper | Difference [95% CI] | Seeds |
|:---|---:|---:|---:|---:|
| Atelectasis | 0.712 [0.700, 0.725] | 0.7003 | +0.012 [-0.000, +0.024] | 2 |
| Pleural_Thickening | 0.600 | 0.6836 | -0.084 | 2 |
| Mean | 0.656 [0.640, 0.670] | 0.692 | -0.036 [-0.052, -0.022] | 2 |

[^1]: Not comparable with the paper: profile: ours sample, paper paper (full NIH release).
"""

LATEX = r"""\begin{table}[htbp]
\centering
\caption{resnet50 + wang2017 head, chestxray14, official split, vs Wang et al. 2017, Table 17 (ResNet-50)\textsuperscript{1}}
\begin{tabular}{lrrrr}
\toprule
Label & Ours mean [95\% CI] & Paper & Difference [95\% CI] & Seeds \\
\midrule
Atelectasis & 0.712 [0.700, 0.725] & 0.7003 & +0.012 [$-$0.000, +0.024] & 2 \\
Pleural\_Thickening & 0.600 & 0.6836 & $-$0.084 & 2 \\
Mean & 0.656 [0.640, 0.670] & 0.692 & $-$0.036 [$-$0.052, $-$0.022] & 2 \\
\bottomrule
\end{tabular}
\par\smallskip\footnotesize
\textsuperscript{1}Not comparable with the paper: profile: ours sample, paper paper (full NIH release).\par
\end{table}
"""


def test_reference_table_markdown_and_latex_match_hand_written_text():
    tables = reference_tables(_comparison())
    assert render(tables, "markdown") == MARKDOWN
    assert render(tables, "latex") == LATEX


def test_cells_are_escaped_and_missing_values_are_dashes():
    t = PaperTable("a|b & 50% $x_1$", ["Model", "AUC"], [["my|model & co \\ {x} ~^#", None]], "lr")
    md = render([t], "markdown")
    assert "| my\\|model & co \\\\ {x} ~^# | — |" in md and "**a\\|b & 50% $x_1$**" in md
    tex = render([t], "latex")
    assert r"my|model \& co \textbackslash{} \{x\} \textasciitilde{}\textasciicircum{}\# & --- \\" in tex
    assert r"\caption{a|b \& 50\% \$x\_1\$}" in tex


def _latex_structure_ok(tex: str) -> None:
    """booktabs structure: each tabular has its rules in order and every row the header's column count."""
    for body in re.findall(r"\\begin\{tabular\}\{([lr]+)\}\n(.*?)\\end\{tabular\}", tex, re.S):
        align, inner = body
        lines = inner.strip().splitlines()
        assert lines[0] == r"\toprule" and lines[2] == r"\midrule" and lines[-1] == r"\bottomrule"
        for row in [lines[1], *lines[3:-1]]:
            assert row.endswith(r" \\") and len(re.split(r"(?<!\\)&", row)) == len(align)
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}")


def test_cli_leaderboard_and_compare_formats(run_store, tmp_path: Path, capsys):
    root, ids = run_store
    out = tmp_path / "lb.csv"
    assert main(["leaderboard", "--runs", str(root), "--suite", "wang2017", "--out", str(out), "--no-expert",
                 "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("**Suite wang2017: mean test AUC over the labels**")
    assert "| Model | Label set | Mean AUC [95% CI] | Seeds |\n|:---|:---|---:|---:|\n" in md
    board = pd.read_csv(out, comment="#")
    assert len([line for line in md.splitlines() if line.startswith("| ") and "chestxray" in line]) == len(board)
    run = board.iloc[0]
    assert f"[{run['mean_auc_ci_lo']:.3f}, {run['mean_auc_ci_hi']:.3f}] | 1 |" in md  # one seed: the run's own CI

    assert main(["compare", str(out), "--reference", "wang2017", "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    _latex_structure_ok(tex)
    assert r"Atelectasis & " in tex and "0.7003" in tex  # Table 17's value as published
    assert "Not comparable with the paper" in tex
    if shutil.which("pdflatex"):
        doc = tmp_path / "t.tex"
        doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + tex
                       + "\\end{document}\n")
        subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                       check=True, capture_output=True, timeout=120)
        assert (tmp_path / "t.pdf").stat().st_size > 0

    with pytest.raises(SystemExit):
        main(["compare", str(out), str(out), "--format", "html"])
    assert main(["compare", str(out), str(out), "--format", "markdown"]) == 2
    assert "--format makes a paper table" in capsys.readouterr().err
