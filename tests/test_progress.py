"""Progress display: tqdm on a terminal, plain lines (per loop, every few minutes) in a log."""

import io
import math

from ssenet.progress import LINE_INTERVAL_S, LineProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_one_line_per_loop_with_step_rate_and_loss():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(range(40), desc="cam epoch 2/15", stream=out, clock=clock)
    for step in bar:
        clock.now += 0.5
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}")
    assert out.getvalue() == "cam epoch 2/15: 40/40 it, 20 s, 2.00 it/s, loss=0.0250\n"
    bar.close()  # closing again writes nothing more
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()


def test_a_long_loop_also_writes_a_line_every_interval():
    out, clock = io.StringIO(), Clock()
    steps = 1000
    step_s = 3 * LINE_INTERVAL_S / steps * 1.1  # 3.3 intervals in all
    bar = LineProgress(range(steps), desc="cam", stream=out, clock=clock, unit="img")
    for _ in bar:
        clock.now += step_s
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # after 1, 2 and 3 intervals, then the end
    assert lines[0].startswith(f"cam: {math.ceil(LINE_INTERVAL_S / step_s)}/1000 img")
    assert lines[-1].startswith("cam: 1000/1000 img")


def test_counting_by_hand_without_a_total():
    out, clock = io.StringIO(), Clock()
    with LineProgress(desc="benchmark", stream=out, clock=clock) as bar:
        clock.now += 2
        bar.update(3)
    assert out.getvalue() == "benchmark: 3 it, 2 s, 1.50 it/s\n"
    empty = io.StringIO()
    LineProgress(range(0), desc="nothing", stream=empty).close()
    assert empty.getvalue() == ""  # a loop that never ran says nothing


def test_progress_bar_chooses_by_stream():
    log = io.StringIO()
    assert isinstance(progress_bar(range(3), desc="x", stream=log), LineProgress)
    assert list(progress_bar(range(3), desc="x", stream=log)) == [0, 1, 2]
    assert log.getvalue().startswith("x: 3/3 it, ") and log.getvalue().count("\n") == 1
    terminal = Terminal()
    assert list(progress_bar(range(3), desc="bar", stream=terminal)) == [0, 1, 2]
    assert "\r" in terminal.getvalue() and "bar" in terminal.getvalue()  # tqdm's redraws
    quiet = io.StringIO()
    assert list(progress_bar(range(3), desc="x", stream=quiet, enabled=False)) == [0, 1, 2]
    assert quiet.getvalue() == ""


def test_training_logs_one_line_per_epoch_to_a_file(tmp_path, capsys):
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from ssenet.config import Config
    from ssenet.runtime import DistInfo
    from ssenet.trainer import fit, make_loader

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 1)

        def forward(self, x):
            return self.linear(x)

        def parameter_groups(self):
            return [[self.linear.weight], [self.linear.bias], [], []]

    class Objective(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return {"loss": self.model(x).pow(2).mean()}

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 2), torch.zeros(8))
    info = DistInfo()
    model = Tiny()
    loader = make_loader(data, 2, 0, info, 0)
    fit(name="tiny", model=model, objective=Objective(model), loader=loader,
        optim_cfg=Config().cam, epochs=3, out_dir=tmp_path, digest="d",
        device=torch.device("cpu"), info=info)  # fmt: skip
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tiny")]
    assert [line.split(":")[0] for line in lines] == [f"tiny epoch {e}/3" for e in (1, 2, 3)]
    assert all(" 4/4 it, " in line and ", loss=" in line for line in lines)


def test_enabled_none_is_a_bar_on_a_terminal_and_silence_in_a_log():
    log, terminal = io.StringIO(), Terminal()
    assert list(progress_bar(range(2), desc="short", stream=log, enabled=None)) == [0, 1]
    assert log.getvalue() == ""
    assert list(progress_bar(range(2), desc="short", stream=terminal, enabled=None)) == [0, 1]
    assert "short" in terminal.getvalue()
