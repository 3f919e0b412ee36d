"""Early stopping on a validation metric, with patience; its state is checkpointed as JSON."""
import dataclasses
import math


@dataclasses.dataclass
class EarlyStopping:
  metric: str
  mode: str  # "max" or "min"
  patience: int  # epochs without improvement before stopping; 0 never stops
  best: float | None = None
  best_step: int | None = None
  bad_epochs: int = 0
  stopped: bool = False

  def update(self, value: float, step: int) -> bool:
    """Records one validation result; returns whether it is the best so far."""
    if math.isnan(value):
      improved = False
    elif self.best is None:
      improved = True
    else:
      improved = value > self.best if self.mode == "max" else value < self.best
    if improved:
      self.best, self.best_step, self.bad_epochs = value, step, 0
    else:
      self.bad_epochs += 1
      self.stopped = self.patience > 0 and self.bad_epochs >= self.patience
    return improved

  def state_dict(self) -> dict:
    return {"best": self.best, "best_step": self.best_step, "bad_epochs": self.bad_epochs,
            "stopped": self.stopped}
