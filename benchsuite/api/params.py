"""The parameter bases every component's model extends (an executor's: :class:`~benchsuite.api.executors.ExecutorParams`)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    """Base class for a plugin's parameter model.

    Unknown keys are refused, so a typo in a suite is an error rather than a silent default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingParams(Params):
    """Optimisation parameters shared by SSP methods; a method's model extends this.

    The core's training loop reads these fields. SGD with momentum and a cosine learning-rate
    schedule is the MoCo v2 recipe; Adam is offered for small encoders that train from scratch.
    """

    epochs: int = Field(10, ge=1, le=10_000, description="Passes over the training images.")
    batch_size: int = Field(64, ge=2, le=65_536, description="Images per step.")
    lr: float = Field(0.03, gt=0, le=100, description="Peak learning rate.")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="Optimiser.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="L2 weight decay.")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="Learning-rate schedule over steps.")
