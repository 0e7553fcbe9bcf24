"""Calibration input forms (issue 13): text files, JSONL of text or chat messages, lists of strings or chats,
datasets; chats go through the model's chat template; bad rows get one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantkit.calibration import describe_calibration, tokenize_samples
from quantkit.errors import CalibrationDataError

CHAT = [{"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital of France."}]


@pytest.fixture(scope="module")
def tokenizer(embedded_path: Path):  # noqa: ANN201 - transformers' tokenizer class
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_path)


def test_chats_are_rendered_with_the_chat_template(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    want = tuple(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert "<|im_start|>" in rendered  # SmolLM2-Instruct's template: the served form, special tokens and all
    assert tokenize_samples([CHAT], tokenizer, num_samples=1, max_seq_length=512) == (want,)
    f = tmp_path / "chats.jsonl"
    f.write_text(json.dumps({"messages": CHAT}) + "\n" + json.dumps({"text": "plain text row here"}) + "\n")
    samples = tokenize_samples(f, tokenizer, num_samples=8, max_seq_length=512)
    assert samples[0] == want and len(samples) == 2
    assert describe_calibration([CHAT]) == "list of 1 chats"


def test_a_dataset_with_messages(tokenizer) -> None:  # noqa: ANN001
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"messages": CHAT}, {"messages": CHAT}])
    assert len(tokenize_samples(ds, tokenizer, num_samples=8, max_seq_length=512)) == 2


def test_bad_rows_are_one_clear_error(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "fine"}\n{"prompt": "no text key"}\n')
    with pytest.raises(CalibrationDataError, match=r"bad.jsonl line 2 has keys \['prompt'\]"):
        tokenize_samples(f, tokenizer)
    f.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(CalibrationDataError, match="line 2 is not JSON"):
        tokenize_samples(f, tokenizer)
    with pytest.raises(CalibrationDataError, match="Unsupported calibration data"):
        tokenize_samples([CHAT, "mixed"], tokenizer)


def test_chats_need_a_template(tokenizer) -> None:  # noqa: ANN001
    import copy

    base = copy.copy(tokenizer)
    base.chat_template = None
    with pytest.raises(CalibrationDataError, match="no chat template"):
        tokenize_samples([CHAT], base)
