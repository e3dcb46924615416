"""A toy run config for pipeline tests: what the pipeline reads of a RunConfig, and nothing else."""

from dataclasses import dataclass, field


@dataclass
class ToyConfig:
    value: int = 0


@dataclass
class ToyStages:
    a: ToyConfig = field(default_factory=ToyConfig)
    b: ToyConfig = field(default_factory=ToyConfig)
    c: ToyConfig = field(default_factory=ToyConfig)


@dataclass
class ToyRun:
    """Duck-types the run config: name, model, seed, device, dtype, tracking, stages, to_dict()."""

    stages: ToyStages = field(default_factory=ToyStages)
    name: str = "toy"
    model: str = "tiny-llama"
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    tracking: str = "none"

    def to_dict(self):
        return {
            "name": self.name, "model": self.model, "seed": self.seed, "device": self.device,
            "dtype": self.dtype, "tracking": self.tracking,
        }  # fmt: skip
