"""Paper tables: packaged files are well-formed and hold the published numbers the sources give;
cells are filled from synthetic stores of known rows (aggregation, n=1, missing cells with their
command, differences, values relative to the baseline, numbers read from a reference file)."""

import math

import pandas as pd
import pytest
import yaml
from report_stores import report, store  # noqa: F401 (fixtures)

from compbench.reporting import papers
from compbench.reporting.selection import ReportError

SPEC = {
    "name": "toy", "title": "toy table",
    "source": {"paper": "Someone 2024", "table": "Table 1", "read_from": "secondary", "notes": "quoted"},
    "protocol": {"note": "tiny", "overrides": ["experiment=tiny_masakhaner"]},
    "select": {"model": "xlmr", "task": "ner"},
    "metric": "quality.f1",
    "seeds": [0, 1],
    "columns": [
        {"key": "f1", "label": "F1", "scale": 100, "decimals": 2},
        {"key": "drop", "label": "F1 change", "value": "delta", "scale": 100, "decimals": 2},
        {"key": "size", "label": "size change (%)", "metric": "eff.size_mb", "value": "rel_delta", "decimals": 1},
    ],
    "rows": [
        {"label": "dense", "select": {"method": "none"}, "published": {"f1": 81.5}},
        {"label": "kd", "select": {"method": "kd"}, "published": {"f1": 76.0, "drop": "about -4"}},
        {"label": "kd alpha 0.9", "select": {"method": "kd", "method.alpha": 0.9}},
        {"label": "laq", "runnable": False, "reason": "not implemented", "published": {"f1": 70.0}},
    ],
}


def test_cells_aggregate_differ_and_name_the_missing_command(store):
    table = papers.fill(SPEC, store.frame())
    dense, kd, kd9, laq = table.cells
    # dense: F1 0.80/0.82 -> 81.0 ± 1.414 (x100), n=2; difference 81.0 - 81.5
    assert dense[0].mean == pytest.approx(81.0) and dense[0].std == pytest.approx(math.sqrt(2)) and dense[0].n == 2
    assert dense[0].difference == pytest.approx(-0.5)
    assert dense[1].mean == 0.0 and dense[2].mean == 0.0  # the baseline against itself
    # kd vs its own seed's baseline: (0.78-0.80, 0.76-0.82) x100 -> -4.0 ± 2.83; size 250 vs 500 -> -50%
    assert kd[1].mean == pytest.approx(-4.0) and kd[1].std == pytest.approx(math.sqrt(8))
    assert kd[2].mean == pytest.approx(-50.0) and kd[2].std == pytest.approx(0.0)
    assert kd[0].n == 2 and kd[0].difference == pytest.approx(77.0 - 76.0)
    assert kd[1].difference is None  # a quoted claim ("about -4") is shown, never subtracted
    assert kd9[0].n == 0 and kd9[0].command == (
        "compbench -m experiment=tiny_masakhaner model=xlmr task=ner method=kd method.alpha=0.9 seed=0,1")
    assert laq[0].reason == "not implemented" and laq[0].published == 70.0 and laq[0].command is None

    frame, notes = papers.display_frame(table)
    assert frame.loc["dense", ("F1", "published")] == "81.50"
    assert frame.loc["dense", ("F1", "ours")] == "81.00 ± 1.41 (n=2)" and frame.loc["dense", ("F1", "Δ")] == "-0.50"
    assert frame.loc["kd", ("F1 change", "published")] == "about -4"
    assert frame.loc["kd alpha 0.9", ("F1", "ours")] == "missing [1]"
    assert frame.loc["kd alpha 0.9", ("F1", "published")] == "n/a"
    assert frame.loc["laq", ("F1", "ours")] == "not runnable"
    assert "[1] `compbench -m experiment=tiny_masakhaner model=xlmr task=ner method=kd method.alpha=0.9 seed=0,1`" in notes
    assert any(n.startswith("source: Someone 2024; table: Table 1; numbers read from a secondary source") for n in notes)
    compact = papers.render_paper(table, "markdown")  # the published shape: one cell per (row, column)
    assert "F1 (published · ours · Δ)" in compact
    assert "81.50 · 81.00 ± 1.41 (n=2) · -0.50" in compact and "n/a · missing [1] · —" in compact
    assert "F1 published" in papers.render_paper(table, "markdown", wide=True)


def test_one_run_has_no_std_and_failed_or_debug_runs_never_match(store, tmp_path):
    frame = store.frame()
    one = frame[~((frame["method"] == "none") & (frame["seed"] == 1))]
    cell = papers.fill(SPEC, one).cells[0][0]
    assert cell.n == 1 and cell.std is None and cell.mean == pytest.approx(80.0)
    shown, _ = papers.display_frame(papers.fill(SPEC, one))
    assert shown.loc["dense", ("F1", "ours")] == "80.00 (n=1)"
    debug = frame.assign(debug=frame["method"] == "none")
    table = papers.fill(SPEC, debug)
    assert table.cells[0][0].n == 0 and any("debug run(s) are never matched" in n for n in table.notes)


def test_published_numbers_from_a_reference_file(tmp_path, store):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "f1.tsv").write_text("lang\tf1_mean\tseeds\nhau\t85.21\t5\n")
    spec = {**SPEC, "columns": SPEC["columns"][:1], "rows": [{"label": "hau", "key": "hau", "select": {"method": "none"}}],
            "published_file": {"path": "ref/f1.tsv", "key": "lang", "value": "f1_mean", "column": "f1"}}
    assert papers.fill(spec, store.frame(), tmp_path).cells[0][0].published == 85.21
    missing = papers.fill(spec, store.frame(), tmp_path / "nowhere")
    assert missing.cells[0][0].published is None and "not available here" in missing.notes[0]


@pytest.mark.parametrize("name", sorted(papers.table_files()))
def test_packaged_tables_load_and_render(name, store):
    spec = papers.load_spec(name)
    assert spec["name"] == name
    for fmt in ("markdown", "latex", "html"):
        text = papers.render_paper(papers.fill(spec, store.frame()), fmt)
        assert spec["title"].split(",")[0].replace("_", "\\_") in text or fmt != "latex"


def published(name: str) -> dict[tuple[str, str], object]:
    spec = papers.load_spec(name)
    return {(row["label"], key): value for row in spec["rows"] for key, value in (row.get("published") or {}).items()}


def test_packaged_tables_hold_the_numbers_the_sources_give():
    assert published("tao2022_gpt2_lm") == {("full precision", "wikitext2"): 14.48,
                                            ("QuantGPT 2-2-8", "wikitext2"): 17.30, ("QuantGPT 2-2-8", "compression"): 14.4}
    assert published("tao2022_ablation_wikitext103") == {
        ("QuantGPT (contrastive loss + dynamic scaling)", "wikitext103"): 16.98,
        ("without the contrastive loss", "wikitext103"): 25.54}
    bart = published("tao2022_bart_xsum")
    assert [bart[("QuantBART 8-8-8", k)] for k in ("rouge1", "rouge2", "rougeL", "size")] == [40.25, 17.78, 32.70, 138.1]
    assert [bart[("QuantBART 2-2-8", k)] for k in ("rouge1", "rouge2", "rougeL", "size", "compression")] == \
        [39.15, 16.72, 31.72, 39.6, 13.4]
    assert sorted(published("tao2022_persona_chat").values()) == [5.52, 5.54, 74.78]
    quant = published("awobade2024_quantization")
    assert quant == {("fp32 (dense)", "size"): 504, ("LLM.int8", "f1_change"): -4.7, ("LLM.int8", "size"): 181.4,
                     ("LLM.int8", "size_change"): -64.08, ("LLM.int8", "time_change"): -52.3}
    assert all(v is None or isinstance(v, str) for v in published("awobade2024_pruning").values())


def test_reference_table_reads_the_shared_file(shared_data, store):
    table = papers.fill(papers.load_spec("masakhaner2_afriberta_reference"), store.frame(), shared_data)
    rows = dict(zip(table.row_labels, table.cells))
    with open(shared_data / "reference" / "masakhaner2_afriberta_test_f1.tsv") as handle:
        expected = pd.read_csv(handle, sep="\t").set_index("lang")["f1_mean"].to_dict()
    assert {lang: line[0].published for lang, line in rows.items()} == pytest.approx(expected)


@pytest.mark.parametrize(("rows", "message"), [
    ([{"label": "x", "published": {"nope": 1.0}}], "publishes unknown column"),
    ([{"label": "x"}, {"label": "x"}], "unique label"),
    ([{"label": "KD", "6-layer student": None}], "unknown key"),  # an unquoted comma in a YAML flow mapping
    ([{"label": "x", "runnable": False}], "gives no reason"),
])
def test_bad_table_files_are_refused(tmp_path, rows, message):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "rows": rows}))
    with pytest.raises(ReportError, match=message):
        papers.load_spec(str(path))


def test_cli_paper_list_render_and_bad_name(store, tmp_path):
    listed = report("paper", "--list")
    assert listed.returncode == 0 and "tao2022_gpt2_lm" in listed.stdout and "awobade2024_quantization" in listed.stdout
    done = report("paper", "tao2022_bart_xsum", "--db", str(store.path), "--format", "latex")
    assert done.returncode == 0, done.stderr
    assert r"\multicolumn{3}{c}{ROUGE-1}" in done.stdout and "40.25" in done.stdout
    bad = report("paper", "tao2022_bart", "--db", str(store.path))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == ("compbench-report: error: unknown paper table 'tao2022_bart'; did you mean "
                          "'tao2022_bart_xsum'? `compbench-report paper --list` lists them.\n")
    # Before any run a paper table still shows the published numbers and what to run.
    empty = report("paper", "tao2022_persona_chat", "--db", str(tmp_path / "none.db"))
    assert empty.returncode == 0 and "74.78" in empty.stdout and "no results database" in empty.stderr
