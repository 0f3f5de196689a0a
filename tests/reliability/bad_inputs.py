"""The corpus of bad inputs: each a command line (plus the files it points at) that compbench
must refuse with one sentence naming what is wrong and how to fix it, before any training.

``build_corpus(root)`` writes the data files the cases need under ``root`` and returns the cases.
Each case: ``id``, ``argv`` (overrides after the common ones), ``expect`` (words the sentence
must contain, case-insensitive), optional ``env``.
"""

from __future__ import annotations

import json
from pathlib import Path

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]
GOOD_CONLL = "Ali B-PER\nwent O\nto O\nKano B-LOC\n\nAisha B-PER\nsaw O\nAbuja B-LOC\n\n" * 4


def _files(folder: Path, files: dict[str, str | bytes]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return str(folder)


def _tiny_gpt2_folder(folder: Path) -> str:
    """A real, loadable transformers folder: a tiny GPT-2 and its tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from compbench.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(["some text to learn a few merges from"] * 20, "decoder", 300, folder / "tok_cache")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=64))
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return str(folder)


def build_corpus(root: Path) -> list[dict]:
    """Write the cases' files under ``root``; return the cases."""
    root = Path(root)
    ner = lambda name, files: _files(root / name, files)  # noqa: E731
    ner_ok = {"train.txt": GOOD_CONLL, "dev.txt": GOOD_CONLL, "test.txt": GOOD_CONLL}
    model_ok = _tiny_gpt2_folder(root / "tiny_gpt2_saved")
    damaged = _tiny_gpt2_folder(root / "damaged_weights")
    weights = Path(damaged) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    bad_config = _files(root / "bad_config", {"config.json": "{this is not json"})
    export_dir = _files(root / "packed_export", {"compbench_export.json": json.dumps(
        {"format": "packed-int4", "loader": "compbench.methods.quantization.packing:load_packed_export"}), "weights.bin": b"\0" * 64})
    not_a_db = root / "not_a_db.db"
    not_a_db.write_bytes(b"this file is not an SQLite database " * 100)
    a_file = root / "a_file"
    a_file.write_text("x")
    masakhaner = ("task=masakhaner", "task.max_length=64")
    lm = ("model=tiny_gpt2", "task=ptb", "task.max_length=64", "task.stride=32")
    xsum = ("model=tiny_bart", "task=xsum", "task.max_length=64")

    cases = [
        # ---------------------------------------------------------------- config
        ("group_option_typo", ["method=prunning"], "did you mean prune_magnitude"),
        ("model_option_typo", ["model=tiny_gtp2"], "did you mean tiny_gpt2"),
        ("task_option_typo", ["task=wikitxt2"], "did you mean wikitext2"),
        ("typo_in_sweep", ["-m", "method=none,prunning"], "did you mean prune_magnitude"),
        ("list_option_typo", ["logger=[csv,wandbb]"], "did you mean wandb"),
        ("experiment_unknown", ["experiment=nope"], "names no config in conf/experiment"),
        ("method_key_typo", ["method=prune_magnitude", "method.sparsty=0.5"], "did you mean method.sparsity"),
        ("nested_key_typo", ["evaluation.calibraton.n_bins=3"], "did you mean evaluation.calibration.n_bins"),
        ("top_key_unknown", ["foo=1"], "foo is not a compbench setting"),
        ("key_of_other_method_in_sweep", ["-m", "method=none,prune_magnitude", "method.sparsity=0.5"],
         "with method=none"),
        ("unparsable_override", ["method.sparsity=[0.5"], "cannot read the override"),
        ("missing_mandatory", ["model=hub"], "model.name_or_path has no value"),
        ("sparsity_out_of_range", ["method=prune_magnitude", "method.sparsity=1.5"], "sparsity"),
        ("sparsity_wrong_type", ["method=prune_magnitude", "method.sparsity=abc"], "sparsity"),
        ("bits_zero", ["method=ptq_weight_only", "method.w_bits=0"], "w_bits"),
        ("bits_33", ["method=ptq_weight_only", "method.w_bits=33"], "w_bits"),
        ("qat_bits_zero", ["method=qat", "method.w_bits=0"], "w_bits"),
        ("negative_lr", ["finetune.lr=-1"], "finetune.lr"),
        ("kd_temperature_zero", ["method=kd", "method.temperature=0"], "temperature"),
        ("kd_alpha_out_of_range", ["method=kd", "method.alpha=2"], "alpha"),
        ("kd_student_deeper_than_teacher", ["method=kd", "method.student_layers=4"], "student_layers"),
        ("kd_without_teacher", ["method=kd", "finetune.enabled=false"], "teacher"),
        ("seed_wrong_type", ["seed=abc"], "seed"),
        ("max_steps_wrong_type", ["finetune.max_steps=ten"], "finetune.max_steps"),
        ("threads_zero", ["threads=0"], "threads"),
        ("n_bins_one", ["evaluation.calibration.n_bins=1"], "n_bins"),
        ("decoder_task_encoder_decoder_model", ["model=tiny_bart", "task=smoke_lm"], "needs a decoder model"),
        ("summarization_with_decoder", ["model=tiny_gpt2", "task=smoke_summarization"],
         "needs an encoder_decoder model"),
        ("evaluation_device_unknown", ["evaluation.device=tpu"], "evaluation.device"),
        ("cuda_only_method_on_cpu", ["method=ptq_llm_int8"], "cuda"),
        ("stride_zero", ["model=tiny_gpt2", "task=smoke_lm", "task.stride=0"], "stride"),
        ("max_length_beyond_context", ["task.max_length=4096"], "context"),
        ("derive_fraction_out_of_range", ["model=tiny_gpt2", "task=wikitext2", "task.derive_fraction=1.5"],
         "derive_fraction"),
        ("task_source_unknown", ["task.source=ftp"], "task.source"),
        # ---------------------------------------------------------------- data
        ("data_dir_missing", [*masakhaner, f"task.data_dir={root / 'nope'}"], "does not exist"),
        ("split_file_missing", [*masakhaner, "task.data_dir=" + ner("no_test", {"train.txt": GOOD_CONLL})],
         "no test split"),
        ("empty_file", [*masakhaner, "task.data_dir=" + ner("empty_test", {**ner_ok, "test.txt": ""})],
         "holds no examples"),
        ("conll_malformed_line", [*masakhaner, "task.data_dir=" + ner("malformed", {
            **ner_ok, "dev.txt": GOOD_CONLL + "lonelytoken\n"})], "expected 'token tag'"),
        ("label_outside_set", [*masakhaner, "task.data_dir=" + ner("bad_label", {
            **ner_ok, "test.txt": GOOD_CONLL + "Lagos B-CITY\n"})], "outside task.labels"),
        ("non_utf8_bytes", [*masakhaner, "task.data_dir=" + ner("latin1", {
            **ner_ok, "train.txt": "Caf\xe9 O\n".encode("latin-1")})], "not utf-8"),
        ("whitespace_only_text", [*lm, "task.data_dir=" + ner("ws_ptb", {
            "ptb.train.txt": "a b c\n" * 50, "ptb.valid.txt": "a b\n" * 10, "ptb.test.txt": "  \n\t\n   \n"})],
         "holds no examples"),
        ("one_stream_too_small_to_split", [*lm, "task.data_dir=" + ner("ptb_one_word", {
            "ptb.valid.txt": "word\n", "ptb.test.txt": "a b c\n"})], "add a train file"),
        ("jsonl_not_json", [*xsum, "task.data_dir=" + ner("xsum_bad_json", {
            "train.jsonl": '{"document": "a b", "summary": "a"}\n' * 4 + "not json at all\n",
            "validation.jsonl": '{"document": "a b", "summary": "a"}\n',
            "test.jsonl": '{"document": "a b", "summary": "a"}\n'})], "not a json object"),
        ("jsonl_missing_field", [*xsum, "task.data_dir=" + ner("xsum_no_summary", {
            "train.jsonl": '{"document": "a b", "summary": "a"}\n',
            "validation.jsonl": '{"document": "a b"}\n',
            "test.jsonl": '{"document": "a b", "summary": "a"}\n'})], "needs keys"),
        ("ood_data_dir_missing", [*masakhaner, "task.data_dir=" + ner("ood_main", ner_ok),
                                  f"+evaluation.ood.yor={{lang: yor, data_dir: '{root / 'no_yor'}'}}"],
         "does not exist"),
        ("hub_unreachable_no_data_dir", ["task=masakhaner", f"paths.data_root={root / 'no_data_root'}"],
         "task.data_dir"),
        # ---------------------------------------------------------------- models and artifacts
        ("model_path_missing", ["model=hub", f"model.name_or_path={root / 'no_such_model'}"], "does not exist"),
        ("model_hub_id_offline", ["model=hub", "model.name_or_path=someone/not-a-model"], "unreachable"),
        ("model_config_corrupted", ["model=hub", f"model.name_or_path={bad_config}"], "config.json"),
        ("model_weights_truncated", ["model=hub", f"model.name_or_path={damaged}", "task=smoke_lm"], "damaged"),
        ("model_is_packed_export", ["model=hub", f"model.name_or_path={export_dir}"], "compbench export"),
        ("model_of_other_family", ["model=hub", f"model.name_or_path={model_ok}", "task=smoke_summarization"],
         "needs an encoder_decoder model"),
        # ---------------------------------------------------------------- environment
        ("wandb_online_no_network", ["logger=wandb", "logger.wandb.mode=online"], "unreachable"),
        ("results_dir_unwritable", [f"paths.output_dir={a_file}/results"], "writable"),
        ("store_not_a_database", [f"paths.db={not_a_db}"], "not a usable compbench results store"),
    ]
    out = []
    for case_id, argv, expect in cases:
        env = {"WANDB_API_KEY": "0" * 40, "WANDB_MODE": ""} if case_id == "wandb_online_no_network" else {}
        out.append({"id": case_id, "argv": list(argv), "expect": expect, "env": env})
    return out
