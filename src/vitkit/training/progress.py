"""Progress on the console: a tqdm bar on a terminal, plain periodic log lines otherwise (files, CI, nohup)."""

from __future__ import annotations

import sys
import time
from typing import Any


def format_duration(seconds: float) -> str:
    """1h02m, 3m05s or 42s."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressReporter:
    """Reports optimizer steps: loss, accuracy, images/s and the ETA of the whole run."""

    def __init__(
        self, total_steps: int, done_steps: int, log_every: int, bar: bool | None = None, enabled: bool = True
    ) -> None:
        self.total, self.done, self.log_every, self.enabled = total_steps, done_steps, log_every, enabled
        self.started, self.started_at = time.perf_counter(), done_steps
        use_bar = enabled and (sys.stdout.isatty() if bar is None else bar)
        self.bar = None
        if use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=done_steps, file=sys.stdout, unit="step", dynamic_ncols=True)

    def set_total(self, total_steps: int) -> None:
        """The run's length changed (time budget)."""
        self.total = total_steps
        if self.bar is not None:
            self.bar.total = total_steps
            self.bar.refresh()

    def update(self, step: int, epoch: int, epochs: int, values: dict[str, Any]) -> None:
        """One optimizer step finished; `values`: loss, images_per_s, lr and, when the objective has one, acc (%)."""
        self.done = step
        if not self.enabled:  # not the main rank of a torchrun job
            return
        postfix = {"loss": f"{values['loss']:.4f}"}
        if "acc" in values:  # an objective reports what it has (a pre-training objective may have no accuracy)
            postfix["acc"] = f"{values['acc']:.1f}%"
        postfix.update({"img/s": f"{values['images_per_s']:.0f}", "lr": f"{values['lr']:.2e}"})
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch}/{epochs}", refresh=False)
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(step - self.bar.n)
        elif step % self.log_every == 0 or step == self.total:
            fields = " ".join(f"{k} {v}" for k, v in postfix.items())
            print(
                f"epoch {epoch}/{epochs} step {step}/{self.total} {fields} eta {format_duration(self.eta())}",
                flush=True,
            )

    def eta(self) -> float:
        """Seconds left at the average pace of this session's steps."""
        steps = self.done - self.started_at
        if steps <= 0:
            return 0.0
        return (time.perf_counter() - self.started) / steps * (self.total - self.done)

    def message(self, text: str) -> None:
        """A line that does not break the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()
