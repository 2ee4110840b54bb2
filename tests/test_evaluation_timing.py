"""The timing experiment's bookkeeping: detection on synthetic windows, summary and plot."""

import pytest
import torch

from stable_audio_core.errors import InputError
from stable_audio_core.evaluation.timing import (
    markdown_table, measure_timing, plot_timing, spread_durations, summarise,
)

RATE = 8000


def window_ending_at(seconds: float, total: float = 5.0) -> torch.Tensor:
    audio = torch.zeros(2, int(total * RATE))
    end = int(seconds * RATE)
    audio[:, :end] = 0.3 * torch.sin(torch.arange(end) * 0.05)
    return audio


def test_spread_durations_cover_the_range_evenly():
    assert spread_durations(5, 1.0, 5.0) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert spread_durations(1, 1.0, 5.0) == [5.0]
    with pytest.raises(InputError):
        spread_durations(0, 1.0, 5.0)
    with pytest.raises(InputError):
        spread_durations(3, 4.0, 1.0)


def test_measure_timing_detects_where_content_ends():
    # A generator that always overshoots by 0.25 s: every error is +0.25 up to one 20 ms frame.
    def generate(prompt, seconds_total, seed):
        return window_ending_at(seconds_total + 0.25), RATE

    rows = measure_timing(generate, ["a", "b"], [1.0, 2.0, 3.0], seed=10)
    assert [row.prompt for row in rows] == ["a", "b", "a"]
    assert [row.seed for row in rows] == [10, 11, 12]
    for row in rows:
        assert row.error == pytest.approx(0.25, abs=0.02)
    summary = summarise(rows)
    assert summary.count == 3
    assert summary.mean_absolute_error == pytest.approx(0.25, abs=0.02)
    assert summary.mean_error == pytest.approx(0.25, abs=0.02)
    assert [b["count"] for b in summary.bins] == [1, 1, 1]


def test_summary_separates_over_and_undershoot():
    def generate(prompt, seconds_total, seed):
        shift = 0.5 if seed % 2 == 0 else -0.5
        return window_ending_at(seconds_total + shift), RATE

    summary = summarise(measure_timing(generate, ["p"], [2.0, 2.0, 3.0, 3.0]))
    assert summary.mean_absolute_error == pytest.approx(0.5, abs=0.02)
    assert summary.mean_error == pytest.approx(0.0, abs=0.02)
    table = markdown_table(summary)
    assert "| **all** | **4** | **0.50** |" in table


def test_plot_is_written_as_png(tmp_path):
    pytest.importorskip("matplotlib")
    rows = measure_timing(lambda p, s, seed: (window_ending_at(s), RATE), ["p"], [1.0, 2.0])
    path = plot_timing(rows, tmp_path / "timing.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
