"""Named stages, steps with an ETA, library output kept in a run log, and steps relayed from a child process."""

from __future__ import annotations

import io
import stat
import sys
from pathlib import Path

from quantkit import progress
from quantkit.backends.llmcompressor import OneshotSteps
from quantkit.progress import Progress, fmt_s
from quantkit.serve.remote import run_quantkit


def test_stages_are_numbered_and_timed_and_library_output_goes_to_the_log(tmp_path: Path) -> None:
    out = io.StringIO()
    prog = Progress(["first", "second"], stream=out, log_path=tmp_path / "run.log", min_interval_s=0)
    with prog.active():
        assert progress.current() is prog
        with prog.stage("first", "what it does"):
            with prog.library_output():
                print("a library's chatter")
                sys.stderr.write("a tqdm bar 1/3\ra tqdm bar 3/3\n")
            prog.step("layer", 1, 4)
            prog.step("layer", 2, 4)
        with prog.stage("second"):
            pass
    assert progress.current() is not prog  # inactive again: the null progress
    text = out.getvalue()
    assert "[1/2] first - what it does" in text and "[1/2] first: done in 0:00" in text
    assert "[2/2] second" in text and "layer 2/4" in text and "left)" in text
    assert "layer 1/4  (0:00 in this stage)\n" in text  # no ETA before a pace was seen
    assert "chatter" not in text and "tqdm" not in text
    log = (tmp_path / "run.log").read_text()
    assert "a library's chatter" in log and "a tqdm bar 1/3\na tqdm bar 3/3" in log
    assert "== [1/2] first - what it does" in log


def test_verbose_shows_the_library_output_too(tmp_path: Path) -> None:
    out = io.StringIO()
    prog = Progress(["only"], stream=out, log_path=tmp_path / "run.log", verbose=True)
    with prog.active(), prog.stage("only"), prog.library_output():
        print("GPTQ | METRIC - error 2.69")
    assert "METRIC" in out.getvalue() and "METRIC" in (tmp_path / "run.log").read_text()


def test_overall_eta_once_every_remaining_stage_has_an_estimate() -> None:
    out = io.StringIO()
    prog = Progress(["a", "b"], stream=out, min_interval_s=0)
    prog.estimate("b", 90)
    with prog.stage("a"):
        prog.step("layer", 1, 2)  # half of "a" done: its rest is about what it took so far
    with prog.stage("b"):
        pass
    assert "[2/2] b  (0:00 so far, about 1:30 to go)" in out.getvalue()


def test_a_stopped_stage_says_so() -> None:
    out = io.StringIO()
    prog = Progress(["a"], stream=out)
    try:
        with prog.stage("a"):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert "[1/1] a: stopped in" in out.getvalue()


def test_steps_without_an_active_progress_print_nothing(capsys) -> None:
    progress.current().step("layer", 1, 2)
    with progress.current().stage("x"), progress.current().library_output():
        print("passes through")
    assert capsys.readouterr().out == "passes through\n"


def test_fmt_s() -> None:
    assert (fmt_s(0), fmt_s(75.2), fmt_s(3725)) == ("0:00", "1:15", "1:02:05")


def test_oneshot_steps_name_each_pass_so_a_second_pass_is_not_a_restart() -> None:
    """The lines llm-compressor 0.14 prints (IndependentPipeline, then a sequential pass per modifier)."""
    steps = OneshotSteps(["smoothquant", "gptq"])
    lines = ["2026-12-02T21:22:10.4771 | IndependentPipeline | INFO - Inferred `SequentialPipeline` for "
             "`SmoothQuantModifier`",
             "(1/31): Calibrating:   0%|          | 0/64 [00:00<?, ?it/s]",
             "(1/31): Calibrating: 100%|##########| 64/64 [00:00<00:00, 677.90it/s]",
             "(31/31): Calibrating:   0%|          | 0/64 [00:00<?, ?it/s]",
             "2026-12-02T21:23:34.4966 | IndependentPipeline | INFO - Inferred `SequentialPipeline` for `GPTQModifier`",
             "(1/31): Propagating:   0%|          | 0/64",
             "(1/31): Calibrating:   0%|          | 0/64"]
    hits = [h for h in map(steps, lines) if h is not None]
    assert [(h.label, h.done) for h in hits] == [
        ("SmoothQuant pass 1/2: calibrating layer", 1), ("SmoothQuant pass 1/2: calibrating layer", 31),
        ("GPTQ pass 2/2: calibrating layer", 1)]
    assert hits[0].fraction == 0 and hits[2].fraction == 0.5


def test_a_child_process_reports_its_steps_while_it_works(tmp_path: Path) -> None:
    """The serve environment's steps (what vLLM is doing) reach the parent's stage; the rest goes to the log."""
    script = tmp_path / "python"
    script.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      "assert os.environ['QUANTKIT_PROGRESS_TO_PARENT'] == '1'\n"
                      "print('quantkit-progress: starting the vLLM engine', file=sys.stderr, flush=True)\n"
                      "print('INFO vllm chatter', file=sys.stderr, flush=True)\n"
                      "print(json.dumps({'ok': True, 'x': 1}))\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    out = io.StringIO()
    prog = Progress(["measure"], stream=out, log_path=tmp_path / "run.log", min_interval_s=0)
    with prog.active(), prog.stage("measure"):
        answer = run_quantkit(["generate", "x"], python=script)
    assert answer["x"] == 1
    assert "starting the vLLM engine" in out.getvalue() and "chatter" not in out.getvalue()
    assert "INFO vllm chatter" in (tmp_path / "run.log").read_text()


def test_the_eta_comes_from_the_pace_since_the_first_step() -> None:
    """Loading the model before layer 1 says nothing about the pace: 10 s for a quarter of the stage, half
    left -> 20 s, whatever came before the first step (the first round trip printed "1497:48:15 left")."""
    st = progress._Stage(1, "quantize", started=0.0, fraction=0.5, first=(100.0, 0.25))
    assert st.left_s(110.0) == 20.0
    assert progress._Stage(1, "q", started=0.0, fraction=0.26, first=(100.0, 0.25)).left_s(101.0) is None
    assert progress._Stage(1, "q", started=0.0, fraction=0.0, first=(100.0, 0.0)).left_s(105.0) is None
